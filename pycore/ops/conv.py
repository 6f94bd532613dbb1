"""Convolutions with PyTorch semantics: conv1d, conv2d, conv_transpose1d, conv_transpose2d.

    conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, act=None)
    conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, act=None)

x is [N, C_in, H, W] (1-D: [N, C_in, L]); weight is [C_out, C_in/groups, kh, kw] for a
convolution and [C_in, C_out/groups, kh, kw] for a transposed one, as in torch.nn; bias
is [C_out]. stride, padding, dilation and output_padding are ints or one int per axis;
padding is zero padding, and a convolution's padding may also be "valid" or "same"
(stride 1, extra padding at the end, like PyTorch). weight and bias may be f16 tensors;
the arithmetic is float32 throughout. `act` fuses an activation after the bias: None,
"relu", "leaky_relu" (slope `alpha`, default 0.01), "elu" (`alpha`, default 1.0), "gelu"
(the exact erf form, PyTorch's default), "tanh" or "sigmoid".

All four ops run one kernel (kernels/conv.wgsl, whose header explains the method): a 1-D
convolution is a 2-D one with H = 1, a transposed one runs one pass per output phase.
(One exception, on CPU adapters: a 1-D convolution of one input channel with a long
kernel runs as columns times matmul; see "columns path" below.)
Each output sums C_in/groups * kh * kw products in one kernel loop; longer sums than
MAX_LOOP_STEPS (lavapipe stops loops after 65,535 iterations) are split over several
dispatches that add up their partial sums. The kernel reads the weights repacked with 4
output channels per vec4. The repacked copy
is cached per weight tensor (weights are treated as constants); after writing new values
into a weight tensor, call `clear_weight_cache()`.
"""

from __future__ import annotations

import weakref

from ..gpu.runtime import Tensor, ceil_div
from ..gpu.selfcheck import assert_close, check, flat, rand, rng
from . import MAX_LOOP_STEPS, expect, expect_dtype, same_device

ACTS = {None: 0, "relu": 1, "leaky_relu": 2, "elu": 3, "gelu": 4, "tanh": 5, "sigmoid": 6}
DEFAULT_ALPHA = {"leaky_relu": 0.01, "elu": 1.0}
WG = 64  # invocations per workgroup
# A conv of fewer workgroups per batch item than this splits its reduction side by side
# (kernels/conv.wgsl, "Small grids"), slices of at least MIN_SPLIT_STEPS steps, so that a
# small batch (a live tone block's 2-3 CREPE frames) keeps every core of the GPU, or every
# thread of a CPU driver, busy.
MIN_WORKGROUPS = 8
MIN_SPLIT_STEPS = 64
# On a CPU driver a slice costs about 0.06 ms of CPU on its own (lavapipe: its window
# loads, a SIMD group, its share of sum_splits), and parallel slices only help while the
# other core is free, so there a slice must be long: CREPE conv2 (8192 steps per frame)
# still splits 8 ways, conv3-6 (1024-2048 steps) no longer pay 0.2-0.5 ms each for it.
MIN_SPLIT_STEPS_CPU = 1024


# --------------------------------------------------------------------------- public ops


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, act=None, alpha=None):
    return _conv("conv1d", 1, False, x, weight, bias, stride, padding, dilation, groups, 0, act, alpha)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, act=None, alpha=None):
    return _conv("conv2d", 2, False, x, weight, bias, stride, padding, dilation, groups, 0, act, alpha)


def conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, act=None, alpha=None):
    return _conv("conv_transpose1d", 1, True, x, weight, bias, stride, padding, dilation, groups,
                 output_padding, act, alpha)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, act=None, alpha=None):
    return _conv("conv_transpose2d", 2, True, x, weight, bias, stride, padding, dilation, groups,
                 output_padding, act, alpha)


def clear_weight_cache():
    """Forget every repacked weight (needed only after writing into a weight tensor)."""
    _PACKED.clear()
    _COLUMN_WEIGHTS.clear()


# --------------------------------------------------------------------------- shapes


