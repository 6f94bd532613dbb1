// subgroup_probe.wgsl: report the adapter's subgroup size (needs the "subgroup" feature).
//
//   out[0] = subgroup_size as seen by a compute shader with a workgroup of 64
//
// Kernels that hand data round a subgroup with constant lane indices (matmul_sg.wgsl)
// are written for one subgroup size; the host runs this once per device and uses them
// only where the size matches. One workgroup; no loops.

@group(0) @binding(1) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(subgroup_size) size: u32, @builtin(local_invocation_index) lid: u32) {
    if (lid == 0u) { out[0] = size; }
}
