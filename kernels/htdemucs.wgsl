// htdemucs.wgsl: the two small data-movement steps of HTDemucs (pycore/models/htdemucs.py)
// that no shared op covers.
//
// Entry points (they share the bindings and Params below):
//   reflect_pad   x [rows, len_in] -> out [rows, len_out], out[r, j] = x[r, reflect(j - lo)]
//                 with reflect(i) = -i for i < 0 and 2 (len_in - 1) - i for i >= len_in
//                 (torch.nn.functional.pad mode="reflect"; the host keeps lo, hi < len_in).
//   standardize   mode 0: out = (x - m[0]) / (eps + s[0])   (HTDemucs' input normalization)
//                 mode 1: out = x * s[0] + m[0]              (its inverse on the output)
//                 mode 2: out = (x - m[0]) / sqrt(s[0]^2 + eps) (GroupNorm(1, C) of one long
//                         item with s the biased std, before the per-channel affine map)
//                 m and s are the 0-d mean and std tensors from pycore.ops.reduce, so the
//                 statistics never leave the GPU.
// Layout: contiguous row-major f32. One invocation per output element, 1-D grid of
// workgroups of 256 (folded by the runtime: wg_linear + bounds check).
// Numerics: float32, one operation per element; no loops.

struct Params {
    n: u32,        // output elements
    len_in: u32,   // reflect_pad: input row length
    len_out: u32,  // reflect_pad: output row length
    lo: u32,       // reflect_pad: samples added before
    mode: u32,     // standardize: 0 normalize, 1 denormalize, 2 group-normalize
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> m: array<f32>;
@group(0) @binding(3) var<storage, read> s: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn reflect_pad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let i = wg_linear(wid, nwg) * 256u + li;
    if (i >= p.n) { return; }
    let r = i / p.len_out;
    var j = i32(i % p.len_out) - i32(p.lo);
    let last = i32(p.len_in) - 1;
    if (j < 0) { j = -j; }
    if (j > last) { j = 2 * last - j; }
    out[i] = x[r * p.len_in + u32(j)];
}

@compute @workgroup_size(256)
fn standardize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let i = wg_linear(wid, nwg) * 256u + li;
    if (i >= p.n) { return; }
    if (p.mode == 0u) {
        out[i] = (x[i] - m[0]) / (p.eps + s[0]);
    } else if (p.mode == 1u) {
        out[i] = x[i] * s[0] + m[0];
    } else {
        out[i] = (x[i] - m[0]) / sqrt(s[0] * s[0] + p.eps);
    }
}
