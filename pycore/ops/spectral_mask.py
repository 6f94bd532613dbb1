"""Mask-based separation on STFT spectra, and streamed resynthesis.

    magnitude(X, bins, valid=None, channels=None)        -> [1, C, frames, bins]
    ratio_masks(X, masks, bins, valid=None, eps=1e-10)   -> Y [S * C, F, frames, 2]
    overlap_finish(ola, carry, start, count, q0, total_frames, n_fft, hop, mix=1)
                                                         -> [rows / mix, count]
    overlap_finish(..., None, None, n_fft, hop, position=P)   P: u32 Tensor [2]
    position_bytes(q0, total_frames)                     -> what P holds

X is a complex STFT [Cx, F, frames, 2] from pycore.ops.spectral.stft. `magnitude` gives
the model its input: |X| of the first `bins` bins, transposed to time-major
[1, C, frames, bins] (C = channels, default Cx; with Cx = 1 and C = 2 a mono spectrum
feeds a stereo model), frames >= valid set to 0. `ratio_masks` turns the S model outputs
`masks` [S, C, frames, bins] into the S masked spectra, ready for istft:
Y_s = X * (m_s^2 + eps/2) / (sum_j m_j^2 + eps) on the first `bins` bins of frames
< valid, 0 elsewhere (kernels/spectral_mask.wgsl).

`overlap_finish` completes one block of a streamed inverse STFT (kernels/ola_stream.wgsl):
`ola` [rows, ola_len] is the block's istft(..., center=False, envelope=False), `carry`
[rows, carry_len] the previous block's overlapping tail (or None); the result is
(ola + carry) / envelope of the whole signal for the samples start .. start + count - 1,
rows averaged in groups of `mix` (2 turns stereo into mono). q0 is the position of ola's
first sample on the signal's frame grid (frame t starts at t * hop); total_frames the
frame count of the whole signal, or None while it is not known (the envelope then has
no end). The kernel reads them from a small u32 tensor [q0, total_frames or NO_END]
(uploaded by the op from the ints); a recorded plan that runs every block of a signal
(pycore.demix.spleeter, umx) passes its own tensor as `position` instead and writes
position_bytes(q0, total_frames) into it before each replay.
"""

from __future__ import annotations

import array
import math

from ..gpu.runtime import Tensor, ceil_div
from ..gpu.selfcheck import assert_close, check, flat, rand, rng
from . import expect, expect_dtype, expect_loop_steps, same_device

WG = 256
NO_END = 0xFFFFFFFF  # total_frames while the signal's length is unknown


def _is_int(v, lo=0):
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _mask_params(**kw):
    base = dict(channels=1, xchannels=1, nbins=1, bins=1, frames=1, valid=0, stems=1, eps=0.0)
    base.update(kw)
    return base


def _spectrum(op, X, bins, valid):
    expect(op, isinstance(X, Tensor), "X must be a Tensor")
    expect_dtype(op, X, "f32")
    expect(op, X.ndim == 4 and X.shape[-1] == 2, "X must be [C, F, frames, 2]", X)
    xc, nbins, frames, _ = X.shape
    expect(op, _is_int(bins, 1) and bins <= nbins, f"bins must be an int in 1..{nbins}, got {bins!r}", X)
    valid = frames if valid is None else valid
    expect(op, _is_int(valid) and valid <= frames, f"valid must be an int in 0..{frames}, got {valid!r}", X)
    return xc, nbins, frames, valid


def magnitude(X, bins, valid=None, channels=None):
    """|X| of bins 0..bins-1 as [1, C, frames, bins]; frames >= valid are 0. channels:
    the model's channel count C (default: X's); channel c reads X channel c % Cx."""
    op = "magnitude"
    xc, nbins, frames, valid = _spectrum(op, X, bins, valid)
    channels = xc if channels is None else channels
    expect(op, _is_int(channels, 1) and channels % xc == 0,
           f"channels must be a positive multiple of X's {xc} channels, got {channels!r}", X)
    out = X.dev.empty((1, channels, frames, bins))
    X.dev.run(X.dev.kernel("spectral_mask", "magnitude", consts={"WG": WG}), ceil_div(out.size, WG),
              spec=X, masks=X, out=out,
              **_mask_params(channels=channels, xchannels=xc, nbins=nbins, bins=bins, frames=frames,
                             valid=valid))
    return out


