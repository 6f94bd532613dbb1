// reduce.wgsl: sum / max / sum of squared deviations along one axis.
//
// The input is viewed as [outer, len, inner] and reduced over the middle dim; element
// (o, j, i) is x[(o * len + j) * inner + i]. OP (override): 0 sum of x, 1 max of x,
// 2 sum of (x - c)^2 with c[o * inner + i] a per-output center (the mean, for std).
// Every result is finished as v * mul, then sqrt'ed when root == 1 (mean = sum * 1/len,
// std = sqrt(sqdev * 1/(len - ddof))); passes that are not the last use mul 1, root 0.
//
// Entry points (they share the bindings and Params below):
//   reduce_wg      one workgroup of 64 per output part: reduces j in
//                  [q * chunk, min(len, (q + 1) * chunk)) and writes part q of
//                  out [outer, parts, inner]. The host repeats it (OP 0 or 1 on the
//                  parts) until one part is left, so any length works and every f32
//                  sum is a short per-invocation run (<= chunk / 64 terms) followed
//                  by trees: the rounding error grows like log(len), not len.
//   reduce_thread  one invocation per output, looping over all of len: for short
//                  axes (the host uses it for len <= 64), where a whole workgroup per
//                  output would idle; neighbouring invocations read neighbouring
//                  columns when inner > 1.
// 1-D grids (folded by the runtime, hence wg_linear + bounds checks).
// Numerics: f32 accumulation; std is two-pass (mean first, then the centered sum of
// squares), so data with a large mean keeps its precision.

override OP: u32 = 0u;

struct Params {
    outer: u32,
    len: u32,
    inner: u32,
    chunk: u32,   // reduce_wg: elements of the axis per part
    parts: u32,   // reduce_wg: ceil(len / chunk)
    mul: f32,
    root: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> c: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG = 64u;   // a power of two

// The value that gets summed or maxed for element `at`; `ci` indexes the center.
fn term(at: u32, ci: u32) -> f32 {
    if (OP == 2u) {
        let d = x[at] - c[ci];
        return d * d;
    }
    return x[at];
}

// Identity to start from: 0 for sums; for max, an element of the range (max is
// idempotent, so counting it twice is harmless, and -inf inputs stay -inf).
fn start(first: u32) -> f32 {
    if (OP == 1u) { return x[first]; }
    return 0.0;
}

fn combine(a: f32, b: f32) -> f32 {
    if (OP == 1u) { return max(a, b); }
    return a + b;
}

fn finish(v: f32) -> f32 {
    let r = v * p.mul;
    if (p.root == 1u) { return sqrt(r); }
    return r;
}

var<workgroup> part: array<f32, WG>;

@compute @workgroup_size(WG)
fn reduce_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) t: u32) {
    let g = wg_linear(wid, nwg);          // = (o * parts + q) * inner + i
    if (g >= p.outer * p.parts * p.inner) { return; }
    let i = g % p.inner;
    let q = (g / p.inner) % p.parts;
    let o = g / (p.inner * p.parts);
    let base = o * p.len * p.inner + i;
    let ci = o * p.inner + i;
    let j0 = q * p.chunk;
    let j1 = min(p.len, j0 + p.chunk);

    var acc = start(base + j0 * p.inner);
    for (var j = j0 + t; j < j1; j += WG) {
        acc = combine(acc, term(base + j * p.inner, ci));
    }

    part[t] = acc;
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        workgroupBarrier();
        if (t < half) {
            part[t] = combine(part[t], part[t + half]);
        }
    }
    if (t == 0u) {
        out[g] = finish(part[0]);
    }
}

@compute @workgroup_size(WG)
fn reduce_thread(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let g = wg_linear(wid, nwg) * WG + lid;   // = o * inner + i
    if (g >= p.outer * p.inner) { return; }
    let base = (g / p.inner) * p.len * p.inner + g % p.inner;
    var acc = start(base);
    for (var j = 0u; j < p.len; j++) {
        acc = combine(acc, term(base + j * p.inner, g));
    }
    out[g] = finish(acc);
}
