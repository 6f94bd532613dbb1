"""Native file jobs behind `stemtone learn` and `stemtone generate`.

    learn_file(path, out, epochs=200, resume=False, config=None, on_epoch=None, input_noise=1.0,
               feedback=FEEDBACK, vary=False) -> final loss
    generate_file(model_path, out, seconds=30, seed=0, temperature=1.0) -> seconds written

learn: any format soundfile reads, mixed to mono and resampled to the model's rate; the
model, the Adam moments and the epoch count are saved to `out` (safetensors) after every
epoch, so a stopped run resumes with --resume where it was. generate: writes a mono WAV.
"""

from __future__ import annotations

import asyncio
import os

import numpy as np
import soundfile as sf

from ..audio.resample import resample
from ..gpu.native import get_device
from ..models.magnet import DEFAULTS, MagNet
from ..weights import safetensors
from .clip import clip_frames
from .generate import Generator
from .train import FEEDBACK, Trainer


def read_mono(path, rate):
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    return resample(x, sr, rate) if sr != rate else x


def save(path, tensors, metadata):
    host = {k: np.asarray(t.numpy(), np.float32) for k, t in tensors.items()}
    safetensors.save(path, host, metadata)


def open_model(dev, path):
    entries, meta = safetensors.load(str(path)), safetensors.load_metadata(str(path))
    return MagNet.load(dev, entries, meta), entries, meta


async def learn(path, out, epochs=200, resume=False, config=None, lr=1e-3, on_epoch=None, seed=0, input_noise=1.0,
                feedback=FEEDBACK, vary=False):
    dev = get_device()
    if resume:
        if not os.path.exists(out):
            raise ValueError(f"--resume: {out} does not exist; run without --resume to start training")
        model, entries, meta = open_model(dev, out)
    else:
        model = MagNet.create(dev, {**DEFAULTS, **(config or {})}, seed)
    x = read_mono(path, model.config["sample_rate"])
    # a resumed model keeps the normalization its weights were trained on
    z, model.mean, model.std = await clip_frames(dev, x, model.config, (model.mean, model.std) if resume else None)
    trainer = Trainer(model, z.numpy().ravel(), lr=lr, input_noise=input_noise, feedback=feedback, vary=vary)
    if resume:
        trainer.restore({k: dev.tensor(e.data, e.shape) for k, e in entries.items() if k.startswith("adam.")},
                        meta)
    loss = None
    while trainer.epochs_done < epochs:
        loss = await trainer.epoch()
        save(out, *trainer.checkpoint())
        if on_epoch:
            on_epoch(trainer.epochs_done, loss)
    trainer.release()   # its recorded step's GPU memory (a later epoch records it again)
    return loss, trainer


def learn_file(path, out, epochs=200, resume=False, config=None, lr=1e-3, on_epoch=None, input_noise=1.0,
               feedback=FEEDBACK, vary=False):
    return asyncio.run(learn(path, out, epochs, resume, config, lr, on_epoch, input_noise=input_noise,
                             feedback=feedback, vary=vary))[0]


async def generate(model_path, out, seconds=30.0, seed=0, temperature=1.0, prime_from=None, on_block=None):
    dev = get_device()
    model, _, _ = open_model(dev, model_path)
    prime = None
    if prime_from is not None:  # seed the sequence with the clip's first frames
        from ..ops.spectral import stft
        from ..ops.spectrogram import logmag
        x = read_mono(prime_from, model.config["sample_rate"])
        z = logmag(stft(dev.tensor(x), model.config["n_fft"], model.config["hop"]), model.mean, model.std)
        prime = list(z.numpy()[:model.config["seq_len"]].ravel())
    gen = Generator(model, seed=seed, temperature=temperature, prime=prime)
    blocks = []
    async for b in gen.blocks(seconds):
        blocks.append(np.frombuffer(b, np.float32))
        if on_block:
            on_block(sum(len(v) for v in blocks))
    y = np.concatenate(blocks)
    peak = float(np.abs(y).max()) if len(y) else 0.0
    if peak > 0.99:  # Griffin-Lim can overshoot the clip's peak: scale, never clip
        y = y * (0.99 / peak)
    sf.write(str(out), y, model.config["sample_rate"], subtype="FLOAT")
    return len(y) / model.config["sample_rate"]
