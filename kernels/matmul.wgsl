// matmul.wgsl: batched matrix multiply with a fused epilogue,
//     C[b] = act(A[b] @ B[b] + bias)          (float32 accumulation always)
//
// Memory layout. Every operand is a contiguous row-major matrix that the kernels read as
// vec4s along its contiguous ("inner") dimension, so pycore/ops/matmul.py zero-pads
// inner dimensions and K to multiples of 4 (kernels/matmul_pack.wgsl) when they are not:
//   A  [M, K] (TRANS_A = false) or its transpose, stored [K, M] (TRANS_A = true)
//   B  [K, N] (TRANS_B = false) or its transpose, stored [N, K] (TRANS_B = true);
//      element type W: f32, or f16 for half weights (aliases={"W": "f16"})
//   C  [M, ldc*4] float32 (ldc*4 = N rounded up to 4), bias [ldc*4] float32
// lda / ldb / ldc are row strides in vec4s; sa / sb / sc batch strides in vec4s (sa or
// sb = 0 shares one matrix across the batch). Batch index = workgroup_id.y +
// workgroup_id.z * num_workgroups.y (so batches > 65535 fit), checked against nbatch.
//
// Everything works on 4x4 sub-blocks held as mat4x4<f32>: a sub-block of A is `am`
// (column kk = its 4 rows at k = 4*k4 + kk), a sub-block of B is `bm` (column q = the 4
// k-values of output column n + q), so `am * bm` is a 4x4 block of C (column q = output
// column n + q), and operand transposition is a free register shuffle.
//
// Two kernels here and a third, mm_sg, in kernels/matmul_sg.wgsl (the subgroup version
// of mm_reg, where the device has subgroups); pycore/ops/matmul.py picks one and its
// override constants per adapter by a small timing autotune:
//
// mm_reg: register blocking without workgroup memory. Each invocation owns a block of
//   (4*BM4) x (4*BN4) outputs (BM4, BN4 in 1..8) and streams A and B straight from
//   storage; workgroup = WG invocations in a row. This is what CPU drivers like:
//   lavapipe runs each invocation as one lane of an 8-wide SIMD and pays for every
//   loaded component, so big blocks (many FMAs per load) win and barriers cost a lot.
//   Its loops are not unrolled (naga guards every loop with a counter), so the BM4 x BN4
//   grid of sub-blocks is spelled out; the `if (BN4 > j)` guards are resolved when the
//   pipeline is created and unused blocks vanish. Local arrays are only ever indexed
//   by constants, which keeps them in registers.
//
// mm_tiled: classic workgroup-memory tiling for real GPUs. A workgroup of TT x TT
//   invocations computes a (4*TT) x (4*TT) tile of C, each invocation a 4x4 sub-block;
//   per step it stages a (4*TT) x (4*TK4) slab of A and a (4*TK4) x (4*TT) slab of B in
//   workgroup memory (TT <= 16, TK4 <= 4: at most 8 KiB).
//
// Epilogue (both kernels): + bias[n], then act: 0 none, 1 relu, 2 gelu (exact erf form,
// torch's default), 3 tanh, 4 sigmoid; erf is float32-accurate to about 2e-7.
//
// mm_epilogue: the same epilogue as a pass of its own over the whole of C, for mm_sg,
// which stores raw sums.

alias W = f32;

