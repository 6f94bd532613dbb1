"""Adam + global-norm clipping against torch.optim.Adam + clip_grad_norm_ (float64).

Bars: each step rounds a handful of float32 operations per element (relative 1e-7 of a
step of size ~lr); over 5 steps the parameters agree to 1e-6 absolute for lr = 1e-2.
"""

import asyncio

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pycore.gpu.selfcheck import CHECKS  # noqa: E402
from pycore.ops.adam import Adam  # noqa: E402


@pytest.mark.parametrize("clip", [0.0, 0.5, 1e6])
def test_adam_matches_torch(dev, clip):
    rng = np.random.default_rng(int(clip) % 7)
    shapes = {"a": (3, 5), "b": (7,), "c": (4097 + 3,)}  # c spans two partial norms
    init = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    tp = {k: torch.from_numpy(v.astype(np.float64)).requires_grad_() for k, v in init.items()}
    topt = torch.optim.Adam(tp.values(), lr=1e-2, betas=(0.8, 0.99), eps=1e-8)
    ours = {k: dev.tensor(v) for k, v in init.items()}
    opt = Adam(ours, lr=1e-2, betas=(0.8, 0.99), eps=1e-8, clip=clip)
    for _ in range(5):
        grads = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
        for k, t in tp.items():
            t.grad = torch.from_numpy(grads[k].astype(np.float64))
        if clip:
            torch.nn.utils.clip_grad_norm_(tp.values(), clip)
        topt.step()
        opt.step({k: dev.tensor(g) for k, g in grads.items()})
    for k in shapes:
        np.testing.assert_allclose(ours[k].numpy(), tp[k].detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


def test_state_round_trip_resumes_identically(dev):
    rng = np.random.default_rng(3)
    g = [rng.standard_normal(10).astype(np.float32) for _ in range(4)]
    p1 = {"w": dev.tensor(np.ones(10))}
    o1 = Adam(p1, lr=0.1)
    for gi in g:
        o1.step({"w": dev.tensor(gi)})
    p2 = {"w": dev.tensor(np.ones(10))}
    o2 = Adam(p2, lr=0.1)
    for gi in g[:2]:
        o2.step({"w": dev.tensor(gi)})
    saved = {k: dev.tensor(t.numpy()) for k, t in o2.state().items()}
    o3 = Adam({"w": dev.tensor(p2["w"].numpy())}, lr=0.1)
    o3.load_state(saved, o2.t)
    for gi in g[2:]:
        o3.step({"w": dev.tensor(gi)})
    np.testing.assert_array_equal(o3.params["w"].numpy(), p1["w"].numpy())


def test_bad_arguments_are_named(dev):
    with pytest.raises(ValueError, match="Adam: need lr > 0"):
        Adam({"w": dev.tensor(np.ones(3))}, lr=-1)
    opt = Adam({"w": dev.tensor(np.ones(3))})
    with pytest.raises(ValueError, match="grads must have the keys"):
        opt.step({"v": dev.tensor(np.ones(3))})


def test_selfcheck(dev):
    asyncio.run(CHECKS["adam"](dev))
