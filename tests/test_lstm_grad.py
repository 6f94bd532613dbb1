"""LSTM training forward and BPTT against torch.autograd through nn.LSTM (float64).

The reference is nn.LSTM with b_hh = 0 (our single bias is its b_ih; d b_ih = d bias).
Truncated BPTT: the second window starts from the first one's detached state, exactly
as our tape.carry(). Bars: float32 forward errors of a few 1e-7 per step (see
tests/test_rnn.py) that the gates damp; the backward sums 4H products per step and
T * B per weight gradient; 2e-5 relative + 2e-5 absolute covers T * B up to 400 with
a margin of 10x over the measured 1e-6.
"""

import asyncio

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pycore.gpu.selfcheck import CHECKS  # noqa: E402
from pycore.ops.lstm_grad import LSTMTape, lstm_train_backward, lstm_train_forward  # noqa: E402

TOL = dict(rtol=2e-5, atol=2e-5)


def torch_window(x, w_ih, w_hh, b, up, state):
    """One window through nn.LSTM in float64; returns (out, grads, final state detached)."""
    T, B, n_in = x.shape
    H = w_hh.shape[1]
    m = torch.nn.LSTM(n_in, H, dtype=torch.float64)
    m.load_state_dict({"weight_ih_l0": torch.from_numpy(w_ih), "weight_hh_l0": torch.from_numpy(w_hh),
                       "bias_ih_l0": torch.from_numpy(b), "bias_hh_l0": torch.zeros(4 * H, dtype=torch.float64)})
    xt = torch.from_numpy(x).requires_grad_()
    out, (h, c) = m(xt, state)
    (out * torch.from_numpy(up)).sum().backward()
    grads = {"weight_ih": m.weight_ih_l0.grad, "weight_hh": m.weight_hh_l0.grad, "bias": m.bias_ih_l0.grad}
    return out.detach().numpy(), xt.grad.numpy(), {k: v.numpy() for k, v in grads.items()}, (h.detach(), c.detach())


@pytest.mark.parametrize("T,B,n_in,H", [(1, 1, 1, 1), (5, 3, 7, 6), (17, 2, 33, 20), (9, 5, 3, 65)])
def test_bptt_matches_autograd_over_two_windows(dev, T, B, n_in, H):
    rng = np.random.default_rng(T * 100 + H)
    s = H ** -0.5
    w_ih, w_hh, b = (rng.uniform(-s, s, sh).astype(np.float32) for sh in ((4 * H, n_in), (4 * H, H), (4 * H,)))
    tape = LSTMTape(dev, T, B, H)
    wi, wh, bt = dev.tensor(w_ih), dev.tensor(w_hh), dev.tensor(b)
    state = None
    for window in range(2):
        x = rng.standard_normal((T, B, n_in)).astype(np.float32)
        up = rng.standard_normal((T, B, H)).astype(np.float32)
        want_out, want_dx, want_g, state = torch_window(x.astype(np.float64), *(v.astype(np.float64) for v in
                                                        (w_ih, w_hh, b, up)), state)
        if window:
            tape.carry()
        xg = dev.tensor(x)
        out = lstm_train_forward(tape, xg, wi, wh, bt)
        np.testing.assert_allclose(out.numpy(), want_out, **TOL)
        dx, g = lstm_train_backward(tape, xg, wi, wh, dev.tensor(up))
        np.testing.assert_allclose(dx.numpy(), want_dx, **TOL)
        for k in want_g:
            np.testing.assert_allclose(g[k].numpy(), want_g[k], **TOL, err_msg=k)


def test_reset_and_set_state(dev):
    T, B, H = 3, 2, 4
    tape = LSTMTape(dev, T, B, H)
    rng = np.random.default_rng(1)
    w_ih, w_hh = dev.tensor(rng.standard_normal((16, 2))), dev.tensor(rng.standard_normal((16, 4)))
    x = dev.tensor(rng.standard_normal((T, B, 2)))
    first = lstm_train_forward(tape, x, w_ih, w_hh).numpy().copy()
    tape.carry()
    carried = lstm_train_forward(tape, x, w_ih, w_hh).numpy().copy()
    assert not np.allclose(first, carried)
    tape.reset()
    np.testing.assert_array_equal(lstm_train_forward(tape, x, w_ih, w_hh).numpy(), first)
    tape.set_state([0.0] * (B * H), [0.0] * (B * H))
    np.testing.assert_array_equal(lstm_train_forward(tape, x, w_ih, w_hh).numpy(), first)


def test_bad_shapes_are_named(dev):
    tape = LSTMTape(dev, 3, 2, 4)
    x = dev.tensor(np.zeros((3, 2, 5)))
    with pytest.raises(ValueError, match=r"lstm_train_forward: weights must be w_ih \[16, 5\]"):
        lstm_train_forward(tape, x, dev.tensor(np.zeros((16, 4))), dev.tensor(np.zeros((16, 4))))
    with pytest.raises(ValueError, match=r"x must be \[T=3, B=2, in\]"):
        lstm_train_forward(tape, dev.tensor(np.zeros((4, 2, 5))), dev.tensor(np.zeros((16, 5))),
                           dev.tensor(np.zeros((16, 4))))
    with pytest.raises(ValueError, match="65535"):
        LSTMTape(dev, 1, 1, 20000)


def test_selfcheck(dev):
    asyncio.run(CHECKS["lstm_backward"](dev))
