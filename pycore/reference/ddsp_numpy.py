"""Reference DDSP synthesis in numpy float64, written from the `ddsp` package's math
(ddsp 3.7.0: core.exp_sigmoid, resample / upsample_with_windows, normalize_harmonics,
oscillator_bank, frequency_impulse_response, fft_convolve, effects.Reverb; facts only,
see /work/notes/ddsp_facts.md). Offline and aligned like ddsp: frame f's controls hold at
sample f * hop and are interpolated towards frame f + 1 (the last frame is held).

The GPU synthesizer (pycore/models/ddsp.py) streams with one hop of latency; its output
for frames c_0 .. c_{F-1} equals `gpu_aligned(...)`: this reference on
[zero frame, c_0, .., c_{F-1}], cut to F * hop samples. Tests and `stemtone bench`
import it; native only (numpy), never imported by the product.
"""

from __future__ import annotations

import numpy as np

DB_RANGE = 80.0
F0_RANGE = 127.0


def exp_sigmoid(x, exponent=10.0, max_value=2.0, threshold=1e-7):
    x = np.asarray(x, np.float64)
    return max_value * (1.0 / (1.0 + np.exp(-x))) ** np.log(exponent) + threshold


def scale_db(db):
    return np.asarray(db, np.float64) / DB_RANGE + 1.0


def scale_f0_hz(f0_hz):
    f = np.asarray(f0_hz, np.float64)
    midi = 12.0 * (np.log2(np.where(f > 0, f, 1.0)) - np.log2(440.0)) + 69.0
    return np.where(f > 0, midi, 0.0) / F0_RANGE


# --------------------------------------------------------------------------- noise


def pcg(v):
    """noise.wgsl's PCG hash on uint32 arrays."""
    v = np.asarray(v, np.uint64) & 0xFFFFFFFF
    state = (v * 747796405 + 2891336453) & 0xFFFFFFFF
    word = (((state >> ((state >> 28) + 4)) ^ state) * 277803737) & 0xFFFFFFFF
    return (word >> 22) ^ word


def white_noise(start, count, seed=0):
    """The GPU synthesizer's noise samples start .. start + count - 1 (float64, exact)."""
    idx = np.arange(count, dtype=np.uint64) + np.uint64(start)
    lo, hi = idx & 0xFFFFFFFF, idx >> 32
    h = pcg(lo + pcg(hi + pcg(np.uint64(seed))))
    return (h >> 8).astype(np.float64) * 2.0**-23 - 1.0


# --------------------------------------------------------------------------- harmonic


def upsample_linear(x, hop):
    """ddsp resample(method='linear'): frame f at sample f * hop, linear towards f + 1,
    the last frame held. x [F] or [F, K] -> [F * hop] or [F * hop, K]."""
    x = np.asarray(x, np.float64)
    nxt = np.concatenate([x[1:], x[-1:]])
    t = (np.arange(hop) / hop).reshape((1, hop) + (1,) * (x.ndim - 1))
    y = x[:, None] + t * (nxt - x)[:, None]
    return y.reshape((-1,) + x.shape[1:])


def upsample_window(x, hop):
    """ddsp upsample_with_windows: overlapping Hann windows of 2 hop, last frame held."""
    x = np.asarray(x, np.float64)
    nxt = np.concatenate([x[1:], x[-1:]])
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(2 * hop) / (2 * hop))   # periodic Hann
    shape = (1, hop) + (1,) * (x.ndim - 1)
    y = x[:, None] * w[hop:].reshape(shape) + nxt[:, None] * w[:hop].reshape(shape)
    return y.reshape((-1,) + x.shape[1:])


def cycles(increments, initial=0.0, block=256):
    """(initial + cumsum(increments)) mod 1 in float64, accurate to ~1e-13 cycles however
    long: a plain np.cumsum of a steady 440 Hz at 48 kHz reaches 1e5 cycles in three
    minutes, where each add rounds by ~1e-11 cycles in the same direction (measured
    2.6e-4 cycles of drift after an hour). Here sums run within blocks of `block`
    samples, and the block starts are accumulated modulo 1."""
    x = np.asarray(increments, np.float64)
    n = len(x)
    x = np.concatenate([x, np.zeros(-n % block)]).reshape(-1, block)
    within = np.cumsum(x, axis=1)
    starts = np.empty(len(x))
    acc = float(initial) % 1.0
    for b, total in enumerate(within[:, -1] % 1.0):   # a Python loop over n / block blocks
        starts[b] = acc
        acc = (acc + total) % 1.0
    return ((within + starts[:, None]) % 1.0).ravel()[:n]


def _harmonic_freqs(f0, k):
    """k * f0 for every harmonic, [..., K], as float32 products: ddsp (TensorFlow float32)
    and the GPU kernel decide k * f0 >= Nyquist on those, which matters where the product
    rounds onto Nyquist."""
    return (np.asarray(f0, np.float32)[..., None] * np.asarray(k, np.float32)).astype(np.float64)


