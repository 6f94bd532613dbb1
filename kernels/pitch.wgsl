// pitch.wgsl: CREPE's pre- and post-processing around the network (pycore/ops/pitch.py).
//
// Entry points (both share the bindings and Params below; each ignores what it does
// not use):
//   crepe_frames   out [frames, frame]: row f is x[(start + f) * hop - pad + j], j <
//                  frame (zeros outside x; pad = frame / 2 centers frame f on sample
//                  (start + f) * hop, pad = 0 reads a signal padded already), minus its
//                  mean, divided by max(std, 1e-10), std with the n - 1 divisor
//                  (torch.std): torchcrepe.preprocess with pad=True.
//                  One workgroup per frame; WG must be a power of two.
//   crepe_decode   x = activations [frames, bins] (bins = 360, 20 cents each, bin b at
//                  1997.3794 + 20 b cents above 10 Hz) -> out [frames, 2] = (f0 in Hz,
//                  confidence). Per frame: k = the first argmax over the allowed bins
//                  [lo, hi) (torchcrepe's fmin / fmax), confidence = x[k], and f0 = the
//                  weighted mean of the bins b in [k - 4, k + 4] within [lo, hi), in
//                  cents, with weights
//                    MODE 0: x[b]           CREPE's local average (crepe's
//                                           to_local_average_cents, used by DDSP)
//                    MODE 1: sigmoid(x[b])  torchcrepe.decode.weighted_argmax (which
//                                           applies a sigmoid to the probabilities)
//                  One invocation per frame (360 + 9 reads: small next to the network).
//
// Layout: contiguous row-major f32. Workgroup: WG invocations, 1-D grid folded by the
// runtime (wg_linear + bounds check).
// Numerics: f32 throughout. The frame's mean and sum of squared deviations are
// two-pass workgroup tree sums (error ~ log2(WG) + frame / WG roundings, relative).
// The decoder averages bin offsets from k (|offset| <= 4) and adds k afterwards; the
// result, cents and f0 = 10 * 2^(cents / 1200) are each within a few ulps (about
// 1e-3 cents in all).

override WG: u32 = 64u;
override MODE: u32 = 0u;

const CENTS_PER_BIN = 20.0;
const CENTS_OFFSET = 1997.3794084376191;   // cents of bin 0 above 10 Hz
const RADIUS = 4u;                          // the decoder's window: k - 4 .. k + 4

struct Params {
    length: u32,     // frames: samples in x
    hop: u32,        // frames: samples between frame centers
    frame: u32,      // frames: samples per frame (CREPE: 1024)
    pad: u32,        // frames: zeros before x (frame / 2 to center the frames, or 0)
    start: u32,      // frames: index of the first frame to produce
    frames: u32,     // frames to produce / decode
    bins: u32,       // decode: activations per frame
    lo: u32,         // decode: first allowed bin
    hi: u32,         // decode: one past the last allowed bin
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

var<workgroup> red: array<f32, WG>;

// x[i], or 0 outside the signal (the zero padding of a centered framing)
fn sample(i: i32) -> f32 {
    if (i < 0 || i >= i32(p.length)) { return 0.0; }
    return x[i];
}

// Sum of v over the workgroup, returned to every invocation (a tree in workgroup memory).
fn workgroup_sum(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();   // red is reused by the next call
    return total;
}

@compute @workgroup_size(WG)
fn crepe_frames(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let f = wg_linear(wid, nwg);        // the same for the whole workgroup
    if (f >= p.frames) { return; }
    let first = i32((p.start + f) * p.hop) - i32(p.pad);
    let n = p.frame;

    var s = 0.0;
    for (var j = lid; j < n; j += WG) {
        s += sample(first + i32(j));
    }
    let mean = workgroup_sum(s, lid) / f32(n);

    var q = 0.0;
    for (var j = lid; j < n; j += WG) {
        let d = sample(first + i32(j)) - mean;
        q += d * d;
    }
    let sdev = sqrt(workgroup_sum(q, lid) / f32(max(n, 2u) - 1u));
    let div = max(sdev, 1e-10);

    let row = f * n;
    for (var j = lid; j < n; j += WG) {
        out[row + j] = (sample(first + i32(j)) - mean) / div;
    }
}

@compute @workgroup_size(WG)
fn crepe_decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let f = wg_linear(wid, nwg) * WG + lid;
    if (f >= p.frames) { return; }
    let row = f * p.bins;

    var k = p.lo;
    var best = x[row + p.lo];
    for (var b = p.lo + 1u; b < p.hi; b++) {
        let v = x[row + b];
        if (v > best) {
            best = v;
            k = b;
        }
    }

    let b0 = max(p.lo, max(k, RADIUS) - RADIUS);
    let b1 = min(p.hi, k + RADIUS + 1u);
    var total = 0.0;
    var moment = 0.0;                   // sum of weight * (b - k)
    for (var b = b0; b < b1; b++) {
        var w = x[row + b];
        if (MODE == 1u) {
            w = 1.0 / (1.0 + exp(-w));
        }
        total += w;
        moment += w * (f32(b) - f32(k));
    }
    var bin = f32(k);
    if (total > 0.0) {
        bin += moment / total;
    }
    let cents = CENTS_PER_BIN * bin + CENTS_OFFSET;
    out[2u * f] = 10.0 * exp2(cents / 1200.0);
    out[2u * f + 1u] = best;
}
