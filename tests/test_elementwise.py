"""Elementwise ops against numpy.

add/sub/mul are correctly rounded in Vulkan (and WebGPU), so with float32 inputs the
GPU must reproduce numpy's float32 results bit for bit; copy and transpose move bits.
"""

import asyncio

import numpy as np
import pytest

from pycore.ops import elementwise as E
from pycore.selfcheck import CHECKS

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


@pytest.mark.parametrize("name", ["elementwise", "transpose"])
def test_selfcheck(dev, name):
    asyncio.run(CHECKS[name](dev))
