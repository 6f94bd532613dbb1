"""max_pool2d (kernels/pool.wgsl) against numpy, with and without the fused affine map."""

import asyncio

import numpy as np
import pytest

from pycore.gpu.native import NativeDevice
from pycore.ops.pool import max_pool2d
from pycore.gpu.selfcheck import CHECKS


def np_max_pool(x, k, s, scale=None, shift=None):
    x = x.astype(np.float64)
    if scale is not None:
        x = x * scale[None, :, None, None] + shift[None, :, None, None]
    n, c, h, w = x.shape
    oh, ow = (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1
    out = np.full((n, c, oh, ow), -np.inf)
    for u in range(k[0]):
        for v in range(k[1]):
            out = np.maximum(out, x[:, :, u:u + s[0] * (oh - 1) + 1:s[0], v:v + s[1] * (ow - 1) + 1:s[1]])
    return out


@pytest.mark.parametrize("shape, k, s, affine", [
    ((3, 5, 33, 1), (2, 1), None, True),        # CREPE's pool: odd length drops the last row
    ((2, 7, 13, 11), (3, 2), (2, 3), True),     # sizes that are no multiple of anything
    ((1, 130, 9, 4), 2, 1, False),              # overlapping windows, > 64 outputs
    ((2, 3, 4, 5), (4, 5), None, False),        # one window covers the input
])
def test_matches_numpy(dev, rng, shape, k, s, affine):
    x = rng.standard_normal(shape).astype(np.float32)
    c = shape[1]
    scale = rng.uniform(-2, 2, c).astype(np.float32) if affine else None   # negative scales too
    shift = rng.standard_normal(c).astype(np.float32) if affine else None
    got = max_pool2d(dev.tensor(x), k, s, dev.tensor(scale) if affine else None,
                     dev.tensor(shift) if affine else None).numpy()
    kk = (k, k) if isinstance(k, int) else k
    ss = kk if s is None else ((s, s) if isinstance(s, int) else s)
    want = np_max_pool(x, kk, ss, scale, shift)
    assert got.shape == want.shape
    # one or two roundings of x * scale + shift (|value| <= ~12): 2 * 2^-24 relative
    assert np.allclose(got, want, rtol=2.0**-23, atol=2.0**-23 * 12)


def test_f16_scale_and_shift(rng):
    dev = NativeDevice()
    if not dev.has_f16:
        pytest.skip("no shader-f16 on this adapter")
    x = rng.standard_normal((2, 4, 10, 3)).astype(np.float32)
    scale = rng.uniform(-2, 2, 4).astype(np.float16)
    shift = rng.standard_normal(4).astype(np.float16)
    got = max_pool2d(dev.tensor(x), (2, 1), None, dev.tensor(scale, dtype="f16"),
                     dev.tensor(shift, dtype="f16")).numpy()
    want = np_max_pool(x, (2, 1), (2, 1), scale.astype(np.float64), shift.astype(np.float64))
    assert np.allclose(got, want, rtol=2.0**-23, atol=2.0**-23 * 12)


def test_without_f16_falls_back(rng):
    dev = NativeDevice(f16=False)
    x = rng.standard_normal((1, 2, 6, 2)).astype(np.float32)
    scale, shift = np.array([-1.0, 0.5], np.float16), np.array([0.25, -1.0], np.float16)
    got = max_pool2d(dev.tensor(x), 2, None, dev.tensor(scale, dtype="f16"), dev.tensor(shift, dtype="f16")).numpy()
    assert np.allclose(got, np_max_pool(x, (2, 2), (2, 2), scale, shift), rtol=2.0**-23, atol=1e-6)


def test_bad_inputs(dev):
    x = dev.tensor(np.zeros((1, 3, 4, 4), np.float32))
    s3 = dev.tensor(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="max_pool2d: x must be"):
        max_pool2d(dev.tensor(np.zeros((3, 4, 4), np.float32)), 2)
    with pytest.raises(ValueError, match="max_pool2d: kernel"):
        max_pool2d(x, 5)
    with pytest.raises(ValueError, match="max_pool2d: kernel must be"):
        max_pool2d(x, 0)
    with pytest.raises(ValueError, match="max_pool2d: stride must be"):
        max_pool2d(x, 2, (1, 2, 3))
    with pytest.raises(ValueError, match="max_pool2d: give both"):
        max_pool2d(x, 2, scale=s3)
    with pytest.raises(ValueError, match=r"max_pool2d: scale and shift must have shape \(3,\)"):
        max_pool2d(x, 2, scale=dev.tensor(np.ones(2, np.float32)), shift=dev.tensor(np.ones(2, np.float32)))
    with pytest.raises(ValueError, match="max_pool2d: dtype"):
        max_pool2d(dev.tensor(np.zeros((1, 1, 2, 2), np.int32), dtype="i32"), 2)


def test_selfcheck(dev):
    assert "max abs err" in asyncio.run(CHECKS["max_pool2d"](dev))
