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
