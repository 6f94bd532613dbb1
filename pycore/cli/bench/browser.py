"""The browser half of `stemtone bench runtime --browser`: serve the app, open
site/bench.html in headless Chromium (software WebGPU where there is no GPU) through
Playwright, and return the figures its worker measured (pycore.cli.bench.runtime)."""

from __future__ import annotations

import json
import os
import shutil

from .common import BenchUnavailable

FLAGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--enable-unsafe-webgpu", "--enable-unsafe-swiftshader"]
TRACE_CATEGORIES = ["toplevel", "blink.user_timing"]   # tasks with their thread time; performance marks


def thread_cpu_ms(trace: bytes, start: str, end: str) -> float:
    """CPU milliseconds that the thread which made performance marks `start` and `end`
    spent in its tasks between them, from a Chrome trace (the thread time `tdur` of each
    top-level task; its wall duration where the trace has no thread time, an upper
    bound)."""
    data = json.loads(trace)
    events = data["traceEvents"] if isinstance(data, dict) else data
    marks = {e["name"]: e for e in events if e.get("name") in (start, end)}
    if start not in marks or end not in marks:
        raise BenchUnavailable(f"the browser trace has no performance marks {start!r} and {end!r}")
    pid, tid = marks[start]["pid"], marks[start]["tid"]
    t0, t1 = marks[start]["ts"], marks[end]["ts"]
    total = sum(e.get("tdur", e.get("dur", 0)) for e in events
                if e.get("ph") == "X" and e.get("name") == "ThreadControllerImpl::RunTask"
                and e.get("pid") == pid and e.get("tid") == tid and t0 <= e["ts"] <= t1)
    return total / 1e3


def browser_figures(blocks=250, timeout_s=900) -> list:
    """Rows {"figure", "backend": "browser", "value", "unit"} from the bench page."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise BenchUnavailable("--browser needs playwright (pip install playwright; make test installs it)") from None
    chromium = os.environ.get("STEMTONE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise BenchUnavailable("--browser needs Chromium (apt-get install chromium; make test installs it)")
    from .. import serve

    srv = serve.make_server()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=FLAGS)
            try:
                page = browser.new_page()
                browser.start_tracing(page=page, categories=TRACE_CATEGORIES)
                page.goto(f"{srv.url}/bench.html?blocks={blocks}")
                page.wait_for_function("document.body.dataset.status", timeout=timeout_s * 1000)
                trace = browser.stop_tracing()
                if page.evaluate("document.body.dataset.status") != "done":
                    raise BenchUnavailable("the bench page failed: " + page.inner_text("#status-text"))
                result = json.loads(page.eval_on_selector("#results", "e => e.textContent"))
            finally:
                browser.close()
    finally:
        srv.stop()
    rows = result["rows"]
    cpu = thread_cpu_ms(trace, "stemtone:tone-start", "stemtone:tone-end") / blocks
    for row in rows:
        if row["figure"] == "tone block host":
            rows.insert(rows.index(row) + 1, dict(row, figure="tone block host wall"))
            row["value"] = cpu
            break
    return rows
