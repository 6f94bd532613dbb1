"""Training checkpoints as bytes, without numpy: how the learn page (site/learn-worker.py)
saves, offers for download, loads again and recovers after a lost GPU device. The layout
is the CLI's (`stemtone learn` writes the same safetensors file with numpy).

    data = await to_bytes(trainer)                   weights, Adam moments, epoch count
    model = load_model(dev, data)                    the model alone (to generate)
    trainer = load_trainer(dev, data, frames_host)   continues where `data` was saved

frames_host: the clip's normalized frames (flat floats), as Trainer takes them.
"""

from __future__ import annotations

from ..models.magnet import MagNet
from ..weights import safetensors
from .train import Trainer


async def to_bytes(trainer) -> bytes:
    """The trainer's state as a safetensors file (one readback per tensor)."""
    tensors, metadata = trainer.checkpoint()
    host = {}
    for name, t in tensors.items():
        values = await t.read()  # numpy natively, array('f') in the browser: both expose their bytes
        host[name] = (t.dtype, t.shape, memoryview(values).cast("B"))
    return safetensors.dumps(host, metadata, "the model file")


def _open(dev, data):
    try:
        entries, metadata = safetensors.load(data), safetensors.load_metadata(data)
    except ValueError as e:
        raise ValueError(f"this is not a model file saved by Stemtone ({e})") from None
    if metadata.get("model") != "magnet":
        raise ValueError("this safetensors file is not a learned sound (its metadata has no model=magnet); "
                         "load a file downloaded from this page or written by `stemtone learn`")
    return MagNet.load(dev, entries, metadata), entries, metadata


def load_model(dev, data) -> MagNet:
    return _open(dev, data)[0]


def load_trainer(dev, data, frames_host, lr=1e-3) -> Trainer:
    model, entries, metadata = _open(dev, data)
    trainer = Trainer(model, frames_host, lr=lr)
    trainer.restore({k: dev.tensor(e.data, e.shape) for k, e in entries.items() if k.startswith("adam.")},
                    metadata)
    return trainer
