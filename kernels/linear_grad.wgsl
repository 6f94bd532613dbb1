// linear_grad.wgsl: the activation part of a linear layer's backward pass.
//
//   act_grad  dz[i] = dy[i] * act'(z) written from the layer's OUTPUT y = act(z):
//             ACT 0 none: 1;  1 relu: y > 0;  3 tanh: 1 - y^2;  4 sigmoid: y (1 - y)
//             (the codes of pycore/ops/matmul.py's ACTS). The weight, bias and input
//             gradients are matmuls and a column sum (pycore/ops/linear_grad.py).
// Layout: flat [n]. 1-D grid (wg_linear). Numerics: float32, one rounding per product.

override ACT: u32 = 0u;

struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> dz: array<f32>;

@compute @workgroup_size(64)
fn act_grad(@builtin(local_invocation_index) li: u32,
            @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = wg_linear(wid, nwg) * 64u + li;
    if (i >= p.n) {
        return;
    }
    let v = y[i];
    var d = 1.0;
    if (ACT == 1u) {
        d = select(0.0, 1.0, v > 0.0);
    } else if (ACT == 3u) {
        d = 1.0 - v * v;
    } else if (ACT == 4u) {
        d = v * (1.0 - v);
    }
    dz[i] = dy[i] * d;
}
