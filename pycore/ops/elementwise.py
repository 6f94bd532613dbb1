"""Elementwise and data-movement ops (kernels/elementwise.wgsl).

    add(a, b)  sub(a, b)  mul(a, b)   b: a Tensor of a's shape, of a's trailing dims
                                      (broadcast over a's leading dims, e.g. a bias
                                      [C] over [N, T, C]), a one-element Tensor, or a
                                      Python number. b may hold f16 weights.
    scale(a, s)                       a * s for a Python number s
    copy(a)                           a new contiguous copy
    transpose(a, dims)                permute dims (like torch.permute) into a new
                                      contiguous tensor, rank <= 6
    pad(a, pads, value=0.0, out=None) torch.nn.functional.pad, constant mode: pads =
                                      (before, after) pairs from the LAST dim backwards;
                                      negative amounts crop. Rank <= 6. out: an f32
                                      tensor of the result's shape to write instead of
                                      a new one (state a recorded plan carries over).
    concat(tensors, dim=0)            torch.cat: shapes equal except along dim. Rank <= 6.
    channel_affine(x, scale, shift, act=None, alpha=0.01, pad=(0, 0, 0, 0), out=None,
                   out_channel=0)
                                      act(x * scale[c] + shift[c]) over x [N, C, H, W]: an
                                      inference BatchNorm folded into scale/shift [C]
                                      (f32 or f16); act None, "relu" or "leaky_relu";
                                      fused zero padding / cropping of H and W and
                                      writing into a channel slice of `out`.

All results are new f32 tensors of a's shape (transpose: the permuted shape).
"""

from __future__ import annotations

import array
import numbers

from ..gpu.runtime import Tensor, ceil_div
from ..gpu.selfcheck import assert_close, check, flat, rand, rng
from . import expect, expect_dtype, expect_scale_shift, same_device

WG = 256          # invocations per workgroup, as in elementwise.wgsl
MAX_RANK = 6      # transpose handles up to 6 dims (Params d0..d5 / t0..t5)
OPS = {"add": 0, "sub": 1, "mul": 2}
AFFINE_ACTS = {None: 0, "relu": 1, "leaky_relu": 2}

# All entry points of elementwise.wgsl share one Params struct; fields an entry
# point does not read get these neutral values.
_NEUTRAL = {"n": 0, "nb": 1, "s": 0.0}
_NEUTRAL.update({f"{f}{k}": 1 for f in "de" for k in range(MAX_RANK)})
_NEUTRAL.update({f"{f}{k}": 0 for f in "to" for k in range(MAX_RANK)})


def _run(entry, a, out, b=None, c=None, consts=None, aliases=None, **params):
    dev = a.dev
    kernel = dev.kernel("elementwise", entry, consts=consts, aliases=aliases)
    args = dict(_NEUTRAL, **params)
    dev.run(kernel, ceil_div(args["n"], WG), a=a, b=a if b is None else b, c=a if c is None else c,
            out=out, **args)
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


def copy(a, out=None):
    """A new contiguous f32 tensor with a's values; with out (a tensor of a's size), into
    out instead (e.g. a recorded plan's new state into its old state tensor)."""
    expect_dtype("copy", a, "f32")
    if out is None:
        out = a.dev.empty(a.shape)
    else:
        expect("copy", isinstance(out, Tensor) and out.dtype == "f32" and out.size == a.size,
               f"out must be an f32 tensor of {a.size} values", a, out)
        expect("copy", out.buffer is not a.buffer, "out must not be a itself", a, out)
    return _run("copy", a, out, n=a.size)


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


