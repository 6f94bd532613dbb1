"""Bench worker: `stemtone bench runtime --browser` measured in a PyScript worker, the
place the pages' GPU work runs (site/bench.html; pycore.cli.bench.runtime has the
measurements, the same code as natively).

    page -> worker   {cmd: "run", base: the site's URL (page_kit.site_url()), manifest: weights/manifest.json (JSON),
                      blocks: tone blocks to time, htdemucs: measure an HTDemucs segment}
    worker -> page   {stemtone: "progress", message}
                     {stemtone: "results", rows: JSON list of {"figure", "backend", "value", "unit"},
                      marked: JSON list of runtime.marked(...): the host times measured between
                      performance marks, counts: JSON of the tone block's counts and live GPU objects}
                     {stemtone: "error", kind, title, message, detail}

HTDemucs runs on the random-weights file that `stemtone bench runtime --browser` serves
at runtime.HTDEMUCS_URL (170 MB, official configuration); without it the run stops at
once, before measuring anything, and says to add ?htdemucs=0.
"""

import json
import traceback

import js
from polyscript import xworker
from pyscript.ffi import to_js

from pycore.cli.bench.runtime import (HTDEMUCS_SEGMENTS, HTDEMUCS_URL, TONE_20MS, dispatch_costs, figure,
                                     htdemucs_rows, marked, tone_20ms_rows, tone_block_costs, tone_rows)
from pycore.gpu.runtime import NoGPUError
from pycore.tone import load_tone_model
from pycore.tone.stream import resolve
from worker_kit import GPUWorker, Throttle, WeightsError, download, fetch_weights, post, post_error, post_no_webgpu

HTDEMUCS_NAME = "the random HTDemucs weights"


def progress(message):
    post("progress", message=message)


async def served_size(url) -> int:
    """The size of the file at url (a HEAD request); WeightsError where it is not served."""
    response = await js.fetch(url, to_js({"method": "HEAD"}))
    if not response.ok:
        raise WeightsError(f"{HTDEMUCS_NAME} are not served here ({url}: {response.status}): "
                           "`stemtone bench runtime --browser` serves them; add ?htdemucs=0 to the "
                           "address to measure without HTDemucs")
    return int(response.headers.get("Content-Length"))


class BenchWorker(GPUWorker):
    async def run(self, base, manifest, blocks, htdemucs):
        self.base = str(base)
        try:
            dev = await self.device()
        except NoGPUError as e:
            post_no_webgpu(e)
            return
        size = await served_size(self.base + HTDEMUCS_URL.lstrip("/")) if htdemucs else 0   # before minutes of work
        progress("dispatch costs")
        fresh, replayed = await dispatch_costs(dev)
        rows = [figure("fresh dispatch", "browser", fresh, "µs"),
                figure("replayed dispatch", "browser", replayed, "µs")]
        progress("downloading the violin model")
        entry = resolve("violin", manifest)
        crepe = next(m for m in manifest["models"] if m["name"] == "crepe-tiny")
        model = load_tone_model(dev, "violin", weights=await fetch_weights(self.base, entry),
                                crepe_weights=await fetch_weights(self.base, crepe), manifest=manifest)
        progress(f"{blocks} tone blocks")
        per = await tone_block_costs(dev, model, blocks=blocks, warm=min(blocks, 50))
        rows += tone_rows(per, "browser")
        progress(f"{max(1, blocks // 4)} tone blocks of 20 ms")
        per = await tone_block_costs(dev, model, blocks=max(1, blocks // 4), warm=min(blocks, 20),
                                     block=TONE_20MS, label="tone20")
        rows += tone_20ms_rows(per, "browser")
        timed = [marked("tone block host", "tone", blocks)]
        if htdemucs:
            throttle = Throttle(2.0)

            def report(fraction, message, force=False):
                if throttle.due(force):
                    progress(f"htdemucs: downloading {HTDEMUCS_NAME} ({fraction:.0%} of {size / 1e6:.0f} MB)")

            weights = await download(self.base + HTDEMUCS_URL.lstrip("/"), HTDEMUCS_NAME, size, report, None, None)
            rows += await htdemucs_rows(dev, weights.to_bytes(), "browser", progress)
            timed.append(marked("htdemucs segment host", "htdemucs", HTDEMUCS_SEGMENTS))
        post("results", rows=json.dumps(rows), marked=json.dumps(timed), counts=json.dumps(per))


worker = BenchWorker()


async def handler(event):
    data = event.data
    try:
        if str(data.cmd) == "run":
            await worker.run(data.base, json.loads(data.manifest), int(data.blocks), bool(data.htdemucs))
    except Exception as e:  # everything reaches the page
        post_error("bench", "The benchmark failed", f"{type(e).__name__}: {e}", traceback.format_exc())


xworker.onmessage = handler
