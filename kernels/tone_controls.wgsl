// tone_controls.wgsl: the tone engine's per-frame control logic on the GPU, so that a
// block needs no host round trip between its features and its synthesis (issue 12).
// pycore/ops/tone_controls.py drives it and holds the pure-Python reference;
// pycore/tone/stream.py's module docstring says what each rule is for.
//
//   controls  frame by frame, in order (one invocation carries the state):
//             voiced = conf >= voiced and f0 finite and > 0; a voiced frame, when its
//             loudness is above -50 dB, updates the running means of the voiced loudness
//             and of the voiced pitch in MIDI (plain means over the first `auto` such
//             frames, then exponential), then sets the held f0: f0 * shift * 2^R folded
//             by whole octaves into [lo, hi] MIDI, R the register shift below; playing =
//             fewer than `hold` unvoiced frames since the last voiced one; the harmonic
//             and output gates move by at most `step` per frame towards playing and
//             loudness > silence (both 0 once the frame is past `last`, the take's end);
//             decoder f0 = the held f0, decoder loudness = max(-80, ld + trim + auto)
//             with auto = ref - running mean (0 before any voiced frame or without ref),
//             or, when the model carries its calibration (has_cal), auto = calibrated(ld)
//             - ld: the input calibration below.
//             Then all invocations write the multiplier rows [1, g h, 1 x K, g x M].
//   register  (has_reg: the model carries its central training register, the band
//             [band_lo, band_hi] MIDI: its training pitch's quantiles at 1/8 and 7/8)
//             R, a whole number of octaves, is chosen only at a note start: a voiced
//             frame after at least `hold` unvoiced ones (the harmonic gate's hold ran
//             out; the take's first voiced frame is one, the state starting at `hold`),
//             from m, the running mean pitch including this frame (this frame's own
//             pitch while no frame has been counted yet): the take's first note takes the
//             smallest shift (in size) that puts m + 12 R inside the band (where no whole
//             octave does, a band narrower than an octave, the one nearer the band; a tie:
//             the smaller); a later note keeps the R it finds while m + 12 R lies within
//             12 reg_margin semitones of the band, and else chooses again (hysteresis: a
//             singer whose mean dips just past the band's edge keeps its octave; a band
//             narrower than an octave would otherwise flip R between notes); within a
//             note R stays, so a phrase is moved as a whole and the fold only guards
//             the range. Without has_reg, R stays 0 (the fold alone, as before the
//             rule). register_shift below; its float64 twin is
//             pycore.ops.tone_controls.register_shift.
//   calibration  (pycore/tone/calibration.py says why) the input's loudness mapped onto
//             the instrument's training distribution by quantiles, causally:
//             - observe: each voiced frame above CAL_LO adds to a histogram of 1 dB bins
//               from CAL_LO (CAL_BINS of them, the ends catching what lies beyond) with
//               weight 1 for the first cal_frames such frames, then weight total /
//               (cal_frames - 1) (an exponential forgetting over cal_frames frames, as
//               the running mean), the total renormalized to 1 past 2^20;
//             - rebuild: on the first counted frame and then on every frame whose index
//               is a multiple of CAL_EVERY, the map table is rebuilt: at each bin edge x,
//               u(x) = pi F_inst(x - d) + (1 - pi) F_hist(x), pi = cal_prior / (cal_prior
//               + n) (a prior of the instrument's own shape moved to the singer's running
//               mean: d = mean - ref_db, the instrument's median), F_hist the histogram's
//               CDF (linear within a bin), F_inst the instrument's (linear between its
//               CAL_POINTS quantiles), and table(x) = Q_inst(u(x)); below u = 0 and above
//               u = 1 the map continues with slope 1 from the instrument's end quantiles;
//             - map: calibrated(l) = the table interpolated linearly at l (slope 1 outside
//               [CAL_LO, CAL_LO + CAL_BINS]).
//             Each step depends on the frames so far only: the map is the same however
//             the take is cut into blocks.
//   level     tone_level.wgsl.
//
// Layouts (float32): fc [F, 2] (f0 Hz, confidence); ld [F] input loudness dB;
// knobs [3] = (2^octave, trim dB, last input frame or -1); st [STATE] the carried state
// (pycore.ops.tone_controls.STATE: 12 floats of the controls and the level stage, then the
// calibration's: total weight, table age flag, histogram [CAL_BINS], map table
// [CAL_BINS + 1], the instrument's loudness quantiles [CAL_POINTS], constant; then the
// register's (reg_at): running mean voiced pitch (MIDI), R (octaves), 1 once R was
// chosen); outputs
// dec_f0 [F], dec_ld [F], gates [F, 2 + K + M], aux [F, 4] = (auto shift dB,
// output gate, played f0 Hz: dec_f0 again, for tone_level's output; 1 where the auto
// shift is in effect: the running mean has counted a frame).
// Workgroup: one of WG invocations; invocation 0 runs the sequential part. Its loop
// passes (lavapipe's limit: kernels/common.wgsl), at most F + 1 + (F / CAL_EVERY + 2)
// (3 CAL_BINS + CAL_POINTS + 5) + F (2 + K + M) / WG + 1: pycore.ops.tone_controls
// refuses a block past the limit.
// Numerics: float32 throughout (the reference computes in float64: differences are
// rounding, except for a value landing exactly on a threshold; the map's through the
// histogram sums, a few ulps of the CDF times the instrument's quantile slope).

