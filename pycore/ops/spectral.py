"""Short-time Fourier transform and its inverse (kernels/fft.wgsl), matching torch.

    X = stft(x, n_fft, hop)           x [B, T] or [T] -> X [B, F, frames, 2] or [F, frames, 2]
    y = istft(X, n_fft, hop)          back to [B, T'] or [T'] (T' = T with length=T)

X holds (re, im) in its last dimension, like torch.view_as_real(torch.stft(...,
return_complex=True)); F = n_fft // 2 + 1 (onesided). Semantics follow torch.stft /
torch.istft (center padding, frame count, window-square envelope normalization, trimming)
with one difference: window=None means a periodic Hann window (torch.hann_window(n_fft))
for both functions, where torch would use a rectangular one.

Power-of-two n_fft run as an in-place radix-4 (and 2) FFT in workgroup memory (n_fft up to
4096 within WebGPU's default 16 KiB of workgroup memory, more where the device allows);
other sizes as a direct DFT (O(n_fft^2), fine for small n_fft).
"""

from __future__ import annotations

import math

from ..gpu.runtime import ceil_div
from ..gpu.selfcheck import assert_close, check, flat, rand, rng
from . import expect, expect_dtype, expect_loop_steps
from .scan import is_cpu_adapter

PAD_MODES = {"constant": 0, "reflect": 1, "replicate": 2, "circular": 3}
CAP = 2048  # complex values per workgroup in the FFT kernels (16 KiB as re + im f32)


def _wg(dev):
    # lavapipe runs invocations as SIMD lanes and pays per barrier: 64 threads measured
    # faster there (0.58 vs 0.69 CPU-s for 30 s of stereo at n_fft 4096 with 256);
    # 256 is the usual choice on GPUs.
    return 64 if is_cpu_adapter(dev) else 256


# ---------------------------------------------------------------- host-side tables (cached)


def _cached(dev, key, make):
    """A small constant tensor made once per device (kept on the device object, so it
    goes away with it)."""
    tables = dev.__dict__.setdefault("_spectral_tables", {})
    if key not in tables:
        tables[key] = make()
    return tables[key]


def hann_values(n):
    return [1.0] if n == 1 else [0.5 - 0.5 * math.cos(2 * math.pi * j / n) for j in range(n)]


def hann_window(dev, n):
    """Periodic Hann window of length n (torch.hann_window(n), also [1.0] for n = 1),
    computed in float64."""
    return _cached(dev, ("hann", n), lambda: dev.tensor(hann_values(n), (n,)))


def _twiddles(dev, n, count):
    """exp(-2 pi i k / n) for k < count as [count, 2] (re, im), computed in float64."""
    def make():
        vals = []
        for k in range(count):
            a = 2 * math.pi * k / n
            vals += [math.cos(a), -math.sin(a)]
        return dev.tensor(vals, (count, 2))
    return _cached(dev, ("tw", n, count), make)


def _fft_plan(dev, n_fft):
    """(N, log2 N, frames per workgroup, workgroup capacity) for the FFT path, or None."""
    if n_fft < 2 or n_fft & (n_fft - 1):
        return None
    half = n_fft // 2
    cap = max(CAP, half)
    if 8 * cap > int(dev.limits.get("max-compute-workgroup-storage-size", 16384)):
        return None
    return half, half.bit_length() - 1, cap // half, cap


def _params(**kw):
    """Every fft.wgsl Params field (the runtime wants all of them), zeros by default."""
    base = dict(n_fft=0, half=0, log2n=0, hop=1, length=0, frames=1, total=0, pad=0, pad_mode=0,
                fpw=1, nbins=0, win_len=0, win_off=0, ola_len=0, batch=0, scale=1.0, raw=0)
    base.update(kw)
    return base


def _window(op, dev, window, n_fft, *tensors):
    if window is None:
        return hann_window(dev, n_fft)
    expect_dtype(op, window, "f32")
    expect(op, window.dev is dev, "window lives on another device", window)
    expect(op, window.ndim == 1 and 1 <= window.shape[0] <= n_fft,
           f"window must be 1-D with 1..n_fft={n_fft} values", *tensors, window)
    return window


