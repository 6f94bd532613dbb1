"""pycore.learn.train: the recorded training step gives exactly the losses and weights of
the same steps run eagerly, an epoch after the first costs the host two fresh dispatches
per window (the loss total and the per-bin error total) and two readbacks, and the
noise_std an epoch leaves is the per-bin RMS prediction error of the same epoch in
PyTorch (float64: nn.LSTM, Adam, gradient clipping); with varied windows and scheduled
sampling (feedback) the epochs' losses, noise_std and weights are PyTorch's on the same
lanes, with the mix computed by the kernel header's definition
(tests/spectrogram_reference.py)."""

import asyncio

import numpy as np
import pytest

from pycore.learn import train as train_module
from pycore.learn.train import FEEDBACK_SEED, Trainer
from pycore.models.magnet import MagNet
from spectrogram_reference import feed_back_reference

# F = 33 bins (K not a multiple of 4: the matmuls' repacking runs inside the plan)
CFG = {"sample_rate": 8000, "n_fft": 64, "hop": 16, "hidden": 12, "layers": 2, "seq_len": 6, "batch": 3}


def train(dev, frames, plans, epochs=2, input_noise=0.0, feedback=0.0, vary=False):
    model = MagNet.create(dev, CFG, seed=4)
    trainer = Trainer(model, frames, lr=3e-3, plans=plans, input_noise=input_noise, feedback=feedback, vary=vary)
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
    trainer = Trainer(model, frames.ravel(), lr=3e-3, feedback=0.0, vary=False)
    asyncio.run(trainer.epoch())
    got = model.noise_std.numpy()

    _, mse, _ = reference_epochs(torch, p, frames, [[0, 24, 48]], [0.0])
    want = np.sqrt(mse[0])
    # float32 sums of 72 squares (2 d / n)^2 and float32 weights after each Adam step:
    # reached 8e-8 relative
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got.shape == (33,) and got.min() > 0


def reference_epochs(torch, p, frames, starts, mixing, lr=3e-3):
    """PyTorch float64 epochs of Trainer (input_noise 0): epoch e's lanes start at
    starts[e], its mixing probability is mixing[e]. Returns (the model's parameters,
    each epoch's per-bin mean squared first-pass error [F])."""
    F, H, L, S, B = 33, CFG["hidden"], CFG["layers"], CFG["seq_len"], CFG["batch"]
    lstm, lin = torch.nn.LSTM(F, H, L, dtype=torch.float64), torch.nn.Linear(H, F, dtype=torch.float64)
    lstm.load_state_dict({**{f"weight_{w}_l{k}": p[f"lstm.weight_{w}_l{k}"] for k in range(L) for w in ("ih", "hh")},
                          **{f"bias_ih_l{k}": p[f"lstm.bias_l{k}"] for k in range(L)},
                          **{f"bias_hh_l{k}": torch.zeros(4 * H, dtype=torch.float64) for k in range(L)}})
    lin.load_state_dict({"weight": p["out.weight"], "bias": p["out.bias"]})
    # ours has one bias per layer: bias_hh stays zero, outside the optimizer and the norm
    params = [q for n, q in lstm.named_parameters() if not n.startswith("bias_hh")] + list(lin.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    z = torch.from_numpy(frames.astype(np.float64))
    n = len(z) - 1
    windows = n // (B * S)
    noise_std, mse, losses = np.zeros(F), [], []
    for e, (lanes, q) in enumerate(zip(starts, mixing)):
        state, sq, total = None, torch.zeros(F, dtype=torch.float64), 0.0
        threshold = min(round(q * 2.0 ** 32), 0xFFFFFFFF)
        for w in range(windows):
            idx = (torch.tensor(lanes)[None, :] + w * S + torch.arange(S)[:, None]) % n
            x, y = z[idx], z[idx + 1]
            with torch.no_grad():
                first = lin(lstm(x, state)[0])
            sq += ((first - y) ** 2).sum(dim=(0, 1))
            if q:   # the mix: inputs replaced by the first pass's draws, no gradient through them
                x = torch.from_numpy(feed_back_reference(x.numpy(), first.numpy(), noise_std, e * windows + w,
                                                         threshold, 1.0, FEEDBACK_SEED)[0])
            out, state = lstm(x, state)
            state = tuple(s.detach() for s in state)
            loss = torch.nn.functional.mse_loss(lin(out), y)
            total += loss.item()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        mse.append((sq / (windows * S * B)).numpy())
        noise_std = np.sqrt(mse[-1])
        losses.append(total / windows)
    weights = {f"lstm.weight_{w}_l{k}": getattr(lstm, f"weight_{w}_l{k}") for k in range(L) for w in ("ih", "hh")}
    weights.update({f"lstm.bias_l{k}": getattr(lstm, f"bias_ih_l{k}") for k in range(L)})
    weights.update({"out.weight": lin.weight, "out.bias": lin.bias})
    return {k: v.detach().numpy() for k, v in weights.items()}, mse, losses


def test_varied_windows_and_feedback_match_torch(dev, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(train_module, "FEEDBACK_RAMP", 2)    # mixing 0, 0.5, 1 in epochs 0, 1, 2
    frames = np.random.default_rng(7).standard_normal((80, 33)).astype(np.float32)
    model = MagNet.create(dev, CFG, seed=4)
    p = {k: torch.from_numpy(t.numpy().astype(np.float64)) for k, t in model.params.items()}
    trainer = Trainer(model, frames.ravel(), lr=3e-3, input_noise=0.0, feedback=1.0, vary=True)
    starts = [trainer.lane_starts(e) for e in range(3)]
    n, lane = 79, trainer.lane
    # the lanes: a ring of the n transitions, `lane` apart, at another offset each epoch
    assert all(s[b] == (s[0] + b * lane) % n for s in starts for b in range(CFG["batch"]))
    assert len({s[0] for s in starts}) == 3
    assert [trainer.mixing(e) for e in range(3)] == [0.0, 0.5, 1.0]
    got_losses, got_std = [], []
    for _ in range(3):
        got_losses.append(asyncio.run(trainer.epoch()))
        got_std.append(model.noise_std.numpy().copy())
    trainer.release()
    weights, mse, losses = reference_epochs(torch, p, frames, starts, [0.0, 0.5, 1.0])
    # float32 against float64 through 12 Adam steps: reached RTOL_REACHED (the first
    # epoch's noise_std: 8e-8 as above)
    np.testing.assert_allclose(got_losses, losses, rtol=1e-5)
    for e in range(3):
        np.testing.assert_allclose(got_std[e], np.sqrt(mse[e]), rtol=1e-5, err_msg=f"epoch {e}")
    for name, want in weights.items():
        np.testing.assert_allclose(model.params[name].numpy(), want, rtol=1e-4, atol=1e-5, err_msg=name)
