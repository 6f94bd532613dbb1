"""LSTM / GRU against PyTorch's nn.LSTM / nn.GRU (run in float64 on the CPU) and an
independent numpy float64 re-implementation of the documented equations.

Tolerance: the GPU computes in float32. A step's pre-activations are sums of in + H
products of O(1/sqrt(H)) weights (torch's init) with |x|, |h| <= ~1, so each step adds
a rounding error of a few 1e-7 to the state. sigmoid and tanh have slope <= 1 and the
forget / update gates are < 1, so the recurrence contracts and old errors decay instead
of accumulating. We allow 1e-5 absolute + 1e-5 relative on these O(1) activations, for
T = 1 .. 1500; measured max errors are 1e-7..3e-7. References run in float64 on the
exact float32 (or float16) values that were uploaded, so all of the difference is the
GPU's float32 arithmetic.
"""

import asyncio

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pycore.ops import rnn  # noqa: E402
from pycore.ops.rnn import gru, lstm  # noqa: E402
from pycore.gpu.selfcheck import CHECKS  # noqa: E402

RTOL = ATOL = 1e-5
MODULES = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


# --------------------------------------------------------------------------- helpers


def make_weights(dev, op, n_in, H, L, bi, bias=True, dtype="f32", seed=0):
    """A fresh torch module's state_dict uploaded to the GPU, plus the uploaded values as float64."""
    torch.manual_seed(seed)
    module = MODULES[op](n_in, H, num_layers=L, bidirectional=bi, bias=bias)
    npdt = np.float16 if dtype == "f16" else np.float32
    host = {k: v.detach().numpy().astype(npdt) for k, v in module.state_dict().items()}
    return {k: dev.tensor(v, dtype=dtype) for k, v in host.items()}, {k: v.astype(np.float64) for k, v in host.items()}


def torch_reference(op, x, w64, H, L, bi, batch_first=False, h0=None, c0=None, bias=True):
    """nn.LSTM / nn.GRU in float64 on the CPU: (out, h_n, c_n or None) as numpy arrays."""
    n_in = x.shape[-1]
    module = MODULES[op](n_in, H, num_layers=L, bidirectional=bi, batch_first=batch_first, bias=bias,
                         dtype=torch.float64)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in w64.items()})
    xt = torch.from_numpy(x.astype(np.float64))
    state = None
    if h0 is not None:
        h = torch.from_numpy(h0.astype(np.float64))
        state = (h, torch.from_numpy(c0.astype(np.float64))) if op == "lstm" else h
    with torch.no_grad():
        out, st = module(xt, state)
    if op == "lstm":
        return out.numpy(), st[0].numpy(), st[1].numpy()
    return out.numpy(), st.numpy(), None


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def numpy_reference(op, x, w64, H, L, bi, h0=None, c0=None):
    """Independent float64 implementation of PyTorch's equations; x time-major [T, B, in]."""
    T, B, _ = x.shape
    D = 2 if bi else 1
    h_n, c_n = np.zeros((L * D, B, H)), np.zeros((L * D, B, H))
    seq = x.astype(np.float64)
    for k in range(L):
        out = np.zeros((T, B, D * H))
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            w_ih, w_hh = w64["weight_ih" + sfx], w64["weight_hh" + sfx]
            b_ih, b_hh = w64.get("bias_ih" + sfx, 0.0), w64.get("bias_hh" + sfx, 0.0)
            h = h0[k * D + d].astype(np.float64) if h0 is not None else np.zeros((B, H))
            c = c0[k * D + d].astype(np.float64) if c0 is not None else np.zeros((B, H))
            for t in (range(T - 1, -1, -1) if d else range(T)):
                gx = seq[t] @ w_ih.T + b_ih
                gh = h @ w_hh.T + b_hh
                if op == "lstm":
                    i, f, g, o = np.split(gx + gh, 4, axis=1)
                    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
                    h = sigmoid(o) * np.tanh(c)
                else:
                    xr, xz, xn = np.split(gx, 3, axis=1)
                    hr, hz, hn = np.split(gh, 3, axis=1)
                    r, z = sigmoid(xr + hr), sigmoid(xz + hz)
                    h = (1 - z) * np.tanh(xn + r * hn) + z * h
                out[t, :, d * H:(d + 1) * H] = h
            h_n[k * D + d], c_n[k * D + d] = h, c
        seq = out
    return seq, h_n, (c_n if op == "lstm" else None)


