// loss.wgsl: mean squared error and its gradient, for training.
//
//   mse     d = pred - want; grad[i] = 2 d / n (the gradient of the mean). Workgroup g
//           covers elements [g CHUNK, (g + 1) CHUNK); invocation li sums d^2 of its
//           elements g CHUNK + li + 64 k (k = 0 .. CHUNK / 64 - 1, in order) into
//           part[g * 64 + li]. No barrier: CPU drivers pay for every barrier of every
//           workgroup (SwiftShader: a tree per 64 elements cost 9x an elementwise pass).
//   finish  one workgroup: loss[0] = (sum of the parts) / n; each invocation sums
//           every 64th part in order, then a tree.
// Layout: pred, want, grad flat [n]; part [ceil(n / CHUNK) * 64]; loss [1]. 1-D grids
// (wg_linear).
// Numerics: float32; every sum is a tree or a short run (CHUNK / 64 = 64 terms per
// invocation in mse, n / 4096 in finish).

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
const CHUNK: u32 = 4096u;
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
    let stop = min(p.n, (g + 1u) * CHUNK);
    var sq = 0.0;
    for (var i = g * CHUNK + li; i < stop; i += WG) {
        let d = pred[i] - want[i];
        grad[i] = 2.0 * d * p.inv_n;
        sq += d * d;
    }
    if (g * WG + li < p.parts) {
        part[g * WG + li] = sq;
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
