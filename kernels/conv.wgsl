// conv.wgsl: direct convolution and transposed convolution with PyTorch semantics (zero
// padding, stride, dilation, groups), plus an optional bias + activation epilogue. The
// same two entry points serve conv1d/2d and conv_transpose1d/2d: 1-D runs as 2-D with
// h = 1 and a 1 x k kernel.
//   pack:       weights -> wpack, 4 output channels per vec4 (the host caches it per weight)
//   conv:       out = act(conv(x, wpack) + bias)
//   conv_run:   the same for 1-D layers on CPU adapters, 16 consecutive positions per
//               invocation with a sliding input window (see conv_run below)
//   sum_splits: adds the slices of a reduction split side by side ("Small grids")
//
// Layout (contiguous, row-major):
//   x      [batch, c_in, h, w]                              f32
//   weight [c_out, c_in / groups, kh, kw]  (convolution)    W = f32 or f16
//          [c_in, c_out / groups, kh, kw]  (transposed)
//   bias   [c_out]                                          B = f32 or f16 (unread if has_bias == 0)
//   wpack  [groups][cblocks][c_in / groups][kh * kw][CQ]    vec4<W>
//   out    [batch, c_out, oh, ow]                           f32
//
// Sampling. A `conv` dispatch covers a grid of positions q = (qy, qx) < (qh, qw). Position
// q writes output (qy * osy + ry, qx * osx + rx) and, for the m-th kernel tap along y,
// ky = ky0 + m * kys, reads input row qy * isy + ty0 + m * tys (columns likewise); reads
// outside the input are zeros. The host (pycore/ops/conv.py) fills in the progressions:
//   convolution: one dispatch; osy = 1, isy = stride, all taps: ky = m, ty = m * dil - pad.
//   transposed:  out[o] gathers x[i] over the taps with o = i * stride - pad + k * dil. The
//                host issues one dispatch per output phase r < stride (o = r + qy * stride,
//                osy = stride, isy = 1). Within a phase the taps that reach an input are
//                those where r + pad - k * dil divides by the stride, an arithmetic
//                progression of k, and they read i = qy + (r + pad - k * dil) / stride.
//                So no work is spent on the zeros a "zero insertion" formulation multiplies.
//
// Long reductions. An invocation loops over (input channel, tap row, tap column): cin_g *
// ny * nx steps, which lavapipe cuts off silently after 65,535 (kernels/common.wgsl). So a
// dispatch covers the steps [t0, t1) of that flat order only, and the host splits longer
// reductions into several dispatches of at most pycore.ops.MAX_LOOP_STEPS steps: the
// first writes its partial sums, the later ones add theirs to what `out` holds
// (accumulate = 1), and only the last adds the bias and applies the activation. Ordinary
// layers take one dispatch with [t0, t1) = all steps.
//
// Small grids. A dispatch of fewer workgroups than the GPU has cores (or a CPU driver has
// threads: lavapipe runs one workgroup per thread) leaves most of it idle, which is what
// CREPE's layers are in a live block of 2-3 frames (conv2: one workgroup). Then the host
// splits the reduction side by side: `splits` slices of `split_steps` steps run in one
// dispatch (split s = invocation / split_inv), each storing its raw partial sums (no bias,
// ACT 0) into its own copy of the output (out is then [splits, batch, c_out, oh, ow]), and
// `sum_splits` adds the copies in split order, then the bias, then the activation.
//
// Work split (register blocking for CPU drivers such as lavapipe, where an invocation is
// one lane of a SIMD unit, every load is costly, registers are plentiful and workgroup
// memory does not pay): an invocation computes a tile of 4 * CQ output channels (one
// channel block of a group) x 16 positions, so each input load feeds 4 * CQ multiply-adds
// and each vec4 weight load feeds 64. `lanes` = ceil(qh * qw / 16) consecutive invocations
// share a channel block; lane l of them takes the positions l + i * lanes (i < 16), so
// neighbouring invocations read and write neighbouring positions.
// Grid: 1-D, splits * ceil(batch * groups * cblocks * lanes / WG) workgroups.
// Measured on lavapipe, and why the code looks the way it does: the tile lives in structs
// of mat4x4 (arrays are spilled to memory); one flat loop runs over (input channel, ky, kx)
// (nested loops measured 10-20% slower); the activation is the override
// constant ACT (a runtime switch executes every case).
//
// Numerics: float32 products and sums (f16 weights are widened when loaded), accumulated
// in the order input channel, ky, kx (a split reduction adds its dispatches' partial sums
// in that order); then + bias, then the activation.

