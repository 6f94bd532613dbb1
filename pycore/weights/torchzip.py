"""PyTorch checkpoints as numpy arrays: pycore.weights.checkpoint's reader, natively.

Native only (numpy). The bundled-weights converters (Spleeter, CREPE) read their torch
zips here; the reading itself, with every safety check, is pycore.weights.checkpoint's
`load_torch_zip` (the one reader, also used by `stemtone weights` and the page). This
module only turns its RawTensors into numpy arrays (contiguous, writable copies).
"""

from __future__ import annotations

import os

import numpy as np

from .checkpoint import RawTensor, load_torch_zip


def _numpy(obj):
    if isinstance(obj, RawTensor):
        if obj.numpy_dtype is None:
            raise ValueError(f"a {obj.kind} tensor has no numpy dtype")
        return np.frombuffer(obj.data, obj.numpy_dtype).reshape(obj.shape).copy()
    if isinstance(obj, dict):
        return type(obj)((k, _numpy(v)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_numpy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_numpy(v) for v in obj)
    return obj


def load(src, name=None):
    """Load a torch zip checkpoint from a path, bytes or binary file object: tensors and
    numpy arrays come back as numpy arrays; any problem is a ValueError naming the file."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        name, data = name or "<bytes>", bytes(src)
    elif hasattr(src, "read"):
        name, data = name or getattr(src, "name", "<file>"), src.read()
    else:
        name = name or os.fspath(src)
        with open(src, "rb") as f:
            data = f.read()
    return _numpy(load_torch_zip(data, name))
