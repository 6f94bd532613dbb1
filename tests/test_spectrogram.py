"""pycore.ops.spectrogram.add_noise with a per-bin scale: the noise of each column has
the standard deviation scale * bin_std[column] (against the sampling error of a normal's
standard deviation), none where bin_std is 0, and its mean is 0; in the log domain it
raises the mean power exp(2 x) by exp(2 sigma^2) (the lognormal mean, which is why a
model's mean prediction alone sounds quieter than the frames it predicts). add_noise and
feed_back (scheduled sampling's mix) equal their definitions, computed in float64 from
the kernel header's hash; feed_back replaces frames at the rate it is given."""

import numpy as np
import pytest

from pycore.ops.spectrogram import add_noise, feed_back
from spectrogram_reference import feed_back_reference, uniform01

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
        u1, u2 = uniform01(seed, k, 0x9E3779B9), uniform01(seed, k, 0x85EBCA6B)
        want.flat[i] += scale * bin_std[i % P] * np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)
    # float32 log, sqrt and cos (arguments up to 2 pi) against float64: reached 9e-7 absolute
    np.testing.assert_allclose(z.numpy(), want, rtol=1e-5, atol=1e-5)


def test_feed_back_equals_its_definition(dev):
    """Scheduled sampling's mix against the kernel header's definition in float64: frame
    (s >= 1, b) becomes pred[s - 1, b] + scale * bin_std * N(0, 1) where the hash of (seed,
    count * S * B + s * B + b) is below the threshold, and keeps its value elsewhere."""
    S, B, F, scale, seed, count = 7, 3, 5, 1.0, 0xFEED, 4
    rng = np.random.default_rng(8)
    z0, pred = (rng.standard_normal((S, B, F)).astype(np.float32) for _ in range(2))
    bin_std = np.array([0.3, 1.0, 0.0, 0.7, 2.0], np.float32)
    for threshold in (0, 2 ** 31, 0xFFFFFFFF):
        z = dev.tensor(z0)
        feed_back(z, dev.tensor(pred), dev.tensor(bin_std), dev.tensor([count, threshold], (2,), dtype="u32"),
                  scale, seed)
        want, replaced = feed_back_reference(z0, pred, bin_std, count, threshold, scale, seed)
        got = z.numpy()
        assert not replaced[0].any() and (threshold == 0) == (not replaced.any())
        assert threshold < 2 ** 32 - 1 or replaced[1:].all()
        np.testing.assert_array_equal(got[~replaced], z0[~replaced])   # untouched frames: bit for bit
        # float32 log, sqrt, cos and one add against float64: as add_noise's bar
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_feed_back_replaces_at_its_rate(dev):
    """Over 64 x 64 frames the replaced fraction is the threshold's probability (binomial
    standard error sqrt(q (1 - q) / n) = 0.0068 at q = 0.3: within 5 of them)."""
    S, B, F, q = 65, 64, 4, 0.3
    z0 = np.zeros((S, B, F), np.float32)
    pred = np.ones((S, B, F), np.float32)
    z = dev.tensor(z0)
    feed_back(z, dev.tensor(pred), dev.tensor(np.zeros(F, np.float32)),
              dev.tensor([9, round(q * 2 ** 32)], (2,), dtype="u32"), 1.0, 5)
    got = z.numpy()
    assert np.all(got[0] == 0)
    frac = (got[1:] == 1.0).all(axis=2).mean()
    assert np.all((got[1:] == 0).all(axis=2) | (got[1:] == 1).all(axis=2))
    assert abs(frac - q) < 5 * np.sqrt(q * (1 - q) / ((S - 1) * B))
