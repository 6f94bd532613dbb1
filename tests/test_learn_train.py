"""pycore.learn.train: the recorded training step gives exactly the losses and weights of
the same steps run eagerly, and an epoch after the first costs the host one fresh
dispatch per window (the loss total) and one readback."""

import asyncio

import numpy as np

from pycore.learn.train import Trainer
from pycore.models.magnet import MagNet

# F = 33 bins (K not a multiple of 4: the matmuls' repacking runs inside the plan)
CFG = {"sample_rate": 8000, "n_fft": 64, "hop": 16, "hidden": 12, "layers": 2, "seq_len": 6, "batch": 3}


def train(dev, frames, plans, epochs=2):
    model = MagNet.create(dev, CFG, seed=4)
    trainer = Trainer(model, frames, lr=3e-3, plans=plans)
    losses = [asyncio.run(trainer.epoch()) for _ in range(epochs)]
    return trainer, losses, {k: t.numpy() for k, t in model.params.items()}


def test_planned_steps_equal_eager_ones(dev):
    frames = np.random.default_rng(5).standard_normal((80, 33)).astype(np.float32).ravel()
    planned, losses_p, weights_p = train(dev, frames, plans=True)
    eager, losses_e, weights_e = train(dev, frames, plans=False)
    assert planned.steps() == 4 and losses_p == losses_e
    assert losses_p[1] < losses_p[0]
    for name in weights_e:
        np.testing.assert_array_equal(weights_p[name], weights_e[name], err_msg=name)

    counts = dict(dev.counts)
    asyncio.run(planned.epoch())
    done = {k: dev.counts[k] - counts[k] for k in counts}
    assert done["dispatches"] == planned.steps() + CFG["layers"]   # loss totals + the tapes' resets
    assert done["readbacks"] == 1 and done["replayed"] > 0
    planned.release()
