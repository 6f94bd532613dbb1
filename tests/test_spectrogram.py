"""pycore.ops.spectrogram.add_noise with a per-bin scale: the noise of each column has
the standard deviation scale * bin_std[column] (against the sampling error of a normal's
standard deviation), none where bin_std is 0, and its mean is 0; in the log domain it
raises the mean power exp(2 x) by exp(2 sigma^2) (the lognormal mean, which is why a
model's mean prediction alone sounds quieter than the frames it predicts)."""

import numpy as np
import pytest

from pycore.ops.spectrogram import add_noise

N, P = 4000, 7


def test_noise_std_per_bin(dev):
    bin_std = np.array([0.0, 0.1, 0.25, 0.5, 1.0, 0.3, 2.0], np.float32)
    z = dev.tensor(np.full((N, P), 1.5, np.float32))
    add_noise(z, 0.8, seed=11, bin_std=dev.tensor(bin_std))
    d = z.numpy() - 1.5
    want = 0.8 * bin_std
    assert np.all(d[:, 0] == 0)
    got = d[:, 1:].std(axis=0)
    # a normal's sample std has a relative standard error 1 / sqrt(2 N) = 1.1%: 5 of them
    np.testing.assert_allclose(got, want[1:], rtol=5 / np.sqrt(2 * N))
    assert np.all(np.abs(d[:, 1:].mean(axis=0)) < 5 * want[1:] / np.sqrt(N))
    sigma = want[3]     # 0.4 in log-magnitude: power exp(2 x) rises by exp(2 sigma^2)
    ratio = np.exp(2 * d[:, 3]).mean()
    assert ratio == pytest.approx(np.exp(2 * sigma ** 2), rel=0.05)


def test_bin_std_must_divide_the_size(dev):
    z = dev.tensor(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="bin_std"):
        add_noise(z, 1.0, bin_std=dev.tensor(np.ones(4, np.float32)))


def _pcg(v):
    m = 0xFFFFFFFF
    state = (v * 747796405 + 2891336453) & m
    word = (((state >> ((state >> 28) + 4)) ^ state) * 277803737) & m
    return ((word >> 22) ^ word) & m


def _uniform01(seed, i, salt):
    return (float(_pcg((_pcg(seed ^ salt) + i) & 0xFFFFFFFF) >> 8) + 1.0) / 16777216.0


def test_add_noise_equals_its_definition(dev):
    """Each draw against the kernel header's definition, computed in float64: Box-Muller of
    the PCG hash of (seed, offset + count * count_step + i), times scale * bin_std[i % P]."""
    rows, P, scale, seed, offset, count, step = 5, 6, 0.7, 1234, 99, 3, 17
    bin_std = np.array([0.2, 1.0, 0.0, 0.5, 3.0, 0.05], np.float32)
    base = np.random.default_rng(3).standard_normal((rows, P)).astype(np.float32)
    z = dev.tensor(base)
    add_noise(z, scale, seed, offset, count=dev.tensor([count], (1,), dtype="u32"), count_step=step,
              bin_std=dev.tensor(bin_std))
    want = base.astype(np.float64).copy()
    for i in range(rows * P):
        k = offset + count * step + i
        u1, u2 = _uniform01(seed, k, 0x9E3779B9), _uniform01(seed, k, 0x85EBCA6B)
        want.flat[i] += scale * bin_std[i % P] * np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)
    # float32 log, sqrt and cos (arguments up to 2 pi) against float64: reached 9e-7 absolute
    np.testing.assert_allclose(z.numpy(), want, rtol=1e-5, atol=1e-5)
