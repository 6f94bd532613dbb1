"""Bench worker: `stemtone bench runtime --browser` measured in a PyScript worker, the
place the pages' GPU work runs (site/bench.html; pycore.cli.bench.runtime has the
measurements, the same code as natively).

    page -> worker   {cmd: "run", base: the site's URL (page_kit.site_url()), manifest: weights/manifest.json (JSON),
                      blocks: tone blocks to time}
    worker -> page   {stemtone: "progress", message}
                     {stemtone: "results", rows: JSON list of {"figure", "backend", "value", "unit"},
                      counts: JSON of the tone block's counts and live GPU objects}
                     {stemtone: "error", kind, title, message, detail}
"""

import json
import traceback

from polyscript import xworker

from pycore.cli.bench.runtime import dispatch_costs, figure, tone_block_costs, tone_rows
from pycore.gpu.runtime import NoGPUError
from pycore.tone import load_tone_model
from pycore.tone.stream import resolve
from worker_kit import GPUWorker, fetch_weights, post, post_error, post_no_webgpu


class BenchWorker(GPUWorker):
    async def run(self, base, manifest, blocks):
        self.base = str(base)
        try:
            dev = await self.device()
        except NoGPUError as e:
            post_no_webgpu(e)
            return
        post("progress", message="dispatch costs")
        fresh, replayed = await dispatch_costs(dev)
        rows = [figure("fresh dispatch", "browser", fresh, "µs"),
                figure("replayed dispatch", "browser", replayed, "µs")]
        post("progress", message="downloading the violin model")
        entry = resolve("violin", manifest)
        crepe = next(m for m in manifest["models"] if m["name"] == "crepe-tiny")
        model = load_tone_model(dev, "violin", weights=await fetch_weights(self.base, entry),
                                crepe_weights=await fetch_weights(self.base, crepe), manifest=manifest)
        post("progress", message=f"{blocks} tone blocks")
        per = await tone_block_costs(dev, model, blocks=blocks, warm=min(blocks, 50))
        rows += tone_rows(per, "browser")
        post("results", rows=json.dumps(rows), counts=json.dumps(per))


worker = BenchWorker()


async def handler(event):
    data = event.data
    try:
        if str(data.cmd) == "run":
            await worker.run(data.base, json.loads(data.manifest), int(data.blocks))
    except Exception as e:  # everything reaches the page
        post_error("bench", "The benchmark failed", f"{type(e).__name__}: {e}", traceback.format_exc())


xworker.onmessage = handler
