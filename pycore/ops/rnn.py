"""Recurrent layers with PyTorch's semantics: lstm (nn.LSTM) and gru (nn.GRU).

    out, (h_n, c_n) = lstm(x, weights, hidden_size, num_layers=1, bidirectional=False,
                           batch_first=False, h0=None, c0=None)
    out, h_n        = gru(x, weights, hidden_size, num_layers=1, bidirectional=False,
                          batch_first=False, h0=None)

x is [T, B, in] ([B, T, in] with batch_first, or unbatched [T, in]); out is [T, B, D*H]
(likewise), the reverse direction's features after the forward ones; h0, c0, h_n, c_n
are [num_layers * D, B, H] ([num_layers * D, H] unbatched), D = 2 if bidirectional.
`weights` maps names to Tensors exactly like the module's state_dict(): weight_ih_l{k},
weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}, plus the same with suffix "_reverse"
(weight_ih [G*H, in], weight_hh [G*H, H], biases [G*H]; gate rows i, f, g, o for LSTM
(G = 4) and r, z, n for GRU (G = 3)). A module built with bias=False has no bias
entries. Weights may be f16 tensors, biases too; arithmetic is float32. Inference only:
dropout between layers (training) is not applied, proj_size is not supported.

Per layer: one dispatch per direction projects every time step's input (W_ih x + b_ih
over all T * B rows; in chunks of time steps when that would exceed XP_MAX_BYTES, so
long sequences fit the GPU's binding limit), then one dispatch per time step runs the
recurrence for both directions, so a layer costs T + 1 + D * (number of chunks)
dispatches and the state never leaves the GPU (see kernels/rnn.wgsl). A one-direction
layer whose projections fit one chunk and whose rows are in time order (time-major, or
one sequence) projects with pycore.ops.matmul.linear instead of rnn.wgsl's project:
the same product, from the tuned matmul kernels (on lavapipe 2-3x faster for a DDSP
decoder block of 5 frames, whose 5 rows leave most of project's 4 x 4 blocks idle).
"""

from __future__ import annotations

import array
import math

from ..gpu.runtime import Tensor, ceil_div
from ..gpu.selfcheck import assert_close, check, flat, rand, rng
from . import expect, expect_loop_steps, same_device
from .matmul import linear

GATES = {"lstm": 4, "gru": 3}
WG = 64  # invocations per workgroup in rnn.wgsl
XP_MAX_BYTES = 32 * 2**20  # input projections held at once; longer sequences go in chunks

# --------------------------------------------------------------------------- public ops


def lstm(x, weights, hidden_size, num_layers=1, bidirectional=False, batch_first=False, h0=None, c0=None):
    """nn.LSTM forward: returns (output, (h_n, c_n))."""
    out, h_n, c_n = _rnn("lstm", x, weights, hidden_size, num_layers, bidirectional, batch_first, h0, c0)
    return out, (h_n, c_n)


def gru(x, weights, hidden_size, num_layers=1, bidirectional=False, batch_first=False, h0=None):
    """nn.GRU forward: returns (output, h_n)."""
    out, h_n, _ = _rnn("gru", x, weights, hidden_size, num_layers, bidirectional, batch_first, h0, None)
    return out, h_n


def step_lanes(dev, hidden_size: int) -> int:
    """How many invocations share one hidden unit's recurrent dot products (LANES).

    CPU drivers (lavapipe, SwiftShader) run invocations as lanes of a few SIMD cores:
    one invocation per unit, no workgroup barrier. On a GPU, B * H units are often too
    few to fill it (B = 1 is common), and with one invocation per unit neighbours read
    weights H apart; splitting each dot product over up to 32 lanes fixes both. This is
    a heuristic: it has not been measured on a real GPU yet.
    """
    info = dev.adapter_info
    text = " ".join(str(v) for v in info.values()).lower()
    if str(info.get("adapter_type", "")).upper() == "CPU" or any(
            s in text for s in ("llvmpipe", "lavapipe", "swiftshader")):
        return 1
    if hidden_size >= 256:
        return 32
    if hidden_size >= 64:
        return 16
    return 4


# --------------------------------------------------------------------------- validation


def _int(op, name, v, lo):
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= lo
    expect(op, ok, f"{name} must be an int >= {lo}, got {v!r}")


