"""pycore.ops.tone_controls (the tone engine's control logic and level stage on the GPU)
against its float64 pure-Python reference, and the GPU noise counter of pycore.ops.ddsp
that lets a recorded plan move through the synthesizer's noise."""

import asyncio

import numpy as np
import pytest

from pycore.gpu.selfcheck import load_all
from pycore.ops import ddsp as ops
from pycore.ops.tone_controls import Rules, initial_state, tone_controls


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
