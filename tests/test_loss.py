"""mse_loss against torch.nn.functional.mse_loss + autograd (float64).

Bars: the loss sums n float32 squares in runs of 64 (one per invocation), then the runs
in runs of n / 4096 and a tree: the rounding errors of positive terms add up as a random
walk, ~sqrt(64 + n / 4096 + log2(n)) * 6e-8 relative (measured at most 7e-8 up to n = 1e6),
so 1e-6 relative; the gradient is one subtraction and one product per element: 1e-6.
Sizes cover one partial workgroup (63), several chunks of 4096 with a partial last one
(7 x 513, 300 x 301).
"""

import asyncio

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pycore.gpu.selfcheck import CHECKS  # noqa: E402
from pycore.ops.loss import mse_loss  # noqa: E402


@pytest.mark.parametrize("shape", [(1,), (63,), (65,), (7, 513), (300, 301)])
def test_mse_matches_torch(dev, shape):
    rng = np.random.default_rng(sum(shape))
    a, b = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    at = torch.from_numpy(a.astype(np.float64)).requires_grad_()
    want = torch.nn.functional.mse_loss(at, torch.from_numpy(b.astype(np.float64)))
    want.backward()
    loss, grad = mse_loss(dev.tensor(a), dev.tensor(b))
    np.testing.assert_allclose(loss.numpy(), [want.item()], rtol=1e-6)
    np.testing.assert_allclose(grad.numpy(), at.grad.numpy(), rtol=1e-6, atol=1e-12)


def test_shape_mismatch_is_named(dev):
    with pytest.raises(ValueError, match="mse_loss: pred and target must be f32 of one shape"):
        mse_loss(dev.tensor(np.zeros(3)), dev.tensor(np.zeros(4)))


def test_selfcheck(dev):
    asyncio.run(CHECKS["mse_loss"](dev))
