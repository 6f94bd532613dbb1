"""Backward pass of linear / matmul layers (kernels/linear_grad.wgsl + matmul + sum).

    dz = act_backward(dy, y, act)                     dy * act'(z), from the output y = act(z)
    dx, dw, db = linear_backward(x, weight, dy, y=None, act=None, need_dx=True)

For y = act(x @ weight.T + bias) (pycore.ops.matmul.linear, weight [out, in] as in
PyTorch): dz = act_backward(dy, y, act); dw = dz^T x ([out, in]); db = column sums of dz
([out]); dx = dz @ weight ([..., in]; None when need_dx is False, e.g. for the network's
input). Activations: None, "relu", "tanh", "sigmoid" (their derivatives follow from the
output; gelu's would need the input and is refused). Float32 accumulation throughout.
"""

from __future__ import annotations

import math

from ..gpu.runtime import Tensor, ceil_div
from ..gpu.selfcheck import assert_close, check, rand, rng
from . import expect, same_device
from .matmul import ACTS, linear, matmul
from .reduce import sum as reduce_sum

GRAD_ACTS = (None, "relu", "tanh", "sigmoid")


def act_backward(dy, y, act):
    """dy * act'(z) where y = act(z); dy and y of one shape."""
    op = "act_backward"
    expect(op, act in GRAD_ACTS, f"activation {act!r} has no backward here; use one of {GRAD_ACTS}")
    expect(op, isinstance(dy, Tensor) and isinstance(y, Tensor), "dy and y must be Tensors")
    expect(op, dy.shape == y.shape and dy.dtype == y.dtype == "f32", "dy and y must be f32 of one shape", dy, y)
    if act is None:
        return dy
    dev = same_device(op, dy, y)
    dz = dev.empty(dy.shape)
    dev.run(dev.kernel("linear_grad", "act_grad", consts={"ACT": ACTS[act]}), ceil_div(dy.size, 64),
            dy=dy, y=y, dz=dz, n=dy.size)
    return dz


def linear_backward(x, weight, dy, y=None, act=None, need_dx=True):
    """Gradients of act(x @ weight.T + bias) given dy: (dx or None, dw, db)."""
    op = "linear_backward"
    expect(op, isinstance(x, Tensor) and isinstance(weight, Tensor) and isinstance(dy, Tensor),
           "x, weight and dy must be Tensors")
    expect(op, weight.ndim == 2 and x.ndim >= 1 and x.shape[-1] == weight.shape[1],
           "x must be [..., in] and weight [out, in]", x, weight)
    expect(op, dy.shape == x.shape[:-1] + (weight.shape[0],), "dy must have x's rows and weight's out features",
           x, weight, dy)
    expect(op, act is None or y is not None, "an activation's backward needs the layer output y")
    same_device(op, x, weight, dy, y)
    n_in, n_out = weight.shape[1], weight.shape[0]
    dz = act_backward(dy, y, act) if act is not None else dy
    dz2 = dz.reshape(-1, n_out)
    dw = matmul(dz2, x.reshape(-1, n_in), trans_a=True)
    db = reduce_sum(dz2, dim=0)
    dx = matmul(dz2, weight).reshape(x.shape) if need_dx else None
    return dx, dw, db


# --------------------------------------------------------------------------- self-check
# Gradients against central differences of a pure-Python float64 forward pass.


def _forward_ref(xs, w, b, rows, n_in, n_out, act, up):
    """sum over outputs of up * act(x w^T + b): a scalar whose gradient is the backward."""
    f = {None: lambda v: v, "tanh": math.tanh, "sigmoid": lambda v: 1 / (1 + math.exp(-v)),
         "relu": lambda v: max(v, 0.0)}[act]
    total = 0.0
    for r in range(rows):
        for o in range(n_out):
            z = b[o] + sum(xs[r * n_in + i] * w[o * n_in + i] for i in range(n_in))
            total += up[r * n_out + o] * f(z)
    return total


def numeric_grad(fn, values, h=1e-5):
    """Central differences of the scalar fn(values) with respect to each value."""
    out = []
    for k in range(len(values)):
        keep = values[k]
        values[k] = keep + h
        hi = fn(values)
        values[k] = keep - h
        lo = fn(values)
        values[k] = keep
        out.append((hi - lo) / (2 * h))
    return out


@check("linear_backward")
async def _check_linear_backward(dev):
    r = rng(41)
    rows, n_in, n_out, act = 3, 5, 3, "tanh"
    xs, w, b, up = rand(r, rows * n_in), rand(r, n_out * n_in), rand(r, n_out), rand(r, rows * n_out)
    x_t, w_t, b_t = dev.tensor(xs, (rows, n_in)), dev.tensor(w, (n_out, n_in)), dev.tensor(b, (n_out,))
    y = linear(x_t, w_t, b_t, act)
    dx, dw, db = linear_backward(x_t, w_t, dev.tensor(up, (rows, n_out)), y, act)

    def loss(xv=xs, wv=w, bv=b):
        return _forward_ref(xv, wv, bv, rows, n_in, n_out, act, up)
    # float64 differences of a smooth function: error ~h^2 = 1e-10; float32 GPU: ~1e-6
    detail = assert_close("linear dx", await dx.read(), numeric_grad(lambda v: loss(xv=v), list(xs)),
                          rtol=1e-4, atol=1e-5)
    assert_close("linear dw", await dw.read(), numeric_grad(lambda v: loss(wv=v), list(w)), rtol=1e-4, atol=1e-5)
    assert_close("linear db", await db.read(), numeric_grad(lambda v: loss(bv=v), list(b)), rtol=1e-4, atol=1e-5)
    return detail
