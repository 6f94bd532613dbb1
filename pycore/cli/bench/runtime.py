"""`stemtone bench runtime [--json] [--browser] [--quick]`: the host cost of GPU work, the
figure that decides whether a pipeline can keep up however fast the GPU is.

Host cost is the CPU time of the calling thread (time.thread_time): on lavapipe the
GPU's work runs on the driver's own threads (and inside queue.submit, which this thread
only waits for), so the calling thread's CPU time is what the host spends encoding,
packing parameters, allocating and converting; it is also what a busy machine does not
inflate. The tone block and the HTDemucs segment in the browser are measured the same
way: the CPU time of the page's worker thread between two performance marks, read from
a Chrome trace (the thread time of each task the worker ran: Python, the JS calls and
Chromium's own WebGPU client code in that thread). Their wall time minus the time spent
awaiting readbacks is reported beside it ("... host wall"): on a 2-core machine where
SwiftShader, the "GPU", computes on the same cores, that wall time is mostly time the
worker waited for a core. The dispatch figures in the browser are wall time minus waits.

Rows (`--json`: a list of {"figure", "backend", "value", "unit"}):
  fresh dispatch          host µs per dispatch recorded and submitted by ops (warm pool
                          and bind group cache), a chain of small elementwise ops
  replayed dispatch       host µs per dispatch of the same chain recorded once as a Plan
  tone block *            per 128-sample block (8 ms at 16 kHz) of the violin engine:
                          dispatches, replayed dispatches, uploads, readbacks, host ms
  <model> segment *       per demix segment: dispatches, host ms (spleeter-2stems
                          natively); HTDemucs (official configuration, random weights:
                          pycore.cli.bench.random_weights.random_htdemucs_file) on both
                          backends, with its working set: the weights plus the segment
                          plan's buffers (a plan holds exactly what one segment needs, so
                          it does not grow with the track)

How long: `--browser` took 8 min 18 s on this project's 2-core machine at load average 5
to 8, most of it SwiftShader computing two official HTDemucs segments (a warm-up that
records the plan, then the measured replay; in a run of the browser part alone the
warm-up took 2.5 min and the page 6.5 min in all); the page (site/bench.html) also
downloads the 170 MB of random weights. `--quick` skips HTDemucs on both backends (the
page's `?htdemucs=0`).

Browser-safe where it runs in the page's worker (dispatch_costs, tone_block_costs,
segment_rows, htdemucs_rows): no numpy at module level.
"""

from __future__ import annotations

import array
import math
import random
import time

CHAIN = 400            # dispatches per timed chain
BLOCK = 128            # samples per tone block (the live page's AudioWorklet quantum)


def figure(name, backend, value, unit) -> dict:
    return {"figure": name, "backend": backend, "value": value, "unit": unit}


def _clock(dev):
    """(host seconds now): the calling thread's CPU time natively; wall time minus
    readback waits in the browser."""
    if dev.backend == "native":
        return time.thread_time()
    return time.perf_counter() - dev.wait_s


def mark(dev, name):
    """A performance mark in the browser: `stemtone bench runtime --browser` reads the
    worker thread's CPU time between two marks from a Chrome trace (pycore.cli.bench.browser)."""
    if dev.backend == "browser":
        import js

        js.performance.mark(name)


def marks(label) -> tuple:
    """(start, end): the performance marks around the measured runs of `label`."""
    return f"stemtone:{label}-start", f"stemtone:{label}-end"


def marked(name, label, units) -> dict:
    """Says that figure `name` is host time over `units` runs between marks(label): what
    the bench page tells pycore.cli.bench.browser, which then measures it as CPU time."""
    start, end = marks(label)
    return {"figure": name, "start": start, "end": end, "units": units}


def _chain(dev, x, n):
    """n small elementwise dispatches, each reading the last one's output."""
    from ...ops import elementwise as E

    y = x
    for i in range(n):
        z = E.scale(y, 1.0001) if i % 2 else E.add(y, x)
        if y is not x:
            y.release()
        y = z
    return y


