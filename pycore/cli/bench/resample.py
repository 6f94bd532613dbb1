"""Resampling: python-soxr (what pycore.audio.resample runs) next to the hand-written
polyphase resampler it replaced (pycore.reference.polyphase), in the same run.

Quality is the in-band SNR of a round trip 48 kHz -> 44.1 kHz -> 48 kHz: the
signal is white noise band-limited to BAND Hz (below both Nyquist frequencies; what
a resampler must keep), and the error is measured in that band only (what leaks
above it is the filters' job to remove, not an error of the kept band). Tones at a
few frequencies show where in the band each filter starts to roll off. Speed is
the real-time factor of 48 kHz -> 44.1 kHz on stereo (seconds of audio per second
of CPU time, best of two), both through the same streaming interface in 10 s blocks.
"""

from __future__ import annotations

import numpy as np

from ...audio import resample as soxr_resample
from ...reference import polyphase
from .common import best_time, logger, row

RATE, MID = 48000, 44100
BAND = 20000.0            # Hz: the band both resamplers are specified to keep
LOW_BAND = 15000.0        # Hz: below where soxr's passband ripple starts to show
TONES = (1000.0, 10000.0, 15000.0, 19000.0, 19900.0)
EDGE = 0.1                # s dropped at both ends (the signal starts and stops abruptly there)


def band_limit(x: np.ndarray, rate: int, band: float = BAND) -> np.ndarray:
    """x with every FFT bin above `band` Hz zeroed (float64, same shape)."""
    spec = np.fft.rfft(np.asarray(x, np.float64), axis=-1)
    spec[..., np.fft.rfftfreq(x.shape[-1], 1 / rate) > band] = 0
    return np.fft.irfft(spec, x.shape[-1], axis=-1)


def noise(seconds: float, rate: int = RATE, channels: int = 2, seed: int = 0) -> np.ndarray:
    """White noise band-limited to BAND, rms 0.1, float32 [channels, n]."""
    x = band_limit(np.random.default_rng(seed).standard_normal((channels, round(seconds * rate))), rate)
    return (0.1 * x / np.sqrt(np.mean(x ** 2))).astype(np.float32)


def round_trip_snr(resample, x: np.ndarray, rate: int = RATE, mid: int = MID, band: float = BAND) -> float:
    """dB: x -> mid -> rate through resample(x, in, out), error band-limited to `band`,
    EDGE seconds dropped at both ends."""
    y = resample(resample(x, rate, mid), mid, rate)
    if y.shape != x.shape:
        raise AssertionError(f"round trip changed the length: {x.shape} -> {y.shape}")
    err = band_limit(y - x, rate, band)
    cut = round(EDGE * rate)
    want, err = np.asarray(x, np.float64)[..., cut:-cut], err[..., cut:-cut]
    return float(10 * np.log10(np.sum(want ** 2) / np.sum(err ** 2)))


def realtime_factor(resampler_class, x: np.ndarray, rate: int = RATE, mid: int = MID) -> float:
    """Seconds of audio per second of wall time, streaming in 10 s blocks (best of two)."""
    def run():
        r = resampler_class(rate, mid, x.shape[0])
        for i in range(0, x.shape[1], 10 * rate):
            r.process(x[:, i:i + 10 * rate])
        r.flush()
    return x.shape[1] / rate / best_time(run)


def bench_resample(seconds: float = 30.0, progress=True) -> list:
    log = logger(progress)
    x = noise(seconds)
    rows = []
    log(f"round trip {RATE} -> {MID} -> {RATE} Hz of {seconds:g} s of noise band-limited to {BAND / 1000:g} kHz")
    ours, ref = round_trip_snr(soxr_resample.resample, x), round_trip_snr(polyphase.resample, x)
    rows.append(row(f"round-trip in-band SNR 48k->44.1k->48k (0-{BAND / 1000:g} kHz noise)", "dB", ours, ref,
                    note=f"soxr {soxr_resample.QUALITY} vs hand-written polyphase"))
    low = band_limit(x, RATE, LOW_BAND).astype(np.float32)
    rows.append(row(f"the same, 0-{LOW_BAND / 1000:g} kHz noise", "dB",
                    round_trip_snr(soxr_resample.resample, low, band=LOW_BAND),
                    round_trip_snr(polyphase.resample, low, band=LOW_BAND)))
    for f in TONES:
        t = np.arange(round(2.0 * RATE)) / RATE
        tone = np.sin(2 * np.pi * f * t + 0.3).astype(np.float32)
        rows.append(row(f"round-trip SNR, {f / 1000:g} kHz tone", "dB",
                        round_trip_snr(soxr_resample.resample, tone, band=RATE / 2),
                        round_trip_snr(polyphase.resample, tone, band=RATE / 2)))
    log("speed, 48 kHz -> 44.1 kHz stereo")
    ours, ref = realtime_factor(soxr_resample.Resampler, x), realtime_factor(polyphase.Resampler, x)
    rows.append(row("48k->44.1k stereo, streaming 10 s blocks", "x real time", ours, ref, ours / ref,
                    note="ratio > 1: soxr faster"))
    return rows


if __name__ == "__main__":  # python -m pycore.cli.bench.resample
    from .common import format_table

    print(format_table(None, bench_resample(), ours="soxr", ref="polyphase"))
