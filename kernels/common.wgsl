// common.wgsl: prepended by the runtime to every kernel file.
//
// 1-D grids larger than the 65,535-workgroups-per-dimension limit are folded by the
// runtime into an (x, y) grid; kernels recover their linear workgroup index with
// wg_linear and bounds-check it against their own element count.
//
// Loop limit. Mesa's llvmpipe / lavapipe (the CPU Vulkan driver) guards shaders against
// endless loops with ONE counter per invocation, shared by all its loops: it starts at
// 65,535 (LP_MAX_TGSI_LOOP_ITERATIONS in gallivm) and every pass through the end of any
// loop body takes one off; at 0, loops exit as if their condition had failed. No error:
// results are silently wrong. Measured on Mesa 22.3 (and in its source):
//   - one loop of n iterations is correct up to n = 65,535 (200,000 return 65,535);
//   - every loop run costs its iterations + 1 (the pass that exits), so nested loops
//     and loops in sequence share the budget (300 x 300 nested stop after 65,101);
//   - `for`, `while` and `loop {}` count alike; loops with a small constant trip count
//     (e < 4u) are unrolled by the compiler and cost nothing;
//   - the counter belongs to a SIMD vector of 8 invocations (AVX2 width): a loop costs
//     the vector as many passes as its longest-running lane needs.
// It is not naga's: naga's force_loop_bounding guard is a 64-bit counter per loop.
// Other drivers have no such limit, but kernels must work on all of them, so a kernel
// whose loops grow with the input keeps every invocation well below 65,535 passes (the
// host splits the work into several dispatches; pycore.ops.MAX_LOOP_STEPS) or its op
// refuses larger shapes with a ValueError (pycore.ops.expect_loop_steps).

fn wg_linear(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}
