"""pycore.ops.tone_controls (the tone engine's control logic and level stage on the GPU)
against its float64 pure-Python reference, its input calibration against analytic and
batch quantile maps, its register shift against hand-computed octaves, and the GPU noise
counter of pycore.ops.ddsp that lets a recorded plan move through the synthesizer's
noise."""

import asyncio
from statistics import NormalDist

import numpy as np
import pytest

from pycore.gpu.selfcheck import load_all
from pycore.ops import ddsp as ops
from pycore.ops.tone_controls import (CAL_POINTS, LAG, REG, Rules, initial_state, register_shift, tone_controls,
                                      tone_level)
from pycore.tone.calibration import pitch_band
from pycore.tone.controls import REGISTER_MARGIN


def test_controls_and_level_match_the_reference(dev):
    assert "max abs err" in asyncio.run(load_all()["tone_controls"](dev))


@pytest.mark.parametrize("start,n", [(0, 64), (65500, 100), (2**32 - 10, 70000)])
def test_noise_counter_gives_the_same_samples_as_the_int_index(dev, start, n):
    """Noise after advancing a GPU counter by n equals the noise at index start + n given
    as an int (bit-exact: integer hashing), across the counter's 2**16 and 32-bit carries."""
    irs = dev.tensor(np.zeros((3, 128), np.float32))
    counter = ops.noise_advance(ops.noise_counter(dev, start), n)
    got = asyncio.run(ops.noise_frames(irs, 64, 256, 0, seed=5, counter=counter).read())
    want = asyncio.run(ops.noise_frames(irs, 64, 256, start + n, seed=5).read())
    assert np.array_equal(got, want)


def test_bad_inputs_name_the_problem(dev):
    rules = Rules()
    fc, ld = dev.tensor(np.zeros((4, 2), np.float32)), dev.tensor(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="tone_controls.*same F"):
        tone_controls(fc, ld, dev.tensor([1.0, 0.0, -1.0]), initial_state(dev, rules), rules)
    with pytest.raises(ValueError, match="noise_counter"):
        ops.noise_counter(dev, 2**40)


def test_level_follows_the_input_between_notes_and_holds_in_silence(dev):
    """The level stage moves its gain wherever the output sounds (output gate open),
    also through unvoiced frames where no note plays (breaths, consonants: the
    instrument's noise), and holds it while the output is gated off. One take in three
    blocks at a steady input loudness: 30 voiced frames with the output measured 10 dB
    under the target (the gain rises towards +10 dB), 40 unvoiced frames (past the hold:
    harmonics gated, noise playing) measured 4 dB over it (towards -4 dB; holding the
    gain through them, as the stage did while no note played, would leave it near +1
    dB), then 30 frames of silence (gate closed: the gain holds). The gain (state[7])
    after each block against the one-pole's closed form (float32 exp2/log2: a few ulps)."""
    import math

    rules = Rules(hold_frames=5, gate_frames=2, auto_frames=5, ref_db=None, harmonics=3, noise=2, hop=8,
                  headroom_db=6.0, level_frames=4, level_max_db=12.0)
    keep = math.exp(-1.0 / rules.level_frames)                       # 1 - rate
    gains = []
    state, knobs = initial_state(dev, rules), dev.tensor([1.0, 0.0, -1.0])
    for conf, loud, over, n in ((0.9, -10.0, -10.0, 30), (0.1, -10.0, 4.0, 40), (0.1, -90.0, 4.0, 30)):
        fc_t = dev.tensor(np.tile(np.float32([300.0, conf]), (n, 1)))
        ld = np.full(n, loud, np.float32)
        ld_t = dev.tensor(ld)
        aux = tone_controls(fc_t, ld_t, knobs, state, rules)[3]
        audio = dev.tensor(np.full(n * rules.hop, 0.01, np.float32))
        measured = dev.tensor(ld - rules.headroom_db + over)
        tone_level(audio, measured, ld_t, fc_t, aux, knobs, state, rules)
        gains.append(float(asyncio.run(state.read())[7]))
    # the target lags LAG frames behind the input (-80 dB before the take: no adaptation)
    g1 = 10.0 * (1 - keep ** (30 - LAG))
    g2 = -4.0 + (g1 + 4.0) * keep ** 40
    assert abs(gains[0] - g1) < 1e-4 and abs(gains[1] - g2) < 1e-4, (gains, g1, g2)
    assert gains[2] == gains[1]


