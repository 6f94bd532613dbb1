"""The regress page's worker: the browser part of `stemtone regress` (pycore/regress/browser.py
drives it with Playwright).

Runs every kernel case of pycore.regress.cases and the host-µs-per-dispatch measurement
of pycore.regress.dispatch on this browser's WebGPU device, then writes one JSON object
into #result and sets body[data-status] to "done" (or "fail" with the error in #result):

    {"adapter": "...", "user_agent": "...", "outputs": {family: [shape, base64 float32]},
     "dispatch_us": µs, "dispatch_spread": relative IQR}
"""

import base64
import json
import traceback

import js
from pyscript import document

from worker_kit import GPUWorker


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
    result = {"adapter": dev.describe(), "user_agent": str(js.navigator.userAgent),
              "outputs": {k: [list(shape), base64.b64encode(raw).decode()] for k, (shape, raw) in outputs.items()},
              "dispatch_us": us, "dispatch_spread": spread}
    finish("done", f"{len(outputs)} kernel cases, {us:.0f} µs per dispatch on {dev.describe()}", json.dumps(result))


try:
    await main()  # noqa: F704 - PyScript runs scripts with top-level await
except Exception as e:
    finish("fail", f"The regress page failed: {type(e).__name__}: {e}", traceback.format_exc())
