// matmul_pack.wgsl: zero-pad (or crop) a batch of matrices, the helper of matmul.wgsl.
//
//   y[b, r, c] = x[b, r, c] if r < src_rows and c < src_cols else 0
//   x: [batch, src_rows, src_cols], element type W (f32, or f16 via aliases={"W": "f16"})
//   y: [batch, rows, cols] float32 (total = batch * rows * cols elements)
//
// matmul.wgsl reads its operands as vec4s, so pycore/ops/matmul.py pads matrices whose
// inner dimension (or K) is not a multiple of 4 with this kernel, and crops the padded
// result back to N columns. A separate file because its bindings differ from matmul's.
// Workgroup: 256 invocations, one output element each; 1-D grid (wg_linear).
// Numerics: exact copies (f16 -> f32 widening is exact).

alias W = f32;

struct Params {
    rows: u32,
    cols: u32,
    src_rows: u32,
    src_cols: u32,
    total: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<W>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn repack(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = wg_linear(wid, nwg) * 256u + lid;
    if (i >= p.total) { return; }
    let col = i % p.cols;
    let row = (i / p.cols) % p.rows;
    let batch = i / (p.cols * p.rows);
    var v = 0.0;
    if (row < p.src_rows && col < p.src_cols) {
        v = f32(x[(batch * p.src_rows + row) * p.src_cols + col]);
    }
    y[i] = v;
}
