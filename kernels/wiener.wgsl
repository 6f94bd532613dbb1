// wiener.wgsl: one EM iteration of the multichannel (stereo) Wiener filter of Open-Unmix
// (openunmix 1.3.0 filtering.wiener with iterations=1, softmask=False, residual=False),
// driven by pycore/ops/wiener.py. The frames are cut into windows of `win` frames (the
// reference's wiener_win_len) that are filtered independently:
//
//   peak   per window w: max over its frames, bins and channels of |x|^2; the window's
//          scale is m = max(1, sqrt(peak) / 10) (the reference divides mix and
//          estimates by it for numerical stability and multiplies the result back).
//   stats  per window w, source j, bin f: the spatial covariance
//          R_j[f] = sum_t y_j y_j^H / (eps + sum_t v_j), where (scaled by 1 / m)
//          y_j[c] = (s_j[c] / m) * x[c] / |x[c]| (the estimate's magnitude, scaled like
//          the mix, with the mix phase)
//          and v_j = (|y_j[0]|^2 + |y_j[1]|^2) / 2 (the power, averaged over channels).
//   apply  per frame t, bin f: Cxx = sqrt(eps) I + sum_j v_j R_j, and for each source
//          y_j = m * v_j R_j Cxx^-1 (x / m).
// As in the reference, a mix value that is exactly 0 is read as 1 + 0i (its atan2 helper
// adds 1 to the real part of such values in place, so they have phase 0).
//
// Layouts (row-major, float32):
//   spec  x [2, nbins, frames, 2]       (re, im) last, as pycore.ops.spectral.stft
//   mags  s [sources, frames, 2, nbins] magnitude estimates (the models' layout)
//   peak  [windows]                     max |x|^2 per window
//   cov   [windows, sources, nbins, 4]  R_j: (R00, R11, re R01, im R01); R is
//                                       Hermitian (R10 = conj R01, diagonal real)
//   out   y [sources * 2, nbins, frames, 2], row j * 2 + c: ready for istft
//
// Workgroups: peak = one workgroup of PEAK_WG per window (strided loop + tree);
// stats and apply = WG invocations, one (w, j, f) or one (t, f) each, 1-D grid folded by
// the runtime (wg_linear + bounds checks).
// Numerics: f32 throughout; sums over a window's frames accumulate in f32 as in the
// reference (whose own f32 sums go in batches of 200 frames; the order differs by ulps).
// The 2x2 inverse is the reference's: det = C00 C11 - C01 C10, each entry / det.

