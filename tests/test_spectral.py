"""stft / istft (kernels/fft.wgsl) against float64 numpy and, where installed, torch.

Tolerance: relative L2 error 1e-5. A float32 FFT of n = 2^p points passes each value
through p butterfly stages (here p - 1 complex stages plus the real-FFT split), each
adding at most ~2 unit roundoffs (2^-24) of relative error, plus the rounding of the
window and of the twiddles (computed in float64 and rounded once): at n_fft = 8192 that
is at most ~(2 * 13 + 3) * 6e-8 = 1.7e-6 even if every rounding added up, typically
~1e-7. The direct DFT used for other sizes has ~sqrt(n_fft) * 6e-8 (n_fft <= 100 here).
"""

import asyncio

import numpy as np
import pytest

from pycore.ops import spectral
from pycore.ops.spectral import bench_stft, istft, stft
from pycore.gpu.selfcheck import CHECKS

TOL = 1e-5
NP_PAD = {"reflect": "reflect", "constant": "constant", "replicate": "edge", "circular": "wrap"}


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def rel(got, want):
    return np.linalg.norm(got - want) / np.linalg.norm(want)


def hann(n):
    return np.ones(1) if n == 1 else 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


def full_window(window, n_fft):
    w = hann(n_fft) if window is None else np.asarray(window, np.float64)
    left = (n_fft - len(w)) // 2
    return np.pad(w, (left, n_fft - len(w) - left))