alias W = f32;
alias B = f32;

struct Params {
    batch: u32,
    c_in: u32, h: u32, w: u32,          // input
    c_out: u32, oh: u32, ow: u32,       // output
    kh: u32, kw: u32,                   // kernel size
    cin_g: u32, cout_g: u32, groups: u32,
    transposed: u32,                    // weight layout (used by `pack`)
    cblocks: u32,                       // blocks of 4 * CQ output channels per group
    // The positions of this dispatch: q = (qy, qx) < (qh, qw) writes output
    // (qy * osy + ry, qx * osx + rx) and reads input (qy * isy + ty, qx * isx + tx) for
    // kernel taps ky = ky0 + m * kys, ty = ty0 + m * tys, m < ny (likewise along x).
    qh: u32, qw: u32,
    osy: u32, osx: u32, ry: u32, rx: u32,
    isy: i32, isx: i32,
    ny: u32, ky0: u32, kys: u32, ty0: i32, tys: i32,
    nx: u32, kx0: u32, kxs: u32, tx0: i32, txs: i32,
    lanes: u32,                         // invocations per channel block: ceil(qh * qw / 16)
    t0: u32, t1: u32,                   // the reduction steps of this dispatch (see the header)
    accumulate: u32,                    // 1: add to the partial sums in out (not the first dispatch)
    splits: u32,                        // reduction slices side by side (see "Small grids")
    split_steps: u32,                   // steps per slice
    split_inv: u32,                     // invocations per slice (a multiple of WG)
    run_len: u32, run_pitch: u32,       // conv_run: input length along its axis, and element pitch
    run_stride: u32, run_start: i32,    // conv_run: stride and -padding along its axis
    has_bias: u32,
    alpha: f32,                         // slope of leaky_relu, scale of elu
}

// One binding table for both entry points.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<W>;
@group(0) @binding(3) var<storage, read> bias: array<B>;
@group(0) @binding(4) var<storage, read_write> wpack: array<vec4<W>>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

override WG: u32 = 64;     // invocations per workgroup
override CQ: u32 = 4;      // output channel quads per invocation: 1, 2 or 4
override ACT: u32 = 0;     // activation: 0 none, 1 relu, 2 leaky_relu, 3 elu, 4 gelu, 5 tanh, 6 sigmoid

// ---------------------------------------------------------------------------------------
// pack: weights -> wpack [groups][cblocks][cin_g][kh * kw][CQ] vec4, where lane e of quad c
// is local output channel (block * CQ + c) * 4 + e of the group (zero past cout_g), so that
// `conv` fetches 4 output channels' weights with one load. One invocation per vec4.

@compute @workgroup_size(WG)
fn pack(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
    let i = wg_linear(wid, nwg) * WG + lane;
    let taps = p.kh * p.kw;
    if (i >= p.groups * p.cblocks * p.cin_g * taps * CQ) {
        return;
    }
    let quad = i % CQ;
    let tap = (i / CQ) % taps;
    let icl = (i / (CQ * taps)) % p.cin_g;
    let block = (i / (CQ * taps * p.cin_g)) % p.cblocks;
    let g = i / (CQ * taps * p.cin_g * p.cblocks);
    var v = vec4<W>();
    for (var e = 0u; e < 4u; e++) {
        let ocl = (block * CQ + quad) * 4u + e;
        if (ocl < p.cout_g) {
            var src = ((g * p.cout_g + ocl) * p.cin_g + icl) * taps + tap;      // [c_out, cin_g, k]
            if (p.transposed != 0u) {
                src = ((g * p.cin_g + icl) * p.cout_g + ocl) * taps + tap;      // [c_in, cout_g, k]
            }
            v[e] = weight[src];
        }
    }
    wpack[i] = v;
}

