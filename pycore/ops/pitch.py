"""CREPE's pre- and post-processing on the GPU (kernels/pitch.wgsl).

    crepe_frames(x, hop=64, start=0, count=None, frame=1024, center=True)
        x [T] f32 -> [count, frame]: frames start, start + 1, ... each minus its mean
        and divided by max(std, 1e-10) (std with the n - 1 divisor), as
        torchcrepe.preprocess(..., pad=True) makes them. center=True: frame f is
        centered on sample f * hop, with zeros outside x (torchcrepe's padding);
        center=False: frame f is x[f * hop : f * hop + frame] (x already padded, e.g.
        one chunk of a long signal). count defaults to all frames from start on:
        frame_count(T, hop, frame, center) - start.
    crepe_decode(act, fmin=50.0, fmax=2006.0, decoder="local_average")
        act [N, 360] (the network's sigmoid outputs) -> [N, 2] = (f0 in Hz, confidence)
        per frame. confidence is the largest activation among the bins allowed by
        fmin / fmax (torchcrepe's "periodicity"); f0 the weighted mean, in cents, of
        the 9 bins around it (inside the allowed range). decoder "local_average"
        weighs them by their activations, as CREPE itself (crepe.core's
        to_local_average_cents, which DDSP uses) does; "weighted_argmax" weighs them by
        sigmoid(activation), exactly as torchcrepe.decode.weighted_argmax does (that
        second sigmoid flattens the weights, so its f0 stays close to the argmax bin's
        center). torchcrepe's default decoder, Viterbi over the whole sequence, is not
        offered: it needs all frames before it can emit any, so it cannot stream.
    pitch_bins(fmin, fmax) -> (lo, hi): the allowed bins [lo, hi), as torchcrepe computes them.
    pitch_track(prev, rows, frames, offset) -> (track [frames, 2], last [2]): a track
        at every frame from rows analysed every second frame (kernels/pitch_track.wgsl;
        the tone engine's lower analysis rate).

Bin b is 1997.3794 + 20 b cents above 10 Hz (32.7 Hz .. 1975.5 Hz).
"""

from __future__ import annotations

import math

from ..gpu.runtime import Tensor, ceil_div
from ..gpu.selfcheck import assert_close, check, rng
from . import expect, expect_dtype, expect_loop_steps

FRAME = 1024                 # CREPE's window, samples at 16 kHz
PITCH_BINS = 360
CENTS_PER_BIN = 20
CENTS_OFFSET = 1997.3794084376191
DECODERS = {"local_average": 0, "weighted_argmax": 1}
RADIUS = 4                   # the decoder averages bins k - 4 .. k + 4
WG = 64


def frame_count(length: int, hop: int, frame: int = FRAME, center: bool = True) -> int:
    """Frames of `length` samples: 1 + length // hop when centered, else the frames
    that fit, 1 + (length - frame) // hop (0 if none does)."""
    if center:
        return 1 + length // hop
    return 0 if length < frame else 1 + (length - frame) // hop


def pitch_bins(fmin=50.0, fmax=2006.0):
    """(lo, hi): bins [lo, hi) between fmin and fmax, as torchcrepe.postprocess computes
    them (floor for fmin, ceil for fmax, then clamped to 0 .. 360)."""
    def bins(f):
        return (1200 * math.log2(f / 10.0) - CENTS_OFFSET) / CENTS_PER_BIN

    lo, hi = math.floor(bins(fmin)), math.ceil(bins(fmax))
    return max(0, min(PITCH_BINS, lo)), max(0, min(PITCH_BINS, hi))


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def crepe_frames(x, hop=64, start=0, count=None, frame=FRAME, center=True):
    op = "crepe_frames"
    expect(op, isinstance(x, Tensor), "x must be a Tensor")
    expect_dtype(op, x, "f32")
    expect(op, x.ndim == 1, "x must be a 1-D signal [T]", x)
    expect(op, _is_int(hop) and hop >= 1, f"hop must be an int >= 1, got {hop!r}")
    expect(op, _is_int(frame) and frame >= 2 and frame % 2 == 0, f"frame must be an even int >= 2, got {frame!r}")
    # each of a frame's WG invocations strides over it 3 times (+ 2 trees)
    expect_loop_steps(op, 3 * (ceil_div(frame, WG) + 1) + 16, f"frames of {frame} samples", x)
    total = frame_count(x.shape[0], hop, frame, bool(center))
    expect(op, _is_int(start) and 0 <= start <= total, f"start must be an int in 0..{total}, got {start!r}", x)
    if count is None:
        count = total - start
    expect(op, _is_int(count) and 0 <= count <= total - start,
           f"count must be an int in 0..{total - start} (frames from start={start} on), got {count!r}", x)
    dev = x.dev
    out = dev.empty((count, frame))
    dev.run(dev.kernel("pitch", "crepe_frames", consts={"WG": WG}), count, x=x, out=out,
            length=x.shape[0], hop=hop, frame=frame, pad=frame // 2 if center else 0, start=start, frames=count,
            bins=0, lo=0, hi=0)
    return out