struct Params {
    M: u32,
    N: u32,
    K4: u32,       // K (padded) / 4
    lda: u32,      // row strides of the storage of A, B, C in vec4s
    ldb: u32,
    ldc: u32,
    sa: u32,       // batch strides in vec4s (0: shared by the whole batch)
    sb: u32,
    sc: u32,
    nbatch: u32,
    act: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<W>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> c: array<vec4<f32>>;

override TRANS_A: bool = false;
override TRANS_B: bool = false;

// ------------------------------------------------------------------ loading 4x4 blocks
//
// A 4x4 sub-block is fetched as 4 vec4 loads. a_offsets / b_offsets compute, once per
// sub-block, where those 4 vec4s sit at k4 = 0; at step k4 they sit a_step(k4) /
// b_step(k4) vec4s further on. Rows of A past M and columns of B past N are clamped to
// the last one (their results are computed but never stored).

fn a_offsets(base: u32, m: u32) -> vec4<u32> {
    if (TRANS_A) {  // storage [K, M]: the vec4 at (k, m/4) holds 4 rows at one k
        let i = base + min(m / 4u, p.lda - 1u);
        return vec4<u32>(i, i + p.lda, i + 2u * p.lda, i + 3u * p.lda);
    }
    let last = p.M - 1u;  // storage [M, K]: the vec4 at (m, k4) holds 4 k-values of row m
    let rows = vec4<u32>(min(m, last), min(m + 1u, last), min(m + 2u, last), min(m + 3u, last));
    return base + rows * p.lda;
}

fn a_step(k4: u32) -> u32 {
    return select(k4, 4u * k4 * p.lda, TRANS_A);
}

// The sub-block as `am`: column kk = rows m..m+3 at k = 4*k4 + kk.
fn load_a(o: vec4<u32>) -> mat4x4<f32> {
    let v = mat4x4<f32>(a[o.x], a[o.y], a[o.z], a[o.w]);
    if (TRANS_A) { return v; }
    return transpose(v);
}

fn b_offsets(base: u32, n: u32) -> vec4<u32> {
    if (TRANS_B) {  // storage [N, K]: the vec4 at (n, k4) holds 4 k-values of column n
        let last = p.N - 1u;
        let cols = vec4<u32>(min(n, last), min(n + 1u, last), min(n + 2u, last), min(n + 3u, last));
        return base + cols * p.ldb;
    }
    let i = base + min(n / 4u, p.ldb - 1u);  // storage [K, N]: 4 columns at one k
    return vec4<u32>(i, i + p.ldb, i + 2u * p.ldb, i + 3u * p.ldb);
}

fn b_step(k4: u32) -> u32 {
    return select(4u * k4 * p.ldb, k4, TRANS_B);
}

// The sub-block as `bm`: column q = the 4 k-values (4*k4 ..) of output column n + q.
fn load_b(o: vec4<u32>) -> mat4x4<f32> {
    let v = mat4x4<f32>(vec4<f32>(b[o.x]), vec4<f32>(b[o.y]), vec4<f32>(b[o.z]), vec4<f32>(b[o.w]));
    if (TRANS_B) { return v; }
    return transpose(v);
}

// ------------------------------------------------------------------ epilogue

const SQRT1_2: f32 = 0.70710678118654752;

// erfc(z) for z >= 0, relative error < 5e-7: erfc(z) = t exp(-z^2 + P(t)), t = 2/(2+z),
// P a degree-9 least-squares fit of log(erfc(z) / t) + z^2 over z in [0, 12] (fitted for
// this file). exp(-z^2) is split as exp(-zh^2) exp(-(z-zh)(z+zh)) with zh = z rounded
// down to 1/256, so zh^2 is exact in float32 and the large exponent loses no digits.
fn erfc_pos(z: vec4<f32>) -> vec4<f32> {
    let t = 2.0 / (2.0 + z);
    var q = vec4<f32>(0.18238632);
    q = q * t - 0.87281811;
    q = q * t + 1.5801284;
    q = q * t - 1.2218715;
    q = q * t + 0.32320106;
    q = q * t - 0.19666450;
    q = q * t + 0.096446939;
    q = q * t + 0.37480804;
    q = q * t + 0.99988776;
    q = q * t - 1.2655041;
    let zh = floor(z * 256.0) / 256.0;
    return t * exp(-zh * zh) * exp(q - (z - zh) * (z + zh));
}

// erf(x) for |x| < 0.5 by its Taylor series 2/sqrt(pi) sum (-1)^n x^(2n+1) / (n! (2n+1)),
// eight terms (the first omitted one is < 1e-9).
fn erf_small(x: vec4<f32>) -> vec4<f32> {
    let x2 = x * x;
    var q = vec4<f32>(-1.4925650e-05);
    q = q * x2 + 1.2055333e-04;
    q = q * x2 - 8.5483270e-04;
    q = q * x2 + 5.2239778e-03;
    q = q * x2 - 2.6866172e-02;
    q = q * x2 + 0.11283792;
    q = q * x2 - 0.37612638;
    q = q * x2 + 1.1283792;
    return x * q;
}

// Standard normal CDF Phi(x) = (1 + erf(x / sqrt 2)) / 2, accurate in both tails
// (absolute error ~1e-7 near 0.5, relative error < 1e-6 in the far left tail).
fn normal_cdf(x: vec4<f32>) -> vec4<f32> {
    let z = abs(x) * SQRT1_2;
    let tail = 0.5 * erfc_pos(z);
    let far = select(1.0 - tail, tail, x < vec4<f32>(0.0));
    let near = 0.5 + 0.5 * erf_small(x * SQRT1_2);
    return select(far, near, z < vec4<f32>(0.5));
}

fn activate(v: vec4<f32>) -> vec4<f32> {
    switch (p.act) {
        case 1u: { return max(v, vec4<f32>(0.0)); }
        case 2u: { return v * normal_cdf(v); }  // gelu, erf form
        case 3u: {  // tanh without overflow: e = exp(-2|v|) in (0, 1]
            let e = exp(-2.0 * abs(v));
            return sign(v) * (1.0 - e) / (1.0 + e);
        }
        case 4u: {  // sigmoid without overflow: e = exp(-|v|) in (0, 1]
            let e = exp(-abs(v));
            return select(vec4<f32>(1.0), e, v < vec4<f32>(0.0)) / (1.0 + e);
        }
        default: { return v; }
    }
}

// Store the 4x4 block `acc` (column q = output column n + q) whose top-left corner is
// C[m, n]; rows past M and vec4 columns past C's padded width are dropped. Raw sums
// only (a short, straight piece of code: it is inlined once per sub-block).
fn store_block(cbase: u32, m: u32, n: u32, acc: mat4x4<f32>) {
    if (n / 4u >= p.ldc) { return; }
    let i = cbase + m * p.ldc + n / 4u;
    let t = transpose(acc);
    if (m < p.M) { c[i] = t[0]; }
    if (m + 1u < p.M) { c[i + p.ldc] = t[1]; }
    if (m + 2u < p.M) { c[i + 2u * p.ldc] = t[2]; }
    if (m + 3u < p.M) { c[i + 3u * p.ldc] = t[3]; }
}

// Then, in place on the rows x cols block of C at [m, n] (n, cols multiples of 4): add
// bias, activate. One loop, so the activation code exists once per kernel.
fn epilogue(cbase: u32, m: u32, n: u32, rows: u32, cols: u32) {
    if (p.act == 0u && p.has_bias == 0u) { return; }
    let m1 = min(m + rows, p.M);
    let j1 = min((n + cols) / 4u, p.ldc);
    for (var i = m; i < m1; i++) {
        for (var j = n / 4u; j < j1; j++) {
            let at = cbase + i * p.ldc + j;
            var v = c[at];
            if (p.has_bias != 0u) { v += bias[j]; }
            c[at] = activate(v);
        }
    }
}

// Grid: 1-D (wg_linear), 256 invocations, one vec4 of C each: nbatch * sc vec4s in all.
@compute @workgroup_size(256)
fn mm_epilogue(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = wg_linear(wid, nwg) * 256u + lid;
    if (i >= p.nbatch * p.sc) { return; }
    var v = c[i];
    if (p.has_bias != 0u) { v += bias[i % p.ldc]; }
    c[i] = activate(v);
}

// ------------------------------------------------------------------ mm_reg

override BM4: u32 = 8u;  // block rows / 4, 1..8
override BN4: u32 = 8u;  // block columns / 4, 1..8
override WG: u32 = 16u;

alias Blocks = array<mat4x4<f32>, 64>;  // accumulators, [i * 8 + j]
alias Row = array<mat4x4<f32>, 8>;      // one k-step of B, [j]

// acc[i][j] += am * bm[j] for the BN4 sub-blocks of row i.
fn mma_row(acc: ptr<function, Blocks>, i: u32, am: mat4x4<f32>, bm: ptr<function, Row>) {
    let r = 8u * i;
    (*acc)[r] += am * (*bm)[0];
    if (BN4 > 1u) { (*acc)[r + 1u] += am * (*bm)[1]; }
    if (BN4 > 2u) { (*acc)[r + 2u] += am * (*bm)[2]; }
    if (BN4 > 3u) { (*acc)[r + 3u] += am * (*bm)[3]; }
    if (BN4 > 4u) { (*acc)[r + 4u] += am * (*bm)[4]; }
    if (BN4 > 5u) { (*acc)[r + 5u] += am * (*bm)[5]; }
    if (BN4 > 6u) { (*acc)[r + 6u] += am * (*bm)[6]; }
    if (BN4 > 7u) { (*acc)[r + 7u] += am * (*bm)[7]; }
}

fn store_row(acc: ptr<function, Blocks>, i: u32, cbase: u32, m: u32, n: u32) {
    let r = 8u * i;
    store_block(cbase, m, n, (*acc)[r]);
    if (BN4 > 1u) { store_block(cbase, m, n + 4u, (*acc)[r + 1u]); }
    if (BN4 > 2u) { store_block(cbase, m, n + 8u, (*acc)[r + 2u]); }
    if (BN4 > 3u) { store_block(cbase, m, n + 12u, (*acc)[r + 3u]); }
    if (BN4 > 4u) { store_block(cbase, m, n + 16u, (*acc)[r + 4u]); }
    if (BN4 > 5u) { store_block(cbase, m, n + 20u, (*acc)[r + 5u]); }
    if (BN4 > 6u) { store_block(cbase, m, n + 24u, (*acc)[r + 6u]); }
    if (BN4 > 7u) { store_block(cbase, m, n + 28u, (*acc)[r + 7u]); }
}

// Grid: x = ceil(blocks / WG) with blocks = ceil(M / 4BM4) * ceil(N / 4BN4); y, z = batch.
@compute @workgroup_size(WG)
fn mm_reg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let cols = (p.N + 4u * BN4 - 1u) / (4u * BN4);  // blocks per row of C
    let blk = wid.x * WG + lid;
    let m0 = (blk / cols) * (4u * BM4);
    let n0 = (blk % cols) * (4u * BN4);
    let batch = wid.y + wid.z * nwg.y;
    if (m0 >= p.M || batch >= p.nbatch) { return; }