override WG: u32 = 64u;
override CAL_BINS: u32 = 80u;
override CAL_POINTS: u32 = 33u;
override CAL_EVERY: u32 = 8u;
const CAL_LO = -50.0;
const CAL_ONE = 1e-5;         // u this close to 1 is 1
const CAL = 14u;                // st[12] total weight, st[13] 1 once a table is built, then the histogram

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
    has_cal: u32,        // 1: the model's calibration (else the running-mean shift)
    cal_prior: f32,      // CAL_PRIOR_FRAMES
    cal_frames: f32,     // CAL_FRAMES
    has_reg: u32,        // 1: the register shift into [band_lo, band_hi] (else R = 0)
    band_lo: f32,        // the model's central training register (MIDI)
    band_hi: f32,
    reg_margin: f32,     // REGISTER_MARGIN (octaves): R's hysteresis
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

// ---------------------------------------------------------------- input calibration

fn table_at() -> u32 {
    return CAL + CAL_BINS;
}

// st[reg_at()] the running mean pitch (MIDI), st[reg_at() + 1] R (octaves), st[reg_at()
// + 2] 1 once the take's first note chose R: after the calibration's part.
fn reg_at() -> u32 {
    return CAL + 2u * CAL_BINS + 1u + CAL_POINTS;
}

// R at a note start with running mean pitch m (the header's register rule).
fn register_shift(m: f32, current: f32, chosen: bool) -> f32 {
    let slack = 12.0 * p.reg_margin;
    let at = m + 12.0 * current;
    if (chosen && at >= p.band_lo - slack && at <= p.band_hi + slack) {
        return current;
    }
    let lift = ceil((p.band_lo - m) / 12.0);    // the smallest R with m + 12 R >= band_lo
    let drop = floor((p.band_hi - m) / 12.0);   // the largest R with m + 12 R <= band_hi
    if (lift <= drop) {
        return min(max(0.0, lift), drop);
    }
    let below = p.band_lo - (m + 12.0 * drop);
    let above = m + 12.0 * lift - p.band_hi;
    if (below < above || (below == above && abs(drop) < abs(lift))) {
        return drop;
    }
    return lift;
}

fn inst_q(k: u32) -> f32 {
    return st[CAL + 2u * CAL_BINS + 1u + k];
}

// One counted voiced frame of loudness l (the n-th) into the histogram.
fn observe(l: f32, n: f32) {
    var total = st[12];
    var w = 1.0;
    if (n > p.cal_frames) {
        w = total / (p.cal_frames - 1.0);
    }
    total = total + w;
    let b = u32(clamp(floor(l - CAL_LO), 0.0, f32(CAL_BINS - 1u)));
    st[CAL + b] = st[CAL + b] + w;
    if (total > 1048576.0) {
        for (var j = 0u; j < CAL_BINS; j++) {
            st[CAL + j] = st[CAL + j] / total;
        }
        total = 1.0;
    }
    st[12] = total;
}

// Q_inst(u): the instrument's quantile function, linear between its CAL_POINTS points.
fn inst_quantile(u: f32) -> f32 {
    let last = CAL_POINTS - 1u;
    let t = clamp(u, 0.0, 1.0) * f32(last);
    let k = min(u32(floor(t)), last - 1u);
    return inst_q(k) + (t - f32(k)) * (inst_q(k + 1u) - inst_q(k));
}

