"""A-weighted loudness (pycore.ops.loudness) against a float64 numpy transcription of
ddsp.spectral_ops.compute_loudness (ddsp 3.7.0; the package itself needs TensorFlow,
which is not installed here), on real singing and on signals with known answers."""

import asyncio

import numpy as np
import pytest

from pycore.ops.loudness import a_weighting, loudness_db, weighted_power_db
from pycore.gpu.selfcheck import CHECKS


def np_a_weighting_db(f):
    """IEC 61672 A-weighting in dB (the analog filter's magnitude response, normalized
    to 0 dB at 1 kHz by the +2.0 dB of librosa.A_weighting), -80 dB floor."""
    f2 = np.asarray(f, np.float64) ** 2
    with np.errstate(divide="ignore"):
        ra = (12194.217 ** 2 * f2 ** 2) / ((f2 + 20.598997 ** 2) * np.sqrt((f2 + 107.65265 ** 2) * (f2 + 737.86223 ** 2))
                                          * (f2 + 12194.217 ** 2))
        return np.maximum(2.0 + 20 * np.log10(ra), -80.0)


def np_compute_loudness(audio, sample_rate=16000, frame_rate=250, n_fft=512, range_db=80.0, ref_db=0.0):
    """ddsp.spectral_ops.compute_loudness(audio, ..., padding='center') in float64:
    n_fft // 2 zeros at both ends, frames every sample_rate // frame_rate, periodic Hann
    window (tf.signal.stft's default), |rfft|^2 times 10^(A(f) / 10) at the
    librosa.fft_frequencies, the mean over bins, core.power_to_db."""
    hop = sample_rate // frame_rate
    x = np.pad(np.asarray(audio, np.float64), (n_fft // 2, n_fft // 2))
    n = 1 + (len(x) - n_fft) // hop
    frames = np.stack([x[i * hop:i * hop + n_fft] for i in range(n)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    avg = np.mean(power * 10 ** (np_a_weighting_db(freqs) / 10), axis=-1)
    db = 10 * np.log10(np.maximum(avg, 10 ** (-range_db / 10))) - ref_db
    return np.maximum(db, -range_db)


def test_a_weighting_matches_the_standard():
    # IEC 61672-1's table (values rounded to 0.1 dB) at the exact frequencies behind the
    # nominal 31.5, 63, ..., 16000 Hz: 1000 * 10^(n / 10)
    table = [-39.4, -26.2, -16.1, -8.6, -3.2, 0.0, 1.2, 1.0, -1.1, -6.6]
    freqs = [1000 * 10 ** (n / 10) for n in range(-15, 13, 3)]
    got = a_weighting(freqs)
    assert np.allclose(got, table, rtol=0, atol=0.05 + 1e-9)
    assert np.allclose(got, np_a_weighting_db(freqs), rtol=0, atol=1e-12)
    assert a_weighting([0.0, 1.0]) == [-80.0, -80.0] and a_weighting([0.0], min_db=None) == [-np.inf]


def test_reference_gives_the_textbook_value_for_a_sine():
    """The numpy transcription itself: a 1 kHz sine of amplitude a on an exact bin of a
    512-point periodic Hann window (bin 32) has |X| = a n / 4 there and a n / 8 in
    bins 31 and 33, nothing elsewhere; the loudness is the mean over the n / 2 + 1 bins
    of those powers, each times the A-weighting of its bin."""
    n, a = 512, 0.1
    t = np.arange(16000) / 16000
    x = a * np.sin(2 * np.pi * 1000 * t)
    w = 10 ** (np_a_weighting_db(np.array([31, 32, 33]) * 16000 / n) / 10)
    power = (a * n / 4) ** 2 * w[1] + (a * n / 8) ** 2 * (w[0] + w[2])
    want = 10 * np.log10(power / (n / 2 + 1))
    got = np_compute_loudness(x, n_fft=n)
    assert np.abs(got[10:-10] - want).max() < 1e-9


def _signals(rng):
    from singing import vocadito

    t = np.arange(16000 * 2) / 16000
    yield "singing", vocadito(10, seconds=3.0, offset=2.0)
    yield "sine 440 Hz", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    yield "white noise", rng.uniform(-1, 1, 16000 + 37).astype(np.float32)
    yield "quiet noise (near the -80 dB floor)", (1e-4 * rng.standard_normal(8000)).astype(np.float32)
    yield "silence", np.zeros(5000, np.float32)


@pytest.mark.parametrize("n_fft, ref_db", [(512, 0.0), (2048, 20.7)])  # ddsp 3.x defaults; DDSP < 2.0
def test_matches_ddsp_compute_loudness(dev, rng, n_fft, ref_db):
    report = []
    for name, x in _signals(rng):
        got = loudness_db(dev.tensor(x), n_fft=n_fft, ref_db=ref_db).numpy()
        want = np_compute_loudness(x, n_fft=n_fft, ref_db=ref_db)
        assert got.shape == want.shape == (1 + len(x) // 64,)
        err = np.abs(got - want).max()
        report.append(f"{name}: max {err:.2e} dB")
        # f32: the FFT of length n_fft carries ~log2(n_fft) roundings per value, the
        # weighted sum of n_fft / 2 + 1 bins up to as many more, all relative to the
        # frame's power: <= (11 + 1025) * 2^-24 = 6e-5 relative = 3e-4 dB at worst
        assert err < 3e-4, report[-1]
    if n_fft == 512:
        print("\n" + "; ".join(report))


def test_silence_is_the_floor_and_levels_scale(dev, rng):
    x = rng.uniform(-1, 1, 8000).astype(np.float32)
    loud = loudness_db(dev.tensor(x)).numpy()
    quieter = loudness_db(dev.tensor(x * np.float32(0.1))).numpy()
    assert np.allclose(quieter, loud - 20.0, atol=1e-3)          # power scales with a^2
    assert np.all(loudness_db(dev.tensor(np.zeros(500, np.float32)), range_db=60.0).numpy() == -60.0)


def test_chunked_equals_centered(dev, rng):
    """center=False on a padded chunk gives the centered frames (how pycore.tone.features
    streams long audio)."""
    x = rng.standard_normal(3000).astype(np.float32)
    whole = loudness_db(dev.tensor(x)).numpy()
    padded = np.pad(x, (256, 256))
    part = loudness_db(dev.tensor(padded[64 * 10:64 * 30 + 512]), center=False).numpy()
    assert part.shape == (21,) and np.array_equal(part, whole[10:31])


def test_batched(dev, rng):
    x = rng.standard_normal((3, 1000)).astype(np.float32)
    got = loudness_db(dev.tensor(x)).numpy()
    assert got.shape == (3, 16)
    for b in range(3):
        assert np.abs(got[b] - np_compute_loudness(x[b])).max() < 3e-4


def test_bad_inputs(dev):
    x = dev.tensor(np.zeros(1000, np.float32))
    with pytest.raises(ValueError, match="loudness_db: n_fft must be a power of two"):
        loudness_db(x, n_fft=500)
    with pytest.raises(ValueError, match="loudness_db: hop"):
        loudness_db(x, frame_rate=10, n_fft=512)                 # hop 1600 > n_fft
    with pytest.raises(ValueError, match="loudness_db: x needs at least 512 samples"):
        loudness_db(dev.tensor(np.zeros(100, np.float32)), center=False)
    with pytest.raises(ValueError, match=r"loudness_db: x must be \[T\] or \[B, T\]"):
        loudness_db(dev.tensor(np.zeros((1, 2, 100), np.float32)))
    with pytest.raises(ValueError, match=r"weighted_power_db: weight must be \[F=5\]"):
        weighted_power_db(dev.tensor(np.zeros((5, 3, 2), np.float32)), dev.tensor(np.ones(4, np.float32)))
    with pytest.raises(ValueError, match="weighted_power_db: range_db"):
        weighted_power_db(dev.tensor(np.zeros((5, 3, 2), np.float32)), dev.tensor(np.ones(5, np.float32)),
                          range_db=0)


def test_selfcheck(dev):
    assert "max abs err" in asyncio.run(CHECKS["loudness"](dev))
