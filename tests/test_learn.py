"""pycore.learn on a small configuration: clip checks, training lowers the loss, a
save / resume gives the same weights as training straight through, generation writes
the requested length."""

import asyncio

import numpy as np
import pytest

from pycore.learn.clip import check_clip, clip_frames
from pycore.learn.files import generate, learn

CFG = {"sample_rate": 8000, "n_fft": 64, "hop": 16, "hidden": 16, "layers": 1, "seq_len": 8, "batch": 4}


@pytest.fixture(scope="module")
def clip_wav(tmp_path_factory):
    import soundfile as sf
    sr, n = 8000, 8000 * 3
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    x += 0.02 * np.random.default_rng(0).standard_normal(n)
    path = tmp_path_factory.mktemp("learn") / "clip.wav"
    sf.write(path, x.astype(np.float32), sr)
    return path


def test_clip_checks_name_the_problem():
    with pytest.raises(ValueError, match="too short"):
        check_clip([0.1] * 100, 8000)
    with pytest.raises(ValueError, match="too long"):
        check_clip([0.1] * 8000 * 61, 8000)
    with pytest.raises(ValueError, match="silent"):
        check_clip([0.0] * 8000 * 3, 8000)


def test_frames_are_normalized(dev):
    x = np.random.default_rng(1).standard_normal(8000 * 3).astype(np.float32) * 0.1
    z, mean, std = asyncio.run(clip_frames(dev, x, CFG))
    v = z.numpy()
    assert v.shape == (1 + len(x) // 16, 33)
    assert abs(v.mean()) < 1e-3 and abs(v.std() - 1) < 1e-3


def test_training_lowers_loss_and_resumes_exactly(clip_wav, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    losses = []
    asyncio.run(learn(clip_wav, a, epochs=6, config=CFG, on_epoch=lambda n, l: losses.append(l)))
    assert losses[-1] < 0.8 * losses[0]
    asyncio.run(learn(clip_wav, b, epochs=3, config=CFG))
    asyncio.run(learn(clip_wav, b, epochs=6, resume=True))
    from pycore.weights.safetensors import load_numpy
    wa, wb = load_numpy(a), load_numpy(b)
    for k in wa:
        np.testing.assert_allclose(wb[k], wa[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_generate_writes_requested_length(clip_wav, tmp_path):
    import soundfile as sf
    m, out = tmp_path / "m.safetensors", tmp_path / "g.wav"
    asyncio.run(learn(clip_wav, m, epochs=1, config=CFG))
    secs = asyncio.run(generate(m, out, seconds=1.3, seed=2, temperature=0.1))
    y, sr = sf.read(out)
    assert sr == 8000 and len(y) == round(1.3 * 8000) and secs == pytest.approx(1.3, abs=1e-3)
    assert np.isfinite(y).all() and np.abs(y).max() > 0


def test_resume_without_file_is_refused(clip_wav, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        asyncio.run(learn(clip_wav, tmp_path / "none.safetensors", epochs=1, resume=True))


def test_input_noise_resumes_exactly(clip_wav, tmp_path):
    """The noise_std the file keeps and the noise counter (epoch, window) carry over."""
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    asyncio.run(learn(clip_wav, a, epochs=4, config=CFG, input_noise=1.0))
    asyncio.run(learn(clip_wav, b, epochs=2, config=CFG, input_noise=1.0))
    asyncio.run(learn(clip_wav, b, epochs=4, resume=True, input_noise=1.0))
    from pycore.weights.safetensors import load_numpy
    wa, wb = load_numpy(a), load_numpy(b)
    assert "sampling.noise_std" in wa and wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_allclose(wb[k], wa[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_quality_rows(clip_wav, tmp_path, dev):
    from pycore.cli.bench.learn import ltas_figures, quality_rows
    x = np.random.default_rng(2).standard_normal(8000 * 2)
    worst, band, diffs = ltas_figures(x, x, 8000)
    assert worst == 0.0 and 0 < band[0] < band[1] <= 4000 and len(diffs) > 3
    worst, _, _ = ltas_figures(x, 0.5 * x, 8000)      # half the amplitude: -6.02 dB in every band
    assert worst == pytest.approx(20 * np.log10(2), abs=1e-9)
    m = tmp_path / "m.safetensors"
    asyncio.run(learn(clip_wav, m, epochs=2, config=CFG))
    rows = quality_rows(dev, m, clip_wav, 1.0, seeds=(1, 2))
    assert len(rows) == 6
    for r in rows:
        assert np.isfinite(r["ours"]), r
