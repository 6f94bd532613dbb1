// conv_columns.wgsl: a 1-D convolution of ONE input channel as a matrix product, for
// pycore.ops.conv's columns path (CPU adapters, long kernels: CREPE conv1's 512 taps run
// 1.15x faster, columns included, through the tuned matmul than through conv.wgsl's
// conv_run on lavapipe).
// With K = rows (taps + 1 for the bias, rounded up to a multiple of 4 for matmul):
//
//   columns       cols[n, q, k] = x[n, q * stride + start + k]  for k < taps (0 outside
//                 0 .. len - 1: zero padding), 1 for k == taps (the bias row), 0 above
//   gemm_weights  wk[c, k] = weight[c, k] for k < taps, bias[c] (0 without one) for
//                 k == taps, 0 above
//
// and then out[n, c, q] = act(sum over k of wk[c, k] * cols[n, q, k]), which is
// pycore.ops.matmul.matmul(wk, cols, act=act, trans_b=True) -> [n, c_out, positions].
//
// Layout (contiguous, row-major, f32): x [batch, 1, h, w] with the convolution along one
// axis (element pitch `pitch`, `len` elements), cols [batch, positions, rows],
// weight [c_out, 1, taps] (any 1-tap other axis), bias [c_out], wk [c_out, rows].
// `out` is written as vec4s (rows is a multiple of 4): on a CPU driver, where neighbouring
// invocations are the lanes of one SIMD instruction, a store to an address it cannot prove
// contiguous is split lane by lane, so each lane stores 4 values at once.
// Workgroup: WG invocations, 1-D grid folded by the runtime (wg_linear). columns: one
// invocation per output position (n, q), looping over its rows / 4 vec4s; gemm_weights:
// one invocation per vec4 of wk.
// Numerics: copies only; the matrix product sums in float32.

struct Params {
    batch: u32,        // items of this dispatch: x's items first_item .. first_item + batch - 1
    first_item: u32,
    len: u32,          // input samples along the convolution's axis
    pitch: u32,        // element pitch of that axis in x
    plane: u32,        // elements of one batch item of x
    stride: u32,
    start: i32,        // input index of position 0, tap 0 (-padding)
    taps: u32,
    rows: u32,         // K: taps + 1 rounded up to a multiple of 4
    positions: u32,    // output positions
    c_out: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn columns(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lane: u32) {
    let item = wg_linear(wid, nwg) * WG + lane;            // n * positions + q
    let positions = p.positions;
    if (item >= p.batch * positions) {
        return;
    }
    let n = item / positions;
    let q = item - n * positions;
    let len = p.len;
    let pitch = p.pitch;
    let taps = p.taps;
    let rows = p.rows;
    let base = (p.first_item + n) * p.plane;
    let first = i32(q * p.stride) + p.start;                // input index of tap 0
    let dst = item * (rows / 4u);
    for (var k4 = 0u; k4 < rows / 4u; k4++) {
        var v = vec4<f32>(0.0);
        for (var e = 0u; e < 4u; e++) {
            let k = 4u * k4 + e;
            let i = first + i32(k);
            if (k < taps && u32(i) < len) {                 // negatives wrap past len
                v[e] = x[base + u32(i) * pitch];
            } else if (k == taps) {
                v[e] = 1.0;
            }
        }
        out[dst + k4] = v;
    }
}

@compute @workgroup_size(WG)
fn gemm_weights(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lane: u32) {
    let i = wg_linear(wid, nwg) * WG + lane;                // vec4 i of wk
    let quads = p.rows / 4u;
    if (i >= p.c_out * quads) {
        return;
    }
    let c = i / quads;
    var v = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        let k = 4u * (i - c * quads) + e;
        if (k < p.taps) {
            v[e] = weight[c * p.taps + k];
        } else if (k == p.taps && p.has_bias != 0u) {
            v[e] = bias[c];
        }
    }
    out[i] = v;
}