def test_level_turns_a_loud_output_down_for_quiet_singing(dev):
    """Quiet singing makes a quiet instrument: a take at -60 dB whose output comes out
    at -30 dB (the calibration lifts a quiet singer into the model's range) pulls the
    gain down towards the target's floor, silence + 20 = -50 dB (the input's -60 minus
    the headroom is below it: the floor keeps the stage from chasing the noise floor),
    as far as the +-12 dB clamp allows. Before the floor the gain held at 0 dB for every
    target at or under -50 dB, and the first notes of a quiet take came out 20 dB over
    the singer (Vocadito clip 14). The LAG frames before the take are silence: the gain
    holds through them. Closed form of the one-pole (float32 exp2/log2: a few ulps)."""
    import math

    rules = Rules(hold_frames=5, gate_frames=2, auto_frames=5, ref_db=None, harmonics=3, noise=2, hop=8,
                  headroom_db=6.0, level_frames=4, level_max_db=12.0)
    keep = math.exp(-1.0 / rules.level_frames)
    state, knobs = initial_state(dev, rules), dev.tensor([1.0, 0.0, -1.0])
    n = 40
    fc_t = dev.tensor(np.tile(np.float32([300.0, 0.9]), (n, 1)))
    ld_t = dev.tensor(np.full(n, -60.0, np.float32))
    aux = tone_controls(fc_t, ld_t, knobs, state, rules)[3]
    audio = dev.tensor(np.full(n * rules.hop, 0.01, np.float32))
    tone_level(audio, dev.tensor(np.full(n, -30.0, np.float32)), ld_t, fc_t, aux, knobs, state, rules)
    gain = float(asyncio.run(state.read())[7])
    want = -12.0 * (1 - keep ** (n - LAG))             # towards max(-66, -50) - (-30) = -20, clamped to -12
    assert abs(gain - want) < 1e-4, (gain, want)


def test_level_moves_against_the_auto_shift_where_it_takes_effect(dev):
    """The auto shift takes effect on the take's first voiced frame, where the decoder's
    input loudness jumps by it: the level stage's gain moves against it there at once,
    by -shift, and only there. A take of 6 unvoiced frames, then 10 voiced frames at
    -40 dB for a model whose level (ref_db) is -10 dB (the running-mean shift: +30 dB
    from the first voiced frame on), then 5 voiced frames at -20 dB (the running mean
    rises, the shift falls). The output is measured under silence, so the one-pole never
    moves: the gain is 0 dB after the unvoiced block, -30 dB after the first voiced one
    and still -30 dB after the last. Before the rule it stayed at 0 dB, and the first
    note of a quiet take came out 15-20 dB over the singer until the stage caught up
    (Vocadito clip 14). Exact in float32 (one subtraction of whole numbers)."""
    rules = Rules(hold_frames=5, gate_frames=2, auto_frames=50, ref_db=-10.0, harmonics=3, noise=2, hop=8)
    state, knobs = initial_state(dev, rules), dev.tensor([1.0, 0.0, -1.0])
    gains = []
    for conf, loud, n in ((0.1, -40.0, 6), (0.9, -40.0, 10), (0.9, -20.0, 5)):
        fc_t = dev.tensor(np.tile(np.float32([300.0, conf]), (n, 1)))
        ld_t = dev.tensor(np.full(n, loud, np.float32))
        aux = tone_controls(fc_t, ld_t, knobs, state, rules)[3]
        audio = dev.tensor(np.full(n * rules.hop, 0.01, np.float32))
        tone_level(audio, dev.tensor(np.full(n, -90.0, np.float32)), ld_t, fc_t, aux, knobs, state, rules)
        gains.append(float(asyncio.run(state.read())[7]))
    assert gains == [0.0, -30.0, -30.0], gains


PROBS = np.linspace(0.0, 1.0, CAL_POINTS)


def _calibrated_run(dev, rules, sung, probe):
    """Feed `sung` as voiced frames (confidence 0.9) block by block, then `probe` as
    unvoiced frames (they do not move the estimate): the decoder loudness of the probe."""
    state, knobs = initial_state(dev, rules), dev.tensor([1.0, 0.0, -1.0])
    for i in range(0, len(sung), 1000):
        ld = np.asarray(sung[i:i + 1000], np.float32)
        fc = np.tile(np.float32([300.0, 0.9]), (len(ld), 1))
        tone_controls(dev.tensor(fc), dev.tensor(ld), knobs, state, rules)
    fc = np.tile(np.float32([300.0, 0.1]), (len(probe), 1))
    return asyncio.run(tone_controls(dev.tensor(fc), dev.tensor(np.float32(probe)), knobs, state, rules)[1].read())


