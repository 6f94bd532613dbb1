// ddsp_decoder.wgsl: the elementwise ends of the DDSP decoder (pycore/models/ddsp.py;
// the layers in between are linear, layer_norm, leaky ReLU and gru ops):
//
//   scale_inputs  ddsp's preprocessing of one input, per frame: mode 0: ld_scaled =
//                 loudness_db / 80 + 1; mode 1: f0_scaled = hz_to_midi(f0_hz) / 127 with
//                 hz_to_midi(f) = 12 (log2 f - log2 440) + 69, and 0 for f <= 0.
//                 Non-finite inputs count as 0 (ld_scaled 0 = -80 dB, f0_scaled 0).
//   head          decoder outputs -> synthesizer controls (ddsp's get_controls):
//                 ctrl[f] = [f0_hz, exp_sigmoid(amp), exp_sigmoid(harmonics[K]),
//                 exp_sigmoid(noise[M] + noise_bias)], with exp_sigmoid(x) =
//                 2 sigmoid(x)^ln(10) + 1e-7; f0_hz is copied (non-finite or negative -> 0).
//
// Layouts (row-major, float32): x: the input [F] (scale_inputs) or the decoder output
// raw [F, 1 + K + M] (head); f0 [F]; out [F] or ctrl [F, 2 + K + M].
// Workgroup: WG invocations, one output value each, 1-D grid folded by the runtime.
// Numerics: float32. exp_sigmoid runs as 2 exp(ln(10) * log_sigmoid(x)) with the stable
// log_sigmoid(x) = min(x, 0) - log(1 + exp(-|x|)), which neither overflows nor loses the
// tail for very negative x (where sigmoid itself would underflow to 0).

struct Params {
    frames: u32,     // F
    mode: u32,       // scale_inputs: 0 loudness, 1 f0
    harmonics: u32,  // K
    bands: u32,      // M
    noise_bias: f32, // added to the noise outputs before exp_sigmoid (ddsp: -5)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> f0: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

override WG: u32 = 64u;

fn is_finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;  // WGSL may assume no NaN/inf
}

@compute @workgroup_size(WG)
fn scale_inputs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let f = wg_linear(wid, nwg) * WG + lid.x;
    if (f >= p.frames) {
        return;
    }
    let v = x[f];
    var y = 0.0;
    if (!is_finite(v)) {
        y = 0.0;
    } else if (p.mode == 0u) {
        y = v / 80.0 + 1.0;
    } else if (v > 0.0) {
        y = (12.0 * (log2(v) - 8.78135971352466) + 69.0) / 127.0;   // log2(440)
    }
    out[f] = y;
}

fn exp_sigmoid(v: f32) -> f32 {
    let log_sig = min(v, 0.0) - log(1.0 + exp(-abs(v)));
    return 2.0 * exp(2.302585092994046 * log_sig) + 1e-7;
}

@compute @workgroup_size(WG)
fn head(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = wg_linear(wid, nwg) * WG + lid.x;      // (frame, control)
    let width = 2u + p.harmonics + p.bands;
    if (i >= p.frames * width) {
        return;
    }
    let f = i / width;
    let c = i - f * width;
    if (c == 0u) {
        let hz = f0[f];
        out[i] = select(0.0, hz, is_finite(hz) && hz > 0.0);
        return;
    }
    var v = x[f * (width - 1u) + c - 1u];           // raw: amp, harmonics, noise
    if (c >= 2u + p.harmonics) {
        v += p.noise_bias;
    }
    out[i] = exp_sigmoid(v);
}
