// adam.wgsl: the Adam optimizer with gradient clipping by global norm, as
// torch.nn.utils.clip_grad_norm_(params, clip) followed by torch.optim.Adam.step().
//
//   sumsq  workgroups of 64, each summing CHUNK elements of one gradient tensor (a run of
//          CHUNK / 64 per invocation, then a tree): parts[part_off + wg] = sum grad^2.
//          The host runs it once per parameter tensor, each into its own range of parts.
//   norm   one invocation: parts[n_parts] = the sum of parts[0 .. n_parts - 1], in order
//          (once per step, not once per element of every parameter tensor).
//   step   per element of one parameter tensor: total = sqrt(parts[n_parts]);
//          coef = min(1, clip / (total + 1e-6)) when clip > 0, else 1; g = coef * grad;
//          m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//          param -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)   (bc = 1 - beta^t, host).
//          bc1 and sqrt(bc2) are read from the tensor bc, which the host writes before
//          each step: a recorded plan of a training step keeps its parameters, and these
//          change with the step count t.
// Layout: flat [n] tensors; parts [n_parts + 1]. 1-D grids (wg_linear).
// Numerics: float32; the host keeps n_parts well below the loop limit.

struct Params {
    n: u32,
    part_off: u32,
    n_parts: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    clip: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read_write> parts: array<f32>;
@group(0) @binding(6) var<storage, read> bc: array<f32>;     // bc1, sqrt(bc2)

const WG: u32 = 64u;
const CHUNK: u32 = 4096u;
var<workgroup> acc: array<f32, WG>;

@compute @workgroup_size(64)
fn sumsq(@builtin(local_invocation_index) li: u32,
         @builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = wg_linear(wid, nwg);
    let start = g * CHUNK;
    let stop = min(p.n, start + CHUNK);
    var s = 0.0;
    for (var i = start + li; i < stop; i += WG) {
        let x = grad[i];
        s += x * x;
    }
    acc[li] = s;
    for (var w = WG / 2u; w > 0u; w = w / 2u) {
        workgroupBarrier();
        if (li < w) {
            acc[li] += acc[li + w];
        }
    }
    if (li == 0u && start < p.n) {
        parts[p.part_off + g] = acc[0];
    }
}

@compute @workgroup_size(1)
fn norm() {
    var total = 0.0;
    for (var k = 0u; k < p.n_parts; k++) {
        total += parts[k];
    }
    parts[p.n_parts] = total;
}

@compute @workgroup_size(64)
fn step(@builtin(local_invocation_index) li: u32,
        @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = wg_linear(wid, nwg) * WG + li;
    if (i >= p.n) {
        return;
    }
    var coef = 1.0;
    if (p.clip > 0.0) {
        coef = min(1.0, p.clip / (sqrt(parts[p.n_parts]) + 1e-6));
    }
    let gi = coef * grad[i];
    let mi = p.beta1 * m[i] + (1.0 - p.beta1) * gi;
    let vi = p.beta2 * v[i] + (1.0 - p.beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    param[i] -= p.lr / bc[0] * mi / (sqrt(vi) / bc[1] + p.eps);
}
