"""Kernel numerics: each case's output (pycore.regress.cases, from either backend)
against a float64 numpy reference computed on the host from the same seeded inputs.

    reference(family)                 the float64 reference output of a case
    errors(family, shape, raw)        (max |err|, max |err| / (|ref| + 1)) of an output
    kernel_metrics(outputs, suffix)   the metrics of run_cases' outputs

The relative error is scaled by |ref| + 1 so that values near zero (a cumsum crossing
zero, a GELU at -3) do not blow it up; both are dimensionless for inputs in [-1, 1].
Tolerances: float32 error analysis gives errors of a few ulps times the reduction
length; a kernel change that doubles the error, or adds more than 1e-6, is flagged.
"""

from __future__ import annotations

import math

import numpy as np

from .cases import CASES, H
from .metrics import metric


def _arrays(family):
    """The case's inputs as the GPU sees them (rounded to float32), in float64."""
    return {k: np.asarray(v, np.float32).astype(np.float64).reshape(shape)
            for k, (shape, v) in CASES[family].inputs().items()}


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _stft(x, n_fft, hop):
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    xp = np.pad(x, [(0, 0), (n_fft // 2, n_fft // 2)], mode="reflect")
    frames = 1 + (xp.shape[1] - n_fft) // hop
    idx = np.arange(n_fft)[None] + hop * np.arange(frames)[:, None]
    spec = np.fft.rfft(xp[:, idx] * win, axis=-1)          # [B, frames, F]
    spec = spec.transpose(0, 2, 1)
    return np.stack([spec.real, spec.imag], -1)


def _lstm(a):
    x, wi, wh, b = a["x"], a["weight_ih_l0"], a["weight_hh_l0"], a["bias_ih_l0"] + a["bias_hh_l0"]
    h = np.zeros((x.shape[1], H))
    c = np.zeros_like(h)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    out = []
    for t in range(x.shape[0]):
        g = x[t] @ wi.T + h @ wh.T + b
        i, f, gg, o = np.split(g, 4, axis=-1)
        c = sig(f) * c + sig(i) * np.tanh(gg)
        h = sig(o) * np.tanh(c)
        out.append(h)
    return np.stack(out)


def _conv1d(x, w, b, pad):
    xp = np.pad(x, [(0, 0), (0, 0), (pad, pad)])
    k = w.shape[-1]
    n = xp.shape[-1] - k + 1
    cols = np.stack([xp[:, :, j:j + n] for j in range(k)], -1)   # [B, C, n, k]
    return np.einsum("bcnk,ock->bon", cols, w) + b[None, :, None]


REFERENCES = {
    "matmul": lambda a: a["a"] @ a["b"],
    "conv": lambda a: _conv1d(a["x"], a["w"], a["b"], 2),
    "elementwise": lambda a: a["a"] + a["b"],
    "activations": lambda a: _gelu(a["x"]),
    "softmax": lambda a: _softmax(a["x"]),
    "norm": lambda a: ((a["x"] - a["x"].mean(-1, keepdims=True)) / np.sqrt(a["x"].var(-1, keepdims=True) + 1e-5)
                       * a["w"] + a["b"]),
    "reduce": lambda a: a["x"].sum(-1),
    "scan": lambda a: np.cumsum(a["x"], -1),
    "spectral": lambda a: _stft(a["x"], 256, 64),
    "rnn": _lstm,
}


def reference(family) -> np.ndarray:
    return REFERENCES[family](_arrays(family))


def errors(family, shape, raw) -> tuple:
    """(max abs error, max relative error) of a case's output bytes against the reference."""
    want = reference(family)
    got = np.frombuffer(raw, np.float32).astype(np.float64)
    if got.size != want.size:
        raise ValueError(f"kernel case {family}: output of shape {tuple(shape)}, the reference has {want.shape}")
    err = np.abs(got.reshape(want.shape) - want)
    return float(err.max()), float((err / (np.abs(want) + 1)).max())


def kernel_metrics(outputs, backend="") -> list:
    """Two metrics per family (max abs and max rel error), lower is better."""
    out = []
    for family, (shape, raw) in outputs.items():
        abs_err, rel_err = errors(family, shape, raw)
        note = CASES[family].note
        out.append(metric(f"kernels/{family}/max_abs_err{backend}", "kernels", abs_err, "", "lower",
                          tol=1e-6, rel=1.0, note=note))
        out.append(metric(f"kernels/{family}/max_rel_err{backend}", "kernels", rel_err, "", "lower",
                          tol=1e-6, rel=1.0, note=note))
    return out
