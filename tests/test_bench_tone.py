"""The pitch-rate measurement of `stemtone bench tone` (pycore.cli.bench.tone): lower_rate
keeps the analysed frames exactly, interpolates in cents between them, and octave_jumps
counts the frames an octave off their neighbours."""

import numpy as np

from pycore.cli.bench.tone import cents, lower_rate, octave_jumps


def glide(n=101):
    """A glide linear in cents (220 Hz up an octave) with a confidence ramp."""
    return 220.0 * 2 ** (np.arange(n) / (n - 1)), np.linspace(0.2, 0.9, n)


def test_lower_rate_keeps_the_analysed_frames_and_is_exact_on_a_linear_glide():
    f0, conf = glide()
    for step in (1, 2, 4, 5):
        g, gc = lower_rate(f0, conf, step)
        assert np.array_equal(g[::step], 10.0 * 2 ** (cents(f0[::step]) / 1200))
        # linear in cents and in confidence: interpolation reproduces them to float64 rounding
        np.testing.assert_allclose(cents(g), cents(f0), atol=1e-9)
        np.testing.assert_allclose(gc, conf, atol=1e-12)


def test_lower_rate_interpolates_in_cents_not_hz():
    f0 = np.array([100.0, 300.0, 400.0])
    g, _ = lower_rate(f0, np.ones(3), 2)
    assert abs(g[1] - 200.0) < 1e-9          # geometric mean of 100 and 400, not 250 (Hz) nor 300 (dropped)


def test_octave_jumps_counts_frames_an_octave_off():
    f0, conf = glide(60)
    assert octave_jumps(f0, conf * 0 + 1) == 0
    f0[30] *= 2                               # one frame an octave up
    f0[40] *= 1.25                            # a major third: not an octave error
    assert octave_jumps(f0, np.ones(60)) == 1
    assert octave_jumps(f0, np.where(np.arange(60) == 30, 0.1, 1.0)) == 0   # unvoiced: not counted


def test_kernel_profile_accounts_for_every_step_of_the_block_plan(dev):
    """`stemtone bench tone --kernels`: one row per kernel of the 320-sample block plan, whose
    dispatch counts add up to the plan's, then the sum over the steps and the whole plan;
    every figure a CPU time (counts are asserted, times only for being measured)."""
    import re

    from pycore.cli.bench.tone import kernel_profile
    from pycore.tone import load_tone_model

    rows = kernel_profile(load_tone_model(dev, "violin"), block=320, reps=1, warm_seconds=0.5)
    *kernels, total, whole = rows
    steps = int(re.fullmatch(r"sum of the (\d+) steps alone", total["name"]).group(1))
    counts = [int(re.fullmatch(r"[a-z_0-9]+:[a-z_0-9]+ x (\d+)", r["name"]).group(1)) for r in kernels]
    assert sum(counts) == steps and steps >= 30
    assert {"tone_controls:controls x 1", "tone_level:level x 1", "rnn:gru_step x 5"} <= {r["name"] for r in kernels}
    assert all(r["unit"] == "CPU ms per block" for r in rows)
    assert abs(total["ours"] - sum(r["ours"] for r in kernels)) < 1e-9 and whole["name"] == "the whole plan in one submit"
