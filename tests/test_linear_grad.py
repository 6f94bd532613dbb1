"""linear_backward / act_backward against torch.autograd (float64) on odd shapes.

Bars: the GPU sums in float32. dw sums `rows` products of O(1) values, dx sums `out`
products: the rounding error is about sqrt(K) * 6e-8 * |terms|, under 1e-5 for K <= 300;
references run in float64 on the uploaded float32 values.
"""

import asyncio

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pycore.gpu.selfcheck import CHECKS  # noqa: E402
from pycore.ops.linear_grad import act_backward, linear_backward  # noqa: E402
from pycore.ops.matmul import linear  # noqa: E402

TORCH_ACT = {None: lambda z: z, "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


@pytest.mark.parametrize("rows,n_in,n_out,act", [(1, 1, 1, None), (7, 13, 5, "tanh"), (33, 17, 29, "sigmoid"),
                                                  (300, 9, 3, "relu"), (5, 130, 70, None)])
def test_linear_backward_matches_autograd(dev, rows, n_in, n_out, act):
    rng = np.random.default_rng(rows * 1000 + n_in)
    x, w, b, up = (rng.standard_normal(s).astype(np.float32) for s in ((rows, n_in), (n_out, n_in), (n_out,),
                                                                      (rows, n_out)))
    xt, wt, bt = (torch.from_numpy(v.astype(np.float64)).requires_grad_() for v in (x, w, b))
    (TORCH_ACT[act](xt @ wt.T + bt) * torch.from_numpy(up.astype(np.float64))).sum().backward()
    xg, wg = dev.tensor(x), dev.tensor(w)
    y = linear(xg, wg, dev.tensor(b), act)
    dx, dw, db = linear_backward(xg, wg, dev.tensor(up), y, act)
    for got, want in ((dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


def test_need_dx_false_skips_input_gradient(dev):
    x, w = dev.tensor(np.ones((2, 3))), dev.tensor(np.ones((4, 3)))
    dx, dw, db = linear_backward(x, w, dev.tensor(np.ones((2, 4))), need_dx=False)
    assert dx is None
    np.testing.assert_array_equal(dw.numpy(), np.full((4, 3), 2.0))
    np.testing.assert_array_equal(db.numpy(), np.full(4, 2.0))


def test_bad_input_is_named(dev):
    x, w = dev.tensor(np.ones((2, 3))), dev.tensor(np.ones((4, 3)))
    with pytest.raises(ValueError, match="linear_backward: dy must have"):
        linear_backward(x, w, dev.tensor(np.ones((2, 5))))
    with pytest.raises(ValueError, match="gelu"):
        act_backward(dev.tensor(np.ones(3)), dev.tensor(np.ones(3)), "gelu")
    with pytest.raises(ValueError, match="needs the layer output"):
        linear_backward(x, w, dev.tensor(np.ones((2, 4))), act="tanh")


def test_selfcheck(dev):
    asyncio.run(CHECKS["linear_backward"](dev))
