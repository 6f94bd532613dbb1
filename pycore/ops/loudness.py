"""A-weighted loudness as DDSP defines it (kernels/loudness.wgsl after pycore.ops.spectral.stft).

    loudness_db(x, sample_rate=16000, frame_rate=250, n_fft=512, ref_db=0.0, range_db=80.0,
                center=True)
        x [T] or [B, T] f32 -> [frames] or [B, frames], frames = 1 + T // hop;
        center=False: x is padded already (one chunk of a long signal), frames =
        1 + (T - n_fft) // hop, frame f = x[f * hop : f * hop + n_fft]
    weighted_power_db(spec, weight, ref_db=0.0, range_db=80.0)
        spec [B, F, frames, 2] or [F, frames, 2] (an stft), weight [F] linear -> [B, frames] / [frames]
    a_weighting(freqs, min_db=-80.0) -> [dB per frequency]      host, pure Python
    a_weights(n_fft, sample_rate, min_db=-80.0) -> [10^(dB / 10) per rfft bin]   host

loudness_db is ddsp.spectral_ops.compute_loudness (ddsp 3.7.0, padding='center', the
package's defaults: n_fft 512, ref_db 0, range_db 80):

  1. hop = sample_rate // frame_rate (16 kHz at 250 Hz: 64); n_fft // 2 zeros before
     and after the signal; frames of n_fft every hop; periodic Hann window; rfft
     (tf.signal.stft: the enclosing power of two is n_fft itself, which must be one);
  2. power |X|^2 of each bin, times the A-weighting 10^(A(f) / 10) of its frequency
     f = k * sample_rate / n_fft (librosa.A_weighting, clipped below at -80 dB, so the
     DC bin counts with 1e-8);
  3. the mean over the n_fft // 2 + 1 bins, in dB: 10 log10(max(power, 10^(-range_db /
     10))) - ref_db, clamped below at -range_db.

DDSP before v2.0 used n_fft 2048 and ref_db 20.7 (about white noise of amplitude 1 at
0 dB); both are parameters here. Steps 2-3 are one pass of kernels/loudness.wgsl.
"""

from __future__ import annotations

import math

from ..gpu.runtime import Tensor, ceil_div
from ..gpu.selfcheck import assert_close, check, rand, rng
from . import expect, expect_dtype, expect_loop_steps, same_device
from .spectral import stft

WG = 64
DB_RANGE = 80.0
# librosa.A_weighting's constants: the poles of the IEC 61672 A-weighting filter, in Hz
A_POLES = (12194.217, 20.598997, 107.65265, 737.86223)


def a_weighting(freqs, min_db=-80.0):
    """A-weighting in dB of each frequency (Hz), librosa.A_weighting's formula in float64:
    2.0 + 20 log10(c0 f^4 / ((f^2 + c0)(f^2 + c1) sqrt((f^2 + c2)(f^2 + c3)))), c_i the
    squared poles, clipped below at min_db (None: no clipping; 0 Hz is -inf)."""
    c0, c1, c2, c3 = (f * f for f in A_POLES)
    out = []
    for f in freqs:
        f2 = float(f) ** 2
        if f2 == 0.0:
            db = -math.inf
        else:
            db = 2.0 + 20.0 * (math.log10(c0) + 2 * math.log10(f2) - math.log10(f2 + c0) - math.log10(f2 + c1)
                               - 0.5 * math.log10(f2 + c2) - 0.5 * math.log10(f2 + c3))
        out.append(db if min_db is None else max(min_db, db))
    return out