def test_calibration_maps_a_normal_singer_onto_a_uniform_instrument(dev):
    """Quantile mapping with analytic answer: a singer's loudness N(-25, 5) dB mapped onto
    an instrument uniform over [-30, 10] dB is m(l) = -30 + 40 Phi((l + 25) / 5). After
    40,000 voiced frames (memory longer than that: a plain histogram), probed between the
    singer's 5th and 95th percentiles. Bar 0.5 dB: the histogram's CDF has a sampling
    standard deviation of at most 0.5 / sqrt(40000) = 0.0025 (0.1 dB through the slope of
    40 dB), linear interpolation within 1 dB bins and between 1 dB table edges 0.05 dB
    each, the prior's remaining weight 250 / 40250 times a CDF gap below 0.3 (0.07 dB)."""
    r = np.random.default_rng(3)
    rules = Rules(calibration=tuple(np.linspace(-30.0, 10.0, CAL_POINTS)), cal_frames=10**6, cal_prior_frames=250)
    probe = np.linspace(-33.0, -17.0, 17)
    got = _calibrated_run(dev, rules, r.normal(-25.0, 5.0, 40000), probe)
    want = np.array([-30.0 + 40.0 * NormalDist(-25.0, 5.0).cdf(v) for v in probe])
    print(f"\nworst |map - analytic| {np.abs(got - want).max():.3f} dB")
    assert np.abs(got - want).max() < 0.5


def test_calibration_converges_to_the_batch_quantile_map(dev):
    """On a stationary input (a skewed mixture: 70 % N(-18, 3), 30 % N(-34, 4) dB), the
    causal estimate (default memory, 7,500 frames) approaches the batch quantile map of
    Tone Transfer (numpy: the empirical CDF of all the input, then the instrument's
    quantile function) as frames accumulate (a prior of 250 frames: the engine's 2,000
    leave a larger share to the prior at 30,000 frames): onto the violin's shipped quantiles,
    probed where the batch CDF is within 0.1 .. 0.9. After 30,000 frames the worst error
    is below 0.5 dB (the violin's quantile function is steep, up to 35 dB per unit of
    probability here, times the CDF's sampling error over an effective 15,000 frames,
    about 0.004, plus the bins' linear interpolation, below 0.01: 0.5 dB) and below the
    error after 1,000 frames."""
    from pycore.tone import load_tone_model

    q = np.asarray(load_tone_model(dev, "violin").calibration["loudness_db"], np.float64)
    r = np.random.default_rng(5)
    n = 30000
    sung = np.where(r.random(n) < 0.7, r.normal(-18.0, 3.0, n), r.normal(-34.0, 4.0, n)).astype(np.float32)
    probe = np.linspace(-38.0, -14.0, 25)
    rules = Rules(calibration=tuple(float(v) for v in q), cal_prior_frames=250)
    errors = []
    for count in (1000, n):
        batch_cdf = np.searchsorted(np.sort(sung[:count]), probe) / count
        keep = (batch_cdf > 0.1) & (batch_cdf < 0.9)
        want = np.interp(batch_cdf, PROBS, q)
        got = _calibrated_run(dev, rules, sung[:count], probe)
        errors.append(np.abs(got - want)[keep].max())
    print(f"\nworst |causal - batch| after 1,000 frames {errors[0]:.2f} dB, after {n:,} {errors[1]:.2f} dB")
    assert errors[1] < 0.5 and errors[1] < errors[0]


# ---------------------------------------------------------------- the register shift

FLUTE_LIKE = {"loudness_db": tuple(np.linspace(-30.0, 10.0, CAL_POINTS)),
              "midi": tuple(np.linspace(60.0, 93.0, CAL_POINTS))}   # the range [60, 93], band (64.125, 88.875)


def _register_rules(register: bool, margin: float = REGISTER_MARGIN) -> Rules:
    """A flute-like model (MIDI range 60..93, training pitch uniform over it: its central
    register, the quantiles at 1/8 and 7/8, is the band 64.125..88.875) with the engine's
    hold (25 frames), running-mean length (750) and register hysteresis (1/12 octave),
    with or without the register shift (without: the fold alone, the engine before the
    rule)."""
    return Rules(lo_midi=60.0, hi_midi=93.0, calibration=FLUTE_LIKE["loudness_db"],
                 pitch_band=pitch_band(FLUTE_LIKE) if register else None, reg_margin=margin)