    let abase = batch * p.sa;
    let bbase = batch * p.sb;
    let ao0 = a_offsets(abase, m0);       let bo0 = b_offsets(bbase, n0);
    let ao1 = a_offsets(abase, m0 + 4u);  let bo1 = b_offsets(bbase, n0 + 4u);
    let ao2 = a_offsets(abase, m0 + 8u);  let bo2 = b_offsets(bbase, n0 + 8u);
    let ao3 = a_offsets(abase, m0 + 12u); let bo3 = b_offsets(bbase, n0 + 12u);
    let ao4 = a_offsets(abase, m0 + 16u); let bo4 = b_offsets(bbase, n0 + 16u);
    let ao5 = a_offsets(abase, m0 + 20u); let bo5 = b_offsets(bbase, n0 + 20u);
    let ao6 = a_offsets(abase, m0 + 24u); let bo6 = b_offsets(bbase, n0 + 24u);
    let ao7 = a_offsets(abase, m0 + 28u); let bo7 = b_offsets(bbase, n0 + 28u);

    var acc: Blocks;
    var bm: Row;
    // the trip count and the strides as values (a_step / b_step are linear in k4): Params
    // may live in storage (CPU adapters), where each p.* in the loop would be a load
    let k4_end = p.K4;
    let a_stride = a_step(1u);
    let b_stride = b_step(1u);
    for (var k4 = 0u; k4 < k4_end; k4++) {
        let sa = vec4<u32>(k4 * a_stride);
        let sb = vec4<u32>(k4 * b_stride);
        bm[0] = load_b(bo0 + sb);
        if (BN4 > 1u) { bm[1] = load_b(bo1 + sb); }
        if (BN4 > 2u) { bm[2] = load_b(bo2 + sb); }
        if (BN4 > 3u) { bm[3] = load_b(bo3 + sb); }
        if (BN4 > 4u) { bm[4] = load_b(bo4 + sb); }
        if (BN4 > 5u) { bm[5] = load_b(bo5 + sb); }
        if (BN4 > 6u) { bm[6] = load_b(bo6 + sb); }
        if (BN4 > 7u) { bm[7] = load_b(bo7 + sb); }
        mma_row(&acc, 0u, load_a(ao0 + sa), &bm);
        if (BM4 > 1u) { mma_row(&acc, 1u, load_a(ao1 + sa), &bm); }
        if (BM4 > 2u) { mma_row(&acc, 2u, load_a(ao2 + sa), &bm); }
        if (BM4 > 3u) { mma_row(&acc, 3u, load_a(ao3 + sa), &bm); }
        if (BM4 > 4u) { mma_row(&acc, 4u, load_a(ao4 + sa), &bm); }
        if (BM4 > 5u) { mma_row(&acc, 5u, load_a(ao5 + sa), &bm); }
        if (BM4 > 6u) { mma_row(&acc, 6u, load_a(ao6 + sa), &bm); }
        if (BM4 > 7u) { mma_row(&acc, 7u, load_a(ao7 + sa), &bm); }
    }

