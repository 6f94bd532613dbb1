// lstm_grad.wgsl: one LSTM layer for training: a forward step that keeps what the
// backward pass needs, and backpropagation through time, one step per dispatch.
//
// Equations (PyTorch's nn.LSTM, gate rows i, f, g, o, one bias folded into xp):
//   a = xp[t] + W_hh h_{t-1};  i, f, o = sigmoid(a_i, a_f, a_o);  g = tanh(a_g)
//   c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)
// The host computes xp = x W_ih^T + b for all time steps at once (a matmul), and after the
// backward steps the weight gradients from the saved tensors (matmuls too):
//   dW_ih = da^T x, db = sum_rows da, dW_hh = da^T h_prev, dx = da W_ih.
//
// Entry points (one dispatch over the B * H units (b, j) each; 1-D grids, wg_linear):
//   forward_step   step s: reads h_{s-1} from hprev[s], c_{s-1} from cs[s]; writes the
//                  activated gates acts[s], c_s to cs[s + 1], h_s to out[s] and, when
//                  s + 1 < T, to hprev[s + 1]. Every invocation reads row s of hprev and
//                  writes only row s + 1, so no invocation reads what another writes.
//   backward_step  step s, from T - 1 down to 0: dh = dout[s] + (da[s + 1] W_hh)_j (the
//                  recurrent term, absent at s = T - 1: truncation at the window's end),
//                  the cell carry dc (a [B, H] buffer owned element-wise), and writes the
//                  pre-activation gradients da[s] = (da_i, da_f, da_g, da_o).
//   carry          the next window's initial state in place: hprev[0] = out[T - 1],
//                  cs[0] = cs[T] (or zeros), for truncated backpropagation through time
//                  over a long sequence (the state flows on, its gradient stops).
//
// Layout (time-major, contiguous): xp, acts, da [T, B, 4H]; out, hprev, dout [T, B, H];
// cs [T + 1, B, H] (cs[0] = c0, hprev[0] = h0); w_hh [4H, H]; dc [B, H].
// Loops: forward H passes, backward 4H passes per invocation (the op refuses H whose
// loops would pass lavapipe's 65,535 limit, kernels/common.wgsl).
// Numerics: float32; dot products summed in increasing k; sigmoid and tanh from
// exp(-|v|), which never overflows.

struct Params {
    T: u32,
    batch: u32,
    H: u32,
    step: u32,
    keep: u32,    // carry: 1 keeps the last state, 0 zeroes it
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xp: array<f32>;
@group(0) @binding(2) var<storage, read> w_hh: array<f32>;
@group(0) @binding(3) var<storage, read_write> acts: array<f32>;
@group(0) @binding(4) var<storage, read_write> cs: array<f32>;
@group(0) @binding(5) var<storage, read_write> hprev: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read_write> dout: array<f32>;
@group(0) @binding(8) var<storage, read_write> da: array<f32>;
@group(0) @binding(9) var<storage, read_write> dc: array<f32>;

const WG: u32 = 64u;

fn sigmoid(v: f32) -> f32 {
    let e = exp(-abs(v));
    return select(e, 1.0, v >= 0.0) / (1.0 + e);
}

fn tanh_f(v: f32) -> f32 {
    let e = exp(-2.0 * abs(v));
    return sign(v) * (1.0 - e) / (1.0 + e);
}

@compute @workgroup_size(64)
fn forward_step(@builtin(local_invocation_index) li: u32,
                @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let unit = wg_linear(wid, nwg) * WG + li;
    let BH = p.batch * p.H;
    if (unit >= BH) {
        return;
    }
    let H = p.H;
    let b = unit / H;
    let j = unit % H;
    let s = p.step;
    let hrow = (s * p.batch + b) * H;
    var a = vec4<f32>(0.0);
    for (var k = 0u; k < H; k++) {
        let hk = hprev[hrow + k];
        a += hk * vec4<f32>(w_hh[j * H + k], w_hh[(H + j) * H + k],
                            w_hh[(2u * H + j) * H + k], w_hh[(3u * H + j) * H + k]);
    }
    let g4 = (s * p.batch + b) * 4u * H + j;
    a += vec4<f32>(xp[g4], xp[g4 + H], xp[g4 + 2u * H], xp[g4 + 3u * H]);
    let i = sigmoid(a.x);
    let f = sigmoid(a.y);
    let g = tanh_f(a.z);
    let o = sigmoid(a.w);
    let c = f * cs[s * BH + unit] + i * g;
    let h = o * tanh_f(c);
    acts[g4] = i;
    acts[g4 + H] = f;
    acts[g4 + 2u * H] = g;
    acts[g4 + 3u * H] = o;
    cs[(s + 1u) * BH + unit] = c;
    out[s * BH + unit] = h;
    if (s + 1u < p.T) {
        hprev[(s + 1u) * BH + unit] = h;
    }
}

@compute @workgroup_size(64)
fn backward_step(@builtin(local_invocation_index) li: u32,
                 @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let unit = wg_linear(wid, nwg) * WG + li;
    let BH = p.batch * p.H;
    if (unit >= BH) {
        return;
    }
    let H = p.H;
    let b = unit / H;
    let j = unit % H;
    let s = p.step;
    var dh = dout[s * BH + unit];
    var dcell = 0.0;
    if (s + 1u < p.T) {
        // (da[s + 1] W_hh)_j: column j of W_hh against the next step's gate gradients
        let row = ((s + 1u) * p.batch + b) * 4u * H;
        var acc = 0.0;
        for (var r = 0u; r < 4u * H; r++) {
            acc += da[row + r] * w_hh[r * H + j];
        }
        dh += acc;
        dcell = dc[unit];
    }
    let g4 = (s * p.batch + b) * 4u * H + j;
    let i = acts[g4];
    let f = acts[g4 + H];
    let g = acts[g4 + 2u * H];
    let o = acts[g4 + 3u * H];
    let tc = tanh_f(cs[(s + 1u) * BH + unit]);
    dcell += dh * o * (1.0 - tc * tc);
    da[g4] = dcell * g * i * (1.0 - i);
    da[g4 + H] = dcell * cs[s * BH + unit] * f * (1.0 - f);
    da[g4 + 2u * H] = dcell * i * (1.0 - g * g);
    da[g4 + 3u * H] = dh * tc * o * (1.0 - o);
    dc[unit] = dcell * f;
}

// The next window's initial state in place: hprev[0] = out[T - 1], cs[0] = cs[T]
// (h_T, c_T), or zeros when keep == 0 (a fresh start).
@compute @workgroup_size(64)
fn carry(@builtin(local_invocation_index) li: u32,
         @builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>) {
    let unit = wg_linear(wid, nwg) * WG + li;
    let BH = p.batch * p.H;
    if (unit >= BH) {
        return;
    }
    var h = 0.0;
    var c = 0.0;
    if (p.keep != 0u) {
        h = out[(p.T - 1u) * BH + unit];
        c = cs[p.T * BH + unit];
    }
    hprev[unit] = h;
    cs[unit] = c;
}
