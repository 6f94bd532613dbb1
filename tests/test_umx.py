"""Open-Unmix: the Wiener filter kernel (pycore.ops.wiener) against a numpy float64
transcription of openunmix.filtering, and the whole umxl pipeline (pycore.models.umx +
pycore.demix.umx through pycore.demix.Demixer) against openunmix 1.3.0's own Separator
(pycore.reference.umx_torch) on real music with random weights.

On lavapipe the LSTM costs ~55 ms per frame per target at umxl's width (hidden 1024), so
the official configuration on 20 s (862 frames, 4 targets: ~5 minutes natively here,
reference included) runs only with STEMTONE_SLOW_TESTS=1; the default run checks the same
architecture at hidden size 128 (every other dimension official: 2049 bins, max_bin
1487, 3 BiLSTM layers, 4 targets) on 3 s with Wiener windows of 100 frames instead of 300
(so that the clip spans two windows), and a mono clip.
"""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

from audio_fixtures import real_music_clip
from pycore.ops.wiener import wiener
from pycore.weights.safetensors import Entry
from pycore.gpu.selfcheck import CHECKS

# ------------------------------------------------------------------ Wiener filter


def wiener_f64(x, s, win, eps=1e-10):
    """x [2, F, T] complex, s [J, T, 2, F] -> ([J, 2, F, T] complex, the largest condition
    number of the mixture covariances Cxx), float64: openunmix's wiener(iterations=1)
    (+ expectation_maximization) per window of `win` frames."""
    x = np.where(x == 0, 1.0 + 0j, x).astype(np.complex128)       # its atan2 side effect
    x = x.transpose(2, 1, 0)                                       # [T, F, 2]
    s = s.astype(np.float64).transpose(1, 3, 2, 0)                 # [T, F, 2, J]
    T = x.shape[0]
    out = np.zeros(s.shape, np.complex128)
    cond = 1.0
    for t0 in range(0, T, win):
        xw, sw = x[t0:t0 + win], s[t0:t0 + win]
        m = max(1.0, np.abs(xw).max() / 10.0)
        xw = xw / m
        y = (sw / m) * np.exp(1j * np.angle(xw))[..., None]       # [t, F, 2, J], scaled like x
        v = np.mean(np.abs(y) ** 2, axis=2)                        # [t, F, J]
        R = np.einsum("tfaj,tfbj->fjab", y, y.conj()) / (eps + v.sum(0))[..., None, None]
        cxx = np.sqrt(eps) * np.eye(2) + np.einsum("tfj,fjab->tfab", v, R)
        inv = np.linalg.inv(cxx)
        cond = max(cond, np.linalg.cond(cxx).max())
        gain = v[..., None, None] * np.einsum("fjac,tfcb->tfjab", R, inv)
        out[t0:t0 + win] = m * np.einsum("tfjab,tfb->tfaj", gain, xw)
    return out.transpose(3, 2, 1, 0), cond                         # [J, 2, F, T]


def tolerance(cond, scale):
    """float32 rounding (6e-8) of the inputs to the 2x2 inversion is amplified by Cxx's
    condition number (the reference, in float32 too, rounds the same way; its determinant
    C00 C11 - C01 C10 cancels when the sources' spatial images are nearly parallel);
    a factor 8 for the handful of operations around it."""
    return 8 * 6e-8 * max(cond, 10.0) * scale


def as_complex(a):
    return a[..., 0] + 1j * a[..., 1]


@pytest.mark.parametrize("F,T,J,win,level", [(5, 7, 2, 3, 1.0), (67, 45, 4, 20, 300.0), (130, 31, 3, 300, 0.5)])
def test_wiener_matches_float64(dev, F, T, J, win, level):
    g = np.random.default_rng(F * T + J)
    x = (g.normal(0, level, (2, F, T, 2))).astype(np.float32)
    x[:, 0, 0] = 0.0                                               # exact zeros -> 1 + 0i
    s = (g.uniform(0, level, (J, T, 2, F))).astype(np.float32)
    got = as_complex(wiener(dev.tensor(x, x.shape), dev.tensor(s, s.shape), win=win).numpy())
    want, cond = wiener_f64(as_complex(x.astype(np.float64)), s, win)
    want = want.reshape(J * 2, F, T)
    np.testing.assert_allclose(got, want, rtol=0, atol=tolerance(cond, np.abs(want).max()))