    let cbase = batch * p.sc;
    store_row(&acc, 0u, cbase, m0, n0);
    if (BM4 > 1u) { store_row(&acc, 1u, cbase, m0 + 4u, n0); }
    if (BM4 > 2u) { store_row(&acc, 2u, cbase, m0 + 8u, n0); }
    if (BM4 > 3u) { store_row(&acc, 3u, cbase, m0 + 12u, n0); }
    if (BM4 > 4u) { store_row(&acc, 4u, cbase, m0 + 16u, n0); }
    if (BM4 > 5u) { store_row(&acc, 5u, cbase, m0 + 20u, n0); }
    if (BM4 > 6u) { store_row(&acc, 6u, cbase, m0 + 24u, n0); }
    if (BM4 > 7u) { store_row(&acc, 7u, cbase, m0 + 28u, n0); }
    epilogue(cbase, m0, n0, 4u * BM4, 4u * BN4);
}

// ------------------------------------------------------------------ mm_tiled

override TT: u32 = 16u;  // workgroup = TT x TT invocations, tile of C = 4TT x 4TT; <= 16
override TK4: u32 = 4u;  // K-slab per step = 4 * TK4; <= 4, <= TT

// Slabs of the current step: [k][i] = vec4 of 4 rows of A (4 columns of B) at k.
var<workgroup> slab_a: array<vec4<f32>, 256>;
var<workgroup> slab_b: array<vec4<f32>, 256>;

