"""The hand-written band-limited resampler (rational polyphase, numpy) that
pycore/audio/resample.py used before it moved to python-soxr: kept as the baseline
the resampler benchmark compares soxr with (developers only, never imported by the
product).

`stemtone separate` runs Spleeter at 44.1 kHz, so files at other rates go through
this twice (in, and each stem back out). Method: rational polyphase resampling with a
Kaiser-windowed sinc low-pass.

With out/in = up/down in lowest terms, output sample j sits at input time
t_j = j * down / up and is

    y[j] = sum_k x[k] * h(t_j - k),      h(t) = c sinc(c t) * kaiser(t / T)

where x is zero before the first sample, c is the cutoff as a fraction of the input
Nyquist frequency (ROLLOFF of the LOWER of the two Nyquist frequencies, so the
filter is both the anti-aliasing and the anti-imaging filter) and T = HALF_WIDTH
samples of the lower rate. The figures: flat to 0.905 x the lower Nyquist (19.96 kHz
at 44.1 kHz), at most 1.5e-4 dB ripple, at least ~95 dB attenuation from 1.0 x the
lower Nyquist on (the filter's Kaiser design; tests/test_resample.py measures it).
Each of the `up` phases' taps are normalized to sum to 1 (exact DC gain).

Fast path: the phases repeat every `up` outputs, so a "frame" of G outputs (a
multiple of `up`) is a fixed matrix times a window of the input that advances by D
inputs (the matching multiple of `down`). Frames are split into row blocks of at most
256 outputs, each a dense [rows, window] matrix, and FB frames at a time go through
one matrix product (BLAS). Memory is O(one batch) whatever the length of the audio.

Streaming: `Resampler.process(block)` returns the output that is final so far,
`flush()` the rest; the concatenation has exactly output_length(n) samples
(round(n * out / in), halves rounded up) and is bit-identical to a one-shot call,
because batches are aligned to fixed absolute frame numbers and so compute the same
products on the same data whichever way the input was cut.
"""

from __future__ import annotations

import functools
import math

import numpy as np

HALF_WIDTH = 64      # filter half-length, in samples of the lower rate (128 taps there)
ROLLOFF = 0.952      # -6 dB cutoff as a fraction of the lower Nyquist frequency
BETA = 9.5           # Kaiser window shape: ~95 dB stopband attenuation
ROWS = 256           # outputs per row block of a frame's matrix
BATCH_OUTPUTS = 1 << 17   # aim for this many outputs per matrix product
MAX_TABLE = 1 << 26  # largest filter table (float32 values) for exotic rate pairs


def output_length(n: int, in_rate: int, out_rate: int) -> int:
    """round(n * out_rate / in_rate), halves rounded up, in exact integer arithmetic."""
    return (2 * n * out_rate + in_rate) // (2 * in_rate)


def kernel(t, cutoff: float, half: float):
    """The windowed-sinc h(t) at offsets t (input samples, float64 array)."""
    u = t / half
    inside = np.abs(u) < 1.0
    window = np.where(inside, np.i0(BETA * np.sqrt(np.clip(1.0 - u * u, 0.0, None))) / np.i0(BETA), 0.0)
    return cutoff * np.sinc(cutoff * t) * window


@functools.lru_cache(maxsize=16)
def _design(up: int, down: int):
    """The filter for out/in = up/down, as the matrices a frame of outputs is made of:
    returns (G outputs per frame, D inputs per frame, kt, blocks), blocks a list of
    (first row, end row, input offset, float32 matrix [window, rows])."""
    cutoff = ROLLOFF * min(1.0, up / down)          # fraction of the input Nyquist
    half = HALF_WIDTH * max(1.0, down / up)         # in input samples
    kt = math.ceil(half)
    # frame: G outputs from D inputs, with D >= 2 * kt so the matrix is at least half full
    periods = max(1, math.ceil(2 * kt / down))
    G, D = periods * up, periods * down
    if G * (2 * kt + ROWS * down / up) > MAX_TABLE:
        raise ValueError(f"Resampler: the rate ratio {up}/{down} needs a filter with {up} phases, too large")
    # taps of output i of a frame: input index q_i - kt + 1 + m, m = 0 .. 2 kt - 1
    i = np.arange(G)
    q = i * down // up
    phase = (i * down % up) / up
    m = np.arange(2 * kt)
    taps = kernel(phase[:, None] + (kt - 1) - m[None, :], cutoff, half)
    taps /= taps.sum(axis=1, keepdims=True)
    # row blocks: rows r0..r1 read a window of the frame's input starting at q[r0]
    blocks = []
    for r0 in range(0, G, ROWS):
        r1 = min(r0 + ROWS, G)
        width = q[r1 - 1] - q[r0] + 2 * kt
        w = np.zeros((r1 - r0, width))
        rows = np.arange(r1 - r0)[:, None]
        w[rows, (q[r0:r1] - q[r0])[:, None] + m[None, :]] = taps[r0:r1]
        blocks.append((r0, r1, int(q[r0]), np.ascontiguousarray(w.T, dtype=np.float32)))
    return G, D, kt, blocks


