"""Normalization layers (kernels/norm.wgsl), with torch.nn.functional semantics.

    layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5)
    group_norm(x, num_groups, weight=None, bias=None, eps=1e-5)          x [N, C, *]
    batch_norm(x, running_mean, running_var, weight=None, bias=None, eps=1e-5)
                                                        inference only, x [N, C, *]

x is f32; the parameters may be f32 or f16 (all the same dtype). Statistics are
two-pass in f32 (mean, then centered sum of squares); variance is biased, as in torch.
"""

from __future__ import annotations

import array
import math

from ..gpu.runtime import ceil_div
from ..gpu.selfcheck import assert_close, check, flat, rand, rng
from . import expect, expect_dtype, expect_loop_steps, same_device

EWG = 256   # batch_norm invocations per workgroup, as in norm.wgsl


def _params_dtype(op, x, *params):
    """Check the optional parameter tensors; return the W alias dict for the kernel."""
    given = [t for t in params if t is not None]
    same_device(op, x, *given)
    for t in given:
        expect_dtype(op, t, "f32", "f16")
    expect(op, len({t.dtype for t in given}) <= 1, "weight/bias/statistics must share one dtype", *given)
    return {"W": "f16"} if given and given[0].dtype == "f16" else None


def _row_loops(op, length, x):
    """norm_rows: each of a row's 64 invocations strides over it 3 times (+ 2 trees)."""
    expect_loop_steps(op, 3 * (ceil_div(length, 64) + 1) + 16, f"normalizing rows of {length} values", x)


ACTS = {None: 0, "relu": 1, "leaky_relu": 2}   # layer_norm's fused activation (norm.wgsl ACT)