def ref_stft(x, n_fft, hop, window=None, center=True, pad_mode="reflect", normalized=False,
             onesided=True):
    """float64 numpy: pad, frame, window, FFT -> [B, F, frames, 2]."""
    x = x.astype(np.float64)
    if center:
        x = np.pad(x, [(0, 0), (n_fft // 2, n_fft // 2)], mode=NP_PAD[pad_mode])
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=-1)[:, ::hop]
    spec = (np.fft.rfft if onesided else np.fft.fft)(frames * full_window(window, n_fft), axis=-1)
    if normalized:
        spec = spec / np.sqrt(n_fft)
    spec = np.swapaxes(spec, 1, 2)
    return np.stack([spec.real, spec.imag], axis=-1)


def ref_istft(X, n_fft, hop, window=None, center=True, normalized=False, length=None):
    """float64 numpy: irfft every frame, window, overlap-add, divide by the envelope, trim."""
    spec = X[..., 0] + 1j * X[..., 1]                        # [B, F, frames]
    frames = np.fft.irfft(np.swapaxes(spec, 1, 2), n=n_fft, axis=-1)
    if normalized:
        frames = frames * np.sqrt(n_fft)
    w = full_window(window, n_fft)
    B, nfr = frames.shape[:2]
    total = n_fft + hop * (nfr - 1)
    y, env = np.zeros((B, total)), np.zeros(total)
    for t in range(nfr):
        y[:, t * hop:t * hop + n_fft] += frames[:, t] * w
        env[t * hop:t * hop + n_fft] += w * w
    start = n_fft // 2 if center else 0
    end = start + length if length is not None else total - start
    y, env = y[:, start:min(end, total)], env[start:min(end, total)]
    y = y / env
    return np.pad(y, [(0, 0), (0, max(0, end - total))])


SIZES = [  # n_fft, hop, T, batch
    (16, 4, 100, 2), (64, 16, 1001, 3), (512, 128, 5000, 2), (4096, 1024, 30000, 2),
    (2, 1, 9, 1), (8, 8, 40, 1), (32, 5, 77, 1),               # FFT: tiny, hop = n_fft, odd hop
    (12, 3, 50, 2), (100, 25, 999, 1), (1, 1, 5, 1),            # DFT path
]


@pytest.mark.parametrize("n_fft,hop,T,B", SIZES)
def test_stft_matches_numpy(dev, rng, n_fft, hop, T, B):
    x = rng.standard_normal((B, T)).astype(np.float32)
    got = stft(dev.tensor(x), n_fft, hop).numpy()
    want = ref_stft(x, n_fft, hop)
    assert got.shape == want.shape == (B, n_fft // 2 + 1, 1 + (T + 2 * (n_fft // 2) - n_fft) // hop, 2)
    assert rel(got, want) < TOL


# Hann with hop >= n_fft has a zero overlap-add envelope (NOLA fails; torch raises), so
# those sizes have no inverse to compare
INVERTIBLE = [s for s in SIZES if s[0] == 1 or s[1] < s[0]]


@pytest.mark.parametrize("n_fft,hop,T,B", INVERTIBLE)
def test_istft_roundtrip_and_numpy(dev, rng, n_fft, hop, T, B):
    x = rng.standard_normal((B, T)).astype(np.float32)
    X = stft(dev.tensor(x), n_fft, hop)
    y = istft(X, n_fft, hop, length=T).numpy()
    assert y.shape == (B, T)
    assert rel(y, x) < TOL
    # default length, and against an independent float64 inverse of the same spectrum
    spec = X.numpy()
    y = istft(X, n_fft, hop).numpy()
    want = ref_istft(spec.astype(np.float64), n_fft, hop)
    assert y.shape == want.shape
    assert rel(y, want) < TOL


@pytest.mark.parametrize("n_fft,hop", [(16, 4), (64, 16), (12, 4)])
@pytest.mark.parametrize("center,pad_mode", [(True, "reflect"), (True, "constant"), (True, "replicate"),
                                             (True, "circular"), (False, "reflect")])
def test_stft_options_numpy(dev, rng, n_fft, hop, center, pad_mode):
    x = rng.standard_normal((2, 203)).astype(np.float32)
    w = rng.uniform(0.2, 1.0, n_fft - 3).astype(np.float32)       # shorter window: centered
    for window in (None, w):
        for normalized, onesided in ((False, False), (True, True)):
            got = stft(dev.tensor(x), n_fft, hop, window=None if window is None else dev.tensor(window),
                       center=center, pad_mode=pad_mode, normalized=normalized, onesided=onesided).numpy()
            want = ref_stft(x, n_fft, hop, window, center, pad_mode, normalized, onesided)
            assert got.shape == want.shape
            assert rel(got, want) < TOL


@pytest.mark.parametrize("n_fft,hop", [(16, 4), (64, 16), (12, 4), (4096, 1024)])
@pytest.mark.parametrize("center,normalized,length", [(True, False, None), (True, True, 150),
                                                      (False, False, None), (True, False, 2000)])
def test_istft_options_numpy(dev, rng, n_fft, hop, center, normalized, length):
    frames = 6 if n_fft == 4096 else 40
    X = rng.standard_normal((2, n_fft // 2 + 1, frames, 2)).astype(np.float32)
    window = rng.uniform(0.5, 1.0, n_fft).astype(np.float32)      # NOLA holds everywhere
    got = istft(dev.tensor(X), n_fft, hop, window=dev.tensor(window), center=center,
                normalized=normalized, length=length).numpy()
    want = ref_istft(X.astype(np.float64), n_fft, hop, window, center, normalized, length)
    assert got.shape == want.shape
    assert rel(got, want) < TOL
    available = n_fft + hop * (frames - 1) - (n_fft // 2 if center else 0)
    if length is not None and length > available:
        assert np.all(got[:, available:] == 0)  # zero-padded past the overlap-added signal


@pytest.mark.parametrize("n_fft,hop,center", [(16, 4, False), (12, 4, True), (4096, 1024, False)])
def test_istft_without_envelope(dev, rng, n_fft, hop, center):
    """envelope=False: the plain overlap-add of the windowed inverse FFTs, not divided by
    the squared-window envelope (pycore/demix/spleeter.py streams blocks of frames with it)."""
    frames = 6 if n_fft == 4096 else 20
    X = rng.standard_normal((2, n_fft // 2 + 1, frames, 2)).astype(np.float32)
    got = istft(dev.tensor(X), n_fft, hop, center=center, envelope=False).numpy()
    spec = X[..., 0].astype(np.float64) + 1j * X[..., 1]
    windowed = np.fft.irfft(np.swapaxes(spec, 1, 2), n=n_fft, axis=-1) * hann(n_fft)
    y = np.zeros((2, n_fft + hop * (frames - 1)))
    for t in range(frames):
        y[:, t * hop:t * hop + n_fft] += windowed[:, t]
    start = n_fft // 2 if center else 0
    want = y[:, start:y.shape[1] - start]
    assert got.shape == want.shape
    assert rel(got, want) < TOL


def test_one_dimensional_input(dev, rng):
    x = rng.standard_normal(1000).astype(np.float32)
    X = stft(dev.tensor(x), 64, 16)
    assert X.shape == (33, 1 + 1000 // 16, 2)
    assert rel(X.numpy(), ref_stft(x[None], 64, 16)[0]) < TOL
    y = istft(X, 64, 16, length=1000)
    assert y.shape == (1000,)
    assert rel(y.numpy(), x) < TOL


def test_large_fft_and_dft_fallback(dev, rng, monkeypatch):
    # n_fft 8192 needs 32 KiB of workgroup memory: FFT where the device has it ...
    x = rng.standard_normal((1, 20000)).astype(np.float32)
    if dev.limits["max-compute-workgroup-storage-size"] >= 32768:
        assert spectral._fft_plan(dev, 8192) is not None
    got = stft(dev.tensor(x), 8192, 2048).numpy()
    assert rel(got, ref_stft(x, 8192, 2048)) < TOL
    # ... and the direct DFT where it does not (a device with WebGPU's minimum limits)
    monkeypatch.setitem(dev.limits, "max-compute-workgroup-storage-size", 8192)
    assert spectral._fft_plan(dev, 2048) is None
    x = rng.standard_normal((1, 5000)).astype(np.float32)
    X = stft(dev.tensor(x), 2048, 512)
    assert rel(X.numpy(), ref_stft(x, 2048, 512)) < TOL
    assert rel(istft(X, 2048, 512, length=5000).numpy(), x) < TOL


def test_validation(dev):
    x = dev.tensor(np.zeros((2, 100), np.float32))
    cases = [
        (lambda: stft(dev.tensor(np.zeros(100, np.int32), dtype="i32"), 16, 4), "stft.*dtype"),
        (lambda: stft(dev.tensor(np.zeros((1, 2, 100), np.float32)), 16, 4), r"stft.*\[B, T\]"),
        (lambda: stft(x, 0, 4), "stft.*n_fft"),
        (lambda: stft(x, 16, 0), "stft.*hop"),
        (lambda: stft(x, 16, 4, pad_mode="mirror"), "stft.*pad_mode"),
        (lambda: stft(dev.tensor(np.zeros((2, 8), np.float32)), 16, 4), "stft.*reflect"),
        (lambda: stft(x, 128, 4, center=False), "stft.*shorter"),
        (lambda: stft(x, 16, 4, window=dev.tensor(np.ones(17, np.float32))), "stft.*window"),
        (lambda: istft(dev.tensor(np.zeros((2, 8, 5, 2), np.float32)), 16, 4), "istft.*F = "),
        (lambda: istft(dev.tensor(np.zeros((2, 9, 5, 3), np.float32)), 16, 4), r"istft.*\[B, F, frames, 2\]"),
        (lambda: istft(dev.tensor(np.zeros((2, 9, 5, 2), np.float32)), 16, 4, length=-1), "istft.*length"),
        (lambda: istft(dev.tensor(np.zeros((2, 9, 5, 2), np.float32)), 16, 4,
                       window=dev.tensor(np.ones((2, 8), np.float32))), "istft.*window"),
    ]
    for fn, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            fn()


@pytest.mark.parametrize("name", ["stft", "istft"])
def test_selfcheck(dev, name):
    assert asyncio.run(CHECKS[name](dev))


def test_bench_stft_runs(dev):
    r = bench_stft(dev, seconds=0.5, sr=8000, channels=2, repeat=1)
    assert r["rel_err"] < TOL
    assert r["wgsl_ms"] > 0 and r["numpy_ms"] > 0 and r["ratio"] > 0


# ---------------------------------------------------------------- torch as reference


@pytest.mark.filterwarnings("ignore:The length of signal is shorter")
@pytest.mark.parametrize("n_fft,hop,T", [(4096, 1024, 30000), (16, 4, 100), (64, 16, 1001), (512, 128, 5000),
                                         (100, 25, 999)])
def test_stft_istft_match_torch(dev, rng, torch, n_fft, hop, T):
    x = rng.standard_normal((2, T)).astype(np.float32)
    w = torch.hann_window(n_fft, dtype=torch.float64)
    want = torch.view_as_real(torch.stft(torch.from_numpy(x).double(), n_fft, hop, window=w,
                                         return_complex=True)).numpy()
    X = stft(dev.tensor(x), n_fft, hop)
    assert rel(X.numpy(), want) < TOL
    spec = torch.view_as_complex(torch.from_numpy(X.numpy()).double().contiguous())
    for length in (None, T, T + 100):
        y_want = torch.istft(spec, n_fft, hop, window=w, length=length).numpy()
        y = istft(X, n_fft, hop, length=length).numpy()
        assert y.shape == y_want.shape
        assert rel(y, y_want) < TOL


@pytest.mark.parametrize("center,pad_mode,normalized,onesided", [
    (True, "reflect", True, False), (True, "constant", False, True), (True, "replicate", True, True),
    (True, "circular", False, False), (False, "reflect", True, True),
])
def test_options_match_torch(dev, rng, torch, center, pad_mode, normalized, onesided):
    n_fft, hop = 64, 12
    x = rng.standard_normal((2, 500)).astype(np.float32)
    w = rng.uniform(0.3, 1.0, 50).astype(np.float32)     # win_length < n_fft
    wt = torch.from_numpy(w).double()
    want = torch.view_as_real(torch.stft(torch.from_numpy(x).double(), n_fft, hop, win_length=50, window=wt,
                                         center=center, pad_mode=pad_mode, normalized=normalized,
                                         onesided=onesided, return_complex=True)).numpy()
    X = stft(dev.tensor(x), n_fft, hop, window=dev.tensor(w), center=center, pad_mode=pad_mode,
             normalized=normalized, onesided=onesided)
    assert rel(X.numpy(), want) < TOL
    if onesided and center:  # center=False: the zero-padded window edges fail NOLA in torch
        spec = torch.view_as_complex(torch.from_numpy(want).contiguous())
        y_want = torch.istft(spec, n_fft, hop, win_length=50, window=wt, center=center,
                             normalized=normalized, length=500).numpy()
        y = istft(dev.tensor(want.astype(np.float32)), n_fft, hop, window=dev.tensor(w), center=center,
                  normalized=normalized, length=500).numpy()
        assert rel(y, y_want) < TOL
