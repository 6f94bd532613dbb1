"""The DDSP model in PyTorch, for training: decoder, differentiable synthesizer, reverb.

Its state_dict keys are the weight names the GPU modules read (pycore/models/ddsp.py):
train this, save it with `save(model, path)`, and `Decoder` / `Synth` run it in the
browser. The math is that of the `ddsp` package (see pycore/models/ddsp.py and the
numpy reference pycore/reference/ddsp_numpy.py, which tests/test_ddsp.py checks this
module against).

Decoder (ddsp RnnFcDecoder, input_keys ('ld_scaled', 'f0_scaled')):

    ld_stack, f0_stack: `layers` x Fc(ch)       Fc = Linear -> LayerNorm -> LeakyReLU(0.2)
    gru:       nn.GRU(2 ch -> gru), batch_first
    out_stack: `layers` x Fc(ch) on cat(ld, f0, gru)
    dense_out: Linear(ch -> 1 + K + M): amplitude, harmonic distribution, noise magnitudes
    reverb.ir: the trained impulse response (ddsp Reverb(trainable=True), init N(0, 1e-6))

Stemtone's configuration (Config defaults), sized for real time in a browser at 250
frames per second: ch 256, 2 layers per stack, GRU 256, 60 harmonics, 65 noise bands,
reverb 48000 samples (3 s). Parameters: 2 x 67.3 k (input stacks) + 591.4 k (GRU) +
263.7 k (output stack) + 32.4 k (dense_out) + 48 k (reverb) = 1.07 M (4.3 MB in float32,
2.1 MB in float16). Magenta's solo_instrument model (ch 512, 3 layers, GRU 512) needs
~4.8 M multiply-adds per frame; this one 1.02 M. FLOPs per second of audio at 16 kHz
(`pycore.models.ddsp.stage_flops`, a multiply-add = 2): decoder 0.51 G, harmonic
oscillators 29 M (all 60 below Nyquist), filtered noise 4.7 M, reverb 99 M.

Synthesis here is offline and aligned like ddsp (no latency; the GPU synthesizer streams
one hop later, see pycore/models/ddsp.py). The noise is an argument: training draws
torch.rand noise; tests pass the GPU's hash noise to compare sample by sample.

Native only; imported by the training script and tests, never by the product.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..models.ddsp import Config

# the instrument models' sizes (train_ddsp.py's docstring says why they are smaller than Config's)
CONFIG = Config(ch=128, gru=128, n_harmonics=60, n_noise=65, reverb_length=8000)


class Fc(nn.Module):
    """Linear -> LayerNorm -> LeakyReLU (ddsp nn.Fc)."""

    def __init__(self, n_in, ch, config):
        super().__init__()
        self.dense = nn.Linear(n_in, ch)
        self.norm = nn.LayerNorm(ch, eps=config.ln_eps)
        self.slope = config.leaky_slope

    def forward(self, x):
        return F.leaky_relu(self.norm(self.dense(x)), self.slope)


def _stack(n_in, config):
    return nn.Sequential(*[Fc(n_in if i == 0 else config.ch, config.ch, config) for i in range(config.layers)])


class Reverb(nn.Module):
    """A trained impulse response; out = audio + audio * ir with ir[0] masked to 0."""

    def __init__(self, length):
        super().__init__()
        self.ir = nn.Parameter(torch.randn(length) * 1e-6)

    def forward(self, audio):
        return reverb(audio, self.ir)


class DDSP(nn.Module):
    def __init__(self, config=None):
        super().__init__()
        self.config = c = (config or Config()).check()
        self.ld_stack = _stack(1, c)
        self.f0_stack = _stack(1, c)
        self.gru = nn.GRU(2 * c.ch, c.gru, batch_first=True)
        self.out_stack = _stack(2 * c.ch + c.gru, c)
        self.dense_out = nn.Linear(c.ch, c.n_out)
        self.reverb = Reverb(c.reverb_length) if c.reverb_length else None

    def forward(self, f0_hz, loudness_db, h0=None):
        """f0_hz, loudness_db [B, F] -> (controls [B, F, 2 + K + M], GRU state [1, B, gru])."""
        ld = self.ld_stack(scale_db(loudness_db)[..., None])
        f0 = self.f0_stack(scale_f0_hz(f0_hz)[..., None])
        g, h = self.gru(torch.cat([ld, f0], -1), h0)
        raw = self.dense_out(self.out_stack(torch.cat([ld, f0, g], -1)))
        K = self.config.n_harmonics
        controls = torch.cat([
            f0_hz[..., None].clamp(min=0),
            exp_sigmoid(raw[..., :1 + K]),
            exp_sigmoid(raw[..., 1 + K:] + self.config.noise_bias)], -1)
        return controls, h

    def synthesize(self, controls, noise=None):
        """Audio [B, F * hop] for controls [B, F, C] (ddsp-aligned, offline). noise
        [B, F * hop] uniform in [-1, 1); default torch.rand."""
        c = self.config
        f0, amp = controls[..., 0], controls[..., 1]
        dist, mags = controls[..., 2:2 + c.n_harmonics], controls[..., 2 + c.n_harmonics:]
        if noise is None:
            noise = torch.rand(f0.shape[0], f0.shape[1] * c.hop, device=controls.device) * 2 - 1
        audio = harmonic(f0, amp, dist, c.sample_rate, c.hop) + filtered_noise(mags, noise)
        return self.reverb(audio) if self.reverb is not None else audio


# --------------------------------------------------------------------------- functions


def exp_sigmoid(x, exponent=10.0, max_value=2.0, threshold=1e-7):
    return max_value * torch.sigmoid(x) ** math.log(exponent) + threshold


def scale_db(db):
    return db / 80.0 + 1.0


def scale_f0_hz(f0_hz):
    midi = 12.0 * (torch.log2(f0_hz.clamp(min=1e-5)) - math.log2(440.0)) + 69.0
    return torch.where(f0_hz > 0, midi, torch.zeros_like(midi)) / 127.0


def next_frame(x):
    """x shifted one frame earlier, the last frame held: [B, F, ...]."""
    return torch.cat([x[:, 1:], x[:, -1:]], 1)


def upsample_linear(x, hop):
    """[B, F, ...] -> [B, F * hop, ...]: frame f at sample f * hop, linear towards f + 1."""
    t = torch.arange(hop, dtype=x.dtype, device=x.device) * torch.tensor(1 / hop, dtype=x.dtype)
    t = t.view(1, 1, hop, *([1] * (x.ndim - 2)))                       # j * float(1 / hop), as the GPU
    y = x.unsqueeze(2) + t * (next_frame(x) - x).unsqueeze(2)
    return y.reshape(x.shape[0], -1, *x.shape[2:])


def upsample_window(x, hop):
    """ddsp upsample_with_windows: overlapping Hann windows of 2 hop (last frame held)."""
    j = torch.arange(hop, dtype=torch.float64, device=x.device)
    w = (0.5 - 0.5 * torch.cos(math.pi * j / hop)).to(x.dtype).view(1, 1, hop, *([1] * (x.ndim - 2)))
    y = x.unsqueeze(2) * (1 - w) + next_frame(x).unsqueeze(2) * w
    return y.reshape(x.shape[0], -1, *x.shape[2:])


def harmonic(f0_hz, amplitude, distribution, sample_rate, hop):
    """ddsp Harmonic: f0, amplitude [B, F], distribution [B, F, K] -> audio [B, F * hop]."""
    K = distribution.shape[-1]
    k = torch.arange(1, K + 1, dtype=f0_hz.dtype, device=f0_hz.device)
    nyquist = sample_rate / 2
    d = torch.where(f0_hz[..., None] * k >= nyquist, torch.zeros_like(distribution), distribution)
    s = d.sum(-1, keepdim=True)
    amps = amplitude[..., None] * d / torch.where(s == 0, torch.full_like(s, 1e-7), s)
    amps = upsample_window(amps, hop)                                  # [B, N, K]
    f0n = upsample_linear(f0_hz, hop)                                  # [B, N]
    # phase summed in float64 (the GPU: exact fixed point); harmonic k at frac(k * phase)
    phase = torch.cumsum(f0n.double() / sample_rate, -1) % 1.0
    phases = (phase[..., None] * k.double()) % 1.0
    amps = torch.where(f0n[..., None] * k >= nyquist, torch.zeros_like(amps), amps)
    return (amps * torch.sin(2 * math.pi * phases).to(amps.dtype)).sum(-1)


def frequency_impulse_response(magnitudes):
    """[B, F, M] magnitudes -> [B, F, L = 2 (M - 1)] causal windowed FIRs (ddsp)."""
    ir = torch.fft.irfft(magnitudes.to(torch.complex64 if magnitudes.dtype == torch.float32 else torch.complex128))
    L = ir.shape[-1]
    m = torch.arange(L, dtype=torch.float64, device=ir.device)
    window = (0.5 + 0.5 * torch.cos(2 * math.pi * m / L)).to(ir.dtype)   # fftshift(Hann(L))
    return torch.roll(ir * window, L // 2, -1)                         # fftshift: causal


def filtered_noise(magnitudes, noise):
    """ddsp FilteredNoise on given noise [B, F * hop]: frame f of the noise convolved with
    FIR f (FFT convolution), overlap-added, cropped by the FIR's group delay."""
    B, Fr, M = magnitudes.shape
    ir = frequency_impulse_response(magnitudes)
    L = ir.shape[-1]
    hop = noise.shape[-1] // Fr
    n = 1
    while n < hop + L - 1:
        n *= 2
    frames = torch.fft.irfft(torch.fft.rfft(noise.reshape(B, Fr, hop), n) * torch.fft.rfft(ir, n), n)
    full = F.fold(frames.transpose(1, 2), (1, (Fr - 1) * hop + n), (1, n), stride=(1, hop)).reshape(B, -1)
    start = (L - 1) // 2 - 1
    return full[:, start:start + Fr * hop]


