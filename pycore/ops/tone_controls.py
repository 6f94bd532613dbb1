"""The tone engine's control logic and level stage on the GPU (kernels/tone_controls.wgsl,
kernels/tone_level.wgsl), with their state in a GPU buffer, so that a tone block is one
recorded plan with one readback (pycore.tone.stream; the rules are described there).

    rules = Rules(voiced=0.5, silence_db=-70.0, ...)            # the engine's constants
    state = initial_state(dev, rules)                           # [STATE] on the GPU
    dec_f0, dec_ld, gates, aux = tone_controls(fc, ld, knobs, state, rules)
    ... decoder(dec_f0, dec_ld), times gates, synthesizer -> audio, output loudness
    out = tone_level(audio, measured, ld, fc, aux, knobs, state, rules)
        # [F * hop audio, F f0, F confidence, F loudness, F played f0]

fc [F, 2] (f0 Hz, confidence) and ld [F] (input loudness dB) are the block's features;
knobs [3] = (2 ** octave, loudness trim dB, the take's last input frame or -1), the
caller's live settings; state (STATE floats): held f0, unvoiced run, running mean of the
voiced loudness and its count, harmonic and output gates, next frame index, level gain
(dB), the input loudness of the last LAG frames; then the input calibration's (used when
rules.calibration holds the model's loudness quantiles: pycore.tone.calibration): its
histogram's total weight, a table-built flag, the histogram [CAL_BINS], the map table
[CAL_BINS + 1] and the instrument's quantiles [CAL_POINTS] (constant); then the register
shift's (used when rules.pitch_band holds the model's central training register): the
running mean of the voiced pitch (MIDI), R, the register shift in octaves, chosen at
note starts with a hysteresis of rules.reg_margin (`register_shift`; kernels/tone_controls.wgsl
has the same rule), and a flag set once the take's first note chose R; last, the level stage's flag,
set on the first frame where the auto shift took effect (its gain moved against the
shift there). Both kernels update state in place.

`reference` is the same logic in pure Python (float64), the check for the diagnostics
page and the tests.
"""

from __future__ import annotations

import array
import math
from dataclasses import dataclass

from ..gpu.runtime import Tensor
from ..gpu.selfcheck import assert_close, check, rand, rng
from . import expect, expect_dtype, expect_loop_steps, same_device

LAG = 4             # input-loudness frames the level stage looks back (kernels/tone_level.wgsl)
WG = 64
CAL_LO_DB = -50.0   # the calibration's histogram starts here (quieter voiced frames are not counted)
CAL_BINS = 80       # 1 dB bins: -50 .. 30 dB
CAL_POINTS = 33     # the instrument's loudness quantiles, at probabilities k / 32
CAL_EVERY = 8       # the map table is rebuilt on frames whose index is a multiple of this
CAL_ONE = 1e-5      # a CDF this close to 1 is 1 (the histogram's sum and its total round apart)
CAL = 14            # where the histogram starts in the state
REG = CAL + 2 * CAL_BINS + 1 + CAL_POINTS        # the register's mean pitch (MIDI), R (octaves), chosen flag
SHIFTED = REG + 3                                # the level stage's flag: 1 once the auto shift took effect
STATE = REG + 4                                  # floats of state


@dataclass(frozen=True)
class Rules:
    """The constants of the control logic (pycore.tone.controls) and of the model."""

    voiced: float = 0.5          # confidence threshold
    silence_db: float = -70.0
    gate_frames: int = 4
    hold_frames: int = 25
    auto_frames: int = 750
    level_frames: int = 4
    level_max_db: float = 12.0
    headroom_db: float = 6.0
    level_peak: float = 0.95
    lo_midi: float = 48.0        # the instrument's trained range
    hi_midi: float = 84.0
    ref_db: float | None = None  # the model's trained loudness (None: no auto-adjust)
    harmonics: int = 60          # K
    noise: int = 65              # M
    hop: int = 64
    calibration: tuple | None = None   # the instrument's CAL_POINTS loudness quantiles (None: the mean shift)
    cal_prior_frames: float = 2000.0   # weight of the prior, in voiced frames
    cal_frames: int = 7500             # voiced frames of the histogram's memory
    pitch_band: tuple | None = None    # (lo, hi) MIDI: the model's central training register (None: no shift)
    reg_margin: float = 0.0            # octaves the shifted mean may stray outside the band before R changes

    @property
    def has_cal(self) -> bool:
        return self.calibration is not None

    @property
    def has_reg(self) -> bool:
        return self.pitch_band is not None

    @property
    def center_db(self) -> float | None:
        """The loudness the singer's running mean is moved to: the median of the
        calibration (as ref_db, the model's voiced median, is without one), else ref_db."""
        if self.calibration is None:
            return self.ref_db
        return _inst_quantile(self.calibration, 0.5)

    @property
    def width(self) -> int:
        return 2 + self.harmonics + self.noise


