"""DDSP decoder and synthesizer (pycore/models/ddsp.py, pycore/ops/ddsp.py) against
the numpy float64 reference of ddsp's math (pycore/reference/ddsp_numpy.py) and the
PyTorch training module (pycore/train/ddsp_torch.py).

Error budgets (float32): the phase increment is carried as two float32 lines equal to
f0 / sr within ~1e-11, each summed exactly in fixed point and rounded once to float32
(<= 2 * 2^-25 cycles, times k for harmonic k: <= 4e-6 cycles at k = 60); the sine
polynomial errs by ~1e-7, amplitudes and sums by a few float32 ulps: the harmonic part
should sit ~120 dB above its error; the FFT convolutions err by ~1e-7 relative.
So "same math" comparisons demand 100 dB, far below what a wrong detail (a sample of
misalignment, a wrong window, a dropped harmonic) produces (< 40 dB).
"""

import asyncio

import numpy as np
import pytest

from pycore.models.ddsp import Config, Decoder, Synth, load
from pycore.ops import ddsp as ops
from pycore.reference import ddsp_numpy as ref
from pycore.weights.safetensors import load as load_st
from pycore.gpu.selfcheck import CHECKS

K, M = 60, 65


def sdr(got, want):
    err = np.sum((np.asarray(got, np.float64) - want) ** 2)
    return 10 * np.log10(np.sum(np.asarray(want, np.float64) ** 2) / max(err, 1e-300))


def controls(rng, F, f0, amp=(0.1, 1.0), noise=0.05, k=K, m=M):
    """Random packed controls [F, 2 + k + m] (float32) with the given f0 track."""
    return np.concatenate([np.asarray(f0, np.float64).reshape(F, 1), rng.uniform(*amp, (F, 1)),
                           rng.uniform(0, 1, (F, k)), rng.uniform(0, noise, (F, m))], 1).astype(np.float32)


def vibrato(F, base=220.0, depth=1.0, rate=5.0, frame_rate=250.0):
    """f0 [F] in Hz: base with a sinusoidal vibrato of `depth` semitones at `rate` Hz."""
    return base * 2 ** (depth / 12 * np.sin(2 * np.pi * rate * np.arange(F) / frame_rate))


def decaying_ir(rng, n, tau=0.05, sr=16000):
    return (rng.standard_normal(n) * np.exp(-np.arange(n) / (tau * sr)) * 0.05).astype(np.float32)


def render(dev, synth, ctrl, blocks=None):
    """Audio of controls [F, C] rendered in one call, or in blocks of the given frame counts."""
    if blocks is None:
        return synth.render(dev.tensor(ctrl))[0].numpy().astype(np.float64)
    out, state, at = [], None, 0
    for n in blocks:
        audio, state = synth.render(dev.tensor(ctrl[at:at + n]), state)
        out.append(audio.numpy())
        at += n
    assert at == len(ctrl)
    return np.concatenate(out).astype(np.float64)


@pytest.mark.parametrize("name", ["ddsp_harmonic", "ddsp_noise", "fftconv", "ddsp_decoder_io"])
def test_selfchecks(dev, name):
    asyncio.run(CHECKS[name](dev))


# --------------------------------------------------------------------------- synthesizer


def test_harmonic_matches_reference(dev, rng):
    # 0.6 s: vibrato, f0 sweeping through 300..2700 Hz so that harmonics cross Nyquist
    # within frames (frame-level and sample-level removal), no noise, no reverb
    F = 150
    f0 = np.concatenate([vibrato(75, 330.0, 2.0), np.linspace(300, 2700, 75)])
    ctrl = controls(rng, F, f0, noise=0.0)
    got = render(dev, Synth(dev, Config()), ctrl)
    want = ref.gpu_aligned(ctrl, K)
    assert sdr(got, want) > 100, sdr(got, want)


def test_noise_is_the_reference_hash(dev):
    # bit-exact: integer hashing and one exact int -> float conversion
    start, F, hop = 2**32 - 100, 4, 64            # the index crosses 32 bits
    for seed in (0, 12345):
        frames = ops.noise_frames(dev.tensor(np.zeros((F, 128), np.float32)), hop, 256, start, seed)
        got = frames.numpy().reshape(2, F, 256)[0, :, :hop].ravel()
        np.testing.assert_array_equal(got, ref.white_noise(start, F * hop, seed).astype(np.float32))
    a, b = ref.white_noise(0, 4096, 0), ref.white_noise(0, 4096, 1)
    assert abs(a.mean()) < 0.05 and abs(np.var(a) - 1 / 3) < 0.02 and abs(np.corrcoef(a, b)[0, 1]) < 0.05


