// matmul_sg.wgsl: batched matrix multiply for CPU adapters that have subgroups (lavapipe),
//     C[b] = A[b] @ B[b]          (float32 accumulation; raw sums)
//
// Operands, memory layout, padding, Params and the 4x4 sub-block scheme (`am * bm` as
// mat4x4, column q = output column n + q) are those of kernels/matmul.wgsl: read its
// header first. Bias and activation are applied afterwards by its mm_epilogue pass. This
// is a separate file because it needs the "subgroup" device feature, and a module is
// validated as a whole (natively naga wants no `enable subgroups;` line).
//
// Why subgroups. lavapipe runs 8 invocations as the 8 lanes of one AVX2 vector (subgroup
// size 8). Arithmetic is vectorized across the lanes, but every storage-buffer load is a
// scalar loop over the lanes with a bounds check per component: a vec4 load costs a
// subgroup about as much as 40 multiply-adds (~20 ns), a vec4 subgroupBroadcast about 3.
// So the 8 lanes of a subgroup share one tile of C of 4*BM4 rows by 8 * 4*BN4 columns:
// lane l owns the columns [4*BN4*l, 4*BN4*(l + 1)) of the tile and loads its own B
// columns (no other lane needs them), while the A rows, which every lane needs, are
// loaded once, each lane fetching 1/8 of them, and handed round by broadcast. Per k-step
// of 4 a lane loads BM4/2 + 4*BN4 vec4s for 64*BM4*BN4 multiply-adds: 24 for 4096 with
// the default 64 x 16 block, where mm_reg's 32 x 32 block loads 64. (Measured slower on
// lavapipe: 128 x 8, 32 x 32, 64 x 8 and 32 x 16 blocks, and unrolling K by 2.)
//
// A items. At step k4 the tile's A values are 4*BM4 vec4s ("items"): item t is row m0 + t
// at k = 4*k4 .. 4*k4 + 3 (storage [M, K]), or rows m0 + 4*(t/4) .. + 3 at k = 4*k4 + t%4
// (TRANS_A, storage [K, M]); either way sub-block i of A is items 4i .. 4i + 3. Lane l
// loads items l, l + 8, l + 16, ... ("slots" 0, 1, 2, ...), so slot s holds sub-block 2s
// in lanes 0..3 and sub-block 2s + 1 in lanes 4..7.
//
// Workgroup: WG invocations = WG / 8 subgroups, each with its own tile. Grid: x =
// ceil(tiles / (WG / 8)) with tiles = ceil(M / (4 BM4)) * ceil(N / (32 BN4)); y, z = batch
// as in matmul.wgsl. Override limits: BM4 even, 2..16; BN4 1..4; WG a multiple of 8.
// The host uses this kernel only where kernels/subgroup_probe.wgsl finds subgroups of 8.
// Every lane must reach every broadcast: nothing returns before the K loop except whole
// workgroups past the batch; a tile past the last row computes on clamped rows and
// stores nothing. Loop passes per invocation: K4 + 1.

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
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<W>>;
@group(0) @binding(4) var<storage, read_write> c: array<vec4<f32>>;

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override BM4: u32 = 16u;  // tile rows / 4: even, 2..16
override BN4: u32 = 4u;   // columns per lane / 4: 1..4
override WG: u32 = 16u;   // a multiple of the subgroup size, 8

const SG: u32 = 8u;

// ------------------------------------------------------------------ loading

// Where item t of the tile at rows m0.. sits at k4 = 0; at step k4 it sits a_step(k4)
// vec4s further on. Rows past M are clamped to the last one.
fn a_item(base: u32, m0: u32, t: u32) -> u32 {
    if (TRANS_A) {
        return base + (t % 4u) * p.lda + min(m0 / 4u + t / 4u, p.lda - 1u);
    }
    return base + min(m0 + t, p.M - 1u) * p.lda;
}

fn a_step(k4: u32) -> u32 {
    return select(k4, 4u * k4 * p.lda, TRANS_A);
}

// The items of slot x held by lanes 0..3 (lanes 4..7), one per column, in every lane.
fn lanes_low(x: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupBroadcast(x, 0u), subgroupBroadcast(x, 1u),
                       subgroupBroadcast(x, 2u), subgroupBroadcast(x, 3u));
}