def _run(entry, grid, x, out, aliases, w=None, b=None, rm=None, rv=None, act=None, slope=0.0, **params):
    kernel = x.dev.kernel("norm", entry, consts={"ACT": ACTS[act]} if act else None, aliases=aliases)
    x.dev.run(kernel, grid, x=x, out=out,
              w=w if w is not None else x, b=b if b is not None else x,
              rm=rm if rm is not None else x, rv=rv if rv is not None else x,
              has_w=int(w is not None), has_b=int(b is not None), slope=slope, **params)
    return out


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, act=None, alpha=0.01):
    """Normalize over the last len(normalized_shape) dims, then scale by weight and add
    bias; then act: None, "relu" or "leaky_relu" (negative slope alpha), in the same
    dispatch."""
    op = "layer_norm"
    expect_dtype(op, x, "f32")
    expect(op, act in ACTS, f"act must be None, 'relu' or 'leaky_relu', got {act!r}", x)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    expect(op, 1 <= k <= x.ndim and tuple(x.shape[x.ndim - k:]) == shape,
           f"normalized_shape {shape} must match the last dims of x", x)
    for t in (weight, bias):
        expect(op, t is None or t.shape == shape, f"weight and bias must have shape {shape}", x, t)
    aliases = _params_dtype(op, x, weight, bias)
    n = 1
    for s in shape:
        n *= s
    expect(op, n > 0, "normalized_shape must not be empty", x)
    _row_loops(op, n, x)
    rows = x.size // n
    out = x.dev.empty(x.shape)
    return _run("norm_rows", rows, x, out, aliases, weight, bias, act=act, slope=float(alpha),
                rows=rows, len=n, groups=1, spatial=1, channels=1, eps=eps)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalize each group of C / num_groups channels of x [N, C, *]; weight/bias [C]."""
    op = "group_norm"
    expect_dtype(op, x, "f32")
    expect(op, x.ndim >= 2, "x must be [N, C, *]", x)
    c = x.shape[1]
    expect(op, isinstance(num_groups, int) and num_groups > 0 and c % num_groups == 0,
           f"{c} channels do not split into {num_groups!r} groups", x)
    for t in (weight, bias):
        expect(op, t is None or t.shape == (c,), f"weight and bias must have shape ({c},)", x, t)
    aliases = _params_dtype(op, x, weight, bias)
    spatial = x.size // (x.shape[0] * c) if x.size else 0
    rows = x.shape[0] * num_groups
    length = (c // num_groups) * spatial
    _row_loops(op, length, x)
    out = x.dev.empty(x.shape)
    if length == 0:
        return out
    return _run("norm_rows", rows, x, out, aliases, weight, bias,
                rows=rows, len=length, groups=num_groups, spatial=spatial, channels=c, eps=eps)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, eps=1e-5):
    """Inference batch norm of x [N, C, *] with per-channel statistics [C]."""
    op = "batch_norm"
    expect_dtype(op, x, "f32")
    expect(op, x.ndim >= 2, "x must be [N, C, *]", x)
    c = x.shape[1]
    for t in (running_mean, running_var):
        expect(op, t is not None and t.shape == (c,), f"running_mean and running_var must have shape ({c},)", x, t)
    for t in (weight, bias):
        expect(op, t is None or t.shape == (c,), f"weight and bias must have shape ({c},)", x, t)
    aliases = _params_dtype(op, x, running_mean, running_var, weight, bias)
    spatial = 1
    for s in x.shape[2:]:
        spatial *= s
    out = x.dev.empty(x.shape)
    return _run("batch_norm", ceil_div(x.size, EWG), x, out, aliases, weight, bias, running_mean, running_var,
                rows=x.size, len=0, groups=1, spatial=spatial, channels=c, eps=eps)


# ---------------------------------------------------------------- self-checks


def _f32(values):
    """Round to float32, as the upload does, so references start from the same inputs."""
    return array.array("f", values).tolist()


def _normalize(row, eps):
    m = math.fsum(row) / len(row)
    var = math.fsum((v - m) ** 2 for v in row) / len(row)
    return [(v - m) / math.sqrt(var + eps) for v in row]


# Normalized outputs are O(1); with f32 sums over <= 100 terms and inverseSqrt's
# 2 ulp, errors stay near 1e-6. Inputs carry an offset so the centering matters.


@check("layer_norm")
async def _check_layer_norm(dev):
    r = rng(7)
    rows, n = 3, 100   # n > 64: several terms per invocation
    vals = _f32([5.0 + 2.0 * v for v in rand(r, rows * n)])
    w, b = _f32(rand(r, n, 0.5, 1.5)), _f32(rand(r, n))
    got = flat(await layer_norm(dev.tensor(vals, (rows, n)), n, dev.tensor(w), dev.tensor(b)).read())
    want = []
    for i in range(rows):
        y = _normalize(vals[i * n:(i + 1) * n], 1e-5)
        want += [y[j] * w[j] + b[j] for j in range(n)]
    return assert_close("layer_norm", got, want, rtol=1e-5, atol=1e-5)


@check("group_norm")
async def _check_group_norm(dev):
    r = rng(8)
    shape, g = (2, 6, 5), 3     # groups of 2 channels x 5 positions
    vals = _f32([-3.0 + v for v in rand(r, 60)])
    w, b = _f32(rand(r, 6, 0.5, 1.5)), _f32(rand(r, 6))
    got = flat(await group_norm(dev.tensor(vals, shape), g, dev.tensor(w), dev.tensor(b)).read())
    want = []
    for row in range(2 * g):
        y = _normalize(vals[row * 10:(row + 1) * 10], 1e-5)
        want += [y[j] * w[(row % g) * 2 + j // 5] + b[(row % g) * 2 + j // 5] for j in range(10)]
    return assert_close("group_norm", got, want, rtol=1e-5, atol=1e-5)


@check("batch_norm")
async def _check_batch_norm(dev):
    r = rng(9)
    shape = (2, 3, 4)
    vals = _f32(rand(r, 24, -2.0, 2.0))
    rm, rv = _f32(rand(r, 3)), _f32(rand(r, 3, 0.5, 2.0))
    w, b = _f32(rand(r, 3, 0.5, 1.5)), _f32(rand(r, 3))
    t = [dev.tensor(v) for v in (rm, rv, w, b)]
    got = flat(await batch_norm(dev.tensor(vals, shape), *t, eps=1e-3).read())
    want = [(v - rm[c]) / math.sqrt(rv[c] + 1e-3) * w[c] + b[c]
            for i, v in enumerate(vals) for c in [(i // 4) % 3]]
    return assert_close("batch_norm", got, want, rtol=1e-5, atol=1e-6)