def run_op(op, x, weights, H, L, bi, batch_first=False, h0=None, c0=None):
    if op == "lstm":
        out, (h_n, c_n) = lstm(x, weights, H, L, bi, batch_first, h0, c0)
        return out.numpy(), h_n.numpy(), c_n.numpy()
    out, h_n = gru(x, weights, H, L, bi, batch_first, h0)
    return out.numpy(), h_n.numpy(), None


def assert_all_close(got, want, rtol=RTOL, atol=ATOL):
    for g, w, name in zip(got, want, ("output", "h_n", "c_n")):
        if w is None:
            assert g is None
            continue
        assert g.shape == w.shape, f"{name}: shape {g.shape}, expected {w.shape}"
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=name)


def compare_with_torch(dev, rng, op, T, B, n_in, H, L, bi, batch_first, with_state, dtype="f32", seed=0):
    D = 2 if bi else 1
    weights, w64 = make_weights(dev, op, n_in, H, L, bi, dtype=dtype, seed=seed)
    x = rng.uniform(-1, 1, (B, T, n_in) if batch_first else (T, B, n_in)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (L * D, B, H)).astype(np.float32) if with_state else None
    c0 = rng.uniform(-1, 1, (L * D, B, H)).astype(np.float32) if with_state else None
    got = run_op(op, dev.tensor(x), weights, H, L, bi, batch_first,
                 dev.tensor(h0) if with_state else None, dev.tensor(c0) if with_state and op == "lstm" else None)
    want = torch_reference(op, x, w64, H, L, bi, batch_first, h0, c0)
    assert_all_close(got, want)


# --------------------------------------------------------------------------- against PyTorch

# (T, B, in, H, layers, bidirectional, batch_first, h0/c0 given)
CONFIGS = [
    (5, 3, 7, 13, 1, False, False, False),
    (6, 2, 5, 37, 2, True, False, True),
    (4, 3, 19, 16, 2, False, True, True),
    (7, 1, 3, 13, 1, True, True, False),
    (3, 5, 1, 1, 1, False, False, True),   # H = 1, in = 1
]