def ratio_masks(X, masks, bins, valid=None, eps=1e-10):
    """Masked spectra Y [S * C, F, frames, 2] (row s * C + c) from the model outputs
    masks [S, C, frames, bins]: Y_s = X * (m_s^2 + eps/2) / (sum_j m_j^2 + eps) on bins
    < bins of frames < valid, 0 elsewhere."""
    op = "ratio_masks"
    xc, nbins, frames, valid = _spectrum(op, X, bins, valid)
    expect(op, isinstance(masks, Tensor), "masks must be a Tensor", X)
    same_device(op, X, masks)
    expect_dtype(op, masks, "f32")
    expect(op, masks.ndim == 4 and masks.shape[2:] == (frames, bins) and masks.shape[1] % xc == 0,
           f"masks must be [S, C, {frames}, {bins}] with C a multiple of X's {xc} channels", X, masks)
    expect(op, isinstance(eps, (int, float)) and eps >= 0, f"eps must be a number >= 0, got {eps!r}")
    stems, channels = masks.shape[:2]
    expect_loop_steps(op, 3 * (stems + 1), f"{stems} stems", masks)  # up to 3 loops over them per value
    out = X.dev.empty((stems * channels, nbins, frames, 2))
    X.dev.run(X.dev.kernel("spectral_mask", "ratio_mask", consts={"WG": WG}),
              ceil_div(channels * nbins * frames, WG), spec=X, masks=masks, out=out,
              **_mask_params(channels=channels, xchannels=xc, nbins=nbins, bins=bins, frames=frames,
                             valid=valid, stems=stems, eps=float(eps)))
    return out


def position_bytes(q0, total_frames) -> bytes:
    """The contents of overlap_finish's `position` tensor (u32 [2]) for a block at q0 of a
    signal of total_frames frames (None: not known yet)."""
    return array.array("I", [q0, NO_END if total_frames is None else total_frames]).tobytes()


