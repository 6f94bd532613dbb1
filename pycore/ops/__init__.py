"""Ops: thin Python wrappers that validate shapes, then record WGSL dispatches.

Every op takes and returns `pycore.runtime.Tensor`s, checks shapes and dtypes first
(raising ValueError that names the op and the shapes, before anything reaches the
GPU), then records one or more dispatches with `dev.run`. Nothing here reads back.
"""

from __future__ import annotations


def expect(op: str, cond: bool, msg: str, *tensors) -> None:
    """Raise ValueError('op: msg (shapes ...)') unless cond holds."""
    if not cond:
        shapes = ", ".join(f"{t.shape} {t.dtype}" if hasattr(t, "shape") else repr(t) for t in tensors)
        raise ValueError(f"{op}: {msg}" + (f" (got {shapes})" if shapes else ""))


def expect_dtype(op: str, t, *dtypes) -> None:
    expect(op, t.dtype in dtypes, f"dtype must be one of {', '.join(dtypes)}", t)


def same_device(op: str, *tensors):
    devs = {id(t.dev) for t in tensors if t is not None}
    expect(op, len(devs) == 1, "tensors live on different devices", *[t for t in tensors if t is not None])
    return tensors[0].dev
