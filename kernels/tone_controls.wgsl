// tone_controls.wgsl: the tone engine's per-frame control logic on the GPU, so that a
// block needs no host round trip between its features and its synthesis (issue 12).
// pycore/ops/tone_controls.py drives it and holds the pure-Python reference;
// pycore/tone/stream.py's module docstring says what each rule is for.
//
//   controls  frame by frame, in order (one invocation carries the state):
//             voiced = conf >= voiced and f0 finite and > 0; a voiced frame sets the held
//             f0 (f0 * shift folded by whole octaves into [lo, hi] MIDI) and, when its
//             loudness is above -50 dB, updates the running mean of the voiced loudness
//             (plain mean over the first `auto` frames, then exponential); playing =
//             fewer than `hold` unvoiced frames since the last voiced one; the harmonic
//             and output gates move by at most `step` per frame towards playing and
//             loudness > silence (both 0 once the frame is past `last`, the take's end);
//             decoder f0 = the held f0, decoder loudness = max(-80, ld + trim + auto)
//             with auto = ref - running mean (0 before any voiced frame or without ref).
//             Then all invocations write the multiplier rows [1, g h, 1 x K, g x M].
//   level     tone_level.wgsl.
//
// Layouts (float32): fc [F, 2] (f0 Hz, confidence); ld [F] input loudness dB;
// knobs [3] = (2^octave, trim dB, last input frame or -1); st [12] the carried state
// (pycore.ops.tone_controls.STATE); outputs dec_f0 [F], dec_ld [F], gates [F, 2 + K + M],
// aux [F, 3] = (harmonic gate * output gate, auto shift dB, output gate).
// Workgroup: one of WG invocations; invocation 0 runs the sequential part.
// Numerics: float32 throughout (the reference computes in float64: differences are
// rounding, except for a value landing exactly on a threshold).

override WG: u32 = 64u;

struct Params {
    frames: u32,
    harmonics: u32,
    noise: u32,
    hold: u32,           // HOLD_FRAMES
    has_ref: u32,        // 1: auto-adjust towards ref_db
    voiced: f32,         // confidence threshold
    silence: f32,        // SILENCE_DB
    step: f32,           // 1 / GATE_FRAMES
    auto_frames: f32,    // AUTO_FRAMES
    lo: f32,             // trained MIDI range
    hi: f32,
    ref_db: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> fc: array<f32>;
@group(0) @binding(2) var<storage, read> ld: array<f32>;
@group(0) @binding(3) var<storage, read> knobs: array<f32>;
@group(0) @binding(4) var<storage, read_write> st: array<f32>;
@group(0) @binding(5) var<storage, read_write> dec_f0: array<f32>;
@group(0) @binding(6) var<storage, read_write> dec_ld: array<f32>;
@group(0) @binding(7) var<storage, read_write> gates: array<f32>;
@group(0) @binding(8) var<storage, read_write> aux: array<f32>;

fn finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// f0 moved by whole octaves into [lo, hi] MIDI (pycore.tone.controls.fold_f0).
fn fold(f0: f32) -> f32 {
    let midi = 69.0 + 12.0 * log2(f0 / 440.0);
    if (midi < p.lo) {
        return f0 * exp2(ceil((p.lo - midi) / 12.0));
    }
    if (midi > p.hi) {
        return f0 / exp2(ceil((midi - p.hi) / 12.0));
    }
    return f0;
}

@compute @workgroup_size(WG)
fn controls(@builtin(local_invocation_index) lid: u32) {
    let F = p.frames;
    let C = 2u + p.harmonics + p.noise;
    if (lid == 0u) {
        var hold_f0 = st[0];
        var unvoiced = u32(st[1]);
        var sung_db = st[2];
        var sung = st[3];
        var harm = st[4];
        var outg = st[5];
        let first = st[6];
        let shift = knobs[0];
        let trim = knobs[1];
        let last = knobs[2];
        for (var i = 0u; i < F; i++) {
            let f0 = fc[2u * i];
            let conf = fc[2u * i + 1u];
            let l = ld[i];
            let voiced = finite(conf) && conf >= p.voiced && finite(f0) && f0 > 0.0;
            if (voiced) {
                hold_f0 = fold(f0 * shift);
                unvoiced = 0u;
                if (l > -50.0) {
                    sung = sung + 1.0;
                    sung_db = sung_db + (l - sung_db) / min(sung, p.auto_frames);
                }
            } else {
                unvoiced = min(unvoiced + 1u, p.hold);
            }
            let playing = unvoiced < p.hold;
            var adjust = 0.0;
            if (p.has_ref == 1u && sung > 0.0) {
                adjust = p.ref_db - sung_db;
            }
            let closing = last >= 0.0 && first + f32(i) > last;
            let want_h = select(0.0, 1.0, playing && !closing);
            let want_o = select(0.0, 1.0, l > p.silence && !closing);
            harm = harm + clamp(want_h - harm, -p.step, p.step);
            outg = outg + clamp(want_o - outg, -p.step, p.step);
            if (closing) {
                harm = 0.0;
                outg = 0.0;
            }
            dec_f0[i] = hold_f0;
            dec_ld[i] = max(-80.0, l + trim + adjust);
            aux[3u * i] = harm * outg;
            aux[3u * i + 1u] = adjust;
            aux[3u * i + 2u] = outg;
            gates[i * C + 1u] = outg * harm;
        }
        st[0] = hold_f0;
        st[1] = f32(unvoiced);
        st[2] = sung_db;
        st[3] = sung;
        st[4] = harm;
        st[5] = outg;
        st[6] = first + f32(F);
    }
    storageBarrier();
    for (var j = lid; j < F * C; j += WG) {
        let i = j / C;
        let c = j - i * C;
        if (c == 0u || (c >= 2u && c < 2u + p.harmonics)) {
            gates[j] = 1.0;
        } else if (c >= 2u + p.harmonics) {
            gates[j] = aux[3u * i + 2u];
        }
    }
}
