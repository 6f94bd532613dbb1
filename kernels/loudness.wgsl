// loudness.wgsl: frequency-weighted mean power of each STFT frame, in dB, with DDSP's
// dynamic-range clamp (ddsp.spectral_ops.compute_loudness after its STFT).
//
//   power[b, t] = (1 / F) * sum_k (re^2 + im^2)[b, k, t] * weight[k]
//   out[b, t]   = max(10 * log10(max(power, pmin)) - ref_db, -range_db)
//               (10 * log10(pmin) is taken as exactly -range_db)
//
// weight[k] is the linear weighting of bin k (A-weighting: 10^(A_dB(f_k) / 10),
// computed on the host); pmin = 10^(-range_db / 10), as in ddsp.core.power_to_db.
//
// Layout: spec [B, F, frames, 2] (re, im), the layout of pycore.ops.spectral.stft;
// weight [F]; out [B, frames]; contiguous row-major f32.
// Workgroup: WG invocations in 1-D, one per (b, t), folded grid (wg_linear + bounds
// check). Neighbouring invocations read neighbouring frames of the same bin.
// Numerics: f32 sum over the F bins in order (relative error <= F * 2^-24, i.e.
// < 1e-4 dB for F = 1025); log10 through log2 (a few ulps).

override WG: u32 = 64u;

const DB_PER_LOG2 = 3.0102999566398120;    // 10 * log10(2)

struct Params {
    frames: u32,     // frames per batch row
    total: u32,      // B * frames
    bins: u32,       // F
    pmin: f32,       // power floor, 10^(-range_db / 10)
    ref_db: f32,
    range_db: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> spec: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn weighted_power_db(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = wg_linear(wid, nwg) * WG + lid;
    if (i >= p.total) { return; }
    let b = i / p.frames;
    let t = i % p.frames;
    var acc = 0.0;
    for (var k = 0u; k < p.bins; k++) {
        let at = 2u * ((b * p.bins + k) * p.frames + t);
        let re = spec[at];
        let im = spec[at + 1u];
        acc += (re * re + im * im) * weight[k];
    }
    let power = acc / f32(p.bins);
    // at or below the floor: 10 log10(pmin) = -range_db exactly (log2 would round it)
    let db = select(DB_PER_LOG2 * log2(power), -p.range_db, power <= p.pmin);
    out[i] = max(db - p.ref_db, -p.range_db);
}
