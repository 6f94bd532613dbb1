"""What the models share: safetensors Entries read on the host or uploaded to the GPU,
and the two layers that CREPE and Spleeter hold the same way.

    floats(entry)                       values as Python floats (small vectors)
    upload(dev, entry, dtype, shape)    a GPU tensor of dtype "f32" or "f16"
    Conv(dev, params, prefix, dtype)    "<prefix>.weight" and "<prefix>.bias" on the GPU
    BatchNorm(dev, params, prefix, eps) an inference BatchNorm folded into scale, shift

An Entry (pycore.weights.safetensors) holds little-endian "f32" or "f16" bytes. Browser-safe:
numpy is imported only inside _converted, natively, to convert large weights fast.
"""

from __future__ import annotations

import math
import struct


def floats(entry) -> list:
    """An Entry's values (f32 or f16) as Python floats."""
    n = len(entry.data) // (4 if entry.dtype == "f32" else 2)
    return list(struct.unpack(f"<{n}{'f' if entry.dtype == 'f32' else 'e'}", entry.data))


def _converted(entry, dtype) -> bytes:
    """An Entry's bytes converted to dtype ("f32" or "f16")."""
    if entry.dtype == dtype:
        return entry.data
    try:
        import numpy as np  # native: fast conversion
    except ImportError:
        return struct.pack(f"<{len(floats(entry))}{'e' if dtype == 'f16' else 'f'}", *floats(entry))
    src = {"f32": np.float32, "f16": np.float16}
    return np.frombuffer(entry.data, src[entry.dtype]).astype(src[dtype]).tobytes()


def upload(dev, entry, dtype="f32", shape=None):
    """An Entry as a GPU tensor stored as dtype ("f32" or "f16"; arithmetic on it stays
    float32), with the Entry's shape or `shape` (the same number of values)."""
    return dev.tensor(_converted(entry, dtype), entry.shape if shape is None else shape, dtype)


class Conv:
    """Weight and bias of one (transposed) convolution on the GPU, stored as dtype;
    `shape` is the weight's shape as in the checkpoint."""

    def __init__(self, dev, params, prefix, dtype):
        w, b = params[f"{prefix}.weight"], params[f"{prefix}.bias"]
        self.weight = upload(dev, w, dtype)
        self.bias = upload(dev, b, dtype)
        self.shape = tuple(w.shape)


class BatchNorm:
    """An inference BatchNorm ("<prefix>.weight", ".bias", ".running_mean",
    ".running_var") folded into y = x * scale + shift per channel, f32 tensors [C]:
    scale = gamma / sqrt(running_var + eps), shift = beta - running_mean * scale,
    computed in float64."""

    def __init__(self, dev, params, prefix, eps):
        gamma, beta, mean, var = (floats(params[f"{prefix}.{k}"])
                                  for k in ("weight", "bias", "running_mean", "running_var"))
        scale = [g / math.sqrt(v + eps) for g, v in zip(gamma, var)]
        shift = [b - m * s for b, m, s in zip(beta, mean, scale)]
        self.scale = dev.tensor(scale, (len(scale),))
        self.shift = dev.tensor(shift, (len(shift),))
