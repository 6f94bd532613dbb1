"""Log-magnitude frames and fast Griffin-Lim (kernels/spectrogram.wgsl + stft/istft).

    z = logmag(X, mean=0.0, std=1.0, eps=1e-4)     X [F, frames, 2] -> z [frames, F]
    add_noise(z, scale, seed, offset=0, count=None, count_step=0)
                                                   in place: z += scale * N(0, 1)
    feed_back(z, pred, bin_std, mix, scale=1.0, seed=0)
                                                   in place on a window z [S, B, F]: with probability
                                                   mix[1] / 2^32 frame (s >= 1, b) becomes
                                                   pred[s - 1, b] + scale * bin_std * N(0, 1)
                                                   (scheduled sampling; mix: u32 [2], the counter and
                                                   the threshold, read when the work runs)
    y = griffin_lim(z, n_fft, hop, mean, std, iters=32, alpha=0.99, seed=0, eps=1e-4, count=None)
        z [frames, F] normalized log-magnitudes -> audio [(frames - 1) * hop]

`count`, where given, is a u32 Tensor [1] read when the work runs, not when it is
recorded: the noise counter starts at offset + count[0] * count_step, and Griffin-Lim's
phase seed is seed + count[0]. A recorded plan (pycore.gpu.runtime.Plan) keeps its
scalars, so a generator that replays one plan per block of frames moves its frame
counter there (pycore/learn/generate.py). Without it, count[0] is 0.

Phase reconstruction is the *fast* Griffin-Lim of Perraudin, Balazs & Sondergaard (2013):
Griffin-Lim's projection onto consistent spectrograms plus a momentum term alpha = 0.99,
which reaches in ~30 iterations the spectral convergence plain Griffin-Lim needs ~100+
for, with the same cost per iteration (one STFT + one iSTFT on the GPU). Locally Weighted
Sums (the MAGNet paper's choice) need no iterations but are sequential per frame, which a
GPU runs poorly; FGLA keeps every frame of a block in one dispatch.
"""

from __future__ import annotations

import math

from ..gpu.runtime import Tensor, ceil_div
from ..gpu.selfcheck import assert_close, check, rand, rng
from . import expect
from .spectral import istft, stft

WG = 64


def _run(entry, n, x, z, mag=None, tprev=None, count=None, **params):
    dev = x.dev
    args = dict(n=n, F=1, frames=1, mean=0.0, inv_std=1.0, eps=1e-4, scale=0.0, seed=0, offset=0, alpha=0.0,
                period=0)
    args.update(params)
    dev.run(dev.kernel("spectrogram", entry), ceil_div(n, WG), x=x, z=z, mag=mag or _unused(dev),
            tprev=tprev or _unused(dev, 1), count=count if count is not None else _zero_count(dev), **args)


def _check_count(op, count):
    expect(op, count is None or (isinstance(count, Tensor) and count.dtype == "u32" and count.size == 1),
           "count must be None or a u32 Tensor of one element", count)


def _unused(dev, k=0):
    """Small write-only stand-ins for bindings an entry point does not touch."""
    cache = dev.__dict__.setdefault("_spectrogram_unused", {})
    if k not in cache:
        with dev.eager():  # made once, outside any recording plan
            cache[k] = dev.empty((1,))
    return cache[k]


def _zero_count(dev):
    """The count of calls without one: a u32 zero, uploaded once per device."""
    cache = dev.__dict__.setdefault("_spectrogram_unused", {})
    if "count" not in cache:
        with dev.eager():  # made once, outside any recording plan
            cache["count"] = dev.tensor([0], (1,), dtype="u32")
    return cache["count"]


def logmag(X, mean=0.0, std=1.0, eps=1e-4):
    op = "logmag"
    expect(op, isinstance(X, Tensor) and X.ndim == 3 and X.shape[2] == 2 and X.dtype == "f32",
           "X must be an f32 spectrum [F, frames, 2] (pycore.ops.spectral.stft)", X)
    expect(op, std > 0 and eps > 0, f"need std > 0 and eps > 0, got {std}, {eps}")
    F, frames, _ = X.shape
    z = X.dev.empty((frames, F))
    _run("logmag", F * frames, X, z, F=F, frames=frames, mean=mean, inv_std=1.0 / std, eps=eps)
    return z


