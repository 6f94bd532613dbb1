"""Kernel self-checks shared by `tests/`, `stemtone doctor` and site/diagnostics.html.

Each ops module registers small checks with `@check("name")`. A check is an async
function taking a Device; it runs the op on a small random input, compares with a
pure-Python reference (the browser has no numpy) and raises AssertionError on a
mismatch, or returns a one-line detail such as "max err 3e-7".
"""

from __future__ import annotations

import math
import random
import time

CHECKS = {}  # name -> async fn(dev) -> str

# Every ops module that registers checks; imported by load_all().
OPS_MODULES = (
    "matmul", "conv", "scan", "spectral", "spectral_mask", "elementwise", "activations", "reduce",
    "norm", "rnn", "attention", "pool", "pitch", "loudness", "ddsp", "wiener",
    "linear_grad", "lstm_grad", "loss", "adam", "spectrogram", "tone_controls",
)


def check(name):
    def deco(fn):
        if name in CHECKS:
            raise ValueError(f"self-check {name!r} registered twice")
        CHECKS[name] = fn
        return fn
    return deco


def load_all():
    import importlib

    for m in OPS_MODULES:
        try:
            importlib.import_module(f"pycore.ops.{m}")
        except ModuleNotFoundError as e:
            if e.name != f"pycore.ops.{m}":
                raise
    return CHECKS


async def run_all(dev, only=None, on_result=None):
    """Run every registered check; returns [(name, ok, detail, seconds)]."""
    load_all()
    results = []
    for name, fn in CHECKS.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        try:
            detail, ok = await fn(dev), True
        except Exception as e:  # a failing check must not stop the others
            detail, ok = f"{type(e).__name__}: {e}", False
        r = (name, ok, str(detail or ""), time.perf_counter() - t0)
        results.append(r)
        if on_result:
            on_result(*r)
    return results


# ---------------------------------------------------------------- pure-Python helpers


def rng(seed=0):
    return random.Random(seed)


def rand(r, n, lo=-1.0, hi=1.0):
    return [r.uniform(lo, hi) for _ in range(n)]


def flat(x):
    """Flatten a host array (numpy or array.array or nested list) to a list of floats."""
    if hasattr(x, "ravel"):
        return [float(v) for v in x.ravel()]
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], (list, tuple)):
        return [v for row in x for v in flat(row)]
    return [float(v) for v in x]


def assert_close(what, got, want, rtol=1e-5, atol=1e-6):
    """Elementwise |got - want| <= atol + rtol * |want|; returns a detail string."""
    got, want = flat(got), flat(want)
    if len(got) != len(want):
        raise AssertionError(f"{what}: {len(got)} values, expected {len(want)}")
    worst, worst_i = 0.0, -1
    for i, (g, w) in enumerate(zip(got, want)):
        if not math.isfinite(g):
            raise AssertionError(f"{what}: non-finite value {g} at {i} (expected {w})")
        excess = abs(g - w) - (atol + rtol * abs(w))
        if excess > 0:
            raise AssertionError(f"{what}: value {g} at index {i}, expected {w} (rtol {rtol}, atol {atol})")
        err = abs(g - w)
        if err > worst:
            worst, worst_i = err, i
    return f"max abs err {worst:.2e} over {len(got)} values"
