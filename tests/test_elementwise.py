"""Elementwise ops against numpy.

add/sub/mul are correctly rounded in Vulkan (and WebGPU), so with float32 inputs the
GPU must reproduce numpy's float32 results bit for bit; copy and transpose move bits.
"""

import asyncio

import numpy as np
import pytest

from pycore.ops import elementwise as E
from pycore.gpu.selfcheck import CHECKS

NP_OPS = {"add": np.add, "sub": np.subtract, "mul": np.multiply}


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("op", ["add", "sub", "mul"])
@pytest.mark.parametrize("a_shape,b_shape", [
    ((7,), (7,)),
    ((3, 257), (3, 257)),          # not a multiple of the 256-wide workgroup
    ((2, 5, 7), (7,)),             # bias over leading dims
    ((2, 5, 7), (5, 7)),
    ((4, 3), (1,)),                # one element
    ((4, 3), ()),                  # 0-d
    ((), ()),
])
def test_binary_matches_numpy_exactly(dev, rng, op, a_shape, b_shape):
    a, b = f32(rng, *a_shape), f32(rng, *b_shape)
    got = getattr(E, op)(dev.tensor(a, a_shape), dev.tensor(b, b_shape)).numpy()
    assert got.shape == a_shape
    np.testing.assert_array_equal(got, NP_OPS[op](a, b).reshape(a_shape))


@pytest.mark.parametrize("op", ["add", "sub", "mul"])
def test_python_scalars(dev, rng, op):
    a = f32(rng, 5, 33)
    for s in (3, -0.75, 1e-3):
        got = getattr(E, op)(dev.tensor(a), s).numpy()
        np.testing.assert_array_equal(got, NP_OPS[op](a, np.float32(s)))


def test_scale_and_copy(dev, rng):
    a = f32(rng, 3, 100)
    np.testing.assert_array_equal(E.scale(dev.tensor(a), 0.3).numpy(), a * np.float32(0.3))
    src = dev.tensor(a)
    c = E.copy(src)
    assert c.buffer is not src.buffer and c.shape == (3, 100)
    np.testing.assert_array_equal(c.numpy(), a)


def test_f16_b(dev, rng):
    """b may hold f16 weights (or f32 storage where the device lacks shader-f16)."""
    a, b = f32(rng, 6, 19), f32(rng, 19)
    b16 = b.astype(np.float16)
    got = E.add(dev.tensor(a), dev.tensor(b16, dtype="f16")).numpy()
    np.testing.assert_array_equal(got, a + b16.astype(np.float32))


def test_folded_grid(dev):
    """More than 65,535 workgroups of 256: the runtime folds the grid into 2-D."""
    n = 65535 * 256 + 300
    a = np.arange(n, dtype=np.float32)
    got = E.copy(dev.tensor(a)).numpy()
    np.testing.assert_array_equal(got, a)


@pytest.mark.parametrize("shape,dims", [
    ((5,), (0,)),
    ((3, 7), (1, 0)),
    ((2, 3, 5), (2, 0, 1)),
    ((2, 3, 5), (-1, -3, -2)),
    ((4, 1, 3, 5), (3, 1, 0, 2)),
    ((2, 3, 1, 4, 5), (4, 2, 0, 3, 1)),
    ((2, 3, 2, 3, 2, 3), (5, 3, 1, 4, 2, 0)),
    ((65, 129), (1, 0)),
])
def test_transpose(dev, rng, shape, dims):
    a = f32(rng, *shape)
    got = E.transpose(dev.tensor(a), dims)
    want = np.transpose(a, dims)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got.numpy(), want)


