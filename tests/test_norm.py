"""layer_norm, group_norm and batch_norm against float64 numpy.

Error model for the row statistics (norm.wgsl): each invocation adds ceil(len / 64)
terms in order, then a 64-wide tree: `depth` roundings. The mean's error relative to
the row's std shifts every normalized value; the variance's relative error and
inverseSqrt (2 ulp in Vulkan) scale it; the affine adds a couple of roundings.
"""

import asyncio
import math

import numpy as np
import pytest

from pycore.gpu.native import NativeDevice
from pycore.ops import norm as N
from pycore.gpu.selfcheck import CHECKS

EPS = 2.0 ** -24


def normalize64(rows, eps):
    rows = rows.astype(np.float64)
    m = rows.mean(axis=1, keepdims=True)
    return (rows - m) / np.sqrt(rows.var(axis=1, keepdims=True) + eps)


def check_rows(got, rows, eps, w, b):
    """got, rows: [R, L]; w, b: per-element [R, L] float64 arrays (broadcastable)."""
    n = rows.shape[1]
    depth = math.ceil(n / 64) + 6
    r64 = rows.astype(np.float64)
    y = normalize64(rows, eps)
    want = y * w + b
    sd = np.sqrt(r64.var(axis=1, keepdims=True) + eps)
    mean_err = (depth + 1) * EPS * np.abs(r64).mean(axis=1, keepdims=True) / sd
    y_err = np.abs(y) * (depth + 12) * EPS + mean_err
    tol = np.abs(w) * y_err + 3 * EPS * (np.abs(y * w) + np.abs(b))
    assert got.shape == want.shape
    bad = np.abs(got - want) > tol
    assert not bad.any(), (got[bad][:4], want[bad][:4], tol[bad][:4])
    return tol.max()


@pytest.mark.parametrize("shape,nshape", [
    ((3, 7), (7,)),
    ((2, 5, 33), (33,)),
    ((2, 5, 33), (5, 33)),
    ((4, 1000), (1000,)),          # long rows: many terms per invocation
])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm(dev, rng, shape, nshape, affine):
    x = (1.5 + 3 * rng.standard_normal(shape)).astype(np.float32)
    n = math.prod(nshape)
    w = rng.uniform(0.5, 1.5, nshape).astype(np.float32) if affine else None
    b = rng.standard_normal(nshape).astype(np.float32) if affine else None
    got = N.layer_norm(dev.tensor(x), nshape, None if w is None else dev.tensor(w),
                       None if b is None else dev.tensor(b), eps=1e-5)
    assert got.shape == shape
    wf = w.reshape(1, n).astype(np.float64) if affine else 1.0
    bf = b.reshape(1, n).astype(np.float64) if affine else 0.0
    check_rows(got.numpy().reshape(-1, n), x.reshape(-1, n), 1e-5, wf, bf)


def test_layer_norm_folded_grid(dev, rng):
    """More than 65,535 rows = workgroups: the runtime folds the grid into 2-D."""
    x = rng.standard_normal((70000, 3)).astype(np.float32)
    got = N.layer_norm(dev.tensor(x), 3).numpy()
    check_rows(got, x, 1e-5, 1.0, 0.0)


def test_layer_norm_large_mean(dev, rng):
    """Rows around 1e4 with unit noise: two-pass variance keeps them accurate."""
    x = (1e4 + rng.standard_normal((3, 500))).astype(np.float32)
    got = N.layer_norm(dev.tensor(x), 500).numpy()
    # the mean's f32 error (~15 roundings of 1e4) dominates the bound; the naive
    # E[x^2] - E[x]^2 would be off by O(1) (ulp(1e8) = 8 against a variance of 1)
    assert check_rows(got, x, 1e-5, 1.0, 0.0) < 1e-2