def test_wiener_scaling_window(dev):
    """Loud windows are scaled by max|x| / 10 before the EM step and back after; eps
    (1e-10) makes the result depend on that scale, so the per-window peak must match."""
    g = np.random.default_rng(3)
    F, T, J = 9, 12, 4
    x = g.normal(0, 1, (2, F, T, 2)).astype(np.float32)
    x[:, :, 6:] *= 1e4                                             # second window loud
    s = np.abs(g.normal(0, 1e-4, (J, T, 2, F))).astype(np.float32)
    got = as_complex(wiener(dev.tensor(x, x.shape), dev.tensor(s, s.shape), win=6).numpy())
    want, cond = wiener_f64(as_complex(x.astype(np.float64)), s, 6)
    want = want.reshape(J * 2, F, T)
    for sl in (slice(0, 6), slice(6, 12)):
        w = want[..., sl]
        np.testing.assert_allclose(got[..., sl], w, rtol=0, atol=tolerance(cond, np.abs(w).max()))


def test_wiener_rejects_bad_shapes(dev):
    x = dev.tensor(np.zeros((2, 5, 7, 2), np.float32), (2, 5, 7, 2))
    with pytest.raises(ValueError, match="wiener"):
        wiener(dev.tensor(np.zeros((1, 5, 7, 2), np.float32), (1, 5, 7, 2)),
               dev.tensor(np.zeros((2, 7, 1, 5), np.float32), (2, 7, 1, 5)))
    with pytest.raises(ValueError, match="wiener"):
        wiener(x, dev.tensor(np.zeros((2, 7, 2, 4), np.float32), (2, 7, 2, 4)))
    with pytest.raises(ValueError, match="wiener"):
        wiener(x, dev.tensor(np.zeros((2, 7, 2, 5), np.float32), (2, 7, 2, 5)), win=0)


def test_wiener_selfcheck(dev):
    asyncio.run(CHECKS["wiener"](dev))


# ------------------------------------------------------------------ umxl parity



def reference():
    """pycore.reference.umx_torch, or skip (needs torch and openunmix==1.3.0)."""
    pytest.importorskip("torch")
    from pycore.reference import umx_torch

    try:
        umx_torch.modules()
    except ImportError as e:
        pytest.skip(str(e))
    return umx_torch


def sdr(ref, est):
    return 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref.astype(np.float64) - est) ** 2))


def entries(weights):
    return {k: Entry("f32", v.shape, memoryview(np.ascontiguousarray(v, np.float32).tobytes()))
            for k, v in weights.items()}


PARITY_DB = 100.0


def parity(dev, seconds, hidden, win=300, mono=False, lstm_chunk=None, progress=None):
    """SDR per stem of Demixer("umxl") against openunmix's Separator, both with random
    weights of the given hidden size and Wiener windows of `win` frames."""
    from pycore.demix import Demixer

    umx_ref = reference()
    config = dict(umx_ref.CONFIG, hidden_size=hidden)
    weights = umx_ref.random_weights(seed=1, config=config)
    wav = real_music_clip(seconds)
    if mono:
        wav = np.repeat(wav.mean(0, keepdims=True), 2, axis=0)
    want = umx_ref.separate(umx_ref.separator(weights, config, wiener_win_len=win), wav)

    async def run():
        demixer = await Demixer.load(dev, "umxl", weights=entries(weights))
        demixer.model.wiener_win = win
        if mono:
            return await demixer.separate([wav[0]])
        stream = demixer.stream(2)
        if lstm_chunk:
            stream.lstm_chunk = lstm_chunk
        for a in range(0, wav.shape[1], 123_457):                  # pushes emit nothing
            out = await stream.push([wav[0, a:a + 123_457], wav[1, a:a + 123_457]])
            assert all(len(ch) == 0 for chans in out.values() for ch in chans)
        return await stream.finish(progress)

    got = asyncio.run(run())
    result = {}
    for stem, ref in want.items():
        est = np.stack(got[stem])
        if mono:
            ref = ref.mean(0, keepdims=True)
        assert est.shape == ref.shape
        result[stem] = sdr(ref, est)
    print("umx parity SDR (dB):", {k: round(float(v), 1) for k, v in result.items()})
    # reached 125.1-129.2 dB (stereo, 3 s, hidden 128) and 115.0-117.5 dB (mono, 1 s) on lavapipe
    # once the Wiener estimates were scaled like the mix (51-57 dB before); the bar is
    # the lowest reached minus 15 dB for other drivers' summation order
    assert all(v >= PARITY_DB for v in result.values()), result
    return result