def test_errors(dev):
    a = dev.tensor(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"add: .*\(2, 4\).*\(3,\)"):
        E.add(a, dev.tensor(np.zeros(3, np.float32)))
    with pytest.raises(ValueError, match="mul: "):
        E.mul(a, dev.tensor(np.zeros((3, 2, 4), np.float32)))   # b has more dims than a
    with pytest.raises(ValueError, match="sub: .*dtype"):
        E.sub(a, dev.tensor(np.zeros(4, np.int32), dtype="i32"))
    with pytest.raises(ValueError, match="add: .*Tensor or a number"):
        E.add(a, [1.0, 2.0])
    with pytest.raises(ValueError, match="scale: "):
        E.scale(a, a)
    with pytest.raises(ValueError, match="copy: .*dtype"):
        E.copy(dev.tensor(np.zeros(4, np.uint32), dtype="u32"))
    with pytest.raises(ValueError, match="transpose: .*permutation"):
        E.transpose(a, (0, 0))
    with pytest.raises(ValueError, match="transpose: .*permutation"):
        E.transpose(a, (0,))
    with pytest.raises(ValueError, match="transpose: rank 7"):
        E.transpose(dev.tensor(np.zeros((1,) * 7, np.float32)), tuple(range(7)))


@pytest.mark.parametrize("shape,pads", [
    ((5,), (2, 3)),
    ((3, 7), (0, -2, 1, 1)),                      # crop the last dim, pad the first
    ((2, 3, 5), (1, 2, 1, 2)),                    # TF 'same' padding of a 5x5 stride-2 conv
    ((2, 3, 257), (-256, 0)),                     # keep the tail only
    ((1, 2, 3, 4, 5, 6), (1, 0, 0, 1, -1, 1, 2, -2, 0, 0, 1, 1)),
])
def test_pad_matches_numpy(dev, rng, shape, pads):
    a = f32(rng, *shape)
    got = E.pad(dev.tensor(a), pads, value=0.5).numpy()
    want = a
    for j in range(len(pads) // 2):   # torch order: (before, after) from the last dim back
        axis, lo, hi = a.ndim - 1 - j, pads[2 * j], pads[2 * j + 1]
        want = np.take(want, range(max(0, -lo), want.shape[axis] - max(0, -hi)), axis=axis)
        widths = [(0, 0)] * a.ndim
        widths[axis] = (max(0, lo), max(0, hi))
        want = np.pad(want, widths, constant_values=0.5)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_pad_into_a_given_tensor(dev, rng):
    """out=: the crop is written into an existing tensor (a plan's carried state), which
    pad returns; a wrong shape or a itself is refused."""
    a = f32(rng, 2, 10)
    out = dev.empty((2, 4))
    assert E.pad(dev.tensor(a), (-6, 0), out=out) is out
    np.testing.assert_array_equal(out.numpy(), a[:, 6:])
    with pytest.raises(ValueError, match="out must be an f32 Tensor of the result's shape"):
        E.pad(dev.tensor(a), (-5, 0), out=out)
    t = dev.tensor(a)
    with pytest.raises(ValueError, match="out must not be a itself"):
        E.pad(t, (0, 0), out=t)


@pytest.mark.parametrize("shapes,dim", [
    ([(3,), (5,)], 0),
    ([(2, 3, 4), (2, 1, 4), (2, 5, 4)], 1),
    ([(2, 3, 4), (2, 3, 7)], -1),
    ([(1, 2, 8, 16), (1, 2, 8, 16)], 0),          # stacking model outputs
    ([(2, 0, 3), (2, 2, 3)], 1),                  # an empty part
])
def test_concat_matches_numpy(dev, rng, shapes, dim):
    parts = [f32(rng, *s) for s in shapes]
    got = E.concat([dev.tensor(p, p.shape) for p in parts], dim=dim).numpy()
    np.testing.assert_array_equal(got, np.concatenate(parts, axis=dim))


@pytest.mark.parametrize("act", [None, "relu", "leaky_relu"])
@pytest.mark.parametrize("shape,pad", [
    ((2, 3, 5, 7), (0, 0, 0, 0)),
    ((1, 16, 33, 65), (1, 2, 1, 2)),              # TF 'same' padding for the next conv
    ((1, 4, 17, 33), (0, -1, 0, -1)),             # the U-Net decoder's crop
    ((2, 3, 6), (0, 0, 0, 0)),                    # [N, C, *]
])
def test_channel_affine(dev, rng, act, shape, pad):
    x, scale, shift = f32(rng, *shape), f32(rng, shape[1]), f32(rng, shape[1])
    got = E.channel_affine(dev.tensor(x), dev.tensor(scale), dev.tensor(shift), act=act, alpha=0.2,
                           pad=pad).numpy()
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    want = x.astype(np.float64) * scale.reshape(bshape) + shift.reshape(bshape)
    if act == "relu":
        want = np.maximum(want, 0)
    elif act == "leaky_relu":
        want = np.where(want >= 0, want, 0.2 * want)
    left, right, top, bottom = pad
    if x.ndim == 4:
        want = want[:, :, max(0, -top):want.shape[2] - max(0, -bottom), max(0, -left):want.shape[3] - max(0, -right)]
        want = np.pad(want, ((0, 0), (0, 0), (max(0, top), max(0, bottom)), (max(0, left), max(0, right))))
    assert got.shape == want.shape
    # x * scale + shift: one or two f32 roundings (the driver may fuse a multiply-add)
    np.testing.assert_allclose(got, want, rtol=2.5e-7, atol=1e-7)


def test_channel_affine_into_a_channel_slice(dev, rng):
    """The U-Net concatenation: a skip copied into channels 0..2, a cropped BatchNorm
    output into channels 3..4, of one tensor; f16 scale/shift allowed."""
    skip, up = f32(rng, 1, 3, 8, 10), f32(rng, 1, 2, 9, 11)
    scale, shift = f32(rng, 2), f32(rng, 2)
    out = dev.empty((1, 5, 8, 10))
    E.channel_affine(dev.tensor(skip), out=out)
    E.channel_affine(dev.tensor(up), dev.tensor(scale.astype(np.float16), dtype="f16"),
                     dev.tensor(shift.astype(np.float16), dtype="f16"), pad=(0, -1, 0, -1), out=out,
                     out_channel=3)
    s16, t16 = scale.astype(np.float16).astype(np.float64), shift.astype(np.float16).astype(np.float64)
    want = np.concatenate([skip, up[:, :, :8, :10] * s16[:, None, None] + t16[:, None, None]], axis=1)
    np.testing.assert_allclose(out.numpy(), want, rtol=2.5e-7, atol=1e-7)


def test_pad_concat_affine_errors(dev):
    a = dev.tensor(np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(ValueError, match="pad: pads"):
        E.pad(a, (1, 2, 3))
    with pytest.raises(ValueError, match="pad: .*crop more"):
        E.pad(a, (-3, -3))
    with pytest.raises(ValueError, match=r"concat: shapes must match except along dim 1"):
        E.concat([a, dev.tensor(np.zeros((2, 3, 4, 6), np.float32))], dim=1)
    with pytest.raises(ValueError, match="concat: dim"):
        E.concat([a], dim=4)
    with pytest.raises(ValueError, match=r"channel_affine: scale and shift must have shape \(3,\)"):
        E.channel_affine(a, dev.tensor(np.zeros(4, np.float32)), dev.tensor(np.zeros(4, np.float32)))
    with pytest.raises(ValueError, match="channel_affine: give both"):
        E.channel_affine(a, dev.tensor(np.zeros(3, np.float32)))
    with pytest.raises(ValueError, match="channel_affine: act"):
        E.channel_affine(a, act="gelu")
    with pytest.raises(ValueError, match=r"channel_affine: out must be \[2, >= 1 \+ 3, 4, 5\]"):
        E.channel_affine(a, out=dev.empty((2, 3, 4, 5)), out_channel=1)


@pytest.mark.parametrize("name", ["elementwise", "transpose", "pad", "concat", "channel_affine"])
def test_selfcheck(dev, name):
    asyncio.run(CHECKS[name](dev))