class Resampler:
    """Streaming resampler for `channels` channels from `in_rate` to `out_rate` Hz.

    process(x) takes float arrays [channels, n] (or [n] for one channel) and returns
    float32 [channels, m] (m may be 0); flush() returns the remaining output, after
    which the resampler is finished.
    """

    def __init__(self, in_rate: int, out_rate: int, channels: int = 1):
        in_rate, out_rate = int(in_rate), int(out_rate)
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"Resampler: sample rates must be positive, got {in_rate} -> {out_rate}")
        g = math.gcd(in_rate, out_rate)
        self.in_rate, self.out_rate, self.channels = in_rate, out_rate, channels
        self.up, self.down = out_rate // g, in_rate // g
        self.n_in = 0        # input samples received
        self.n_out = 0       # output samples returned
        self.finished = False
        if self.up == self.down:
            return
        self.G, self.D, self.kt, self.blocks = _design(self.up, self.down)
        self.FB = max(1, BATCH_OUTPUTS // self.G)       # frames per matrix product
        self.frame = 0                                   # next frame to compute
        # input buffer holding absolute samples [start, start + buf width); before
        # sample 0 the signal is zero, so frame 0's window starts kt - 1 zeros early
        self.start = -(self.kt - 1)
        self.buf = np.zeros((channels, self.kt - 1), np.float32)

    def _window_end(self, frame: int) -> int:
        """One past the last absolute input index that frames < `frame` read."""
        last = frame - 1
        r0, r1, off, w = self.blocks[-1]
        return last * self.D - self.kt + 1 + off + w.shape[0]

    def _compute(self, nframes: int) -> np.ndarray:
        """Outputs of frames self.frame .. self.frame + nframes - 1 from the buffer."""
        c = self.channels
        out = np.empty((c, nframes, self.G), np.float32)
        base = self.frame * self.D - self.kt + 1 - self.start   # buffer index of frame's window
        for r0, r1, off, w in self.blocks:
            width = w.shape[0]
            first = base + off
            span = self.buf[:, first:first + (nframes - 1) * self.D + width]
            windows = np.lib.stride_tricks.sliding_window_view(span, width, axis=1)[:, ::self.D]
            x = np.ascontiguousarray(windows).reshape(c * nframes, width)
            out[:, :, r0:r1] = (x @ w).reshape(c, nframes, r1 - r0)
        self.frame += nframes
        return out.reshape(c, nframes * self.G)

    def _drop_consumed(self):
        keep = self.frame * self.D - self.kt + 1                 # first input the next frame needs
        if keep > self.start:
            self.buf = self.buf[:, keep - self.start:]
            self.start = keep

    def process(self, x) -> np.ndarray:
        if self.finished:
            raise RuntimeError("Resampler.process after flush()")
        x = np.asarray(x, np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise ValueError(f"Resampler.process: expected [{self.channels}, n] samples, got {x.shape}")
        self.n_in += x.shape[1]
        if self.up == self.down:
            self.n_out += x.shape[1]
            return x.copy()
        self.buf = np.concatenate([self.buf, x], axis=1)
        outs = []
        # whole batches of FB frames whose input is all here (aligned: frame % FB == 0)
        while self._window_end(self.frame + self.FB) <= self.n_in:
            outs.append(self._compute(self.FB))
            self._drop_consumed()
        return self._emit(outs)

    def flush(self) -> np.ndarray:
        """The remaining output; the total is output_length(n_in, in_rate, out_rate)."""
        if self.finished:
            raise RuntimeError("Resampler.flush called twice")
        self.finished = True
        total = output_length(self.n_in, self.in_rate, self.out_rate)
        if self.up == self.down:
            return np.zeros((self.channels, 0), np.float32)
        frames = -(-total // self.G)
        outs = []
        if frames > self.frame:
            need = self._window_end(frames) - (self.start + self.buf.shape[1])
            if need > 0:  # the signal is zero after its last sample
                self.buf = np.concatenate([self.buf, np.zeros((self.channels, need), np.float32)], axis=1)
            while self.frame < frames:
                outs.append(self._compute(min(self.FB, frames - self.frame)))
        out = self._emit(outs)
        out = out[:, :out.shape[1] - (self.n_out - total)]
        self.n_out = total
        self.buf = None
        return out

    def _emit(self, outs) -> np.ndarray:
        out = np.concatenate(outs, axis=1) if outs else np.zeros((self.channels, 0), np.float32)
        self.n_out += out.shape[1]
        return out


def resample(x, in_rate: int, out_rate: int) -> np.ndarray:
    """One-shot: x [C, n] or [n] float -> float32 [C, output_length(n)] (or [m] for 1-D input)."""
    x = np.asarray(x, np.float32)
    flat = x.ndim == 1
    x2 = x[None] if flat else x
    r = Resampler(in_rate, out_rate, x2.shape[0])
    y = np.concatenate([r.process(x2), r.flush()], axis=1)
    return y[0] if flat else y