// ---------------------------------------------------------------------------------------
// conv: the convolution proper (see the header).

// The register tile of one channel quad: 4 output channels x 16 positions; column k of
// pj holds the 4 channels at the invocation's position 4 j + k. (Structs and matrices,
// not arrays: lavapipe keeps those in registers, arrays it spills to memory.)
struct Tile { p0: mat4x4<f32>, p1: mat4x4<f32>, p2: mat4x4<f32>, p3: mat4x4<f32> }
// One input value for each of the 16 positions, in the same order.
struct Inputs { v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32> }

// acc + w v^T: 4 channels (w) times 4 positions (v), one column per position.
fn add_outer(acc: mat4x4<f32>, w: vec4<f32>, v: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(fma(w, vec4(v.x), acc[0]), fma(w, vec4(v.y), acc[1]),
                       fma(w, vec4(v.z), acc[2]), fma(w, vec4(v.w), acc[3]));
}

fn accumulate(t: Tile, w: vec4<f32>, v: Inputs) -> Tile {
    return Tile(add_outer(t.p0, w, v.v0), add_outer(t.p1, w, v.v1), add_outer(t.p2, w, v.v2),
                add_outer(t.p3, w, v.v3));
}

// x at 4 positions of one input channel (row, col relative to the channel, of an h x w
// plane), zero outside.
fn load4(chan: u32, row: vec4<i32>, col: vec4<i32>, h: u32, w: u32) -> vec4<f32> {
    let inside = (vec4<u32>(row) < vec4<u32>(h)) & (vec4<u32>(col) < vec4<u32>(w));  // negatives wrap
    let at = vec4<u32>(select(vec4<i32>(0), row * i32(w) + col, inside)) + chan;
    return select(vec4<f32>(0.0), vec4<f32>(x[at.x], x[at.y], x[at.z], x[at.w]), inside);
}

// The 4 positions q + k lanes (k < 4) as flat indices into the qh x qw grid, clamped to
// the last one: positions past the end are computed, never stored.
fn quad_positions(q: u32) -> vec4<u32> {
    return min(vec4<u32>(q) + vec4<u32>(0u, 1u, 2u, 3u) * p.lanes, vec4<u32>(p.qh * p.qw - 1u));
}

// Standard normal CDF via erfc (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7), evaluated
// on |v| so that the tail keeps its relative accuracy.
fn normal_cdf(v: vec4<f32>) -> vec4<f32> {
    let z = abs(v) * 0.70710678;
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let half_erfc = 0.5 * poly * exp(-z * z);
    return select(half_erfc, 1.0 - half_erfc, v >= vec4(0.0));
}

fn activate(v: vec4<f32>) -> vec4<f32> {
    let zero = vec4<f32>(0.0);
    switch ACT {
        case 1u: { return max(v, zero); }
        case 2u: { return select(p.alpha * v, v, v >= zero); }
        case 3u: { return select(p.alpha * (exp(min(v, zero)) - 1.0), v, v > zero); }
        case 4u: { return v * normal_cdf(v); }
        case 5u: { return tanh(clamp(v, vec4(-15.0), vec4(15.0))); }  // clamped: some drivers overflow
        case 6u: { return 1.0 / (1.0 + exp(-v)); }
        default: { return v; }
    }
}

// Where this invocation's output copy starts in out: split * (one output's size).
var<private> split_base: u32;

// Stores act(v) (4 channels from ch, those < ch_end) at position q if q is a real one;
// with accumulate, act(v + the partial sums out holds there).
fn store(v: vec4<f32>, n: u32, ch: u32, ch_end: u32, q: u32) {
    if (q >= p.qh * p.qw) {
        return;
    }
    let pos = ((q / p.qw) * p.osy + p.ry) * p.ow + (q % p.qw) * p.osx + p.rx;
    let plane = p.oh * p.ow;
    let at = split_base + (n * p.c_out + ch) * plane + pos;
    var sum = v;
    if (p.accumulate != 0u) {
        for (var e = 0u; e < 4u; e++) {
            if (ch + e < ch_end) {
                sum[e] += out[at + e * plane];
            }
        }
    }
    let a = activate(sum);
    for (var e = 0u; e < 4u; e++) {
        if (ch + e < ch_end) {
            out[at + e * plane] = a[e];
        }
    }
}

