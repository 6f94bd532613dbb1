// tone_level.wgsl: the tone engine's output level stage, and the block's one readback
// buffer. pycore/ops/tone_controls.py drives it (with tone_controls.wgsl before it) and
// holds the pure-Python reference; pycore/tone/stream.py's docstring says why.
//
//   level  frame k in order: target = input loudness of frame k - lag (the lag frames
//          before the block come from the state) + trim - headroom, but at least
//          silence + 20 dB (quiet singing makes a quiet instrument; the stage does not
//          chase the noise floor). On the first frame where the auto shift is in
//          effect (aux's fourth column; st[shifted_at] = 1 from then on), the gain moves
//          against the shift at once, by undo = -shift: the decoder's input loudness
//          jumps by the shift there, and the output would jump with it for the stage's
//          lag and time constant (a quiet take's first note came out 15-20 dB over the
//          singer). While the output sounds (output gate >= 1: on notes and between
//          them, where the instrument's noise stands for breaths and consonants) and
//          both the lagged input and the measured output loudness are above silence,
//          the gain (dB) moves by `rate` of the way to target - measured, clamped to
//          undo +- max_db; g0, g1 = the linear gains before and after the frame, at
//          most the limit that keeps the frame's peak at `peak` (never below 1); the
//          frame's samples are scaled by a ramp from g0 to g1 (sample j by
//          g0 + (g1 - g0) (j + 1) / hop), unchanged when g0 = g1 = 1.
//   out    [F * hop audio, F f0 Hz, F confidence, F loudness dB, F played f0 Hz (aux's
//          third column)]: everything the caller reads back, in one buffer.
//
// Layouts (float32): audio [F * hop]; measured [F] (output loudness dB); ld [F];
// fc [F, 2]; aux [F, 4] and knobs [3] as in tone_controls.wgsl; st [STATE] of which this
// stage uses st[7 .. 12) and st[shifted_at].
// Workgroup: one of WG invocations; invocation 0 carries the gain, all of them take the
// frame's peak (a tree reduction) and scale its samples.
// Numerics: float32; the gains via exp2/log2 (a few ulps).

override WG: u32 = 64u;

const LAG = 4u;                           // the ld_lag entries of the state
const DB_TO_LOG2 = 0.16609640474436813;   // log2(10) / 20

struct Params {
    frames: u32,
    hop: u32,
    rate: f32,         // 1 - exp(-1 / LEVEL_FRAMES)
    max_db: f32,       // LEVEL_MAX_DB
    headroom: f32,     // HEADROOM_DB
    silence: f32,      // SILENCE_DB
    peak: f32,         // LEVEL_PEAK
    shifted_at: u32,   // the state's flag: 1 once the auto shift took effect
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> audio: array<f32>;
@group(0) @binding(2) var<storage, read> measured: array<f32>;
@group(0) @binding(3) var<storage, read> ld: array<f32>;
@group(0) @binding(4) var<storage, read> fc: array<f32>;
@group(0) @binding(5) var<storage, read> aux: array<f32>;
@group(0) @binding(6) var<storage, read> knobs: array<f32>;
@group(0) @binding(7) var<storage, read_write> st: array<f32>;
@group(0) @binding(8) var<storage, read_write> out: array<f32>;

var<workgroup> peaks: array<f32, WG>;
var<workgroup> ramp: vec3<f32>;          // (g0, g1, 1 when the frame is left unchanged)

fn target_db(k: u32) -> f32 {
    if (k < LAG) {
        return st[8u + k];
    }
    return ld[k - LAG];
}

fn db_to_gain(db: f32) -> f32 {
    return exp2(db * DB_TO_LOG2);
}

@compute @workgroup_size(WG)
fn level(@builtin(local_invocation_index) lid: u32) {
    let F = p.frames;
    let hop = p.hop;
    let trim = knobs[1];
    for (var k = 0u; k < F; k++) {
        var m = 0.0;
        for (var j = lid; j < hop; j += WG) {
            m = max(m, abs(audio[k * hop + j]));
        }
        peaks[lid] = m;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s = s / 2u) {
            if (lid < s) {
                peaks[lid] = max(peaks[lid], peaks[lid + s]);
            }
            workgroupBarrier();
        }
        if (lid == 0u) {
            let before = st[7];
            var gain = before;
            let undo = -aux[4u * k];
            var shifted = st[p.shifted_at];
            if (shifted == 0.0 && aux[4u * k + 3u] == 1.0) {
                gain = gain + undo;
                shifted = 1.0;
            }
            let heard = target_db(k);
            let tgt = max(heard + trim - p.headroom, p.silence + 20.0);
            let got = measured[k];
            if (aux[4u * k + 1u] >= 1.0 && heard > p.silence && got > p.silence) {
                let want = clamp(tgt - got, undo - p.max_db, undo + p.max_db);
                gain = gain + (want - gain) * p.rate;
            }
            var g0 = db_to_gain(before);
            var g1 = db_to_gain(gain);
            var same = 0.0;
            if (g0 == 1.0 && g1 == 1.0) {
                same = 1.0;
            } else {
                let pk = peaks[0];
                var limit = g1;
                if (pk > 0.0) {
                    limit = max(1.0, p.peak / pk);
                }
                if (g1 > limit) {
                    g1 = limit;
                    gain = 20.0 * log2(limit) / log2(10.0);
                }
                g0 = min(g0, limit);
            }
            st[7] = gain;
            st[p.shifted_at] = shifted;
            ramp = vec3<f32>(g0, g1, same);
        }
        workgroupBarrier();
        let r = ramp;
        let step = (r.y - r.x) / f32(hop);
        for (var j = lid; j < hop; j += WG) {
            let v = audio[k * hop + j];
            out[k * hop + j] = select(v * (r.x + step * f32(j + 1u)), v, r.z == 1.0);
        }
        workgroupBarrier();
    }
    let n = F * hop;
    for (var i = lid; i < F; i += WG) {
        out[n + i] = fc[2u * i];
        out[n + F + i] = fc[2u * i + 1u];
        out[n + 2u * F + i] = ld[i];
        out[n + 3u * F + i] = aux[4u * i + 2u];
    }
    if (lid == 0u) {
        var lag: array<f32, LAG>;
        for (var j = 0u; j < LAG; j++) {
            lag[j] = target_db(F + j);
        }
        for (var j = 0u; j < LAG; j++) {
            st[8u + j] = lag[j];
        }
    }
}
