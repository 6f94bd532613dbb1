"""One LSTM layer for training: forward with a tape, backpropagation through time
(kernels/lstm_grad.wgsl, plus matmuls and a column sum for the weight gradients).

    tape = LSTMTape(dev, T, B, H)                  buffers for windows of T steps, B sequences
    out = lstm_train_forward(tape, x, w_ih, w_hh, bias)         x [T, B, in] -> out [T, B, H]
    dx, grads = lstm_train_backward(tape, x, w_ih, w_hh, dout)  grads: weight_ih, weight_hh, bias
    tape.carry()  /  tape.reset()                  next window starts from h_T, c_T / from zeros

PyTorch's nn.LSTM equations (gate rows i, f, g, o) with one bias vector (nn.LSTM's b_ih +
b_hh; its gradient is the gradient of either). Truncated backpropagation through time: a
long sequence runs as consecutive windows of T steps; `carry()` hands the state on while
the gradient stops at the window's start (as torch's `h.detach()` between windows). The
tape (acts, cs, hprev, da, dc) is allocated once, so memory is flat over any number of
windows. Per window: 1 + T dispatches forward, T + 4 backward (+1 for dx).
"""

from __future__ import annotations

import math

from ..gpu.runtime import Tensor, ceil_div
from ..gpu.selfcheck import assert_close, check, rand, rng
from . import expect, expect_loop_steps, same_device
from .linear_grad import numeric_grad
from .matmul import linear, matmul
from .reduce import sum as reduce_sum

WG = 64


class LSTMTape:
    """What one layer keeps between its forward and backward pass over a window."""

    def __init__(self, dev, T: int, B: int, H: int):
        for name, v in (("T", T), ("B", B), ("H", H)):
            expect("LSTMTape", isinstance(v, int) and v >= 1, f"{name} must be an int >= 1, got {v!r}")
        expect_loop_steps("LSTMTape", 4 * H + 1, f"a hidden size of {H} (backward sums 4H terms)")
        self.dev, self.T, self.B, self.H = dev, T, B, H
        self.acts = dev.empty((T, B, 4 * H))
        self.da = dev.empty((T, B, 4 * H))
        self.cs = dev.empty((T + 1, B, H))
        self.hprev = dev.empty((T, B, H))
        self.out = dev.empty((T, B, H))
        self.dout = dev.empty((T, B, H))
        self.dc = dev.empty((B, H))
        self._unread = dev.empty((1,))  # bound where a dispatch reads nothing
        self.reset()

    def _args(self, **kw):
        args = dict(acts=self.acts, cs=self.cs, hprev=self.hprev, out=self.out, dout=self.dout,
                    da=self.da, dc=self.dc, T=self.T, batch=self.B, H=self.H, step=0, keep=0)
        args.update(kw)
        return args

    def _carry(self, keep):
        dev = self.dev
        dev.run(dev.kernel("lstm_grad", "carry"), ceil_div(self.B * self.H, WG),
                **self._args(xp=self._unread, w_hh=self._unread, keep=keep))

    def reset(self):
        """Zero initial state (h0 = c0 = 0) for the next window."""
        self._carry(0)

    def carry(self):
        """The next window starts from this window's final state (h_T, c_T)."""
        self._carry(1)

    def set_state(self, h0, c0):
        """Initial state from host values (flat lists or arrays of B * H)."""
        n = self.B * self.H
        self.dev.write(self.hprev, _row0(self.hprev, h0, n))
        self.dev.write(self.cs, _row0(self.cs, c0, n))


def _row0(t, values, n):
    import array
    vals = array.array("f", [float(v) for v in values])
    expect("LSTMTape", len(vals) == n, f"state must have B * H = {n} values, got {len(vals)}")
    return vals.tobytes() + bytes(t.nbytes - 4 * n)


def _check(op, tape, x, w_ih, w_hh, bias):
    expect(op, isinstance(tape, LSTMTape), "tape must be an LSTMTape")
    T, B, H = tape.T, tape.B, tape.H
    expect(op, isinstance(x, Tensor) and x.ndim == 3 and x.shape[:2] == (T, B),
           f"x must be [T={T}, B={B}, in]", x)
    n_in = x.shape[2]
    expect(op, w_ih.shape == (4 * H, n_in) and w_hh.shape == (4 * H, H),
           f"weights must be w_ih [{4 * H}, {n_in}] and w_hh [{4 * H}, {H}]", w_ih, w_hh)
    expect(op, bias is None or bias.shape == (4 * H,), f"bias must be [{4 * H}]", bias)
    expect(op, all(t.dtype == "f32" for t in (x, w_ih, w_hh)), "training tensors must be f32", x, w_ih, w_hh)
    same_device(op, x, w_ih, w_hh, bias)


