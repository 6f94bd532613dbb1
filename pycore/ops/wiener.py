"""Multichannel Wiener filtering as in Open-Unmix (kernels/wiener.wgsl).

    Y = wiener(X, mags, win=300, eps=1e-10)

X [2, F, T, 2] is the stereo mixture's STFT ((re, im) last, as pycore.ops.spectral.stft);
mags [J, T, 2, F] the J sources' magnitude estimates (the Open-Unmix models' output).
Y [J * 2, F, T, 2] (row j * 2 + c) holds the sources' STFTs after one EM iteration of
openunmix.filtering.wiener (softmask=False, residual=False), applied to windows of `win`
frames independently as openunmix's Separator does (wiener_win_len), ready for istft.

Three dispatches: the per-window peak |X|^2 (the reference's max_abs scaling), the
per-window spatial covariances R_j of every bin, and the per-(frame, bin) filter.
"""

from __future__ import annotations

import math

from ..gpu.runtime import Tensor, ceil_div
from ..gpu.selfcheck import assert_close, check, flat, rand, rng
from . import expect, expect_dtype, same_device

WG = 64


def wiener(X, mags, win=300, eps=1e-10):
    """One EM iteration of the stereo Wiener filter; see the module docstring."""
    op = "wiener"
    for name, t in (("X", X), ("mags", mags)):
        expect(op, isinstance(t, Tensor), f"{name} must be a Tensor")
        expect_dtype(op, t, "f32")
    same_device(op, X, mags)
    expect(op, X.ndim == 4 and X.shape[0] == 2 and X.shape[-1] == 2, "X must be [2, F, T, 2] (stereo)", X)
    _, F, T, _ = X.shape
    expect(op, mags.ndim == 4 and mags.shape[1:] == (T, 2, F), f"mags must be [J, {T}, 2, {F}]", X, mags)
    expect(op, isinstance(win, int) and not isinstance(win, bool) and win >= 1, f"win must be an int >= 1, got {win!r}")
    expect(op, isinstance(eps, (int, float)) and eps > 0, f"eps must be > 0, got {eps!r}")
    J = mags.shape[0]
    dev = X.dev
    windows = ceil_div(T, win)
    peak = dev.empty((max(windows, 1),))
    cov = dev.empty((max(windows, 1), J, F, 4))
    out = dev.empty((J * 2, F, T, 2))
    if out.size == 0:
        return out
    args = dict(spec=X, mags=mags, peak=peak, cov=cov, out=out,
                nbins=F, frames=T, win=win, windows=windows, sources=J, eps=float(eps))
    dev.run(dev.kernel("wiener", "wiener_peak"), windows, **args)
    dev.run(dev.kernel("wiener", "wiener_stats", consts={"WG": WG}), ceil_div(windows * J * F, WG), **args)
    dev.run(dev.kernel("wiener", "wiener_apply", consts={"WG": WG}), ceil_div(F * T, WG), **args)
    peak.release()
    cov.release()
    return out


# --------------------------------------------------------------------------- self-check


def reference(x, s, win, eps=1e-10):
    """Pure Python: x[c][f][t] complex, s[j][t][c][f] floats -> y[j][c][f][t] complex,
    written from openunmix.filtering (wiener + expectation_maximization, 1 iteration)."""
    C, F, T, J = 2, len(x[0]), len(x[0][0]), len(s)
    x = [[[v if v != 0 else 1 + 0j for v in row] for row in ch] for ch in x]
    y = [[[[0j] * T for _ in range(F)] for _ in range(C)] for _ in range(J)]
    for t0 in range(0, T, win):
        ts = range(t0, min(T, t0 + win))
        m = max(1.0, max(abs(x[c][f][t]) for c in range(C) for f in range(F) for t in ts) / 10.0)
        est = {}  # (j, t, f) -> ([y_c], v)
        for j in range(J):
            for t in ts:
                for f in range(F):
                    ys = [s[j][t][c][f] * (x[c][f][t] / abs(x[c][f][t])) / m for c in range(C)]
                    est[j, t, f] = ys, sum(abs(v) ** 2 for v in ys) / C
        for f in range(F):
            R = []
            for j in range(J):
                acc = [[0j, 0j], [0j, 0j]]
                weight = eps
                for t in ts:
                    ys, v = est[j, t, f]
                    weight += v
                    for a in range(C):
                        for b in range(C):
                            acc[a][b] += ys[a] * ys[b].conjugate()
                R.append([[acc[a][b] / weight for b in range(C)] for a in range(C)])
            for t in ts:
                cxx = [[math.sqrt(eps) * (a == b) + sum(est[j, t, f][1] * R[j][a][b] for j in range(J))
                        for b in range(C)] for a in range(C)]
                det = cxx[0][0] * cxx[1][1] - cxx[0][1] * cxx[1][0]
                inv = [[cxx[1][1] / det, -cxx[0][1] / det], [-cxx[1][0] / det, cxx[0][0] / det]]
                xs = [x[c][f][t] / m for c in range(C)]
                for j in range(J):
                    v = est[j, t, f][1]
                    gain = [[v * sum(R[j][a][k] * inv[k][b] for k in range(C)) for b in range(C)] for a in range(C)]
                    for a in range(C):
                        y[j][a][f][t] = m * sum(gain[a][b] * xs[b] for b in range(C))
    return y


@check("wiener")
async def _check_wiener(dev):
    r = rng(11)
    F, T, J, win = 5, 7, 3, 3
    xv = rand(r, 2 * F * T * 2, -20.0, 20.0)
    xv[0] = xv[1] = 0.0  # an exact zero: read as 1 + 0i, as the reference does
    sv = rand(r, J * T * 2 * F, 0.0, 5.0)
    X = dev.tensor(xv, (2, F, T, 2))
    S = dev.tensor(sv, (J, T, 2, F))
    got = flat(await wiener(X, S, win=win).read())
    xc = [[[complex(xv[((c * F + f) * T + t) * 2], xv[((c * F + f) * T + t) * 2 + 1]) for t in range(T)]
           for f in range(F)] for c in range(2)]
    sj = [[[[sv[((j * T + t) * 2 + c) * F + f] for f in range(F)] for c in range(2)] for t in range(T)]
          for j in range(J)]
    ref = reference(xc, sj, win)
    want = []
    for j in range(J):
        for c in range(2):
            for f in range(F):
                for t in range(T):
                    want += [ref[j][c][f][t].real, ref[j][c][f][t].imag]
    # a handful of f32 products and one 2x2 inversion per value; the filter's condition
    # can amplify rounding, hence a relative tolerance of 1e-3 of the largest output
    scale = max(abs(v) for v in want)
    assert_close("wiener", got, want, atol=1e-3 * scale, rtol=1e-3)
