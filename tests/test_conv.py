"""conv1d / conv2d / conv_transpose1d / conv_transpose2d (kernels/conv.wgsl) against numpy
float64 references, on odd sizes and every combination of stride, padding, dilation and
groups (depthwise included), output_padding for the transposed ops, f16 weights, fused
activations, and the ValueErrors raised before anything reaches the GPU.

Tolerance. Inputs and weights are float32 (f16-rounded where the weights are f16) and the
references see exactly those values, so the only error is the float32 accumulation of the
K = C_in/groups * kh * kw products and the bias: |got - exact| <= K' * 2^-24 * sum|terms|
(the standard worst-case bound for a sum of K' = K + 1 rounded steps), where sum|terms| is
the same convolution of |x| and |w| plus |bias|. `assert_conv_close` checks that bound per
output element.
"""

import asyncio
import math

import numpy as np
import pytest

from pycore.ops import conv as C
from pycore.ops.conv import conv1d, conv2d, conv_transpose1d, conv_transpose2d
from pycore.gpu.selfcheck import CHECKS

# ---------------------------------------------------------------------------- references


def pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def ref_conv2d(x, w, b, stride=1, padding=0, dilation=1, groups=1):
    """Gather form: out[o] = sum_k x[o * s - p + k * d] w[k]. padding: int, pair or
    ((top, bottom), (left, right))."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    (sy, sx), (dy, dx) = pair(stride), pair(dilation)
    pads = [p if isinstance(p, tuple) else (p, p) for p in pair(padding)]  # (before, after) per axis
    xp = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]))
    n, c_in, h, wd = xp.shape
    c_out, cin_g, kh, kw = w.shape
    oh, ow = (h - dy * (kh - 1) - 1) // sy + 1, (wd - dx * (kw - 1) - 1) // sx + 1
    xg = xp.reshape(n, groups, cin_g, h, wd)
    wg = w.reshape(groups, c_out // groups, cin_g, kh, kw)
    out = np.zeros((n, groups, c_out // groups, oh, ow))
    for ky in range(kh):
        for kx in range(kw):
            win = xg[:, :, :, ky * dy: ky * dy + (oh - 1) * sy + 1: sy, kx * dx: kx * dx + (ow - 1) * sx + 1: sx]
            out += np.einsum("ngchw,goc->ngohw", win, wg[:, :, :, ky, kx])
    out = out.reshape(n, c_out, oh, ow)
    return out if b is None else out + np.asarray(b, np.float64)[None, :, None, None]


def ref_conv_transpose2d(x, w, b, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Scatter form: every x[i] w[k] lands on out[i * s - p + k * d]."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    (sy, sx), (py, px), (oy, ox), (dy, dx) = pair(stride), pair(padding), pair(output_padding), pair(dilation)
    n, c_in, h, wd = x.shape
    _, cout_g, kh, kw = w.shape
    oh = (h - 1) * sy - 2 * py + dy * (kh - 1) + oy + 1
    ow = (wd - 1) * sx - 2 * px + dx * (kw - 1) + ox + 1
    # uncropped output: index o + p, large enough for every tap and the output padding
    full = np.zeros((n, groups, cout_g, (h - 1) * sy + dy * (kh - 1) + 1 + oy, (wd - 1) * sx + dx * (kw - 1) + 1 + ox))
    xg = x.reshape(n, groups, c_in // groups, h, wd)
    wg = w.reshape(groups, c_in // groups, cout_g, kh, kw)
    for ky in range(kh):
        for kx in range(kw):
            full[:, :, :, ky * dy: ky * dy + (h - 1) * sy + 1: sy, kx * dx: kx * dx + (wd - 1) * sx + 1: sx] += \
                np.einsum("ngchw,gco->ngohw", xg, wg[:, :, :, ky, kx])
    out = full[:, :, :, py: py + oh, px: px + ow].reshape(n, groups * cout_g, oh, ow)
    return out if b is None else out + np.asarray(b, np.float64)[None, :, None, None]


def as2d(x, w, stride, padding, dilation, output_padding=0):
    """1-D arguments as the equivalent 2-D ones (H = 1)."""
    return x[:, :, None, :], w[:, :, None, :], (1, stride), (0, padding), (1, dilation), (0, output_padding)


def assert_conv_close(got, want, bound_terms, k_terms, extra_atol=0.0):
    """|got - want| <= (K + 1) * 2^-24 * sum|terms| (+ extra_atol for an activation)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    tol = (k_terms + 1) * 2.0**-24 * bound_terms + extra_atol
    err = np.abs(got.astype(np.float64) - want)
    worst = np.unravel_index(np.argmax(err - tol), err.shape)
    assert np.all(err <= tol), f"error {err[worst]:.3e} > tolerance {tol[worst]:.3e} at {worst}"