// The 4 columns of m (positions q + k step, k < 4), + bias.
fn store4(m: mat4x4<f32>, b: vec4<f32>, n: u32, ch: u32, ch_end: u32, q: u32, step: u32) {
    store(m[0] + b, n, ch, ch_end, q);
    store(m[1] + b, n, ch, ch_end, q + step);
    store(m[2] + b, n, ch, ch_end, q + 2u * step);
    store(m[3] + b, n, ch, ch_end, q + 3u * step);
}

// Bias + activation + store of a tile (channels ch.. < ch_end, positions q + i step, i < 16:
// step = lanes for `conv`'s interleaved positions, 1 for `conv_run`'s consecutive ones).
fn store_tile(t: Tile, n: u32, ch: u32, ch_end: u32, q: u32, step: u32) {
    var b = vec4<f32>(0.0);
    if (p.has_bias != 0u) {
        for (var e = 0u; e < 4u; e++) {
            b[e] = f32(bias[min(ch + e, ch_end - 1u)]);
        }
    }
    store4(t.p0, b, n, ch, ch_end, q, step);
    store4(t.p1, b, n, ch, ch_end, q + 4u * step, step);
    store4(t.p2, b, n, ch, ch_end, q + 8u * step, step);
    store4(t.p3, b, n, ch, ch_end, q + 12u * step, step);
}

// What one invocation of conv / conv_run computes: its reduction slice, batch item n,
// group g, channel block gb (= g * cblocks + block) and position lane; valid is false
// past the grid. Sets split_base for store.
struct Slot { valid: bool, split: u32, n: u32, g: u32, gb: u32, lane: u32 }

fn slot(wid: vec3<u32>, nwg: vec3<u32>, local: u32) -> Slot {
    let flat = wg_linear(wid, nwg) * WG + local;
    let split = flat / p.split_inv;
    let id = flat % p.split_inv;
    let gb = (id / p.lanes) % (p.groups * p.cblocks);
    split_base = split * p.batch * p.c_out * p.oh * p.ow;
    return Slot(id < p.batch * p.groups * p.cblocks * p.lanes && split < p.splits, split,
                id / (p.lanes * p.groups * p.cblocks), gb / p.cblocks, gb, id % p.lanes);
}

// Bias + activation + store of a channel block's CQ tiles (positions q + i step, see store_tile).
fn store_block(t0: Tile, t1: Tile, t2: Tile, t3: Tile, s: Slot, q: u32, step: u32) {
    let ch = s.g * p.cout_g + (s.gb % p.cblocks) * CQ * 4u;   // first output channel of the block
    let ch_end = (s.g + 1u) * p.cout_g;
    store_tile(t0, s.n, ch, ch_end, q, step);
    if (CQ > 1u) {
        store_tile(t1, s.n, ch + 4u, ch_end, q, step);
    }
    if (CQ > 2u) {
        store_tile(t2, s.n, ch + 8u, ch_end, q, step);
        store_tile(t3, s.n, ch + 12u, ch_end, q, step);
    }
}

