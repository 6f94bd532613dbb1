"""Channel arrays on the host: what the streaming pipelines (demixing, tone transfer)
keep between GPU passes. Browser-safe: numpy is imported only where the caller's data
already is numpy.

A channel is array('f') inside the pipelines (C-speed slicing and appending, and no numpy
in the browser); natively callers give and get numpy float32 arrays, so outputs are
converted back to the type of the last input (`to_caller`)."""

from __future__ import annotations

import array


def is_numpy(x) -> bool:
    """Whether x is a numpy array (without importing numpy)."""
    return type(x).__module__.split(".")[0] == "numpy"


def as_f32(x) -> array.array:
    """One channel as array('f') (no copy if it already is one)."""
    if isinstance(x, array.array) and x.typecode == "f":
        return x
    if is_numpy(x):
        import numpy as np

        if x.ndim != 1:
            raise ValueError(f"a channel must be 1-D, got shape {x.shape}")
        a = array.array("f")
        a.frombytes(np.ascontiguousarray(x, dtype=np.float32).tobytes())
        return a
    return array.array("f", x)


def flat_f32(host) -> array.array:
    """A GPU readback (numpy natively, array('f') in the browser) as a flat array('f')."""
    if isinstance(host, array.array):
        return host
    a = array.array("f")
    a.frombytes(host.tobytes())
    return a


def to_caller(a: array.array, numpy_kind: bool):
    """array('f') back to the caller's type: a float32 numpy view natively, as is otherwise."""
    if numpy_kind:
        import numpy as np

        return np.frombuffer(a, dtype=np.float32)
    return a


def concat(parts, numpy_kind: bool):
    """Pieces of one channel joined, in the caller's type."""
    if numpy_kind:
        import numpy as np

        return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)
    out = array.array("f")
    for p in parts:
        out.extend(p)
    return out
