// scan.wgsl: inclusive prefix sums along one axis: `cumsum` in float32, and the
// oscillator-phase scan (cumulative sum of phase increments modulo one cycle) in exact
// 64-bit fixed point.
//
// Layout: the input is viewed as [outer, n, inner] (row-major, contiguous); the scan runs
// along n: element i of line `line = o * inner + k` sits at (o * n + i) * inner + k, so any
// axis is scanned through strides, without transposes. All bindings are array<u32>:
// float32 data is read and written through bitcast, phase sums are (low, high) u32 pairs.
//
// Algorithm (reduce-then-scan, driven by pycore/ops/scan.py), for a line longer than one
// block of BLOCK = WG * ITEMS elements:
//   1. *_block_sums: each workgroup sums one block of one line into sums[line, 1 + blk];
//      column 0 of each row gets the line's initial value (carried phase, or 0).
//   2. the host scans `sums` ([lines, nblocks + 1]) recursively with the same kernels, so
//      column blk becomes the sum of everything before block blk.
//   3. *_scan_add: each workgroup scans its block again starting from that prefix.
//   A line that fits one block runs step 3 alone. take_last copies each line's last value.
// Workgroup: WG threads; each owns ITEMS consecutive elements of the block: a serial sum
// per thread, a Hillis-Steele scan of the WG thread totals in workgroup memory, then each
// thread runs through its elements from the total of the threads before it. One
// workgroup per (line, block) on a 1-D grid of lines * nblocks (folded, see wg_linear).
//
// Numerics, cumsum: float32 accumulation in a tree: an input passes through at most
// 2 * ITEMS + log2(WG) + 1 adds per recursion level, so |error| <= that many * 2^-24 *
// sum(|x|) (pycore/ops/scan.py: cumsum_error_bound).
// Numerics, phase: a float32 running phase cannot work (after an hour at 48 kHz the sum is
// millions of cycles and float32 keeps no fractional bits), and wrapping every float add
// modulo 1 still rounds at every add: the error then grows like sqrt(#adds) (measured
// 4e-5 cycles after 3 M samples, ~5e-4 expected after an hour). So phase sums use the
// phase-accumulator idea of digital oscillators: a phase is a 64-bit fixed-point fraction
// of a cycle, (hi * 2^32 + lo) / 2^64, as vec2<u32>(lo, hi). Integer addition wraps modulo
// 2^64 = modulo one cycle for free and is exact and associative, so block order, chunking
// and the GPU's scan tree do not matter. Every float32 increment with |x| >= 2^-40 converts
// exactly (its 24-bit mantissa fits the 64-bit window; smaller ones are truncated by
// < 2^-64 cycles). The only rounding left is the final conversion of each phase to
// float32 (<= 2^-24 cycles, about 6e-8).

