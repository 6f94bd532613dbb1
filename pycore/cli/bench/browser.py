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
                page.goto(f"{srv.url}/bench.html?blocks={blocks}")
                page.wait_for_function("document.body.dataset.status", timeout=timeout_s * 1000)
                if page.evaluate("document.body.dataset.status") != "done":
                    raise BenchUnavailable("the bench page failed: " + page.inner_text("#status-text"))
                result = json.loads(page.eval_on_selector("#results", "e => e.textContent"))
            finally:
                browser.close()
    finally:
        srv.stop()
    return result["rows"]