struct Params {
    nbins: u32,     // F
    frames: u32,    // T
    win: u32,       // frames per window
    windows: u32,   // ceil(T / win)
    sources: u32,   // J
    eps: f32,       // 1e-10
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> spec: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read> mags: array<f32>;
@group(0) @binding(3) var<storage, read_write> peak: array<f32>;
@group(0) @binding(4) var<storage, read_write> cov: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out: array<vec2<f32>>;

override WG: u32 = 64u;
const PEAK_WG: u32 = 64u;

var<workgroup> tree: array<f32, PEAK_WG>;

// The mix at channel c, bin f, frame t, with exact zeros read as 1 (see above).
fn mix_at(c: u32, f: u32, t: u32) -> vec2<f32> {
    let z = spec[(c * p.nbins + f) * p.frames + t];
    if (z.x == 0.0 && z.y == 0.0) {
        return vec2<f32>(1.0, 0.0);
    }
    return z;
}

fn scale_of(w: u32) -> f32 {
    return max(1.0, sqrt(peak[w]) / 10.0);
}

fn cmul(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}

fn conj(a: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(a.x, -a.y);
}

// Source j's initial estimate at (t, f, channel c) given the scaled mix value xc:
// its magnitude scaled by 1 / m like the mix (the reference divides both, y and x, by
// max_abs), with the mix's phase.
fn estimate(j: u32, t: u32, f: u32, c: u32, xc: vec2<f32>, m: f32) -> vec2<f32> {
    let s = mags[((j * p.frames + t) * 2u + c) * p.nbins + f] / m;
    return s * xc / length(xc);
}

@compute @workgroup_size(PEAK_WG)
fn wiener_peak(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let w = wid.x;
    let t0 = w * p.win;
    let len = min(p.frames, t0 + p.win) - t0;
    let n = 2u * p.nbins * len;
    var best = 0.0;
    for (var i = lid; i < n; i += PEAK_WG) {
        let t = t0 + i % len;
        let row = i / len;                     // c * nbins + f
        let z = mix_at(row / p.nbins, row % p.nbins, t);
        best = max(best, z.x * z.x + z.y * z.y);
    }
    tree[lid] = best;
    workgroupBarrier();
    for (var half = PEAK_WG / 2u; half > 0u; half /= 2u) {
        if (lid < half) {
            tree[lid] = max(tree[lid], tree[lid + half]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        peak[w] = tree[0];
    }
}

@compute @workgroup_size(WG)
fn wiener_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = wg_linear(wid, nwg) * WG + lid;
    if (i >= p.windows * p.sources * p.nbins) {
        return;
    }
    let f = i % p.nbins;
    let j = (i / p.nbins) % p.sources;
    let w = i / (p.nbins * p.sources);
    let m = scale_of(w);
    let t1 = min(p.frames, (w + 1u) * p.win);
    var r00 = 0.0;
    var r11 = 0.0;
    var r01 = vec2<f32>(0.0, 0.0);
    var weight = 0.0;
    for (var t = w * p.win; t < t1; t++) {
        let y0 = estimate(j, t, f, 0u, mix_at(0u, f, t) / m, m);
        let y1 = estimate(j, t, f, 1u, mix_at(1u, f, t) / m, m);
        let p0 = dot(y0, y0);
        let p1 = dot(y1, y1);
        r00 += p0;
        r11 += p1;
        r01 += cmul(y0, conj(y1));
        weight += (p0 + p1) / 2.0;
    }
    let d = p.eps + weight;
    cov[i] = vec4<f32>(r00 / d, r11 / d, r01 / d);
}

@compute @workgroup_size(WG)
fn wiener_apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = wg_linear(wid, nwg) * WG + lid;
    if (i >= p.nbins * p.frames) {
        return;
    }
    let t = i % p.frames;
    let f = i / p.frames;
    let w = t / p.win;
    let m = scale_of(w);
    let x0 = mix_at(0u, f, t) / m;
    let x1 = mix_at(1u, f, t) / m;

    // the mixture's model covariance, regularized
    let reg = sqrt(p.eps);
    var c00 = vec2<f32>(reg, 0.0);
    var c11 = vec2<f32>(reg, 0.0);
    var c01 = vec2<f32>(0.0, 0.0);
    var c10 = vec2<f32>(0.0, 0.0);
    for (var j = 0u; j < p.sources; j++) {
        let y0 = estimate(j, t, f, 0u, x0, m);
        let y1 = estimate(j, t, f, 1u, x1, m);
        let v = (dot(y0, y0) + dot(y1, y1)) / 2.0;
        let r = cov[(w * p.sources + j) * p.nbins + f];
        c00 += vec2<f32>(v * r.x, 0.0);
        c11 += vec2<f32>(v * r.y, 0.0);
        c01 += v * r.zw;
        c10 += v * conj(r.zw);
    }
    // its inverse: (1 / det) [[c11, -c01], [-c10, c00]], 1 / det = conj(det) / |det|^2
    let det = cmul(c00, c11) - cmul(c01, c10);
    let inv_det = conj(det) / dot(det, det);
    let i00 = cmul(inv_det, c11);
    let i01 = cmul(-inv_det, c01);
    let i10 = cmul(-inv_det, c10);
    let i11 = cmul(inv_det, c00);

    for (var j = 0u; j < p.sources; j++) {
        let y0 = estimate(j, t, f, 0u, x0, m);
        let y1 = estimate(j, t, f, 1u, x1, m);
        let v = (dot(y0, y0) + dot(y1, y1)) / 2.0;
        let r = cov[(w * p.sources + j) * p.nbins + f];
        let r00 = vec2<f32>(r.x, 0.0);
        let r11 = vec2<f32>(r.y, 0.0);
        let r01 = r.zw;
        let r10 = conj(r.zw);
        // gain = v R_j Cxx^-1, then y_j = gain x (scaled back by m)
        let g00 = v * (cmul(r00, i00) + cmul(r01, i10));
        let g01 = v * (cmul(r00, i01) + cmul(r01, i11));
        let g10 = v * (cmul(r10, i00) + cmul(r11, i10));
        let g11 = v * (cmul(r10, i01) + cmul(r11, i11));
        let row = j * 2u;
        out[(row * p.nbins + f) * p.frames + t] = m * (cmul(g00, x0) + cmul(g01, x1));
        out[((row + 1u) * p.nbins + f) * p.frames + t] = m * (cmul(g10, x0) + cmul(g11, x1));
    }
}