def _sing(dev, rules, notes, rest=40):
    """Sing `notes` [(MIDI, frames), ...] at -20 dB; a note of MIDI None is a rest of that
    many unvoiced frames (confidence 0.1). Blocks of at most 1000 frames. Returns (input
    MIDI per frame, NaN where unvoiced; decoder MIDI per frame; the state after each block)."""
    midi = np.concatenate([np.full(n, np.nan if m is None else m, np.float64) for m, n in notes])
    f0 = np.where(np.isnan(midi), 220.0, 440.0 * 2.0 ** ((midi - 69.0) / 12.0)).astype(np.float32)
    conf = np.where(np.isnan(midi), 0.1, 0.9).astype(np.float32)
    state, knobs = initial_state(dev, rules), dev.tensor([1.0, 0.0, -1.0])
    out, states = [], []
    for i in range(0, len(midi), 1000):
        fc = np.stack([f0[i:i + 1000], conf[i:i + 1000]], 1)
        ld = np.full(len(fc), -20.0, np.float32)
        dec_f0 = tone_controls(dev.tensor(fc), dev.tensor(ld), knobs, state, rules)[0]
        out.append(asyncio.run(dec_f0.read()))
        states.append(asyncio.run(state.read()))
    dec = 69.0 + 12.0 * np.log2(np.concatenate(out).astype(np.float64) / 440.0)
    return midi, dec, states


def _octaves(midi, dec):
    """The engine's octave choice on the voiced frames: (decoder - input) / 12, rounded
    (the shift is whole octaves; float32 rounding is far below a semitone)."""
    v = ~np.isnan(midi)
    return np.round((dec[v] - midi[v]) / 12.0).astype(int)


def test_register_moves_a_low_singer_by_whole_octaves_and_keeps_the_contour(dev):
    """A low singer (MIDI 45..52, mean about 48) on a flute-like model (band 64.125 ..
    88.875, range 60..93): R = +2, the smallest shift into the band (48 + 12 = 60 lies
    below it, 48 + 24 = 72 inside), from the first note's first frame on (the take's
    first voiced frame is a note start; its own pitch, 48, is the mean then), so every
    note plays exactly two octaves up (45..52 -> 69..76, inside
    the range: the fold does nothing). Two legato phrases (one note each for the engine:
    no unvoiced run reaches the hold) cross MIDI 48, the old fold's boundary for this
    range (47 folds up two octaves to 71, 48 one octave to 60): without the rule the
    engine's octave choice changes inside the phrase (47 -> 48 plays 71 -> 60, a jump of
    11 semitones down for a sung step of one up); with it, it never does. Exact: R is
    applied as a power of two (float32 ratio within 1e-6, 2e-5 semitones)."""
    phrase = [(48, 50), (47, 50), (45, 50), (47, 50), (48, 50), (50, 50), (52, 50), (50, 50), (48, 50), (47, 50)]
    notes = phrase + [(None, 40)] + phrase
    midi, dec, states = _sing(dev, _register_rules(True), notes)
    k = _octaves(midi, dec)
    assert np.all(k == 2), np.unique(k)
    v = ~np.isnan(midi)
    assert np.abs(dec[v] - midi[v] - 24.0).max() < 1e-3
    assert states[-1][REG + 1] == 2.0
    # the fold alone splits each phrase where it crosses MIDI 48
    midi, dec, _ = _sing(dev, _register_rules(False), notes)
    k = _octaves(midi, dec).reshape(2, 500)                   # the two phrases' voiced frames
    changes = int(np.sum(k[:, 1:] != k[:, :-1]))
    print(f"\noctave changes inside the phrases: fold only {changes}, with the register shift 0")
    assert changes == 6 and set(np.unique(k)) == {1, 2}      # 48 -> 47 -> .. 47 -> 48 .. 48 -> 47 in each