def _check_sizes(op, n_fft, hop):
    expect(op, isinstance(n_fft, int) and n_fft >= 1, f"n_fft must be a positive int, got {n_fft!r}")
    expect(op, isinstance(hop, int) and hop >= 1, f"hop must be a positive int, got {hop!r}")


# ---------------------------------------------------------------- ops


def stft(x, n_fft, hop=None, window=None, center=True, pad_mode="reflect", normalized=False,
         onesided=True):
    """torch.stft(x, n_fft, hop, window=window, center, pad_mode, normalized, onesided,
    return_complex=True), as a real tensor [B, F, frames, 2] (or [F, frames, 2] for x [T]).

    window: f32 Tensor [win_len <= n_fft] (zero-padded to n_fft, centered, as torch does)
    or None for a periodic Hann window. hop defaults to n_fft // 4.
    """
    op = "stft"
    hop = n_fft // 4 if hop is None and isinstance(n_fft, int) else hop
    expect_dtype(op, x, "f32")
    expect(op, x.ndim in (1, 2), "x must be [T] or [B, T]", x)
    _check_sizes(op, n_fft, hop)
    expect(op, pad_mode in PAD_MODES, f"pad_mode must be one of {sorted(PAD_MODES)}, got {pad_mode!r}")
    B, T = (1, x.shape[0]) if x.ndim == 1 else x.shape
    pad = n_fft // 2 if center else 0
    if not center:
        expect(op, T >= n_fft, f"input shorter than n_fft={n_fft} (center=False)", x)
    elif pad_mode == "reflect":
        expect(op, T > pad, f"reflect padding by n_fft//2={pad} needs more than {pad} samples", x)
    else:
        need = max(1, pad) if pad_mode == "circular" else 1
        expect(op, T >= need, f"{pad_mode} padding by {pad} needs at least {need} samples", x)
    dev = x.dev
    win = _window(op, dev, window, n_fft, x)
    frames = 1 + (T + 2 * pad - n_fft) // hop
    nbins = n_fft // 2 + 1 if onesided else n_fft
    out = dev.empty((B, nbins, frames, 2))
    args = _params(n_fft=n_fft, hop=hop, length=T, frames=frames, total=B * frames, pad=pad,
                   pad_mode=PAD_MODES[pad_mode], nbins=nbins, win_len=win.shape[0],
                   win_off=(n_fft - win.shape[0]) // 2,
                   scale=1 / math.sqrt(n_fft) if normalized else 1.0)
    wg, plan = _wg(dev), _fft_plan(dev, n_fft)
    if plan is None:  # the direct DFT: one invocation loops over the n_fft samples
        expect_loop_steps(op, n_fft + 1, f"the direct DFT of n_fft={n_fft} (no FFT this size fits the "
                          "GPU's workgroup memory, or n_fft is not a power of two)", x)
    if plan is not None:
        half, log2n, fpw, cap = plan
        kernel = dev.kernel("fft", "stft_fft", consts={"WG": wg, "CAP": cap})
        args.update(half=half, log2n=log2n, fpw=fpw)
        dev.run(kernel, ceil_div(B * frames, fpw), sig=x, win=win, out=out,
                tw=_twiddles(dev, n_fft, half), **args)
    else:
        kernel = dev.kernel("fft", "stft_dft", consts={"WG": wg})
        dev.run(kernel, ceil_div(B * frames * nbins, wg), sig=x, win=win, out=out,
                tw=_twiddles(dev, n_fft, n_fft), **args)
    return out.reshape(nbins, frames, 2) if x.ndim == 1 else out