def test_filtered_noise_matches_reference(dev, rng):
    F = 40
    ctrl = controls(rng, F, np.full(F, 200.0), amp=(0.0, 0.0), noise=0.3)
    for seed in (0, 3):
        got = render(dev, Synth(dev, Config(), seed=seed), ctrl)
        want = ref.gpu_aligned(ctrl, K, seed=seed)
        assert sdr(got, want) > 100, sdr(got, want)


def test_reverb_matches_reference(dev, rng):
    F = 125                                            # 0.5 s
    ctrl = controls(rng, F, vibrato(F))
    for n_ir in (1000, 48000):                         # 1000: not a multiple of R = 64
        ir = decaying_ir(rng, n_ir)
        got = render(dev, Synth(dev, Config(), reverb_ir=ir), ctrl)
        want = ref.gpu_aligned(ctrl, K, ir=ir)
        assert sdr(got, want) > 100, (n_ir, sdr(got, want))


def test_streaming_equals_offline(dev, rng):
    F = 160
    ctrl = controls(rng, F, vibrato(F, 440.0, 3.0))
    ir = decaying_ir(rng, 5000)
    synth = Synth(dev, Config(), reverb_ir=ir, seed=9)
    offline = render(dev, synth, ctrl)
    blocks = [1, 2, 16, 5, 64, 3, 1, 40, 28]
    stream = render(dev, synth, ctrl, blocks)
    assert sdr(stream, offline) > 100, sdr(stream, offline)
    want = ref.gpu_aligned(ctrl, K, seed=9, ir=ir)
    assert sdr(stream, want) > 100
    # no click at block boundaries: the error there is like anywhere else
    bounds = np.cumsum(blocks)[:-1] * 64
    err = np.abs(stream - want)
    jump = np.abs(np.diff(stream)[bounds - 1] - np.diff(want)[bounds - 1])
    assert jump.max() <= 4 * err.max() + 1e-7
    assert err.max() < 1e-5 * np.abs(want).max()


def test_reverb_block_option(dev, rng):
    # partitions of 16 frames: same output when every block is a multiple of 16 frames
    F = 64
    ctrl = controls(rng, F, vibrato(F))
    ir = decaying_ir(rng, 3000)
    want = ref.gpu_aligned(ctrl, K, ir=ir)
    synth = Synth(dev, Config(), reverb_ir=ir, reverb_block=1024)
    assert sdr(render(dev, synth, ctrl, [16, 32, 16]), want) > 100
    with pytest.raises(ValueError, match="ddsp.Synth"):
        synth.render(dev.tensor(ctrl[:8]))


def test_long_run_phase_48k(dev):
    # 60 s at 48 kHz (hop 192, 250 frames/s), streamed in 5 s blocks, vibrato around
    # 440 Hz; only harmonic 8 sounds, so the output is sin(2 pi frac(8 phase)) and its
    # error bounds the phase error: |dy| <= 2 pi |d phase|. The reference is the ideal
    # float64 oscillator. Expected ~5e-6 cycles (8 x the float32 roundings of the phase
    # and of the interpolated f0); with float32 increments alone it would be ~2e-3.
    cfg = Config(sample_rate=48000, hop=192, n_harmonics=8)
    F = 60 * 250
    f0 = vibrato(F, 440.0, 1.0, 5.0)
    ctrl = np.zeros((F, cfg.width), np.float32)
    ctrl[:, 0], ctrl[:, 1], ctrl[:, 2 + 7] = f0, 1.0, 1.0
    got = render(dev, Synth(dev, cfg), ctrl, [1250] * 12)
    padded = np.concatenate([np.zeros((1, cfg.width)), ctrl])
    want = ref.harmonic(padded[:, 0], padded[:, 1], padded[:, 2:10], 48000, 192)[:F * 192]
    phase_err = np.abs(got - want).max() / (2 * np.pi)
    assert phase_err < 5e-5, phase_err


