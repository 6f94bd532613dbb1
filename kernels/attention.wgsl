// attention.wgsl: fused scaled dot-product attention with a streaming softmax.
//
//   out[b, i, :] = sum_j softmax_j(scale * q[b, i, :] . k[b, j, :] + mask[i, j]) v[b, j, :]
//
// Layout: contiguous row-major f32. q [B, Lq, D], k [B, Lk, D], v [B, Lk, Dv],
// out [B, Lq, Dv] (B = product of the leading dims); mask (has_mask = 1) [Lq, Lk] when
// mask_bstride = 0, or [B, Lq, Lk] when mask_bstride = Lq * Lk; additive floats, -inf
// allowed. causal = 1 lets query i see keys j <= i only (torch's is_causal: the
// top-left aligned lower triangle), and skips the key tiles past i.
//
// Workgroup: 64 invocations per query row (1-D grid over B * Lq rows, folded by the
// runtime: wg_linear + bounds check). The scaled query row sits in workgroup memory.
// Keys stream in tiles of 64: invocation t scores key j0 + t (a D-long dot product),
// then every invocation updates its output columns d = t, t + 64, ... (up to 8 of
// them, so Dv <= 512; D <= 512 for the query row) with the tile's probabilities.
//
// Long key sequences. The tile loop costs every invocation about D + 65 * (2 + Dv / 64)
// loop passes per tile, and lavapipe stops an invocation's loops silently after 65,535
// passes (kernels/common.wgsl). So one dispatch handles the keys [j_begin, j_end) only
// and the host covers longer Lk with several: a dispatch that does not reach Lk leaves
// the running (m, l) in `state` [rows, 2] and the unnormalized acc in out; the next one
// (j_begin > 0) resumes from them. Short sequences take one dispatch (state unused).
//
// Numerics (flash-attention style online softmax, all f32): running max m and sum l;
// per tile m' = max(m, tile max), alpha = e^(m - m'), l = l * alpha + sum e^(s - m'),
// acc = acc * alpha + sum e^(s - m') v; out = acc / l. Exponents are always <= 0,
// so nothing overflows for any Lk; the scores and acc are f32 sums.

struct Params {
    rows: u32,           // B * Lq
    lq: u32,
    lk: u32,
    d: u32,
    dv: u32,
    scale: f32,
    causal: u32,
    has_mask: u32,
    mask_bstride: u32,   // 0: one [Lq, Lk] mask for all B; Lq * Lk: a mask per batch entry
    j_begin: u32,        // the keys of this dispatch: j_begin <= j < j_end
    j_end: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> mask: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> state: array<f32>;

const WG = 64u;                  // invocations = keys per tile
const DMAX = 512u;               // largest D and Dv
const COLS = DMAX / WG;          // output columns per invocation
const NEG = -3.4028234e38;       // lowest finite f32, the start of the running max

var<workgroup> qrow: array<f32, DMAX>;
var<workgroup> score: array<f32, WG>;
var<workgroup> prob: array<f32, WG>;

@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) t: u32) {
    let row = wg_linear(wid, nwg);       // = batch * lq + i
    if (row >= p.rows) { return; }
    let batch = row / p.lq;
    let i = row % p.lq;
    let kbase = batch * p.lk * p.d;
    let vbase = batch * p.lk * p.dv;
    let mbase = batch * p.mask_bstride + i * p.lk;
    var kend = min(p.lk, p.j_end);
    if (p.causal == 1u) { kend = min(kend, i + 1u); }

    for (var d = t; d < p.d; d += WG) {
        qrow[d] = q[row * p.d + d] * p.scale;
    }
    workgroupBarrier();

    var m_run = NEG;
    var l_run = 0.0;
    var acc: array<f32, COLS>;           // zero-initialized
    if (p.j_begin > 0u) {                // resume where the previous dispatch stopped
        m_run = state[2u * row];
        l_run = state[2u * row + 1u];
        for (var c = 0u; c < COLS; c++) {
            let d = t + c * WG;
            if (d < p.dv) {
                acc[c] = out[row * p.dv + d];
            }
        }
    }
    for (var j0 = p.j_begin; j0 < kend; j0 += WG) {
        let count = min(WG, kend - j0);  // keys in this tile
        let j = j0 + t;
        let valid = t < count;

        // 1. score one key per invocation
        var s = NEG;
        if (valid) {
            let kj = kbase + j * p.d;
            var dot = 0.0;
            for (var d = 0u; d < p.d; d++) {
                dot += qrow[d] * k[kj + d];
            }
            s = dot;
            if (p.has_mask == 1u) { s += mask[mbase + j]; }
        }
        score[t] = s;
        workgroupBarrier();

        // 2. new running max, rescale factor, this tile's probabilities
        var m_tile = NEG;
        for (var u = 0u; u < count; u++) {
            m_tile = max(m_tile, score[u]);
        }
        let m_new = max(m_run, m_tile);
        let alpha = exp(m_run - m_new);
        prob[t] = select(0.0, exp(s - m_new), valid);
        workgroupBarrier();

        // 3. fold the tile into the running sum and this invocation's output columns
        var l_tile = 0.0;
        for (var u = 0u; u < count; u++) {
            l_tile += prob[u];
        }
        l_run = l_run * alpha + l_tile;
        for (var c = 0u; c < COLS; c++) {
            let d = t + c * WG;
            if (d < p.dv) {
                var a = acc[c] * alpha;
                for (var u = 0u; u < count; u++) {
                    a += prob[u] * v[vbase + (j0 + u) * p.dv + d];
                }
                acc[c] = a;
            }
        }
        m_run = m_new;
        // The next tile writes score before its first barrier: everyone has read the
        // old scores (before the barrier above). It writes prob after that barrier,
        // which no invocation passes before all have finished reading prob here.
    }

    let done = p.j_end >= p.lk;          // else a later dispatch goes on from here
    for (var c = 0u; c < COLS; c++) {
        let d = t + c * WG;
        if (d < p.dv) {
            out[row * p.dv + d] = select(acc[c], acc[c] / l_run, done);
        }
    }
    if (!done && t == 0u) {
        state[2u * row] = m_run;
        state[2u * row + 1u] = l_run;
    }
}