async def dispatch_costs(dev, n=CHAIN, repeats=5) -> tuple:
    """(fresh µs, replayed µs) per dispatch: the best of `repeats` chains of n."""
    x = dev.tensor(array.array("f", [1.0] * 256))
    for _ in range(3):  # warm: pipelines, pool, bind groups
        y = _chain(dev, x, n)
        await y.read()
        y.release()
    fresh = math.inf
    for _ in range(repeats):
        t0 = _clock(dev)
        y = _chain(dev, x, n)
        dev.flush()
        fresh = min(fresh, _clock(dev) - t0)
        await y.read()
        y.release()
    plan = dev.plan()
    with plan:
        y = _chain(dev, x, n)
    replayed = math.inf
    for _ in range(repeats + 1):
        t0 = _clock(dev)
        plan.replay()
        dev.flush()
        replayed = min(replayed, _clock(dev) - t0)
        await y.read()
    plan.release()
    x.release()
    return fresh / n * 1e6, replayed / n * 1e6


def sung_block(start, n=BLOCK, rate=16000) -> array.array:
    """A steady 220 Hz tone with vibrato, samples start .. start + n - 1."""
    out = array.array("f")
    for i in range(start, start + n):
        t = i / rate
        out.append(0.3 * math.sin(2 * math.pi * 220.0 * t + 0.8 * math.sin(2 * math.pi * 5.0 * t)))
    return out


async def tone_block_costs(dev, model, blocks=250, warm=125, block=BLOCK, label="tone") -> dict:
    """Per `block`-sample block of a ToneStream (128: the page's 8 ms block; 320: the 20 ms
    block it runs where 8 ms blocks cannot keep real time), after `warm` blocks: counts,
    host ms and wall ms; the timed blocks lie between marks(label)."""
    from ...tone.stream import ToneStream

    stream = ToneStream(model)
    pos = 0
    for _ in range(warm):
        await stream.push(sung_block(pos, block))
        pos += block
    inputs = [sung_block(pos + k * block, block) for k in range(blocks)]   # made before the clock starts
    start, end = marks(label)
    mark(dev, start)
    before, t0, w0 = dict(dev.counts), _clock(dev), time.perf_counter()
    for x in inputs:
        await stream.push(x)
    host = _clock(dev) - t0
    mark(dev, end)
    per = {k: (dev.counts[k] - before[k]) / blocks for k in before}
    per["host_ms"] = host / blocks * 1e3
    per["wall_ms"] = (time.perf_counter() - w0) / blocks * 1e3
    per["live_buffers"] = dev.live_buffers
    per["live_bind_groups"] = dev.live_bind_groups
    return per


def tone_rows(per, backend, name="tone block") -> list:
    return [figure(f"{name} host", backend, per["host_ms"], "ms"),
            figure(f"{name} dispatches", backend, per["dispatches"] + per["replayed"], "count"),
            figure(f"{name} replayed dispatches", backend, per["replayed"], "count"),
            figure(f"{name} uploads", backend, per["uploads"], "count"),
            figure(f"{name} readbacks", backend, per["readbacks"], "count"),
            figure(f"{name} wall", backend, per["wall_ms"], "ms")]


TONE_20MS = 320            # the tone page's 20 ms block (site/tone_ring.py BLOCK_SIZES)


def tone_20ms_rows(per, backend) -> list:
    """Host and wall ms of a 20 ms block (the rest of its counts equal the 8 ms block's)."""
    return [figure("tone 20 ms block host", backend, per["host_ms"], "ms"),
            figure("tone 20 ms block wall", backend, per["wall_ms"], "ms")]


HTDEMUCS_URL = "/bench/htdemucs-random.safetensors"   # where `--browser` serves the random weights
HTDEMUCS_SEGMENTS = 1   # measured HTDemucs segments (after one warm-up): minutes each on a CPU "GPU"


def noise(n, seed=0, scale=0.1) -> array.array:
    """n float32 samples of seeded Gaussian noise (standard deviation `scale`): a demix
    segment's input, made the same way natively and in the browser (no numpy)."""
    rng = random.Random(seed)
    return array.array("f", [rng.gauss(0.0, scale) for _ in range(n)])


async def segment_rows(dev, run_segment, label, backend, count=2, log=None) -> list:
    """Host ms and dispatches of `await run_segment()` (one segment, read back), best of
    count after one warm-up. The measured runs lie between marks(label) (the browser's
    CPU time is read from them)."""
    say = log or (lambda message: None)
    say(f"{label}: a first segment (records the plan)")
    await run_segment()
    best, per = math.inf, {}
    start, end = marks(label)
    mark(dev, start)
    for i in range(count):
        say(f"{label}: measured segment {i + 1} of {count}")
        before, t0 = dict(dev.counts), _clock(dev)
        await run_segment()
        best = min(best, _clock(dev) - t0)
        per = {k: dev.counts[k] - before[k] for k in before}
    mark(dev, end)
    return [figure(f"{label} segment host", backend, best * 1e3, "ms"),
            figure(f"{label} segment dispatches", backend, per["dispatches"] + per["replayed"], "count"),
            figure(f"{label} segment replayed dispatches", backend, per["replayed"], "count")]


