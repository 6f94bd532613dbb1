"""Bench page (site/bench.html), main thread: starts the worker's run and shows its
figures; body[data-status] becomes "done" (results in #results as JSON) or "failed".
`?blocks=N` sets the number of timed tone blocks (default 250); `?htdemucs=0` skips the
HTDemucs segment (which needs the random weights that `stemtone bench runtime --browser`
serves, and minutes on a software GPU). While a step runs, its seconds so far are shown."""

import json
import time

import js
from pyodide.ffi import create_proxy, to_js
from pyscript import document

from page_kit import by_id, connect_worker, fetch_json, show_error, site_url

state = {"worker": None, "since": 0.0, "clock": None}


def status(text, badge="running", label="Running"):
    by_id("status-text").textContent = text
    b = by_id("status-badge")
    b.className = f"badge {badge}"
    b.textContent = label
    state["since"] = time.monotonic()
    by_id("status-elapsed").textContent = ""
    if badge != "running" and state["clock"] is not None:
        js.clearInterval(state["clock"])


def tick():
    """The seconds the current step has taken (a software GPU's HTDemucs segment: minutes)."""
    seconds = time.monotonic() - state["since"]
    by_id("status-elapsed").textContent = f"{seconds:.0f} s" if seconds >= 2 else ""


def show(rows):
    body = by_id("rows")
    for r in rows:
        tr = document.createElement("tr")
        value = r["value"]
        text = f"{value:.0f}" if r["unit"] == "count" else f"{value:.3g}"
        for cell in (r["figure"], r["backend"], text, r["unit"]):
            td = document.createElement("td")
            td.textContent = cell
            tr.appendChild(td)
        body.appendChild(tr)
    by_id("results-card").hidden = False


async def on_message(event):
    data = event.data
    kind = str(getattr(data, "stemtone", ""))
    if kind == "progress":
        status(str(data.message) + "…")
    elif kind == "results":
        rows = json.loads(str(data.rows))
        by_id("results").textContent = json.dumps({"rows": rows, "marked": json.loads(str(data.marked)),
                                                   "counts": json.loads(str(data.counts))})
        show(rows)
        status("Done", "pass", "Done")
        document.body.dataset.status = "done"
    elif kind == "error":
        show_error(str(data.kind), str(data.title), str(data.message), str(getattr(data, "detail", "")))
        status(str(data.message), "fail", "Failed")
        document.body.dataset.status = "failed"


def on_crash(event):
    status(f"the worker failed: {getattr(event, 'message', event)}", "fail", "Failed")
    document.body.dataset.status = "failed"


async def main():
    manifest = await fetch_json("weights/manifest.json")
    query = js.URLSearchParams.new(js.location.search)
    blocks = int(query.get("blocks") or 250)
    htdemucs = (query.get("htdemucs") or "1") != "0"
    state["worker"] = await connect_worker("bench-worker", on_message, on_crash)
    state["worker"].postMessage(to_js({"cmd": "run", "base": site_url(),
                                       "manifest": json.dumps(manifest), "blocks": blocks, "htdemucs": htdemucs},
                                      dict_converter=js.Object.fromEntries))
    status("Measuring…")
    state["clock"] = js.setInterval(create_proxy(tick), 1000)


await main()  # noqa: F704 - PyScript runs scripts with top-level await