struct Params {
    n: u32,          // length of the scanned axis
    inner: u32,      // stride of the axis (product of the dims after it)
    nblocks: u32,    // blocks per line: ceil(n / BLOCK)
    lines: u32,      // independent lines: outer * inner
    has_carry: u32,  // 0: start at zero; 1: carry[line] is a float32 initial value;
                     // 2: carry[line * cstride + blk] is a block prefix (fixed-point pair)
    cstride: u32,    // row stride of the prefixes in carry (nblocks + 1)
    src_fixed: u32,  // phase: 1 = src holds fixed-point pairs (an upper level), 0 = float32
    dst_fixed: u32,  // phase: 1 = write fixed-point pairs, 0 = write float32 phase in [0, 1)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
@group(0) @binding(3) var<storage, read> carry: array<u32>;

override WG: u32 = 256u;
override ITEMS: u32 = 8u;

var<workgroup> part_f: array<f32, WG>;
var<workgroup> part_x: array<vec2<u32>, WG>;

fn addr(line: u32, i: u32) -> u32 {
    let o = line / p.inner;
    let k = line - o * p.inner;
    return (o * p.n + i) * p.inner + k;
}

// ------------------------------------------------------------------ float32 cumsum

fn load_f(line: u32, i: u32) -> f32 {
    return bitcast<f32>(src[addr(line, i)]);
}

// Inclusive scan of part_f[0..WG) (Hillis-Steele, log2(WG) steps).
fn scan_part_f(lid: u32) {
    for (var s = 1u; s < WG; s = s * 2u) {
        var v = part_f[lid];
        if (lid >= s) {
            v = part_f[lid - s] + v;
        }
        workgroupBarrier();
        part_f[lid] = v;
        workgroupBarrier();
    }
}

// Step 1. Bindings: src = input, dst = sums [lines, nblocks + 1] (f32), carry = unused.
@compute @workgroup_size(WG)
fn block_sums(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid3: vec3<u32>) {
    let g = wg_linear(wid, nwg);
    if (g >= p.lines * p.nblocks) {
        return;  // uniform per workgroup, so no thread misses a barrier
    }
    let lid = lid3.x;
    let line = g / p.nblocks;
    let blk = g - line * p.nblocks;
    let i0 = (blk * WG + lid) * ITEMS;
    var acc = 0.0;
    for (var j = 0u; j < ITEMS; j++) {
        if (i0 + j < p.n) {
            acc += load_f(line, i0 + j);
        }
    }
    part_f[lid] = acc;
    scan_part_f(lid);
    if (lid == 0u) {
        let row = line * (p.nblocks + 1u);
        dst[row + 1u + blk] = bitcast<u32>(part_f[WG - 1u]);
        if (blk == 0u) {
            dst[row] = bitcast<u32>(0.0);
        }
    }
}

// Step 3. Bindings: src = input, dst = output, carry = block prefixes (f32) if has_carry.
@compute @workgroup_size(WG)
fn scan_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid3: vec3<u32>) {
    let g = wg_linear(wid, nwg);
    if (g >= p.lines * p.nblocks) {
        return;
    }
    let lid = lid3.x;
    let line = g / p.nblocks;
    let blk = g - line * p.nblocks;
    let i0 = (blk * WG + lid) * ITEMS;
    var acc = 0.0;
    for (var j = 0u; j < ITEMS; j++) {
        if (i0 + j < p.n) {
            acc += load_f(line, i0 + j);
        }
    }
    part_f[lid] = acc;
    scan_part_f(lid);
    var run = 0.0;
    if (p.has_carry != 0u) {
        run = bitcast<f32>(carry[line * p.cstride + blk]);
    }
    if (lid > 0u) {
        run += part_f[lid - 1u];
    }
    for (var j = 0u; j < ITEMS; j++) {
        if (i0 + j < p.n) {
            run += load_f(line, i0 + j);
            dst[addr(line, i0 + j)] = bitcast<u32>(run);
        }
    }
}

// ------------------------------------------------------------------ fixed-point phase

alias Fix = vec2<u32>;  // (lo, hi): (hi * 2^32 + lo) / 2^64 cycles

