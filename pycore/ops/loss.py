"""Training loss (kernels/loss.wgsl).

    loss, grad = mse_loss(pred, target)     loss: a 1-element tensor, mean((pred - target)^2);
                                            grad: d loss / d pred, pred's shape

One dispatch computes the gradient and per-workgroup partial sums, a second one the mean;
nothing is read back (read `loss` when you want to report it).
"""

from __future__ import annotations

from ..gpu.runtime import Tensor, ceil_div
from ..gpu.selfcheck import assert_close, check, rand, rng
from . import expect, expect_loop_steps, same_device

WG = 64
CHUNK = 4096    # elements per workgroup of loss:mse (kernels/loss.wgsl)


def mse_loss(pred, target):
    op = "mse_loss"
    expect(op, isinstance(pred, Tensor) and isinstance(target, Tensor), "pred and target must be Tensors")
    expect(op, pred.shape == target.shape and pred.dtype == target.dtype == "f32",
           "pred and target must be f32 of one shape", pred, target)
    expect(op, pred.size > 0, "cannot average an empty tensor", pred)
    dev = same_device(op, pred, target)
    groups = ceil_div(pred.size, CHUNK)
    parts = groups * WG
    expect_loop_steps(op, ceil_div(parts, WG) + 8, f"{pred.size} elements", pred)
    grad, part, loss = dev.empty(pred.shape), dev.empty((parts,)), dev.empty((1,))
    args = dict(pred=pred, want=target, grad=grad, part=part, loss=loss, n=pred.size, parts=parts,
                inv_n=1.0 / pred.size)
    dev.run(dev.kernel("loss", "mse"), groups, **args)
    dev.run(dev.kernel("loss", "finish"), 1, **args)
    return loss, grad


@check("mse_loss")
async def _check_mse(dev):
    r = rng(43)
    n = 150
    a, b = rand(r, n), rand(r, n)
    loss, grad = mse_loss(dev.tensor(a, (n,)), dev.tensor(b, (n,)))
    want = sum((x - y) ** 2 for x, y in zip(a, b)) / n
    detail = assert_close("mse loss", await loss.read(), [want], rtol=1e-5, atol=1e-7)
    assert_close("mse grad", await grad.read(), [2 * (x - y) / n for x, y in zip(a, b)], rtol=1e-5, atol=1e-8)
    return detail
