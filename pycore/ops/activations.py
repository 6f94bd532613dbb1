"""Activations (kernels/activations.wgsl), with torch semantics.

    relu(x)  gelu(x, approximate="none"|"tanh")  tanh(x)  sigmoid(x)
    glu(x, dim=-1)       split x in halves along dim: first * sigmoid(second)
    softmax(x, dim=-1)   along any dim, any length

Inputs are f32 tensors; every op returns a new f32 tensor.
"""

from __future__ import annotations

import array
import math

from ..gpu.runtime import ceil_div
from ..gpu.selfcheck import assert_close, check, flat, rand, rng
from . import expect, expect_dtype, expect_loop_steps

WG = 256   # unary / glu invocations per workgroup, as in activations.wgsl
ACTS = {"relu": 0, "gelu": 1, "gelu_tanh": 2, "tanh": 3, "sigmoid": 4}


def _run(entry, x, out, grid, consts=None, n=0, len=0, inner=1):
    kernel = x.dev.kernel("activations", entry, consts=consts)
    x.dev.run(kernel, grid, x=x, out=out, n=n, len=len, inner=inner)
    return out


def _unary(op, act, x):
    expect_dtype(op, x, "f32")
    out = x.dev.empty(x.shape)
    return _run("unary", x, out, ceil_div(x.size, WG), consts={"ACT": ACTS[act]}, n=x.size)


def _axis(op, x, dim):
    """(outer, size, inner) of x around dim, after checking dim."""
    expect(op, isinstance(dim, int) and -x.ndim <= dim < x.ndim, f"dim {dim!r} out of range", x)
    dim %= x.ndim
    outer = inner = 1
    for s in x.shape[:dim]:
        outer *= s
    for s in x.shape[dim + 1:]:
        inner *= s
    return dim, outer, x.shape[dim], inner


def relu(x):
    return _unary("relu", "relu", x)


def gelu(x, approximate="none"):
    """GELU; approximate="none" is the exact erf form (torch's default), "tanh" the approximation."""
    expect("gelu", approximate in ("none", "tanh"), f"approximate must be 'none' or 'tanh', got {approximate!r}", x)
    return _unary("gelu", "gelu" if approximate == "none" else "gelu_tanh", x)


def tanh(x):
    return _unary("tanh", "tanh", x)


def sigmoid(x):
    return _unary("sigmoid", "sigmoid", x)


def glu(x, dim=-1):
    """torch.nn.functional.glu: a, b = x.chunk(2, dim); a * sigmoid(b)."""
    expect_dtype("glu", x, "f32")
    expect("glu", x.ndim >= 1, "needs at least one dim", x)
    dim, outer, size, inner = _axis("glu", x, dim)
    expect("glu", size % 2 == 0, f"size {size} of dim {dim} must be even", x)
    shape = list(x.shape)
    shape[dim] = size // 2
    out = x.dev.empty(tuple(shape))
    return _run("glu", x, out, ceil_div(out.size, WG), n=out.size, len=size // 2, inner=inner)


def softmax(x, dim=-1):
    """torch.softmax(x, dim): subtracts the row max, accumulates in f32."""
    expect_dtype("softmax", x, "f32")
    expect("softmax", x.ndim >= 1, "needs at least one dim", x)
    dim, outer, size, inner = _axis("softmax", x, dim)
    # each of the 64 invocations of a row strides over it twice, then merges in a tree
    expect_loop_steps("softmax", 2 * (ceil_div(size, 64) + 1) + 8, f"a softmax over {size} values", x)
    out = x.dev.empty(x.shape)
    if size == 0:
        return out
    return _run("softmax", x, out, outer * inner, n=outer * inner, len=size, inner=inner)


# ---------------------------------------------------------------- self-checks


def _f32(values):
    """Round to float32, as the upload does, so references start from the same inputs."""
    return array.array("f", values).tolist()


def _sigmoid_ref(v):
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


@check("activations")
async def _check_activations(dev):
    r = rng(3)
    vals = _f32(rand(r, 40, -6.0, 6.0) + [0.0, 1e-3, -1e-3, 0.3, 30.0, -30.0, 100.0, -100.0])
    x = dev.tensor(vals)
    refs = {
        "relu": (relu(x), [max(v, 0.0) for v in vals]),
        "gelu": (gelu(x), [0.5 * v * math.erfc(-v / math.sqrt(2.0)) for v in vals]),
        "gelu tanh": (gelu(x, approximate="tanh"),
                      [0.5 * v * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)))
                       for v in vals]),
        "tanh": (tanh(x), [math.tanh(v) for v in vals]),
        "sigmoid": (sigmoid(x), [_sigmoid_ref(v) for v in vals]),
    }
    detail = ""
    for name, (t, want) in refs.items():
        # A few f32 roundings plus exp's error (Vulkan allows a few ulp): 2e-6
        # relative; atol 1e-7 for values that round near zero (relu exact anyway).
        detail = assert_close(name, flat(await t.read()), want, rtol=2e-6, atol=1e-7)
    return detail


@check("glu")
async def _check_glu(dev):
    r = rng(4)
    shape = (2, 4, 3)  # split dim 1 -> (2, 2, 3)
    vals = _f32(rand(r, 24, -4.0, 4.0))
    got = flat(await glu(dev.tensor(vals, shape), dim=1).read())
    want = [vals[(o * 4 + j) * 3 + k] * _sigmoid_ref(vals[(o * 4 + j + 2) * 3 + k])
            for o in range(2) for j in range(2) for k in range(3)]
    return assert_close("glu dim=1", got, want, rtol=2e-6, atol=1e-7)


@check("softmax")
async def _check_softmax(dev):
    r = rng(5)
    rows, n = 3, 150  # n > the 64-invocation workgroup: exercises the strided loop
    vals = _f32([v + 1e4 * (i // n) for i, v in enumerate(rand(r, rows * n, -8.0, 8.0))])  # row offsets 0, 1e4, 2e4
    got = flat(await softmax(dev.tensor(vals, (rows, n))).read())
    want = []
    for i in range(rows):
        row = vals[i * n:(i + 1) * n]
        m = max(row)
        e = [math.exp(v - m) for v in row]
        s = sum(e)
        want += [v / s for v in e]
    # x - max is exact-ish (f32 values 1e4 apart carry ~1e-3 absolute rounding, already
    # in the rounded inputs); exp adds a few ulp and the f32 sum of 150 terms ~1e-6.
    return assert_close("softmax rows", got, want, rtol=1e-5, atol=1e-8)