def initial_state(dev, rules: Rules) -> Tensor:
    """The state before a take's first frame: f0 held at the middle of the range, no
    note, no voiced loudness yet, gates closed, frame 0, gain 0 dB, silence (-80 dB)
    before the input; no voiced pitch yet, register shift 0, not chosen yet; no auto
    shift met by the level stage yet."""
    return dev.tensor(reference_state(rules), (STATE,))


def reference_state(rules: Rules) -> list:
    mid = 440.0 * 2.0 ** (((rules.lo_midi + rules.hi_midi) / 2 - 69.0) / 12.0)
    quantiles = list(rules.calibration) if rules.has_cal else [0.0] * CAL_POINTS
    return ([mid, float(rules.hold_frames), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0] + [-80.0] * LAG
            + [0.0, 0.0] + [0.0] * (2 * CAL_BINS + 1) + quantiles + [0.0, 0.0, 0.0, 0.0])


def loop_passes(F: int, rules: Rules) -> int:
    """The most loop passes of tone_controls' sequential invocation for F frames
    (kernels/tone_controls.wgsl's header)."""
    cal = (F // CAL_EVERY + 2) * (3 * CAL_BINS + CAL_POINTS + 5) if rules.has_cal else 0
    return F + 1 + cal + -(-F * rules.width // WG) + 1


def _check_inputs(op, fc, ld, knobs, state):
    for name, t in (("fc", fc), ("ld", ld), ("knobs", knobs), ("state", state)):
        expect(op, isinstance(t, Tensor), f"{name} must be a Tensor, got {type(t).__name__}")
        expect_dtype(op, t, "f32")
        same_device(op, fc, t)
    F = ld.size
    expect(op, F >= 1 and fc.size == 2 * F, "fc must be [F, 2] and ld [F] for the same F >= 1", fc, ld)
    expect(op, knobs.size == 3, "knobs must be [3]: 2**octave, trim dB, last input frame or -1", knobs)
    expect(op, state.size == STATE, f"state must be the [{STATE}] tensor of initial_state", state)
    return F


def tone_controls(fc, ld, knobs, state, rules: Rules):
    """(decoder f0 [F], decoder loudness [F], controls multiplier [F, 2 + K + M],
    aux [F, 4]: auto shift dB, output gate, played f0 Hz (the decoder f0, for tone_level's
    output), 1 where the auto shift is in effect) for one block; advances state (see the module docstring)."""
    op = "tone_controls"
    F = _check_inputs(op, fc, ld, knobs, state)
    expect_loop_steps(op, loop_passes(F, rules), f"a block of {F} frames", fc)
    dev = fc.dev
    dec_f0, dec_ld = dev.empty((F,)), dev.empty((F,))
    gates, aux = dev.empty((F, rules.width)), dev.empty((F, 4))
    consts = {"WG": WG, "CAL_BINS": CAL_BINS, "CAL_POINTS": CAL_POINTS, "CAL_EVERY": CAL_EVERY}
    dev.run(dev.kernel("tone_controls", "controls", consts=consts), 1,
            fc=fc, ld=ld, knobs=knobs, st=state, dec_f0=dec_f0, dec_ld=dec_ld, gates=gates, aux=aux,
            frames=F, harmonics=rules.harmonics, noise=rules.noise, hold=rules.hold_frames,
            has_ref=int(rules.center_db is not None), voiced=rules.voiced, silence=rules.silence_db,
            step=1.0 / rules.gate_frames, auto_frames=float(rules.auto_frames), lo=rules.lo_midi,
            hi=rules.hi_midi, ref_db=rules.center_db if rules.center_db is not None else 0.0,
            has_cal=int(rules.has_cal), cal_prior=float(rules.cal_prior_frames), cal_frames=float(rules.cal_frames),
            has_reg=int(rules.has_reg), band_lo=float(rules.pitch_band[0]) if rules.has_reg else 0.0,
            band_hi=float(rules.pitch_band[1]) if rules.has_reg else 0.0, reg_margin=float(rules.reg_margin))
    return dec_f0, dec_ld, gates, aux


def tone_level(audio, measured, ld, fc, aux, knobs, state, rules: Rules):
    """The level-corrected audio and the block's features in one buffer
    [F * hop + 4 F] (audio, f0, confidence, loudness, the f0 the instrument played: after
    the octave knob, the register shift and the fold); advances state."""
    op = "tone_level"
    F = _check_inputs(op, fc, ld, knobs, state)
    for name, t, n in (("audio", audio, F * rules.hop), ("measured", measured, F), ("aux", aux, 4 * F)):
        expect(op, isinstance(t, Tensor) and t.dtype == "f32" and t.size == n,
               f"{name} must be an f32 tensor of {n} values", t)
    dev = fc.dev
    out = dev.empty((F * rules.hop + 4 * F,))
    dev.run(dev.kernel("tone_level", "level", consts={"WG": WG}), 1,
            audio=audio, measured=measured, ld=ld, fc=fc, aux=aux, knobs=knobs, st=state, out=out,
            frames=F, hop=rules.hop, rate=1.0 - math.exp(-1.0 / rules.level_frames),
            max_db=rules.level_max_db, headroom=rules.headroom_db, silence=rules.silence_db,
            peak=rules.level_peak, shifted_at=SHIFTED)
    return out


# ---------------------------------------------------------------- pure-Python reference


def _fold(f0, lo, hi):
    midi = 69.0 + 12.0 * math.log2(f0 / 440.0)
    if midi < lo:
        return f0 * 2.0 ** math.ceil((lo - midi) / 12.0)
    if midi > hi:
        return f0 / 2.0 ** math.ceil((midi - hi) / 12.0)
    return f0


def _cal_observe(state, loud, n, rules):
    total = state[12]
    w = 1.0 if n <= rules.cal_frames else total / (rules.cal_frames - 1.0)
    total += w
    b = int(max(0.0, min(CAL_BINS - 1.0, math.floor(loud - CAL_LO_DB))))
    state[CAL + b] += w
    if total > 1048576.0:
        for j in range(CAL_BINS):
            state[CAL + j] /= total
        total = 1.0
    state[12] = total


def _inst_quantile(q, u):
    last = len(q) - 1
    t = max(0.0, min(1.0, u)) * last
    k = min(int(math.floor(t)), last - 1)
    return q[k] + (t - k) * (q[k + 1] - q[k])


def _cal_rebuild(state, n, d, rules):
    q, last, table = rules.calibration, CAL_POINTS - 1, CAL + CAL_BINS
    pi = rules.cal_prior_frames / (rules.cal_prior_frames + n)
    below, k, lo_j, hi_j = 0.0, 0, 0, CAL_BINS
    for j in range(CAL_BINS + 1):
        y = CAL_LO_DB + j - d
        if y >= q[last]:
            fi = 1.0
        elif y > q[0]:
            while k + 1 < last and q[k + 1] <= y:
                k += 1
            fi = (k + (y - q[k]) / (q[k + 1] - q[k])) / last
        else:
            fi = 0.0
        u = pi * fi + (1.0 - pi) * below / state[12]
        if u <= 0.0:
            lo_j = j
        if u >= 1.0 - CAL_ONE:
            u, hi_j = 1.0, min(hi_j, j)
        state[table + j] = _inst_quantile(q, u)
        if j < CAL_BINS:
            below += state[CAL + j]
    for j in range(CAL_BINS + 1):
        if j < lo_j:
            state[table + j] = q[0] - (lo_j - j)
        elif j > hi_j:
            state[table + j] = q[last] + (j - hi_j)


def _calibrated(state, loud):
    table, x = CAL + CAL_BINS, loud - CAL_LO_DB
    if x <= 0:
        return state[table] + x
    if x >= CAL_BINS:
        return state[table + CAL_BINS] + x - CAL_BINS
    j = min(int(math.floor(x)), CAL_BINS - 1)
    return state[table + j] + (x - j) * (state[table + j + 1] - state[table + j])


def register_shift(m: float, current: float, chosen: bool, band: tuple, margin: float) -> float:
    """R, the register shift in whole octaves, at a note start whose running mean pitch is
    m (MIDI): the smallest shift (in size) that puts m + 12 R inside the band (lo, hi),
    the model's central training register; where no whole octave lands inside (a band
    narrower than an octave), the one that leaves m + 12 R nearer the band (a tie: the
    smaller shift). Once chosen, the current R stays while m + 12 R lies within
    `margin` octaves of the band (hysteresis). Float64; kernels/tone_controls.wgsl's
    register_shift is the same rule in float32."""
    lo, hi = band
    slack = 12.0 * margin
    if chosen and lo - slack <= m + 12.0 * current <= hi + slack:
        return float(current)
    lift = math.ceil((lo - m) / 12.0)         # the smallest R with m + 12 R >= lo
    drop = math.floor((hi - m) / 12.0)        # the largest R with m + 12 R <= hi
    if lift <= drop:
        return float(min(max(0, lift), drop))
    below, above = lo - (m + 12.0 * drop), m + 12.0 * lift - hi
    return float(drop if below < above or (below == above and abs(drop) < abs(lift)) else lift)


def reference(fc, ld, audio, measured, knobs, state, rules: Rules, notes=None):
    """Both stages on host lists, float64: (dec_f0, dec_ld, gates, out); state (a list
    of STATE floats) is updated in place. audio and measured are what the decoder and
    synthesizer made of dec_f0 / dec_ld / gates (the check feeds arbitrary values).
    notes: a list to which each note start of a register-shifted model appends (frame
    index in the block, the mean pitch the rule saw, R before, R after)."""
    F, K, M = len(ld), rules.harmonics, rules.noise
    shift, trim, last = knobs
    hold_f0, unvoiced, sung_db, sung, harm, outg, first = state[:7]
    sung_midi, reg, chosen = state[REG:REG + 3]
    step = 1.0 / rules.gate_frames
    dec_f0, dec_ld, gates, sounding, shifts, live = [], [], [], [], [], []
    for i in range(F):
        f0, conf, loud_in = fc[2 * i], fc[2 * i + 1], ld[i]
        if conf >= rules.voiced and math.isfinite(f0) and f0 > 0:
            onset, midi, unvoiced = unvoiced >= rules.hold_frames, 69.0 + 12.0 * math.log2(f0 / 440.0), 0
            if loud_in > CAL_LO_DB:
                sung += 1
                sung_db += (loud_in - sung_db) / min(sung, rules.auto_frames)
                sung_midi += (midi - sung_midi) / min(sung, rules.auto_frames)
                if rules.has_cal:
                    _cal_observe(state, loud_in, sung, rules)
            if rules.has_reg and onset:
                m, before = (sung_midi if sung else midi), reg
                reg = register_shift(m, reg, bool(chosen), rules.pitch_band, rules.reg_margin)
                chosen = 1.0
                if notes is not None:
                    notes.append((i, m, before, reg))
            hold_f0 = _fold(f0 * shift * 2.0 ** reg, rules.lo_midi, rules.hi_midi)
        else:
            unvoiced = min(unvoiced + 1, rules.hold_frames)
        auto = 0.0
        if rules.center_db is not None and sung:
            if rules.has_cal:
                if state[13] == 0.0 or (int(first) + i) % CAL_EVERY == 0:
                    _cal_rebuild(state, sung, sung_db - rules.center_db, rules)
                    state[13] = 1.0
                auto = _calibrated(state, loud_in) - loud_in
            else:
                auto = rules.ref_db - sung_db
        closing = last >= 0 and first + i > last
        want_h = 1.0 if unvoiced < rules.hold_frames and not closing else 0.0
        want_o = 1.0 if loud_in > rules.silence_db and not closing else 0.0
        harm += max(-step, min(step, want_h - harm))
        outg += max(-step, min(step, want_o - outg))
        if closing:
            harm = outg = 0.0
        dec_f0.append(hold_f0)
        dec_ld.append(max(-80.0, loud_in + trim + auto))
        sounding.append(outg)
        shifts.append(auto)
        live.append(rules.center_db is not None and sung > 0)
        gates += [1.0, outg * harm] + [1.0] * K + [outg] * M
    state[:7] = [hold_f0, unvoiced, sung_db, sung, harm, outg, first + F]
    state[REG:REG + 3] = [sung_midi, reg, chosen]

    hop, gain, shifted = rules.hop, state[7], state[SHIFTED]
    targets = list(state[8:8 + LAG]) + list(ld)
    rate = 1.0 - math.exp(-1.0 / rules.level_frames)
    out = list(audio)
    for k in range(F):
        heard, got, before, undo = targets[k], measured[k], gain, -shifts[k]
        if not shifted and live[k]:     # the auto shift's first frame: move against it at once
            gain, shifted = gain + undo, 1.0
        target = max(heard + trim - rules.headroom_db, rules.silence_db + 20)   # quiet in, quiet out; the floor:
        if sounding[k] >= 1.0 and heard > rules.silence_db and got > rules.silence_db:   # not the noise floor
            want = max(undo - rules.level_max_db, min(undo + rules.level_max_db, target - got))
            gain += (want - gain) * rate
        g0, g1 = 10.0 ** (before / 20.0), 10.0 ** (gain / 20.0)
        if g0 == g1 == 1.0:
            continue
        peak = max(abs(v) for v in audio[k * hop:(k + 1) * hop])
        limit = max(1.0, rules.level_peak / peak) if peak > 0 else g1   # never turn a note into a blast
        if g1 > limit:
            g1, gain = limit, 20.0 * math.log10(limit)
        g0 = min(g0, limit)
        for j in range(hop):
            out[k * hop + j] *= g0 + (g1 - g0) / hop * (j + 1)
    state[7], state[SHIFTED] = gain, shifted
    state[8:8 + LAG] = targets[F:F + LAG]
    out += [fc[2 * i] for i in range(F)] + [fc[2 * i + 1] for i in range(F)] + list(ld) + dec_f0
    return dec_f0, dec_ld, gates, out


@check("tone_controls")
async def _check_tone_controls(dev):
    # Two blocks through both kernels against the float64 reference, with the running-mean
    # shift, with the input calibration, and with the calibration and the register shift
    # (notes of 5 voiced frames after 4 unvoiced, past the hold of 3: each starts a note;
    # the first frame quieter than the count's floor, so the first note's register comes
    # from its own pitch; a running mean over 5 frames of pitches 3 octaves apart, so
    # that R takes several values against a band (60, 70.5) narrower than an octave (a
    # mean between 70.5 and 72, modulo 12, lands in neither side); then a first note at
    # MIDI 57 and the others at 63 with a margin of 0.5 octave: the first note takes
    # R = 1 (69, inside; the margin does not apply to it), and the hysteresis holds R = 1
    # at 63 (75 lies within 6 semitones of the band) where a fresh choice would give 0;
    # the reference's decisions are asserted at least 0.05 semitone from a boundary of
    # the rule, where float32's log2 cannot flip them): voiced
    # and unvoiced runs longer than the hold,
    # octave folds both ways, silence, the auto-adjust, the calibration's histogram past
    # its memory (cal_frames) and its map rebuilt within a block, the level gain, its
    # peak limit, and the take's end; without the register shift, the take starts with 7
    # loud unvoiced frames, which the level stage measures (past its LAG) before the
    # auto shift takes effect on the first voiced frame, where the gain moves against it
    # (the check fails without that move). Inputs keep clear of thresholds so float32 rounding
    # cannot flip a decision; the bars are float32 rounding of a few chained operations
    # (gains through exp2/log2: a few ulps of 1e-6 relative; the calibrated loudness: its
    # CDF is a sum of up to CAL_BINS terms, 1e-5 of its unit, times the instrument's
    # steepest quantile slope, here 32 quantile steps of at most 8 dB, plus 1e-5 dB).
    details = []
    quantiles = (-42.0, -35.0, -30.0, -27.5, -26.0) + tuple(-25.0 + 0.9 * k for k in range(26)) + (2.0, 10.0)
    moved = kept = False
    wide = lambda r, block, i: r.choice((90.0, 300.0, 1700.0))       # noqa: E731 (MIDI 42, 63, 93)
    near = lambda r, block, i: 220.0 if block == 0 and i < 9 else 311.0   # noqa: E731 (MIDI 57, then 63)
    band = (60.0, 70.5)
    for cal, reg_band, pitch in ((None, None, wide), (quantiles, None, wide), (quantiles, band, wide),
                                 (quantiles, band, near)):
        r = rng(71)
        lo, hi = (55.0, 79.0) if reg_band is None else (43.0, 91.0)     # 4 octaves: most R visible past the fold
        rules = Rules(hold_frames=3, gate_frames=2, auto_frames=5, ref_db=-20.0, harmonics=3, noise=2, hop=8,
                      lo_midi=lo, hi_midi=hi, calibration=cal, cal_prior_frames=3.0, cal_frames=6,
                      pitch_band=reg_band, reg_margin=0.5)
        ld_tol = 1e-6 if cal is None else 1e-5 * 32 * 8 + 1e-5
        state_ref = reference_state(rules)
        state = initial_state(dev, rules)
        knobs = dev.tensor([2.0, -3.0, -1.0])
        notes = []
        for block, (F, last) in enumerate(((19, -1.0), (17, 32.0))):
            fc, ld = [], []
            for i in range(F):
                breath = reg_band is None and block == 0 and i < 7     # loud, unvoiced: the take's start
                voiced = ((i % 6) < 4 and not breath) if reg_band is None else (i % 9) < 5
                fc += [pitch(r, block, i) * r.uniform(0.97, 1.03), r.uniform(0.6, 1.0) if voiced
                       else r.uniform(0.0, 0.4)]
                ld.append((-20.0 if breath else r.choice([-90.0, -40.0, -20.0, -5.0, 25.0])) + r.uniform(-3, 3))
            if reg_band is not None and block == 0:
                ld[0] = -60.0
            audio = rand(r, F * rules.hop, -0.9, 0.9)
            measured = [v + r.uniform(-20, 5) for v in ld]
            kn = [2.0, -3.0, last]
            dev.write(knobs, _f32(kn))
            want = reference(fc, ld, audio, measured, kn, state_ref, rules, notes)
            fc_t, ld_t = dev.tensor(fc, (F, 2)), dev.tensor(ld)
            dec_f0, dec_ld, gates, aux = tone_controls(fc_t, ld_t, knobs, state, rules)
            out = tone_level(dev.tensor(audio), dev.tensor(measured), ld_t, fc_t, aux, knobs, state, rules)
            what = "register" if reg_band is not None else "calibrated" if cal else "mean shift"
            for name, t, w, tol in (("decoder f0", dec_f0, want[0], 1e-6),
                                    ("decoder loudness", dec_ld, want[1], ld_tol),
                                    ("gates", gates, want[2], 1e-6), ("level", out, want[3], 4e-6)):
                details.append(assert_close(f"tone_controls ({what}) block {block} {name}", await t.read(), w,
                                            rtol=tol, atol=tol))
        if reg_band is not None:
            margin = min(_register_margin(m, before, k > 0, band, rules.reg_margin)
                         for k, (_, m, before, _) in enumerate(notes))
            moved |= len({R for *_, R in notes}) > 1
            kept |= any(R != register_shift(m, before, False, band, 0.0) for _, m, before, R in notes)
            if len(notes) < 4 or margin < 0.05:
                raise AssertionError(f"tone_controls check: the register inputs must start several notes, clear "
                                     f"of rounding and hysteresis boundaries; got {notes}")
        details.append(assert_close(f"tone_controls ({what}) state", await state.read(), state_ref,
                                    rtol=max(4e-6, ld_tol), atol=max(4e-6, ld_tol)))
    if not (moved and kept):
        raise AssertionError("tone_controls check: the register inputs must move R and hold it by the hysteresis")
    return details[-1]


def _register_margin(m, before, chosen, band, margin):
    """Semitones between a register decision's mean m and the nearest boundary of
    register_shift's rule (where lift or drop change, the hysteresis's edges, and a
    tie between the two sides of a band narrower than an octave)."""
    lo, hi = band
    edges = [abs(v - 12.0 * round(v / 12.0)) for v in (lo - m, hi - m)]
    if chosen:
        at = m + 12.0 * before
        edges += [abs(at - (lo - 12.0 * margin)), abs(at - (hi + 12.0 * margin))]
    drop = math.floor((hi - m) / 12.0)
    if math.ceil((lo - m) / 12.0) > drop:
        edges.append(abs((lo - (m + 12.0 * drop)) - (m + 12.0 * (drop + 1) - hi)) / 2.0)
    return min(edges)


def _f32(values):
    return array.array("f", values).tobytes()
