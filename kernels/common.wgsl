// common.wgsl: prepended by the runtime to every kernel file.
//
// 1-D grids larger than the 65,535-workgroups-per-dimension limit are folded by the
// runtime into an (x, y) grid; kernels recover their linear workgroup index with
// wg_linear and bounds-check it against their own element count.

fn wg_linear(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}
