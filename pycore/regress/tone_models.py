"""The tone models' parts in the regression suite (family "parity"): CREPE-tiny against
torchcrepe 0.0.24 itself and against a tone of known f0, and the DDSP decoder and
synthesizer against the PyTorch DDSP (pycore.train.ddsp_torch) with the same weights.

    crepe_metrics(dev, clip, seconds, tone_seconds)
        parity/crepe-tiny/activations   SDR of our network's output against torchcrepe's
                                        on real singing (dB, higher; float32 level ~100 dB)
        parity/crepe-tiny/f0            mean |f0 ours - f0 torchcrepe| in cents over the
                                        frames torchcrepe calls voiced (periodicity > 0.5),
                                        both with the weighted_argmax decoder (lower)
        parity/crepe-tiny/known_f0      median |f0 ours - the true f0| in cents on a
                                        synthesized vibrato tone (lower; an independent
                                        reference: the tone's f0 is known exactly)
    ddsp_metrics(dev, instrument, seconds)
        parity/ddsp-<instrument>/decoder  SDR of our controls against the PyTorch decoder's
                                          on a vibrato f0 with an unvoiced
                                          gap and swelling loudness (dB, higher)
        parity/ddsp-<instrument>/synth    SDR of our synthesizer's audio against PyTorch's
                                          from the same controls and noise (dB, higher)

Tolerances: 3 dB for SDRs (as the demixing models' parity: a kernel or weight change drops
them by tens of dB); 1 cent for the f0 figures (float32 noise moves them by < 0.01 cents;
one octave error among 250 voiced frames adds 4.8).
"""

from __future__ import annotations

import numpy as np

from .metrics import metric
from .models import PARITY_TOL_DB, sdr

CENTS_TOL = 1.0
VOICED = 0.5
FMIN, FMAX = 50.0, 2006.0


def cents_between(a, b):
    return 1200 * np.abs(np.log2(np.asarray(a, np.float64) / np.asarray(b, np.float64)))


