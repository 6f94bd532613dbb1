"""Sample-rate conversion between any two rates, streaming (native: python-soxr).

`stemtone separate` runs the models at their own rate (44.1 kHz), so files at other
rates go through this twice (in, and each stem back out); `stemtone tone` resamples
to CREPE's 16 kHz. The work is libsoxr's (python-soxr's `ResampleStream`, quality
"VHQ": linear phase, 28-bit precision, passband to 95 % of the lower Nyquist); this
module only gives it the shape the pipelines use:

    r = Resampler(48000, 44100, channels=2)
    y = r.process(x)        # x float [channels, n] (or [n] for one channel) -> float32 [channels, m]
    y = r.flush()           # the rest; the total is exactly output_length(n_in)

The concatenation is bit-identical to a one-shot `resample()` however the input was
cut (soxr's stream is; tests/test_resample.py checks), and exactly
round(n * out / in) samples long (halves rounded up), so a stem written back at the
file's rate has the file's length. Quality next to the hand-written polyphase
resampler this replaced (pycore/reference/polyphase.py): `python -m
pycore.cli.bench.resample`.

The browser does not resample here: the page decodes files at the model's rate
with the Web Audio API.
"""

from __future__ import annotations

import numpy as np
import soxr

QUALITY = "VHQ"


def output_length(n: int, in_rate: int, out_rate: int) -> int:
    """round(n * out_rate / in_rate), halves rounded up, in exact integer arithmetic."""
    return (2 * n * out_rate + in_rate) // (2 * in_rate)


class Resampler:
    """Streaming resampler for `channels` channels from `in_rate` to `out_rate` Hz.

    process(x) takes float arrays [channels, n] (or [n] for one channel) and returns
    float32 [channels, m] (m may be 0); flush() returns the remaining output, after
    which the resampler is finished.
    """

    def __init__(self, in_rate: int, out_rate: int, channels: int = 1, quality: str = QUALITY):
        in_rate, out_rate = int(in_rate), int(out_rate)
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"Resampler: sample rates must be positive, got {in_rate} -> {out_rate}")
        if channels < 1:
            raise ValueError(f"Resampler: channels must be 1 or more, got {channels}")
        self.in_rate, self.out_rate, self.channels = in_rate, out_rate, channels
        self.n_in = 0        # input samples received
        self.n_out = 0       # output samples returned
        self.finished = False
        self.stream = soxr.ResampleStream(in_rate, out_rate, channels, dtype="float32", quality=quality) \
            if in_rate != out_rate else None

    def _run(self, x, last=False) -> np.ndarray:
        if self.stream is None:
            return x.copy()
        # soxr wants [n, channels], C-contiguous
        y = self.stream.resample_chunk(np.ascontiguousarray(x.T), last=last)
        return np.ascontiguousarray(y.reshape(-1, self.channels).T, dtype=np.float32)

    def process(self, x) -> np.ndarray:
        if self.finished:
            raise RuntimeError("Resampler.process after flush()")
        x = np.asarray(x, np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise ValueError(f"Resampler.process: expected [{self.channels}, n] samples, got {x.shape}")
        self.n_in += x.shape[1]
        y = self._run(x)
        # never past the exact total (soxr may round the other way at the very end)
        y = y[:, :max(output_length(self.n_in, self.in_rate, self.out_rate) - self.n_out, 0)]
        self.n_out += y.shape[1]
        return y

    def flush(self) -> np.ndarray:
        """The remaining output; the total is output_length(n_in, in_rate, out_rate)."""
        if self.finished:
            raise RuntimeError("Resampler.flush called twice")
        self.finished = True
        total = output_length(self.n_in, self.in_rate, self.out_rate)
        tail = self._run(np.zeros((self.channels, 0), np.float32), last=True)[:, :total - self.n_out]
        if tail.shape[1] < total - self.n_out:  # zero after the last sample, as the signal is
            pad = np.zeros((self.channels, total - self.n_out - tail.shape[1]), np.float32)
            tail = np.concatenate([tail, pad], axis=1)
        self.n_out = total
        return tail


def resample(x, in_rate: int, out_rate: int, quality: str = QUALITY) -> np.ndarray:
    """One-shot: x [C, n] or [n] float -> float32 [C, output_length(n)] (or [m] for 1-D input)."""
    x = np.asarray(x, np.float32)
    flat = x.ndim == 1
    x2 = x[None] if flat else x
    r = Resampler(in_rate, out_rate, x2.shape[0], quality)
    y = np.concatenate([r.process(x2), r.flush()], axis=1)
    return y[0] if flat else y
