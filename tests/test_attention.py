"""Fused scaled dot-product attention against a float64 numpy reference.

Error model (f32, attention.wgsl): each score is a D-term dot product added in order
(|error| <= (D + 2) eps sum_d |q_d k_d| scale); a score error ds changes the output by
at most 2 ds max|v| (the output is a convex combination of v rows); exp(t) is good to
3 + 2|t| ulp (Vulkan) with |t| <= the row's score range; the running sums add about
Lk roundings. Each row's tolerance is that bound, times max|v|.
"""

import asyncio
import math

import numpy as np
import pytest

from pycore.ops.attention import scaled_dot_product_attention as sdpa
from pycore.gpu.selfcheck import CHECKS

EPS = 2.0 ** -24


def reference(q, k, v, mask=None, causal=False, scale=None):
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    if mask is not None:
        s = s + mask.astype(np.float64)
    if causal:
        lq, lk = s.shape[-2:]
        s = np.where(np.tril(np.ones((lq, lk), bool)), s, -np.inf)
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    return (p / p.sum(axis=-1, keepdims=True)) @ v, s


def tolerance(q, k, v, s_centered, scale):
    d, lk = q.shape[-1], k.shape[-2]
    qk = np.abs(q.astype(np.float64)) @ np.swapaxes(np.abs(k.astype(np.float64)), -1, -2) * scale
    ds = (d + 2) * EPS * qk.max(axis=-1, keepdims=True)                       # per row
    finite = np.where(np.isfinite(s_centered), s_centered, 0.0)
    exp_err = (3 + 2 * np.abs(finite).max(axis=-1, keepdims=True)) * 2 * EPS
    vmax = np.abs(v).max(axis=(-2, -1), keepdims=True)
    return vmax * (2 * ds + exp_err + (lk + 8) * EPS)


def check(dev, q, k, v, mask=None, causal=False, scale=None):
    want, s = reference(q, k, v, mask, causal, scale)
    got = sdpa(dev.tensor(q), dev.tensor(k), dev.tensor(v), mask=None if mask is None else dev.tensor(mask),
               is_causal=causal, scale=scale)
    assert got.shape == want.shape
    tol = tolerance(q, k, v, s, 1 / math.sqrt(q.shape[-1]) if scale is None else abs(scale))
    got = got.numpy()
    bad = ~(np.abs(got - want) <= tol)
    assert not bad.any(), (got[bad][:4], want[bad][:4])
    return tol.max()


def qkv(rng, lead, lq, lk, d, dv, spread=1.0):
    return (spread * rng.standard_normal(lead + (lq, d))).astype(np.float32), \
           (spread * rng.standard_normal(lead + (lk, d))).astype(np.float32), \
           rng.standard_normal(lead + (lk, dv)).astype(np.float32)


@pytest.mark.parametrize("lead,lq,lk,d,dv", [
    ((), 1, 1, 1, 1),
    ((), 7, 5, 3, 2),
    ((2, 3), 17, 130, 8, 5),        # 130 keys: three 64-key tiles, the last partial
    ((2,), 33, 64, 64, 64),         # exactly one tile
    ((), 3, 200, 256, 256),
    ((), 2, 70, 512, 512),          # the largest D / Dv
    ((), 4, 300, 65, 129),          # Dv > 2 x 64 columns per invocation, odd D
])
def test_attention(dev, rng, lead, lq, lk, d, dv):
    check(dev, *qkv(rng, lead, lq, lk, d, dv))


@pytest.mark.parametrize("lq,lk", [(20, 20), (5, 140), (140, 5), (70, 70)])
def test_causal(dev, rng, lq, lk):
    """torch's is_causal: query i sees keys j <= i (top-left aligned), also when Lq != Lk."""
    check(dev, *qkv(rng, (2,), lq, lk, 16, 8), causal=True)


