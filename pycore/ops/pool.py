"""Pooling (kernels/pool.wgsl).

    max_pool2d(x, kernel, stride=None, scale=None, shift=None)

x [N, C, H, W] f32; kernel and stride are an int or (kh, kw) (stride defaults to the
kernel); no padding, floor mode, like torch.nn.functional.max_pool2d's defaults.
scale and shift [C] (f32 or f16, both or neither) apply x * scale[c] + shift[c] to
every input before the max: an inference BatchNorm between an activation and the pool
(CREPE's layers are max_pool(batch_norm(relu(conv)))), in the same pass.
Returns a new f32 tensor [N, C, (H - kh) // sh + 1, (W - kw) // sw + 1].
"""

from __future__ import annotations

from ..gpu.runtime import Tensor, ceil_div
from ..gpu.selfcheck import assert_close, check, rand, rng
from . import LOOP_LIMIT, expect, expect_dtype, expect_loop_steps, expect_scale_shift

WG = 64  # invocations per workgroup
RUN = 8  # output elements per invocation (p.run in kernels/pool.wgsl), fewer for huge windows


def _pair(op, name, v):
    if isinstance(v, int) and not isinstance(v, bool):
        v = (v, v)
    ok = (isinstance(v, (tuple, list)) and len(v) == 2
          and all(isinstance(i, int) and not isinstance(i, bool) and i >= 1 for i in v))
    expect(op, ok, f"{name} must be an int >= 1 or two of them, got {v!r}")
    return tuple(v)


def max_pool2d(x, kernel, stride=None, scale=None, shift=None):
    op = "max_pool2d"
    expect(op, isinstance(x, Tensor), "x must be a Tensor")
    expect_dtype(op, x, "f32")
    expect(op, x.ndim == 4, "x must be [N, C, H, W]", x)
    kh, kw = _pair(op, "kernel", kernel)
    sh, sw = _pair(op, "stride", kernel if stride is None else stride)
    n, c, h, w = x.shape
    expect(op, h >= kh and w >= kw, f"kernel ({kh}, {kw}) is larger than the input", x)
    passes = kh * (kw + 1) + 2                     # loop passes of one output (its window, the run loop)
    expect_loop_steps(op, passes, f"a ({kh}, {kw}) window", x)
    run = max(1, min(RUN, LOOP_LIMIT // passes))   # outputs per invocation within the loop budget
    expect_scale_shift(op, x, scale, shift, c)
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    dev = x.dev
    out = dev.empty((n, c, oh, ow))
    if out.size == 0:
        return out
    aliases = {"S": "f16"} if scale is not None and scale.dtype == "f16" else None
    kernel_ = dev.kernel("pool", "max_pool2d", consts={"WG": WG, "AFFINE": int(scale is not None)},
                         aliases=aliases)
    dev.run(kernel_, ceil_div(out.size, WG * run), x=x, scale=scale if scale is not None else x,
            shift=shift if shift is not None else x, out=out,
            n=out.size, c=c, h=h, w=w, oh=oh, ow=ow, kh=kh, kw=kw, sh=sh, sw=sw, run=run)
    return out


# --------------------------------------------------------------------------- self-check
# Pure-Python float64 reference: the max over each window of x * scale + shift. The GPU
# sees x, scale and shift rounded to f32 and rounds the product and the sum: at most
# 4 roundings of 2^-24 relative to values of magnitude <= 2 (x, scale, shift in
# [-1, 1]): |err| <= 8 * 2^-24 = 2^-21. The max adds none.


def _ref_max_pool(xs, shape, k, s, scale, shift):
    n, c, h, w = shape
    oh, ow = (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1
    out = []
    for i in range(n):
        for ch in range(c):
            a, b = (scale[ch], shift[ch]) if scale is not None else (1.0, 0.0)
            for y in range(oh):
                for x in range(ow):
                    out.append(max(xs[((i * c + ch) * h + y * s[0] + u) * w + x * s[1] + v] * a + b
                                   for u in range(k[0]) for v in range(k[1])))
    return out


@check("max_pool2d")
async def _check_max_pool2d(dev):
    r = rng(31)
    details = []
    for shape, k, s, affine in (((2, 3, 7, 5), (2, 1), (2, 1), True), ((1, 2, 5, 6), (3, 2), (1, 2), False)):
        xs = rand(r, shape[0] * shape[1] * shape[2] * shape[3])
        scale = rand(r, shape[1]) if affine else None   # negative scales included
        shift = rand(r, shape[1]) if affine else None
        got = await max_pool2d(dev.tensor(xs, shape), k, s,
                               dev.tensor(scale) if affine else None,
                               dev.tensor(shift) if affine else None).read()
        details.append(assert_close(f"max_pool2d {k} {s}", got, _ref_max_pool(xs, shape, k, s, scale, shift),
                                    rtol=0, atol=2.0**-21))
    return "; ".join(details)
