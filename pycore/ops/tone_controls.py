"""The tone engine's control logic and level stage on the GPU (kernels/tone_controls.wgsl,
kernels/tone_level.wgsl), with their state in a GPU buffer, so that a tone block is one
recorded plan with one readback (pycore.tone.stream; the rules are described there).

    rules = Rules(voiced=0.5, silence_db=-70.0, ...)            # the engine's constants
    state = initial_state(dev, rules)                           # [STATE] on the GPU
    dec_f0, dec_ld, gates, aux = tone_controls(fc, ld, knobs, state, rules)
    ... decoder(dec_f0, dec_ld), times gates, synthesizer -> audio, output loudness
    out = tone_level(audio, measured, ld, fc, aux, knobs, state, rules)
        # [F * hop audio, F f0, F confidence, F loudness]

fc [F, 2] (f0 Hz, confidence) and ld [F] (input loudness dB) are the block's features;
knobs [3] = (2 ** octave, loudness trim dB, the take's last input frame or -1), the
caller's live settings; state (STATE floats): held f0, unvoiced run, running mean of the
voiced loudness and its count, harmonic and output gates, next frame index, level gain
(dB), the input loudness of the last LAG frames. Both kernels update state in place.

`reference` is the same logic in pure Python (float64), the check for the diagnostics
page and the tests.
"""

from __future__ import annotations

import array
import math
from dataclasses import dataclass

from ..gpu.runtime import Tensor
from ..gpu.selfcheck import assert_close, check, rand, rng
from . import expect, expect_dtype, same_device

STATE = 12          # floats of state
LAG = 4             # input-loudness frames the level stage looks back (kernels/tone_level.wgsl)
WG = 64


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

    @property
    def width(self) -> int:
        return 2 + self.harmonics + self.noise


def initial_state(dev, rules: Rules) -> Tensor:
    """The state before a take's first frame: f0 held at the middle of the range, no
    note, no voiced loudness yet, gates closed, frame 0, gain 0 dB, silence (-80 dB)
    before the input."""
    return dev.tensor(reference_state(rules), (STATE,))