def test_silence_and_out_of_range(dev, rng):
    cfg = Config()
    F = 30
    synth = Synth(dev, cfg, reverb_ir=decaying_ir(rng, 2000))
    # silence in, exact silence out
    zero = np.zeros((F, cfg.width), np.float32)
    zero[:, 0] = 220.0
    np.testing.assert_array_equal(render(dev, synth, zero), 0.0)
    # f0 at or above Nyquist: every harmonic removed (no aliasing), only the noise remains
    high = controls(rng, F, np.full(F, 9000.0), noise=0.0)
    np.testing.assert_array_equal(render(dev, Synth(dev, cfg), high), 0.0)
    # f0 3 kHz: harmonics 1 and 2 only, carrying the whole amplitude (renormalized)
    mid = controls(rng, F, np.full(F, 3000.0), amp=(0.5, 0.5), noise=0.0)
    mid[:, 2:] = mid[0, 2:]                          # steady: no amplitude modulation
    y = render(dev, Synth(dev, cfg), mid)[128:]
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / 16000)
    assert spec[freqs > 6500].max() < 1e-4 * spec.max()
    assert np.abs(y).max() <= 0.5 + 1e-6
    # garbage controls: NaN / inf / negative count as 0, never NaN or a blast
    bad = controls(rng, F, np.full(F, 440.0))
    bad[3, 0], bad[4, 0], bad[5, 1], bad[6, 10], bad[7, 2 + K + 3] = np.nan, np.inf, -1.0, np.nan, np.inf
    bad[8, 0] = 1e30
    y = render(dev, synth, bad)
    assert np.isfinite(y).all() and np.abs(y).max() < 10


# --------------------------------------------------------------------------- decoder, torch