def test_umx_layers_match_openunmix_float64(dev):
    """Each stage of one target's forward pass and the Wiener filter, fed the same input
    as openunmix's own modules run in float64: where a parity loss comes from. Reached on
    lavapipe: features 120, LSTM 122, post 132, spectrogram 146, Wiener 116-121 dB (the
    Wiener filter was at 53-55 dB while its estimates were not divided by max_abs); bar:
    100 dB each (float32 rounding of sums of a few thousand terms stays below 1e-5)."""
    import torch

    from pycore.models.umx import Separator
    from pycore.ops.elementwise import concat, transpose
    from pycore.ops.rnn import lstm
    from pycore.ops.spectral import stft
    from pycore.ops.spectral_mask import magnitude

    umx_ref = reference()
    config = dict(umx_ref.CONFIG, hidden_size=64)
    weights = umx_ref.random_weights(seed=2, config=config)
    wav = real_music_clip(1.0)
    T = 40
    x = np.ascontiguousarray(wav[:, :T * 1024 + 3072], np.float32)
    X = stft(dev.tensor(x, x.shape), 4096, 1024, center=False)
    mag = magnitude(X, 2049)
    mix = transpose(mag.reshape(mag.shape[1:]), (1, 0, 2))                    # [T, 2, 2049]
    sep = Separator(dev, entries(weights))
    f64 = torch.float64
    refs = umx_ref.separator(weights, config).target_models
    reached = {}

    def close(name, want, got):
        reached[name] = min(reached.get(name, np.inf), sdr(np.asarray(want), got))

    mixg = torch.from_numpy(mix.numpy().astype(np.float64))
    mags = []
    for model, (target, ref) in zip(sep.models, refs.items()):
        ref = ref.to(f64)
        feats = model.features(mix)
        fg = torch.from_numpy(feats.numpy().astype(np.float64))
        seq, _ = lstm(feats.reshape(T, 1, 64), model.lstm, model.lstm_hidden, model.nb_layers, model.bidirectional)
        sg = torch.from_numpy(seq.numpy().astype(np.float64)).reshape(T, 64)
        z = model.post(feats, seq.reshape(T, 64))
        zg = torch.from_numpy(z.numpy().astype(np.float64))
        spec = model.spectrogram(z, mix)
        with torch.no_grad():
            h = (mixg[..., :model.max_bin] + ref.input_mean) * ref.input_scale
            close("features", torch.tanh(ref.bn1(ref.fc1(h.reshape(T, -1)))), feats.numpy())
            close("lstm", ref.lstm(fg.reshape(T, 1, -1))[0].reshape(T, 64), sg.numpy())
            close("post", torch.relu(ref.bn2(ref.fc2(torch.cat([fg, sg], -1)))), zg.numpy())
            y = torch.relu(ref.bn3(ref.fc3(zg)).reshape(T, 2, 2049) * ref.output_scale + ref.output_mean) * mixg
            close("spectrogram", y, spec.numpy())
        mags.append(spec.reshape(1, *spec.shape))
    M = concat(mags, dim=0)
    got = as_complex(wiener(X, M, win=300).numpy())
    want, _ = wiener_f64(as_complex(X.numpy().astype(np.float64)), M.numpy(), 300)
    close("wiener", np.stack([want.real, want.imag]), np.stack([got.real, got.imag]).reshape(2, *want.shape))
    print("umx layer parity (dB):", {k: round(float(v), 1) for k, v in reached.items()})
    assert all(v >= 100 for v in reached.values()), reached


def test_umx_parity_reduced(dev):
    # 130 frames in Wiener windows of 100: the window carry and a partial last window;
    # the BiLSTM in chunks of 37 frames (states carried both ways, a partial last chunk)
    parity(dev, 3.0, hidden=128, win=100, lstm_chunk=37)


def test_umx_parity_mono_short(dev):
    parity(dev, 1.0, hidden=64, mono=True)