def lstm_train_forward(tape, x, w_ih, w_hh, bias=None):
    """Run the window forward from the tape's initial state; returns tape.out [T, B, H]
    (overwritten by the next window: copy it if you keep it)."""
    _check("lstm_train_forward", tape, x, w_ih, w_hh, bias)
    dev, T, B, H = tape.dev, tape.T, tape.B, tape.H
    xp = linear(x.reshape(T * B, x.shape[2]), w_ih, bias)
    k = dev.kernel("lstm_grad", "forward_step")
    for s in range(T):
        dev.run(k, ceil_div(B * H, WG), **tape._args(xp=xp, w_hh=w_hh, step=s))
    return tape.out


def lstm_train_backward(tape, x, w_ih, w_hh, dout, need_dx=True):
    """Backpropagate dout [T, B, H] (the loss gradient at every output) through the window
    last run forward: returns (dx [T, B, in] or None, {"weight_ih", "weight_hh", "bias"})."""
    op = "lstm_train_backward"
    _check(op, tape, x, w_ih, w_hh, None)
    dev, T, B, H = tape.dev, tape.T, tape.B, tape.H
    expect(op, isinstance(dout, Tensor) and dout.shape == (T, B, H), f"dout must be [{T}, {B}, {H}]", dout)
    k = dev.kernel("lstm_grad", "backward_step")
    for s in range(T - 1, -1, -1):
        dev.run(k, ceil_div(B * H, WG), **{**tape._args(xp=tape._unread, w_hh=w_hh, step=s), "dout": dout})
    da = tape.da.reshape(T * B, 4 * H)
    grads = {
        "weight_ih": matmul(da, x.reshape(T * B, x.shape[2]), trans_a=True),
        "weight_hh": matmul(da, tape.hprev.reshape(T * B, H), trans_a=True),
        "bias": reduce_sum(da, dim=0),
    }
    dx = matmul(da, w_ih).reshape(T, B, x.shape[2]) if need_dx else None
    return dx, grads


# --------------------------------------------------------------------------- self-check
# Gradients against central differences of a pure-Python float64 forward pass.


def _sig(v):
    return 1 / (1 + math.exp(-v))


def lstm_loss_ref(xs, w_ih, w_hh, b, up, T, B, n_in, H):
    """sum_t,b,j up * h_t (zero initial state): a scalar whose gradient BPTT computes."""
    total = 0.0
    for bb in range(B):
        h, c = [0.0] * H, [0.0] * H
        for t in range(T):
            x = xs[(t * B + bb) * n_in:(t * B + bb + 1) * n_in]
            a = [b[r] + sum(w_ih[r * n_in + i] * x[i] for i in range(n_in))
                 + sum(w_hh[r * H + k] * h[k] for k in range(H)) for r in range(4 * H)]
            for j in range(H):
                c[j] = _sig(a[H + j]) * c[j] + _sig(a[j]) * math.tanh(a[2 * H + j])
            h = [_sig(a[3 * H + j]) * math.tanh(c[j]) for j in range(H)]
            total += sum(up[(t * B + bb) * H + j] * h[j] for j in range(H))
    return total


@check("lstm_backward")
async def _check_lstm_backward(dev):
    r = rng(42)
    T, B, n_in, H = 3, 2, 3, 2
    xs, w_ih, w_hh = rand(r, T * B * n_in), rand(r, 4 * H * n_in), rand(r, 4 * H * H)
    b, up = rand(r, 4 * H), rand(r, T * B * H)
    tape = LSTMTape(dev, T, B, H)
    x_t, wi, wh = dev.tensor(xs, (T, B, n_in)), dev.tensor(w_ih, (4 * H, n_in)), dev.tensor(w_hh, (4 * H, H))
    lstm_train_forward(tape, x_t, wi, wh, dev.tensor(b, (4 * H,)))
    dx, g = lstm_train_backward(tape, x_t, wi, wh, dev.tensor(up, (T, B, H)))
    args = dict(xs=xs, w_ih=w_ih, w_hh=w_hh, b=b)

    def numeric(name):
        def fn(v):
            return lstm_loss_ref(**{**args, name: v}, up=up, T=T, B=B, n_in=n_in, H=H)
        return numeric_grad(fn, list(args[name]))
    tol = dict(rtol=1e-4, atol=1e-5)  # float32 BPTT over 3 steps vs float64 differences (~1e-10)
    detail = assert_close("lstm dx", await dx.read(), numeric("xs"), **tol)
    assert_close("lstm dW_ih", await g["weight_ih"].read(), numeric("w_ih"), **tol)
    assert_close("lstm dW_hh", await g["weight_hh"].read(), numeric("w_hh"), **tol)
    assert_close("lstm db", await g["bias"].read(), numeric("b"), **tol)
    return detail
