// activations.wgsl: pointwise activations, GLU and softmax.
//
// Entry points (they share the bindings and Params below):
//   unary    out[i] = ACT(x[i]) for i < n; ACT is an override constant:
//            0 relu, 1 gelu (exact, erf), 2 gelu (tanh approximation), 3 tanh, 4 sigmoid
//   glu      x viewed as [outer, 2 * len, inner] -> out [outer, len, inner]:
//            out = first half * sigmoid(second half) along the middle dim
//   softmax  x viewed as [outer, len, inner]; softmax along the middle dim, one
//            workgroup per (outer, inner) row, n = outer * inner rows
//
// Layout: contiguous row-major f32. Workgroups: unary/glu 256 invocations, one element
// each, 1-D grid (folded by the runtime: wg_linear + bounds check); softmax 64
// invocations striding over a row of any length.
//
// Numerics (all f32):
//   sigmoid   1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) for x < 0: exp never overflows.
//   tanh      x * (odd Taylor series) for |x| < 0.4 (keeps relative accuracy near 0),
//             else sign(x) (1 - e) / (1 + e) with e = e^(-2|x|) <= 1: no overflow.
//   erf       |x| < 1: Taylor series of erf to x^21 (truncation < 2e-8 relative);
//             |x| >= 1: erf = 1 - erfc, erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2),
//             P a degree-8 least-squares polynomial fitted in float64 to
//             log(erfc(z) / t) + z^2 on z in [1, 10.5] (fit error 1.6e-8). Measured in
//             emulated f32: |erf error| <= 1.5e-7. The relative error of erfc far in
//             the tail (z > 3) is bounded by the f32 rounding of z^2 and by exp's own
//             accuracy, about 1e-6.
//   gelu      0.5 x (1 + erf(x / sqrt 2)), but 0.5 x erfc(-x / sqrt 2) when
//             x / sqrt 2 < -1, so large negative inputs keep relative accuracy.
//   gelu tanh x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3); this equals
//             0.5 x (1 + tanh u) without the cancellation for negative x.
//   softmax   each invocation keeps a running (max m, sum s of e^(x - m)) over its
//             share of the row (one exp per element, rescaling s when m grows), the
//             pairs are merged by a tree in workgroup memory, then a second pass
//             writes e^(x - max) / sum. Never overflows; 2 reads of the row.

override ACT: u32 = 0u;

struct Params {
    n: u32,       // elements (unary, glu) or rows (softmax)
    len: u32,     // glu: output size of the split dim; softmax: row length
    inner: u32,   // product of the dims after the split / softmax dim
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const WG = 256u;
const SWG = 64u;                 // softmax workgroup size (a power of two)
const NEG = -3.4028234e38;       // lowest finite f32, the start of a running max

fn sigmoid(v: f32) -> f32 {
    if (v >= 0.0) {
        return 1.0 / (1.0 + exp(-v));
    }
    let e = exp(v);
    return e / (1.0 + e);
}

fn tanh_f32(v: f32) -> f32 {
    let a = abs(v);
    if (a < 0.4) {
        // tanh x = x (1 - x^2/3 + 2x^4/15 - 17x^6/315 + 62x^8/2835 - 1382x^10/155925
        //             + 21844x^12/6081075); the next term is < 2e-9 relative at 0.4.
        let z = v * v;
        let poly = 1.0 + z * (-0.33333334 + z * (0.13333334 + z * (-0.053968254
                 + z * (0.021869488 + z * (-0.008863235 + z * 0.0035921280)))));
        return v * poly;
    }
    let e = exp(-2.0 * a);
    return sign(v) * (1.0 - e) / (1.0 + e);
}

// erfc(z) for z >= 1 (see header).
fn erfc_large(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.26550713 + t * (0.99990034 + t * (0.37560525 + t * (0.08422385
             + t * (-0.11593964 + t * (0.02568074 + t * (-0.5681855 + t * (0.72899031
             + t * -0.26625398)))))));
    return t * exp(-z * z + poly);
}

fn erf_f32(v: f32) -> f32 {
    let a = abs(v);
    if (a < 1.0) {
        // erf x = 2/sqrt(pi) sum_k (-1)^k x^(2k+1) / (k! (2k+1)), k = 0..10
        let z = v * v;
        let poly = 1.1283792 + z * (-0.37612638 + z * (0.11283792 + z * (-0.026866172
                 + z * (0.005223978 + z * (-0.00085483270 + z * (0.00012055333
                 + z * (-1.4925650e-05 + z * (1.6462114e-06 + z * (-1.6365844e-07
                 + z * 1.4807193e-08)))))))));
        return v * poly;
    }
    return sign(v) * (1.0 - erfc_large(a));
}

fn gelu(v: f32) -> f32 {
    let z = v * 0.70710678;
    if (z < -1.0) {
        return 0.5 * v * erfc_large(-z);
    }
    return 0.5 * v * (1.0 + erf_f32(z));
}

fn gelu_tanh(v: f32) -> f32 {
    let u = 0.79788456 * (v + 0.044715 * v * v * v);
    return v * sigmoid(2.0 * u);
}

fn activation(v: f32) -> f32 {
    switch ACT {
        case 1u: { return gelu(v); }
        case 2u: { return gelu_tanh(v); }
        case 3u: { return tanh_f32(v); }
        case 4u: { return sigmoid(v); }
        default: { return select(v, 0.0, v < 0.0); }   // relu; NaN stays NaN
    }
}

@compute @workgroup_size(WG)
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = wg_linear(wid, nwg) * WG + lid;
    if (i >= p.n) { return; }
    out[i] = activation(x[i]);
}

@compute @workgroup_size(WG)
fn glu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = wg_linear(wid, nwg) * WG + lid;
    if (i >= p.n) { return; }
    let k = i % p.inner;
    let j = (i / p.inner) % p.len;
    let o = i / (p.inner * p.len);
    let first = (o * 2u * p.len + j) * p.inner + k;
    out[i] = x[first] * sigmoid(x[first + p.len * p.inner]);
}

var<workgroup> row_max: array<f32, SWG>;
var<workgroup> row_sum: array<f32, SWG>;

@compute @workgroup_size(SWG)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) t: u32) {
    let row = wg_linear(wid, nwg);
    if (row >= p.n) { return; }
    // element j of this row lives at base + j * inner
    let base = (row / p.inner) * p.len * p.inner + row % p.inner;

    // Pass 1: this invocation's running max and sum of e^(x - max).
    var m = NEG;
    var s = 0.0;
    for (var j = t; j < p.len; j += SWG) {
        let v = x[base + j * p.inner];
        if (v > m) {
            s = s * exp(m - v) + 1.0;
            m = v;
        } else {
            s += exp(v - m);
        }
    }

    // Merge the (max, sum) pairs of all invocations.
    row_max[t] = m;
    row_sum[t] = s;
    for (var half = SWG / 2u; half > 0u; half /= 2u) {
        workgroupBarrier();
        if (t < half) {
            let m1 = row_max[t];
            let m2 = row_max[t + half];
            let mm = max(m1, m2);
            row_sum[t] = row_sum[t] * exp(m1 - mm) + row_sum[t + half] * exp(m2 - mm);
            row_max[t] = mm;
        }
    }
    workgroupBarrier();
    let total_max = row_max[0];
    let total_sum = row_sum[0];

    // Pass 2: normalize.
    for (var j = t; j < p.len; j += SWG) {
        let at = base + j * p.inner;
        out[at] = exp(x[at] - total_max) / total_sum;
    }
}