def istft(X, n_fft, hop=None, window=None, center=True, normalized=False, length=None,
          envelope=True):
    """torch.istft(torch.view_as_complex(X), n_fft, hop, window=window, center, normalized,
    onesided=True, length): X [B, F, frames, 2] or [F, frames, 2] with F = n_fft // 2 + 1.

    Inverse FFT of each frame, windowed overlap-add, divided by the overlap-added squared
    window, center padding trimmed; `length` trims or zero-pads the output. Samples where
    the squared-window envelope is below 1e-11 (a window failing NOLA) are 0 where torch
    raises. window=None is a periodic Hann window, as in stft.

    envelope=False skips the division: the result is the plain overlap-add of the windowed
    inverse FFTs, for callers that stream a long signal in blocks of frames and divide by
    the envelope of the whole signal themselves (pycore/demix/spleeter.py).
    """
    op = "istft"
    hop = n_fft // 4 if hop is None and isinstance(n_fft, int) else hop
    expect_dtype(op, X, "f32")
    _check_sizes(op, n_fft, hop)
    expect(op, X.ndim in (3, 4) and X.shape[-1] == 2, "X must be [B, F, frames, 2] or [F, frames, 2]", X)
    nbins = n_fft // 2 + 1
    expect(op, X.shape[-3] == nbins, f"X needs F = n_fft//2+1 = {nbins} onesided bins", X)
    expect(op, X.shape[-2] >= 1, "X has no frames", X)
    expect(op, length is None or (isinstance(length, int) and length >= 0),
           f"length must be None or an int >= 0, got {length!r}")
    B = 1 if X.ndim == 3 else X.shape[0]
    frames = X.shape[-2]
    dev = X.dev
    win = _window(op, dev, window, n_fft, X)
    start = n_fft // 2 if center else 0
    ola_len = n_fft + hop * (frames - 1)
    out_len = length if length is not None else ola_len - 2 * start
    frame_buf = dev.empty((B, frames, n_fft))
    args = _params(n_fft=n_fft, hop=hop, frames=frames, total=B * frames, nbins=nbins,
                   win_len=win.shape[0], win_off=(n_fft - win.shape[0]) // 2, ola_len=ola_len,
                   batch=B)
    wg, plan = _wg(dev), _fft_plan(dev, n_fft)
    # One invocation loops over the frames covering a sample (overlap_add) and, for the
    # direct DFT, over the n_fft // 2 + 1 bins.
    expect_loop_steps(op, ceil_div(n_fft, hop) + 2, f"overlap-adding n_fft={n_fft} with hop={hop}", X)
    if plan is None:
        expect_loop_steps(op, nbins + 1, f"the direct inverse DFT of n_fft={n_fft}", X)
    if plan is not None:
        half, log2n, fpw, cap = plan
        # irfft = (1/N) * N-point inverse FFT of the merged spectrum; normalized: * sqrt(n_fft)
        args.update(half=half, log2n=log2n, fpw=fpw,
                    scale=(math.sqrt(n_fft) if normalized else 1.0) / half)
        tw = _twiddles(dev, n_fft, half)
        dev.run(dev.kernel("fft", "istft_fft", consts={"WG": wg, "CAP": cap}),
                ceil_div(B * frames, fpw), sig=X, win=win, out=frame_buf, tw=tw, **args)
    else:
        args.update(scale=1 / math.sqrt(n_fft) if normalized else 1 / n_fft)
        tw = _twiddles(dev, n_fft, n_fft)
        dev.run(dev.kernel("fft", "istft_dft", consts={"WG": wg}), ceil_div(B * frames * n_fft, wg),
                sig=X, win=win, out=frame_buf, tw=tw, **args)
    y = dev.empty((B, out_len))
    args.update(length=out_len, pad=start, raw=0 if envelope else 1)
    dev.run(dev.kernel("fft", "overlap_add", consts={"WG": wg}), ceil_div(B * out_len, wg),
            sig=frame_buf, win=win, out=y, tw=tw, **args)  # tw unused
    return y.reshape(out_len) if X.ndim == 3 else y


# ---------------------------------------------------------------- self-checks
# Pure-Python float64 references. Error budget for float32 with |x| <= 1, n_fft <= 16:
# every bin is a sum of n_fft products through log2(n_fft) + 2 rounding steps (or n_fft
# for the DFT), each <= 2^-24 relative to sum |x w| <= n_fft: atol = 16 * 18 * 2^-24 ~ 2e-5.


