"""Host time per dispatch, through the public API only (browser-safe, no numpy): record
`n` small elementwise adds (pycore.ops.elementwise.add on 256 floats, one dispatch each),
then flush; the clock stops after the flush, before any readback wait. The median of
`repeat` such batches, per dispatch, in microseconds, and the spread (interquartile range
/ median) that the comparison uses as its noise-aware tolerance."""

from __future__ import annotations

import time

from ..ops import elementwise


def host_us_per_dispatch(dev, n=200, repeat=7) -> tuple:
    """(median µs per dispatch, relative spread) of `repeat` batches of `n` dispatches."""
    a = dev.tensor([0.5] * 256, (256,))
    b = dev.tensor([0.25] * 256, (256,))
    elementwise.add(a, b)      # compile and warm the pipeline
    dev.flush()
    per = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        outs = [elementwise.add(a, b) for _ in range(n)]
        dev.flush()
        per.append((time.perf_counter() - t0) / n * 1e6)
        del outs
    return median(per), spread(per)


def median(values):
    v = sorted(values)
    m = len(v) // 2
    return v[m] if len(v) % 2 else 0.5 * (v[m - 1] + v[m])


def spread(values):
    """Interquartile range over the median (0 for fewer than 4 values)."""
    v = sorted(values)
    if len(v) < 4:
        return 0.0
    q1, q3 = v[len(v) // 4], v[(3 * len(v)) // 4]
    return (q3 - q1) / median(v)
