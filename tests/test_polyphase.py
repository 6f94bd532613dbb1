"""pycore.reference.polyphase (the hand-written resampler soxr replaced; kept as the benchmark's baseline): quality (round-trip SNR, aliasing and image rejection), exactness
against the direct float64 formula (streaming == one-shot and output lengths: tests/test_resample.py, for both
resamplers)."""

import math

import numpy as np
import pytest

from pycore.reference.polyphase import HALF_WIDTH, ROLLOFF, Resampler, kernel, output_length, resample


def tone(freq, rate, seconds=1.0, phase=0.3):
    t = np.arange(round(seconds * rate)) / rate
    return np.sin(2 * np.pi * freq * t + phase)


def snr_db(want, got):
    return 10 * np.log10(np.sum(want ** 2) / np.sum((got - want) ** 2))


def interior(x, rate):
    """Drop 0.1 s at both ends: there the signal starts/stops abruptly (filter ringing)."""
    return x[..., rate // 10: -rate // 10]


@pytest.mark.parametrize("freq", [50, 1000, 7000, 15000, 19500])
@pytest.mark.parametrize("rate", [48000, 96000])
def test_round_trip_snr(rate, freq):
    """rate -> 44.1 kHz -> rate: a tone below 0.9 x 22.05 kHz comes back at > 85 dB SNR
    (each pass: Kaiser passband ripple ~2e-5; measured 89.5 dB at 19.9 kHz)."""
    x = tone(freq, rate).astype(np.float32)
    y = resample(resample(x, rate, 44100), 44100, rate)
    assert y.shape == x.shape
    assert snr_db(interior(x, rate), interior(y, rate)) > 85


@pytest.mark.parametrize("freq", [22100, 22500, 23000, 23900])
def test_aliasing_rejected_48k_to_44k(freq):
    """48 kHz tones above the new Nyquist (22.05 kHz) would fold back below it: < -90 dB."""
    y = resample(tone(freq, 48000), 48000, 44100)
    level = np.sqrt(np.mean(interior(y, 44100) ** 2) / 0.5)
    assert 20 * np.log10(level) < -90


@pytest.mark.parametrize("freq", [25000, 30000, 40000])
def test_aliasing_rejected_96k_to_44k(freq):
    y = resample(tone(freq, 96000), 96000, 44100)
    assert 20 * np.log10(np.sqrt(np.mean(interior(y, 44100) ** 2) / 0.5)) < -90


@pytest.mark.parametrize("out_rate", [48000, 96000])
def test_images_rejected_when_upsampling(out_rate):
    """44.1 kHz -> higher: a 15 kHz tone must not bring its image at 29.1 kHz (and
    beyond); everything but the tone itself is < -85 dB (least-squares sine fit)."""
    y = interior(resample(tone(15000, 44100), 44100, out_rate), out_rate)
    t = np.arange(len(y)) / out_rate
    basis = np.stack([np.sin(2 * np.pi * 15000 * t), np.cos(2 * np.pi * 15000 * t)], 1)
    coef = np.linalg.lstsq(basis, y, rcond=None)[0]
    residual = y - basis @ coef
    assert abs(np.hypot(*coef) - 1) < 1e-4  # passband gain
    assert 10 * np.log10(np.sum(residual ** 2) / np.sum(y ** 2)) < -85


def direct(x, in_rate, out_rate):
    """float64 reference straight from the formula: y[j] = sum_k x[k] h(j in/out - k),
    the taps of each output normalized to sum 1, x = 0 outside [0, n)."""
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    cutoff, half = ROLLOFF * min(1, up / down), HALF_WIDTH * max(1, down / up)
    n_out = output_length(len(x), in_rate, out_rate)
    y = np.zeros(n_out)
    for j in range(n_out):
        t = j * down / up
        k = np.arange(math.floor(t - half), math.ceil(t + half) + 1)
        h = kernel(t - k, cutoff, half)
        h /= h.sum()
        inside = (k >= 0) & (k < len(x))
        y[j] = np.dot(h[inside], x[k[inside]])
    return y


@pytest.mark.parametrize("in_rate,out_rate", [(48000, 44100), (44100, 48000), (8000, 44100), (96000, 44100),
                                              (22050, 44100), (44100, 44101)])
def test_matches_the_formula(rng, in_rate, out_rate):
    x = rng.standard_normal(1500)
    want = direct(x, in_rate, out_rate)
    got = resample(x.astype(np.float32), in_rate, out_rate)
    assert got.shape == want.shape and got.dtype == np.float32
    # float32 taps and float32 sums of up to ~300 products (|x| up to ~4 rms): rounding
    # grows like eps * sqrt(300) * 4 rms ~ 4e-6 rms (measured <= 2.4e-6 rms)
    assert np.abs(got - want).max() < 1e-5 * np.sqrt(np.mean(want ** 2))


@pytest.mark.parametrize("in_rate,out_rate", [(48000, 44100), (8000, 44100), (96000, 44100)])
def test_dc_gain_is_exact(in_rate, out_rate):
    y = resample(np.full(in_rate, 0.5, np.float32), in_rate, out_rate)
    np.testing.assert_allclose(interior(y, out_rate), 0.5, rtol=0, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive"):
        Resampler(0, 44100)
    r = Resampler(48000, 44100, channels=2)
    with pytest.raises(ValueError, match=r"\[2, n\]"):
        r.process(np.zeros((3, 10), np.float32))
    r.flush()
    with pytest.raises(RuntimeError, match="after flush"):
        r.process(np.zeros((2, 10), np.float32))