def _rank6(prefix, values, fill):
    """Params {prefix0..prefix5} for up to 6 per-dim values, left-padded with `fill`."""
    values = [fill] * (MAX_RANK - len(values)) + list(values)
    return {f"{prefix}{k}": v for k, v in enumerate(values)}


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def pad(a, pads, value=0.0, out=None):
    """torch.nn.functional.pad(a, pads, mode="constant", value): pads lists (before, after)
    for the last dim, then the one before it, and so on; negative amounts crop. out: an
    f32 Tensor of the result's shape (not a) to write into, else a new one."""
    op = "pad"
    expect_dtype(op, a, "f32")
    pads = tuple(pads)
    expect(op, a.ndim <= MAX_RANK, f"rank {a.ndim} > {MAX_RANK} is not supported", a)
    expect(op, len(pads) % 2 == 0 and len(pads) // 2 <= a.ndim and all(_is_int(v) for v in pads),
           f"pads {pads} must be (before, after) int pairs for at most {a.ndim} trailing dims", a)
    expect(op, _is_number(value), f"value must be a number, got {value!r}", a)
    before, shape = [0] * a.ndim, list(a.shape)
    for j in range(len(pads) // 2):
        k = a.ndim - 1 - j
        before[k] = pads[2 * j]
        shape[k] += pads[2 * j] + pads[2 * j + 1]
    expect(op, min(shape, default=0) >= 0, f"pads {pads} crop more than the tensor holds", a)
    if out is None:
        out = a.dev.empty(tuple(shape))
    else:
        expect(op, isinstance(out, Tensor) and out.shape == tuple(shape) and out.dtype == "f32",
               f"out must be an f32 Tensor of the result's shape {tuple(shape)}", a, out)
        same_device(op, a, out)
        expect(op, out.buffer is not a.buffer, "out must not be a itself", a)
    if out.size == 0:
        return out
    return _run("pad", a, out, n=out.size, s=float(value),
                **_rank6("d", shape, 1), **_rank6("e", a.shape, 1), **_rank6("o", before, 0))


def concat(tensors, dim=0):
    """torch.cat(tensors, dim): f32 tensors of one rank, equal shapes except along dim."""
    op = "concat"
    tensors = list(tensors)
    expect(op, len(tensors) >= 1 and all(isinstance(t, Tensor) for t in tensors),
           "needs a non-empty list of Tensors")
    first = tensors[0]
    same_device(op, *tensors)
    for t in tensors:
        expect_dtype(op, t, "f32")
    expect(op, 1 <= first.ndim <= MAX_RANK, f"rank must be 1..{MAX_RANK}", first)
    expect(op, _is_int(dim) and -first.ndim <= dim < first.ndim, f"dim {dim!r} is out of range", first)
    dim %= first.ndim
    rest = lambda t: t.shape[:dim] + t.shape[dim + 1:]  # noqa: E731
    expect(op, all(t.ndim == first.ndim and rest(t) == rest(first) for t in tensors),
           f"shapes must match except along dim {dim}", *tensors)
    shape = list(first.shape)
    shape[dim] = sum(t.shape[dim] for t in tensors)
    out = first.dev.empty(tuple(shape))
    offset = 0
    for t in tensors:
        if t.size:
            origin = [0] * t.ndim
            origin[dim] = offset
            _run("place", t, out, n=t.size,
                 **_rank6("d", shape, 1), **_rank6("e", t.shape, 1), **_rank6("o", origin, 0))
        offset += t.shape[dim]
    return out


def channel_affine(x, scale=None, shift=None, act=None, alpha=0.01, pad=(0, 0, 0, 0), out=None,
                   out_channel=0):
    """act(x * scale[c] + shift[c]) per channel c of x [N, C, H, W] (or [N, C, *] without
    pad): an inference BatchNorm folded into scale and shift [C] (f32 or f16; both None:
    no affine map), act None, "relu" or "leaky_relu" (negative slope alpha). Fused with:

    pad = (left, right, top, bottom): zero padding of W and H after the activation, like
        torch.nn.functional.pad (negative amounts crop);
    out, out_channel: write into channels out_channel .. out_channel + C - 1 of an
        existing f32 tensor out [N, C_out, H', W'] (H', W' = the padded sizes) instead of
        a new one, e.g. a slice of a U-Net's concatenation. Returns out."""
    op = "channel_affine"
    expect(op, isinstance(x, Tensor), "x must be a Tensor")
    expect_dtype(op, x, "f32")
    expect(op, x.ndim >= 2, "x must be [N, C, H, W] (or [N, C, *] without pad)", x)
    pad = tuple(pad)
    expect(op, len(pad) == 4 and all(_is_int(v) for v in pad),
           f"pad must be 4 ints (left, right, top, bottom), got {pad!r}", x)
    if x.ndim == 4:
        n, c, h, w = x.shape
    else:  # [N, C, *] runs as [N, C, 1, *]
        expect(op, pad == (0, 0, 0, 0) and out is None, "pad and out need x [N, C, H, W]", x)
        n, c = x.shape[:2]
        h, w = 1, x.size // max(1, n * c)
    expect_scale_shift(op, x, scale, shift, c)
    expect(op, act in AFFINE_ACTS, f"act must be None, 'relu' or 'leaky_relu', got {act!r}", x)
    expect(op, _is_number(alpha), f"alpha must be a number, got {alpha!r}", x)
    left, right, top, bottom = pad
    ho, wo = h + top + bottom, w + left + right
    expect(op, ho >= 0 and wo >= 0, f"pad {pad} crops more than x holds", x)
    if out is None:
        expect(op, out_channel == 0, "out_channel needs out", x)
        out = x.dev.empty((n, c, ho, wo) if x.ndim == 4 else x.shape)
    else:
        expect(op, isinstance(out, Tensor), "out must be a Tensor or None", x)
        same_device(op, x, out)
        expect_dtype(op, out, "f32")
        expect(op, _is_int(out_channel) and out_channel >= 0,
               f"out_channel must be an int >= 0, got {out_channel!r}")
        expect(op, out.ndim == 4 and out.shape[0] == n and out.shape[2:] == (ho, wo)
               and out_channel + c <= out.shape[1],
               f"out must be [{n}, >= {out_channel} + {c}, {ho}, {wo}]", x, out)
    invocations = n * c * ho * ((wo + 3) // 4)  # one per 4 columns of a row
    if invocations == 0:
        return out
    aliases = {"W": "f16"} if scale is not None and scale.dtype == "f16" else None
    c_out = out.shape[1] if x.ndim == 4 else c
    _run("channel_affine", x, out, b=scale, c=shift, aliases=aliases,
         consts={"ACT": AFFINE_ACTS[act], "AFFINE": int(scale is not None)},
         n=invocations, nb=c, s=float(alpha), d0=n, d1=c_out, d2=ho, d3=wo, e2=h, e3=w,
         o1=out_channel, o2=top, o3=left)
    return out


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


def _unflat(i, shape):
    """Coordinates of flat index i in a row-major shape."""
    coords = []
    for d in reversed(shape):
        coords.append(i % d)
        i //= d
    return coords[::-1]


def _flat(coords, shape):
    i = 0
    for c, d in zip(coords, shape):
        i = i * d + c
    return i


@check("pad")
async def _check_pad(dev):
    # pad the last dim by (2, 1), crop the middle one by (1, 0), leave the first: a copy,
    # so exact
    r = rng(3)
    shape, vals = (2, 3, 4), _f32(rand(r, 24))
    got = flat(await pad(dev.tensor(vals, shape), (2, 1, -1, 0), value=-7.0).read())
    out_shape = (2, 2, 7)
    want = []
    for i in range(14 * 2):
        n, y, x = _unflat(i, out_shape)
        src = (n, y + 1, x - 2)
        want.append(vals[_flat(src, shape)] if 0 <= src[2] < 4 else -7.0)
    return assert_close("pad", got, want, rtol=0, atol=0)


@check("concat")
async def _check_concat(dev):
    r = rng(4)
    a_vals, b_vals = _f32(rand(r, 2 * 1 * 3)), _f32(rand(r, 2 * 2 * 3))
    got = flat(await concat([dev.tensor(a_vals, (2, 1, 3)), dev.tensor(b_vals, (2, 2, 3))], dim=1).read())
    want = []
    for n in range(2):
        want += a_vals[n * 3:(n + 1) * 3] + b_vals[n * 6:(n + 1) * 6]
    return assert_close("concat", got, want, rtol=0, atol=0)  # a copy: exact


@check("channel_affine")
async def _check_channel_affine(dev):
    # x [1, 2, 3, 4] -> BN + leaky_relu, padded 1 left / cropped 1 right, 2 rows on top,
    # written into channels 1..2 of a [1, 4, 5, 4] tensor holding -9 elsewhere.
    # x * scale + shift rounds once or twice in f32: within 2 * 2^-24 * (|x s| + |t|) <= 4 * 2^-24
    r = rng(5)
    vals, sc, sh = _f32(rand(r, 24)), _f32(rand(r, 2)), _f32(rand(r, 2))
    out = dev.tensor([-9.0] * 80, (1, 4, 5, 4))
    channel_affine(dev.tensor(vals, (1, 2, 3, 4)), dev.tensor(sc, (2,)), dev.tensor(sh, (2,)),
                   act="leaky_relu", alpha=0.2, pad=(1, -1, 2, 0), out=out, out_channel=1)
    want = []
    for co in range(4):
        for y in range(5):
            for x in range(4):
                c, ya, xa = co - 1, y - 2, x - 1
                if not 0 <= c < 2:
                    want.append(-9.0)
                elif 0 <= ya < 3 and 0 <= xa < 4:
                    v = vals[(c * 3 + ya) * 4 + xa] * sc[c] + sh[c]
                    want.append(v if v >= 0 else 0.2 * v)
                else:
                    want.append(0.0)
    return assert_close("channel_affine", flat(await out.read()), want, rtol=0, atol=4 * 2.0**-24)
