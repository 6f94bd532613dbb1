"""cumsum and phase_cumsum (kernels/scan.wgsl) against float64 numpy."""

import asyncio

import numpy as np
import pytest

from pycore.ops import scan
from pycore.ops.scan import cumsum, cumsum_error_bound, phase_cumsum, vibrato_increments
from pycore.gpu.selfcheck import CHECKS

U = 2.0**-24  # float32 unit roundoff


@pytest.fixture(params=sorted(scan.CONFIGS))
def config(request, monkeypatch):
    """Run a test with both the CPU-driver and the GPU (WG, ITEMS) kernel variants."""
    monkeypatch.setattr(scan, "scan_config", lambda dev: scan.CONFIGS[request.param])
    return request.param


def circular(a, b):
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) % 1.0
    return np.minimum(d, 1.0 - d)


def check_cumsum(dev, x, axis):
    got = cumsum(dev.tensor(x), axis).numpy()
    want = np.cumsum(x.astype(np.float64), axis=axis)
    # guaranteed float32 bound: each input passes through at most `bound` adds
    bound = cumsum_error_bound(dev, x.shape[axis]) * U * np.cumsum(np.abs(x.astype(np.float64)), axis=axis)
    assert got.shape == x.shape
    err = np.abs(got - want)
    assert np.all(err <= bound), f"max err {err.max()}, worst excess {(err - bound).max()}"
    return err


@pytest.mark.parametrize("shape,axis", [
    ((1,), 0), ((7,), -1), ((2048,), 0), ((2049,), 0), ((5000,), 0),   # block edges
    ((3, 37, 5), 1), ((4, 3, 7), 0), ((3000, 3), 0),                     # strided axes
    ((2, 4500), -1), ((5, 1, 9), 1), ((2, 3, 4100), 2),
])
def test_cumsum_matches_numpy(dev, rng, config, shape, axis):
    check_cumsum(dev, rng.standard_normal(shape).astype(np.float32), axis)


def test_cumsum_three_levels(dev, rng):
    # 4.5 M elements: block sums of block sums (three scan levels, BLOCK = 2048 in both configs)
    x = rng.uniform(-1, 1, 4_500_001).astype(np.float32)
    err = check_cumsum(dev, x, 0)
    # the typical error is far below the guaranteed bound (errors of a tree sum partly cancel)
    assert err.max() < 1e-3 * np.abs(np.cumsum(x, dtype=np.float64)).max() + 1e-3


def test_cumsum_empty(dev):
    out = cumsum(dev.empty((0, 5)), 0)
    assert out.shape == (0, 5)


def test_phase_vibrato_long_track(dev):
    """3 M samples (62 s at 48 kHz) of a 100..2000 Hz vibrato vs float64 numpy."""
    sr, n = 48000, 3_000_000
    inc = vibrato_increments(0, n, sr)
    phase, state = phase_cumsum(dev.tensor(inc))
    got = phase.numpy()
    ref = np.cumsum(inc, dtype=np.float64) % 1.0
    drift = circular(got, ref).max()
    naive = circular(np.cumsum(inc, dtype=np.float32) % 1.0, ref).max()
    # fixed-point sums are exact; rounding a phase in [0, 1) to float32 costs <= 2^-24 cycles
    # (<= 1 ulp for a u32 -> f32 conversion that may round either way: 2^-23)
    assert drift <= 2.0**-23, drift
    assert drift < 1e-3
    assert np.all((got >= 0) & (got < 1))
    assert naive > 1e-2 and naive > 1e4 * drift, (naive, drift)  # what float32 alone would do
    assert state.shape == (1,) and state.numpy()[0] == got[-1]


def test_phase_chunks_carry_state(dev, config):
    """Streaming: chunks with the carried state match one pass and the reference."""
    sr = 48000
    inc = vibrato_increments(1000, 30_001, sr)
    ref = np.cumsum(inc, dtype=np.float64) % 1.0
    whole, _ = phase_cumsum(dev.tensor(inc))
    state, parts = None, []
    for a, b in ((0, 7), (7, 2048), (2048, 20_000), (20_000, 30_001)):
        phase, state = phase_cumsum(dev.tensor(inc[a:b]), initial=state)
        parts.append(phase.numpy())
    chunked = np.concatenate(parts)
    # each chunk boundary adds the float32 rounding of the state (<= 2^-24 cycles)
    assert circular(chunked, ref).max() <= 2.0**-23 + 4 * 2.0**-24
    assert circular(chunked, whole.numpy()).max() <= 4 * 2.0**-23
    assert state.numpy()[0] == chunked[-1]


@pytest.mark.parametrize("shape,axis", [((3, 5000), -1), ((5000, 3), 0), ((2, 300, 4), 1)])
def test_phase_batched_axes_initial(dev, rng, config, shape, axis):
    # negative increments, increments of several cycles, and a per-line initial phase
    inc = rng.uniform(-3.5, 3.5, shape).astype(np.float32)
    init_shape = scan.phase_state_shape(shape, axis)
    init = rng.uniform(0, 1, init_shape).astype(np.float32)
    phase, state = phase_cumsum(dev.tensor(inc), axis=axis, initial=dev.tensor(init))
    got = phase.numpy()
    ref = (init.astype(np.float64) + np.cumsum(inc, axis=axis, dtype=np.float64)) % 1.0
    assert circular(got, ref).max() <= 2.0**-23
    assert state.shape == init_shape
    np.testing.assert_array_equal(state.numpy(), np.take(got, [-1], axis=axis))


def test_phase_exact_small_values(dev):
    # 2^-30 cycles per sample: far below float32 resolution near 1, summed exactly
    inc = np.full(1 << 20, 2.0**-30, np.float32)
    got = phase_cumsum(dev.tensor(inc))[0].numpy()
    assert got[-1] == np.float32(2.0**-10)


def test_validation(dev):
    x = dev.tensor(np.zeros((4, 6), np.float32))
    with pytest.raises(ValueError, match="cumsum"):
        cumsum(dev.tensor(np.zeros(4, np.int32), dtype="i32"))
    with pytest.raises(ValueError, match="cumsum.*axis"):
        cumsum(x, axis=2)
    with pytest.raises(ValueError, match="phase_cumsum.*dtype"):
        phase_cumsum(dev.tensor(np.zeros(4, np.uint32), dtype="u32"))
    with pytest.raises(ValueError, match=r"phase_cumsum.*\(4, 1\)"):
        phase_cumsum(x, initial=dev.tensor(np.zeros(4, np.float32)))
    with pytest.raises(ValueError, match="phase_cumsum.*dtype"):
        phase_cumsum(x, initial=dev.tensor(np.zeros((4, 1), np.int32), dtype="i32"))
    with pytest.raises(ValueError, match="phase_cumsum.*empty"):
        phase_cumsum(dev.empty((3, 0)))


@pytest.mark.parametrize("name", ["cumsum", "phase_cumsum"])
def test_selfcheck(dev, name):
    assert asyncio.run(CHECKS[name](dev))
