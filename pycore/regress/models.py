"""Demixing models in the regression suite: parity with the reference implementation
(SDR of ours against it, per stem), speed (real-time factor, and the ratio to the
reference from alternating paired runs) and peak GPU memory per segment.

    spleeter_metrics(dev, clip, pairs)        the released Spleeter weights against the
                                              PyTorch reference (pycore.reference)
    random_weight_metrics(dev, model, clip, reduced)
                                              HTDemucs / Open-Unmix with seeded random
                                              weights against demucs / openunmix (child process)
    sdr(want, got)                            10 log10(|want|^2 / |want - got|^2)

Parity SDRs are float32 error levels (60-150 dB); a kernel or weight change drops them by
tens of dB, so the tolerance is 3 dB. Speed ratios carry the spread of their own paired
runs (noise-aware tolerance, at least 30 %).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from .dispatch import median, spread
from .metrics import metric

PARITY_TOL_DB = 3.0
SPEED_MIN_REL = 0.3
MEMORY_REL = 0.05


def sdr(want, got) -> float:
    want = np.asarray(want, np.float64)
    err = np.sum((want - np.asarray(got, np.float64)) ** 2)
    return float("inf") if err == 0 else float(10 * np.log10(np.sum(want ** 2) / err))


def separate(dev, demixer, clip) -> tuple:
    """({stem: [2, n]}, seconds, peak GPU MiB held above what was resident) of one
    separation: its plans recorded afresh and the pool emptied first, so the figure is
    everything the separation holds (intermediates, plans, pool), not only live tensors."""
    demixer.release_plans()
    dev.trim()
    resident = dev.mem_reserved
    dev.reset_peak()
    t0 = time.perf_counter()
    out = asyncio.run(demixer.separate([clip[0], clip[1]]))
    seconds = time.perf_counter() - t0
    stems = {s: np.stack(v) for s, v in out.items()}
    return stems, seconds, (dev.mem_reserved_peak - resident) / 2 ** 20


def load_spleeter(dev, weights=None):
    from ..demix import Demixer

    return asyncio.run(Demixer.load(dev, "spleeter-2stems", weights=weights))


def spleeter_metrics(dev, clip, pairs=3, demixer=None, log=print) -> tuple:
    """(metrics, {stem: our output}) for Spleeter on `clip` [2, n] at 44.1 kHz: `pairs`
    alternating runs of ours and of the PyTorch reference (after a warm-up of each)."""
    from ..reference import spleeter_torch as ref

    demixer = demixer or load_spleeter(dev)
    weights = ref.load_weights()
    seconds = clip.shape[1] / 44100
    log(f"spleeter: warm-up, then {pairs} alternating runs of ours and the reference on {seconds:g} s")
    separate(dev, demixer, clip[:, :44100])
    ref.separate(clip[:, :44100], weights)
    ours_t, ref_t, ratios, peaks = [], [], [], []
    for _ in range(pairs):
        ours, t, peak = separate(dev, demixer, clip)
        t0 = time.perf_counter()
        want = ref.separate(clip, weights, length=clip.shape[1])
        tr = time.perf_counter() - t0
        ours_t.append(t), ref_t.append(tr), ratios.append(tr / t), peaks.append(peak)
    out = [metric(f"parity/spleeter-2stems/{s}", "parity", sdr(want[s], ours[s]), "dB", "higher",
                  tol=PARITY_TOL_DB, note="SDR of ours against the PyTorch reference, released weights")
           for s in demixer.stems]
    out += speed_metrics("spleeter-2stems", seconds, ours_t, ratios, "PyTorch CPU reference")
    out.append(metric("memory/spleeter-2stems/peak_gpu", "memory", max(peaks), "MiB", "lower", tol=1.0,
                      rel=MEMORY_REL, note="GPU working set of one 512-frame segment above the resident weights"))
    return out, ours, want


def noise(values) -> float:
    """Relative tolerance of a speed figure: 3 x the runs' spread, at least 30 %; 50 % for
    fewer than 4 runs, whose spread cannot be estimated (a shared 2-core machine drifts)."""
    return max(SPEED_MIN_REL, 3 * spread(values)) if len(values) >= 4 else 0.5


def speed_metrics(model, seconds, ours_t, ratios, ref_name) -> list:
    rtf = [seconds / t for t in ours_t]
    return [metric(f"speed/{model}/rtf", "speed", median(rtf), "x real time", "higher",
                   rel=noise(rtf), note="audio seconds per second, median of paired runs"),
            metric(f"speed/{model}/ratio_to_reference", "speed", median(ratios), "x", "higher",
                   rel=noise(ratios),
                   note=f"{ref_name} time / ours, alternating paired runs, median")]


def random_weight_metrics(dev, model, clip, reduced=True, log=print) -> list:
    """HTDemucs / umxl with seeded random weights: ours against the reference run in a
    child process on the same clip; parity SDR per stem, real-time factor and ratio
    (one pair: the reference is too slow for several here), peak GPU memory."""
    from ..cli.bench.random_weights import random_demixer, run_reference

    config = "reduced" if reduced else "official"
    log(f"{model}: random weights, {config} configuration, {clip.shape[1] / 44100:g} s")
    demixer = random_demixer(dev, model, reduced)
    separate(dev, demixer, clip[:, :44100])
    ours, t, peak = separate(dev, demixer, clip)
    info, want = run_reference(model, clip, reduced, seed=0)
    seconds = clip.shape[1] / 44100
    out = [metric(f"parity/{model}-{config}/{s}", "parity", sdr(want[s], ours[s]), "dB", "higher",
                  tol=PARITY_TOL_DB, note=f"SDR of ours against the reference, random weights ({config})")
           for s in demixer.stems]
    out += speed_metrics(f"{model}-{config}", seconds, [t], [info["seconds"] / t], "PyTorch CPU reference")
    out.append(metric(f"memory/{model}-{config}/peak_gpu", "memory", peak, "MiB", "lower", tol=1.0, rel=MEMORY_REL,
                      note="GPU working set of a separation above the resident weights"))
    return out
