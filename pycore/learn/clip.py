"""A training clip: mono audio at the model's rate -> normalized log-magnitude frames.

    frames, mean, std = clip_frames(dev, samples, config)   samples: mono floats at config rate
    clip_frames(dev, samples, config, norm=(mean, std))     a saved model's normalization (resume)
    check_clip(samples, sample_rate)                        ValueError naming the problem

Browser and native (no numpy): the STFT and the log run on the GPU; the mean and std
of the log-magnitudes are GPU reductions, read back as two numbers.
"""

from __future__ import annotations

from ..ops.reduce import mean as gpu_mean
from ..ops.reduce import std as gpu_std
from ..ops.spectral import stft
from ..ops.spectrogram import logmag

MIN_SECONDS = 2.0
MAX_SECONDS = 60.0
SILENCE = 1e-4  # peak below this (-80 dBFS) is silence


def check_clip(samples, sample_rate):
    seconds = len(samples) / sample_rate
    if seconds < MIN_SECONDS:
        raise ValueError(f"the clip is {seconds:.2f} s long: too short to learn from; "
                         f"give at least {MIN_SECONDS:g} s (5-20 s works best)")
    if seconds > MAX_SECONDS:
        raise ValueError(f"the clip is {seconds:.1f} s long: too long (training time grows with it); "
                         f"cut it to at most {MAX_SECONDS:g} s")
    peak = max(abs(min(samples)), abs(max(samples)))
    if peak < SILENCE:
        raise ValueError("the clip is silent (peak below -80 dBFS): there is no sound to learn")


async def clip_frames(dev, samples, config, norm=None):
    """(z [frames, F] on the GPU, mean, std) for mono `samples` at config's sample rate;
    norm=(mean, std) normalizes with those instead of the clip's own (a resumed model
    keeps the normalization its weights were trained on)."""
    check_clip(samples, config["sample_rate"])
    x = dev.tensor(samples, (len(samples),))
    X = stft(x, config["n_fft"], config["hop"])
    if norm is None:
        raw = logmag(X)
        norm = (float((await gpu_mean(raw).reshape(1).read())[0]), float((await gpu_std(raw).reshape(1).read())[0]))
    mean, std = norm
    return logmag(X, mean, std), mean, std