fn lanes_high(x: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupBroadcast(x, 4u), subgroupBroadcast(x, 5u),
                       subgroupBroadcast(x, 6u), subgroupBroadcast(x, 7u));
}

// Sub-block `am` (column kk = its 4 rows at k = 4*k4 + kk) from its 4 items.
fn a_block(items: mat4x4<f32>) -> mat4x4<f32> {
    if (TRANS_A) { return items; }
    return transpose(items);
}

// B exactly as in matmul.wgsl: the 4 vec4s of the sub-block at columns n.. (clamped to
// the last column), at k4 = 0 and then b_step(k4) further on.
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

fn load_b(o: vec4<u32>) -> mat4x4<f32> {
    let v = mat4x4<f32>(vec4<f32>(b[o.x]), vec4<f32>(b[o.y]), vec4<f32>(b[o.z]), vec4<f32>(b[o.w]));
    if (TRANS_B) { return v; }
    return transpose(v);
}

// ------------------------------------------------------------------ arithmetic

// acc + am * bm as 64 multiply-adds, each accumulator element taking its 4 products in
// turn: about 5% faster on lavapipe than `acc += am * bm` (which sums the 4 products
// first). lavapipe compiles fma() as a multiply and an add; GPUs fuse them.
fn mac(acc: vec4<f32>, am: mat4x4<f32>, bq: vec4<f32>) -> vec4<f32> {
    let t = fma(am[1], vec4<f32>(bq.y), fma(am[0], vec4<f32>(bq.x), acc));
    return fma(am[3], vec4<f32>(bq.w), fma(am[2], vec4<f32>(bq.z), t));
}

fn mma(acc: mat4x4<f32>, am: mat4x4<f32>, bm: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(mac(acc[0], am, bm[0]), mac(acc[1], am, bm[1]),
                       mac(acc[2], am, bm[2]), mac(acc[3], am, bm[3]));
}

alias Blocks = array<mat4x4<f32>, 64>;  // accumulators, [i * 4 + j]
alias Row = array<mat4x4<f32>, 4>;      // one k-step of B, [j]

// acc[i][j] = mma(acc[i][j], am, bm[j]) for the BN4 sub-blocks of row i.
fn mma_row(acc: ptr<function, Blocks>, i: u32, am: mat4x4<f32>, bm: ptr<function, Row>) {
    let r = 4u * i;
    (*acc)[r] = mma((*acc)[r], am, (*bm)[0]);
    if (BN4 > 1u) { (*acc)[r + 1u] = mma((*acc)[r + 1u], am, (*bm)[1]); }
    if (BN4 > 2u) { (*acc)[r + 2u] = mma((*acc)[r + 2u], am, (*bm)[2]); }
    if (BN4 > 3u) { (*acc)[r + 3u] = mma((*acc)[r + 3u], am, (*bm)[3]); }
}

// Both sub-block rows of slot x (rows 8s .. 8s + 7 of the tile).
fn mma_slot(acc: ptr<function, Blocks>, s: u32, x: vec4<f32>, bm: ptr<function, Row>) {
    mma_row(acc, 2u * s, a_block(lanes_low(x)), bm);
    mma_row(acc, 2u * s + 1u, a_block(lanes_high(x)), bm);
}

// ------------------------------------------------------------------ storing

// The 4x4 block `acc` whose top-left corner is C[m, n]; rows past M and vec4 columns past
// C's padded width are dropped.
fn store_block(cbase: u32, m: u32, n: u32, acc: mat4x4<f32>) {
    if (n / 4u >= p.ldc) { return; }
    let i = cbase + m * p.ldc + n / 4u;
    let t = transpose(acc);
    if (m < p.M) { c[i] = t[0]; }
    if (m + 1u < p.M) { c[i + p.ldc] = t[1]; }
    if (m + 2u < p.M) { c[i + 2u * p.ldc] = t[2]; }
    if (m + 3u < p.M) { c[i + 3u * p.ldc] = t[3]; }
}

fn store_row(acc: ptr<function, Blocks>, i: u32, cbase: u32, m0: u32, n: u32) {
    let r = 4u * i;
    let m = m0 + 4u * i;
    store_block(cbase, m, n, (*acc)[r]);
    if (BN4 > 1u) { store_block(cbase, m, n + 4u, (*acc)[r + 1u]); }
    if (BN4 > 2u) { store_block(cbase, m, n + 8u, (*acc)[r + 2u]); }
    if (BN4 > 3u) { store_block(cbase, m, n + 12u, (*acc)[r + 3u]); }
}