def test_masks(dev, rng):
    q, k, v = qkv(rng, (2, 3), 9, 100, 16, 7)
    mask = rng.standard_normal((9, 100)).astype(np.float32)
    mask[:, ::3] = -np.inf                      # masked keys in every row
    check(dev, q, k, v, mask=mask)              # [Lq, Lk], broadcast over (2, 3)
    full = rng.standard_normal((2, 3, 9, 100)).astype(np.float32)
    full[..., 50:] = -1e9                       # large negative, as models often use
    check(dev, q, k, v, mask=full)              # one mask per batch entry


def test_custom_scale(dev, rng):
    check(dev, *qkv(rng, (3,), 10, 80, 12, 6), scale=0.05)
    check(dev, *qkv(rng, (3,), 10, 80, 12, 6), scale=2.0)


def test_large_logits_stable(dev, rng):
    """Scores in the thousands: the streaming max keeps exp from overflowing."""
    q, k, v = qkv(rng, (2,), 12, 150, 16, 4, spread=30.0)
    tol = check(dev, q, k, v)
    assert tol < 0.1       # (the bound stays meaningful: outputs are O(1))


def test_folded_grid(dev):
    """More than 65,535 query rows = workgroups: the runtime folds the grid into 2-D."""
    n = 70000
    q = np.ones((n, 1, 1), np.float32)
    k = np.zeros((n, 2, 1), np.float32)             # equal scores: p = 1 for both keys
    v = np.broadcast_to(np.arange(n, dtype=np.float32).reshape(n, 1, 1), (n, 2, 1)).copy()
    got = sdpa(*(dev.tensor(a) for a in (q, k, v))).numpy()
    np.testing.assert_array_equal(got, v[:, :1])     # (v + v) / 2: exact, and row-specific


def test_matches_torch_if_available(dev, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    q, k, v = qkv(rng, (2,), 6, 9, 8, 5)
    mask = rng.standard_normal((6, 9)).astype(np.float32)
    tq, tk, tv = (torch.from_numpy(a).double() for a in (q, k, v))
    for kwargs, tkwargs in (({"is_causal": True}, {"is_causal": True}),
                            ({"mask": mask}, {"attn_mask": torch.from_numpy(mask).double()}),
                            ({"scale": 0.3}, {"scale": 0.3})):
        want = F.scaled_dot_product_attention(tq, tk, tv, **tkwargs).numpy()
        args = dict(kwargs)
        if "mask" in args:
            args["mask"] = dev.tensor(args["mask"])
        got = sdpa(dev.tensor(q), dev.tensor(k), dev.tensor(v), **args).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)   # O(1) outputs, D = 8


def test_errors(dev):
    def t(*shape):
        return dev.tensor(np.zeros(shape, np.float32))

    q, k, v = t(2, 4, 8), t(2, 6, 8), t(2, 6, 3)
    op = "scaled_dot_product_attention: "
    with pytest.raises(ValueError, match=op + "k must be"):
        sdpa(q, t(2, 6, 7), v)
    with pytest.raises(ValueError, match=op + "k must be"):
        sdpa(q, k, t(2, 5, 3))
    with pytest.raises(ValueError, match=op + "q, k, v must share their leading dims"):
        sdpa(q, t(3, 6, 8), t(3, 6, 3))
    with pytest.raises(ValueError, match=op + "q, k, v must be"):
        sdpa(t(8), t(8), t(8))
    with pytest.raises(ValueError, match=op + r"mask must be \[4, 6\]"):
        sdpa(q, k, v, mask=t(6, 4))
    with pytest.raises(ValueError, match=op + "give either mask or is_causal"):
        sdpa(q, k, v, mask=t(4, 6), is_causal=True)
    with pytest.raises(ValueError, match=op + "D and Dv must be between 1 and 512"):
        sdpa(t(1, 513), t(2, 513), t(2, 3))
    with pytest.raises(ValueError, match=op + "dtype"):
        sdpa(q, k, dev.tensor(np.zeros((2, 6, 3), np.int32), dtype="i32"))
    with pytest.raises(ValueError, match=op + "needs at least one key"):
        sdpa(q, dev.empty((2, 0, 8)), dev.empty((2, 0, 3)))


def test_selfcheck(dev):
    asyncio.run(CHECKS["attention"](dev))
