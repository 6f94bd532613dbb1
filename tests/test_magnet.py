"""MagNet: the whole network's gradients against torch.autograd (nn.LSTM stack + Linear,
float64, b_hh = 0), on a small configuration. Bars as tests/test_lstm_grad.py."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pycore.models.magnet import MagNet  # noqa: E402
from pycore.ops.loss import mse_loss  # noqa: E402

CFG = {"sample_rate": 8000, "n_fft": 30, "hop": 8, "hidden": 9, "layers": 2, "seq_len": 5, "batch": 3}


def test_model_gradients_match_autograd(dev):
    model = MagNet.create(dev, CFG, seed=3)
    F, H, S, B = 16, 9, 5, 3
    rng = np.random.default_rng(0)
    x, y = (rng.standard_normal((S, B, F)).astype(np.float32) for _ in range(2))
    tapes = model.tapes(S, B)
    pred = model.forward(dev.tensor(x), tapes)
    loss, grad = mse_loss(pred, dev.tensor(y))
    grads = model.backward(grad, tapes)

    p = {k: torch.from_numpy(t.numpy().astype(np.float64)) for k, t in model.params.items()}
    lstm = torch.nn.LSTM(F, H, 2, dtype=torch.float64)
    lstm.load_state_dict({**{f"weight_{w}_l{k}": p[f"lstm.weight_{w}_l{k}"] for k in range(2) for w in ("ih", "hh")},
                          **{f"bias_ih_l{k}": p[f"lstm.bias_l{k}"] for k in range(2)},
                          **{f"bias_hh_l{k}": torch.zeros(4 * H, dtype=torch.float64) for k in range(2)}})
    lin = torch.nn.Linear(H, F, dtype=torch.float64)
    lin.load_state_dict({"weight": p["out.weight"], "bias": p["out.bias"]})
    want = torch.nn.functional.mse_loss(lin(lstm(torch.from_numpy(x.astype(np.float64)))[0]),
                                        torch.from_numpy(y.astype(np.float64)))
    want.backward()
    np.testing.assert_allclose(loss.numpy(), [want.item()], rtol=1e-5)
    ref = {"out.weight": lin.weight.grad, "out.bias": lin.bias.grad}
    for k in range(2):
        ref[f"lstm.weight_ih_l{k}"] = getattr(lstm, f"weight_ih_l{k}").grad
        ref[f"lstm.weight_hh_l{k}"] = getattr(lstm, f"weight_hh_l{k}").grad
        ref[f"lstm.bias_l{k}"] = getattr(lstm, f"bias_ih_l{k}").grad
    assert set(ref) == set(grads)
    for k, v in ref.items():
        np.testing.assert_allclose(grads[k].numpy(), v.numpy(), rtol=2e-5, atol=2e-6, err_msg=k)
