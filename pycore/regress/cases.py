"""The kernel-numerics cases of `stemtone regress`: one fixed, seeded case per op family
on odd shapes. Browser-safe (no numpy): the regress page runs the same cases in a PyScript
worker and sends the outputs back; the host computes every error (pycore.regress.numerics).

    CASES                       {family: Case}
    case.inputs()               {name: (shape, [float])}, seeded pure-Python values
    case.run(dev, tensors)      the op on the uploaded inputs -> output Tensor
    run_cases(dev)              {family: (shape, output float32 bytes)}, all cases
"""

from __future__ import annotations

import random

from ..ops import activations, conv, elementwise, matmul, norm, reduce, rnn, scan, spectral


class Case:
    """inputs: {name: shape}; op(dev, tensors) -> Tensor."""

    def __init__(self, family, seed, inputs, op, note):
        self.family, self.seed, self.shapes, self.op, self.note = family, seed, inputs, op, note

    def inputs(self) -> dict:
        r = random.Random(self.seed)
        out = {}
        for name, shape in self.shapes.items():
            n = 1
            for d in shape:
                n *= d
            out[name] = (shape, [r.uniform(-1.0, 1.0) for _ in range(n)])
        return out

    def run(self, dev, tensors):
        return self.op(dev, tensors)


H = 19  # LSTM hidden size of the rnn case


def _lstm(dev, t):
    weights = {k: t[k] for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")}
    out, _ = rnn.lstm(t["x"], weights, H)
    return out


CASES = {c.family: c for c in [
    Case("matmul", 1, {"a": (37, 53), "b": (53, 29)}, lambda d, t: matmul.matmul(t["a"], t["b"]),
         "[37,53] @ [53,29]"),
    Case("conv", 2, {"x": (2, 5, 67), "w": (7, 5, 5), "b": (7,)},
         lambda d, t: conv.conv1d(t["x"], t["w"], t["b"], padding=2), "conv1d [2,5,67] * [7,5,5], padding 2"),
    Case("elementwise", 3, {"a": (3, 41, 17), "b": (17,)}, lambda d, t: elementwise.add(t["a"], t["b"]),
         "add [3,41,17] + [17]"),
    Case("activations", 4, {"x": (1001,)}, lambda d, t: activations.gelu(t["x"]), "gelu [1001]"),
    Case("softmax", 5, {"x": (13, 57)}, lambda d, t: activations.softmax(t["x"], dim=-1), "softmax [13,57]"),
    Case("norm", 6, {"x": (11, 93), "w": (93,), "b": (93,)},
         lambda d, t: norm.layer_norm(t["x"], (93,), t["w"], t["b"]), "layer_norm [11,93]"),
    Case("reduce", 7, {"x": (7, 301)}, lambda d, t: reduce.sum(t["x"], dim=-1), "sum [7,301] over the last dim"),
    Case("scan", 8, {"x": (5, 1023)}, lambda d, t: scan.cumsum(t["x"], axis=-1), "cumsum [5,1023]"),
    Case("spectral", 9, {"x": (1, 2051)}, lambda d, t: spectral.stft(t["x"], 256, 64),
         "stft [1,2051], n_fft 256, hop 64, Hann, reflect"),
    Case("rnn", 10, {"x": (23, 2, 13), "weight_ih_l0": (4 * H, 13), "weight_hh_l0": (4 * H, H),
                     "bias_ih_l0": (4 * H,), "bias_hh_l0": (4 * H,)}, _lstm, f"LSTM T=23 B=2 in=13 H={H}"),
]}


def upload(dev, case):
    return {name: dev.tensor(values, shape) for name, (shape, values) in case.inputs().items()}


async def run_cases(dev, families=None) -> dict:
    """{family: (output shape, float32 little-endian bytes)} of every case (or `families`)."""
    out = {}
    for family, case in CASES.items():
        if families and family not in families:
            continue
        y = case.run(dev, upload(dev, case))
        out[family] = (tuple(y.shape), bytes((await y.read()).tobytes()))
    return out