def conv_out_size(size, k, stride, pad_lo, pad_hi, dilation):
    """Output length of a convolution along one axis (<= 0 if the kernel does not fit)."""
    return (size + pad_lo + pad_hi - dilation * (k - 1) - 1) // stride + 1


def conv_transpose_out_size(size, k, stride, pad, output_padding, dilation):
    """Output length of a transposed convolution along one axis."""
    return (size - 1) * stride - 2 * pad + dilation * (k - 1) + output_padding + 1


def _ints(op, name, v, dims, lo):
    """An int or `dims` ints, each >= lo, as a tuple."""
    if isinstance(v, int) and not isinstance(v, bool):
        v = (v,) * dims
    ok = (isinstance(v, (tuple, list)) and len(v) == dims
          and all(isinstance(i, int) and not isinstance(i, bool) and i >= lo for i in v))
    expect(op, ok, f"{name} must be an int >= {lo} or {dims} of them, got {v!r}")
    return tuple(v)


def _conv_padding(op, padding, dims, stride, dilation, ksize):
    """(padding before, padding after), one per axis, for a convolution's `padding`."""
    if padding == "valid":
        return (0,) * dims, (0,) * dims
    if padding == "same":
        expect(op, all(s == 1 for s in stride), f"padding='same' needs stride 1, got stride {stride}")
        total = [d * (k - 1) for d, k in zip(dilation, ksize)]
        before = tuple(t // 2 for t in total)
        return before, tuple(t - b for t, b in zip(total, before))
    expect(op, not isinstance(padding, str), f"padding must be ints, 'valid' or 'same', got {padding!r}")
    padding = _ints(op, "padding", padding, dims, 0)
    return padding, padding


def _conv(op, dims, transposed, x, weight, bias, stride, padding, dilation, groups, output_padding, act, alpha):
    # ---- validate everything before anything reaches the GPU
    expect(op, isinstance(x, Tensor) and isinstance(weight, Tensor), "x and weight must be Tensors")
    expect(op, bias is None or isinstance(bias, Tensor), "bias must be a Tensor or None")
    expect(op, x.ndim == dims + 2, f"x must be [N, C_in, {'L' if dims == 1 else 'H, W'}]", x)
    expect(op, weight.ndim == dims + 2, f"weight must have {dims + 2} dimensions", weight)
    expect_dtype(op, x, "f32")
    expect_dtype(op, weight, "f32", "f16")
    if bias is not None:
        expect_dtype(op, bias, "f32", "f16")
    same_device(op, x, weight, bias)
    expect(op, act in ACTS, f"act must be one of {', '.join(a for a in ACTS if a)} or None, got {act!r}")
    expect(op, alpha is None or isinstance(alpha, (int, float)), f"alpha must be a number, got {alpha!r}")
    expect(op, isinstance(groups, int) and not isinstance(groups, bool) and groups >= 1,
           f"groups must be a positive int, got {groups!r}")
    stride = _ints(op, "stride", stride, dims, 1)
    dilation = _ints(op, "dilation", dilation, dims, 1)
    n, c_in, size, ksize = x.shape[0], x.shape[1], x.shape[2:], weight.shape[2:]
    expect(op, min(x.shape) >= 1 and min(weight.shape) >= 1, "x and weight must not be empty", x, weight)
    expect(op, c_in % groups == 0, f"C_in={c_in} is not divisible by groups={groups}", x)
    cin_g = c_in // groups
    if transposed:
        expect(op, not isinstance(padding, str), f"padding must be ints, got {padding!r}")
        pad = _ints(op, "padding", padding, dims, 0)
        output_padding = _ints(op, "output_padding", output_padding, dims, 0)
        expect(op, weight.shape[0] == c_in, f"weight must be [C_in={c_in}, C_out/groups, k...]", x, weight)
        expect(op, all(o < max(s, d) for o, s, d in zip(output_padding, stride, dilation)),
               f"output_padding {output_padding} must be smaller than stride {stride} or dilation {dilation}")
        cout_g = weight.shape[1]
        out_size = tuple(conv_transpose_out_size(*a) for a in zip(size, ksize, stride, pad, output_padding, dilation))
        expect(op, min(out_size) >= 1, f"padding {pad} leaves an empty output {out_size}", x, weight)
    else:
        pad, pad_after = _conv_padding(op, padding, dims, stride, dilation, ksize)
        expect(op, weight.shape[0] % groups == 0, f"C_out={weight.shape[0]} is not divisible by groups={groups}", weight)
        expect(op, weight.shape[1] == cin_g, f"weight must be [C_out, C_in/groups={cin_g}, k...]", x, weight)
        cout_g = weight.shape[0] // groups
        out_size = tuple(conv_out_size(*a) for a in zip(size, ksize, stride, pad, pad_after, dilation))
        expect(op, min(out_size) >= 1,
               f"kernel {ksize} with dilation {dilation} is larger than the padded input", x, weight)
    if bias is not None:
        expect(op, bias.shape == (cout_g * groups,), f"bias must be [C_out={cout_g * groups}]", bias)

    # ---- 1-D runs as 2-D with H = 1 (the kernel only needs the sizes, not 4-D tensors)
    if dims == 1:
        size, ksize, out_size = (1,) + size, (1,) + ksize, (1,) + out_size
        stride, pad, dilation = (1,) + stride, (0,) + pad, (1,) + dilation
    in_shape = (n, c_in) + size
    run = run_axis(transposed, in_shape, ksize, stride, pad, dilation, cin_g) if x.dev.cpu_adapter else None
    if run is not None and columns_path(groups, cin_g, ksize, weight, bias, act):
        return conv_columns(x, weight, bias, act, run, out_size).reshape((n, cout_g) + out_size[2 - dims:])
    out = x.dev.empty((n, cout_g * groups) + out_size[2 - dims:])
    _launch(x, weight, bias, out, transposed, in_shape, ksize, out_size, cin_g, cout_g, groups,
            stride, pad, dilation, act, alpha, run)
    return out


# --------------------------------------------------------------------------- columns path

# On a CPU adapter a 1-D convolution of ONE input channel with a long kernel (CREPE conv1:
# 512 taps, stride 4) runs as a matrix product: kernels/conv_columns.wgsl lays out each
# output position's input window as a row (the im2col matrix, with a ones column that
# carries the bias), and the autotuned matmul multiplies the weights by it. On lavapipe
# that is 1.15x faster than conv_run for CREPE conv1, columns included (process CPU, 2
# frames: 4.2 -> 3.7 ms; 3 frames 6.3 -> 5.3; the matmul alone takes 2.9 / 4.1 ms, the
# columns ~0.8 ms), where one input channel gives conv_run's sliding window nothing to
# reuse across channels. Other shapes keep conv_run / conv.
COLUMNS_MIN_TAPS = 256
COLUMNS_MAX_BYTES = 1 << 25    # the columns of at most this many bytes at once (32 MiB; more items run in slices)

# weight Tensor -> {bias Tensor or None: wk [c_out, K]} (the matmul's weight with the bias column)
_COLUMN_WEIGHTS = weakref.WeakKeyDictionary()


def columns_path(groups, cin_g, ksize, weight, bias, act) -> bool:
    """Whether a 1-D convolution (conv_run's shapes) runs as columns + matmul."""
    from .matmul import ACTS as MATMUL_ACTS

    return (groups == 1 and cin_g == 1 and ksize[0] * ksize[1] >= COLUMNS_MIN_TAPS and weight.dtype == "f32"
            and (bias is None or bias.dtype == "f32") and act in MATMUL_ACTS)


def conv_columns(x, weight, bias, act, run, out_size):
    """act(conv(x, weight) + bias) as [N, C_out, positions] through kernels/conv_columns.wgsl
    and matmul; run: run_axis's parameters of the convolution's axis."""
    from .matmul import matmul

    dev = x.dev
    n, c_out = x.shape[0], weight.shape[0]
    taps = weight.size // c_out
    rows = ceil_div(taps + 1, 4) * 4
    positions = out_size[0] * out_size[1]
    prm = dict(batch=n, first_item=0, len=run["run_len"], pitch=run["run_pitch"], plane=x.size // n,
               stride=run["run_stride"], start=run["run_start"], taps=taps, rows=rows, positions=positions, c_out=c_out,
               has_bias=int(bias is not None))
    cache = _COLUMN_WEIGHTS.setdefault(weight, {})
    wk = cache.get(bias)
    if wk is None:
        with dev.eager():  # made once per weight tensor, outside any recording plan
            wk = dev.empty((c_out, rows))
            dev.run(dev.kernel("conv_columns", "gemm_weights", consts={"WG": WG}), ceil_div(wk.size // 4, WG),
                    x=x, weight=weight, bias=bias if bias is not None else weight, out=wk, **prm)
        cache[bias] = wk
    step = max(1, COLUMNS_MAX_BYTES // (4 * positions * rows))
    outs = []
    for first in range(0, n, step):
        items = min(step, n - first)
        cols = dev.empty((items, positions, rows))
        dev.run(dev.kernel("conv_columns", "columns", consts={"WG": WG}), ceil_div(items * positions, WG),
                x=x, weight=weight, bias=bias if bias is not None else weight, out=cols,
                **{**prm, "batch": items, "first_item": first})
        outs.append(matmul(wk, cols, act=act, trans_b=True))
        cols.release()
    if len(outs) == 1:
        return outs[0]
    from .elementwise import concat

    out = concat(outs)
    for part in outs:
        part.release()
    return out


# --------------------------------------------------------------------------- dispatch

# Relative time of one block of 4 * CQ output channels, measured on lavapipe: bigger tiles
# reuse each load more, but waste work when a group has fewer channels.
BLOCK_COST = {1: 1.0, 2: 1.2, 4: 1.7}


def channel_quads(cout_g):
    """Output channel quads per invocation (CQ in kernels/conv.wgsl) for groups of cout_g."""
    return min(BLOCK_COST, key=lambda cq: ceil_div(cout_g, 4 * cq) * BLOCK_COST[cq])


# conv_run on a CPU driver: each invocation is one lane of a SIMD unit (8 lanes of 32 bits
# on lavapipe's 256-bit vectors), so a batch item's invocations cost in whole groups of 8,
# and a step of a 4 * CQ channel tile costs RUN_COST[CQ] (nearly linear in CQ: the tile's
# accumulators live in memory). Fitted to CREPE's layers on lavapipe (process CPU per call,
# 1-3 frames): conv1 (128 channels, 16 runs) CQ 1/2/4 = 8.2/6.6/6.1 ms, conv2 8.4/6.8/7.2,
# conv5 (16 channels, 1 run) 0.69/0.87/1.35. A big tile wins where the grid fills the
# lanes anyway; a layer of few positions wants small tiles and more invocations.
RUN_COST = {1: 1.0, 2: 1.6, 4: 3.3}
SIMD_LANES = 8


def run_quads(cout_g, groups, lanes):
    """CQ for conv_run: the fewest SIMD groups of an item's invocations, weighted by RUN_COST."""
    return min(RUN_COST, key=lambda cq: ceil_div(groups * ceil_div(cout_g, 4 * cq) * lanes, SIMD_LANES)
               * RUN_COST[cq])


def _axis_passes(k, out, stride, pad, dil, transposed):
    """How the kernel covers one axis: a list of passes (r, count, ostep, istep, taps) in
    which output r + q * ostep (q < count) reads input q * istep + t0 + m * tstep for the
    taps k0 + m * kstep, m < ntaps; taps = (ntaps, k0, kstep, t0, tstep)."""
    if not transposed:  # out[q] reads x[q * stride + k * dil - pad]
        return [(0, out, 1, stride, (k, 0, 1, -pad, dil))]
    # Transposed: out[o] gathers x[i] over the taps with o = i * stride - pad + k * dil. For
    # o = r + q * stride that is i = q + (r + pad - k * dil) / stride, for the taps where the
    # division is exact: an arithmetic progression of k, one per output phase r.
    passes = []
    for r in range(min(stride, out)):
        ks = [t for t in range(k) if (r + pad - t * dil) % stride == 0]
        taps = (0, 0, 1, 0, 0)  # no tap reaches this phase: the output is the bias
        if ks:
            kstep = ks[1] - ks[0] if len(ks) > 1 else 1
            taps = (len(ks), ks[0], kstep, (r + pad - ks[0] * dil) // stride, -(kstep * dil) // stride)
        passes.append((r, ceil_div(out - r, stride), stride, 1, taps))
    return passes


def _pass_params(row, col):
    (ry, qh, osy, isy, (ny, ky0, kys, ty0, tys)), (rx, qw, osx, isx, (nx, kx0, kxs, tx0, txs)) = row, col
    return dict(qh=qh, qw=qw, osy=osy, osx=osx, ry=ry, rx=rx, isy=isy, isx=isx,
                ny=ny, ky0=ky0, kys=kys, ty0=ty0, tys=tys, nx=nx, kx0=kx0, kxs=kxs, tx0=tx0, txs=txs,
                lanes=ceil_div(qh * qw, 16))


# weight Tensor -> {(transposed, CQ): packed weights}; entries go with their tensor
_PACKED = weakref.WeakKeyDictionary()


def _launch(x, weight, bias, out, transposed, in_shape, ksize, out_size, cin_g, cout_g, groups,
            stride, pad, dilation, act, alpha, run):
    dev = x.dev
    n, c_in, h, w = in_shape
    (kh, kw), (oh, ow) = ksize, out_size
    rows = _axis_passes(kh, oh, stride[0], pad[0], dilation[0], transposed)
    cols = _axis_passes(kw, ow, stride[1], pad[1], dilation[1], transposed)
    cq = run_quads(cout_g, groups, ceil_div(oh * ow, 16)) if run is not None else channel_quads(cout_g)
    cblocks = ceil_div(cout_g, 4 * cq)
    consts = {"WG": WG, "CQ": cq, "ACT": ACTS[act]}
    aliases = {"W": "f16"} if weight.dtype == "f16" else {}
    if bias is not None and bias.dtype == "f16":
        aliases["B"] = "f16"
    if alpha is None:
        alpha = DEFAULT_ALPHA.get(act, 0.0)
    # Both entry points take the whole binding table and Params of kernels/conv.wgsl.
    args = dict(
        x=x, weight=weight, bias=bias if bias is not None else x,  # no bias: any f32 tensor, unread
        out=out, batch=n, c_in=c_in, h=h, w=w, c_out=cout_g * groups, oh=oh, ow=ow, kh=kh, kw=kw,
        cin_g=cin_g, cout_g=cout_g, groups=groups, transposed=int(transposed), cblocks=cblocks,
        has_bias=int(bias is not None), alpha=alpha, t0=0, t1=0, accumulate=0, splits=1, split_steps=0, split_inv=0,
        run_len=0, run_pitch=0, run_stride=0, run_start=0,
        **_pass_params(rows[0], cols[0]),
    )
    # 1. weights -> vec4s of 4 output channels, once per weight tensor and layout
    packs = _PACKED.setdefault(weight, {})
    wpack = packs.get((transposed, cq))
    if wpack is None:
        with dev.eager():  # packed once per weight tensor, outside any recording plan
            wpack = dev.empty((groups * cblocks * cin_g * kh * kw * cq, 4), dtype=weight.dtype)
            dev.run(dev.kernel("conv", "pack", consts=consts, aliases=aliases), ceil_div(wpack.shape[0], WG),
                    **args, wpack=wpack)
        packs[(transposed, cq)] = wpack
    # 2. the convolution: one pass, or one per output phase of a transposed convolution,
    # each split into dispatches of at most MAX_LOOP_STEPS reduction steps; all but the
    # last one store raw partial sums (no bias, ACT 0), later ones add to them. A single
    # small dispatch splits its reduction side by side instead (parallel_splits).
    kernel = dev.kernel("conv", "conv", consts=consts, aliases=aliases)
    raw = dev.kernel("conv", "conv", consts={**consts, "ACT": 0}, aliases=aliases)
    for row in rows:
        for col in cols:
            prm = _pass_params(row, col)
            workgroups = ceil_div(n * groups * cblocks * prm["lanes"], WG)
            steps = cin_g * prm["ny"] * prm["nx"]
            spans = reduction_spans(steps)
            # decided per batch item, so that an item's sums do not depend on the batch
            # size (a live block's 3 CREPE frames equal the offline run's)
            per_item = ceil_div(groups * cblocks * prm["lanes"], WG)
            splits = (parallel_splits(per_item, steps, min_split_steps(dev))
                      if len(rows) * len(cols) == 1 and len(spans) == 1 else 1)
            if run is not None:
                _launch_run(dev, consts, aliases, {**args, **prm, **run}, wpack, workgroups, per_item, kh * kw, cin_g)
                continue
            if splits > 1:
                _launch_split(dev, raw, consts, aliases, args, prm, wpack, workgroups, steps, splits)
                continue
            for i, (t0, t1) in enumerate(spans):
                last = i == len(spans) - 1
                dev.run(kernel if last else raw, workgroups,
                        **{**args, **prm, "t0": t0, "t1": t1, "accumulate": int(i > 0),
                           "has_bias": int(bias is not None and last), "split_steps": t1 - t0,
                           "split_inv": workgroups * WG},
                        wpack=wpack)


def run_axis(transposed, in_shape, ksize, stride, pad, dilation, cin_g):
    """conv_run's parameters (kernels/conv.wgsl) for a 1-D convolution: one axis of size 1
    with a 1-tap kernel, dilation 1 along the other (CREPE's layers, conv1d); None for
    other shapes (then `conv` runs). Used on CPU adapters only (Device.cpu_adapter),
    where it was measured; a GPU keeps `conv`, whose interleaved positions make
    neighbouring invocations read neighbouring addresses."""
    if transposed or cin_g > MAX_LOOP_STEPS:
        return None
    _, _, h, w = in_shape
    (kh, kw) = ksize
    for axis, (size, k, other, k_other) in enumerate(((h, kh, w, kw), (w, kw, h, kh))):
        if other == 1 and k_other == 1 and dilation[axis] == 1 and 2 * k + 1 <= MAX_LOOP_STEPS:
            return dict(run_len=size, run_pitch=w if axis == 0 else 1, run_stride=stride[axis],
                        run_start=-pad[axis])
    return None


def _launch_run(dev, consts, aliases, prm, wpack, workgroups, per_item, taps, cin_g):
    """conv_run over `lanes` runs of 16 positions per channel block, its input channels
    split side by side when the grid is small (parallel_splits) or when one invocation
    would make more than MAX_LOOP_STEPS loop passes (cin_g * (taps + stride + 1)), then
    sum_splits."""
    out = prm["out"]
    passes = taps + min(prm["run_stride"], taps) + 1            # loop passes per input channel
    splits = min(max(parallel_splits(per_item, cin_g * taps, min_split_steps(dev)),
                     ceil_div(cin_g * passes, MAX_LOOP_STEPS)), cin_g)
    common = {**prm, "splits": splits, "split_steps": ceil_div(cin_g, splits), "split_inv": workgroups * WG}
    if splits == 1:
        dev.run(dev.kernel("conv", "conv_run", consts=consts, aliases=aliases), workgroups, **common, wpack=wpack)
        return
    parts = dev.empty((splits * out.size,))
    raw = dev.kernel("conv", "conv_run", consts={**consts, "ACT": 0}, aliases=aliases)
    dev.run(raw, workgroups * splits, **{**common, "out": parts, "has_bias": 0}, wpack=wpack)
    dev.run(dev.kernel("conv", "sum_splits", consts=consts, aliases=aliases), ceil_div(out.size, WG),
            **{**common, "x": parts}, wpack=wpack)
    parts.release()


def min_split_steps(dev):
    return MIN_SPLIT_STEPS_CPU if dev.cpu_adapter else MIN_SPLIT_STEPS


def parallel_splits(workgroups, steps, min_steps=MIN_SPLIT_STEPS):
    """Slices of the reduction that a conv of `workgroups` workgroups per batch item runs
    side by side: enough for MIN_WORKGROUPS per item, each of at least `min_steps` steps
    (1: no split)."""
    if workgroups >= MIN_WORKGROUPS:
        return 1
    return max(1, min(ceil_div(MIN_WORKGROUPS, workgroups), steps // min_steps))


def _launch_split(dev, raw, consts, aliases, args, prm, wpack, workgroups, steps, splits):
    """One conv dispatch of `splits` reduction slices into a scratch copy per slice, then
    sum_splits adds them (+ bias, activation) into args["out"]."""
    out = args["out"]
    parts = dev.empty((splits * out.size,))
    dev.run(raw, workgroups * splits, **{**args, **prm, "out": parts, "t0": 0, "t1": steps, "has_bias": 0,
                                          "splits": splits, "split_steps": ceil_div(steps, splits),
                                          "split_inv": workgroups * WG}, wpack=wpack)
    dev.run(dev.kernel("conv", "sum_splits", consts=consts, aliases=aliases), ceil_div(out.size, WG),
            **{**args, **prm, "x": parts, "splits": splits}, wpack=wpack)
    parts.release()


def reduction_spans(steps):
    """Split the reduction steps 0..steps into the fewest near-equal ranges [t0, t1) of at
    most MAX_LOOP_STEPS steps, one dispatch each ([(0, 0)] when there are none)."""
    count = max(1, ceil_div(steps, MAX_LOOP_STEPS))
    return [(i * steps // count, (i + 1) * steps // count) for i in range(count)]


# --------------------------------------------------------------------------- benchmark


def bench_conv2d(dev, n=1, c_in=16, c_out=32, h=256, w=512, k=5, stride=2, padding=2, repeats=5):
    """conv2d against numpy (im2col + one matmul, float32) on the same data; native only.

    Defaults: a Spleeter U-Net encoder layer. Each timing covers the ops and the readback
    of the result (median of `repeats` after one warm-up). Returns wgsl_ms, numpy_ms,
    ratio (wgsl / numpy), gflops (of the WGSL conv) and max_err (vs the numpy result)."""
    import time

    import numpy as np

    g = np.random.default_rng(0)
    xh = g.standard_normal((n, c_in, h, w), dtype=np.float32)
    wh = (g.standard_normal((c_out, c_in, k, k), dtype=np.float32) / np.sqrt(c_in * k * k)).astype(np.float32)
    bh = g.standard_normal(c_out, dtype=np.float32)
    x, wt, b = dev.tensor(xh), dev.tensor(wh), dev.tensor(bh)

    def run_wgsl():
        return conv2d(x, wt, b, stride=stride, padding=padding).numpy()

    def run_numpy():
        xp = np.pad(xh, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
        oh, ow = win.shape[2:4]
        cols = win.transpose(0, 1, 4, 5, 2, 3).reshape(n, c_in * k * k, oh * ow)  # im2col (a copy)
        return (wh.reshape(c_out, -1) @ cols + bh[:, None]).reshape(n, c_out, oh, ow)

    def median_ms(fn):
        result = fn()  # warm-up: pipeline compilation, weight packing, allocator
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return sorted(times)[len(times) // 2] * 1e3, result

    wgsl_ms, got = median_ms(run_wgsl)
    numpy_ms, want = median_ms(run_numpy)
    flops = 2.0 * want.size * c_in * k * k
    return dict(wgsl_ms=wgsl_ms, numpy_ms=numpy_ms, ratio=wgsl_ms / numpy_ms,
                gflops=flops / wgsl_ms / 1e6, max_err=float(np.abs(got - want).max()))


# --------------------------------------------------------------------------- self-checks
#
# Pure-Python references (the browser has no numpy), written as the textbook sums: a
# convolution gathers out[o] = sum x[o * s - p + k * d] w[k]; a transposed convolution
# scatters x[i] w[k] into out[i * s - p + k * d]. Inputs and weights are in [-1, 1], so a
# float32 sum of K products is within K * 2^-24 * K of the exact value (the standard
# worst-case bound); that bound is the tolerance.


def _ref_conv(x, w, b, shape, wshape, stride, pad, dil, groups, transposed, output_padding):
    """Flat output of a 2-D (transposed) convolution of flat lists x, w, b."""
    n, c_in, h, wd = shape
    kh, kw = wshape[2:]
    (sy, sx), (py, px), (dy, dx) = stride, pad, dil
    if transposed:
        oh = conv_transpose_out_size(h, kh, sy, py, output_padding[0], dy)
        ow = conv_transpose_out_size(wd, kw, sx, px, output_padding[1], dx)
    else:
        oh, ow = conv_out_size(h, kh, sy, py, py, dy), conv_out_size(wd, kw, sx, px, px, dx)
    cin_g = c_in // groups
    cout_g = wshape[1] if transposed else wshape[0] // groups
    c_out = cout_g * groups
    out = [b[c] for _ in range(n) for c in range(c_out) for _ in range(oh * ow)]
    for i in range(n):
        for ic in range(c_in):
            g, icl = divmod(ic, cin_g)
            for ocl in range(cout_g):
                oc = g * cout_g + ocl
                for ky in range(kh):
                    for kx in range(kw):
                        wv = w[(((ic * cout_g + ocl) if transposed else (oc * cin_g + icl)) * kh + ky) * kw + kx]
                        # the pairs (input iy, ix) -> (output oy, ox) that this tap connects
                        if transposed:
                            pairs = ((iy, ix, iy * sy - py + ky * dy, ix * sx - px + kx * dx)
                                     for iy in range(h) for ix in range(wd))
                        else:
                            pairs = ((oy * sy - py + ky * dy, ox * sx - px + kx * dx, oy, ox)
                                     for oy in range(oh) for ox in range(ow))
                        for iy, ix, oy, ox in pairs:
                            if 0 <= iy < h and 0 <= ix < wd and 0 <= oy < oh and 0 <= ox < ow:
                                out[((i * c_out + oc) * oh + oy) * ow + ox] += x[((i * c_in + ic) * h + iy) * wd + ix] * wv
    return out


async def _check(dev, seed, op, shape, wshape, stride, padding, dilation, groups, output_padding=0, act=None):
    import math

    r = rng(seed)
    transposed = op in (conv_transpose1d, conv_transpose2d)
    xs, ws = rand(r, math.prod(shape)), rand(r, math.prod(wshape))
    bs = rand(r, wshape[1] * groups if transposed else wshape[0])
    extra = {"output_padding": output_padding} if transposed else {}
    y = op(dev.tensor(xs, shape), dev.tensor(ws, wshape), dev.tensor(bs), stride=stride, padding=padding,
           dilation=dilation, groups=groups, act=act, **extra)
    got = await y.read()
    if len(shape) == 3:  # 1-D as 2-D with H = 1
        shape, wshape = (shape[0], shape[1], 1, shape[2]), (wshape[0], wshape[1], 1, wshape[2])
        stride, padding, dilation, output_padding = (1, stride), (0, padding), (1, dilation), (0, output_padding)
    want = _ref_conv(xs, ws, bs, shape, wshape, stride, padding, dilation, groups, transposed, output_padding)
    if act == "gelu":
        want = [v * 0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in want]
    terms = (shape[1] // groups) * wshape[2] * wshape[3] + 1  # products per output, + bias
    return assert_close(op.__name__, flat(got), want, rtol=0, atol=terms * terms * 2.0**-24)


@check("conv1d")
async def _check_conv1d(dev):
    return await _check(dev, 1, conv1d, (2, 3, 11), (4, 3, 3), stride=2, padding=1, dilation=2, groups=1,
                        act="gelu")


@check("conv2d")
async def _check_conv2d(dev):
    return await _check(dev, 2, conv2d, (1, 4, 5, 7), (6, 2, 3, 2), stride=(2, 1), padding=(1, 1),
                        dilation=(1, 2), groups=2)


@check("conv_transpose1d")
async def _check_conv_transpose1d(dev):
    return await _check(dev, 3, conv_transpose1d, (2, 2, 6), (2, 3, 4), stride=3, padding=1, dilation=1,
                        groups=1, output_padding=2)


@check("conv_transpose2d")
async def _check_conv_transpose2d(dev):
    return await _check(dev, 4, conv_transpose2d, (1, 4, 3, 4), (4, 2, 3, 3), stride=(2, 3), padding=(1, 0),
                        dilation=(1, 2), groups=2, output_padding=(1, 0))
