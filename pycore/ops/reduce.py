"""Reductions along one axis or over all elements (kernels/reduce.wgsl).

    sum(x, dim=None, keepdim=False)
    mean(x, dim=None, keepdim=False)
    std(x, dim=None, unbiased=True, keepdim=False)    two-pass: mean, then centered squares
    max(x, dim=None, keepdim=False)                   values only (like torch.amax)

dim=None reduces every element to a 0-d tensor (shape ()). x is f32, any length;
float32 accumulation (short per-invocation runs, then trees; see the kernel header).
"""

from __future__ import annotations

import array
import builtins
import math

from ..gpu.runtime import ceil_div
from ..gpu.selfcheck import assert_close, check, flat, rand, rng
from . import expect, expect_dtype

WG = 64          # invocations per workgroup, as in reduce.wgsl
CHUNK = 1024     # axis elements per workgroup in one reduce_wg pass (16 per invocation)
SMALL = 64       # axes up to this long use one invocation per output (reduce_thread)
SUM, MAX, SQDEV = 0, 1, 2


def _axis(op, x, dim):
    """(outer, len, inner, output shape without keepdim, with keepdim) for dim."""
    expect_dtype(op, x, "f32")
    if dim is None:
        expect(op, x.size > 0, "cannot reduce an empty tensor", x)
        return 1, x.size, 1, (), (1,) * x.ndim
    expect(op, x.ndim >= 1, "cannot reduce a 0-d tensor along a dim", x)
    expect(op, isinstance(dim, int) and not isinstance(dim, bool) and -x.ndim <= dim < x.ndim,
           f"dim {dim!r} out of range for {x.ndim} dims", x)
    dim %= x.ndim
    expect(op, x.shape[dim] > 0, f"cannot reduce dim {dim} of size 0", x)
    outer = inner = 1
    for s in x.shape[:dim]:
        outer *= s
    for s in x.shape[dim + 1:]:
        inner *= s
    drop = x.shape[:dim] + x.shape[dim + 1:]
    keep = x.shape[:dim] + (1,) + x.shape[dim + 1:]
    return outer, x.shape[dim], inner, drop, keep


def _reduce(x, outer, n, inner, op, mul=1.0, root=False, center=None):
    """Reduce x viewed as [outer, n, inner] over n -> flat tensor of outer * inner values."""
    dev = x.dev
    c = center if center is not None else x   # unused binding unless op == SQDEV
    if n <= SMALL:
        kernel = dev.kernel("reduce", "reduce_thread", consts={"OP": op})
        out = dev.empty((outer * inner,))
        dev.run(kernel, ceil_div(outer * inner, WG), x=x, c=c, out=out, outer=outer, len=n,
                inner=inner, chunk=n, parts=1, mul=mul, root=int(root))
        return out
    while True:
        parts = ceil_div(n, CHUNK)
        last = parts == 1
        kernel = dev.kernel("reduce", "reduce_wg", consts={"OP": op})
        out = dev.empty((outer * parts * inner,))
        dev.run(kernel, outer * parts * inner, x=x, c=c, out=out, outer=outer, len=n, inner=inner,
                chunk=CHUNK, parts=parts, mul=mul if last else 1.0, root=int(root and last))
        if last:
            return out
        # partial results [outer, parts, inner]: sum them (also for SQDEV) or max them
        x, n, op = out, parts, (MAX if op == MAX else SUM)


def _shaped(flat_out, drop, keep, keepdim):
    return flat_out.reshape(keep if keepdim else drop)


def sum(x, dim=None, keepdim=False):
    """Sum over dim (or all elements), float32 accumulation."""
    outer, n, inner, drop, keep = _axis("sum", x, dim)
    return _shaped(_reduce(x, outer, n, inner, SUM), drop, keep, keepdim)


def mean(x, dim=None, keepdim=False):
    """Mean over dim (or all elements)."""
    outer, n, inner, drop, keep = _axis("mean", x, dim)
    return _shaped(_reduce(x, outer, n, inner, SUM, mul=1.0 / n), drop, keep, keepdim)


def std(x, dim=None, unbiased=True, keepdim=False):
    """Standard deviation over dim (or all elements); divides by n - 1 when unbiased."""
    outer, n, inner, drop, keep = _axis("std", x, dim)
    ddof = 1 if unbiased else 0
    expect("std", n - ddof > 0, f"needs more than {ddof} element(s) along the reduced axis", x)
    m = _reduce(x, outer, n, inner, SUM, mul=1.0 / n)
    out = _reduce(x, outer, n, inner, SQDEV, mul=1.0 / (n - ddof), root=True, center=m)
    return _shaped(out, drop, keep, keepdim)


def max(x, dim=None, keepdim=False):
    """Maximum over dim (or all elements); values only, like torch.amax."""
    outer, n, inner, drop, keep = _axis("max", x, dim)
    return _shaped(_reduce(x, outer, n, inner, MAX), drop, keep, keepdim)


# ---------------------------------------------------------------- self-checks


@check("reduce")
async def _check_reduce(dev):
    r = rng(6)
    # [3, 70, 2]: the 70-long middle axis takes the workgroup path (> SMALL = 64),
    # the 3-long first axis the per-invocation path; values have a mean of 100.
    shape = (3, 70, 2)
    vals = array.array("f", [100.0 + v for v in rand(r, 420)]).tolist()
    x = dev.tensor(vals, shape)

    def column(o, i):
        return [vals[(o * 70 + j) * 2 + i] for j in range(70)]

    cols = [column(o, i) for o in range(3) for i in range(2)]
    want_mean = [math.fsum(col) / 70 for col in cols]
    want_std = [math.sqrt(math.fsum((v - m) ** 2 for v in col) / 69) for col, m in zip(cols, want_mean)]
    # f32 sums of 70 positive values: <= 22 roundings (16 in a run, 6 tree levels) of
    # 6e-8 each, ~1.3e-6 relative at worst.
    assert_close("sum dim=1", flat(await sum(x, dim=1).read()), [m * 70 for m in want_mean], rtol=2e-6)
    assert_close("mean dim=1", flat(await mean(x, dim=1).read()), want_mean, rtol=2e-6)
    # std: x - mean is exact here (Sterbenz); the sums of squares round ~22 times: ~1.3e-6.
    detail = assert_close("std dim=1", flat(await std(x, dim=1).read()), want_std, rtol=5e-6)
    assert_close("max dim=1", flat(await max(x, dim=1).read()), [builtins.max(col) for col in cols], rtol=0, atol=0)
    want0 = [math.fsum(vals[(o * 70 + j) * 2 + i] for o in range(3)) for j in range(70) for i in range(2)]
    assert_close("sum dim=0", flat(await sum(x, dim=0).read()), want0, rtol=1e-6)
    assert_close("sum all", flat(await sum(x).read()), [math.fsum(vals)], rtol=2e-6)
    return detail
