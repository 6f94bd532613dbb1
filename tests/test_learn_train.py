"""pycore.learn.train: the recorded training step gives exactly the losses and weights of
the same steps run eagerly, an epoch after the first costs the host two fresh dispatches
per window (the loss total and the per-bin error total) and two readbacks, and the
noise_std an epoch leaves is the per-bin RMS prediction error of the same epoch in
PyTorch (float64: nn.LSTM, Adam, gradient clipping)."""

import asyncio

import numpy as np
import pytest

from pycore.learn.train import Trainer
from pycore.models.magnet import MagNet

# F = 33 bins (K not a multiple of 4: the matmuls' repacking runs inside the plan)
CFG = {"sample_rate": 8000, "n_fft": 64, "hop": 16, "hidden": 12, "layers": 2, "seq_len": 6, "batch": 3}


def train(dev, frames, plans, epochs=2, input_noise=0.0):
    model = MagNet.create(dev, CFG, seed=4)
    trainer = Trainer(model, frames, lr=3e-3, plans=plans, input_noise=input_noise)
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
    # loss and per-bin totals + the tapes' resets
    assert done["dispatches"] == 2 * planned.steps() + CFG["layers"]
    assert done["readbacks"] == 2 and done["replayed"] > 0
    planned.release()


def test_input_noise_planned_equals_eager_and_starts_after_the_first_epoch(dev):
    frames = np.random.default_rng(5).standard_normal((80, 33)).astype(np.float32).ravel()
    planned, losses_p, weights_p = train(dev, frames, plans=True, epochs=3, input_noise=1.0)
    eager, losses_e, weights_e = train(dev, frames, plans=False, epochs=3, input_noise=1.0)
    clean, losses_c, _ = train(dev, frames, plans=True, epochs=3)
    assert losses_p == losses_e
    for name in weights_e:
        np.testing.assert_array_equal(weights_p[name], weights_e[name], err_msg=name)
    # no noise_std before the first epoch ends: its inputs are clean; then they are not,
    # and noisy inputs make the next frame harder to predict
    assert losses_p[0] == losses_c[0] and losses_p[1] > losses_c[1] and losses_p[2] > losses_c[2]
    for t in (planned, eager, clean):
        t.release()


def test_noise_std_is_the_epochs_rms_error_per_bin(dev):
    torch = pytest.importorskip("torch")
    frames = np.random.default_rng(6).standard_normal((80, 33)).astype(np.float32)
    model = MagNet.create(dev, CFG, seed=4)
    p = {k: torch.from_numpy(t.numpy().astype(np.float64)) for k, t in model.params.items()}
    trainer = Trainer(model, frames.ravel(), lr=3e-3)
    asyncio.run(trainer.epoch())
    got = model.noise_std.numpy()

    F, H, L, S, B = 33, CFG["hidden"], CFG["layers"], CFG["seq_len"], CFG["batch"]
    lstm, lin = torch.nn.LSTM(F, H, L, dtype=torch.float64), torch.nn.Linear(H, F, dtype=torch.float64)
    lstm.load_state_dict({**{f"weight_{w}_l{k}": p[f"lstm.weight_{w}_l{k}"] for k in range(L) for w in ("ih", "hh")},
                          **{f"bias_ih_l{k}": p[f"lstm.bias_l{k}"] for k in range(L)},
                          **{f"bias_hh_l{k}": torch.zeros(4 * H, dtype=torch.float64) for k in range(L)}})
    lin.load_state_dict({"weight": p["out.weight"], "bias": p["out.bias"]})
    # ours has one bias per layer: bias_hh stays zero, outside the optimizer and the norm
    params = [q for n, q in lstm.named_parameters() if not n.startswith("bias_hh")] + list(lin.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    z = torch.from_numpy(frames.astype(np.float64))
    windows = (len(z) - 1) // (B * S)
    idx = torch.arange(B)[None, :] * windows * S + torch.arange(S)[:, None]
    state, sq = None, torch.zeros(F, dtype=torch.float64)
    for w in range(windows):
        x, y = z[idx + w * S], z[idx + w * S + 1]
        out, state = lstm(x, state)
        state = tuple(s.detach() for s in state)
        pred = lin(out)
        sq += ((pred - y) ** 2).sum(dim=(0, 1)).detach()
        opt.zero_grad()
        torch.nn.functional.mse_loss(pred, y).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    want = torch.sqrt(sq / (windows * S * B)).numpy()
    # float32 sums of 72 squares (2 d / n)^2 and float32 weights after each Adam step:
    # reached 8e-8 relative
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got.shape == (F,) and got.min() > 0