def a_weights(n_fft, sample_rate, min_db=-80.0):
    """Linear power weights 10^(A(f_k) / 10) of the rfft bins f_k = k * sample_rate / n_fft."""
    freqs = [k * sample_rate / n_fft for k in range(n_fft // 2 + 1)]
    return [10.0 ** (db / 10.0) for db in a_weighting(freqs, min_db)]


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def weighted_power_db(spec, weight, ref_db=0.0, range_db=DB_RANGE):
    op = "weighted_power_db"
    expect(op, isinstance(spec, Tensor) and isinstance(weight, Tensor), "spec and weight must be Tensors")
    expect_dtype(op, spec, "f32")
    expect_dtype(op, weight, "f32")
    dev = same_device(op, spec, weight)
    expect(op, spec.ndim in (3, 4) and spec.shape[-1] == 2, "spec must be [B, F, frames, 2] or [F, frames, 2]", spec)
    expect(op, weight.shape == (spec.shape[-3],), f"weight must be [F={spec.shape[-3]}]", spec, weight)
    expect(op, _is_number(ref_db), f"ref_db must be a finite number, got {ref_db!r}")
    expect(op, _is_number(range_db) and range_db > 0, f"range_db must be a positive number, got {range_db!r}")
    B = 1 if spec.ndim == 3 else spec.shape[0]
    bins, frames = spec.shape[-3], spec.shape[-2]
    expect_loop_steps(op, bins + 1, f"summing {bins} bins", spec)  # one invocation per frame loops over them
    out = dev.empty((B, frames))
    dev.run(dev.kernel("loudness", "weighted_power_db", consts={"WG": WG}), ceil_div(B * frames, WG),
            spec=spec, weight=weight, out=out, frames=frames, total=B * frames, bins=bins,
            pmin=10.0 ** (-range_db / 10.0), ref_db=ref_db, range_db=range_db)
    return out.reshape(frames) if spec.ndim == 3 else out


def loudness_db(x, sample_rate=16000, frame_rate=250, n_fft=512, ref_db=0.0, range_db=DB_RANGE,
                center=True):
    op = "loudness_db"
    expect(op, isinstance(x, Tensor), "x must be a Tensor")
    expect_dtype(op, x, "f32")
    expect(op, x.ndim in (1, 2), "x must be [T] or [B, T]", x)
    for name, v in (("sample_rate", sample_rate), ("frame_rate", frame_rate), ("n_fft", n_fft)):
        expect(op, isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"{name} must be a positive int, got {v!r}")
    expect(op, n_fft >= 2 and n_fft & (n_fft - 1) == 0, f"n_fft must be a power of two, got {n_fft}")
    hop = sample_rate // frame_rate
    expect(op, 1 <= hop <= n_fft, f"hop sample_rate // frame_rate = {hop} must be in 1..n_fft={n_fft}")
    need = 1 if center else n_fft
    expect(op, x.shape[-1] >= need, f"x needs at least {need} samples", x)
    dev = x.dev
    tables = dev.__dict__.setdefault("_loudness_weights", {})
    key = (n_fft, sample_rate)
    if key not in tables:
        tables[key] = dev.tensor(a_weights(n_fft, sample_rate))
    spec = stft(x, n_fft, hop, center=bool(center), pad_mode="constant")
    out = weighted_power_db(spec, tables[key], ref_db, range_db)
    spec.release()
    return out


# --------------------------------------------------------------------------- self-check
# Pure-Python float64 reference on a random spectrum with |re|, |im| <= 1 and weights in
# [0, 1]. The GPU's power carries <= (F + 3) roundings of 2^-24 relative (the sum of F
# terms, the squares, the weight, the mean), i.e. 10 log10(e) * 11 * 2^-24 < 3e-6 dB for
# F = 8; log2 in f32 is within a few ulps of |log2 p| <= 27 (80 dB), < 2e-5 dB. Zero
# frames hit the floor: -range_db.


@check("loudness")
async def _check_loudness(dev):
    r = rng(51)
    B, F, T = 2, 8, 5
    spec = rand(r, B * F * T * 2)
    for k in range(F):                        # frame 0 of batch 1: silence
        spec[((F + k) * T) * 2:((F + k) * T) * 2 + 2] = [0.0, 0.0]
    weight = rand(r, F, 0.0, 1.0)
    got = await weighted_power_db(dev.tensor(spec, (B, F, T, 2)), dev.tensor(weight), ref_db=1.5,
                                  range_db=70.0).read()
    want = []
    for b in range(B):
        for t in range(T):
            at = [((b * F + k) * T + t) * 2 for k in range(F)]
            power = sum((spec[i] ** 2 + spec[i + 1] ** 2) * w for i, w in zip(at, weight)) / F
            want.append(max(10 * math.log10(max(power, 10 ** -7.0)) - 1.5, -70.0))
    return assert_close("weighted_power_db", got, want, rtol=0, atol=5e-5)