def reverb(audio, ir):
    """audio + causal convolution of audio with ir (ir[0] masked to 0), 'same' length."""
    ir = torch.cat([torch.zeros_like(ir[:1]), ir[1:]])
    N = audio.shape[-1]
    n = 1
    while n < N + ir.shape[-1] - 1:
        n *= 2
    wet = torch.fft.irfft(torch.fft.rfft(audio, n) * torch.fft.rfft(ir, n), n)[..., :N]
    return audio + wet


# --------------------------------------------------------------------------- saving


def load(path) -> DDSP:
    """The model (eval mode, float32) from a safetensors file that `save` wrote: the
    Config from its metadata, f16 weights widened to float32."""
    from ..weights.safetensors import load_metadata, load_numpy

    model = DDSP(Config.from_metadata(load_metadata(path))).eval()
    arrays = load_numpy(path)
    model.load_state_dict({k: torch.from_numpy(arrays[k].astype("float32")) for k in model.state_dict()})
    return model


def save(model, path, dtype=torch.float32, metadata=None):
    """Write the model's weights as safetensors (with its Config in the metadata), the
    file pycore.models.ddsp reads. metadata: more {str: str} entries for the header
    (e.g. the training record of pycore.train.train_ddsp)."""
    from ..weights.safetensors import save as save_st

    tensors = {k: v.detach().to("cpu", dtype).numpy() for k, v in model.state_dict().items()}
    save_st(path, tensors, metadata={**(metadata or {}), **model.config.to_metadata()})