def test_layer_norm_int_shape_and_bias_only(dev, rng):
    x = rng.standard_normal((6, 10)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    got = N.layer_norm(dev.tensor(x), 10, bias=dev.tensor(b), eps=0.1).numpy()
    check_rows(got, x, 0.1, 1.0, b.astype(np.float64)[None])


@pytest.mark.parametrize("act,alpha", [("relu", 0.01), ("leaky_relu", 0.2)])
def test_layer_norm_fused_activation(dev, rng, act, alpha):
    """act applies after the affine map: exactly act(layer_norm(x)) of the unfused op
    (both compute the same float32 value first; the activation is exact)."""
    x = (0.5 + rng.standard_normal((5, 37))).astype(np.float32)
    w = rng.uniform(0.5, 1.5, 37).astype(np.float32)
    b = rng.standard_normal(37).astype(np.float32)
    plain = N.layer_norm(dev.tensor(x), 37, dev.tensor(w), dev.tensor(b)).numpy()
    got = N.layer_norm(dev.tensor(x), 37, dev.tensor(w), dev.tensor(b), act=act, alpha=alpha).numpy()
    want = np.where(plain >= 0, plain, 0.0 if act == "relu" else alpha * plain).astype(np.float32)
    assert (plain < 0).sum() > 20          # the activation is exercised
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape,groups", [
    ((2, 6, 5), 3), ((2, 6, 5), 1), ((2, 6, 5), 6), ((3, 4, 7, 9), 2), ((1, 8, 1000), 4), ((2, 4), 2),
])
def test_group_norm(dev, rng, shape, groups):
    x = (-2 + rng.standard_normal(shape)).astype(np.float32)
    c = shape[1]
    w = rng.uniform(0.5, 1.5, c).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    got = N.group_norm(dev.tensor(x), groups, dev.tensor(w), dev.tensor(b), eps=1e-5)
    assert got.shape == shape
    spatial = x.size // (shape[0] * c)
    per_elem = np.repeat(np.arange(c), spatial)          # channel of each element of a sample
    rows = x.reshape(shape[0] * groups, -1)
    ch = per_elem.reshape(groups, -1)                    # channel of each element of a row
    wf = np.tile(w.astype(np.float64)[ch], (shape[0], 1))
    bf = np.tile(b.astype(np.float64)[ch], (shape[0], 1))
    check_rows(got.numpy().reshape(rows.shape), rows, 1e-5, wf, bf)


def test_group_norm_matches_torch_if_available(dev, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 6, 11)).astype(np.float32)
    w, b = rng.standard_normal(6).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    want = torch.nn.functional.group_norm(torch.from_numpy(x).double(), 3, torch.from_numpy(w).double(),
                                          torch.from_numpy(b).double(), 1e-5).numpy()
    got = N.group_norm(dev.tensor(x), 3, dev.tensor(w), dev.tensor(b)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)   # O(1) values, ~30 ulp budget


def batch_norm64(x, rm, rv, w, b, eps):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    f = [a.astype(np.float64).reshape(shape) for a in (rm, rv, w, b)]
    return (x.astype(np.float64) - f[0]) / np.sqrt(f[1] + eps) * f[2] + f[3]


@pytest.mark.parametrize("shape", [(4, 3), (2, 5, 9), (2, 3, 4, 5)])
def test_batch_norm(dev, rng, shape):
    c = shape[1]
    x = rng.standard_normal(shape).astype(np.float32)
    rm, b = (rng.standard_normal(c).astype(np.float32) for _ in range(2))
    rv, w = (rng.uniform(0.2, 2.0, c).astype(np.float32) for _ in range(2))
    got = N.batch_norm(dev.tensor(x), *(dev.tensor(a) for a in (rm, rv, w, b)), eps=1e-5).numpy()
    want = batch_norm64(x, rm, rv, w, b, 1e-5)
    yw = want - batch_norm64(np.zeros_like(x), np.zeros(c), np.ones(c), np.zeros(c), b, 0.0)  # = y * w
    # y = (x - rm) * inverseSqrt(rv + eps): 1 + 1 + 4 (2 ulp) + 1 roundings; * w: 1; + b: 1
    np.testing.assert_array_less(np.abs(got - want), 9 * EPS * np.abs(yw) + EPS * np.abs(want) + 1e-30)
    # without weight / bias
    y = batch_norm64(x, rm, rv, np.ones(c), np.zeros(c), 1e-5)
    got = N.batch_norm(dev.tensor(x), dev.tensor(rm), dev.tensor(rv)).numpy()
    np.testing.assert_array_less(np.abs(got - y), 8 * EPS * np.abs(y) + 1e-30)


