"""pycore.audio.resample (python-soxr behind the pipelines' streaming interface): round-trip
quality next to the polyphase resampler it replaced, aliasing and image rejection,
streaming == one-shot, exact output lengths. Bars: the measured value minus a margin
(measured figures in each test's docstring)."""

import math

import numpy as np
import pytest

from pycore.audio.resample import Resampler, output_length, resample
from pycore.cli.bench.resample import band_limit, noise, round_trip_snr
from pycore.reference import polyphase

PAIRS = [(48000, 44100), (44100, 48000), (8000, 44100), (44100, 8000), (96000, 44100), (22050, 44100),
         (44100, 96000), (44100, 44101), (44100, 44100), (44100, 16000)]


def tone(freq, rate, seconds=1.0, phase=0.3):
    t = np.arange(round(seconds * rate)) / rate
    return np.sin(2 * np.pi * freq * t + phase).astype(np.float32)


def level_db(y, rate):
    """rms level relative to a full-scale sine, EDGE-trimmed."""
    y = y[rate // 10: -rate // 10]
    return 20 * np.log10(np.sqrt(np.mean(np.asarray(y, np.float64) ** 2) / 0.5))


@pytest.mark.parametrize("freq,bar", [(50, 140), (1000, 140), (7000, 140), (15000, 95), (19900, 55)])
def test_round_trip_snr_of_tones(freq, bar):
    """48k -> 44.1k -> 48k: measured 154 dB up to 10 kHz, 100.3 dB at 15 kHz, 60.8 dB at
    19.9 kHz (soxr's passband ripple near the band edge)."""
    assert round_trip_snr(resample, tone(freq, 48000), band=24000) > bar


def test_in_band_snr_next_to_the_old_resampler():
    """Noise band-limited to 20 kHz: soxr 74.9 dB, polyphase 97.6 dB (soxr loses near the
    band edge); to 15 kHz: soxr 114.2 dB, polyphase 106.4 dB (soxr wins below)."""
    x = noise(3.0)
    assert round_trip_snr(resample, x) > 70
    assert round_trip_snr(polyphase.resample, x) > 92
    low = band_limit(x, 48000, 15000).astype(np.float32)
    assert round_trip_snr(resample, low, band=15000) > round_trip_snr(polyphase.resample, low, band=15000)


@pytest.mark.parametrize("freq", [22500, 23000, 23900])
def test_aliasing_rejected_48k_to_44k(freq):
    """48 kHz tones above the new Nyquist (22.05 kHz) would fold back below it."""
    assert level_db(resample(tone(freq, 48000), 48000, 44100), 44100) < -90


@pytest.mark.parametrize("out_rate", [48000, 96000])
def test_images_rejected_when_upsampling(out_rate):
    """44.1 kHz -> higher: everything but the 15 kHz tone itself (its images at 29.1 kHz
    and beyond) is < -85 dB (least-squares sine fit)."""
    y = resample(tone(15000, 44100), 44100, out_rate)[out_rate // 10: -out_rate // 10]
    t = np.arange(len(y)) / out_rate
    basis = np.stack([np.sin(2 * np.pi * 15000 * t), np.cos(2 * np.pi * 15000 * t)], 1)
    coef = np.linalg.lstsq(basis, y, rcond=None)[0]
    residual = y - basis @ coef
    assert abs(np.hypot(*coef) - 1) < 1e-4  # passband gain
    assert 10 * np.log10(np.sum(residual ** 2) / np.sum(y ** 2)) < -85


# The streaming interface's properties, for soxr and for the polyphase resampler it
# replaced (pycore.reference.polyphase, the benchmark's baseline): one test, both modules.
IMPLEMENTATIONS = {"soxr": (Resampler, output_length, resample),
                   "polyphase": (polyphase.Resampler, polyphase.output_length, polyphase.resample)}


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("in_rate,out_rate", PAIRS)
def test_streaming_equals_one_shot_exactly(rng, impl, in_rate, out_rate):
    Resampler_, _, resample_ = IMPLEMENTATIONS[impl]
    x = rng.standard_normal((2, 70001)).astype(np.float32)
    one = resample_(x, in_rate, out_rate)
    r = Resampler_(in_rate, out_rate, channels=2)
    parts, i = [], 0
    sizes = iter([0, 1, 2, 5000, 0, 31, 12000] + list(rng.integers(0, 9000, 100)))
    while i < x.shape[1]:
        k = int(next(sizes))
        parts.append(r.process(x[:, i:i + k]))
        i += k
    parts.append(r.flush())
    assert all(p.shape[0] == 2 and p.dtype == np.float32 for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), one)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("in_rate,out_rate", PAIRS)
@pytest.mark.parametrize("n", [0, 1, 2, 3, 80, 147, 160, 441, 1001, 44101])
def test_output_length(impl, in_rate, out_rate, n):
    _, output_length_, resample_ = IMPLEMENTATIONS[impl]
    want = math.floor(n * out_rate / in_rate + 0.5)
    assert output_length_(n, in_rate, out_rate) == want
    assert resample_(np.ones(n, np.float32), in_rate, out_rate).shape == (want,)


@pytest.mark.parametrize("in_rate,out_rate", [(48000, 44100), (8000, 44100), (96000, 44100)])
def test_dc_gain(in_rate, out_rate):
    """A constant comes through at its level (float32 filter arithmetic: ~1e-6)."""
    y = resample(np.full(in_rate, 0.5, np.float32), in_rate, out_rate)
    np.testing.assert_allclose(y[out_rate // 10: -out_rate // 10], 0.5, rtol=0, atol=1e-5)


def test_the_signal_is_not_delayed():
    """soxr's filter delay is compensated: a tone comes out in phase with itself at the new rate."""
    y = resample(tone(1000, 48000), 48000, 44100)
    np.testing.assert_allclose(y[4410:-4410], tone(1000, 44100)[4410:-4410], atol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive"):
        Resampler(0, 44100)
    r = Resampler(48000, 44100, channels=2)
    with pytest.raises(ValueError, match=r"\[2, n\]"):
        r.process(np.zeros((3, 10), np.float32))
    r.flush()
    with pytest.raises(RuntimeError, match="after flush"):
        r.process(np.zeros((2, 10), np.float32))