// The map table at the bin edges CAL_LO + j, j = 0 .. CAL_BINS, from the histogram of n
// counted frames and the prior centred by d: one sweep over the edges, the histogram's
// running sum and a pointer into the instrument's quantiles moving up with them; then
// slope 1 below the last edge with u = 0 and above the first with u = 1 (u within
// CAL_ONE of 1: the histogram's sum and its total are rounded apart).
fn rebuild(n: f32, d: f32) {
    let last = CAL_POINTS - 1u;
    let pi = p.cal_prior / (p.cal_prior + n);
    let total = st[12];
    var below = 0.0;               // histogram weight below the edge
    var k = 0u;                    // inst_q(k) <= x - d < inst_q(k + 1) while inside
    var lo_j = 0u;                 // the last edge with u = 0 (0: none)
    var hi_j = CAL_BINS;           // the first edge with u = 1
    for (var j = 0u; j <= CAL_BINS; j++) {
        let y = CAL_LO + f32(j) - d;
        var fi = 0.0;
        if (y >= inst_q(last)) {
            fi = 1.0;
        } else if (y > inst_q(0u)) {
            while (k + 1u < last && inst_q(k + 1u) <= y) {
                k++;
            }
            fi = (f32(k) + (y - inst_q(k)) / (inst_q(k + 1u) - inst_q(k))) / f32(last);
        }
        var u = pi * fi + (1.0 - pi) * below / total;
        if (u <= 0.0) {
            lo_j = j;
        }
        if (u >= 1.0 - CAL_ONE) {
            u = 1.0;
            hi_j = min(hi_j, j);
        }
        st[table_at() + j] = inst_quantile(u);
        if (j < CAL_BINS) {
            below = below + st[CAL + j];
        }
    }
    for (var j = 0u; j <= CAL_BINS; j++) {
        if (j < lo_j) {
            st[table_at() + j] = inst_q(0u) - f32(lo_j - j);
        } else if (j > hi_j) {
            st[table_at() + j] = inst_q(last) + f32(j - hi_j);
        }
    }
}

// The calibrated loudness of l: the table interpolated, slope 1 outside it.
fn calibrated(l: f32) -> f32 {
    let x = l - CAL_LO;
    if (x <= 0.0) {
        return st[table_at()] + x;
    }
    if (x >= f32(CAL_BINS)) {
        return st[table_at() + CAL_BINS] + x - f32(CAL_BINS);
    }
    let j = min(u32(floor(x)), CAL_BINS - 1u);
    let a = st[table_at() + j];
    return a + (x - f32(j)) * (st[table_at() + j + 1u] - a);
}

// ---------------------------------------------------------------- the controls

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
        var sung_midi = st[reg_at()];
        var reg = st[reg_at() + 1u];
        var chosen = st[reg_at() + 2u];
        for (var i = 0u; i < F; i++) {
            let f0 = fc[2u * i];
            let conf = fc[2u * i + 1u];
            let l = ld[i];
            let voiced = finite(conf) && conf >= p.voiced && finite(f0) && f0 > 0.0;
            if (voiced) {
                let onset = unvoiced >= p.hold;
                let midi = 69.0 + 12.0 * log2(f0 / 440.0);
                unvoiced = 0u;
                if (l > CAL_LO) {
                    sung = sung + 1.0;
                    sung_db = sung_db + (l - sung_db) / min(sung, p.auto_frames);
                    sung_midi = sung_midi + (midi - sung_midi) / min(sung, p.auto_frames);
                    if (p.has_cal == 1u) {
                        observe(l, sung);
                    }
                }
                if (p.has_reg == 1u && onset) {
                    reg = register_shift(select(midi, sung_midi, sung > 0.0), reg, chosen == 1.0);
                    chosen = 1.0;
                }
                hold_f0 = fold(f0 * shift * exp2(reg));
            } else {
                unvoiced = min(unvoiced + 1u, p.hold);
            }
            let playing = unvoiced < p.hold;
            var adjust = 0.0;
            if (p.has_ref == 1u && sung > 0.0) {
                if (p.has_cal == 1u) {
                    if (st[13] == 0.0 || (u32(first) + i) % CAL_EVERY == 0u) {
                        rebuild(sung, sung_db - p.ref_db);
                        st[13] = 1.0;
                    }
                    adjust = calibrated(l) - l;
                } else {
                    adjust = p.ref_db - sung_db;
                }
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
            aux[4u * i] = adjust;
            aux[4u * i + 1u] = outg;
            aux[4u * i + 2u] = hold_f0;
            aux[4u * i + 3u] = select(0.0, 1.0, p.has_ref == 1u && sung > 0.0);
            gates[i * C + 1u] = outg * harm;
        }
        st[0] = hold_f0;
        st[1] = f32(unvoiced);
        st[2] = sung_db;
        st[3] = sung;
        st[4] = harm;
        st[5] = outg;
        st[6] = first + f32(F);
        st[reg_at()] = sung_midi;
        st[reg_at() + 1u] = reg;
        st[reg_at() + 2u] = chosen;
    }
    storageBarrier();
    for (var j = lid; j < F * C; j += WG) {
        let i = j / C;
        let c = j - i * C;
        if (c == 0u || (c >= 2u && c < 2u + p.harmonics)) {
            gates[j] = 1.0;
        } else if (c >= 2u + p.harmonics) {
            gates[j] = aux[4u * i + 1u];
        }
    }
}
