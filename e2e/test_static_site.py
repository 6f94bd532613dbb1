"""The static build (`stemtone build-site`, pycore/cli/site_build.py) behind a server that
sends no special headers (`python -m http.server`), then offline.

One browser, in order: the diagnostics page runs every kernel self-check (the service
worker installs, the page reloads once and is cross-origin isolated without any server
header); the demix page separates a 2 s clip; the tone page loads its instrument. Then
the network goes off (Playwright's context.set_offline): the demix page reloads from the
service worker's cache and separates the clip again, with the weights from the browser's
cache; the tone page reloads and loads its instrument. Every page says the build it runs.
Screenshots of the installed app go to e2e/artifacts/static-*.png.
"""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
import audio_fixtures  # noqa: E402

from pycore.cli.site_build import Site  # noqa: E402

# Spleeter, and what the tone page needs: CREPE and every instrument (it lists the manifest's)
MODELS = ["spleeter-2stems", "crepe-tiny", "ddsp-flute", "ddsp-violin", "ddsp-trumpet", "ddsp-saxophone",
          "ddsp-guitar"]
CLIP_S = 2.0
READY_TIMEOUT_MS = 180_000
SEPARATE_TIMEOUT_MS = 600_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def static_site(tmp_path_factory):
    """OUT/ of a build, served by `python -m http.server` (no COOP/COEP headers)."""
    out = tmp_path_factory.mktemp("site")
    info = Site(MODELS).build(str(out))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield url, info, out
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def clip():
    return str(audio_fixtures.real_music_wav(CLIP_S))


@pytest.fixture(scope="module")
def browser(open_module_browser):
    return open_module_browser(webgpu=True)


def failure(bp, what):
    page = bp.page
    error = page.inner_text("#error") if page.is_visible("#error") else "(no error shown)"
    return f"{what}\nerror on the page: {error}\nconsole:\n{bp.console_report()}"


def separate(bp, clip):
    page = bp.page
    page.wait_for_selector("body[data-ready]", state="attached", timeout=READY_TIMEOUT_MS)
    assert page.get_attribute("body", "data-ready") == "true", failure(bp, "the demix page did not become ready")
    before = int(page.get_attribute("body", "data-results") or 0)
    page.set_input_files("input[type=file]", clip)
    page.wait_for_function(f"Number(document.body.dataset.results || 0) > {before} || document.body.dataset.error",
                           timeout=SEPARATE_TIMEOUT_MS)
    assert int(page.get_attribute("body", "data-results") or 0) == before + 1, failure(bp, "no stems")
    assert page.eval_on_selector_all("[data-stem]", "rows => rows.map(r => r.dataset.stem)") == [
        "vocals", "accompaniment"]


def tone_loads(bp):
    page = bp.page
    page.wait_for_selector("body[data-ready]", state="attached", timeout=READY_TIMEOUT_MS)
    page.wait_for_function("!document.querySelector('[data-action=start]').disabled || document.body.dataset.error",
                           timeout=READY_TIMEOUT_MS)
    assert not page.get_attribute("body", "data-error"), failure(bp, "the tone page could not load its instrument")


def test_build_holds_only_what_the_pages_use(static_site):
    _, info, out = static_site
    assert sorted(os.listdir(out / "vendor" / "pyodide")) == [
        "pyodide-lock.json", "pyodide.asm.mjs", "pyodide.asm.wasm", "pyodide.mjs", "python_stdlib.zip"]
    assert sorted(p for p in os.listdir(out / "weights") if p.endswith(".safetensors")) == sorted(
        f"{m}.safetensors" for m in MODELS)
    listing = {m["name"]: m for m in json.loads((out / "weights" / "models.json").read_text())["models"]}
    assert [n for n, m in listing.items() if m["installed"]] == [n for n in listing if n in MODELS]
    assert json.loads((out / "build.json").read_text())["version"] == info["version"]
    assert info["version"] in (out / "sw.js").read_text()


def test_pages_work_on_a_plain_static_server(static_site, browser, clip):
    url, info, _ = static_site
    page = browser.page
    page.goto(url + "/diagnostics.html")
    page.wait_for_selector("body[data-status]", state="attached", timeout=READY_TIMEOUT_MS)
    assert page.evaluate("window.crossOriginIsolated")
    assert page.get_attribute("body", "data-status") == "pass", failure(browser, "a self-check failed")
    assert page.inner_text("#app-version") == f"version {info['version']}"

    page.goto(url + "/")
    separate(browser, clip)
    browser.screenshot("static-demix-online.png")
    page.goto(url + "/tone.html")
    tone_loads(browser)


def test_pages_work_offline_after_one_visit(static_site, browser, clip):
    url, info, _ = static_site
    page = browser.page
    page.context.set_offline(True)
    try:
        page.goto(url + "/")
        assert page.evaluate("window.crossOriginIsolated")
        separate(browser, clip)
        assert page.get_attribute("body", "data-version") == info["version"]
        browser.screenshot("static-demix-offline.png")
        page.goto(url + "/tone.html")
        tone_loads(browser)
        browser.screenshot("static-tone-offline.png")
    finally:
        page.context.set_offline(False)
