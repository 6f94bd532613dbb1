"""DDSP (Engel et al., ICLR 2020) on the WGSL kernels: the recurrent decoder and a
streaming harmonic-plus-noise synthesizer with a trained reverb.

    config = Config()                                     # or Config.from_metadata(...)
    decoder = Decoder(dev, params, config)                # params: safetensors entries
    synth = Synth(dev, config, reverb_ir=params.get("reverb.ir"))
    controls, h = decoder(f0_hz, loudness_db, h)          # [F] each -> [F, C], GRU state
    audio, state = synth.render(controls, state)          # [F * hop] samples, new state

Both carry state, so a stream of blocks (any number of frames each) gives the same audio
as one offline call over all frames, to float32 rounding (tests/test_ddsp.py).

Decoder (ddsp's RnnFcDecoder as in its solo_instrument config, sized for real time):

    ld_scaled = loudness_db / 80 + 1            f0_scaled = hz_to_midi(f0_hz) / 127
    a = ld_stack(ld_scaled)                     b = f0_stack(f0_scaled)
    g, h = gru(cat(a, b), h)                    # GRU (PyTorch equations = Keras reset_after)
    raw = dense_out(out_stack(cat(a, b, g)))    # [F, 1 + K + M]
    controls = [f0_hz, exp_sigmoid(raw[0]), exp_sigmoid(raw[1:1+K]),
                exp_sigmoid(raw[1+K:] - 5)]     # exp_sigmoid(x) = 2 sigmoid(x)^ln 10 + 1e-7

    each stack: `layers` x (Linear -> LayerNorm(eps 1e-3, Keras' default) -> LeakyReLU(0.2))

Weight names are the state_dict keys of the PyTorch module pycore/train/ddsp_torch.py:
"ld_stack.0.dense.weight", "ld_stack.0.norm.bias", ..., "gru.weight_ih_l0", ...,
"dense_out.weight", "reverb.ir".

Synthesizer (ddsp's Harmonic + FilteredNoise + Add + Reverb processors), per block:

    harmonic  K sines at k * f0, amplitudes A_k = amplitude * d_k / sum(d) with the
              harmonics at or above Nyquist removed (frame by frame, then sample by
              sample); f0 upsampled linearly, amplitudes by overlapping Hann windows;
              phase = phase_cumsum of f0 / sr (the increment as two float32 lines,
              summed in exact fixed point, carried across blocks), harmonic k at
              frac(k * phase) (kernels/harmonic.wgsl)
    noise     uniform noise from a counter-based hash (deterministic, block-independent),
              filtered frame by frame by the frequency-sampling FIR of the M noise
              magnitudes (irfft, zero-phase Hann window of L = 2 (M - 1), causal), by FFT
              convolution and overlap-add (kernels/noise.wgsl, fft.wgsl, fftconv.wgsl)
    reverb    out = dry + dry * ir (ir[0] forced to 0): a uniformly partitioned FFT
              convolution with partitions of R samples (kernels/fftconv.wgsl)

ddsp interpolates the controls from frame f towards frame f + 1, which needs the next
frame. Here sample j of frame f interpolates from frame f - 1 to frame f, so the output
is ddsp's rendering of [zero frame, frames...] exactly, i.e. ddsp delayed by one hop
(4 ms at 16 kHz / 250 Hz frames): `Config.latency` samples. To end a stream, render
one more frame (e.g. the last frame with amplitude 0) to flush.

Browser-safe (no numpy).
"""

from __future__ import annotations

import array
import math
import json
from dataclasses import asdict, dataclass

from ..ops import expect
from ..ops import elementwise as E
from ..ops.ddsp import (decoder_head, decoder_inputs, fdl_shift, harmonic_bank, harmonic_increments,
                        harmonic_rows, noise_advance, noise_counter, noise_frames, noise_magnitudes, ola_carry, ones, spectral_mac,
                        zero_phase_hann)
from ..ops.matmul import linear
from ..ops.norm import layer_norm
from ..ops.rnn import gru
from ..ops.scan import phase_cumsum
from ..ops.spectral import istft, stft
from ..gpu.runtime import Tensor
from .layers import floats, upload


