"""The browser half of `stemtone bench runtime --browser`: serve the app, open
site/bench.html in headless Chromium (software WebGPU where there is no GPU) through
Playwright, and return the figures its worker measured (pycore.cli.bench.runtime).

The page reports which of its figures are host time measured between two performance
marks (results' "marked": [{"figure", "start", "end", "units"}]); for those the worker
thread's CPU time between the marks, per unit, read from a Chrome trace, replaces the
wall-time figure, which stays beside it as "<figure> wall".

With HTDemucs, the random-weights file (pycore.cli.bench.random_weights, 170 MB) is
written to a temporary folder and served for the page's worker; SwiftShader then
computes two official-size segments (a warm-up that records the plan, and the measured
one), which takes minutes on a 2-core machine: the page's progress is echoed to the
command's log meanwhile."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time

from .common import BenchUnavailable

FLAGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--enable-unsafe-webgpu", "--enable-unsafe-swiftshader"]
TRACE_CATEGORIES = ["toplevel", "blink.user_timing"]   # tasks with their thread time; performance marks
QUICK_TIMEOUT_S = 900          # the page without HTDemucs
HTDEMUCS_TIMEOUT_S = 3600      # with it: two official-size segments on SwiftShader


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


def with_thread_cpu(rows: list, name: str, cpu_ms: float) -> list:
    """rows with the value of figure `name` (the worker's wall time minus its waits)
    replaced by `cpu_ms`, the worker thread's CPU time, and the old value kept in a row
    "<name> wall" right after it. rows without `name` come back as they are."""
    out = []
    for row in rows:
        if row["figure"] == name:
            out += [dict(row, value=cpu_ms), dict(row, figure=f"{name} wall")]
        else:
            out.append(row)
    return out


def wait_for_page(page, timeout_s, log, what="the bench page", error=BenchUnavailable):
    """Until body[data-status] is set, echoing the page's #status-text to `log`; `error`
    (naming `what` and where the page was) after timeout_s. The bench and regress pages."""
    deadline, last = time.monotonic() + timeout_s, None
    while not page.evaluate("document.body.dataset.status || ''"):
        text = page.text_content("#status-text")
        if text != last:
            log(f"browser: {text}")
            last = text
        if time.monotonic() > deadline:
            raise error(f"{what} did not finish within {timeout_s} s (it was at: {last})")
        page.wait_for_timeout(1000)


@contextlib.contextmanager
def served_chromium(extra=None, unavailable=BenchUnavailable, what="--browser"):
    """(browser, the server's URL) for a `with`: headless Chromium with a software WebGPU
    adapter (FLAGS) and the site served (pycore.cli.serve, `extra` {URL path: file}
    added); both are stopped on the way out. `unavailable` is raised, naming `what`
    needs it and how to install it, when Playwright, Chromium or the web packages
    (node_modules) are missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise unavailable(f"{what} needs playwright: pip install -e '.[test]' (make test installs it)") from None
    chromium = os.environ.get("STEMTONE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise unavailable(f"{what} needs Chromium: apt-get install chromium (make test installs it)")
    from .. import serve

    if not serve.vendor_installed():
        raise unavailable(f"{what} needs node_modules (pyodide, pyscript): run `npm ci` (make test does)")
    srv = serve.make_server(extra=extra)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=FLAGS)
            try:
                yield browser, srv.url
            finally:
                browser.close()
    finally:
        srv.stop()


def browser_figures(blocks=250, htdemucs=None, log=None, timeout_s=None) -> list:
    """Rows {"figure", "backend": "browser", "value", "unit"} from the bench page.
    htdemucs: (URL path, the bytes of random_weights.random_htdemucs_file), served to the
    page, which then measures an official HTDemucs segment; None skips it."""
    log = log or (lambda message: None)
    if timeout_s is None:
        timeout_s = HTDEMUCS_TIMEOUT_S if htdemucs else QUICK_TIMEOUT_S
    with tempfile.TemporaryDirectory(prefix="stemtone-bench-") as tmp:
        extra = {}
        if htdemucs:
            url, data = htdemucs
            path = os.path.join(tmp, "htdemucs-random.safetensors")
            with open(path, "wb") as f:
                f.write(data)
            extra[url] = path
        with served_chromium(extra) as (browser, url):
            page = browser.new_page()
            browser.start_tracing(page=page, categories=TRACE_CATEGORIES)
            page.goto(f"{url}/bench.html?blocks={blocks}&htdemucs={int(htdemucs is not None)}")
            wait_for_page(page, timeout_s, log)
            trace = browser.stop_tracing()
            if page.evaluate("document.body.dataset.status") != "done":
                raise BenchUnavailable("the bench page failed: " + page.inner_text("#status-text"))
            result = json.loads(page.eval_on_selector("#results", "e => e.textContent"))
    rows = result["rows"]
    for m in result["marked"]:
        rows = with_thread_cpu(rows, m["figure"], thread_cpu_ms(trace, m["start"], m["end"]) / m["units"])
    return rows
