"""Activations, GLU and softmax against float64 numpy references.

Tolerances follow from float32 and the accuracy Vulkan/WebGPU allow for exp:
3 + 2|t| ulp for exp(t). Where an op evaluates exp(t) with a large |t| (sigmoid and
gelu far in the negative tail, where the result is tiny), the relative tolerance
grows with |t| accordingly; everywhere else it is a few ulp.
"""

import asyncio
import math

import numpy as np
import pytest

from pycore.ops import activations as A
from pycore.gpu.selfcheck import CHECKS

ULP = 2.0 ** -23        # float32 unit roundoff x 2
# Intermediates below the smallest normal float32 (1.2e-38) may flush to zero, and a
# few get multiplied by |x| <= 100 (gelu, glu): absolute slack of 100 * 1.2e-38.
TINY = 1.2e-36


def check_rel(got, want, rtol):
    """|got - want| <= rtol * |want| (+ TINY), with rtol a scalar or per-element array."""
    assert got.shape == want.shape
    assert np.all(np.isfinite(got))
    bad = np.abs(got - want) > rtol * np.abs(want) + TINY
    assert not bad.any(), (got[bad][:5], want[bad][:5], np.flatnonzero(bad)[:5])


def sigmoid64(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sample(rng, n=6000):
    """Wide range: uniform, near zero, tiny magnitudes, and the large-|x| tails."""
    parts = [rng.uniform(-10, 10, n), rng.uniform(-1, 1, n // 2),
             10.0 ** rng.uniform(-8, 0, n // 4) * rng.choice([-1, 1], n // 4),
             rng.uniform(-90, 90, n // 4), [0.0, 100.0, -100.0, 1e4, -1e4]]
    return np.concatenate(parts).astype(np.float32)


def test_relu(dev, rng):
    x = sample(rng).reshape(-1, 7)[:, :5]
    x = np.ascontiguousarray(x)
    np.testing.assert_array_equal(A.relu(dev.tensor(x)).numpy(), np.maximum(x, 0))


def test_sigmoid(dev, rng):
    x = sample(rng)
    xd = x.astype(np.float64)
    got = A.sigmoid(dev.tensor(x)).numpy()
    # exp(-|x|) carries up to 3 + 2|x| ulp, a few more for the division
    check_rel(got, sigmoid64(xd), (8 + 2 * np.abs(xd)) * ULP)
    assert got[-4] == 1.0 and 0.0 <= got[-3] < 1e-40   # sigmoid(+-100): no inf / nan


def test_tanh(dev, rng):
    x = sample(rng)
    got = A.tanh(dev.tensor(x)).numpy()
    # |x| < 0.4: series, a few roundings; beyond: (1 - e) / (1 + e) with e <= 0.45
    check_rel(got, np.tanh(x.astype(np.float64)), 8 * ULP)
    assert got[-4] == 1.0 and got[-3] == -1.0


def test_gelu_exact(dev, rng):
    x = sample(rng)
    xd = x.astype(np.float64)
    want = 0.5 * xd * np.array([math.erfc(-v / math.sqrt(2.0)) for v in xd])
    got = A.gelu(dev.tensor(x)).numpy()
    # erf/erfc polynomial error ~1.5e-7; for x < -sqrt 2 the result is 0.5 x erfc with
    # exp(-x^2/2 + ...): 3 + x^2 ulp from exp and x^2/2 half-ulps from rounding x^2/2.
    check_rel(got, want, (16 + 1.5 * xd * xd) * ULP)
    # erf's accuracy near zero: gelu(x) ~ x/2 keeps its relative precision
    small = np.abs(xd) < 1e-3
    check_rel(got[small], want[small], 4 * ULP)


def test_gelu_tanh(dev, rng):
    x = sample(rng)
    xd = x.astype(np.float64)
    u = math.sqrt(2.0 / math.pi) * (xd + 0.044715 * xd ** 3)
    want = xd * sigmoid64(2.0 * u)        # = 0.5 x (1 + tanh u), without cancellation
    got = A.gelu(dev.tensor(x), approximate="tanh").numpy()
    # exp(-2|u|): 3 + 4|u| ulp; plus the f32 rounding of u (|u| half-ulps, times 2)
    check_rel(got, want, (16 + 6 * np.abs(u)) * ULP)


def test_gelu_matches_torch_if_available(dev, rng):
    torch = pytest.importorskip("torch")
    x = rng.uniform(-6, 6, 2000).astype(np.float32)
    for approx in ("none", "tanh"):
        want = torch.nn.functional.gelu(torch.from_numpy(x).double(), approximate=approx).numpy()
        got = A.gelu(dev.tensor(x), approximate=approx).numpy()
        check_rel(got, want, (16 + 1.5 * x.astype(np.float64) ** 2) * ULP)


@pytest.mark.parametrize("shape,dim", [((10,), 0), ((3, 8), -1), ((2, 6, 5), 1), ((4, 3, 7), 0), ((3, 2, 5, 2), 3)])
def test_glu(dev, rng, shape, dim):
    x = rng.uniform(-8, 8, shape).astype(np.float32)
    a, b = np.split(x.astype(np.float64), 2, axis=dim)
    got = A.glu(dev.tensor(x), dim=dim)
    want = a * sigmoid64(b)
    assert got.shape == want.shape
    check_rel(got.numpy(), want, 32 * ULP)   # sigmoid of |b| <= 8: (8 + 16) ulp, one more product


def softmax64(x, dim):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


@pytest.mark.parametrize("shape,dim", [
    ((1,), 0), ((5, 63), -1), ((5, 64), -1), ((5, 65), 1), ((3, 1000), -1),
    ((3, 300, 5), 1), ((7, 4, 3), 0), ((2, 3, 129), 2),
])
def test_softmax(dev, rng, shape, dim):
    x = (3 * rng.standard_normal(shape)).astype(np.float32)
    got = A.softmax(dev.tensor(x), dim=dim).numpy()
    n = shape[dim]
    # exp(x - max) with |x - max| <~ 30: (3 + 60) ulp; the f32 sum of n terms adds up to
    # ~ (n / 64 + 6) roundings (strided per-invocation runs, then a 64-wide tree).
    check_rel(got, softmax64(x, dim), (70 + n / 64 + 6) * ULP)


def test_softmax_large_values(dev, rng):
    """Values ~1e4 must not overflow exp: the row max is subtracted first."""
    x = (1e4 + 10 * rng.standard_normal((4, 500))).astype(np.float32)
    x[1] -= 2e4         # a row around -1e4
    got = A.softmax(dev.tensor(x)).numpy()
    want = softmax64(x, -1)
    assert np.all(np.isfinite(got))
    # |x - max| up to ~70 here: 3 + 140 ulp for exp, plus the sum
    check_rel(got, want, (150 + 500 / 64 + 6) * ULP)
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, rtol=1e-5)


def test_softmax_neg_inf(dev):
    """-inf entries (masked positions) get probability 0."""
    x = np.array([[0.0, -np.inf, 1.0, -np.inf], [-np.inf, 2.0, -np.inf, -np.inf]], np.float32)
    got = A.softmax(dev.tensor(x)).numpy()
    e = math.exp(-1.0)
    np.testing.assert_allclose(got, [[e / (1 + e), 0, 1 / (1 + e), 0], [0, 1, 0, 0]], rtol=1e-6, atol=0)


def test_softmax_folded_grid(dev):
    """More than 65,535 rows = workgroups: the runtime folds the grid into 2-D."""
    x = np.tile(np.array([0.0, 1.0, 2.0], np.float32), (70000, 1))
    got = A.softmax(dev.tensor(x)).numpy()
    want = softmax64(x[:1], -1)
    np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), rtol=1e-6)


def test_errors(dev):
    x = dev.tensor(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"glu: size 5 of dim 1 must be even.*\(2, 5\)"):
        A.glu(x)
    with pytest.raises(ValueError, match="glu: dim 2 out of range"):
        A.glu(x, dim=2)
    with pytest.raises(ValueError, match="softmax: dim -3 out of range"):
        A.softmax(x, dim=-3)
    with pytest.raises(ValueError, match="gelu: approximate"):
        A.gelu(x, approximate="erf")
    bad = dev.tensor(np.zeros(4, np.int32), dtype="i32")
    for fn in (A.relu, A.gelu, A.tanh, A.sigmoid, A.glu, A.softmax):
        with pytest.raises(ValueError, match=fn.__name__ + ": dtype"):
            fn(bad)


@pytest.mark.parametrize("name", ["activations", "glu", "softmax"])
def test_selfcheck(dev, name):
    asyncio.run(CHECKS[name](dev))