@pytest.mark.parametrize("op", ["lstm", "gru"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "T{}B{}in{}H{}L{}{}{}{}".format(
    *c[:5], "-bi" if c[5] else "", "-bf" if c[6] else "", "-h0" if c[7] else ""))
def test_matches_torch(dev, rng, op, cfg):
    compare_with_torch(dev, rng, op, *cfg)


@pytest.mark.parametrize("op", ["lstm", "gru"])
def test_numpy_reference(dev, rng, op):
    """The independent numpy reference agrees with torch (to float64 rounding) and with the GPU."""
    T, B, n_in, H, L, bi = 5, 2, 6, 11, 2, True
    weights, w64 = make_weights(dev, op, n_in, H, L, bi, seed=3)
    x = rng.uniform(-1, 1, (T, B, n_in)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (L * 2, B, H)).astype(np.float32)
    c0 = rng.uniform(-1, 1, (L * 2, B, H)).astype(np.float32)
    want = numpy_reference(op, x, w64, H, L, bi, h0, c0 if op == "lstm" else None)
    assert_all_close(torch_reference(op, x, w64, H, L, bi, False, h0, c0), want, rtol=1e-12, atol=1e-12)
    got = run_op(op, dev.tensor(x), weights, H, L, bi, False, dev.tensor(h0), dev.tensor(c0) if op == "lstm" else None)
    assert_all_close(got, want)


@pytest.mark.parametrize("op", ["lstm", "gru"])
def test_unbatched_input(dev, rng, op):
    """x [T, in] and h0 [L*D, H] as torch allows; batch_first does not apply then."""
    T, n_in, H, L = 6, 4, 9, 2
    weights, w64 = make_weights(dev, op, n_in, H, L, True, seed=4)
    x = rng.uniform(-1, 1, (T, n_in)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (L * 2, H)).astype(np.float32)
    c0 = rng.uniform(-1, 1, (L * 2, H)).astype(np.float32)
    got = run_op(op, dev.tensor(x), weights, H, L, True, True, dev.tensor(h0), dev.tensor(c0) if op == "lstm" else None)
    assert got[0].shape == (T, 2 * H) and got[1].shape == (L * 2, H)
    assert_all_close(got, torch_reference(op, x, w64, H, L, True, True, h0, c0))


@pytest.mark.parametrize("op", ["lstm", "gru"])
def test_no_bias(dev, rng, op):
    """A module built with bias=False has no bias entries in its state_dict."""
    T, B, n_in, H = 4, 2, 5, 7
    torch.manual_seed(5)
    module = MODULES[op](n_in, H, bias=False, bidirectional=True)
    w32 = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    assert not any(k.startswith("bias") for k in w32)
    x = rng.uniform(-1, 1, (T, B, n_in)).astype(np.float32)
    got = run_op(op, dev.tensor(x), {k: dev.tensor(v) for k, v in w32.items()}, H, 1, True)
    want = torch_reference(op, x, {k: v.astype(np.float64) for k, v in w32.items()}, H, 1, True, bias=False)
    assert_all_close(got, want)


@pytest.mark.parametrize("op", ["lstm", "gru"])
def test_f16_weights(dev, rng, op):
    """f16 weights and biases (f32 storage on a device without shader-f16): arithmetic stays
    float32, so against a reference that uses the same f16-rounded values the tolerance is
    unchanged."""
    compare_with_torch(dev, rng, op, T=5, B=2, n_in=6, H=13, L=2, bi=True, batch_first=False,
                       with_state=True, dtype="f16", seed=6)


def test_f16_weights_with_f32_biases(dev, rng):
    T, B, n_in, H = 4, 3, 5, 10
    _, w64 = make_weights(dev, "lstm", n_in, H, 1, False, dtype="f16", seed=7)
    weights = {k: dev.tensor(v, dtype="f16" if k.startswith("weight") else "f32") for k, v in w64.items()}
    if dev.has_f16:
        assert weights["weight_ih_l0"].dtype == "f16" and weights["bias_ih_l0"].dtype == "f32"
    x = rng.uniform(-1, 1, (T, B, n_in)).astype(np.float32)
    assert_all_close(run_op("lstm", dev.tensor(x), weights, H, 1, False), torch_reference("lstm", x, w64, H, 1, False))


def test_f16_weights_without_shader_f16(rng):
    from pycore.gpu.native import NativeDevice

    dev = NativeDevice(f16=False)
    assert not dev.has_f16
    compare_with_torch(dev, rng, "gru", T=3, B=2, n_in=4, H=5, L=1, bi=True, batch_first=False,
                       with_state=False, dtype="f16", seed=8)


@pytest.mark.parametrize("lanes", [2, 4, 16, 64])
@pytest.mark.parametrize("op", ["lstm", "gru"])
def test_lane_split(dev, rng, monkeypatch, op, lanes):
    """The dot-product split used on GPUs (LANES > 1: partial sums meet in workgroup memory)
    gives the same results; H = 37 leaves lanes idle, 64 lanes exceed H."""
    monkeypatch.setattr(rnn, "step_lanes", lambda dev, H: lanes)
    compare_with_torch(dev, rng, op, T=4, B=3, n_in=5, H=37, L=2, bi=True, batch_first=True, with_state=True, seed=9)


@pytest.mark.parametrize("op, bi", [("lstm", False), ("gru", True)])
def test_long_sequence(dev, rng, op, bi):
    """T in the thousands: T step dispatches per layer, several automatic flushes of the
    recorded work (Device.MAX_PENDING). Same tolerance as short sequences: the recurrence
    contracts (gates < 1, slopes <= 1), so rounding errors decay instead of piling up over
    time (measured max error 2e-7 at T = 1500 and at T = 4000)."""
    T, B, n_in, H = 1500, 2, 3, 8
    assert T > 2 * dev.MAX_PENDING
    weights, w64 = make_weights(dev, op, n_in, H, 1, bi, seed=10)
    x = rng.uniform(-1, 1, (T, B, n_in)).astype(np.float32)
    got = run_op(op, dev.tensor(x), weights, H, 1, bi)
    assert_all_close(got, numpy_reference(op, x, w64, H, 1, bi))


@pytest.mark.parametrize("op", ["lstm", "gru"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_time_chunks(dev, rng, monkeypatch, op, batch_first):
    """Input projections in chunks of time steps (as for sequences too long for one xp
    buffer): chunks of 3 steps for T = 8 (the last one shorter), both directions."""
    T, B, n_in, H, L = 8, 3, 5, 7, 2
    G, D = {"lstm": 4, "gru": 3}[op], 2
    monkeypatch.setattr(rnn, "XP_MAX_BYTES", 3 * D * B * G * H * 4)
    assert rnn.time_chunk(dev, T, B, D, G * H) == 3
    compare_with_torch(dev, rng, op, T, B, n_in, H, L, True, batch_first, with_state=True, seed=13)


@pytest.mark.parametrize("op", ["lstm", "gru"])
@pytest.mark.parametrize("B, batch_first, bi, by_matmul", [(1, False, False, True), (3, False, False, True),
                                                            (1, True, False, True), (3, True, False, False),
                                                            (2, False, True, False)])
def test_projection_by_matmul(dev, rng, op, B, batch_first, bi, by_matmul):
    """A one-direction layer whose rows are in time order (time-major, or one sequence)
    projects its inputs with one matmul (pycore.ops.matmul.linear) instead of rnn.wgsl's
    project; the other layouts keep project. Both match PyTorch; the dispatches recorded
    say which ran: per layer T steps, and project only where no matmul does it."""
    T, n_in, H, L = 5, 9, 12, 2
    compare_with_torch(dev, rng, op, T, B, n_in, H, L, bi, batch_first, with_state=True, seed=14)
    weights, _ = make_weights(dev, op, n_in, H, L, bi, seed=14)
    x = dev.tensor(rng.uniform(-1, 1, (B, T, n_in) if batch_first else (T, B, n_in)).astype(np.float32))
    plan = dev.plan()
    with plan:
        run = lstm if op == "lstm" else gru
        run(x, weights, H, L, bi, batch_first)
    labels = [step[0].label for step in plan.steps]
    plan.release()
    assert labels.count(f"rnn:{op}_step") == L * T
    assert labels.count("rnn:project") == (0 if by_matmul else L * (2 if bi else 1))
    assert any(label.startswith("matmul") for label in labels) == by_matmul


def test_layers_chain_outputs(dev, rng):
    """A 2-layer stack equals two 1-layer calls, the second fed the first's output."""
    T, B, n_in, H = 5, 2, 4, 6
    weights, _ = make_weights(dev, "gru", n_in, H, 2, True, seed=11)
    x = dev.tensor(rng.uniform(-1, 1, (T, B, n_in)).astype(np.float32))
    out2, h2 = gru(x, weights, H, num_layers=2, bidirectional=True)
    first = {k: v for k, v in weights.items() if "_l0" in k}
    second = {k.replace("_l1", "_l0"): v for k, v in weights.items() if "_l1" in k}
    y1, h1 = gru(x, first, H, bidirectional=True)
    y2, h1b = gru(y1, second, H, bidirectional=True)
    np.testing.assert_array_equal(out2.numpy(), y2.numpy())
    np.testing.assert_array_equal(h2.numpy(), np.concatenate([h1.numpy(), h1b.numpy()]))


# --------------------------------------------------------------------------- errors


@pytest.fixture
def small(dev, rng):
    weights, _ = make_weights(dev, "lstm", 3, 4, 1, False, seed=12)
    return weights, dev.tensor(rng.uniform(-1, 1, (5, 2, 3)).astype(np.float32))


def test_missing_key(small):
    weights, x = small
    del weights["weight_hh_l0"]
    with pytest.raises(ValueError, match="lstm: .*weight_hh_l0"):
        lstm(x, weights, 4)


def test_missing_layer_and_direction(small):
    weights, x = small
    with pytest.raises(ValueError, match="lstm: .*weight_ih_l0_reverse"):
        lstm(x, weights, 4, bidirectional=True)
    with pytest.raises(ValueError, match="lstm: .*weight_ih_l1"):
        lstm(x, weights, 4, num_layers=2)


def test_unexpected_key(dev, small):
    weights, x = small
    with pytest.raises(ValueError, match="lstm: unexpected weights.*weight_hr_l0"):
        lstm(x, {**weights, "weight_hr_l0": dev.tensor(np.zeros((4, 4), np.float32))}, 4)
    # a GRU's weights are not an LSTM's: gate count differs
    gw, _ = make_weights(dev, "gru", 3, 4, 1, False)
    with pytest.raises(ValueError, match=r"lstm: weights\['weight_ih_l0'\] must have shape \(16, 3\)"):
        lstm(x, gw, 4)


def test_bad_weight_shape(dev, small):
    weights, x = small
    bad = {**weights, "bias_hh_l0": dev.tensor(np.zeros(15, np.float32))}
    with pytest.raises(ValueError, match=r"lstm: weights\['bias_hh_l0'\] must have shape \(16,\)"):
        lstm(x, bad, 4)
    with pytest.raises(ValueError, match="lstm: .*shape"):
        lstm(x, weights, 5)  # hidden_size does not match the weights


def test_bad_input(dev, small):
    weights, x = small
    with pytest.raises(ValueError, match=r"lstm: weights\['weight_ih_l0'\] must have shape \(16, 7\)"):
        lstm(dev.tensor(np.zeros((5, 2, 7), np.float32)), weights, 4)
    with pytest.raises(ValueError, match="lstm: x must be"):
        lstm(dev.tensor(np.zeros((1, 5, 2, 3), np.float32)), weights, 4)
    with pytest.raises(ValueError, match="lstm: x must be f32"):
        lstm(dev.tensor(np.zeros((5, 2, 3), np.int32), dtype="i32"), weights, 4)
    with pytest.raises(ValueError, match="gru: hidden_size"):
        gru(x, weights, 0)


def test_bad_state(dev, small):
    weights, x = small
    with pytest.raises(ValueError, match=r"lstm: h0 must be f32 of shape \(1, 2, 4\)"):
        lstm(x, weights, 4, h0=dev.tensor(np.zeros((1, 5, 4), np.float32)))
    with pytest.raises(ValueError, match=r"lstm: c0 must be f32 of shape \(1, 2, 4\)"):
        lstm(x, weights, 4, c0=dev.tensor(np.zeros((2, 2, 4), np.float32)))


def test_mixed_weight_dtypes(dev, small):
    weights, x = small
    if not dev.has_f16:
        pytest.skip("needs shader-f16 for a real f16 tensor")
    mixed = {**weights, "weight_hh_l0": dev.tensor(np.zeros((16, 4), np.float16), dtype="f16")}
    with pytest.raises(ValueError, match="lstm: all weight tensors must share one dtype"):
        lstm(x, mixed, 4)


# --------------------------------------------------------------------------- self-checks


@pytest.mark.parametrize("name", ["lstm", "gru", "lstm_bidirectional"])
def test_selfcheck(dev, name):
    asyncio.run(CHECKS[name](dev))