fn store_slot(acc: ptr<function, Blocks>, s: u32, cbase: u32, m0: u32, n: u32) {
    store_row(acc, 2u * s, cbase, m0, n);
    store_row(acc, 2u * s + 1u, cbase, m0, n);
}

// ------------------------------------------------------------------ mm_sg

@compute @workgroup_size(WG)
fn mm_sg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) lane: u32) {
    let tiles_n = (p.N + SG * 4u * BN4 - 1u) / (SG * 4u * BN4);  // tiles per row of C
    let tile = wid.x * (WG / SG) + sg;
    let m0 = (tile / tiles_n) * (4u * BM4);
    let n0 = (tile % tiles_n) * (SG * 4u * BN4) + lane * (4u * BN4);  // this lane's columns
    let batch = wid.y + wid.z * nwg.y;
    if (batch >= p.nbatch) { return; }  // the whole workgroup

    let abase = batch * p.sa;
    let bbase = batch * p.sb;
    let ao0 = a_item(abase, m0, lane);        let bo0 = b_offsets(bbase, n0);
    let ao1 = a_item(abase, m0, lane + 8u);   let bo1 = b_offsets(bbase, n0 + 4u);
    let ao2 = a_item(abase, m0, lane + 16u);  let bo2 = b_offsets(bbase, n0 + 8u);
    let ao3 = a_item(abase, m0, lane + 24u);  let bo3 = b_offsets(bbase, n0 + 12u);
    let ao4 = a_item(abase, m0, lane + 32u);
    let ao5 = a_item(abase, m0, lane + 40u);
    let ao6 = a_item(abase, m0, lane + 48u);
    let ao7 = a_item(abase, m0, lane + 56u);

    var acc: Blocks;
    var bm: Row;
    // the trip count and the strides as values (a_step / b_step are linear in k4), as in
    // matmul.wgsl's mm_reg
    let k4_end = p.K4;
    let a_stride = a_step(1u);
    let b_stride = b_step(1u);
    for (var k4 = 0u; k4 < k4_end; k4++) {
        let sa = k4 * a_stride;
        let sb = vec4<u32>(k4 * b_stride);
        bm[0] = load_b(bo0 + sb);
        if (BN4 > 1u) { bm[1] = load_b(bo1 + sb); }
        if (BN4 > 2u) { bm[2] = load_b(bo2 + sb); }
        if (BN4 > 3u) { bm[3] = load_b(bo3 + sb); }
        mma_slot(&acc, 0u, a[ao0 + sa], &bm);
        if (BM4 > 2u) { mma_slot(&acc, 1u, a[ao1 + sa], &bm); }
        if (BM4 > 4u) { mma_slot(&acc, 2u, a[ao2 + sa], &bm); }
        if (BM4 > 6u) { mma_slot(&acc, 3u, a[ao3 + sa], &bm); }
        if (BM4 > 8u) { mma_slot(&acc, 4u, a[ao4 + sa], &bm); }
        if (BM4 > 10u) { mma_slot(&acc, 5u, a[ao5 + sa], &bm); }
        if (BM4 > 12u) { mma_slot(&acc, 6u, a[ao6 + sa], &bm); }
        if (BM4 > 14u) { mma_slot(&acc, 7u, a[ao7 + sa], &bm); }
    }

    if (m0 >= p.M) { return; }  // a tile past the last row (the whole subgroup)
    let cbase = batch * p.sc;
    store_slot(&acc, 0u, cbase, m0, n0);
    if (BM4 > 2u) { store_slot(&acc, 1u, cbase, m0, n0); }
    if (BM4 > 4u) { store_slot(&acc, 2u, cbase, m0, n0); }
    if (BM4 > 6u) { store_slot(&acc, 3u, cbase, m0, n0); }
    if (BM4 > 8u) { store_slot(&acc, 4u, cbase, m0, n0); }
    if (BM4 > 10u) { store_slot(&acc, 5u, cbase, m0, n0); }
    if (BM4 > 12u) { store_slot(&acc, 6u, cbase, m0, n0); }
    if (BM4 > 14u) { store_slot(&acc, 7u, cbase, m0, n0); }
}
