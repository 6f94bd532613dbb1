"""Shared fixtures for the browser tests: a local server and headless Chromium.

Chromium is Debian's (`apt-get install chromium`), driven by Python Playwright through
`executable_path`; Playwright's own browser downloads are not needed. Headless Chromium
gets a software WebGPU adapter (SwiftShader, "google / swiftshader") from
--enable-unsafe-webgpu --enable-unsafe-swiftshader; it is correct but slow, so waits
are generous.
"""

import json
import os
import shutil
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")

from pycore.cli import serve  # noqa: E402

ARTIFACTS = os.path.join(REPO, "e2e", "artifacts")  # screenshots, timings (gitignored)

# quiet, reproducible headless Chromium
BASE_FLAGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# software WebGPU (SwiftShader) in headless mode
WEBGPU_FLAGS = BASE_FLAGS + ["--enable-unsafe-webgpu", "--enable-unsafe-swiftshader"]
# no WebGPU adapter at all: no GPU, and SwiftShader is not allowed for WebGPU
NO_WEBGPU_FLAGS = BASE_FLAGS + ["--disable-gpu"]


def chromium_path():
    return os.environ.get("STEMTONE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def server():
    if not serve.vendor_installed():
        pytest.fail("node_modules is missing: run `make test` (or `npm ci`) first")
    srv = serve.make_server()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def playwright():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make test)")
    if not chromium_path():
        pytest.skip("chromium is not installed (apt-get install chromium, or make test)")
    with sync_api.sync_playwright() as p:
        yield p


class BrowserPage:
    """A page of a fresh headless Chromium that records console errors."""

    def __init__(self, playwright, flags):
        self.browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=flags)
        self.page = self.browser.new_page(viewport={"width": 1200, "height": 900})
        self.errors = []
        self.console = []  # every console line, for debugging
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("crash", lambda _: self.errors.append("the page crashed"))

    def _on_console(self, msg):
        self.console.append(f"[{msg.type}] {msg.text}")
        if msg.type == "error":
            self.errors.append(f"console: {msg.text}")

    def save_json(self, name, data):
        os.makedirs(ARTIFACTS, exist_ok=True)
        with open(os.path.join(ARTIFACTS, name), "w") as f:
            json.dump(data, f, indent=1)

    def console_report(self, last=60):
        """Errors first, then the last console lines (warnings often explain a WebGPU failure)."""
        errors = "\n".join(self.errors) or "(no console errors)"
        tail = "\n".join(self.console[-last:])
        return f"{errors}\n--- last {last} console lines ---\n{tail}"

    def screenshot(self, name):
        os.makedirs(ARTIFACTS, exist_ok=True)
        path = os.path.join(ARTIFACTS, name)
        self.page.evaluate("window.scrollTo(0, 0)")  # else the sticky top bar lands mid-page
        self.page.screenshot(path=path, full_page=True)
        return path

    def close(self):
        self.browser.close()


def fake_microphone_flags(wav_path, allow=True):
    """Chromium flags for a fake microphone that plays `wav_path` (16-bit PCM WAV, looped;
    DESIGN.md section 4). allow=False denies the permission prompt instead of accepting it."""
    flags = ["--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav_path}",
             "--autoplay-policy=no-user-gesture-required"]
    return flags + (["--use-fake-ui-for-media-stream"] if allow else ["--deny-permission-prompts"])


def _browser_opener(playwright):
    opened = []

    def open_(webgpu=True, extra=(), microphone=None, allow_microphone=True):
        """extra: more Chromium flags. microphone: a 16-bit PCM WAV that a fake microphone
        plays, looped (the tone page's tests); allow_microphone=False denies its use."""
        flags = (WEBGPU_FLAGS if webgpu else NO_WEBGPU_FLAGS) + list(extra)
        if microphone is not None:
            flags += fake_microphone_flags(microphone, allow_microphone)
        bp = BrowserPage(playwright, flags)
        opened.append(bp)
        return bp

    return open_, opened


@pytest.fixture
def open_browser(playwright):
    """open_browser(webgpu=True) -> BrowserPage (with or without a WebGPU adapter); closed after the test."""
    open_, opened = _browser_opener(playwright)
    yield open_
    for bp in opened:
        bp.close()


@pytest.fixture(scope="module")
def open_module_browser(playwright):
    """Like open_browser, but closed after the test module: for a page whose slow setup
    (e.g. a separation on SwiftShader) several tests share."""
    open_, opened = _browser_opener(playwright)
    yield open_
    for bp in opened:
        bp.close()