def test_umx_windows_replay_plans(dev):
    """173 frames in Wiener windows of 40: 4 full windows and a partial one. Pass 1
    records its plan on window 0 and replays it for windows 1-3 (the partial window 4
    runs eagerly); pass 2 runs window 0 eagerly, records on window 1 and replays it for
    windows 2 and 3. A replayed window makes no fresh dispatch and no GPU object. The
    counts are taken at each progress step (one per window and per target's LSTM)."""
    snaps = []
    parity(dev, 4.0, hidden=16, win=40, progress=lambda f, m: snaps.append((m, dict(dev.counts))))
    J = 4
    assert len(snaps) == 5 + J + 5 and snaps[5][0].endswith("LSTM over 173 frames")

    def delta(i):
        return {k: snaps[i + 1][1][k] - snaps[i][1][k] for k in snaps[i][1]}

    pass1 = [delta(k) for k in range(5)]
    pass2 = [delta(5 + J + k) for k in range(4)]
    for d, uploads, readbacks, plan in [(pass1[2], 1, J, pass1[1]), (pass1[3], 1, J, pass1[1]),
                                        (pass2[3], 2 + J, 1, pass2[2])]:
        assert d["replayed"] == plan["replayed"] > 0, d
        assert d["dispatches"] == d["buffers_created"] == d["bind_groups_created"] == 0, d
        assert d["uploads"] == uploads and d["readbacks"] == readbacks, d
    for d in (pass1[4], pass2[0]):                                   # eager windows
        assert d["replayed"] == 0 and d["dispatches"] > 0, d


@pytest.mark.skipif(not os.environ.get("STEMTONE_SLOW_TESTS"), reason="~4 min on lavapipe; STEMTONE_SLOW_TESTS=1")
def test_umxl_parity_official_20s(dev):
    parity(dev, 20.0, hidden=1024)


def test_umxl_needs_weights(dev, tmp_path, monkeypatch):
    from pycore import demix

    monkeypatch.setenv("STEMTONE_WEIGHTS", str(tmp_path))  # an empty weights folder
    with pytest.raises(FileNotFoundError, match="stemtone weights fetch umxl"):
        asyncio.run(demix.Demixer.load(dev, "umxl"))


def test_umxl_rejects_wrong_targets(dev):
    from pycore.demix import Demixer

    umx_ref = reference()
    weights = umx_ref.random_weights(seed=0, targets=("vocals",), config=dict(umx_ref.CONFIG, hidden_size=16))
    with pytest.raises(ValueError, match="umxl"):
        asyncio.run(Demixer.load(dev, "umxl", weights=entries(weights)))


def test_gpu_memory_does_not_grow_with_the_track(dev):
    """The BiLSTM runs in chunks with its sequences staged on the host: the peak GPU
    memory for 6 s (259 frames) is that for 2 s (87 frames), with Wiener windows and LSTM
    chunks of 40 frames, within 64 KiB (keeping the four targets' sequences on the GPU,
    as before, grew by 1 KiB per frame at this width: 172 KiB here). The result is that
    of the whole sequence in one chunk."""
    from pycore.demix import Demixer

    umx_ref = reference()
    weights = umx_ref.random_weights(seed=3, config=dict(umx_ref.CONFIG, hidden_size=64))
    demixer = asyncio.run(Demixer.load(dev, "umxl", weights=entries(weights)))
    rng = np.random.default_rng(0)
    short_x, long_x = [(rng.standard_normal((2, int(s * 44100))) * 0.1).astype(np.float32) for s in (2.0, 6.0)]
    demixer.model.wiener_win = 40  # windows (and LSTM chunks) of 40 frames: both lengths have full ones

    def run(x, chunk=None):
        dev.flush()
        dev.reset_peak()
        stream = demixer.stream(2)
        stream.lstm_chunk = chunk or 40

        async def go():
            await stream.push([x[0], x[1]])
            return await stream.finish()
        return asyncio.run(go()), dev.mem_peak

    run(short_x)  # warm-up: kernels, cached weight layouts
    _, short = run(short_x)
    out, long = run(long_x)
    assert long - short < 64 * 1024, (short, long)
    whole, _ = run(long_x, chunk=10 ** 6)
    for stem in out:
        np.testing.assert_allclose(np.stack(out[stem]), np.stack(whole[stem]), rtol=1e-5, atol=1e-6)