def data(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def run(dev, op, x, w, b, **kw):
    return op(dev.tensor(x), dev.tensor(w), None if b is None else dev.tensor(b), **kw).numpy()


# ---------------------------------------------------------------------------- conv2d / conv1d

STRIDES2 = [1, 2, (2, 3)]
PADDINGS2 = [0, 1, (2, 1)]
DILATIONS2 = [1, (2, 1)]
GROUPS = [1, 2, "depthwise"]


@pytest.mark.parametrize("groups", GROUPS)
@pytest.mark.parametrize("dilation", DILATIONS2)
@pytest.mark.parametrize("padding", PADDINGS2)
@pytest.mark.parametrize("stride", STRIDES2)
def test_conv2d(dev, rng, stride, padding, dilation, groups):
    c_in = 6
    groups, c_out = (c_in, 12) if groups == "depthwise" else (groups, 10)  # depthwise: 2 per channel
    x, w, b = data(rng, 2, c_in, 7, 9), data(rng, c_out, c_in // groups, 3, 2), data(rng, c_out)
    got = run(dev, conv2d, x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    want = ref_conv2d(x, w, b, stride, padding, dilation, groups)
    bound = ref_conv2d(np.abs(x), np.abs(w), np.abs(b), stride, padding, dilation, groups)
    assert_conv_close(got, want, bound, c_in // groups * 6)


@pytest.mark.parametrize("groups", GROUPS)
@pytest.mark.parametrize("dilation", [1, 3])
@pytest.mark.parametrize("padding", [0, 2])
@pytest.mark.parametrize("stride", [1, 3])
def test_conv1d(dev, rng, stride, padding, dilation, groups):
    c_in = 4
    groups, c_out = (c_in, 4) if groups == "depthwise" else (groups, 6)
    x, w, b = data(rng, 3, c_in, 29), data(rng, c_out, c_in // groups, 4), data(rng, c_out)
    got = run(dev, conv1d, x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    x2, w2, s2, p2, d2, _ = as2d(x, w, stride, padding, dilation)
    want = ref_conv2d(x2, w2, b, s2, p2, d2, groups)[:, :, 0]
    bound = ref_conv2d(np.abs(x2), np.abs(w2), np.abs(b), s2, p2, d2, groups)[:, :, 0]
    assert_conv_close(got, want, bound, c_in // groups * 4)


def test_conv2d_many_channels_and_positions(dev, rng):
    # 40 output channels: two full channel blocks of 16 and a partial one; 627 positions:
    # several workgroups, the last one partial; no bias.
    x, w = data(rng, 1, 24, 21, 35), data(rng, 40, 24, 3, 3)
    got = run(dev, conv2d, x, w, None, padding=(0, 1))
    want = ref_conv2d(x, w, None, 1, (0, 1))
    assert_conv_close(got, want, ref_conv2d(np.abs(x), np.abs(w), None, 1, (0, 1)), 24 * 9)


def test_conv1d_long_signal(dev, rng):
    # a waveform-sized 1-D input (Demucs-like first layer: kernel 8, stride 4)
    x, w, b = data(rng, 1, 2, 5003), data(rng, 16, 2, 8), data(rng, 16)
    got = run(dev, conv1d, x, w, b, stride=4, padding=2)
    x2, w2, s2, p2, d2, _ = as2d(x, w, 4, 2, 1)
    want = ref_conv2d(x2, w2, b, s2, p2, d2)[:, :, 0]
    assert_conv_close(got, want, ref_conv2d(np.abs(x2), np.abs(w2), np.abs(b), s2, p2, d2)[:, :, 0], 16)


@pytest.mark.parametrize("k,dilation", [(4, 1), (3, 2), (5, 1)])
def test_padding_same_and_valid(dev, rng, k, dilation):
    x, w, b = data(rng, 1, 3, 8, 11), data(rng, 5, 3, k, k), data(rng, 5)
    total = dilation * (k - 1)  # PyTorch: the odd one out of the padding goes at the end
    pads = ((total // 2, total - total // 2),) * 2
    got = run(dev, conv2d, x, w, b, padding="same", dilation=dilation)
    assert got.shape == (1, 5, 8, 11)
    assert_conv_close(got, ref_conv2d(x, w, b, 1, pads, dilation),
                      ref_conv2d(np.abs(x), np.abs(w), np.abs(b), 1, pads, dilation), 3 * k * k)
    got = run(dev, conv2d, x, w, b, padding="valid", dilation=dilation)
    assert_conv_close(got, ref_conv2d(x, w, b, 1, 0, dilation),
                      ref_conv2d(np.abs(x), np.abs(w), np.abs(b), 1, 0, dilation), 3 * k * k)
    x1, w1 = x[:, :, 0], w[:, :, 0]
    got = run(dev, conv1d, x1, w1, b, padding="same", dilation=dilation)
    want = ref_conv2d(x1[:, :, None], w1[:, :, None], b, 1, ((0, 0), pads[1]), (1, dilation))[:, :, 0]
    bound = ref_conv2d(np.abs(x1[:, :, None]), np.abs(w1[:, :, None]), np.abs(b), 1, ((0, 0), pads[1]), (1, dilation))
    assert_conv_close(got, want, bound[:, :, 0], 3 * k)


# ---------------------------------------------------------------------------- transposed


def max_output_padding(stride, dilation):
    return tuple(max(s, d) - 1 for s, d in zip(pair(stride), pair(dilation)))


@pytest.mark.parametrize("output_padding", [0, "max"])
@pytest.mark.parametrize("groups", GROUPS)
@pytest.mark.parametrize("dilation", DILATIONS2)
@pytest.mark.parametrize("padding", PADDINGS2)
@pytest.mark.parametrize("stride", STRIDES2)
def test_conv_transpose2d(dev, rng, stride, padding, dilation, groups, output_padding):
    c_in = 6
    groups, cout_g = (c_in, 2) if groups == "depthwise" else (groups, 5)
    if output_padding == "max":
        output_padding = max_output_padding(stride, dilation)
    x, w, b = data(rng, 2, c_in, 5, 7), data(rng, c_in, cout_g, 3, 4), data(rng, cout_g * groups)
    kw = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation)
    got = run(dev, conv_transpose2d, x, w, b, **kw)
    want = ref_conv_transpose2d(x, w, b, **kw)
    bound = ref_conv_transpose2d(np.abs(x), np.abs(w), np.abs(b), **kw)
    assert_conv_close(got, want, bound, c_in // groups * 12)


@pytest.mark.parametrize("output_padding", [0, "max"])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("padding", [0, 1, 3])
@pytest.mark.parametrize("stride", [1, 2, 4])
def test_conv_transpose1d(dev, rng, stride, padding, dilation, groups, output_padding):
    c_in, cout_g, k = 6, 2, 5
    output_padding = max(stride, dilation) - 1 if output_padding == "max" else 0
    x, w, b = data(rng, 2, c_in, 9), data(rng, c_in, cout_g, k), data(rng, cout_g * groups)
    kw = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation)
    got = run(dev, conv_transpose1d, x, w, b, **kw)
    x2, w2, s2, p2, d2, o2 = as2d(x, w, stride, padding, dilation, output_padding)
    kw2 = dict(stride=s2, padding=p2, output_padding=o2, groups=groups, dilation=d2)
    want = ref_conv_transpose2d(x2, w2, b, **kw2)[:, :, 0]
    bound = ref_conv_transpose2d(np.abs(x2), np.abs(w2), np.abs(b), **kw2)[:, :, 0]
    assert_conv_close(got, want, bound, c_in // groups * k)


def test_conv_transpose_stride_larger_than_kernel(dev, rng):
    # stride 3 > kernel 2: some output phases receive no tap at all and hold just the bias
    x, w, b = data(rng, 1, 4, 3, 4), data(rng, 4, 20, 2, 2), data(rng, 20)
    kw = dict(stride=3, padding=(0, 1), output_padding=(2, 1))
    got = run(dev, conv_transpose2d, x, w, b, **kw)
    want = ref_conv_transpose2d(x, w, b, **kw)
    assert_conv_close(got, want, ref_conv_transpose2d(np.abs(x), np.abs(w), np.abs(b), **kw), 16)
    assert np.array_equal(got[0, :, 2, :], np.repeat(b[:, None], 10, 1))  # no tap reaches row 2


def test_transpose_is_adjoint_of_conv(dev, rng):
    # <conv(x, w), y> == <x, conv_transpose(y, w)>: the two ops are each other's adjoint for
    # the same weight tensor read in the two layouts (PyTorch's definition of the pair).
    kw = dict(stride=(2, 3), padding=(1, 2), dilation=(2, 1), groups=2)
    x, w = data(rng, 2, 4, 11, 13), data(rng, 6, 2, 3, 3)
    y = conv2d(dev.tensor(x), dev.tensor(w), **kw).numpy()
    g = data(rng, *y.shape)
    oh_needed = [a - b for a, b in zip(x.shape[2:], ref_conv_transpose2d(g, w, None, **kw).shape[2:])]
    xt = conv_transpose2d(dev.tensor(g), dev.tensor(w), output_padding=tuple(oh_needed), **kw).numpy()
    assert xt.shape == x.shape
    lhs = np.vdot(y.astype(np.float64), g.astype(np.float64))
    rhs = np.vdot(x.astype(np.float64), xt.astype(np.float64))
    assert abs(lhs - rhs) <= 1e-5 * np.vdot(np.abs(x), np.abs(xt)).item() + 1e-5


# ---------------------------------------------------------------------------- activations, f16


@pytest.mark.parametrize("act,alpha", [("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2),
                                       ("elu", None), ("gelu", None), ("tanh", None), ("sigmoid", None)])
def test_fused_activation(dev, rng, act, alpha):
    x, w, b = data(rng, 1, 3, 6, 7), data(rng, 4, 3, 3, 3), data(rng, 4)
    got = run(dev, conv2d, x, w, b, padding=1, act=act, alpha=alpha)
    pre = ref_conv2d(x, w, b, 1, 1)
    bound = ref_conv2d(np.abs(x), np.abs(w), np.abs(b), 1, 1)
    a = {"leaky_relu": 0.01, "elu": 1.0}.get(act) if alpha is None else alpha
    erf = np.vectorize(math.erf)
    f = {"relu": lambda v: np.maximum(v, 0), "leaky_relu": lambda v: np.where(v >= 0, v, a * v),
         "elu": lambda v: np.where(v > 0, v, a * np.expm1(v)), "gelu": lambda v: v * 0.5 * (1 + erf(v / np.sqrt(2))),
         "tanh": np.tanh, "sigmoid": lambda v: 1 / (1 + np.exp(-v))}[act]
    # every activation has slope <= 1.13 (gelu's maximum), so the sum error grows by at most
    # that factor; the function itself adds float32 rounding of exp/division (a few ulps of
    # values <= ~10, < 1e-5 abs) and, for gelu, the erf approximation (|error| < 1.5e-7 * |v|)
    assert_conv_close(got, f(pre), 1.13 * bound, 27, extra_atol=1e-5)
    # the 1-D path, without bias
    x1, w1 = x[:, :, 0], w[:, :, 0]
    got = run(dev, conv1d, x1, w1, None, act=act, alpha=alpha)
    pre = ref_conv2d(x1[:, :, None], w1[:, :, None], None)[:, :, 0]
    bound = ref_conv2d(np.abs(x1[:, :, None]), np.abs(w1[:, :, None]), None)[:, :, 0]
    assert_conv_close(got, f(pre), 1.13 * bound, 9, extra_atol=1e-5)


@pytest.fixture(scope="module")
def dev_no_f16():
    from pycore.gpu.native import NativeDevice

    return NativeDevice(f16=False)


@pytest.mark.parametrize("which", ["f16", "no_f16"])
def test_f16_weights(dev, dev_no_f16, rng, which):
    d = dev if which == "f16" else dev_no_f16
    assert not dev_no_f16.has_f16
    x, w, b = data(rng, 2, 6, 9, 8), data(rng, 18, 3, 3, 3), data(rng, 18)
    w16, b16 = w.astype(np.float16), b.astype(np.float16)
    wt, bt = d.tensor(w16, dtype="f16"), d.tensor(b16, dtype="f16")
    assert wt.dtype == ("f16" if d.has_f16 else "f32")
    got = conv2d(d.tensor(x), wt, bt, stride=(1, 2), padding=1, groups=2).numpy()
    w64, b64 = w16.astype(np.float64), b16.astype(np.float64)  # what half storage keeps
    want = ref_conv2d(x, w64, b64, (1, 2), 1, 1, 2)
    assert_conv_close(got, want, ref_conv2d(np.abs(x), np.abs(w64), np.abs(b64), (1, 2), 1, 1, 2), 27)
    # transposed with f16 weights and an f32 bias
    got = conv_transpose1d(d.tensor(x[:, :, 0]), d.tensor(w16[:6, :, 0], dtype="f16"), d.tensor(b[:6]),
                           stride=2, groups=2).numpy()
    x2, w2, s2, p2, d2, o2 = as2d(x[:, :, 0], w16[:6, :, 0].astype(np.float64), 2, 0, 1)
    kw2 = dict(stride=s2, padding=p2, output_padding=o2, groups=2, dilation=d2)
    want = ref_conv_transpose2d(x2, w2, b[:6], **kw2)[:, :, 0]
    assert_conv_close(got, want, ref_conv_transpose2d(np.abs(x2), np.abs(w2), np.abs(b[:6]), **kw2)[:, :, 0], 9)


# ---------------------------------------------------------------------------- long reductions
#
# lavapipe ends an invocation's loops silently after 65,535 iterations (kernels/common.wgsl),
# so conv splits reductions of C_in/groups * kh * kw > MAX_LOOP_STEPS steps over several
# dispatches. With all-positive inputs the sum equals the bound sum|terms|, so dropping the
# last few thousand terms (what the limit did) is an error of several percent, far above
# the (K + 1) 2^-24 relative tolerance.


def conv_kernels(dev, fn):
    dev.flush()
    fn()
    labels = [k.label for k in dev.pending_kernels()]
    dev.flush()
    return [label for label in labels if label != "conv:pack"]   # packing: once per weight


def conv_dispatches(dev, fn):
    dev.flush()
    fn()
    labels = [k.label for k in dev.pending_kernels()]
    dev.flush()
    return labels.count("conv:conv")


def test_reduction_spans(monkeypatch):
    assert C.reduction_spans(0) == [(0, 0)]
    assert C.reduction_spans(C.MAX_LOOP_STEPS) == [(0, C.MAX_LOOP_STEPS)]
    monkeypatch.setattr(C, "MAX_LOOP_STEPS", 10)
    assert C.reduction_spans(25) == [(0, 8), (8, 16), (16, 25)]


def test_conv2d_reduction_longer_than_the_loop_limit(dev, rng):
    # 550 channels x 64 x 2 taps = 70,400 steps per output (> 65,535): `conv` in 3 dispatches
    c_in, k = 550, 64
    x = rng.random((1, c_in, k + 5, 2), dtype=np.float32)
    w = rng.random((8, c_in, k, 2), dtype=np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    xt, wt, bt = dev.tensor(x), dev.tensor(w), dev.tensor(b)
    assert conv_dispatches(dev, lambda: conv2d(xt, wt, bt)) == 3  # 70,400 steps / 32,768
    got = conv2d(xt, wt, bt).numpy()
    assert_conv_close(got, ref_conv2d(x, w, b), ref_conv2d(x, w, np.abs(b)), c_in * k * 2)


def test_conv1d_reduction_longer_than_the_loop_limit(dev, rng):
    # CREPE-full-like: 1100 channels x 64 taps; conv_run makes 66 loop passes per channel,
    # 72,600 in all (> 65,535), so it splits the channels into slices of at most 32,768 passes
    c_in, k = 1100, 64
    x = rng.random((1, c_in, k + 5), dtype=np.float32)
    w = rng.random((8, c_in, k), dtype=np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    xt, wt, bt = dev.tensor(x), dev.tensor(w), dev.tensor(b)
    assert conv_kernels(dev, lambda: conv1d(xt, wt, bt)) == ["conv:conv_run", "conv:sum_splits"]
    got = conv1d(xt, wt, bt).numpy()
    want = ref_conv2d(x[:, :, None], w[:, :, None], b)[:, :, 0]
    bound = ref_conv2d(x[:, :, None], w[:, :, None], np.abs(b))[:, :, 0]
    assert_conv_close(got, want, bound, c_in * k)


def test_conv_transpose1d_reduction_longer_than_the_loop_limit(dev, rng):
    # stride 2: each output phase gathers 32 of the 64 taps, 2100 * 32 = 67,200 steps
    c_in, k = 2100, 64
    x = rng.random((1, c_in, 3), dtype=np.float32)
    w = rng.random((c_in, 5, k), dtype=np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    xt, wt = dev.tensor(x), dev.tensor(w)
    assert conv_dispatches(dev, lambda: conv_transpose1d(xt, wt, stride=2)) == 2 * 3
    got = conv_transpose1d(xt, wt, dev.tensor(b), stride=2).numpy()
    x2, w2, s2, p2, d2, o2 = as2d(x, w, 2, 0, 1)
    want = ref_conv_transpose2d(x2, w2, b, s2, p2, o2, 1, d2)[:, :, 0]
    bound = ref_conv_transpose2d(x2, w2, np.abs(b), s2, p2, o2, 1, d2)[:, :, 0]
    assert_conv_close(got, want, bound, c_in * k // 2)


@pytest.mark.parametrize("limit", [1, 5, 13])
def test_split_reductions_on_every_path(dev, rng, monkeypatch, limit):
    # A tiny step budget splits every reduction (mid-row of taps, mid-channel) into many
    # dispatches: groups, dilation, transposed phases (some without taps), f16 weights, act.
    monkeypatch.setattr(C, "MAX_LOOP_STEPS", limit)
    x, w, b = data(rng, 2, 6, 7, 9), data(rng, 6, 3, 3, 2), data(rng, 6)
    got = run(dev, conv2d, x, w, b, stride=(2, 1), padding=1, dilation=(1, 2), groups=2, act="tanh")
    pre = ref_conv2d(x, w, b, (2, 1), 1, (1, 2), 2)
    bound = ref_conv2d(np.abs(x), np.abs(w), np.abs(b), (2, 1), 1, (1, 2), 2)
    assert_conv_close(got, np.tanh(pre), bound, 18, extra_atol=1e-6)  # tanh: slope <= 1
    w16 = data(rng, 6, 2, 3, 3).astype(np.float16)
    wt = dev.tensor(w16, dtype="f16")
    kw = dict(stride=(3, 2), padding=(1, 0), output_padding=(1, 1), groups=3, dilation=(1, 2))
    got = conv_transpose2d(dev.tensor(x), wt, dev.tensor(b[:6]), **kw).numpy()
    w64 = w16.astype(np.float64)
    want = ref_conv_transpose2d(x, w64, b[:6], **kw)
    assert_conv_close(got, want, ref_conv_transpose2d(np.abs(x), np.abs(w64), np.abs(b[:6]), **kw), 18)


# ---------------------------------------------------------------------------- small grids
#
# A conv of fewer than MIN_WORKGROUPS workgroups per batch item (CREPE's layers, which a
# live tone block runs on 2-3 frames) runs its reduction as side-by-side slices, then
# sum_splits adds them in slice order. The split is chosen per item, so a batch's items
# come out bitwise as each alone.


def test_parallel_splits():
    assert C.parallel_splits(1, 128 * 64) == 8               # CREPE conv2 (per frame)
    assert C.parallel_splits(2, 512) == 4                    # CREPE conv1 (per frame)
    assert C.parallel_splits(C.MIN_WORKGROUPS, 10 ** 6) == 1  # enough workgroups already
    assert C.parallel_splits(1, 2 * C.MIN_SPLIT_STEPS - 1) == 1  # too short to split
    assert C.parallel_splits(1, 3 * C.MIN_SPLIT_STEPS) == 3
    # a CPU driver splits long reductions only: CREPE conv2 still 8 ways, conv3-5 not
    cpu = C.MIN_SPLIT_STEPS_CPU
    assert C.parallel_splits(1, 128 * 64, cpu) == 8
    assert C.parallel_splits(1, 16 * 64, cpu) == 1
    assert C.parallel_splits(1, 32 * 64, cpu) == 2            # conv6


def test_cpu_adapter_splits_long_reductions_only(dev, rng):
    # CREPE conv3's shape on 2 frames: 16 x 64 = 1024 steps in one workgroup; a GPU would
    # split it 8 ways, lavapipe runs it whole (a slice costs more than it saves there)
    assert dev.cpu_adapter and C.min_split_steps(dev) == C.MIN_SPLIT_STEPS_CPU
    x, w, b = data(rng, 2, 16, 64), data(rng, 16, 16, 64), data(rng, 16)
    xt, wt, bt = dev.tensor(x), dev.tensor(w), dev.tensor(b)
    assert conv_kernels(dev, lambda: conv1d(xt, wt, bt, padding="same")) == ["conv:conv_run"]


@pytest.mark.parametrize("act", [None, "relu", "tanh"])
def test_small_grid_splits_the_reduction(dev, rng, act):
    # CREPE conv2's shape on 3 frames, 64 input channels: 1 workgroup, 4096 steps -> 8 slices
    # of conv_run (1-D: consecutive positions, a sliding input window)
    x, w, b = data(rng, 3, 64, 128), data(rng, 16, 64, 64), data(rng, 16)
    xt, wt, bt = dev.tensor(x), dev.tensor(w), dev.tensor(b)
    labels = conv_kernels(dev, lambda: conv1d(xt, wt, bt, padding="same", act=act))
    assert labels == ["conv:conv_run", "conv:sum_splits"], labels
    got = conv1d(xt, wt, bt, padding="same", act=act).numpy()
    xp = np.pad(x, ((0, 0), (0, 0), (31, 32)))[:, :, None]      # 'same' for 64 taps
    pre = ref_conv2d(xp, w[:, :, None], b)[:, :, 0]
    bound = ref_conv2d(np.abs(xp), np.abs(w[:, :, None]), np.abs(b))[:, :, 0]
    want = {None: pre, "relu": np.maximum(pre, 0), "tanh": np.tanh(pre)}[act]
    assert_conv_close(got, want, bound, 64 * 64 + 8, extra_atol=1e-6 if act == "tanh" else 0.0)


def test_conv_run_only_on_cpu_adapters(dev, rng, monkeypatch):
    # a GPU keeps `conv` for 1-D layers (interleaved positions: neighbouring invocations
    # read neighbouring addresses); its result is the same up to float32 rounding
    assert dev.cpu_adapter                                     # lavapipe, where the tests run
    x, w, b = data(rng, 3, 64, 128), data(rng, 16, 64, 64), data(rng, 16)
    xt, wt, bt = dev.tensor(x), dev.tensor(w), dev.tensor(b)
    on_cpu = conv1d(xt, wt, bt, padding="same").numpy()
    monkeypatch.setattr(dev, "adapter_info", {"adapter_type": "DiscreteGPU", "vendor": "nvidia",
                                              "architecture": "hopper", "device": "", "description": ""})
    assert not dev.cpu_adapter
    assert conv_kernels(dev, lambda: conv1d(xt, wt, bt, padding="same")) == ["conv:conv", "conv:sum_splits"]
    on_gpu = conv1d(xt, wt, bt, padding="same").numpy()
    xp = np.pad(np.abs(x), ((0, 0), (0, 0), (31, 32)))[:, :, None]
    bound = ref_conv2d(xp, np.abs(w[:, :, None]), np.abs(b))[:, :, 0]
    assert_conv_close(on_gpu, on_cpu, 2 * bound, 64 * 64 + 8)


def test_small_grid_splits_a_2d_reduction(dev, rng):
    # 2-D: `conv` (interleaved positions) in slices (160 x 15 = 2400 steps: 2 on a CPU driver)
    x, w, b = data(rng, 1, 160, 20, 6), data(rng, 8, 160, 5, 3), data(rng, 8)
    xt, wt, bt = dev.tensor(x), dev.tensor(w), dev.tensor(b)
    labels = conv_kernels(dev, lambda: conv2d(xt, wt, bt, padding=(2, 1), act="relu"))
    assert labels == ["conv:conv", "conv:sum_splits"], labels
    got = conv2d(xt, wt, bt, padding=(2, 1), act="relu").numpy()
    pre = ref_conv2d(x, w, b, 1, (2, 1))
    assert_conv_close(got, np.maximum(pre, 0), ref_conv2d(np.abs(x), np.abs(w), np.abs(b), 1, (2, 1)), 160 * 15 + 8)


@pytest.mark.parametrize("stride,padding", [(4, 30), (3, 5), (1, 0)])
def test_conv_run_strides(dev, rng, stride, padding):
    # conv_run walks the taps phase by phase (k = r, r + stride, ...): stride 4 on one input
    # channel (CREPE conv1's stride, a kernel short of the columns path), an odd stride,
    # and a tap count not a multiple of it
    k = {4: 62, 3: 7, 1: 9}[stride]
    c_out = {4: 128, 3: 6, 1: 20}[stride]
    x, b = data(rng, 2, 1 if stride == 4 else 3, 1024 if stride == 4 else 50), data(rng, c_out)
    w = data(rng, c_out, x.shape[1], k)
    xt, wt, bt = dev.tensor(x), dev.tensor(w), dev.tensor(b)
    assert "conv:conv_run" in conv_kernels(dev, lambda: conv1d(xt, wt, bt, stride=stride, padding=padding))
    got = conv1d(xt, wt, bt, stride=stride, padding=padding).numpy()
    x4, w4, s4, p4, d4, _ = as2d(x, w, stride, padding, 1)
    want = ref_conv2d(x4, w4, b, s4, p4, d4)[:, :, 0]
    bound = ref_conv2d(np.abs(x4), np.abs(w4), np.abs(b), s4, p4, d4)[:, :, 0]
    assert_conv_close(got, want, bound, x.shape[1] * k + 8)


# One input channel and a long kernel (CREPE conv1: 512 taps, stride 4, 254 zeros each
# side) run on a CPU adapter as columns (kernels/conv_columns.wgsl: each position's input
# window as a row, plus a ones column for the bias) times the weights in the tuned matmul.


@pytest.mark.parametrize("bias, act, shape", [
    (True, "relu", (3, 1, 1024, 1)),       # CREPE conv1 as Crepe runs it (conv2d, time on H)
    (False, None, (2, 1, 1, 1024)),        # time on W, no bias
    (True, "tanh", (1, 1, 1000, 1)),       # a length that no stride divides
])
def test_columns_path_matches_numpy(dev, rng, bias, act, shape):
    x = data(rng, *shape)
    along_h = shape[2] > 1
    w = data(rng, 128, 1, 512, 1) if along_h else data(rng, 128, 1, 1, 512)
    b = data(rng, 128) if bias else None
    xt, wt = dev.tensor(x), dev.tensor(w)
    bt = dev.tensor(b) if bias else None
    stride, padding = ((4, 1), (254, 0)) if along_h else ((1, 4), (0, 254))
    run = lambda: conv2d(xt, wt, bt, stride=stride, padding=padding, act=act)   # noqa: E731
    got = run().numpy()                            # (the first matmul of a shape may autotune)
    labels = conv_kernels(dev, run)
    assert labels[0] == "conv_columns:columns" and labels[1].startswith("matmul"), labels
    pre = ref_conv2d(x, w, b if bias else np.zeros(128), stride, padding)
    bound = ref_conv2d(np.abs(x), np.abs(w), np.abs(b) if bias else np.zeros(128), stride, padding)
    assert got.shape == pre.shape
    want = {None: pre, "relu": np.maximum(pre, 0), "tanh": np.tanh(pre)}[act]
    assert_conv_close(got, want, bound, 512 + 8, extra_atol=1e-6 if act == "tanh" else 0.0)


def test_columns_path_items_equal_each_alone(dev, rng):
    # a live block's 2-3 CREPE frames must equal the offline run's: each item alone
    x, w, b = data(rng, 5, 1, 1024, 1), data(rng, 128, 1, 512, 1), data(rng, 128)
    wt, bt = dev.tensor(w), dev.tensor(b)
    whole = conv2d(dev.tensor(x), wt, bt, stride=(4, 1), padding=(254, 0), act="relu").numpy()
    for i in (0, 3):
        alone = conv2d(dev.tensor(x[i:i + 1]), wt, bt, stride=(4, 1), padding=(254, 0), act="relu").numpy()
        assert np.array_equal(alone[0], whole[i])


def test_columns_path_runs_many_items_in_slices(dev, rng, monkeypatch):
    # columns of at most COLUMNS_MAX_BYTES at once (here 3 items' worth): 7 items in 3 slices
    monkeypatch.setattr(C, "COLUMNS_MAX_BYTES", 3 * 4 * 256 * 516)
    x, w, b = data(rng, 7, 1, 1024, 1), data(rng, 128, 1, 512, 1), data(rng, 128)
    xt, wt, bt = dev.tensor(x), dev.tensor(w), dev.tensor(b)
    run = lambda: conv2d(xt, wt, bt, stride=(4, 1), padding=(254, 0), act="relu")   # noqa: E731
    got = run().numpy()
    assert conv_kernels(dev, run).count("conv_columns:columns") == 3
    for i in (0, 4, 6):    # each item as it comes out alone
        alone = conv2d(dev.tensor(x[i:i + 1]), wt, bt, stride=(4, 1), padding=(254, 0), act="relu").numpy()
        assert np.array_equal(alone[0], got[i])


def test_columns_path_only_for_one_channel_long_kernels(dev, rng):
    w = dev.tensor(data(rng, 8, 1, C.COLUMNS_MIN_TAPS - 1))
    x1 = dev.tensor(data(rng, 1, 1, 600))
    assert conv_kernels(dev, lambda: conv1d(x1, w)) == ["conv:conv_run"]      # a shorter kernel
    w2 = dev.tensor(data(rng, 8, 2, C.COLUMNS_MIN_TAPS))
    x2 = dev.tensor(data(rng, 1, 2, 600))
    assert "conv_columns:columns" not in conv_kernels(dev, lambda: conv1d(x2, w2))   # two channels
    w1 = dev.tensor(data(rng, 8, 1, C.COLUMNS_MIN_TAPS))
    assert conv_kernels(dev, lambda: conv1d(x1, w1, act="elu"))[0] != "conv_columns:columns"  # not a matmul act


def test_split_batch_items_equal_each_alone(dev, rng):
    # 180 items of 3 invocations: 9 workgroups in all (> MIN_WORKGROUPS), but one each
    x, w, b = data(rng, 180, 32, 40), data(rng, 16, 32, 64), data(rng, 16)
    wt, bt = dev.tensor(w), dev.tensor(b)
    whole = conv1d(dev.tensor(x), wt, bt, padding="same", act="relu").numpy()
    for i in (0, 97, 179):
        alone = conv1d(dev.tensor(x[i:i + 1]), wt, bt, padding="same", act="relu").numpy()
        assert np.array_equal(alone[0], whole[i])


def test_small_grid_split_with_groups_transposed_and_f16(dev, rng):
    # stride-1 transposed conv (one output phase) with groups and f16 weights also splits
    # (256 x 9 = 2304 steps per group: 2 slices on a CPU driver)
    x, b = data(rng, 1, 512, 10), data(rng, 8)
    w16 = data(rng, 512, 4, 9).astype(np.float16)
    xt, wt, bt = dev.tensor(x), dev.tensor(w16, dtype="f16"), dev.tensor(b)
    labels = conv_kernels(dev, lambda: conv_transpose1d(xt, wt, bt, padding=2, groups=2))
    assert labels == ["conv:conv", "conv:sum_splits"], labels
    got = conv_transpose1d(xt, wt, bt, padding=2, groups=2).numpy()
    w64 = w16.astype(np.float64)
    x2, w2, s2, p2, d2, o2 = as2d(x, w64, 1, 2, 1)
    want = ref_conv_transpose2d(x2, w2, b, s2, p2, o2, 2, d2)[:, :, 0]
    bound = ref_conv_transpose2d(np.abs(x2), np.abs(w2), np.abs(b), s2, p2, o2, 2, d2)[:, :, 0]
    assert_conv_close(got, want, bound, 256 * 9 + 8)


# ---------------------------------------------------------------------------- plumbing


def test_packed_weights_are_cached(dev, rng):
    x, w = dev.tensor(data(rng, 1, 3, 5, 5)), dev.tensor(data(rng, 4, 3, 3, 3))
    dev.flush()
    conv2d(x, w)
    conv2d(x, w)
    labels = [k.label for k in dev.pending_kernels()]
    assert labels.count("conv:pack") == 1 and labels.count("conv:conv") == 2
    # new weight values need clear_weight_cache()
    w2 = data(rng, 4, 3, 3, 3)
    dev.write(w, w2.tobytes())
    C.clear_weight_cache()
    got = conv2d(x, w).numpy()
    want = ref_conv2d(x.numpy(), w2, None)
    assert_conv_close(got, want, ref_conv2d(np.abs(x.numpy()), np.abs(w2), None), 27)


def test_folded_grid(dev, rng, monkeypatch):
    # More workgroups than the per-dimension limit: the runtime folds the grid into (x, y)
    # and the kernel recovers its index with wg_linear. Shrink the limit to force it.
    monkeypatch.setitem(dev.limits, "max-compute-workgroups-per-dimension", 3)
    x, w, b = data(rng, 3, 2, 40, 50), data(rng, 5, 2, 3, 3), data(rng, 5)
    got = run(dev, conv2d, x, w, b, padding=1)
    assert_conv_close(got, ref_conv2d(x, w, b, 1, 1), ref_conv2d(np.abs(x), np.abs(w), np.abs(b), 1, 1), 18)


def test_bench_conv2d_runs(dev):
    r = C.bench_conv2d(dev, n=1, c_in=3, c_out=5, h=9, w=12, k=3, stride=2, padding=1, repeats=1)
    assert set(r) == {"wgsl_ms", "numpy_ms", "ratio", "gflops", "max_err"}
    assert r["max_err"] < 1e-5 and r["wgsl_ms"] > 0 and r["gflops"] > 0


@pytest.mark.parametrize("name", ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"])
def test_selfcheck(dev, name):
    assert "max abs err" in asyncio.run(CHECKS[name](dev))


# ---------------------------------------------------------------------------- errors


def bad_calls(dev):
    t = lambda *shape, dtype="f32": dev.tensor(np.zeros(shape, np.float32), dtype=dtype)  # noqa: E731
    x2, x1 = t(1, 4, 5, 5), t(1, 4, 9)
    return [
        ("conv2d", lambda: conv2d(x2, t(6, 4, 3, 3), groups=3), "not divisible by groups"),
        ("conv2d", lambda: conv2d(x2, t(5, 2, 3, 3), groups=2), "C_out=5 is not divisible"),
        ("conv2d", lambda: conv2d(x2, t(6, 4, 7, 3)), "larger than the padded input"),
        ("conv2d", lambda: conv2d(x2, t(6, 4, 3, 3), dilation=3), "larger than the padded input"),
        ("conv2d", lambda: conv2d(x2, t(6, 3, 3, 3)), "weight must be"),
        ("conv2d", lambda: conv2d(x2, t(6, 4, 3)), "weight must have 4 dimensions"),
        ("conv2d", lambda: conv2d(x1, t(6, 4, 3, 3)), "x must be"),
        ("conv2d", lambda: conv2d(t(1, 4, 5, 5, dtype="i32"), t(6, 4, 3, 3)), "dtype"),
        ("conv2d", lambda: conv2d(x2, t(6, 4, 3, 3, dtype="i32")), "dtype"),
        ("conv2d", lambda: conv2d(x2, t(6, 4, 3, 3), t(5)), "bias must be"),
        ("conv2d", lambda: conv2d(x2, t(6, 4, 3, 3), stride=0), "stride"),
        ("conv2d", lambda: conv2d(x2, t(6, 4, 3, 3), padding=(1, 2, 3)), "padding"),
        ("conv2d", lambda: conv2d(x2, t(6, 4, 3, 3), padding="same", stride=2), "same"),
        ("conv2d", lambda: conv2d(x2, t(6, 4, 3, 3), act="swish"), "act"),
        ("conv1d", lambda: conv1d(x1, t(6, 4, 10)), "larger than the padded input"),
        ("conv1d", lambda: conv1d(x1, t(6, 4, 3), groups=0), "groups"),
        ("conv_transpose2d", lambda: conv_transpose2d(x2, t(3, 2, 3, 3)), "weight must be"),
        ("conv_transpose2d", lambda: conv_transpose2d(x2, t(4, 2, 3, 3), stride=2, output_padding=2),
         "output_padding"),
        ("conv_transpose2d", lambda: conv_transpose2d(x2, t(4, 2, 3, 3), groups=3), "not divisible"),
        ("conv_transpose2d", lambda: conv_transpose2d(x2, t(4, 2, 3, 3), padding=5), "empty output"),
        ("conv_transpose1d", lambda: conv_transpose1d(x1, t(4, 2, 3), padding="same"), "padding"),
    ]


def test_errors_name_the_op_and_come_before_the_gpu(dev):
    for op, call, words in bad_calls(dev):
        dev.flush()
        with pytest.raises(ValueError, match=op) as e:
            call()
        assert words in str(e.value), (op, words, str(e.value))
        assert not dev.pending_kernels(), f"{op}: work was recorded before the error ({e.value})"
