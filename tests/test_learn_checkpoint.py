"""pycore.learn.checkpoint: the numpy-free checkpoint of the learn page. Its bytes are the
CLI's file (safetensors.save of the same state); a trainer restored from them continues
exactly as one that never stopped; files that are not learned sounds are refused by name."""

import asyncio

import numpy as np
import pytest

from pycore.learn import checkpoint
from pycore.learn.clip import clip_frames
from pycore.learn.files import save
from pycore.learn.train import Trainer
from pycore.models.magnet import MagNet
from pycore.weights import safetensors

CFG = {"sample_rate": 8000, "n_fft": 64, "hop": 16, "hidden": 16, "layers": 1, "seq_len": 8, "batch": 4}


@pytest.fixture(scope="module")
def frames(dev):
    t = np.arange(8000 * 3) / 8000
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.02 * np.random.default_rng(0).standard_normal(len(t)))
    z, mean, std = asyncio.run(clip_frames(dev, x.astype(np.float32), CFG))
    return z.numpy().ravel(), mean, std


def trainer(dev, frames):
    z, mean, std = frames
    return Trainer(MagNet.create(dev, CFG, seed=3, mean=mean, std=std), z)


def test_bytes_are_the_cli_file(dev, frames, tmp_path):
    tr = trainer(dev, frames)
    asyncio.run(tr.epoch())
    data = asyncio.run(checkpoint.to_bytes(tr))
    save(tmp_path / "cli.safetensors", *tr.checkpoint())
    assert data == (tmp_path / "cli.safetensors").read_bytes()


def test_restored_trainer_continues_exactly(dev, frames):
    straight = trainer(dev, frames)
    for _ in range(3):
        asyncio.run(straight.epoch())
    stopped = trainer(dev, frames)
    for _ in range(2):
        asyncio.run(stopped.epoch())
    resumed = checkpoint.load_trainer(dev, asyncio.run(checkpoint.to_bytes(stopped)), frames[0])
    assert resumed.epochs_done == 2
    asyncio.run(resumed.epoch())
    for k, p in straight.model.params.items():
        np.testing.assert_allclose(resumed.model.params[k].numpy(), p.numpy(), rtol=1e-6, atol=1e-7, err_msg=k)
    model = checkpoint.load_model(dev, asyncio.run(checkpoint.to_bytes(resumed)))
    assert (model.mean, model.std, model.config) == (straight.model.mean, straight.model.std, straight.model.config)


def test_other_files_are_refused(dev):
    other = safetensors.dumps({"w": ("f32", (1,), bytes(4))}, {"format": "pt"})
    with pytest.raises(ValueError, match="not a learned sound"):
        checkpoint.load_model(dev, other)
    with pytest.raises(ValueError, match="not a model file saved by Stemtone"):
        checkpoint.load_model(dev, b"hello, world")