@dataclass(frozen=True)
class Config:
    """A DDSP model's sizes. The defaults are Stemtone's real-time configuration (see
    notes in the module docstring of pycore/train/ddsp_torch.py for the FLOP counts)."""

    sample_rate: int = 16000
    hop: int = 64                # samples per frame: 250 frames per second at 16 kHz
    n_harmonics: int = 60
    n_noise: int = 65            # noise bands -> FIR of 2 * (65 - 1) = 128 taps
    ch: int = 256                # width of the fully connected stacks
    layers: int = 2              # Fc layers per stack
    gru: int = 256               # GRU hidden units
    reverb_length: int = 48000   # impulse response samples (3 s at 16 kHz); 0: no reverb
    noise_bias: float = -5.0     # ddsp FilteredNoise.initial_bias
    ln_eps: float = 1e-3         # Keras LayerNormalization's default epsilon
    leaky_slope: float = 0.2     # tf.nn.leaky_relu's default

    @property
    def width(self) -> int:
        """Values per controls row: f0, amplitude, K harmonics, M noise magnitudes."""
        return 2 + self.n_harmonics + self.n_noise

    @property
    def n_out(self) -> int:
        """Decoder outputs per frame: amplitude, K harmonics, M noise magnitudes."""
        return 1 + self.n_harmonics + self.n_noise

    @property
    def ir_size(self) -> int:
        """Taps of the noise FIR: ddsp's irfft of the M magnitudes."""
        return 2 * (self.n_noise - 1)

    @property
    def noise_nfft(self) -> int:
        """FFT size of the noise convolution: a power of two >= hop + L - 1."""
        n = 1
        while n < self.hop + self.ir_size - 1:
            n *= 2
        return n

    @property
    def noise_delay(self) -> int:
        """Where this block's noise overlap-add starts, relative to the block: ddsp crops
        (L - 1) // 2 - 1 samples of group delay; one hop of latency leaves hop minus that."""
        return self.hop - ((self.ir_size - 1) // 2 - 1)

    @property
    def reverb_block(self) -> int:
        """Reverb partition size R: the largest power of two dividing hop (<= 1024), so
        that every block of whole frames is a whole number of partitions."""
        r = 1
        while self.hop % (2 * r) == 0 and 2 * r <= 1024:
            r *= 2
        return r

    @property
    def latency(self) -> int:
        """Samples by which the output lags ddsp's offline rendering (one hop)."""
        return self.hop

    def check(self):
        op = "ddsp.Config"
        for name in ("sample_rate", "hop", "n_harmonics", "ch", "layers", "gru"):
            v = getattr(self, name)
            expect(op, isinstance(v, int) and v >= 1, f"{name} must be an int >= 1, got {v!r}")
        expect(op, self.hop % 2 == 0, f"hop must be even (reverb partitions), got {self.hop}")
        odd = self.sample_rate
        while odd % 2 == 0:
            odd //= 2
        expect(op, odd < 2**16, f"sample_rate {self.sample_rate}: its odd part must be < 2**16 (exact "
               "phase increments, see kernels/harmonic.wgsl)")
        expect(op, isinstance(self.n_noise, int) and self.n_noise >= 3,
               f"n_noise must be an int >= 3, got {self.n_noise!r}")
        expect(op, self.noise_delay >= 0,
               f"n_noise = {self.n_noise} is too many for hop {self.hop}: the FIR's group delay exceeds "
               f"one hop (at most {self.hop + 2 if self.hop % 2 == 0 else self.hop + 1} bands)")
        expect(op, isinstance(self.reverb_length, int) and self.reverb_length >= 0,
               f"reverb_length must be an int >= 0, got {self.reverb_length!r}")
        return self

    def to_metadata(self) -> dict:
        """{"ddsp_config": json} for a safetensors header."""
        return {"ddsp_config": json.dumps(asdict(self), sort_keys=True)}

    @classmethod
    def from_metadata(cls, metadata: dict) -> "Config":
        expect("ddsp.Config", "ddsp_config" in metadata, "the weights' metadata has no 'ddsp_config'")
        return cls(**json.loads(metadata["ddsp_config"])).check()


# --------------------------------------------------------------------------- weights


def _get(op, params, name, shape):
    expect(op, name in params, f"weights lack {name!r}")
    e = params[name]
    expect(op, tuple(e.shape) == tuple(shape),
           f"weights[{name!r}] has shape {tuple(e.shape)}, expected {tuple(shape)}")
    expect(op, e.dtype in ("f32", "f16"), f"weights[{name!r}] must be f32 or f16, got {e.dtype}")
    return e


# --------------------------------------------------------------------------- decoder


class Fc:
    """Linear -> LayerNorm -> LeakyReLU ("<prefix>.dense.*", "<prefix>.norm.*")."""

    def __init__(self, dev, params, prefix, n_in, config, dtype):
        op = "ddsp.Decoder"
        ch = config.ch
        self.weight = upload(dev, _get(op, params, f"{prefix}.dense.weight", (ch, n_in)), dtype)
        self.bias = upload(dev, _get(op, params, f"{prefix}.dense.bias", (ch,)))
        self.norm_weight = upload(dev, _get(op, params, f"{prefix}.norm.weight", (ch,)))
        self.norm_bias = upload(dev, _get(op, params, f"{prefix}.norm.bias", (ch,)))
        self.config = config

    def __call__(self, x):
        y = linear(x, self.weight, self.bias)
        return layer_norm(y, (self.config.ch,), self.norm_weight, self.norm_bias, eps=self.config.ln_eps,
                          act="leaky_relu", alpha=self.config.leaky_slope)


class Decoder:
    """ddsp's RnnFcDecoder on the GPU (see the module docstring). `params` maps the
    PyTorch state_dict names to safetensors Entries (pycore.weights.safetensors.load); entries
    of other modules (e.g. "reverb.ir") are ignored. dtype "f16" stores the matrices as
    half floats where the GPU supports it; arithmetic stays float32."""

    def __init__(self, dev, params, config=None, dtype="f32"):
        op = "ddsp.Decoder"
        config = (config or Config()).check()
        expect(op, dtype in ("f32", "f16"), f"dtype must be 'f32' or 'f16', got {dtype!r}")
        dtype = dtype if dev.has_f16 else "f32"
        self.dev, self.config = dev, config
        ch, H = config.ch, config.gru

        def stack(name, n_in):
            return [Fc(dev, params, f"{name}.{i}", n_in if i == 0 else ch, config, dtype)
                    for i in range(config.layers)]

        self.ld_stack = stack("ld_stack", 1)
        self.f0_stack = stack("f0_stack", 1)
        self.out_stack = stack("out_stack", 2 * ch + H)
        self.gru = {}
        for name, shape in (("weight_ih_l0", (3 * H, 2 * ch)), ("weight_hh_l0", (3 * H, H)),
                            ("bias_ih_l0", (3 * H,)), ("bias_hh_l0", (3 * H,))):
            is_bias = name.startswith("bias")
            self.gru[name] = upload(dev, _get(op, params, f"gru.{name}", shape), "f32" if is_bias else dtype)
        self.dense_weight = upload(dev, _get(op, params, "dense_out.weight", (config.n_out, ch)), dtype)
        self.dense_bias = upload(dev, _get(op, params, "dense_out.bias", (config.n_out,)))

    def initial_state(self) -> Tensor:
        """The GRU's initial hidden state (zeros), [1, gru]."""
        return self.dev.tensor([0.0] * self.config.gru, (1, self.config.gru))

    def __call__(self, f0_hz, loudness_db, state=None):
        """Controls [F, C] for f0_hz and loudness_db ([F] each) and the GRU state after
        the last frame ([1, gru]; pass it back for the next block)."""
        op = "ddsp.Decoder"
        expect(op, isinstance(f0_hz, Tensor) and isinstance(loudness_db, Tensor), "inputs must be Tensors")
        expect(op, f0_hz.ndim == 1 and f0_hz.shape == loudness_db.shape and f0_hz.shape[0] >= 1,
               "f0_hz and loudness_db must both be [F >= 1]", f0_hz, loudness_db)
        if state is not None:
            expect(op, isinstance(state, Tensor) and state.shape == (1, self.config.gru),
                   f"state must be the [1, {self.config.gru}] tensor a previous call returned", state)
        ld, f0 = decoder_inputs(f0_hz, loudness_db)
        for fc in self.ld_stack:
            ld = fc(ld)
        for fc in self.f0_stack:
            f0 = fc(f0)
        g, h = gru(E.concat([ld, f0], dim=1), self.gru, self.config.gru, h0=state)
        x = E.concat([ld, f0, g], dim=1)
        for fc in self.out_stack:
            x = fc(x)
        raw = linear(x, self.dense_weight, self.dense_bias)
        c = self.config
        return decoder_head(raw, f0_hz, c.n_harmonics, c.n_noise, c.noise_bias), h


# --------------------------------------------------------------------------- synthesizer


class SynthState:
    """Everything a block needs from the blocks before it, all GPU tensors (so that a
    recorded plan can carry them: pycore.tone.stream copies each new state into the old):

    prev        [1, C]            the last controls row (interpolation starts there)
    phase       [2, 1]            fundamental phase after the last sample, cycles, as the
                                  two lines of harmonic_increments (hi, lo)
    noise_tail  [nfft - hop + D]  the noise overlap-add that spills into later blocks
    fdl         [R + 1, P - 1, 2] spectra of the last P - 1 reverb input partitions
    reverb_tail [R]               the reverb overlap-add that spills into the next block
    counter     [2]               global index of the next sample (seeds the noise), as
                                  pycore.ops.ddsp.noise_counter keeps it
    """

    __slots__ = ("prev", "phase", "noise_tail", "fdl", "reverb_tail", "counter")

    def __init__(self, prev, phase, noise_tail, fdl, reverb_tail, counter):
        self.prev, self.phase, self.noise_tail = prev, phase, noise_tail
        self.fdl, self.reverb_tail, self.counter = fdl, reverb_tail, counter

    def tensors(self) -> list:
        """The state's tensors, in a fixed order (None where the synth has no reverb)."""
        return [self.prev, self.phase, self.noise_tail, self.fdl, self.reverb_tail, self.counter]


def _ir_bytes(ir) -> bytes:
    """float32 bytes of an impulse response: a safetensors Entry, a numpy array or a
    sequence of numbers."""
    if hasattr(ir, "data") and hasattr(ir, "dtype") and ir.dtype in ("f32", "f16"):  # Entry
        return bytes(ir.data) if ir.dtype == "f32" else array.array("f", floats(ir)).tobytes()
    if hasattr(ir, "astype"):  # numpy (native only)
        return ir.astype("<f4").ravel().tobytes()
    return array.array("f", list(ir)).tobytes()


class Synth:
    """The streaming DDSP synthesizer (see the module docstring).

    reverb_ir: the trained impulse response ([n] samples: a safetensors Entry, numpy
    array or list) or None for no reverb. Its first sample is ignored (ddsp masks it: the
    dry signal is added separately). seed selects the noise sequence.
    reverb_block: the reverb's partition size R (a power of two; default
    config.reverb_block, which divides hop). The convolution costs ~sr * n / R complex
    multiply-adds per second, so a caller that always renders multiples of, say, 16
    frames can pass 16 * hop to do 16 times less work; render() then needs F * hop to
    be a multiple of R."""

    def __init__(self, dev, config=None, reverb_ir=None, seed=0, reverb_block=None):
        op = "ddsp.Synth"
        self.dev, self.config = dev, (config or Config()).check()
        expect(op, isinstance(seed, int) and 0 <= seed < 2**32, f"seed must be a 32-bit int, got {seed!r}")
        R = self.config.reverb_block if reverb_block is None else reverb_block
        expect(op, isinstance(R, int) and R >= 2 and R & (R - 1) == 0,
               f"reverb_block must be a power of two >= 2, got {reverb_block!r}")
        self.seed, self.R = seed, R
        self.parts = 0
        if reverb_ir is not None:
            raw = _ir_bytes(reverb_ir)
            n = len(raw) // 4
            expect(op, n >= 1, "reverb_ir is empty")
            self.parts = -(-n // R)
            zeros = lambda k: b"\0" * (4 * k)  # noqa: E731
            # [R/2 zeros, 0 (the masked dry tap), ir[1:], zeros up to P * R, R/2 zeros]: the
            # centred window of R ones in each stft frame of 2R picks partition p
            padded = zeros(R // 2 + 1) + raw[4:] + zeros(self.parts * R - n + R // 2)
            ir = dev.tensor(padded, (len(padded) // 4,))
            self.ir_spectra = stft(ir, 2 * R, R, window=ones(dev, R), center=False)   # [R + 1, P, 2]

    def initial_state(self) -> SynthState:
        """Silence before the first block: zero controls, phase, tails and history."""
        c, dev = self.config, self.dev

        def zeros(*shape):
            n = 1
            for s in shape:
                n *= s
            return dev.tensor(bytes(4 * n), shape)

        R = self.R
        return SynthState(prev=zeros(1, c.width), phase=zeros(2, 1),
                          noise_tail=zeros(c.noise_nfft - c.hop + c.noise_delay),
                          fdl=zeros(R + 1, max(self.parts - 1, 0), 2) if self.parts else None,
                          reverb_tail=zeros(R) if self.parts else None, counter=noise_counter(dev))

    def render(self, controls, state=None):
        """Audio [F * hop] for controls [F, C] (see pycore.ops.ddsp for the layout), and
        the state to pass to the next call. state None starts from silence."""
        op = "ddsp.Synth"
        c, dev = self.config, self.dev
        expect(op, isinstance(controls, Tensor) and controls.dtype == "f32", "controls must be an f32 Tensor")
        expect(op, controls.ndim == 2 and controls.shape[0] >= 1 and controls.shape[1] == c.width,
               f"controls must be [F >= 1, {c.width}] (f0, amplitude, {c.n_harmonics} harmonics, "
               f"{c.n_noise} noise magnitudes)", controls)
        expect(op, controls.dev is dev, "controls live on another device", controls)
        state = state or self.initial_state()
        expect(op, isinstance(state, SynthState), f"state must be a SynthState, got {type(state).__name__}")
        F, hop, K, M = controls.shape[0], c.hop, c.n_harmonics, c.n_noise
        n = F * hop
        R = self.R
        expect(op, not self.parts or n % R == 0,
               f"{F} frames of {hop} samples are not a whole number of reverb partitions of {R}", controls)

        # harmonic oscillators
        rows = harmonic_rows(controls, state.prev, K, c.sample_rate)
        phase, phase_state = phase_cumsum(harmonic_increments(rows, hop, c.sample_rate), initial=state.phase)
        harmonic = harmonic_bank(rows, phase, hop, c.sample_rate)

        # filtered noise: FIRs from the magnitudes, then FFT convolution of each frame
        L, nfft = c.ir_size, c.noise_nfft
        irs = istft(noise_magnitudes(controls, 2 + K, M), L, L, window=zero_phase_hann(dev, L),
                    center=False, envelope=False)
        frames = noise_frames(irs.reshape(F, L), hop, nfft, 0, self.seed, counter=state.counter)
        spectra = stft(frames, nfft, nfft, window=ones(dev, nfft), center=False)  # [2, bins, F, 2]
        bins = nfft // 2 + 1
        filtered = spectral_mac(spectra, spectra, hstride=1, h_off=bins * F)      # noise x FIR
        ola = istft(filtered, nfft, hop, window=ones(dev, nfft), center=False, envelope=False)
        pad = R // 2 if self.parts else 0
        dry = ola_carry(ola, state.noise_tail, 0, n, c.noise_delay, base=harmonic, pad=pad)
        noise_tail = ola_carry(ola, state.noise_tail, n, state.noise_tail.size, c.noise_delay)

        # reverb: out = dry + partitioned FFT convolution of dry with the impulse response
        fdl = reverb_tail = None
        out = dry
        if self.parts:
            x = stft(dry, 2 * R, R, window=ones(dev, R), center=False)           # [R + 1, n / R, 2]
            hist = state.fdl if self.parts > 1 else None
            wet = spectral_mac(x, self.ir_spectra, hist=hist, parts=self.parts, flip=True)
            fdl = fdl_shift(state.fdl, x) if self.parts > 1 else state.fdl
            ola = istft(wet, 2 * R, R, window=ones(dev, 2 * R), center=False, envelope=False)
            out = ola_carry(ola, state.reverb_tail, 0, n, base=dry, base_off=pad)
            reverb_tail = ola_carry(ola, state.reverb_tail, n, R)

        prev = E.pad(controls, (0, 0, -(F - 1), 0))                              # last row
        return out, SynthState(prev, phase_state, noise_tail, fdl, reverb_tail, noise_advance(state.counter, n))


# --------------------------------------------------------------------------- loading, cost


def load(dev, src, dtype="f32", seed=0):
    """(config, decoder, synth) from a DDSP safetensors file (path or bytes) written by
    pycore.train.ddsp_torch.save: the Config comes from its metadata."""
    from ..weights.safetensors import load as load_st, load_metadata

    params = load_st(src)
    config = Config.from_metadata(load_metadata(src))
    return config, Decoder(dev, params, config, dtype), Synth(dev, config, params.get("reverb.ir"), seed)


def stage_flops(config=None) -> dict:
    """Floating-point operations per second of audio of each stage (a multiply-add
    counts 2; a real FFT of n points 2.5 n log2 n; transcendental functions 1):

    decoder    the matrix products (layer norms, activations and the GRU's gates add
               < 1 %)
    harmonic   ~30 operations per harmonic and sample in kernels/harmonic.wgsl (phase 3,
               quarter-wave fold 6, degree-11 sine polynomial 14, amplitude 3, sum 2,
               Nyquist test 2); harmonics above Nyquist are skipped, so this is the
               worst case of all K below Nyquist
    noise      per frame: inverse FFT of the FIR, two forward FFTs (noise, FIR), the
               spectral product, the inverse FFT and the overlap-add
    reverb     per partition of R samples: forward and inverse FFT of 2R points and the
               complex multiply-accumulate of (R + 1) bins over the P partitions
    """
    c = config or Config()
    rfft = lambda n: 2.5 * n * math.log2(n)  # noqa: E731
    frames = c.sample_rate / c.hop
    ch, H = c.ch, c.gru
    macs = (2 * (ch + (c.layers - 1) * ch * ch) + 3 * H * (2 * ch + H)
            + ch * (2 * ch + H) + (c.layers - 1) * ch * ch + ch * c.n_out)
    L, nfft = c.ir_size, c.noise_nfft
    noise = rfft(L) + 3 * rfft(nfft) + 6 * (nfft // 2 + 1) + nfft
    R = c.reverb_block
    parts = -(-c.reverb_length // R)
    reverb = (2 * rfft(2 * R) + 8 * (R + 1) * parts + 2 * R) * c.sample_rate / R if parts else 0.0
    return {"decoder": 2 * macs * frames, "harmonic": 30.0 * c.n_harmonics * c.sample_rate,
            "noise": noise * frames, "reverb": reverb}


def random_params(config=None, seed=0):
    """Random weights of the decoder and reverb as safetensors Entries (PyTorch's default
    initialization: uniform(+-1/sqrt(fan_in)); layer norms 1 and 0; a decaying-noise
    impulse response), for benchmarks and smoke tests without a trained model."""
    import random

    from ..weights.safetensors import Entry

    c = (config or Config()).check()
    r = random.Random(seed)

    def entry(shape, fill=None, bound=0.0):
        n = 1
        for s in shape:
            n *= s
        vals = [fill] * n if fill is not None else [r.uniform(-bound, bound) for _ in range(n)]
        return Entry("f32", tuple(shape), memoryview(array.array("f", vals).tobytes()))

    params = {}

    def linear(name, n_in, n_out):
        params[f"{name}.weight"] = entry((n_out, n_in), bound=1 / math.sqrt(n_in))
        params[f"{name}.bias"] = entry((n_out,), bound=1 / math.sqrt(n_in))

    for stack, n_in in (("ld_stack", 1), ("f0_stack", 1), ("out_stack", 2 * c.ch + c.gru)):
        for i in range(c.layers):
            linear(f"{stack}.{i}.dense", n_in if i == 0 else c.ch, c.ch)
            params[f"{stack}.{i}.norm.weight"] = entry((c.ch,), 1.0)
            params[f"{stack}.{i}.norm.bias"] = entry((c.ch,), 0.0)
    H = c.gru
    for name, shape in (("weight_ih_l0", (3 * H, 2 * c.ch)), ("weight_hh_l0", (3 * H, H)),
                        ("bias_ih_l0", (3 * H,)), ("bias_hh_l0", (3 * H,))):
        params[f"gru.{name}"] = entry(shape, bound=1 / math.sqrt(H))
    linear("dense_out", c.ch, c.n_out)
    if c.reverb_length:
        tau = 0.1 * c.sample_rate
        vals = [r.gauss(0, 0.01) * math.exp(-i / tau) for i in range(c.reverb_length)]
        params["reverb.ir"] = Entry("f32", (c.reverb_length,), memoryview(array.array("f", vals).tobytes()))
    return params


def benchmark(dev, seconds=10.0, block_frames=16, config=None, repeat=2):
    """Real-time factors (compute seconds per second of audio, best of `repeat`) of the
    decoder and the synthesizer with random weights, offline (one call over `seconds`)
    and streaming (blocks of `block_frames` frames, waiting for the GPU after each block
    as a live stream must), plus stage_flops. Native only (waits with read_sync)."""
    import time

    c = (config or Config()).check()
    params = random_params(c)
    decoder = Decoder(dev, params, c)
    synth = Synth(dev, c, params.get("reverb.ir"))
    F = int(seconds * c.sample_rate / c.hop) // block_frames * block_frames
    seconds = F * c.hop / c.sample_rate
    frame_rate = c.sample_rate / c.hop
    f0 = [220.0 * 2 ** (math.sin(2 * math.pi * 5 * f / frame_rate) / 12) for f in range(F)]
    ld = [-30.0 + 10 * math.sin(2 * math.pi * 0.5 * f / frame_rate) for f in range(F)]
    probe = dev.tensor([0.0])

    def wait():
        dev.read_sync(probe)

    def timed(fn):
        best = float("inf")
        for _ in range(repeat):
            wait()
            t0 = time.perf_counter()
            fn()
            wait()
            best = min(best, time.perf_counter() - t0)
        return best / seconds

    f0_t, ld_t = dev.tensor(f0, (F,)), dev.tensor(ld, (F,))
    controls, _ = decoder(f0_t, ld_t)  # compile and autotune before timing
    synth.render(controls)
    B = block_frames
    blocks = [(dev.tensor(f0[a:a + B], (B,)), dev.tensor(ld[a:a + B], (B,))) for a in range(0, F, B)]
    block_controls, h = [], None
    for f, l in blocks:
        ctrl, h = decoder(f, l, h)
        block_controls.append(ctrl)

    def stream_decoder():
        h = None
        for f, l in blocks:
            _, h = decoder(f, l, h)
            wait()

    def stream_synth():
        state = None
        for ctrl in block_controls:
            _, state = synth.render(ctrl, state)
            wait()

    return {
        "seconds": seconds, "block_frames": block_frames, "device": dev.describe(),
        "rtf": {"decoder_offline": timed(lambda: decoder(f0_t, ld_t)),
                "synth_offline": timed(lambda: synth.render(controls)),
                "decoder_stream": timed(stream_decoder), "synth_stream": timed(stream_synth)},
        "flops_per_second": stage_flops(c),
    }
