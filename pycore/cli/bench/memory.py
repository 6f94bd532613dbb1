"""`stemtone bench memory`: our peak GPU memory separating tracks of growing length
(random weights, stereo noise streamed in 10 s blocks). No reference: the measure is
the longest track's peak against the shortest's, which must stay within 1.10."""

from __future__ import annotations

import time

from .common import logger, row
from .random_weights import random_demixer


def bench_memory(dev, model, lengths=(60.0, 600.0), reduced=True, progress=True):
    """`stemtone bench memory`: our peak GPU memory separating inputs of each length
    (seconds; stereo noise, streamed in 10 s blocks, outputs dropped), random weights.
    The point: it must not grow with the track."""
    import numpy as np

    log = logger(progress)

    demixer = random_demixer(dev, model, reduced)
    rng = np.random.default_rng(0)
    rows = []
    for seconds in lengths:
        log(f"{model}: {seconds:g} s")
        demixer.release_plans()  # recorded afresh: the measure includes the plans
        dev.trim()
        resident = dev.mem_reserved
        dev.reset_peak()
        t0 = time.perf_counter()
        _stream_noise(demixer, rng, int(seconds * demixer.sample_rate))
        rows.append(row(f"{model} ({'reduced' if reduced else 'official'}), {seconds:g} s", "MiB",
                        dev.mem_reserved_peak / 2 ** 20,
                        note=f"peak GPU memory held (weights, plans, pool); weights and the rest resident "
                             f"before {resident / 2 ** 20:.1f} MiB; {time.perf_counter() - t0:.0f} s"))
    if len(rows) > 1:
        rows.append(row("  longest / shortest", "", rows[-1]["ours"] / rows[0]["ours"],
                        note="must stay within 1.10"))
    return rows


def _stream_noise(demixer, rng, n):
    """Push n samples of stereo noise through demixer.stream in 10 s blocks; drop the stems."""
    import asyncio

    import numpy as np

    block = 10 * demixer.sample_rate

    async def go():
        stream = demixer.stream(2, stats=(0.0, 0.1) if demixer.name.startswith("htdemucs") else None)
        for a in range(0, n, block):
            x = (rng.standard_normal((2, min(block, n - a))) * 0.1).astype(np.float32)
            await stream.push([x[0], x[1]])
        await stream.finish()

    asyncio.run(go())