def overlap_finish(ola, carry, start, count, q0, total_frames, n_fft, hop, mix=1, window=None, position=None):
    """(ola + carry) / envelope of the whole signal for samples start .. start+count-1 of
    each row, rows averaged in groups of mix -> [rows / mix, count]. See the module doc.
    window: f32 [n_fft] (default: the periodic Hann window of pycore.ops.spectral).
    position: a u32 Tensor [2] holding position_bytes(q0, total_frames), read by the
    kernel instead (q0 and total_frames are then None): a plan writes it per block."""
    from .spectral import hann_window

    op = "overlap_finish"
    expect(op, isinstance(ola, Tensor), "ola must be a Tensor")
    expect_dtype(op, ola, "f32")
    expect(op, ola.ndim == 2, "ola must be [rows, samples]", ola)
    rows, ola_len = ola.shape
    expect(op, _is_int(mix, 1) and rows % mix == 0, f"mix {mix!r} must divide the {rows} rows", ola)
    if carry is not None:
        expect(op, isinstance(carry, Tensor), "carry must be a Tensor or None", ola)
        same_device(op, ola, carry)
        expect_dtype(op, carry, "f32")
        expect(op, carry.ndim == 2 and carry.shape[0] == rows and carry.shape[1] <= ola_len,
               f"carry must be [{rows}, n <= {ola_len}]", ola, carry)
    expect(op, _is_int(n_fft, 1) and _is_int(hop, 1), f"n_fft and hop must be positive ints, got {n_fft!r}, {hop!r}")
    expect(op, _is_int(start) and _is_int(count) and start + count <= ola_len,
           f"samples {start!r} + {count!r} must lie within the {ola_len} of ola", ola)
    if position is None:
        expect(op, _is_int(q0) and q0 + ola_len <= NO_END, f"q0 must be an int >= 0 that fits u32, got {q0!r}")
        expect(op, total_frames is None or (_is_int(total_frames, 1) and total_frames < NO_END),
               f"total_frames must be None or a positive int, got {total_frames!r}")
    else:
        expect(op, isinstance(position, Tensor) and position.shape == (2,) and position.dtype == "u32",
               "position must be a u32 Tensor [2] (position_bytes(q0, total_frames))", ola)
        same_device(op, ola, position)
        expect(op, q0 is None and total_frames is None,
               "give q0 and total_frames either as ints or in position, not both", ola)
    # one invocation loops over the frames covering its sample (the envelope), then the mix
    expect_loop_steps(op, ceil_div(n_fft, hop) + mix + 3, f"n_fft={n_fft} with hop={hop} and mix={mix}", ola)
    win = hann_window(ola.dev, n_fft) if window is None else window
    expect(op, isinstance(win, Tensor) and win.shape == (n_fft,) and win.dtype == "f32",
           f"window must be an f32 Tensor [{n_fft}]", win)
    out = ola.dev.empty((rows // mix, count))
    if out.size == 0:
        return out
    pos = position if position is not None else ola.dev.tensor(position_bytes(q0, total_frames), (2,), "u32")
    ola.dev.run(ola.dev.kernel("ola_stream", "finish", consts={"WG": WG}), ceil_div(out.size, WG),
                ola=ola, carry=carry if carry is not None else ola, win=win, position=pos, out=out,
                rows=rows // mix, mix=mix, ola_len=ola_len, carry_len=0 if carry is None else carry.shape[1],
                start=start, count=count, hop=hop, n_fft=n_fft)
    if position is None:
        pos.release()
    return out


# ---------------------------------------------------------------- self-checks
# Pure-Python float64 references on tiny shapes.


def _f32(values):
    return array.array("f", values).tolist()


@check("magnitude")
async def _check_magnitude(dev):
    # sqrt(re^2 + im^2) in f32: a few roundings of values <= 2 -> atol 4 * 2 * 2^-24
    r = rng(31)
    xc, F, T, K = 1, 5, 3, 4
    spec = _f32(rand(r, xc * F * T * 2))
    got = flat(await magnitude(dev.tensor(spec, (xc, F, T, 2)), K, valid=2, channels=2).read())
    want = []
    for c in range(2):
        for t in range(T):
            for k in range(K):
                at = (k * T + t) * 2
                want.append(math.hypot(spec[at], spec[at + 1]) if t < 2 else 0.0)
    return assert_close("magnitude", got, want, rtol=0, atol=8 * 2.0**-24)


@check("ratio_masks")
async def _check_ratio_masks(dev):
    # a handful of f32 roundings on ratios <= 1 times |X| <= 1: atol 8 * 2^-24; tiny masks
    # (1e-6) make the eps terms matter, as on near-silent input
    r = rng(32)
    C, F, T, K, S, eps = 2, 4, 3, 3, 2, 1e-10
    spec = _f32(rand(r, C * F * T * 2))
    masks = _f32([v * (1e-6 if i % 3 == 0 else 1.0) for i, v in enumerate(rand(r, S * C * T * K))])
    got = flat(await ratio_masks(dev.tensor(spec, (C, F, T, 2)), dev.tensor(masks, (S, C, T, K)), K,
                                 valid=2, eps=eps).read())
    want = []
    for s in range(S):
        for c in range(C):
            for k in range(F):
                for t in range(T):
                    ratio = 0.0
                    if k < K and t < 2:
                        ms = [masks[((j * C + c) * T + t) * K + k] for j in range(S)]
                        ratio = (ms[s] ** 2 + eps / 2) / (sum(m * m for m in ms) + eps)
                    at = ((c * F + k) * T + t) * 2
                    want += [spec[at] * ratio, spec[at + 1] * ratio]
    return assert_close("ratio_masks", got, want, rtol=0, atol=8 * 2.0**-24)


@check("overlap_finish")
async def _check_overlap_finish(dev):
    # the envelope sums <= n_fft / hop squares, then one division and a mean of 2:
    # relative error ~ 8 * 2^-24 of values <= 2 / 0.25
    from .spectral import hann_values

    r = rng(33)
    n_fft, hop, rows, ola_len, carry_len = 8, 2, 4, 12, 6
    ola, carry = _f32(rand(r, rows * ola_len)), _f32(rand(r, rows * carry_len))
    win = _f32(hann_values(n_fft))
    start, count, q0, total = 1, 10, 4, 5   # q = 5..14; frames end at 4: the envelope thins from q = 10
    got = flat(await overlap_finish(dev.tensor(ola, (rows, ola_len)), dev.tensor(carry, (rows, carry_len)),
                                    start, count, q0, total, n_fft, hop, mix=2).read())
    want = []
    for r_out in range(rows // 2):
        for j in range(count):
            s = start + j
            q = q0 + s
            env = sum(win[q - t * hop] ** 2 for t in range(total) if 0 <= q - t * hop < n_fft)
            acc = 0.0
            for row in (2 * r_out, 2 * r_out + 1):
                v = ola[row * ola_len + s] + (carry[row * carry_len + s] if s < carry_len else 0.0)
                acc += v / env if env > 1e-11 else 0.0
            want.append(acc / 2)
    return assert_close("overlap_finish", got, want, rtol=0, atol=8 * 8 * 2.0**-24)