@pytest.mark.parametrize("f16_device", [True, False])
def test_f16_parameters(dev, rng, f16_device):
    """f16 weights: native f16 where shader-f16 exists, f32 storage elsewhere."""
    d = dev if f16_device else NativeDevice(f16=False)
    x = rng.standard_normal((3, 4, 10)).astype(np.float32)
    w, b, rm = (rng.standard_normal(4).astype(np.float16) for _ in range(3))
    rv = rng.uniform(0.5, 2, 4).astype(np.float16)
    t16 = {k: d.tensor(v, dtype="f16") for k, v in dict(w=w, b=b, rm=rm, rv=rv).items()}
    if f16_device and dev.has_f16:
        assert t16["w"].dtype == "f16"
    elif not f16_device:
        assert t16["w"].dtype == "f32"
    w64, b64 = w.astype(np.float64), b.astype(np.float64)
    got = N.group_norm(d.tensor(x), 2, t16["w"], t16["b"]).numpy()
    rows = x.reshape(6, 20)
    ch = np.repeat(np.arange(4), 10).reshape(2, 20)
    check_rows(got.reshape(6, 20), rows, 1e-5, np.tile(w64[ch], (3, 1)), np.tile(b64[ch], (3, 1)))
    got = N.batch_norm(d.tensor(x), t16["rm"], t16["rv"], t16["w"], t16["b"]).numpy()
    want = batch_norm64(x, rm, rv, w, b, 1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)   # O(1) values, a few roundings
    got = N.layer_norm(d.tensor(x), (10,), d.tensor(rng.standard_normal(10).astype(np.float16), dtype="f16")).numpy()
    assert got.shape == x.shape and np.all(np.isfinite(got))


def test_errors(dev):
    x = dev.tensor(np.zeros((2, 6, 5), np.float32))
    w5, w6 = dev.tensor(np.ones(5, np.float32)), dev.tensor(np.ones(6, np.float32))
    with pytest.raises(ValueError, match="layer_norm: act must be None, 'relu' or 'leaky_relu', got 'gelu'"):
        N.layer_norm(x, 5, act="gelu")
    with pytest.raises(ValueError, match=r"layer_norm: normalized_shape \(6,\) must match.*\(2, 6, 5\)"):
        N.layer_norm(x, 6)
    with pytest.raises(ValueError, match=r"layer_norm: weight and bias must have shape \(5,\)"):
        N.layer_norm(x, 5, w6)
    with pytest.raises(ValueError, match="layer_norm: .*share one dtype"):
        N.layer_norm(x, 5, w5, dev.tensor(np.ones(5, np.float16), dtype="f16")) if dev.has_f16 else \
            N.layer_norm(x, 5, w5, dev.tensor(np.ones(5, np.int32), dtype="i32"))
    with pytest.raises(ValueError, match="group_norm: 6 channels do not split into 4 groups"):
        N.group_norm(x, 4)
    with pytest.raises(ValueError, match=r"group_norm: weight and bias must have shape \(6,\)"):
        N.group_norm(x, 3, w5)
    with pytest.raises(ValueError, match=r"group_norm: x must be \[N, C, \*\]"):
        N.group_norm(dev.tensor(np.zeros(6, np.float32)), 3)
    with pytest.raises(ValueError, match="batch_norm: running_mean and running_var"):
        N.batch_norm(x, w5, w6)
    with pytest.raises(ValueError, match="batch_norm: dtype"):
        N.batch_norm(x, w6, dev.tensor(np.ones(6, np.int32), dtype="i32"))
    with pytest.raises(ValueError, match="layer_norm: dtype"):
        N.layer_norm(dev.tensor(np.zeros((2, 5), np.int32), dtype="i32"), 5)


@pytest.mark.parametrize("name", ["layer_norm", "group_norm", "batch_norm"])
def test_selfcheck(dev, name):
    asyncio.run(CHECKS[name](dev))
