"""magnitude, ratio_masks and overlap_finish (kernels/spectral_mask.wgsl,
kernels/ola_stream.wgsl) against float64 numpy.

Tolerances: each output is a handful of float32 roundings (a square root of a sum of
two squares; a sum of S squares, a division and a product; an envelope sum of
n_fft / hop squares and a division), so relative errors stay within ~8 * 2^-24 ~ 5e-7;
1e-6 relative (to each value, or to the largest one where values cancel) leaves room
for an ulp more, and nothing for a wrong index.
"""

import asyncio

import numpy as np
import pytest

from pycore.ops.spectral import istft, stft
from pycore.ops.spectral_mask import NO_END, magnitude, overlap_finish, position_bytes, ratio_masks
from pycore.gpu.selfcheck import CHECKS


def complex_of(X):
    return X[..., 0].astype(np.float64) + 1j * X[..., 1]


@pytest.mark.parametrize("xc,channels,F,T,K,valid", [
    (2, 2, 9, 7, 4, 7),
    (1, 2, 2049, 13, 1024, 5),   # mono spectrum feeding a stereo model, padding frames
    (3, 3, 33, 300, 33, 299),    # all bins; more than one workgroup per row
])
def test_magnitude(dev, rng, xc, channels, F, T, K, valid):
    X = rng.standard_normal((xc, F, T, 2)).astype(np.float32)
    got = magnitude(dev.tensor(X), K, valid=valid, channels=channels).numpy()
    mag = np.abs(complex_of(X))[:, :K].transpose(0, 2, 1)  # [xc, T, K]
    want = np.stack([mag[c % xc] for c in range(channels)])[None]
    want[:, :, valid:] = 0
    assert got.shape == (1, channels, T, K)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("S,xc,C,F,T,K,valid", [
    (2, 2, 2, 9, 7, 4, 6),
    (2, 1, 2, 65, 33, 32, 33),   # mono spectrum
    (4, 2, 2, 17, 5, 17, 5),     # four stems, every bin masked
])
def test_ratio_masks(dev, rng, S, xc, C, F, T, K, valid):
    X = rng.standard_normal((xc, F, T, 2)).astype(np.float32)
    m = np.abs(rng.standard_normal((S, C, T, K))).astype(np.float32)
    m[:, :, ::3] *= np.float32(1e-6)   # near-silent frames: the 1e-10 terms matter there
    got = ratio_masks(dev.tensor(X), dev.tensor(m), K, valid=valid).numpy()
    m64 = m.astype(np.float64)
    ratio = (m64 ** 2 + 0.5e-10) / ((m64 ** 2).sum(axis=0) + 1e-10)        # [S, C, T, K]
    spec = complex_of(X)                                                    # [xc, F, T]
    want = np.zeros((S, C, F, T), complex)
    for c in range(C):
        want[:, c, :K, :valid] = spec[c % xc, :K, :valid] * ratio[:, c, :valid].transpose(0, 2, 1)
    want = np.stack([want.real, want.imag], axis=-1).reshape(S * C, F, T, 2)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
    if S == 2:  # two ratios sum to 1 (eps / 2 each): the stems add up to the spectrum
        total = got.reshape(S, C, F, T, 2).sum(axis=0)
        np.testing.assert_allclose(total[:, :K, :valid], np.stack([X[c % xc] for c in range(C)])[:, :K, :valid],
                                   rtol=1e-5, atol=1e-6)


def envelope(n_fft, hop, total_frames, q):
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    env = np.zeros(len(q))
    for t in range(total_frames):
        j = q - t * hop
        inside = (j >= 0) & (j < n_fft)
        env[inside] += w[j[inside]] ** 2
    return env


