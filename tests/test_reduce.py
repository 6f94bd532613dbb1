"""Reductions against float64 numpy.

Tolerances are the float32 error bounds of the kernel's summation order: a value
passes through `depth(n)` roundings (per-invocation runs, then 64-wide trees, one
more pass per factor 1024 of length), so |error| <= depth * 2^-24 * sum|x|. max is
exact. std's error adds (mean error / std)^2 from the two-pass formula.
"""

import asyncio
import math

import numpy as np
import pytest

from pycore.ops import reduce as R
from pycore.gpu.selfcheck import CHECKS

EPS = 2.0 ** -24


def depth(n):
    """Roundings along the longest path of reduce.wgsl's f32 summation of n terms."""
    if n <= R.SMALL:
        return n                        # one invocation adds them in order
    d = 0
    while n > 1:
        d += R.CHUNK // R.WG + 6        # a run of <= 16 terms, then a tree of 64
        n = math.ceil(n / R.CHUNK)
    return d


def sum_bound(x, axis):
    n = x.size if axis is None else x.shape[axis]
    return (depth(n) + 1) * EPS * np.abs(x.astype(np.float64)).sum(axis=axis)


def std_rtol(x, axis):
    """Relative error bound of the two-pass std (see module docstring)."""
    n = x.size if axis is None else x.shape[axis]
    xd = x.astype(np.float64)
    sd = xd.std(axis=axis)
    mean_err = (depth(n) + 1) * EPS * np.abs(xd).mean(axis=axis)
    return (depth(n) + 8) * EPS + (mean_err / sd) ** 2


def dims_of(shape):
    return [None] + list(range(len(shape))) + [-1]


SHAPES = [(7,), (3, 65), (2, 3000), (3000, 3), (2, 3, 4, 5), (4, 1025, 2)]


@pytest.mark.parametrize("shape", SHAPES)
def test_sum_mean_max(dev, rng, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    t = dev.tensor(x)
    xd = x.astype(np.float64)
    for dim in dims_of(shape):
        bound = sum_bound(x, dim)
        n = x.size if dim is None else shape[dim]
        got = R.sum(t, dim=dim).numpy()
        assert got.shape == np.shape(xd.sum(axis=dim))
        assert np.all(np.abs(got - xd.sum(axis=dim)) <= bound), (shape, dim)
        got = R.mean(t, dim=dim).numpy()
        assert np.all(np.abs(got - xd.mean(axis=dim)) <= bound / n + EPS * np.abs(xd.mean(axis=dim))), (shape, dim)
        np.testing.assert_array_equal(R.max(t, dim=dim).numpy(), x.max(axis=dim))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("unbiased", [True, False])
def test_std(dev, rng, shape, unbiased):
    x = (0.5 + 2 * rng.standard_normal(shape)).astype(np.float32)
    t = dev.tensor(x)
    for dim in dims_of(shape):
        got = R.std(t, dim=dim, unbiased=unbiased).numpy()
        want = x.astype(np.float64).std(axis=dim, ddof=int(unbiased))
        np.testing.assert_array_less(np.abs(got - want), std_rtol(x, dim) * want + 1e-30)


def test_keepdim(dev, rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    t = dev.tensor(x)
    for fn in (R.sum, R.mean, R.std, R.max):
        assert fn(t, dim=1, keepdim=True).shape == (3, 1, 5)
        assert fn(t, dim=-1, keepdim=True).shape == (3, 4, 1)
        assert fn(t, keepdim=True).shape == (1, 1, 1)
        assert fn(t).shape == ()
    np.testing.assert_array_equal(R.max(t, dim=1, keepdim=True).numpy(), x.max(axis=1, keepdims=True))


def test_std_large_mean(dev, rng):
    """1e4 + noise: the naive E[x^2] - E[x]^2 would lose everything (ulp(1e8) = 8)."""
    x = (1e4 + rng.standard_normal((3, 10000))).astype(np.float32)
    t = dev.tensor(x)
    for dim in (None, 1):
        got = R.std(t, dim=dim).numpy()
        want = x.astype(np.float64).std(axis=dim, ddof=1)
        rtol = std_rtol(x, dim)
        assert np.all(rtol < 1e-3)         # the bound itself is meaningful here
        np.testing.assert_array_less(np.abs(got - want), rtol * want)
    xs = (1e4 + rng.standard_normal(50)).astype(np.float32)   # short axis: per-invocation path
    got = R.std(dev.tensor(xs)).numpy()
    want = xs.astype(np.float64).std(ddof=1)
    assert abs(got - want) < std_rtol(xs, None) * want


def test_multi_pass(dev, rng):
    """2^20 + 5 elements: three reduce_wg passes (1,048,581 -> 1025 -> 2 -> 1)."""
    x = rng.uniform(0, 1, 2 ** 20 + 5).astype(np.float32)
    t = dev.tensor(x)
    xd = x.astype(np.float64)
    assert abs(R.sum(t).numpy() - xd.sum()) <= sum_bound(x, None)
    assert abs(R.mean(t).numpy() - xd.mean()) <= sum_bound(x, None) / x.size + EPS * xd.mean()
    assert R.max(t).numpy() == x.max()
    got = R.std(t).numpy()
    assert abs(got - xd.std(ddof=1)) < std_rtol(x, None) * xd.std(ddof=1)


def test_max_special_values(dev):
    x = np.array([[-np.inf, -np.inf, -np.inf], [-5.0, -np.inf, -7.0]], np.float32)
    np.testing.assert_array_equal(R.max(dev.tensor(x), dim=1).numpy(), [-np.inf, -5.0])
    long = np.full(3000, -np.inf, np.float32)
    long[1234] = -1e30
    assert R.max(dev.tensor(long)).numpy() == np.float32(-1e30)
    assert R.max(dev.tensor(np.full(3000, -np.inf, np.float32))).numpy() == -np.inf


def test_zero_dim_tensor(dev):
    t = dev.tensor(np.array(2.5, np.float32))
    assert R.sum(t).numpy() == 2.5 and R.max(t).numpy() == 2.5 and R.mean(t).numpy() == 2.5


def test_errors(dev):
    x = dev.tensor(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"sum: dim 2 out of range.*\(2, 3\)"):
        R.sum(x, dim=2)
    with pytest.raises(ValueError, match="mean: dim -3 out of range"):
        R.mean(x, dim=-3)
    with pytest.raises(ValueError, match="max: dim"):
        R.max(x, dim=(0, 1))
    with pytest.raises(ValueError, match="std: needs more than 1"):
        R.std(dev.tensor(np.zeros((3, 1), np.float32)), dim=1)
    with pytest.raises(ValueError, match="sum: cannot reduce dim 1 of size 0"):
        R.sum(dev.empty((2, 0)), dim=1)
    with pytest.raises(ValueError, match="max: cannot reduce an empty tensor"):
        R.max(dev.empty((0,)))
    with pytest.raises(ValueError, match="sum: dtype"):
        R.sum(dev.tensor(np.zeros(3, np.int32), dtype="i32"))


def test_selfcheck(dev):
    asyncio.run(CHECKS["reduce"](dev))