def known_f0_tone(seconds, sample_rate=16000):
    """(audio float32, f0 Hz per sample): 220 Hz with a 1-semitone, 5 Hz vibrato and
    five harmonics of falling amplitude."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 220.0 * 2 ** (np.sin(2 * np.pi * 5.0 * t) / 12)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    return (0.3 * sum(np.sin(k * phase) / k for k in range(1, 6))).astype(np.float32), f0


def crepe_metrics(dev, clip=14, seconds=2.0, tone_seconds=1.0, log=print) -> list:
    import torch

    from ..audio.testdata import vocadito
    from ..ops.pitch import PITCH_BINS, crepe_decode, crepe_frames
    from ..reference import torchcrepe_pkg
    from ..tone.features import HOP, SAMPLE_RATE, load_crepe

    log(f"crepe-tiny: against torchcrepe on vocadito_{clip} ({seconds:g} s) and on a tone of known f0")
    torchcrepe = torchcrepe_pkg.load()
    crepe = load_crepe(dev, "crepe-tiny")

    def ours(x):
        act = crepe(crepe_frames(dev.tensor(x), HOP))
        return act.numpy(), crepe_decode(act, FMIN, FMAX, "weighted_argmax").numpy()[:, 0]

    x = vocadito(clip, seconds=seconds, offset=1.0)
    with torch.no_grad():
        frames = next(torchcrepe.preprocess(torch.from_numpy(x)[None], SAMPLE_RATE, HOP))
        act_ref = torchcrepe.infer(frames, "tiny")
        probabilities = act_ref.reshape(1, -1, PITCH_BINS).transpose(1, 2).clone()
        f0_ref, periodicity = torchcrepe.postprocess(probabilities, FMIN, FMAX, torchcrepe.decode.weighted_argmax,
                                                     return_periodicity=True)
    act, f0 = ours(x)
    voiced = periodicity[0].numpy() > VOICED
    tone, f0_true = known_f0_tone(tone_seconds)
    _, f0_tone = ours(tone)
    centres = np.arange(len(f0_tone)) * HOP
    inside = (centres >= 512) & (centres < len(tone) - 512)       # frames wholly inside the tone
    return [
        metric("parity/crepe-tiny/activations", "parity", sdr(act_ref.numpy(), act), "dB", "higher",
               tol=PARITY_TOL_DB, note=f"SDR of our activations against torchcrepe 0.0.24's, vocadito_{clip}"),
        metric("parity/crepe-tiny/f0", "parity", float(np.mean(cents_between(f0[voiced], f0_ref[0].numpy()[voiced]))),
               "cents", "lower", tol=CENTS_TOL,
               note=f"mean over {int(voiced.sum())} voiced frames against torchcrepe (weighted_argmax)"),
        metric("parity/crepe-tiny/known_f0", "parity",
               float(np.median(cents_between(f0_tone[inside], f0_true[centres[inside]]))), "cents", "lower",
               tol=CENTS_TOL, note="median against the true f0 of a synthesized vibrato tone"),
    ]


def ddsp_inputs(seconds, frame_rate=250):
    """(f0 Hz, loudness dB) per frame, float32: the known tone's vibrato f0 with an
    unvoiced gap (f0 0) in the middle, loudness swelling -80 -> -10 dB and back twice."""
    n = int(seconds * frame_rate)
    f0 = 220.0 * 2 ** (np.sin(2 * np.pi * 5.0 * np.arange(n) / frame_rate) / 12)
    f0[n // 2 - 10:n // 2 + 10] = 0.0
    loudness = -80.0 + 70.0 * np.sin(np.pi * 2 * np.arange(n) / n) ** 2
    return f0.astype(np.float32), loudness.astype(np.float32)


def ddsp_metrics(dev, instrument="violin", seconds=2.0, log=print) -> list:
    import torch

    from ..models import ddsp
    from ..reference.ddsp_numpy import white_noise
    from ..train import ddsp_torch
    from ..weights import weights_path

    name = f"ddsp-{instrument}"
    log(f"{name}: decoder and synthesizer against the PyTorch DDSP ({seconds:g} s)")
    path = weights_path(name)
    config, decoder, synth = ddsp.load(dev, path)
    ref = ddsp_torch.load(path)
    f0, loudness = ddsp_inputs(seconds)
    with torch.no_grad():
        want, _ = ref(torch.from_numpy(f0)[None], torch.from_numpy(loudness)[None])
    want = want[0].numpy()
    got, _ = decoder(dev.tensor(f0), dev.tensor(loudness))
    # the synthesizer, both from the reference's controls: ours streams one hop later and
    # draws its noise from a hash (ddsp_numpy.white_noise), so PyTorch gets a zero frame
    # in front and the same noise (as tests/test_ddsp.py)
    audio = synth.render(dev.tensor(want))[0].numpy()
    hop = config.hop
    padded = np.concatenate([np.zeros((1, want.shape[1]), np.float32), want])
    noise = np.concatenate([np.zeros(hop), white_noise(0, len(want) * hop)]).astype(np.float32)
    with torch.no_grad():
        audio_ref = ref.synthesize(torch.from_numpy(padded)[None], torch.from_numpy(noise)[None])[0].numpy()
    return [
        metric(f"parity/{name}/decoder", "parity", sdr(want[:, 1:], got.numpy()[:, 1:]), "dB", "higher",
               tol=PARITY_TOL_DB, note="SDR of our controls (amplitude, harmonics, noise bands; f0 passes "
                                       "through) against the PyTorch decoder's"),
        metric(f"parity/{name}/synth", "parity", sdr(audio_ref[:len(audio)], audio), "dB", "higher",
               tol=PARITY_TOL_DB, note="SDR of our audio against PyTorch's from the same controls and noise"),
    ]