@pytest.mark.parametrize("mix,start,count,q0,total", [
    (1, 0, 40, 0, 9),      # the signal's start: the envelope grows
    (2, 5, 30, 64, 12),    # stereo -> mono, the end of the signal inside the block
    (1, 3, 40, 32, None),  # end not known yet
])
def test_overlap_finish(dev, rng, mix, start, count, q0, total):
    n_fft, hop, rows, ola_len, carry_len = 16, 4, 4, 48, 12
    ola = rng.standard_normal((rows, ola_len)).astype(np.float32)
    carry = rng.standard_normal((rows, carry_len)).astype(np.float32)
    got = overlap_finish(dev.tensor(ola), dev.tensor(carry), start, count, q0, total, n_fft, hop, mix=mix).numpy()
    y = ola.astype(np.float64)
    y[:, :carry_len] += carry
    s = np.arange(start, start + count)
    env = envelope(n_fft, hop, total if total is not None else 100, q0 + s)  # 100: past the block
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(env > 1e-11, y[:, s] / env, 0.0)
    want = y.reshape(rows // mix, mix, count).mean(axis=1)
    assert got.shape == (rows // mix, count)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


def test_position_tensor_in_a_replayed_plan(dev, rng):
    """One plan of overlap_finish, replayed for blocks at other positions (written into
    its position tensor), gives exactly what eager calls with the ints give: at the
    signal's start, inside, near its end, and with no end yet."""
    n_fft, hop, rows, ola_len, carry_len = 16, 4, 4, 48, 12
    ola_t, carry_t = dev.empty((rows, ola_len)), dev.empty((rows, carry_len))
    position = dev.empty((2,), "u32")
    plan = dev.plan()
    with plan:
        y = overlap_finish(ola_t, carry_t, 2, 40, None, None, n_fft, hop, mix=2, position=position)
    for q0, total in [(0, 20), (8, 20), (40, 23), (1000, None)]:
        ola = rng.standard_normal((rows, ola_len)).astype(np.float32)
        carry = rng.standard_normal((rows, carry_len)).astype(np.float32)
        dev.write(ola_t, ola.tobytes())
        dev.write(carry_t, carry.tobytes())
        dev.write(position, position_bytes(q0, total))
        plan.replay()
        want = overlap_finish(dev.tensor(ola), dev.tensor(carry), 2, 40, q0, total, n_fft, hop, mix=2).numpy()
        np.testing.assert_array_equal(y.numpy(), want)
    plan.release()
    with pytest.raises(ValueError, match="either as ints or in position"):
        overlap_finish(ola_t, None, 0, 10, 0, None, n_fft, hop, position=position)
    with pytest.raises(ValueError, match="position must be a u32 Tensor"):
        overlap_finish(ola_t, None, 0, 10, None, None, n_fft, hop, position=dev.empty((2,)))


def test_streamed_istft_equals_whole(dev, rng):
    """Blocks of frames through istft(envelope=False) + overlap_finish with a carry give
    the whole signal's istft (center=False) sample for sample."""
    n_fft, hop, frames, block = 64, 16, 40, 8
    X = rng.standard_normal((2, n_fft // 2 + 1, frames, 2)).astype(np.float32)
    want = istft(dev.tensor(X), n_fft, hop, center=False).numpy()
    carry_len, seg = n_fft - hop, block * hop
    parts, carry = [], None
    for b in range(frames // block):
        Xb = dev.tensor(np.ascontiguousarray(X[:, :, b * block:(b + 1) * block]))
        ola = istft(Xb, n_fft, hop, center=False, envelope=False)
        last = b == frames // block - 1
        count = ola.shape[1] if last else seg
        parts.append(overlap_finish(ola, carry, 0, count, b * seg, frames, n_fft, hop).numpy())
        carry = dev.tensor(ola.numpy()[:, seg:])
    got = np.concatenate(parts, axis=1)
    assert got.shape == want.shape
    np.testing.assert_allclose(got[:, 1:], want[:, 1:], rtol=1e-5, atol=1e-5)  # sample 0: envelope 0


def test_stft_magnitude_masks_roundtrip(dev, rng):
    """One stem with mask 1 everywhere and all bins kept: the identity (a sanity check
    of the layouts end to end)."""
    x = rng.standard_normal((2, 4000)).astype(np.float32)
    X = stft(dev.tensor(x), 256, 64, pad_mode="constant")
    F, T = X.shape[1:3]
    mags = magnitude(X, F)
    Y = ratio_masks(X, mags.reshape(1, 2, T, F), F, eps=0.0)
    y = istft(Y, 256, 64, length=4000).numpy()
    np.testing.assert_allclose(y, x, rtol=0, atol=1e-5)


def test_errors(dev):
    X = dev.tensor(np.zeros((2, 9, 5, 2), np.float32))
    with pytest.raises(ValueError, match=r"magnitude: X must be \[C, F, frames, 2\]"):
        magnitude(dev.tensor(np.zeros((9, 5, 2), np.float32)), 4)
    with pytest.raises(ValueError, match="magnitude: bins"):
        magnitude(X, 10)
    with pytest.raises(ValueError, match="magnitude: valid"):
        magnitude(X, 4, valid=6)
    with pytest.raises(ValueError, match="magnitude: channels"):
        magnitude(X, 4, channels=3)
    with pytest.raises(ValueError, match=r"ratio_masks: masks must be \[S, C, 5, 4\]"):
        ratio_masks(X, dev.tensor(np.zeros((2, 2, 4, 5), np.float32)), 4)
    with pytest.raises(ValueError, match="ratio_masks: eps"):
        ratio_masks(X, dev.tensor(np.zeros((2, 2, 5, 4), np.float32)), 4, eps=-1)
    ola = dev.tensor(np.zeros((4, 20), np.float32))
    with pytest.raises(ValueError, match="overlap_finish: mix"):
        overlap_finish(ola, None, 0, 10, 0, None, 8, 2, mix=3)
    with pytest.raises(ValueError, match="overlap_finish: carry"):
        overlap_finish(ola, dev.tensor(np.zeros((2, 6), np.float32)), 0, 10, 0, None, 8, 2)
    with pytest.raises(ValueError, match="overlap_finish: samples"):
        overlap_finish(ola, None, 15, 10, 0, None, 8, 2)
    with pytest.raises(ValueError, match="overlap_finish: total_frames"):
        overlap_finish(ola, None, 0, 10, 0, NO_END, 8, 2)


@pytest.mark.parametrize("name", ["magnitude", "ratio_masks", "overlap_finish"])
def test_selfcheck(dev, name):
    asyncio.run(CHECKS[name](dev))