@pytest.fixture(scope="module")
def torch_model(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from pycore.train.ddsp_torch import DDSP, save

    torch.manual_seed(0)
    model = DDSP(Config(reverb_length=2000)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():   # non-trivial norms and a real reverb
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
        model.reverb.ir.copy_(torch.randn(2000) * torch.exp(-torch.arange(2000) / 400.0) * 0.05)
    path = str(tmp_path_factory.mktemp("ddsp") / "model.safetensors")
    save(model, path)
    return model, path


def _inputs(rng, F):
    f0 = vibrato(F, 300.0, 12.0, 2.0).astype(np.float32)
    f0[5:9] = 0.0                                   # unvoiced frames
    ld = rng.uniform(-80, -5, F).astype(np.float32)
    return f0, ld


def test_decoder_matches_torch(dev, rng, torch_model):
    # float32 dot products of <= 768 terms (~sqrt(768) * 6e-8 relative), layer norms and
    # exp_sigmoid: atol 1e-5 on controls in [0, 2]
    import torch

    model, path = torch_model
    config, decoder, _ = load(dev, path)
    assert config == model.config
    F = 45
    f0, ld = _inputs(rng, F)
    with torch.no_grad():
        want, h = model(torch.tensor(f0)[None], torch.tensor(ld)[None])
    got, state = decoder(dev.tensor(f0), dev.tensor(ld))
    np.testing.assert_allclose(got.numpy(), want[0].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state.numpy(), h[0].numpy(), rtol=1e-4, atol=1e-5)
    # streaming: the GRU state carries over, the per-frame layers do not care
    parts, state, at = [], None, 0
    for n in (1, 7, 16, 21):
        c, state = decoder(dev.tensor(f0[at:at + n]), dev.tensor(ld[at:at + n]), state)
        parts.append(c.numpy())
        at += n
    np.testing.assert_allclose(np.concatenate(parts), got.numpy(), rtol=1e-5, atol=1e-6)


def test_decoder_f16_weights(dev, rng, torch_model):
    # half-float storage, float32 arithmetic: the same as torch on f16-rounded weights
    import torch

    model, path = torch_model
    params = load_st(path)
    decoder = Decoder(dev, params, model.config, dtype="f16")
    rounded = type(model)(model.config).eval()
    state = {k: (v.half().float() if dev.has_f16 and "norm" not in k and "bias" not in k else v)
             for k, v in model.state_dict().items()}
    rounded.load_state_dict(state)
    f0, ld = _inputs(rng, 20)
    with torch.no_grad():
        want, _ = rounded(torch.tensor(f0)[None], torch.tensor(ld)[None])
    got, _ = decoder(dev.tensor(f0), dev.tensor(ld))
    np.testing.assert_allclose(got.numpy(), want[0].numpy(), rtol=1e-4, atol=1e-5)


def test_torch_synth_matches_reference_and_gpu(dev, rng, torch_model):
    # the training synthesizer = the numpy reference = the GPU one delayed by one hop
    import torch

    model, path = torch_model
    F = 60
    ctrl = controls(rng, F, np.linspace(150, 1500, F))
    ir = model.reverb.ir.detach().numpy()
    noise = ref.white_noise(0, F * 64)
    with torch.no_grad():
        got = model.synthesize(torch.tensor(ctrl)[None], torch.tensor(noise, dtype=torch.float32)[None])[0]
    want = ref.synthesize(ctrl, K, noise=noise, ir=ir)
    assert sdr(got.numpy(), want) > 100, sdr(got.numpy(), want)
    # GPU: render [c_0 .. c_{F-1}] = torch on [zero frame, c_0 ..] with the hash noise
    _, _, synth = load(dev, path)
    gpu = render(dev, synth, ctrl)
    padded = np.concatenate([np.zeros((1, ctrl.shape[1]), np.float32), ctrl])
    pnoise = np.concatenate([np.zeros(64), noise])
    with torch.no_grad():
        tgt = model.synthesize(torch.tensor(padded)[None], torch.tensor(pnoise, dtype=torch.float32)[None])
    assert sdr(gpu, tgt[0, :F * 64].double().numpy()) > 100


def test_decoder_silence_and_garbage(dev, torch_model):
    _, path = torch_model
    _, decoder, synth = load(dev, path)
    F = 12
    f0 = np.array([0, 0, 1e5, np.nan, np.inf, -5, 440, 440, 0, 0, 0, 0], np.float32)
    ld = np.array([-80, -np.inf, np.nan, -80, -80, -80, -20, -20, 0, -200, -80, -80], np.float32)
    ctrl, _ = decoder(dev.tensor(f0), dev.tensor(ld))
    c = ctrl.numpy()
    assert np.isfinite(c).all() and (c >= 0).all() and c[:, 1:].max() <= 2 + 1e-6
    audio, _ = synth.render(ctrl)
    y = audio.numpy()
    assert np.isfinite(y).all() and np.abs(y).max() < 10


# --------------------------------------------------------------------------- validation


def test_bad_inputs_raise(dev):
    cfg = Config()
    synth = Synth(dev, cfg)

    def zeros(*shape, dtype="f32"):
        return dev.tensor(np.zeros(shape, np.float32), dtype=dtype)

    good = zeros(4, cfg.width)
    with pytest.raises(ValueError, match="ddsp.Synth"):
        synth.render(zeros(4, cfg.width - 1))
    with pytest.raises(ValueError, match="ddsp.Synth"):
        synth.render(zeros(4, cfg.width, dtype="i32"))
    with pytest.raises(ValueError, match="ddsp.Config"):
        Config(n_noise=129).check()                    # FIR group delay > one hop of 64
    with pytest.raises(ValueError, match="ddsp.Config"):
        Config(sample_rate=65537).check()              # odd part too big for exact increments
    with pytest.raises(ValueError, match="harmonic_rows"):
        ops.harmonic_rows(good, zeros(3), K, 16000)
    with pytest.raises(ValueError, match="harmonic_bank"):
        ops.harmonic_bank(zeros(3, 61), zeros(100), 64, 16000)
    with pytest.raises(ValueError, match="harmonic_increments"):
        ops.harmonic_increments(zeros(3, 61), 64, 16000.5)
    with pytest.raises(ValueError, match="noise_frames"):
        ops.noise_frames(zeros(2, 128), 64, 128, 0)
    with pytest.raises(ValueError, match="spectral_mac"):
        ops.spectral_mac(zeros(5, 3, 2), zeros(4, 3, 2))
    with pytest.raises(ValueError, match="spectral_mac"):
        ops.spectral_mac(zeros(5, 3, 2), zeros(5, 4, 2), parts=4)
    with pytest.raises(ValueError, match="ola_carry"):
        ops.ola_carry(zeros(8), zeros(2), 0, 0)
    with pytest.raises(ValueError, match="decoder_head"):
        ops.decoder_head(zeros(3, 10), zeros(3), K, M)
    with pytest.raises(ValueError, match="decoder_inputs"):
        ops.decoder_inputs(zeros(3), zeros(4))
    with pytest.raises(ValueError, match="ddsp.Decoder"):
        Decoder(dev, {}, cfg)
