"""Ops: thin Python wrappers that validate shapes, then record WGSL dispatches.

Every op takes and returns `pycore.gpu.runtime.Tensor`s, checks shapes and dtypes first
(raising ValueError that names the op and the shapes, before anything reaches the
GPU), then records one or more dispatches with `dev.run`. Nothing here reads back.
"""

from __future__ import annotations

from ..gpu.runtime import Tensor


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


def expect_scale_shift(op: str, x, scale, shift, channels: int) -> None:
    """Validate an optional per-channel affine x * scale[c] + shift[c] (an inference
    BatchNorm folded into two vectors): both or neither, Tensors on x's device, shape
    (channels,), both f32 or both f16."""
    expect(op, (scale is None) == (shift is None), "give both scale and shift, or neither", x)
    if scale is None:
        return
    expect(op, isinstance(scale, Tensor) and isinstance(shift, Tensor), "scale and shift must be Tensors", x)
    same_device(op, x, scale, shift)
    expect(op, scale.shape == (channels,) and shift.shape == (channels,),
           f"scale and shift must have shape ({channels},)", x, scale, shift)
    expect(op, scale.dtype == shift.dtype and scale.dtype in ("f32", "f16"),
           "scale and shift must both be f32 or both f16", scale, shift)


# Loop budget. Mesa's lavapipe (the CPU Vulkan driver) silently ends the loops of a shader
# invocation once it has made LOOP_LIMIT loop passes in total (kernels/common.wgsl has
# the details). Ops whose kernels loop over an input-sized range split the work so that
# one invocation makes at most MAX_LOOP_STEPS passes per dispatch, or refuse the shape.
LOOP_LIMIT = 65535
MAX_LOOP_STEPS = 1 << 15


def expect_loop_steps(op: str, steps: int, what: str, *tensors) -> None:
    """Raise ValueError unless one invocation's loop passes (`steps`, counted with one
    extra pass per loop run) fit the per-invocation loop limit."""
    expect(op, steps <= LOOP_LIMIT,
           f"{what} would loop {steps} times in one GPU invocation, more than the "
           f"{LOOP_LIMIT} that lavapipe executes (kernels/common.wgsl)", *tensors)
