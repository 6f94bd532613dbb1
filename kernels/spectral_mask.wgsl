// spectral_mask.wgsl: the spectrogram side of mask-based source separation (Spleeter),
// driven by pycore/ops/spectral_mask.py.
//
//   magnitude   |X| of the first `bins` frequency bins of a complex STFT, transposed to
//               the model's layout; frames t >= valid come out as 0 (the zero padding
//               of the last segment).
//   ratio_mask  Y_s = X * (m_s^2 + eps / 2) / (sum_j m_j^2 + eps) for every stem s, on
//               the first `bins` bins of frames t < valid; every other bin and frame of
//               Y is 0 (the stems are low-passed at bin `bins`).
//
// Layouts (row-major, float32):
//   spec   X [xchannels, nbins, frames, 2]   (re, im) last, as pycore.ops.spectral.stft
//   masks  m [stems, channels, frames, bins] model outputs (time-major, like magnitude's
//                                            output); channel c of the model reads
//                                            spectrum channel c % xchannels, so a mono
//                                            spectrum feeds a stereo model
//   out    magnitude:  [1, channels, frames, bins]
//          ratio_mask: Y [stems * channels, nbins, frames, 2] (row s * channels + c),
//                      ready for pycore.ops.spectral.istft
//
// Workgroup: WG invocations, one output value (magnitude) or one (channel, bin, frame)
// of all stems (ratio_mask) each, frame fastest; 1-D grid folded by the runtime, hence
// wg_linear and the bounds checks.
// Numerics: f32. |X| = sqrt(re^2 + im^2) (within an ulp or two of a hypot); the ratio is
// evaluated in the reference's order: ((m_0^2 + m_1^2 + ...) + eps), then
// (m_s^2 + eps / 2) / that, then times re and im.

struct Params {
    channels: u32,   // C: model channels
    xchannels: u32,  // channels of the spectrum: C, or 1 for a mono spectrum
    nbins: u32,      // F: bins of the spectrum (n_fft / 2 + 1)
    bins: u32,       // K <= F: bins the model sees
    frames: u32,     // T
    valid: u32,      // frames t < valid are real; the rest are zero padding
    stems: u32,      // S
    eps: f32,        // 1e-10 for Spleeter
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> spec: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read> masks: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

override WG: u32 = 256u;

fn spec_at(c: u32, k: u32, t: u32) -> vec2<f32> {
    return spec[((c % p.xchannels) * p.nbins + k) * p.frames + t];
}

@compute @workgroup_size(WG)
fn magnitude(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = wg_linear(wid, nwg) * WG + lid;
    if (i >= p.channels * p.frames * p.bins) {
        return;
    }
    let k = i % p.bins;
    let t = (i / p.bins) % p.frames;
    let c = i / (p.bins * p.frames);
    var v = 0.0;
    if (t < p.valid) {
        let z = spec_at(c, k, t);
        v = sqrt(z.x * z.x + z.y * z.y);
    }
    out[i] = v;
}

@compute @workgroup_size(WG)
fn ratio_mask(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = wg_linear(wid, nwg) * WG + lid;
    if (i >= p.channels * p.nbins * p.frames) {
        return;
    }
    let t = i % p.frames;
    let k = (i / p.frames) % p.nbins;
    let c = i / (p.frames * p.nbins);
    let plane = p.channels * p.nbins * p.frames;   // one stem's rows of Y, in complex values
    if (k >= p.bins || t >= p.valid) {
        for (var s = 0u; s < p.stems; s++) {
            let at = 2u * (s * plane + i);
            out[at] = 0.0;
            out[at + 1u] = 0.0;
        }
        return;
    }
    // m[s, c, t, k] for stem s is at m0 + s * step
    let m0 = (c * p.frames + t) * p.bins + k;
    let step = p.channels * p.frames * p.bins;
    var den = 0.0;
    for (var s = 0u; s < p.stems; s++) {
        let m = masks[m0 + s * step];
        den += m * m;
    }
    den += p.eps;
    let z = spec_at(c, k, t);
    for (var s = 0u; s < p.stems; s++) {
        let m = masks[m0 + s * step];
        let ratio = (m * m + p.eps * 0.5) / den;
        let at = 2u * (s * plane + i);
        out[at] = z.x * ratio;
        out[at + 1u] = z.y * ratio;
    }
}
