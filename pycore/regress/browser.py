"""The browser backend of `stemtone regress`: serve the app, open site/regress.html in
headless Chromium with software WebGPU (SwiftShader) through Playwright, wait for the
worker's JSON, and turn it into metrics on the host:

    browser/kernels/...       the same kernel cases' errors against float64 numpy
    browser/parity/kernels/<family>/vs_native
                              SDR of the browser's output against the native one (dB)
    browser/dispatch/host_us  host µs per dispatch in the PyScript worker
    browser/parity/<model>/<stem>/vs_native, browser/speed/<model>/rtf
                              the suite's models on real music (browser_models.py; the
                              server adds the clip and the weights for the page)

Chromium is Debian's (apt-get install chromium); the flags are e2e/conftest.py's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile

from ..cli.bench.browser import served_chromium, wait_for_page
from . import browser_models
from .cases import run_cases
from .metrics import metric
from .models import sdr
from .numerics import kernel_metrics

PAGE_TIMEOUT_S = 900


class BrowserUnavailable(RuntimeError):
    """Chromium, Playwright or the web packages are missing; the message says how to install them."""


def run_page(extra=None, log=print) -> dict:
    """The regress page's JSON (see site/regress.py); extra: {URL path: file} the server
    adds (the models' job, browser_models.page_files)."""
    with served_chromium(extra, unavailable=BrowserUnavailable, what="the browser backend") as (browser, url):
        page = browser.new_page()
        log(f"browser: {browser.version}, {url}/regress.html")
        page.goto(f"{url}/regress.html")
        wait_for_page(page, PAGE_TIMEOUT_S, log, what="the regress page", error=RuntimeError)
        state = page.evaluate("document.body.dataset.status")
        text = page.text_content("#result") or ""
        if state != "done":
            raise RuntimeError(f"the regress page failed in Chromium: {text.strip()[-2000:] or state}")
        out = json.loads(text)
        out["version"] = f"Chromium {browser.version}"
        return out


def run_browser(dev, cfg, log=print) -> tuple:
    """(metrics, environment part) of the browser backend; dev: the native device, whose
    outputs the browser's are compared with; cfg: the suite's configuration."""
    log("browser: the regress page in headless Chromium (SwiftShader)")
    with tempfile.TemporaryDirectory(prefix="stemtone-regress-") as folder:
        extra, clip = browser_models.page_files(cfg, folder)
        page = run_page(extra, log)
    outputs = {k: (tuple(shape), base64.b64decode(b64)) for k, (shape, b64) in page["outputs"].items()}
    native = asyncio.run(run_cases(dev))
    out = kernel_metrics(outputs)
    import numpy as np

    for family, (shape, raw) in outputs.items():
        ours, theirs = np.frombuffer(raw, np.float32), np.frombuffer(native[family][1], np.float32)
        out.append(metric(f"parity/kernels/{family}/vs_native", "parity", min(sdr(theirs, ours), 200.0), "dB",
                          "higher", tol=3.0, note="SDR of the browser's output against native (capped at 200 dB)"))
    out.append(metric("dispatch/host_us", "dispatch", page["dispatch_us"], "µs", "lower",
                      rel=max(0.5, 3 * page["dispatch_spread"]),
                      note="PyScript worker: N elementwise adds recorded then flushed; median of 7 batches"))
    out += browser_models.model_metrics(dev, cfg, clip, page["models"], log)
    for m in out:
        m["name"] = "browser/" + m["name"]
    return out, {"adapter": page["adapter"], "version": page["version"] + "; " + page["user_agent"]}