// Grid: x = tiles = ceil(M / 4TT) * ceil(N / 4TT); y, z = batch.
@compute @workgroup_size(TT, TT)
fn mm_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let tiles_n = (p.N + 4u * TT - 1u) / (4u * TT);
    let m_tile = (wid.x / tiles_n) * 4u * TT;
    let n_tile = (wid.x % tiles_n) * 4u * TT;
    let batch = min(wid.y + wid.z * nwg.y, p.nbatch - 1u);  // no early exit: barriers below
    let abase = batch * p.sa;
    let bbase = batch * p.sb;

    // The sub-blocks this invocation stages each step (row group s % TT, k group s / TT).
    let s = li;
    let stager = s < TT * TK4;
    let ao = a_offsets(abase, m_tile + 4u * (s % TT));
    let bo = b_offsets(bbase, n_tile + 4u * (s % TT));
    let ks = s / TT;

    var acc = mat4x4<f32>();
    for (var k0 = 0u; k0 < p.K4; k0 += TK4) {
        if (stager) {
            let k4 = k0 + ks;
            var am = mat4x4<f32>();  // zero past K
            var bt = mat4x4<f32>();
            if (k4 < p.K4) {
                am = load_a(ao + vec4<u32>(a_step(k4)));
                bt = transpose(load_b(bo + vec4<u32>(b_step(k4))));
            }
            let at = 4u * ks * TT + s % TT;
            for (var kk = 0u; kk < 4u; kk++) {
                slab_a[at + kk * TT] = am[kk];
                slab_b[at + kk * TT] = bt[kk];
            }
        }
        workgroupBarrier();
        for (var k = 0u; k < 4u * TK4; k++) {
            let av = slab_a[k * TT + lid.y];  // rows m_tile + 4 lid.y ..
            let bv = slab_b[k * TT + lid.x];  // columns n_tile + 4 lid.x ..
            acc += mat4x4<f32>(av * bv.x, av * bv.y, av * bv.z, av * bv.w);
        }
        workgroupBarrier();
    }

    if (wid.y + wid.z * nwg.y < p.nbatch) {
        let cbase = batch * p.sc;
        store_block(cbase, m_tile + 4u * lid.y, n_tile + 4u * lid.x, acc);
        epilogue(cbase, m_tile + 4u * lid.y, n_tile + 4u * lid.x, 4u, 4u);
    }
}