def reference_state(rules: Rules) -> list:
    mid = 440.0 * 2.0 ** (((rules.lo_midi + rules.hi_midi) / 2 - 69.0) / 12.0)
    return [mid, float(rules.hold_frames), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0] + [-80.0] * LAG


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
    aux [F, 3]) for one block; advances state (see the module docstring)."""
    op = "tone_controls"
    F = _check_inputs(op, fc, ld, knobs, state)
    dev = fc.dev
    dec_f0, dec_ld = dev.empty((F,)), dev.empty((F,))
    gates, aux = dev.empty((F, rules.width)), dev.empty((F, 3))
    dev.run(dev.kernel("tone_controls", "controls", consts={"WG": WG}), 1,
            fc=fc, ld=ld, knobs=knobs, st=state, dec_f0=dec_f0, dec_ld=dec_ld, gates=gates, aux=aux,
            frames=F, harmonics=rules.harmonics, noise=rules.noise, hold=rules.hold_frames,
            has_ref=int(rules.ref_db is not None), voiced=rules.voiced, silence=rules.silence_db,
            step=1.0 / rules.gate_frames, auto_frames=float(rules.auto_frames), lo=rules.lo_midi,
            hi=rules.hi_midi, ref_db=rules.ref_db if rules.ref_db is not None else 0.0)
    return dec_f0, dec_ld, gates, aux


def tone_level(audio, measured, ld, fc, aux, knobs, state, rules: Rules):
    """The level-corrected audio and the block's features in one buffer
    [F * hop + 3 F] (audio, f0, confidence, loudness); advances state."""
    op = "tone_level"
    F = _check_inputs(op, fc, ld, knobs, state)
    for name, t, n in (("audio", audio, F * rules.hop), ("measured", measured, F), ("aux", aux, 3 * F)):
        expect(op, isinstance(t, Tensor) and t.dtype == "f32" and t.size == n,
               f"{name} must be an f32 tensor of {n} values", t)
    dev = fc.dev
    out = dev.empty((F * rules.hop + 3 * F,))
    dev.run(dev.kernel("tone_level", "level", consts={"WG": WG}), 1,
            audio=audio, measured=measured, ld=ld, fc=fc, aux=aux, knobs=knobs, st=state, out=out,
            frames=F, hop=rules.hop, rate=1.0 - math.exp(-1.0 / rules.level_frames),
            max_db=rules.level_max_db, headroom=rules.headroom_db, silence=rules.silence_db,
            peak=rules.level_peak)
    return out


# ---------------------------------------------------------------- pure-Python reference


def _fold(f0, lo, hi):
    midi = 69.0 + 12.0 * math.log2(f0 / 440.0)
    if midi < lo:
        return f0 * 2.0 ** math.ceil((lo - midi) / 12.0)
    if midi > hi:
        return f0 / 2.0 ** math.ceil((midi - hi) / 12.0)
    return f0


def reference(fc, ld, audio, measured, knobs, state, rules: Rules):
    """Both stages on host lists, float64: (dec_f0, dec_ld, gates, out); state (a list
    of STATE floats) is updated in place. audio and measured are what the decoder and
    synthesizer made of dec_f0 / dec_ld / gates (the check feeds arbitrary values)."""
    F, K, M = len(ld), rules.harmonics, rules.noise
    shift, trim, last = knobs
    hold_f0, unvoiced, sung_db, sung, harm, outg, first = state[:7]
    step = 1.0 / rules.gate_frames
    dec_f0, dec_ld, gates, playing, shifts = [], [], [], [], []
    for i in range(F):
        f0, conf, loud_in = fc[2 * i], fc[2 * i + 1], ld[i]
        if conf >= rules.voiced and math.isfinite(f0) and f0 > 0:
            hold_f0, unvoiced = _fold(f0 * shift, rules.lo_midi, rules.hi_midi), 0
            if loud_in > -50:
                sung += 1
                sung_db += (loud_in - sung_db) / min(sung, rules.auto_frames)
        else:
            unvoiced = min(unvoiced + 1, rules.hold_frames)
        auto = rules.ref_db - sung_db if rules.ref_db is not None and sung else 0.0
        closing = last >= 0 and first + i > last
        want_h = 1.0 if unvoiced < rules.hold_frames and not closing else 0.0
        want_o = 1.0 if loud_in > rules.silence_db and not closing else 0.0
        harm += max(-step, min(step, want_h - harm))
        outg += max(-step, min(step, want_o - outg))
        if closing:
            harm = outg = 0.0
        dec_f0.append(hold_f0)
        dec_ld.append(max(-80.0, loud_in + trim + auto))
        playing.append(harm * outg)
        shifts.append(auto)
        gates += [1.0, outg * harm] + [1.0] * K + [outg] * M
    state[:7] = [hold_f0, unvoiced, sung_db, sung, harm, outg, first + F]

    hop, gain = rules.hop, state[7]
    targets = list(state[8:8 + LAG]) + list(ld)
    rate = 1.0 - math.exp(-1.0 / rules.level_frames)
    out = list(audio)
    for k in range(F):
        target, got = targets[k] + trim - rules.headroom_db, measured[k]
        before = gain
        if playing[k] >= 1.0 and target > rules.silence_db + 20 and got > rules.silence_db:
            undo = -shifts[k]
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
    state[7] = gain
    state[8:8 + LAG] = targets[F:F + LAG]
    out += [fc[2 * i] for i in range(F)] + [fc[2 * i + 1] for i in range(F)] + list(ld)
    return dec_f0, dec_ld, gates, out


@check("tone_controls")
async def _check_tone_controls(dev):
    # Two blocks through both kernels against the float64 reference: voiced and unvoiced
    # runs longer than the hold, octave folds both ways, silence, the auto-adjust, the
    # level gain, its peak limit, and the take's end. Inputs keep clear of thresholds so
    # float32 rounding cannot flip a decision; the bars are float32 rounding of a few
    # chained operations (gains through exp2/log2: a few ulps of 1e-6 relative).
    r = rng(71)
    rules = Rules(hold_frames=3, gate_frames=2, auto_frames=5, ref_db=-20.0, harmonics=3, noise=2, hop=8,
                  lo_midi=55.0, hi_midi=79.0)
    state_ref = reference_state(rules)
    state = initial_state(dev, rules)
    knobs = dev.tensor([2.0, -3.0, -1.0])
    details = []
    for block, (F, last) in enumerate(((9, -1.0), (7, 12.0))):
        fc, ld = [], []
        for i in range(F):
            voiced = (i % 6) < 3
            fc += [r.choice([90.0, 300.0, 1700.0]) * r.uniform(0.97, 1.03), r.uniform(0.6, 1.0) if voiced
                   else r.uniform(0.0, 0.4)]
            ld.append(r.choice([-90.0, -40.0, -20.0]) + r.uniform(-3, 3))
        audio = rand(r, F * rules.hop, -0.9, 0.9)
        measured = [v + r.uniform(-20, 5) for v in ld]
        kn = [2.0, -3.0, last]
        dev.write(knobs, _f32(kn))
        want = reference(fc, ld, audio, measured, kn, state_ref, rules)
        fc_t, ld_t = dev.tensor(fc, (F, 2)), dev.tensor(ld)
        dec_f0, dec_ld, gates, aux = tone_controls(fc_t, ld_t, knobs, state, rules)
        out = tone_level(dev.tensor(audio), dev.tensor(measured), ld_t, fc_t, aux, knobs, state, rules)
        for what, t, w, tol in (("decoder f0", dec_f0, want[0], 1e-6), ("decoder loudness", dec_ld, want[1], 1e-6),
                                ("gates", gates, want[2], 1e-6), ("level", out, want[3], 4e-6)):
            details.append(assert_close(f"tone_controls block {block} {what}", await t.read(), w, rtol=tol,
                                        atol=tol))
    details.append(assert_close("tone_controls state", await state.read(), state_ref, rtol=4e-6, atol=4e-6))
    return details[-1]


def _f32(values):
    return array.array("f", values).tobytes()