async def htdemucs_rows(dev, weights, backend, log) -> list:
    """One HTDemucs segment (7.8 s) of the network in `weights` (a converted demucs
    file's bytes: pycore.cli.bench.random_weights.random_htdemucs_file, the official
    configuration) as a replayed plan, read back; and its working set: the weights plus
    the segment plan's buffers (a plan holds exactly what one segment needs)."""
    from ...demix.htdemucs import load_models, segment_forward

    log("htdemucs: uploading the weights")
    base = dev.mem_reserved
    (net,), _, _ = load_models(dev, weights)
    held = dev.mem_reserved - base
    raw = noise(net.audio_channels * net.training_length).tobytes()

    async def one():
        await segment_forward(net, raw).read()

    rows = await segment_rows(dev, one, "htdemucs", backend, count=HTDEMUCS_SEGMENTS, log=log)
    plan = net.segment_plan[0]
    planned = sum(size for _, size in plan.buffers)
    rows.append(figure("htdemucs working set", backend, (held + planned) / 2**20, "MiB"))
    rows.append(figure("htdemucs weights", backend, held / 2**20, "MiB"))
    plan.release()
    net.segment_plan = None
    return rows


# --------------------------------------------------------------------------- native only


def spleeter_rows(dev, log) -> list:
    """One Spleeter segment (11.9 s) with the real weights."""
    import asyncio

    import numpy as np

    from ...demix import Demixer
    from ...demix.spleeter import CHUNK

    log("spleeter-2stems: one segment")
    demixer = asyncio.run(Demixer.load(dev, "spleeter-2stems"))
    channels = list(np.frombuffer(noise(2 * CHUNK), np.float32).reshape(2, CHUNK))   # numpy in, numpy out

    async def one():
        await demixer.stream(2).push(channels)

    return asyncio.run(segment_rows(dev, one, "spleeter-2stems", "native"))


def bench_runtime(dev, browser=False, progress=True, htdemucs=True) -> list:
    """Every row natively (and, with browser=True, the browser's from headless Chromium)."""
    import asyncio

    from ...tone.stream import load_tone_model
    from .common import logger

    log = logger(progress)
    rows = []
    log("dispatch costs")
    fresh, replayed = asyncio.run(dispatch_costs(dev))
    rows += [figure("fresh dispatch", "native", fresh, "µs"), figure("replayed dispatch", "native", replayed, "µs")]
    log("tone block (violin, 128 samples, then 320)")
    violin = load_tone_model(dev, "violin")
    rows += tone_rows(asyncio.run(tone_block_costs(dev, violin)), "native")
    rows += tone_20ms_rows(asyncio.run(tone_block_costs(dev, violin, blocks=100, warm=50, block=TONE_20MS,
                                                        label="tone20")), "native")
    rows += spleeter_rows(dev, log)
    weights = None
    if htdemucs:
        from .random_weights import random_htdemucs_file

        log("htdemucs (official configuration, random weights): one segment (minutes on a CPU driver)")
        weights = random_htdemucs_file("htdemucs")
        rows += asyncio.run(htdemucs_rows(dev, weights, "native", log))
    if browser:
        from .browser import browser_figures

        log("the same in headless Chromium (SwiftShader)" + (": HTDemucs takes minutes there" if htdemucs else ""))
        rows += browser_figures(htdemucs=(HTDEMUCS_URL, weights) if htdemucs else None, log=log)
    return rows


def format_rows(rows) -> str:
    out = [f"| {'figure':40s} | {'backend':8s} | {'value':>10s} | unit", f"|{'-' * 42}|{'-' * 10}|{'-' * 12}|------"]
    for r in rows:
        v = r["value"]
        text = f"{v:.0f}" if r["unit"] == "count" and float(v).is_integer() else f"{v:.3g}" if v < 100 else f"{v:.0f}"
        out.append(f"| {r['figure']:40s} | {r['backend']:8s} | {text:>10s} | {r['unit']}")
    return "\n".join(out)