fn fix_add(a: Fix, b: Fix) -> Fix {
    let lo = a.x + b.x;
    return Fix(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}

// Exact float32 -> fixed point modulo 1 cycle, from the float's bits.
fn fix_from_f32(bits: u32) -> Fix {
    let e = (bits >> 23u) & 0xffu;
    if (e == 0u || e == 0xffu) {
        return Fix(0u, 0u);  // zero, subnormal (< 2^-126 cycles), inf or NaN
    }
    let m = (bits & 0x7fffffu) | 0x800000u;   // value = m * 2^(e - 150)
    let s = i32(e) - 86;                        // value * 2^64 = m * 2^s
    var r = Fix(0u, 0u);
    if (s <= -24 || s >= 64) {
        r = Fix(0u, 0u);                        // < 2^-64 cycles, or a whole number of cycles
    } else if (s < 0) {
        r = Fix(m >> u32(-s), 0u);              // drops bits below 2^-64 cycles
    } else if (s == 0) {
        r = Fix(m, 0u);
    } else if (s < 32) {
        r = Fix(m << u32(s), m >> u32(32 - s));
    } else {
        r = Fix(0u, m << u32(s - 32));          // bits above 2^64 are whole cycles: dropped
    }
    if ((bits >> 31u) == 1u) {                  // negative: two's complement, -r mod 2^64
        let lo = ~r.x + 1u;
        r = Fix(lo, ~r.y + select(0u, 1u, lo == 0u));
    }
    return r;
}

// Fixed point -> float32 phase in [0, 1) (rounds once, by at most 2^-24 cycles).
fn fix_to_f32(a: Fix) -> f32 {
    let v = f32(a.y) * 2.3283064365386963e-10 + f32(a.x) * 5.421010862427522e-20;
    return select(v, 0.0, v >= 1.0);  // rounded up to a whole cycle
}

fn load_x(line: u32, i: u32) -> Fix {
    let a = addr(line, i);
    if (p.src_fixed == 1u) {
        return Fix(src[2u * a], src[2u * a + 1u]);
    }
    return fix_from_f32(src[a]);
}

fn scan_part_x(lid: u32) {
    for (var s = 1u; s < WG; s = s * 2u) {
        var v = part_x[lid];
        if (lid >= s) {
            v = fix_add(part_x[lid - s], v);
        }
        workgroupBarrier();
        part_x[lid] = v;
        workgroupBarrier();
    }
}

// Step 1. Bindings: src = increments (f32) or pairs, dst = sums [lines, nblocks + 1] as
// pairs, carry = float32 initial phases [lines] if has_carry == 1.
@compute @workgroup_size(WG)
fn phase_block_sums(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid3: vec3<u32>) {
    let g = wg_linear(wid, nwg);
    if (g >= p.lines * p.nblocks) {
        return;
    }
    let lid = lid3.x;
    let line = g / p.nblocks;
    let blk = g - line * p.nblocks;
    let i0 = (blk * WG + lid) * ITEMS;
    var acc = Fix(0u, 0u);
    for (var j = 0u; j < ITEMS; j++) {
        if (i0 + j < p.n) {
            acc = fix_add(acc, load_x(line, i0 + j));
        }
    }
    part_x[lid] = acc;
    scan_part_x(lid);
    if (lid == 0u) {
        let at = 2u * (line * (p.nblocks + 1u) + 1u + blk);
        let total = part_x[WG - 1u];
        dst[at] = total.x;
        dst[at + 1u] = total.y;
        if (blk == 0u) {
            var init = Fix(0u, 0u);
            if (p.has_carry == 1u) {
                init = fix_from_f32(carry[line]);
            }
            dst[at - 2u] = init.x;
            dst[at - 1u] = init.y;
        }
    }
}

// Step 3. Bindings: src = increments (f32) or pairs, dst = phase (f32) or pairs,
// carry = initial phases (has_carry 1) or block prefixes as pairs (has_carry 2).
@compute @workgroup_size(WG)
fn phase_scan_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid3: vec3<u32>) {
    let g = wg_linear(wid, nwg);
    if (g >= p.lines * p.nblocks) {
        return;
    }
    let lid = lid3.x;
    let line = g / p.nblocks;
    let blk = g - line * p.nblocks;
    let i0 = (blk * WG + lid) * ITEMS;
    var acc = Fix(0u, 0u);
    for (var j = 0u; j < ITEMS; j++) {
        if (i0 + j < p.n) {
            acc = fix_add(acc, load_x(line, i0 + j));
        }
    }
    part_x[lid] = acc;
    scan_part_x(lid);
    var run = Fix(0u, 0u);
    if (p.has_carry == 1u) {
        run = fix_from_f32(carry[line]);
    } else if (p.has_carry == 2u) {
        let at = 2u * (line * p.cstride + blk);
        run = Fix(carry[at], carry[at + 1u]);
    }
    if (lid > 0u) {
        run = fix_add(run, part_x[lid - 1u]);
    }
    for (var j = 0u; j < ITEMS; j++) {
        if (i0 + j < p.n) {
            run = fix_add(run, load_x(line, i0 + j));
            let a = addr(line, i0 + j);
            if (p.dst_fixed == 1u) {
                dst[2u * a] = run.x;
                dst[2u * a + 1u] = run.y;
            } else {
                dst[a] = bitcast<u32>(fix_to_f32(run));
            }
        }
    }
}

// ------------------------------------------------------------------ both

// The last element of every line: dst[line] = src[line, n - 1] (32-bit values).
// Bindings: src = scanned output, dst = [lines], carry = unused.
@compute @workgroup_size(WG)
fn take_last(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid3: vec3<u32>) {
    let line = wg_linear(wid, nwg) * WG + lid3.x;
    if (line < p.lines) {
        dst[line] = src[addr(line, p.n - 1u)];
    }
}
