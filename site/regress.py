"""The regress page's worker: the browser part of `stemtone regress` (pycore/regress/browser.py
drives it with Playwright).

Runs every kernel case of pycore.regress.cases and the host-µs-per-dispatch measurement
of pycore.regress.dispatch on this browser's WebGPU device; then, where the server offers
regress/job.json (`stemtone regress --backend browser` serves it: the clip and the
weights, pycore.regress.browser_models), separates the clip with each model of the job.
Writes one JSON object into #result and sets body[data-status] to "done" (or "fail" with
the error in #result):

    {"adapter": "...", "user_agent": "...", "outputs": {family: [shape, base64 float32]},
     "dispatch_us": µs, "dispatch_spread": relative IQR,
     "models": {key: {"seconds": s, "stems": {stem: [[channels, frames], base64 float32]}}}}

("models" is empty without a job.)
"""

import array
import base64
import json
import time
import traceback
import urllib.parse

import js
from pyscript import document

from worker_kit import GPUWorker

JOB = "regress/job.json"


def status(state, text):
    badge = document.getElementById("status-badge")
    badge.className = f"badge {'pass' if state == 'done' else state}"
    badge.textContent = {"running": "Running", "done": "Done", "fail": "Fail"}[state]
    document.getElementById("status-text").textContent = text


def finish(state, text, payload):
    pre = document.getElementById("result")
    pre.textContent = payload
    status(state, text)
    document.body.dataset.status = state


async def main():
    from pycore.regress.cases import run_cases
    from pycore.regress.dispatch import host_us_per_dispatch

    status("running", "Requesting a WebGPU device…")
    dev = await GPUWorker().device()
    status("running", f"Running the kernel cases on {dev.describe()}…")
    outputs = await run_cases(dev)
    status("running", "Timing dispatches…")
    us, spread = host_us_per_dispatch(dev)
    models = await run_job(dev, str(document.baseURI))
    result = {"adapter": dev.describe(), "user_agent": str(js.navigator.userAgent),
              "outputs": {k: [list(shape), base64.b64encode(raw).decode()] for k, (shape, raw) in outputs.items()},
              "dispatch_us": us, "dispatch_spread": spread, "models": models}
    finish("done", f"{len(outputs)} kernel cases, {len(models)} models, {us:.0f} µs per dispatch on "
           f"{dev.describe()}", json.dumps(result))


async def fetch_bytes(url):
    """The file's bytes, or None where the server does not offer it (404)."""
    response = await js.fetch(url)
    if response.status == 404:
        return None
    if not response.ok:
        raise RuntimeError(f"{url}: HTTP {response.status}")
    return (await response.arrayBuffer()).to_bytes()


async def run_job(dev, base) -> dict:
    """Each model of the server's job separates its clip: {key: {"seconds", "stems"}}."""
    from pycore.demix import Demixer

    raw = await fetch_bytes(urllib.parse.urljoin(base, JOB))
    if raw is None:
        return {}
    job = json.loads(raw)
    samples = array.array("f")
    samples.frombytes(await fetch_bytes(urllib.parse.urljoin(base, job["clip"])))
    n = job["frames"]
    clip = [samples[c * n:(c + 1) * n] for c in range(job["channels"])]
    out = {}
    for entry in job["models"]:
        key = entry["key"]
        status("running", f"{key}: downloading the weights…")
        weights = await fetch_bytes(urllib.parse.urljoin(base, entry["weights"]))
        demixer = await Demixer.load(dev, entry["model"], weights=weights)
        del weights
        status("running", f"{key}: separating {n / demixer.sample_rate:g} s…")
        t0 = time.perf_counter()
        stems = await demixer.separate(clip)
        seconds = time.perf_counter() - t0
        out[key] = {"seconds": seconds, "stems": {
            stem: [[len(chans), len(chans[0])], base64.b64encode(b"".join(bytes(ch) for ch in chans)).decode()]
            for stem, chans in stems.items()}}
        demixer.release_plans()
    return out


try:
    await main()  # noqa: F704 - PyScript runs scripts with top-level await
except Exception as e:
    finish("fail", f"The regress page failed: {type(e).__name__}: {e}", traceback.format_exc())