@compute @workgroup_size(WG)
fn conv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
    let s = slot(wid, nwg, lane);
    if (!s.valid) {
        return;
    }
    let n = s.n;
    let g = s.g;
    let gb = s.gb;
    let q0 = s.lane;
    let t_begin = p.t0 + s.split * p.split_steps;
    let t_end = min(p.t1, t_begin + p.split_steps);

    // Its 16 positions q0 + i lanes (i < 16), as input rows and columns of tap 0.
    let q_0 = quad_positions(q0);
    let q_1 = quad_positions(q0 + 4u * p.lanes);
    let q_2 = quad_positions(q0 + 8u * p.lanes);
    let q_3 = quad_positions(q0 + 12u * p.lanes);
    let row0 = vec4<i32>(q_0 / p.qw) * p.isy + p.ty0;
    let row1 = vec4<i32>(q_1 / p.qw) * p.isy + p.ty0;
    let row2 = vec4<i32>(q_2 / p.qw) * p.isy + p.ty0;
    let row3 = vec4<i32>(q_3 / p.qw) * p.isy + p.ty0;
    let col0 = vec4<i32>(q_0 % p.qw) * p.isx + p.tx0;
    let col1 = vec4<i32>(q_1 % p.qw) * p.isx + p.tx0;
    let col2 = vec4<i32>(q_2 % p.qw) * p.isx + p.tx0;
    let col3 = vec4<i32>(q_3 % p.qw) * p.isx + p.tx0;

    var acc0 = Tile();
    var acc1 = Tile();
    var acc2 = Tile();
    var acc3 = Tile();
    // One flat loop over (input channel icl, tap row my, tap column mx): steps t_begin .. t_end.
    // The parameters the loop reads, as values: a CPU driver binds Params as a storage
    // buffer (pycore/gpu/native.py) and would reload them at every step otherwise.
    let h = p.h;
    let w = p.w;
    let kh = p.kh;
    let kw = p.kw;
    let pnx = p.nx;
    let pny = p.ny;
    let tys = p.tys;
    let txs = p.txs;
    let ky0 = p.ky0;
    let kys = p.kys;
    let kx0 = p.kx0;
    let kxs = p.kxs;
    let plane = h * w;
    let chan0 = (n * p.c_in + g * p.cin_g) * plane;
    let wrow = gb * p.cin_g;
    let nx = max(pnx, 1u);                   // (a phase without taps has no steps)
    let taps = max(pny * pnx, 1u);
    var icl = t_begin / taps;
    var my = (t_begin % taps) / nx;
    var mx = t_begin % nx;
    for (var t = t_begin; t < t_end; t++) {
        let chan = chan0 + icl * plane;
        let dy = i32(my) * tys;
        let dx = i32(mx) * txs;
        let v = Inputs(load4(chan, row0 + dy, col0 + dx, h, w), load4(chan, row1 + dy, col1 + dx, h, w),
                       load4(chan, row2 + dy, col2 + dx, h, w), load4(chan, row3 + dy, col3 + dx, h, w));
        let wi = ((wrow + icl) * kh * kw + (ky0 + my * kys) * kw + kx0 + mx * kxs) * CQ;
        acc0 = accumulate(acc0, vec4<f32>(wpack[wi]), v);
        if (CQ > 1u) {
            acc1 = accumulate(acc1, vec4<f32>(wpack[wi + 1u]), v);
        }
        if (CQ > 2u) {
            acc2 = accumulate(acc2, vec4<f32>(wpack[wi + 2u]), v);
            acc3 = accumulate(acc3, vec4<f32>(wpack[wi + 3u]), v);
        }
        mx += 1u;
        let row_done = mx == pnx;
        mx = select(mx, 0u, row_done);
        my += select(0u, 1u, row_done);
        let chan_done = my == pny;
        my = select(my, 0u, chan_done);
        icl += select(0u, 1u, chan_done);
    }

    store_block(acc0, acc1, acc2, acc3, s, q0, p.lanes);
}

// ---------------------------------------------------------------------------------------
// conv_run: the same convolution for a 1-D layer (one axis of size 1 with a 1-tap kernel
// along it; dilation 1 along the other), an invocation computing 16 CONSECUTIVE positions
// q0 .. q0 + 15 (q0 = 16 * run) instead of 16 interleaved ones. Then the input window of
// the 16 positions slides along the taps: for stride S, tap k + S reads what tap k read
// one position later, so the taps are walked phase by phase (k = r, r + S, ...; r < S),
// and each step shifts the window by one and loads a single new input value, where
// `conv` loads 16. Measured on lavapipe on CREPE's 64-tap layers: 1.8x the throughput.
// The input along the axis: x[chan + i * run_pitch], i = q * run_stride + k + run_start
// (run_start = -padding), zero outside 0 .. run_len - 1. Reduction: input channels
// (split s of `splits` takes channels s * split_steps ..), then taps in phase order.