def crepe_decode(act, fmin=50.0, fmax=2006.0, decoder="local_average"):
    op = "crepe_decode"
    expect(op, isinstance(act, Tensor), "act must be a Tensor")
    expect_dtype(op, act, "f32")
    expect(op, act.ndim == 2 and act.shape[1] == PITCH_BINS, f"act must be [N, {PITCH_BINS}]", act)
    expect(op, decoder in DECODERS, f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    ok = all(isinstance(f, (int, float)) and not isinstance(f, bool) and f > 0 for f in (fmin, fmax))
    expect(op, ok and fmin < fmax, f"need 0 < fmin < fmax, got fmin={fmin!r}, fmax={fmax!r}")
    lo, hi = pitch_bins(fmin, fmax)
    expect(op, lo < hi, f"no pitch bin lies between fmin={fmin} and fmax={fmax} Hz")
    dev = act.dev
    n = act.shape[0]
    out = dev.empty((n, 2))
    dev.run(dev.kernel("pitch", "crepe_decode", consts={"WG": WG, "MODE": DECODERS[decoder]}),
            ceil_div(n, WG), x=act, out=out, length=0, hop=1, frame=0, pad=0, start=0, frames=n,
            bins=PITCH_BINS, lo=lo, hi=hi)
    return out


def pitch_track(prev, rows, frames, offset):
    """(track [frames, 2], last [2]) from CREPE rows analysed every second frame
    (kernels/pitch_track.wgsl): prev [2] is the (f0 Hz, confidence) row at frame L, rows
    [n, 2] (or None for n = 0) the rows at L + 2, .., L + 2 n; track row i is the track
    at frame L + offset + i (offset 0 or 1; frames <= 2 n + 1 - offset), interpolated
    halfway in cents between analysed frames; last is the row at L + 2 n."""
    op = "pitch_track"
    expect(op, isinstance(prev, Tensor) and prev.shape == (2,), "prev must be a [2] Tensor")
    n = 0 if rows is None else rows.shape[0]
    expect(op, rows is None or (isinstance(rows, Tensor) and rows.ndim == 2 and rows.shape[1] == 2),
           "rows must be an [n, 2] Tensor or None", rows)
    expect(op, offset in (0, 1), f"offset must be 0 or 1, got {offset!r}")
    expect(op, _is_int(frames) and 1 <= frames <= 2 * n + 1 - offset,
           f"frames must be an int in 1..{2 * n + 1 - offset} (the rows reach no further), got {frames!r}")
    for t in (prev, rows):
        if t is not None:
            expect_dtype(op, t, "f32")
    dev = prev.dev
    out, last = dev.empty((frames, 2)), dev.empty((2,))
    dev.run(dev.kernel("pitch_track", "track", consts={"WG": WG}), ceil_div(frames, WG),
            prev=prev, rows_in=prev if rows is None else rows, out=out, last=last, frames=frames, n=n, offset=offset)
    return out, last


# --------------------------------------------------------------------------- self-checks
# Pure-Python float64 references of the same definitions.


def _ref_frames(xs, hop, start, count, frame):
    out = []
    for f in range(start, start + count):
        first = f * hop - frame // 2
        seg = [xs[i] if 0 <= i < len(xs) else 0.0 for i in range(first, first + frame)]
        mean = sum(seg) / frame
        std = math.sqrt(sum((v - mean) ** 2 for v in seg) / (frame - 1))
        out += [(v - mean) / max(std, 1e-10) for v in seg]
    return out


def _ref_decode(acts, lo, hi, decoder):
    out = []
    for row in acts:
        k = max(range(lo, hi), key=lambda b: (row[b], -b))   # first maximum
        weights = {b: row[b] if decoder == "local_average" else 1 / (1 + math.exp(-row[b]))
                   for b in range(max(lo, k - RADIUS), min(hi, k + RADIUS + 1))}
        cents = CENTS_OFFSET + CENTS_PER_BIN * sum(w * b for b, w in weights.items()) / sum(weights.values())
        out += [10 * 2 ** (cents / 1200), row[k]]
    return out


def _f32(v):
    import struct

    return struct.unpack("<f", struct.pack("<f", v))[0]


@check("crepe_frames")
async def _check_crepe_frames(dev):
    # x in [-1, 1], frame 16: the mean and the sum of squares carry <= 16 roundings of
    # 2^-24 relative; each output (x - mean) / std, with |x - mean| / std <= sqrt(16) = 4
    # and std of a uniform [-1, 1] frame >= ~0.3 here, is then within ~(1 + 4) * 16 *
    # 2^-24 / 0.3 < 2e-5. A frame of the zero padding alone gives 0 (0 / 1e-10).
    r = rng(41)
    xs = [_f32(r.uniform(-1, 1)) for _ in range(37)]
    got = await crepe_frames(dev.tensor(xs), hop=5, start=1, count=7, frame=16).read()
    return assert_close("crepe_frames", got, _ref_frames(xs, 5, 1, 7, 16), rtol=0, atol=2e-5)


@check("crepe_decode")
async def _check_crepe_decode(dev):
    # f0 within a few ulps of the float64 value (relative 2e-6 covers ~1e-3 cents plus
    # exp2); the confidence is an input value, copied exactly.
    r = rng(42)
    acts = [[_f32(r.random() ** 4) for _ in range(PITCH_BINS)] for _ in range(5)]
    acts[1][3], acts[2][359] = 2.0, 2.0      # argmax below fmin (ignored) / at the top edge
    acts[3][100] = acts[3][200] = 1.5        # tie: the first one wins
    details = []
    for decoder in DECODERS:
        got = await crepe_decode(dev.tensor(acts, (5, PITCH_BINS)), decoder=decoder).read()
        want = _ref_decode(acts, *pitch_bins(), decoder)
        details.append(assert_close(f"crepe_decode {decoder}", got, want, rtol=2e-6, atol=0))
    return "; ".join(details)