def _stft_ref(xs, B, T, n_fft, hop):
    """Reflect-padded, Hann-windowed DFT of every frame -> flat [B, F, frames, 2]."""
    pad, win, nbins = n_fft // 2, hann_values(n_fft), n_fft // 2 + 1
    frames = 1 + T // hop
    out = [0.0] * (B * nbins * frames * 2)
    for b in range(B):
        row = xs[b * T:(b + 1) * T]
        padded = [row[pad - i] for i in range(pad)] + row + [row[T - 2 - i] for i in range(pad)]
        for t in range(frames):
            seg = [padded[t * hop + j] * win[j] for j in range(n_fft)]
            for k in range(nbins):
                re = sum(v * math.cos(2 * math.pi * j * k / n_fft) for j, v in enumerate(seg))
                im = -sum(v * math.sin(2 * math.pi * j * k / n_fft) for j, v in enumerate(seg))
                at = ((b * nbins + k) * frames + t) * 2
                out[at], out[at + 1] = re, im
    return out


@check("stft")
async def _check_stft(dev):
    r = rng(21)
    details = []
    for n_fft, hop, T in ((16, 4, 37), (12, 5, 23)):  # radix-4/2 FFT path; DFT path
        xs = rand(r, 2 * T)
        got = await stft(dev.tensor(xs, (2, T)), n_fft, hop).read()
        details.append(assert_close(f"stft n_fft={n_fft}", got, _stft_ref(xs, 2, T, n_fft, hop),
                                    rtol=0, atol=16 * 18 * 2.0**-24))
    return "; ".join(details)


@check("istft")
async def _check_istft(dev):
    # the inverse of a float64 reference spectrum must give the signal back; the error
    # is that of the inverse transforms (|X| <= 16, as above: ~1e-5 at worst) summed over
    # the overlapping frames and divided by the window envelope (>= 0.56 here)
    r = rng(22)
    details = []
    for n_fft, hop, T in ((16, 4, 37), (12, 5, 23)):
        xs = rand(r, 2 * T)
        spec = _stft_ref(xs, 2, T, n_fft, hop)
        frames = 1 + T // hop
        X = dev.tensor(spec, (2, n_fft // 2 + 1, frames, 2))
        got = await istft(X, n_fft, hop, length=T).read()
        details.append(assert_close(f"istft n_fft={n_fft}", flat(got), xs, rtol=0, atol=2e-5))
    return "; ".join(details)


# ---------------------------------------------------------------- benchmark (native only)


def numpy_stft(x, n_fft, hop, window=None):
    """Reference: torch.stft(center=True, pad_mode="reflect") with numpy's rfft, float64
    window; x [B, T] -> complex [B, F, frames]. Native only (numpy)."""
    import numpy as np

    if window is None:
        window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    xp = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(n_fft // 2, n_fft // 2)], mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(xp, n_fft, axis=-1)[..., ::hop, :]
    return np.swapaxes(np.fft.rfft(frames * window, axis=-1), -1, -2)


def bench_stft(dev, seconds=30, sr=44100, channels=2, n_fft=4096, hop=1024, repeat=3):
    """Time stft of `seconds` of noise (channels x seconds*sr) on dev against numpy's rfft
    of the framed, windowed signal (float32 input, numpy computes in float64), best of
    `repeat`. Returns dict(wgsl_ms, numpy_ms, ratio = wgsl_ms / numpy_ms, readback_ms,
    rel_err). wgsl_ms counts the GPU work only (input already uploaded). Native only."""
    import time

    import numpy as np

    x = np.random.default_rng(0).standard_normal((channels, int(seconds * sr))).astype(np.float32)
    xt, probe = dev.tensor(x), dev.tensor([0.0])
    stft(xt, n_fft, hop)  # compile
    dev.read_sync(probe)
    wgsl = numpy_ms = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        X = stft(xt, n_fft, hop)
        dev.read_sync(probe)  # waits for the queue: everything before it has run
        wgsl = min(wgsl, time.perf_counter() - t0)
    t0 = time.perf_counter()
    got = dev.read_sync(X)
    readback = time.perf_counter() - t0
    for _ in range(repeat):
        t0 = time.perf_counter()
        want = numpy_stft(x, n_fft, hop)
        numpy_ms = min(numpy_ms, time.perf_counter() - t0)
    got = got[..., 0] + 1j * got[..., 1]
    rel = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    return dict(wgsl_ms=wgsl * 1e3, numpy_ms=numpy_ms * 1e3, ratio=wgsl / numpy_ms,
                readback_ms=readback * 1e3, rel_err=rel)