fn run_x(chan: u32, i: i32, len: u32, pitch: u32) -> f32 {
    let inside = u32(i) < len;                             // negatives wrap
    return select(0.0, x[chan + select(0u, u32(i), inside) * pitch], inside);
}

// The input at positions a + j * step, j < 16 (one channel): the window of a run at one tap.
fn run_window(chan: u32, a: i32, step: i32, len: u32, pitch: u32) -> Inputs {
    var v = Inputs();
    for (var j = 0; j < 4; j++) {
        v.v0[j] = run_x(chan, a + j * step, len, pitch);
        v.v1[j] = run_x(chan, a + (j + 4) * step, len, pitch);
        v.v2[j] = run_x(chan, a + (j + 8) * step, len, pitch);
        v.v3[j] = run_x(chan, a + (j + 12) * step, len, pitch);
    }
    return v;
}

@compute @workgroup_size(WG)
fn conv_run(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lane: u32) {
    let s = slot(wid, nwg, lane);
    if (!s.valid) {
        return;
    }
    let n = s.n;
    let g = s.g;
    let gb = s.gb;
    let q0 = s.lane * 16u;                                   // this run's first position
    let taps = p.kh * p.kw;
    let c_begin = s.split * p.split_steps;
    let c_end = min(p.cin_g, c_begin + p.split_steps);
    // the parameters the loops read, as values (see conv)
    let len = p.run_len;
    let pitch = p.run_pitch;
    let stride = p.run_stride;
    let i0 = i32(q0 * stride) + p.run_start;                // input index of position q0, tap 0
    let step = i32(stride);
    let plane = p.h * p.w;
    let chan0 = (n * p.c_in + g * p.cin_g) * plane;
    let wrow = gb * p.cin_g;

    var acc0 = Tile();
    var acc1 = Tile();
    var acc2 = Tile();
    var acc3 = Tile();
    for (var icl = c_begin; icl < c_end; icl++) {
        let chan = chan0 + icl * plane;
        for (var r = 0u; r < min(stride, taps); r++) {
            // window: positions q0 .. q0 + 15 at tap r
            let a = i0 + i32(r);
            var v = run_window(chan, a, step, len, pitch);
            for (var k = r; k < taps; k += stride) {
                let wi = ((wrow + icl) * taps + k) * CQ;
                acc0 = accumulate(acc0, vec4<f32>(wpack[wi]), v);
                if (CQ > 1u) {
                    acc1 = accumulate(acc1, vec4<f32>(wpack[wi + 1u]), v);
                }
                if (CQ > 2u) {
                    acc2 = accumulate(acc2, vec4<f32>(wpack[wi + 2u]), v);
                    acc3 = accumulate(acc3, vec4<f32>(wpack[wi + 3u]), v);
                }
                // tap k + S: every position takes its neighbour's value; position q0 + 15 a new one
                let next = run_x(chan, a + 16 * step + i32(k - r), len, pitch);
                v = Inputs(vec4(v.v0.yzw, v.v1.x), vec4(v.v1.yzw, v.v2.x), vec4(v.v2.yzw, v.v3.x),
                           vec4(v.v3.yzw, next));
            }
        }
    }

    store_block(acc0, acc1, acc2, acc3, s, q0, 1u);
}

// ---------------------------------------------------------------------------------------
// sum_splits: out[i] = act(sum over s < splits of x[s * size + i], in s order, + bias[channel])
// for the `size` = batch * c_out * oh * ow outputs of a split reduction (x: the copies the
// `conv` slices wrote). One invocation per output value.

@compute @workgroup_size(WG)
fn sum_splits(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lane: u32) {
    let i = wg_linear(wid, nwg) * WG + lane;
    let size = p.batch * p.c_out * p.oh * p.ow;
    if (i >= size) {
        return;
    }
    var sum = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        sum += x[s * size + i];
    }
    if (p.has_bias != 0u) {
        sum += f32(bias[(i / (p.oh * p.ow)) % p.c_out]);
    }
    out[i] = activate(vec4(sum)).x;
}
