// rnn.wgsl: recurrent layers, LSTM and GRU, with PyTorch's nn.LSTM / nn.GRU semantics.
//
// One layer (both directions of a bidirectional one together) runs as
//   project      xp[d] = seq @ W_ih^T + b_ih for a chunk of time steps at once (all T steps
//                unless xp would be large), one dispatch per direction over the chunk's
//                rows (a plain register-blocked matmul);
//   lstm_step /  one dispatch per time step, both directions in it: h_prev @ W_hh^T + b_hh,
//   gru_step     the gate nonlinearities and the state update, fused;
//   final_state  copies each direction's last output into h_n.
// Before the first layer, copy_state puts h0 / c0 (or zeros) into the h_n / c_n tensors,
// which then serve as the state buffers. Nothing is read back between steps.
//
// Gates (PyTorch order and formulas; x-part = xp, h-part = W_hh h_prev + b_hh):
//   LSTM, G = 4, rows [i; f; g; o]:  i, f, o = sigmoid(.), g = tanh(.),
//        c = f * c_prev + i * g,  h = o * tanh(c)
//   GRU,  G = 3, rows [r; z; n]:     r, z = sigmoid(x-part + h-part),
//        n = tanh(x_n + r * (W_hn h_prev + b_hn)),  h = (1 - z) * n + z * h_prev
//
// Layout (contiguous, row-major; d = direction, 0 forward, 1 reverse):
//   seq    project: the layer input, rows of n_in features;
//          steps:   the layer output, rows of D * H features, direction d in [d*H, d*H + H).
//          Row of (time t, batch b): t * row_t + b * row_b, i.e. row_t = B, row_b = 1 for
//          time-major [T, B, F] and row_t = 1, row_b = T for batch-first [B, T, F].
//   xp     [D, chunk_rows, G * H]  input projections of one chunk of time steps: block d
//          holds times t0_d .. t0_d + chunk - 1 of direction d (t0_0 = t0_f, t0_1 = t0_r),
//          row (t - t0_d) * B + b. The host projects the next chunk when the steps reach it;
//          the reverse direction walks its chunks from the end of the sequence.
//   w_f    project: W_ih of the direction being projected [G*H, n_in];
//          steps:   W_hh of the forward direction [G*H, H]          (W = f32 or f16)
//   w_r    steps: W_hh of the reverse direction (bound to w_f when D = 1)
//   b_f    b_ih (project) / b_hh (steps) [G*H], b_r likewise          (B = f32 or f16)
//          (ignored when has_bias == 0: a module built with bias=False)
//   h, c   [L * D, B, H]  h_n / c_n; this layer's block starts at state_off. The steps read
//          h_prev from h only at step 0 (afterwards from the previous output in seq) and
//          never write h, so no invocation reads what another one writes in the same
//          dispatch; c is read and written only by the invocation that owns the element.
// The reverse direction handles time T - 1 - step at step `step`.
//
// Work split. project: each invocation computes a 4 x 4 block (4 rows x 4 output columns),
// so each load feeds 4 multiply-adds. Steps: a workgroup of 64 invocations; LANES of them
// (an override constant, a power of two <= 64) share one hidden unit (d, b, j): each sums
// k = lane, lane + LANES, ... of the G dot products over k < H, the partial sums meet in
// workgroup memory (one barrier) and lane 0 applies the gates. LANES = 1 (no barrier)
// suits CPU drivers; on GPUs larger LANES make neighbouring invocations read neighbouring
// weights and keep the GPU busy when B * H is small. Grids are 1-D (folded by the runtime).
//
// Numerics: float32 throughout (f16 weights are widened on load); dot products are summed
// in increasing k per lane, then over lanes in order. sigmoid and tanh are evaluated from
// exp(-|v|), which never overflows.

alias W = f32;
alias B = f32;