def test_register_changes_only_at_a_note_start(dev):
    """One long legato note (one note for the engine: no rest) starts at MIDI 48 (100
    frames: R = +2, 72 in the band 64.125 .. 88.875) and moves to 68 (1900 frames): the
    running pitch mean (plain over 750 voiced frames, then exponential over 750) goes
    from 48 to 68 - (68 - 65.33) (1 - 1/750)^1250 = 67.50, so the shifted mean 91.50 lies
    past the band's top and its margin (88.875 + 1) in mid-note, but R stays +2 to the
    note's end (68 plays at 92, state R = 2). After a rest of 40 frames (past the hold of
    25) the next note, at 68, starts with R = 0: the mean 67.50 lies inside the band."""
    notes = [(48, 100), (68, 1900), (None, 40), (68, 200)]
    midi, dec, states = _sing(dev, _register_rules(True), notes)
    mean = 68.0 - (68.0 - (100 * 48.0 + 650 * 68.0) / 750) * (1.0 - 1.0 / 750.0) ** 1250
    assert abs(mean - 67.50) < 0.01 and mean + 24.0 > 88.875 + 12.0 * REGISTER_MARGIN + 0.5
    v = ~np.isnan(midi)
    k = _octaves(midi, dec)
    first = np.arange(len(midi))[v] < 2000
    assert np.all(k[first] == 2) and np.all(k[~first] == 0), (np.unique(k[first]), np.unique(k[~first]))
    assert states[1][REG + 1] == 2.0 and states[-1][REG + 1] == 0.0      # after frame 2000: still 2
    assert abs(states[1][REG] - mean) < 1e-3          # the state's mean pitch, float32


def test_register_holds_its_octave_for_a_singer_at_the_bands_edge(dev):
    """A singer alternating notes at MIDI 62.5 and 65 (300 frames each, rests of 30
    frames between them: every note is a note start; a first note at 65) on the
    flute-like model (band 64.125 .. 88.875): the first note lies inside the band and
    takes R = 0 (the singer is not moved); the running mean then settles between 63.5
    and 64.2, dipping below the band's lower edge by up to 0.62 semitone at the 62.5
    notes' starts. With the engine's hysteresis (R changes once m + 12 R lies more than
    1/12 octave outside the band) every note plays as sung; without it (margin 0) the
    first dip (mean 63.75, the third note) moves the singer up an octave, and R stays 1
    from there (the band is wider than an octave: 75.5 .. 76.2 lies well inside it, so
    there is no flipping back)."""
    notes = [(65, 300), (None, 30)]
    for _ in range(6):
        notes += [(62.5, 300), (None, 30), (65, 300), (None, 30)]
    midi, dec, _ = _sing(dev, _register_rules(True), notes)
    k = _octaves(midi, dec)
    assert np.all(k == 0), np.unique(k)
    midi, dec, _ = _sing(dev, _register_rules(True, margin=0.0), notes)
    k = _octaves(midi, dec)
    changes = int(np.sum(k[1:] != k[:-1]))
    print(f"\nregister changes between notes without the margin: {changes}")
    assert changes == 1 and np.all(k[:600] == 0) and np.all(k[600:] == 1), (changes, np.unique(k))


def test_register_shift_rule():
    """register_shift, the float64 rule the kernel mirrors, on hand-worked cases: inside
    the band no shift; below or above it the smallest shift in; a band narrower than an
    octave (60 .. 70.5) where no octave lands inside: the nearer side (71: 70.5 is 0.5
    away, 59 is 1 away, so 0; 71.9: 59.9 is 0.1 away, so -1); the hysteresis keeps a
    chosen R within the margin and chooses again past it."""
    wide, narrow = (64.125, 88.875), (60.0, 70.5)
    assert register_shift(70.0, 0.0, False, wide, 0.0) == 0.0
    assert register_shift(48.0, 0.0, False, wide, 0.0) == 2.0           # 60 below, 72 inside
    assert register_shift(40.0, 0.0, False, wide, 0.0) == 3.0           # 64 below, 76 inside
    assert register_shift(100.0, 0.0, False, wide, 0.0) == -1.0         # 88 inside
    assert register_shift(71.0, 0.0, False, narrow, 0.0) == 0.0
    assert register_shift(71.9, 0.0, False, narrow, 0.0) == -1.0
    assert register_shift(63.5, 0.0, True, wide, 1.0 / 12.0) == 0.0     # 0.625 below: within 1 semitone
    assert register_shift(63.0, 0.0, True, wide, 1.0 / 12.0) == 1.0     # 1.125 below: past it
    assert register_shift(63.5, 0.0, False, wide, 1.0 / 12.0) == 1.0    # the first note: no margin
