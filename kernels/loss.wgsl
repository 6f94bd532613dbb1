// loss.wgsl: mean squared error and its gradient, for training.
//
//   mse     d = pred - want; grad[i] = 2 d / n (the gradient of the mean); each
//           workgroup of 64 sums its d^2 by a tree in workgroup memory into part[wg].
//   finish  one workgroup: loss[0] = (sum of the parts) / n; each invocation sums
//           every 64th part in order, then a tree.
// Layout: pred, want, grad flat [n]; part [ceil(n / 64)]; loss [1]. 1-D grids (wg_linear).
// Numerics: float32; every sum is a tree or a short run (n / 4096 terms per invocation).

struct Params {
    n: u32,
    parts: u32,
    inv_n: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pred: array<f32>;
@group(0) @binding(2) var<storage, read> want: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> part: array<f32>;
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;

const WG: u32 = 64u;
var<workgroup> acc: array<f32, WG>;

fn tree(li: u32) {
    for (var w = WG / 2u; w > 0u; w = w / 2u) {
        workgroupBarrier();
        if (li < w) {
            acc[li] += acc[li + w];
        }
    }
}

@compute @workgroup_size(64)
fn mse(@builtin(local_invocation_index) li: u32,
       @builtin(workgroup_id) wid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = wg_linear(wid, nwg);
    let i = g * WG + li;
    var sq = 0.0;
    if (i < p.n) {
        let d = pred[i] - want[i];
        grad[i] = 2.0 * d * p.inv_n;
        sq = d * d;
    }
    acc[li] = sq;
    tree(li);
    if (li == 0u && g < p.parts) {
        part[g] = acc[0];
    }
}

@compute @workgroup_size(64)
fn finish(@builtin(local_invocation_index) li: u32) {
    var s = 0.0;
    for (var k = li; k < p.parts; k += WG) {
        s += part[k];
    }
    acc[li] = s;
    tree(li);
    if (li == 0u) {
        loss[0] = acc[0] * p.inv_n;
    }
}