struct Params {
    rows: u32,        // project: rows (time steps * B) of the chunk being projected
    chunk_rows: u32,  // rows of one direction's block of xp
    t0_f: u32,        // first time step in xp's forward block (project: of the chunk projected)
    t0_r: u32,        // first time step in xp's reverse block
    n_in: u32,        // project: input features per row
    n_out: u32,       // G * H: gate rows per direction
    xp_off: u32,      // project: first element of this direction's block of xp
    has_bias: u32,    // 0: no biases (b_f / b_r are dummies)
    T: u32,
    batch: u32,       // B
    H: u32,
    D: u32,           // directions, 1 or 2
    step: u32,        // steps: 0 .. T - 1
    row_t: u32,       // row of (t, b) = t * row_t + b * row_b
    row_b: u32,
    state_off: u32,   // this layer's first element in h and c
    n: u32,           // copy_state: elements to write
    has_src: u32,     // copy_state: 0 writes zeros
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> seq: array<f32>;
@group(0) @binding(2) var<storage, read> w_f: array<W>;
@group(0) @binding(3) var<storage, read> w_r: array<W>;
@group(0) @binding(4) var<storage, read> b_f: array<B>;
@group(0) @binding(5) var<storage, read> b_r: array<B>;
@group(0) @binding(6) var<storage, read_write> xp: array<f32>;
@group(0) @binding(7) var<storage, read_write> h: array<f32>;
@group(0) @binding(8) var<storage, read_write> c: array<f32>;

const WG: u32 = 64u;
override LANES: u32 = 1u;

var<workgroup> partial: array<vec4<f32>, WG>;

fn sigmoid(v: f32) -> f32 {
    let e = exp(-abs(v));
    return select(e, 1.0, v >= 0.0) / (1.0 + e);
}

fn tanh_f(v: f32) -> f32 {
    let e = exp(-2.0 * abs(v));
    return sign(v) * (1.0 - e) / (1.0 + e);
}

// ------------------------------------------------------------------ input projection

@compute @workgroup_size(64)
fn project(@builtin(local_invocation_index) li: u32,
           @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let col_blocks = (p.n_out + 3u) / 4u;
    let id = wg_linear(wid, nwg) * WG + li;
    let r0 = (id / col_blocks) * 4u;
    let n0 = (id % col_blocks) * 4u;
    if (r0 >= p.rows) {
        return;
    }
    // Clamp rows and columns past the edge so the k loop has no bounds checks; the
    // duplicated results are simply not stored. Chunk row r is time t0_f + r / B.
    var xrow: array<u32, 4>;
    var wrow: array<u32, 4>;
    for (var i = 0u; i < 4u; i++) {
        let r = min(r0 + i, p.rows - 1u);
        xrow[i] = ((p.t0_f + r / p.batch) * p.row_t + (r % p.batch) * p.row_b) * p.n_in;
        wrow[i] = min(n0 + i, p.n_out - 1u) * p.n_in;
    }
    var acc: array<vec4<f32>, 4>;  // acc[i][jj]: row r0 + i, column n0 + jj
    for (var k = 0u; k < p.n_in; k++) {
        let w = vec4<f32>(f32(w_f[wrow[0] + k]), f32(w_f[wrow[1] + k]),
                          f32(w_f[wrow[2] + k]), f32(w_f[wrow[3] + k]));
        for (var i = 0u; i < 4u; i++) {
            acc[i] += seq[xrow[i] + k] * w;
        }
    }
    for (var jj = 0u; jj < 4u; jj++) {
        let n = n0 + jj;
        if (n >= p.n_out) {
            break;
        }
        var bias = 0.0;
        if (p.has_bias != 0u) {
            bias = f32(b_f[n]);
        }
        for (var i = 0u; i < 4u; i++) {
            let r = r0 + i;
            if (r < p.rows) {
                xp[p.xp_off + r * p.n_out + n] = acc[i][jj] + bias;
            }
        }
    }
}

// ------------------------------------------------------------------ state set-up / read-out

// h[i] = seq[i] for i < n (or 0 when has_src == 0): h0 -> h_n, and c0 -> c_n with c_n bound as h.
@compute @workgroup_size(64)
fn copy_state(@builtin(local_invocation_index) li: u32,
              @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = wg_linear(wid, nwg) * WG + li;
    if (i >= p.n) {
        return;
    }
    var v = 0.0;
    if (p.has_src != 0u) {
        v = seq[i];
    }
    h[i] = v;
}

fn seq_index(t: u32, b: u32, d: u32, j: u32) -> u32 {
    return (t * p.row_t + b * p.row_b) * (p.D * p.H) + d * p.H + j;
}

fn state_index(d: u32, b: u32, j: u32) -> u32 {
    return p.state_off + (d * p.batch + b) * p.H + j;
}

// Time index that direction d handles at step s.
fn time_of(d: u32, s: u32) -> u32 {
    return select(s, p.T - 1u - s, d == 1u);
}

// h_n of this layer: the output at each direction's last step.
@compute @workgroup_size(64)
fn final_state(@builtin(local_invocation_index) li: u32,
               @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let unit = wg_linear(wid, nwg) * WG + li;
    if (unit >= p.D * p.batch * p.H) {
        return;
    }
    let j = unit % p.H;
    let b = (unit / p.H) % p.batch;
    let d = unit / (p.H * p.batch);
    h[state_index(d, b, j)] = seq[seq_index(time_of(d, p.T - 1u), b, d, j)];
}

// ------------------------------------------------------------------ recurrent steps

// Component k of direction d's hidden state before this step: the initial state at
// step 0, afterwards what this direction wrote to seq at the previous step.
fn h_prev(d: u32, b: u32, k: u32) -> f32 {
    if (p.step == 0u) {
        return h[state_index(d, b, k)];
    }
    return seq[seq_index(time_of(d, p.step - 1u), b, d, k)];
}

fn w_hh(d: u32, i: u32) -> f32 {
    if (d == 0u) {
        return f32(w_f[i]);
    }
    return f32(w_r[i]);
}

// The x-part of gate rows g * H + j (g < G) plus b_hh: xp + b_hh, as a vec4 (unused lanes 0).
fn x_part(d: u32, t: u32, b: u32, j: u32, G: u32) -> vec4<f32> {
    let t0 = select(p.t0_f, p.t0_r, d == 1u);
    let base = (d * p.chunk_rows + (t - t0) * p.batch + b) * p.n_out + j;
    var v = vec4<f32>(0.0);
    for (var g = 0u; g < G; g++) {
        v[g] = xp[base + g * p.H];
    }
    return v;
}

fn b_hh(d: u32, j: u32, G: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (p.has_bias != 0u) {
        for (var g = 0u; g < G; g++) {
            if (d == 0u) {
                v[g] = f32(b_f[g * p.H + j]);
            } else {
                v[g] = f32(b_r[g * p.H + j]);
            }
        }
    }
    return v;
}

// (W_hh h_prev)[g * H + j] for g < G, summed over this unit's LANES invocations.
// Called by every invocation of the workgroup (it may contain a barrier).
fn recurrent(li: u32, live: bool, d: u32, b: u32, j: u32, G: u32) -> vec4<f32> {
    let lane = li % LANES;
    var acc = vec4<f32>(0.0);
    if (live) {
        // indices taken once: Params may live in storage (CPU adapters), where every p.*
        // in the loop would be a load, and h_prev's index arithmetic is per (d, b) only
        let H = p.H;
        let from_state = p.step == 0u;
        let hb = select(seq_index(time_of(d, p.step - 1u), b, d, 0u), state_index(d, b, 0u), from_state);
        let row = j * H;                   // gate g's row of W_hh starts at g * H * H + j * H
        let gate_stride = H * H;
        for (var k = lane; k < H; k += LANES) {
            var hk: f32;
            if (from_state) {
                hk = h[hb + k];
            } else {
                hk = seq[hb + k];
            }
            for (var g = 0u; g < G; g++) {
                acc[g] += w_hh(d, g * gate_stride + row + k) * hk;
            }
        }
    }
    if (LANES > 1u) {
        partial[li] = acc;
        workgroupBarrier();
        acc = vec4<f32>(0.0);
        let first = li - lane;
        for (var s = 0u; s < LANES; s++) {
            acc += partial[first + s];
        }
    }
    return acc;
}

@compute @workgroup_size(64)
fn lstm_step(@builtin(local_invocation_index) li: u32,
             @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let unit = wg_linear(wid, nwg) * (WG / LANES) + li / LANES;
    let live = unit < p.D * p.batch * p.H;
    let j = unit % p.H;
    let b = (unit / p.H) % p.batch;
    let d = unit / (p.H * p.batch);
    let hh = recurrent(li, live, d, b, j, 4u);
    if (!live || li % LANES != 0u) {
        return;
    }
    let t = time_of(d, p.step);
    let pre = x_part(d, t, b, j, 4u) + hh + b_hh(d, j, 4u);
    let i_gate = sigmoid(pre.x);
    let f_gate = sigmoid(pre.y);
    let g_gate = tanh_f(pre.z);
    let o_gate = sigmoid(pre.w);
    let ci = state_index(d, b, j);
    let c_new = f_gate * c[ci] + i_gate * g_gate;
    c[ci] = c_new;
    seq[seq_index(t, b, d, j)] = o_gate * tanh_f(c_new);
}

@compute @workgroup_size(64)
fn gru_step(@builtin(local_invocation_index) li: u32,
            @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let unit = wg_linear(wid, nwg) * (WG / LANES) + li / LANES;
    let live = unit < p.D * p.batch * p.H;
    let j = unit % p.H;
    let b = (unit / p.H) % p.batch;
    let d = unit / (p.H * p.batch);
    let wh = recurrent(li, live, d, b, j, 3u);
    if (!live || li % LANES != 0u) {
        return;
    }
    let t = time_of(d, p.step);
    let xg = x_part(d, t, b, j, 3u);
    let hh = wh + b_hh(d, j, 3u);
    let r = sigmoid(xg.x + hh.x);
    let z = sigmoid(xg.y + hh.y);
    let n = tanh_f(xg.z + r * hh.z);
    seq[seq_index(t, b, d, j)] = (1.0 - z) * n + z * h_prev(d, b, j);
}