def add_noise(z, scale, seed=0, offset=0, count=None, count_step=0, bin_std=None):
    """bin_std: an f32 Tensor [P] (P divides z's size) scaling element i's noise by
    bin_std[i % P], e.g. a standard deviation per frequency bin of [frames, P] frames."""
    op = "add_noise"
    expect(op, isinstance(z, Tensor) and z.dtype == "f32", "z must be an f32 Tensor", z)
    _check_count(op, count)
    expect(op, bin_std is None or (isinstance(bin_std, Tensor) and bin_std.dtype == "f32" and bin_std.size > 0
                                   and z.size % bin_std.size == 0),
           "bin_std must be None or an f32 Tensor whose size divides z's", bin_std)
    if scale:
        _run(op, z.size, bin_std if bin_std is not None else _unused(z.dev, 2), z, count=count,
             scale=float(scale), seed=int(seed) & 0xFFFFFFFF, offset=int(offset) & 0xFFFFFFFF,
             F=int(count_step) & 0xFFFFFFFF, period=bin_std.size if bin_std is not None else 0)


def feed_back(z, pred, bin_std, mix, scale=1.0, seed=0):
    """Parallel scheduled sampling (Duckworth et al. 2019) on a training window: z [S, B, F]
    (the input frames, changed in place), pred [S, B, F] (the model's predictions from z:
    pred[s - 1] stands for z[s]), bin_std [F] (the sampler's noise_std). mix: a u32 Tensor
    [2], (counter, threshold): each frame (s >= 1, b) is replaced when the hash of (seed,
    counter * S * B + s * B + b) is below the threshold (probability threshold / 2^32) by
    pred[s - 1, b] + scale * bin_std * N(0, 1), the draw the sampler would feed back."""
    op = "feed_back"
    expect(op, isinstance(z, Tensor) and z.dtype == "f32" and z.ndim == 3, "z must be an f32 Tensor [S, B, F]", z)
    expect(op, isinstance(pred, Tensor) and pred.dtype == "f32" and pred.shape == z.shape,
           f"pred must be an f32 Tensor {z.shape}", pred)
    expect(op, isinstance(bin_std, Tensor) and bin_std.dtype == "f32" and bin_std.shape == (z.shape[2],),
           f"bin_std must be an f32 Tensor ({z.shape[2]},)", bin_std)
    expect(op, isinstance(mix, Tensor) and mix.dtype == "u32" and mix.size == 2,
           "mix must be a u32 Tensor of two elements (counter, threshold)", mix)
    _, B, F = z.shape
    _run(op, z.size, bin_std, z, mag=pred, count=mix, F=F, frames=B, scale=float(scale),
         seed=int(seed) & 0xFFFFFFFF)


def griffin_lim(z, n_fft, hop, mean, std, iters=32, alpha=0.99, seed=0, eps=1e-4, count=None):
    op = "griffin_lim"
    _check_count(op, count)
    F = n_fft // 2 + 1
    expect(op, isinstance(z, Tensor) and z.ndim == 2 and z.shape[1] == F and z.shape[0] >= 2,
           f"z must be [frames >= 2, {F}] log-magnitudes for n_fft={n_fft}", z)
    expect(op, isinstance(iters, int) and iters >= 0 and 0 <= alpha < 1, "need iters >= 0 and 0 <= alpha < 1")
    dev, frames = z.dev, z.shape[0]
    length = (frames - 1) * hop
    mag, c, tprev = dev.empty((F, frames)), dev.empty((F, frames, 2)), dev.empty((F, frames, 2))
    common = dict(F=F, frames=frames, mean=mean, inv_std=1.0 / std, eps=eps, seed=int(seed) & 0xFFFFFFFF,
                  alpha=alpha)
    _run("gl_init", F * frames, z, c, mag, tprev, count, **common)
    for _ in range(iters):
        X = stft(istft(c, n_fft, hop, length=length), n_fft, hop)
        _run("gl_project", F * frames, X, c, mag, tprev, **common)
    return istft(tprev if iters else c, n_fft, hop, length=length)


# --------------------------------------------------------------------------- self-check


@check("logmag")
async def _check_logmag(dev):
    r = rng(45)
    F, frames = 3, 4
    xs = rand(r, F * frames * 2)
    z = logmag(dev.tensor(xs, (F, frames, 2)), mean=0.5, std=2.0)
    want = [(math.log(math.hypot(xs[(f * frames + t) * 2], xs[(f * frames + t) * 2 + 1]) + 1e-4) - 0.5) / 2.0
            for t in range(frames) for f in range(F)]
    return assert_close("logmag", await z.read(), want, rtol=1e-5, atol=1e-5)