def harmonic_amplitudes(f0_hz, amplitude, distribution, sample_rate):
    """Frame-wise A_k = amplitude * normalize_harmonics(d): harmonics at or above Nyquist
    removed, then d / sum(d) (ddsp safe_divide: a zero sum divides by 1e-7)."""
    d = np.asarray(distribution, np.float64)
    k = np.arange(1, d.shape[1] + 1)
    d = np.where(_harmonic_freqs(f0_hz, k) >= sample_rate / 2, 0.0, d)
    s = d.sum(axis=1, keepdims=True)
    return np.asarray(amplitude, np.float64)[:, None] * d / np.where(s == 0, 1e-7, s)


def harmonic(f0_hz, amplitude, distribution, sample_rate, hop, initial_phase=0.0):
    """ddsp Harmonic: [F] f0, [F] amplitude, [F, K] distribution -> audio [F * hop], in
    float64 (but the Nyquist decisions, see _harmonic_freqs). The phase of harmonic k is
    k times the fundamental's (a float64 cumsum) modulo 1, which is what ddsp's
    per-harmonic cumsum of k * f0 computes."""
    amps = upsample_window(harmonic_amplitudes(f0_hz, amplitude, distribution, sample_rate), hop)
    f0n = upsample_linear(f0_hz, hop)
    phase = cycles(f0n / sample_rate, initial_phase)
    K = amps.shape[1]
    keep = _harmonic_freqs(f0n, np.arange(1, K + 1)) < sample_rate / 2   # [n, K]
    out = np.zeros(len(phase))
    for k in range(1, K + 1):
        out += np.where(keep[:, k - 1], amps[:, k - 1], 0.0) * np.sin(2 * np.pi * ((k * phase) % 1.0))
    return out


# --------------------------------------------------------------------------- filtered noise


def frequency_impulse_response(magnitudes):
    """ddsp frequency_impulse_response with window_size >= ir size: irfft of the
    magnitudes, times fftshift(Hann(L)), then fftshift to causal form. [F, M] -> [F, L]."""
    ir = np.fft.irfft(np.asarray(magnitudes, np.float64), axis=-1)
    L = ir.shape[-1]
    window = np.fft.fftshift(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(L) / L))
    return np.fft.fftshift(ir * window, axes=-1)


def fft_convolve(audio, ir, delay_compensation=-1):
    """ddsp fft_convolve with padding 'same': audio [N] in F frames of N / F samples, frame
    f convolved with ir[f] ([F, L] or [L] for a fixed filter), overlap-added, cropped
    from (L - 1) // 2 - 1 (delay_compensation < 0) or delay_compensation."""
    audio = np.asarray(audio, np.float64)
    ir = np.atleast_2d(np.asarray(ir, np.float64))
    F, L = ir.shape
    hop = -(-len(audio) // F)
    full = np.zeros(F * hop + L - 1)
    x = np.pad(audio, (0, F * hop - len(audio))).reshape(F, hop)
    for f in range(F):
        full[f * hop:f * hop + hop + L - 1] += np.convolve(x[f], ir[f])
    start = (L - 1) // 2 - 1 if delay_compensation < 0 else delay_compensation
    return full[start:start + len(audio)]


def filtered_noise(magnitudes, noise):
    """ddsp FilteredNoise.get_signal on given noise [F * hop] (magnitudes already scaled)."""
    return fft_convolve(noise, frequency_impulse_response(magnitudes))


def reverb(audio, ir):
    """ddsp Reverb (add_dry): audio + causal convolution with ir, ir[0] masked to 0."""
    audio = np.asarray(audio, np.float64)
    ir = np.array(ir, np.float64)
    ir[0] = 0.0
    n = 1
    while n < len(audio) + len(ir) - 1:
        n *= 2
    wet = np.fft.irfft(np.fft.rfft(audio, n) * np.fft.rfft(ir, n), n)[:len(audio)]
    return audio + wet


# --------------------------------------------------------------------------- the synthesizer


def split_controls(controls, n_harmonics):
    """controls [F, 2 + K + M] -> (f0_hz, amplitude, distribution, noise magnitudes)."""
    c = np.asarray(controls, np.float64)
    return c[:, 0], c[:, 1], c[:, 2:2 + n_harmonics], c[:, 2 + n_harmonics:]


def synthesize(controls, n_harmonics, sample_rate=16000, hop=64, noise=None, ir=None):
    """ddsp's Harmonic + FilteredNoise -> Add -> Reverb on packed controls [F, C]; noise
    [F * hop] (default: the GPU synthesizer's noise from sample 0); ir None = no reverb."""
    f0, amp, dist, mags = split_controls(controls, n_harmonics)
    n = len(f0) * hop
    noise = white_noise(0, n) if noise is None else noise
    out = harmonic(f0, amp, dist, sample_rate, hop) + filtered_noise(mags, noise)
    return reverb(out, ir) if ir is not None else out


def gpu_aligned(controls, n_harmonics, sample_rate=16000, hop=64, seed=0, ir=None):
    """What the GPU synthesizer renders for controls [F, C] from its initial state:
    ddsp on [zero frame, controls] (noise of the zero frame: 0; frame f's noise from
    sample f * hop of the GPU's sequence), cut to F * hop samples."""
    c = np.asarray(controls, np.float64)
    F = c.shape[0]
    padded = np.concatenate([np.zeros((1, c.shape[1])), c])
    noise = np.concatenate([np.zeros(hop), white_noise(0, F * hop, seed)])
    return synthesize(padded, n_harmonics, sample_rate, hop, noise, ir)[:F * hop]
