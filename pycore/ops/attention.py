"""Fused scaled dot-product attention (kernels/attention.wgsl).

    scaled_dot_product_attention(q, k, v, mask=None, is_causal=False, scale=None)

Like torch.nn.functional.scaled_dot_product_attention (no dropout): q [..., Lq, D],
k [..., Lk, D], v [..., Lk, Dv] with the same leading dims -> [..., Lq, Dv].
mask: an additive f32 mask [Lq, Lk] (broadcast over the leading dims) or
[..., Lq, Lk]; is_causal: query i attends to keys j <= i; scale defaults to 1/sqrt(D).
One kernel, streaming softmax in f32: any Lk, D and Dv up to 512. Long key sequences
run as several dispatches of up to keys_per_dispatch(D, Dv) keys each (lavapipe stops
an invocation's loops after 65,535 passes; see kernels/attention.wgsl).
"""

from __future__ import annotations

import array
import math

from ..gpu.selfcheck import assert_close, check, flat, rand, rng
from . import MAX_LOOP_STEPS, expect, expect_dtype, same_device

DMAX = 512  # largest D / Dv, as in attention.wgsl
WG = 64     # keys per tile, as in attention.wgsl


def keys_per_dispatch(d, dv):
    """Keys one dispatch may take: whole tiles within MAX_LOOP_STEPS loop passes per
    invocation. A tile costs the D-long dot product, two loops over the tile's keys, and
    one per output column block of 64 (counted as if all 8 ran their keys)."""
    tile = (d + 1) + 2 * (WG + 1) + (DMAX // WG) * (WG + 2) + 2
    return WG * max(1, (MAX_LOOP_STEPS - 2 * DMAX // WG - 16) // tile)


def scaled_dot_product_attention(q, k, v, mask=None, is_causal=False, scale=None):
    op = "scaled_dot_product_attention"
    same_device(op, q, k, v, mask)
    for t in (q, k, v) + ((mask,) if mask is not None else ()):
        expect_dtype(op, t, "f32")
    expect(op, q.ndim >= 2 and k.ndim == q.ndim and v.ndim == q.ndim,
           "q, k, v must be [..., L, D] with the same number of dims", q, k, v)
    lead = q.shape[:-2]
    expect(op, k.shape[:-2] == lead and v.shape[:-2] == lead, "q, k, v must share their leading dims", q, k, v)
    lq, d = q.shape[-2:]
    lk, dv = v.shape[-2:]
    expect(op, k.shape[-2:] == (lk, d), "k must be [..., Lk, D] and v [..., Lk, Dv]", q, k, v)
    expect(op, 1 <= d <= DMAX and 1 <= dv <= DMAX, f"D and Dv must be between 1 and {DMAX}", q, v)
    expect(op, lk >= 1, "needs at least one key", k)
    expect(op, not (is_causal and mask is not None), "give either mask or is_causal, not both", q, mask)
    mask_bstride = 0
    if mask is not None:
        expect(op, mask.shape in ((lq, lk), lead + (lq, lk)),
               f"mask must be [{lq}, {lk}] or [..., {lq}, {lk}]", q, mask)
        per_batch = mask.shape == lead + (lq, lk) and len(lead) > 0
        mask_bstride = lq * lk if per_batch else 0
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    dev = q.dev
    out = dev.empty(lead + (lq, dv))
    rows = q.size // d
    kernel = dev.kernel("attention", "attention")
    step = keys_per_dispatch(d, dv)
    state = dev.empty((rows if lk > step else 1, 2))  # running (max, sum) between dispatches
    for j in range(0, lk, step):
        dev.run(kernel, rows, q=q, k=k, v=v, mask=mask if mask is not None else q, out=out, state=state,
                rows=rows, lq=lq, lk=lk, d=d, dv=dv, scale=float(scale), causal=int(bool(is_causal)),
                has_mask=int(mask is not None), mask_bstride=mask_bstride, j_begin=j, j_end=min(lk, j + step))
    return out


# ---------------------------------------------------------------- self-check


def _f32(values):
    """Round to float32, as the upload does, so references start from the same inputs."""
    return array.array("f", values).tolist()


def _attention_ref(q, k, v, lq, lk, d, dv, mask=None, causal=False):
    out = []
    for i in range(lq):
        s = []
        for j in range(lk):
            x = sum(q[i * d + c] * k[j * d + c] for c in range(d)) / math.sqrt(d)
            if mask is not None:
                x += mask[i * lk + j]
            s.append(x if not causal or j <= i else -math.inf)
        m = max(s)
        e = [math.exp(x - m) for x in s]
        tot = math.fsum(e)
        out += [math.fsum(e[j] * v[j * dv + c] for j in range(lk)) / tot for c in range(dv)]
    return out


@check("attention")
async def _check_attention(dev):
    r = rng(10)
    lq, lk, d, dv = 5, 70, 6, 3   # Lk > the 64-key tile: two tiles, the second partial
    q, k, v = (_f32(rand(r, n, -2.0, 2.0)) for n in (lq * d, lk * d, lk * dv))
    mask = _f32(rand(r, lq * lk))
    tq, tk, tv = dev.tensor(q, (lq, d)), dev.tensor(k, (lk, d)), dev.tensor(v, (lk, dv))
    # f32 dot products of 6 terms and a 70-term weighted mean: ~1e-6 relative; outputs
    # are weighted means of values in [-2, 2], so atol 2e-6 covers near-zero results.
    got = flat(await scaled_dot_product_attention(tq, tk, tv, mask=dev.tensor(mask, (lq, lk))).read())
    assert_close("attention+mask", got, _attention_ref(q, k, v, lq, lk, d, dv, mask=mask), rtol=1e-5, atol=2e-6)
    got = flat(await scaled_dot_product_attention(tq, tk, tv, is_causal=True).read())
    return assert_close("attention causal", got, _attention_ref(q, k, v, lq, lk, d, dv, causal=True),
                        rtol=1e-5, atol=2e-6)