def _layer_weights(op, weights, G, H, L, D, n_in):
    """[[(w_ih, w_hh, b_ih, b_hh) per direction] per layer], after checking every entry."""
    expect(op, isinstance(weights, dict), f"weights must be a dict name -> Tensor, got {type(weights).__name__}")
    has_bias = "bias_ih_l0" in weights or "bias_hh_l0" in weights
    layers, wanted = [], set()
    for k in range(L):
        dirs = []
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            k_in = n_in if k == 0 else D * H
            shapes = {"weight_ih" + sfx: (G * H, k_in), "weight_hh" + sfx: (G * H, H)}
            if has_bias:
                shapes.update({"bias_ih" + sfx: (G * H,), "bias_hh" + sfx: (G * H,)})
            for name, shape in shapes.items():
                wanted.add(name)
                expect(op, name in weights, f"weights has no {name!r} (keys as in torch's state_dict: "
                       f"num_layers={L}, bidirectional={D == 2}, bias={has_bias})")
                t = weights[name]
                expect(op, isinstance(t, Tensor), f"weights[{name!r}] must be a Tensor, got {type(t).__name__}")
                expect(op, t.shape == shape, f"weights[{name!r}] must have shape {shape}", t)
                expect(op, t.dtype in ("f32", "f16"), f"weights[{name!r}] must be f32 or f16", t)
            get = lambda n: weights.get(n + sfx)  # noqa: E731
            dirs.append((get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")))
        layers.append(dirs)
    extra = sorted(set(weights) - wanted)
    expect(op, not extra, f"unexpected weights {extra} for num_layers={L}, bidirectional={D == 2}, "
           f"bias={has_bias} (proj_size is not supported)")
    ws = [w for dirs in layers for entry in dirs for w in entry[:2]]
    bs = [b for dirs in layers for entry in dirs for b in entry[2:] if b is not None]
    for group, what in ((ws, "weight"), (bs, "bias")):
        expect(op, len({t.dtype for t in group}) <= 1, f"all {what} tensors must share one dtype", *group)
    return layers, has_bias, ws[0].dtype, (bs[0].dtype if bs else "f32")


def _state(op, name, t, shape):
    if t is None:
        return
    expect(op, isinstance(t, Tensor), f"{name} must be a Tensor or None")
    expect(op, t.shape == shape and t.dtype == "f32", f"{name} must be f32 of shape {shape}", t)


# --------------------------------------------------------------------------- the layer stack


def _rnn(op, x, weights, H, L, bidirectional, batch_first, h0, c0):
    # ---- validate everything before touching the GPU
    G = GATES[op]
    expect(op, isinstance(x, Tensor), f"x must be a Tensor, got {type(x).__name__}")
    _int(op, "hidden_size", H, 1)
    _int(op, "num_layers", L, 1)
    D = 2 if bidirectional else 1
    expect(op, x.dtype == "f32", "x must be f32", x)
    expect(op, x.ndim in (2, 3), "x must be [T, B, in], [B, T, in] (batch_first) or unbatched [T, in]", x)
    if x.ndim == 2:
        (T, n_in), B = x.shape, 1
    elif batch_first:
        B, T, n_in = x.shape
    else:
        T, B, n_in = x.shape
    expect(op, T >= 1 and B >= 1 and n_in >= 1, "x must not be empty", x)
    # project loops over a layer's input features, a step over h_prev's H (then merges
    # at most 64 lanes)
    width = max(n_in, D * H)
    expect_loop_steps(op, width + 68, f"layer inputs of {width} features", x)
    layers, has_bias, wdt, bdt = _layer_weights(op, weights, G, H, L, D, n_in)
    state_shape = (L * D, H) if x.ndim == 2 else (L * D, B, H)
    _state(op, "h0", h0, state_shape)
    _state(op, "c0", c0, state_shape)
    dev = same_device(op, x, h0, c0, *weights.values())

    # ---- record the dispatches
    aliases = {"W": wdt, "B": bdt}
    k_project = dev.kernel("rnn", "project", aliases=aliases)
    k_copy = dev.kernel("rnn", "copy_state", aliases=aliases)
    k_final = dev.kernel("rnn", "final_state", aliases=aliases)
    lanes = step_lanes(dev, H)
    k_step = dev.kernel("rnn", f"{op}_step", consts={"LANES": lanes}, aliases=aliases)

    n_out = G * H
    time_major = x.ndim == 2 or not batch_first
    h_n = dev.empty(state_shape)
    c_n = dev.empty(state_shape) if op == "lstm" else dev.empty((1,))  # GRU: binding c is unused
    chunk = time_chunk(dev, T, B, D, n_out)
    # one matmul per layer projects it (see the module docstring); else xp holds a chunk
    by_matmul = D == 1 and chunk == T and (time_major or B == 1)
    xp = dev.empty((1,) if by_matmul else (D, chunk * B, n_out))
    dummy = layers[0][0][0]  # bound where a dispatch reads nothing (read-only bindings only)
    args = dict(
        rows=0, chunk_rows=chunk * B, t0_f=0, t0_r=0, n_in=n_in, n_out=n_out, xp_off=0,
        has_bias=int(has_bias), T=T, batch=B, H=H, D=D, step=0, row_t=B if time_major else 1,
        row_b=1 if time_major else T, state_off=0, n=h_n.size, has_src=0,
        seq=x, w_f=dummy, w_r=dummy, b_f=dummy, b_r=dummy, xp=xp, h=h_n, c=c_n,
    )

    # Initial state: h0 -> h_n, c0 -> c_n, or zeros (then `seq` = x is bound but not read).
    # Writable bindings must be distinct buffers, hence c = h_n while copying into c_n.
    dev.run(k_copy, ceil_div(h_n.size, WG), **{**args, "seq": _or(h0, x), "has_src": int(h0 is not None)})
    if op == "lstm":
        dev.run(k_copy, ceil_div(c_n.size, WG),
                **{**args, "seq": _or(c0, x), "has_src": int(c0 is not None), "h": c_n, "c": h_n})

    seq = x
    for k, dirs in enumerate(layers):
        # dirs[-1] is dirs[0] when unidirectional
        (_, w_hh_f, _, b_hh_f), (_, w_hh_r, _, b_hh_r) = dirs[0], dirs[-1]
        y = dev.empty(_out_shape(x, batch_first, T, B, D * H))
        layer = {**args, "seq": y, "state_off": k * D * B * H, "w_f": w_hh_f, "w_r": w_hh_r,
                 "b_f": _or(b_hh_f, w_hh_f), "b_r": _or(b_hh_r, w_hh_r)}
        groups = ceil_div(D * B * H * lanes, WG)
        projected = None
        if by_matmul:
            w_ih, _, b_ih, _ = dirs[0]
            projected = linear(seq.reshape(T * B, seq.shape[-1]), w_ih, b_ih)
            layer["xp"] = projected
        for s in range(T):
            if s % chunk == 0 and not by_matmul:
                # input projections of the next `chunk` steps: forward times s .. s + n - 1,
                # reverse times T - s - n .. T - s - 1; one dispatch per direction
                n = min(chunk, T - s)
                t0 = (s, T - s - n)
                for d, (w_ih, _, b_ih, _) in enumerate(dirs):
                    bias = _or(b_ih, w_ih)
                    dev.run(k_project, ceil_div(ceil_div(n * B, 4) * ceil_div(n_out, 4), WG),
                            **{**args, "seq": seq, "n_in": seq.shape[-1], "rows": n * B,
                               "t0_f": t0[d], "xp_off": d * chunk * B * n_out,
                               "w_f": w_ih, "w_r": w_ih, "b_f": bias, "b_r": bias})
                layer["t0_f"], layer["t0_r"] = t0
            dev.run(k_step, groups, **{**layer, "step": s})
        dev.run(k_final, ceil_div(D * B * H, WG), **layer)
        if projected is not None:
            projected.release()
        seq = y

    return seq, h_n, (c_n if op == "lstm" else None)


def time_chunk(dev, T, B, D, n_out) -> int:
    """Time steps whose input projections are held at once (xp <= XP_MAX_BYTES)."""
    budget = min(XP_MAX_BYTES, dev.max_binding)
    return max(1, min(T, budget // (D * B * n_out * 4)))


def _or(t, dummy):
    """t, or a stand-in binding where the kernel will not read it (no h0 / no biases)."""
    return t if t is not None else dummy


def _out_shape(x, batch_first, T, B, F):
    if x.ndim == 2:
        return (T, F)
    return (B, T, F) if batch_first else (T, B, F)


# --------------------------------------------------------------------------- self-checks
#
# A pure-Python float64 reference of the same equations, straight from PyTorch's docs.


def _sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


def _reference(op, xs, wts, H, L, D, h0=None, c0=None):
    """xs: T lists of B lists of features (time-major); wts: name -> flat list;
    h0, c0: [L*D][B][H] nested lists or None. Returns (out [T][B][D*H], h_n, c_n)."""
    G, T, B = GATES[op], len(xs), len(xs[0])

    def affine(w, bias, v):  # w [G*H, len(v)] flat: w v + bias
        n = len(v)
        return [sum(w[r * n + i] * v[i] for i in range(n)) + (bias[r] if bias else 0.0) for r in range(G * H)]

    h_n = [[None] * B for _ in range(L * D)]
    c_n = [[None] * B for _ in range(L * D)]
    seq = xs
    for k in range(L):
        out = [[[0.0] * (D * H) for _ in range(B)] for _ in range(T)]
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            w_ih, w_hh = wts["weight_ih" + sfx], wts["weight_hh" + sfx]
            b_ih, b_hh = wts.get("bias_ih" + sfx), wts.get("bias_hh" + sfx)
            slot = k * D + d
            for b in range(B):
                hv = list(h0[slot][b]) if h0 else [0.0] * H
                cv = list(c0[slot][b]) if c0 else [0.0] * H
                for t in (range(T - 1, -1, -1) if d else range(T)):
                    gx, gh = affine(w_ih, b_ih, seq[t][b]), affine(w_hh, b_hh, hv)
                    for j in range(H):
                        if op == "lstm":  # gate rows i, f, g, o
                            i_, f_, o_ = (_sigmoid(gx[q * H + j] + gh[q * H + j]) for q in (0, 1, 3))
                            g_ = math.tanh(gx[2 * H + j] + gh[2 * H + j])
                            cv[j] = f_ * cv[j] + i_ * g_
                            out[t][b][d * H + j] = o_ * math.tanh(cv[j])
                        else:  # gate rows r, z, n
                            r_ = _sigmoid(gx[j] + gh[j])
                            z_ = _sigmoid(gx[H + j] + gh[H + j])
                            n_ = math.tanh(gx[2 * H + j] + r_ * gh[2 * H + j])
                            out[t][b][d * H + j] = (1 - z_) * n_ + z_ * hv[j]
                    hv = out[t][b][d * H:(d + 1) * H]
                h_n[slot][b], c_n[slot][b] = hv, cv
        seq = out
    return seq, h_n, (c_n if op == "lstm" else None)


def _f32(values):
    return list(array.array("f", values))  # rounded to float32, as uploaded


async def _selfcheck(dev, op, T, B, n_in, H, L, D, batch_first, with_state, seed):
    r = rng(seed)
    G, s = GATES[op], H ** -0.5  # torch's init range U(-1/sqrt(H), 1/sqrt(H))
    wts, tensors = {}, {}
    for k in range(L):
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            k_in = n_in if k == 0 else D * H
            for name, shape in ((f"weight_ih{sfx}", (G * H, k_in)), (f"weight_hh{sfx}", (G * H, H)),
                                (f"bias_ih{sfx}", (G * H,)), (f"bias_hh{sfx}", (G * H,))):
                wts[name] = _f32(rand(r, G * H * (shape[1] if len(shape) == 2 else 1), -s, s))
                tensors[name] = dev.tensor(wts[name], shape)
    xs = [[_f32(rand(r, n_in)) for _ in range(B)] for _ in range(T)]
    h0 = c0 = None
    if with_state:
        h0, c0 = ([[_f32(rand(r, H)) for _ in range(B)] for _ in range(L * D)] for _ in range(2))
    if batch_first:
        x = dev.tensor(flat([xs[t][b] for b in range(B) for t in range(T)]), (B, T, n_in))
    else:
        x = dev.tensor(flat(xs), (T, B, n_in))
    h0_t, c0_t = (dev.tensor(flat(v), (L * D, B, H)) if v else None for v in (h0, c0))
    if op == "lstm":
        out, (h_n, c_n) = lstm(x, tensors, H, L, D == 2, batch_first, h0_t, c0_t)
    else:
        (out, h_n), c_n, c0 = gru(x, tensors, H, L, D == 2, batch_first, h0_t), None, None
    want_out, want_h, want_c = _reference(op, xs, wts, H, L, D, h0, c0)
    if batch_first:
        want_out = [[want_out[t][b] for t in range(T)] for b in range(B)]
    # float32: each step sums in + H products of O(1/sqrt(H)) weights with |x|, |h| <= 1,
    # a rounding error ~1e-7 per step that the gates damp; far below 1e-5 here.
    tol = dict(rtol=1e-5, atol=1e-5)
    detail = assert_close(f"{op} output", flat(await out.read()), flat(want_out), **tol)
    assert_close(f"{op} h_n", flat(await h_n.read()), flat(want_h), **tol)
    if c_n is not None:
        assert_close(f"{op} c_n", flat(await c_n.read()), flat(want_c), **tol)
    return detail


@check("lstm")
async def _check_lstm(dev):
    return await _selfcheck(dev, "lstm", T=3, B=2, n_in=3, H=4, L=1, D=1, batch_first=False,
                            with_state=True, seed=1)


@check("gru")
async def _check_gru(dev):
    return await _selfcheck(dev, "gru", T=3, B=2, n_in=3, H=4, L=2, D=1, batch_first=False,
                            with_state=True, seed=2)


@check("lstm_bidirectional")
async def _check_lstm_bidirectional(dev):
    return await _selfcheck(dev, "lstm", T=3, B=2, n_in=3, H=4, L=1, D=2, batch_first=True,
                            with_state=False, seed=3)
