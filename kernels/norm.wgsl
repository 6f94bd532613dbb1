// norm.wgsl: layer norm, group norm (statistics per row) and inference batch norm.
//
// Entry points (they share the bindings and Params below):
//   norm_rows   x viewed as [rows, len]; one workgroup of 64 per row computes
//               mean = sum(x) / len, var = sum((x - mean)^2) / len (biased, like torch),
//               then y = (x - mean) / sqrt(var + eps) * w[ch] + b[ch] with
//               ch = (row % groups) * (len / spatial) + j / spatial.
//               layer_norm: rows = prod(leading dims), len = prod(normalized_shape),
//                           groups = 1, spatial = 1 -> ch = j.
//               group_norm on [N, C, *S]: the channels of a group and their spatial
//                           positions are one contiguous row: rows = N * G,
//                           len = (C / G) * S, groups = G, spatial = S.
//   batch_norm  x [N, C, *S] viewed as [N, C, S], one invocation per element:
//               y = (x - rm[c]) / sqrt(rv[c] + eps) * w[c] + b[c], c = (i / spatial) % channels.
// w / b are skipped when has_w / has_b is 0 (the host then binds a dummy tensor).
// ACT (norm_rows only; an override constant): 0 none, 1 relu, 2 leaky_relu with slope
// p.slope, applied after the affine map (DDSP's Linear -> LayerNorm -> LeakyReLU in one
// dispatch).
//
// Layout: contiguous row-major; x and out f32; w, b, rm, rv f32 or f16 (alias W).
// 1-D grids (folded by the runtime, hence wg_linear + bounds checks).
// Numerics: f32 accumulation; two passes (mean first, then the centered sum of
// squares) so rows with a large mean keep their precision; each invocation adds
// len / 64 terms in order, then a tree of 64 partial sums.

alias W = f32;

struct Params {
    rows: u32,       // norm_rows: rows; batch_norm: elements
    len: u32,        // norm_rows: row length
    groups: u32,     // norm_rows: rows per sample (1 for layer norm)
    spatial: u32,    // elements per channel
    channels: u32,   // batch_norm: C
    eps: f32,
    has_w: u32,
    has_b: u32,
    slope: f32,      // leaky_relu's negative slope (ACT = 2)
}

override ACT: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<W>;
@group(0) @binding(3) var<storage, read> b: array<W>;
@group(0) @binding(4) var<storage, read> rm: array<W>;
@group(0) @binding(5) var<storage, read> rv: array<W>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

const WG = 64u;      // norm_rows workgroup (a power of two)
const EWG = 256u;    // batch_norm workgroup

fn affine(y: f32, ch: u32) -> f32 {
    var r = y;
    if (p.has_w == 1u) { r *= f32(w[ch]); }
    if (p.has_b == 1u) { r += f32(b[ch]); }
    return r;
}

fn activate(v: f32) -> f32 {
    switch ACT {
        case 1u: { return max(v, 0.0); }
        case 2u: { return select(v * p.slope, v, v >= 0.0); }
        default: { return v; }
    }
}

var<workgroup> partial: array<f32, WG>;

// Sum of v over the workgroup, returned to every invocation.
fn workgroup_sum(v: f32, t: u32) -> f32 {
    partial[t] = v;
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        workgroupBarrier();
        if (t < half) {
            partial[t] += partial[t + half];
        }
    }
    workgroupBarrier();
    let total = partial[0];
    workgroupBarrier();   // all have read partial[0] before the next call writes it
    return total;
}

@compute @workgroup_size(WG)
fn norm_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) t: u32) {
    let row = wg_linear(wid, nwg);
    if (row >= p.rows) { return; }
    let base = row * p.len;
    let n = f32(p.len);

    var s = 0.0;
    for (var j = t; j < p.len; j += WG) {
        s += x[base + j];
    }
    let mean = workgroup_sum(s, t) / n;

    var ss = 0.0;
    for (var j = t; j < p.len; j += WG) {
        let d = x[base + j] - mean;
        ss += d * d;
    }
    let rstd = inverseSqrt(workgroup_sum(ss, t) / n + p.eps);

    let first_ch = (row % p.groups) * (p.len / p.spatial);
    for (var j = t; j < p.len; j += WG) {
        out[base + j] = activate(affine((x[base + j] - mean) * rstd, first_ch + j / p.spatial));
    }
}

@compute @workgroup_size(EWG)
fn batch_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = wg_linear(wid, nwg) * EWG + lid;
    if (i >= p.rows) { return; }
    let ch = (i / p.spatial) % p.channels;
    let y = (x[i] - f32(rm[ch])) * inverseSqrt(f32(rv[ch]) + p.eps);
    out[i] = affine(y, ch);
}
