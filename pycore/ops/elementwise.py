"""Elementwise ops: add, sub, mul, scale, copy and transpose (kernels/elementwise.wgsl).

    add(a, b)  sub(a, b)  mul(a, b)   b: a Tensor of a's shape, of a's trailing dims
                                      (broadcast over a's leading dims, e.g. a bias
                                      [C] over [N, T, C]), a one-element Tensor, or a
                                      Python number. b may hold f16 weights.
    scale(a, s)                       a * s for a Python number s
    copy(a)                           a new contiguous copy
    transpose(a, dims)                permute dims (like torch.permute) into a new
                                      contiguous tensor, rank <= 6

All results are new f32 tensors of a's shape (transpose: the permuted shape).
"""

from __future__ import annotations

import array
import numbers

from ..runtime import Tensor, ceil_div
from ..selfcheck import assert_close, check, flat, rand, rng
from . import expect, expect_dtype, same_device

WG = 256          # invocations per workgroup, as in elementwise.wgsl
MAX_RANK = 6      # transpose handles up to 6 dims (Params d0..d5 / t0..t5)
OPS = {"add": 0, "sub": 1, "mul": 2}

# All entry points of elementwise.wgsl share one Params struct; fields an entry
# point does not read get these neutral values.
_NEUTRAL = {"n": 0, "nb": 1, "s": 0.0}
_NEUTRAL.update({f"d{k}": 1 for k in range(MAX_RANK)})
_NEUTRAL.update({f"t{k}": 0 for k in range(MAX_RANK)})


def _run(entry, a, out, b=None, consts=None, aliases=None, **params):
    dev = a.dev
    kernel = dev.kernel("elementwise", entry, consts=consts, aliases=aliases)
    args = dict(_NEUTRAL, **params)
    dev.run(kernel, ceil_div(out.size, WG), a=a, b=a if b is None else b, out=out, **args)
    return out


def _is_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _binary(op, a, b):
    expect_dtype(op, a, "f32")
    if _is_number(b):
        out = a.dev.empty(a.shape)
        return _run("binary_scalar", a, out, consts={"OP": OPS[op]}, n=a.size, s=float(b))
    expect(op, isinstance(b, Tensor), "b must be a Tensor or a number", a, b)
    same_device(op, a, b)
    expect_dtype(op, b, "f32", "f16")
    trailing = b.ndim <= a.ndim and tuple(a.shape[a.ndim - b.ndim:]) == b.shape
    expect(op, trailing or (b.size == 1 and b.ndim <= a.ndim),
           "b must have a's shape, a's trailing dims, or a single element", a, b)
    out = a.dev.empty(a.shape)
    aliases = {"W": "f16"} if b.dtype == "f16" else None
    return _run("binary", a, out, b=b, consts={"OP": OPS[op]}, aliases=aliases, n=a.size, nb=b.size)


def add(a, b):
    """a + b (b: same shape, a's trailing dims, one element, or a number)."""
    return _binary("add", a, b)


def sub(a, b):
    """a - b (b: same shape, a's trailing dims, one element, or a number)."""
    return _binary("sub", a, b)


def mul(a, b):
    """a * b (b: same shape, a's trailing dims, one element, or a number)."""
    return _binary("mul", a, b)


def scale(a, s):
    """a * s for a Python number s."""
    expect("scale", _is_number(s), f"s must be a number, got {s!r}", a)
    return _binary("mul", a, s)


def copy(a):
    """A new contiguous f32 tensor with a's values."""
    expect_dtype("copy", a, "f32")
    return _run("copy", a, a.dev.empty(a.shape), n=a.size)


def transpose(a, dims):
    """Permute a's dims like torch.permute(a, dims), into a new contiguous tensor."""
    expect_dtype("transpose", a, "f32")
    dims = tuple(dims)
    expect("transpose", a.ndim <= MAX_RANK, f"rank {a.ndim} > {MAX_RANK} is not supported", a)
    expect("transpose", all(isinstance(d, int) for d in dims), f"dims {dims} must be ints", a)
    norm = tuple(d + a.ndim if d < 0 else d for d in dims)
    expect("transpose", sorted(norm) == list(range(a.ndim)), f"dims {dims} are not a permutation of {a.ndim} dims", a)
    strides, step = [0] * a.ndim, 1
    for k in reversed(range(a.ndim)):
        strides[k], step = step, step * a.shape[k]
    shape = [a.shape[d] for d in norm]
    pad = MAX_RANK - a.ndim  # leading dims of size 1, stride 0
    params = {f"d{k}": 1 for k in range(pad)}
    params.update({f"t{k}": 0 for k in range(pad)})
    for k, d in enumerate(norm):
        params[f"d{pad + k}"] = a.shape[d]
        params[f"t{pad + k}"] = strides[d]
    out = a.dev.empty(tuple(shape))
    return _run("permute", a, out, n=a.size, **params)


# ---------------------------------------------------------------- self-checks


def _f32(values):
    """Round to float32, as the upload does, so references start from the same inputs."""
    return array.array("f", values).tolist()


@check("elementwise")
async def _check_elementwise(dev):
    r = rng(1)
    a_vals, b_vals = _f32(rand(r, 2 * 3 * 5)), _f32(rand(r, 5))
    a, b = dev.tensor(a_vals, (2, 3, 5)), dev.tensor(b_vals, (5,))
    full = dev.tensor(b_vals * 6, (2, 3, 5))
    # One f32 rounding of the exact result: relative error <= 2**-24 ~ 6e-8.
    details = []
    for name, fn, ref in (
        ("add", add(a, b), lambda x, y: x + y),
        ("sub", sub(a, full), lambda x, y: x - y),
        ("mul", mul(a, b), lambda x, y: x * y),
    ):
        want = [ref(x, b_vals[i % 5]) for i, x in enumerate(a_vals)]
        details.append(assert_close(name, flat(await fn.read()), want, rtol=1e-7, atol=0))
    assert_close("scale", flat(await scale(a, -1.5).read()), [-1.5 * x for x in a_vals], rtol=1e-7, atol=0)
    assert_close("add scalar", flat(await add(a, 0.25).read()), [x + 0.25 for x in a_vals], rtol=1e-7, atol=0)
    assert_close("copy", flat(await copy(a).read()), a_vals, rtol=0, atol=0)
    return details[-1]


@check("transpose")
async def _check_transpose(dev):
    r = rng(2)
    shape = (2, 3, 4)
    vals = _f32(rand(r, 24))
    got = flat(await transpose(dev.tensor(vals, shape), (2, 0, 1)).read())
    want = [vals[i * 12 + j * 4 + k] for k in range(4) for i in range(2) for j in range(3)]
    return assert_close("transpose (2,0,1)", got, want, rtol=0, atol=0)  # a pure copy: exact
