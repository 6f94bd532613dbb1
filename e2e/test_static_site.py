"""The static build (`stemtone build-site`, pycore/cli/site_build.py) behind a server that
sends no special headers (`python -m http.server`), in a subfolder of the server (as on
GitHub Pages: https://host/stemtone/), then offline.

One browser, in order: the diagnostics page runs every kernel self-check (the service
worker installs, the page reloads once and is cross-origin isolated without any server
header); the demix page separates a 2 s clip; the tone page loads its instrument. Then
the network goes off (Playwright's context.set_offline): the demix page reloads from the
service worker's cache and separates the clip again, with the weights from the browser's
cache; the tone page reloads, loads its instrument and records a take from a fake
microphone that plays a generated voice-like tone. Every page says the build it runs.
Then a new build (other sources, one instrument fewer) replaces OUT/: the next visit runs
it whole, every file the pages receive is the new build's, and the tone page lists only
the instruments the new build carries. Last, a half-uploaded build (its sw.js, the old
files) is not taken; the completed upload is.
Screenshots of the installed app go to e2e/artifacts/static-*.png.
"""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

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
TAKE_TIMEOUT_MS = 240_000
MIC_RATE = 16000
TAKE_S = 1.0          # the offline take: about a second (SwiftShader needs ~15 s per second)
DROPPED = "ddsp-guitar"   # the instrument the second build leaves out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def static_site(tmp_path_factory):
    """OUT/ of a build, served by `python -m http.server` (no COOP/COEP headers) from its
    parent folder, so that the site lives below the server's root (https://host/stemtone/)."""
    out = tmp_path_factory.mktemp("hosting") / "stemtone"
    info = Site(MODELS).build(str(out))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "-d", str(out.parent)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/stemtone"
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
def voice(tmp_path_factory):
    """The fake microphone's WAV: 3 s of a sung-like tone (220 Hz with a 5 Hz vibrato of
    30 cents, ten harmonics falling 6 dB per octave), 16-bit at 16 kHz."""
    t = np.arange(int(3.0 * MIC_RATE)) / MIC_RATE
    f0 = 220.0 * 2.0 ** (0.3 / 12 * np.sin(2 * np.pi * 5.0 * t))
    phase = 2 * np.pi * np.cumsum(f0) / MIC_RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 11))
    path = tmp_path_factory.mktemp("mic") / "voice.wav"
    sf.write(str(path), 0.5 * x / np.abs(x).max(), MIC_RATE, subtype="PCM_16")
    return str(path)


@pytest.fixture(scope="module")
def browser(open_module_browser, voice):
    return open_module_browser(webgpu=True, microphone=voice)


def failure(bp, what):
    page = bp.page
    error = page.inner_text("#error") if page.is_visible("#error") else "(no error shown)"
    return f"{what}\nerror on the page: {error}\nconsole:\n{bp.console_report()}"


def separate_ready(bp):
    page = bp.page
    page.wait_for_selector("body[data-ready]", state="attached", timeout=READY_TIMEOUT_MS)
    assert page.get_attribute("body", "data-ready") == "true", failure(bp, "the demix page did not become ready")


def separate(bp, clip):
    page = bp.page
    separate_ready(bp)
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


def instruments(page):
    return page.eval_on_selector_all("select[name=instrument] option", "os => os.map(o => o.value)")


def tone_models(models):
    with open(os.path.join(REPO, "weights", "manifest.json")) as f:
        tone = [m["name"] for m in json.load(f)["models"] if m.get("task") == "tone"]
    return [m for m in tone if m in models]


def record_take(bp, out_dir):
    """Start, about TAKE_S seconds of the fake microphone, stop; the take's samples."""
    page = bp.page
    # SwiftShader keeps the page slow to paint: click without Playwright's actionability
    # waits (they need animation frames), so that the take stays short
    page.dispatch_event("[data-action=start]", "click")
    page.wait_for_function(f"Number(document.body.dataset.captured || 0) >= {int(TAKE_S * MIC_RATE)}"
                           " || document.body.dataset.error", timeout=60_000, polling=50)
    page.dispatch_event("[data-action=stop]", "click")
    page.wait_for_function("document.body.dataset.takes === '1' || document.body.dataset.error",
                           timeout=TAKE_TIMEOUT_MS)
    assert page.get_attribute("body", "data-takes") == "1", failure(bp, "the take did not finish")
    with page.expect_download() as download:
        page.click("a[download][data-take]")
    path = os.path.join(out_dir, download.value.suggested_filename)
    download.value.save_as(path)
    take, sr = sf.read(path, dtype="float32")
    assert sr == MIC_RATE and take.ndim == 1
    return take


def shell(out):
    """{path relative to the site: sha256} of the app shell of the build in out/, as its
    service worker lists it."""
    text = (out / "sw.js").read_text()
    start = text.index("self.BUILD = ") + len("self.BUILD = ")
    return json.JSONDecoder().raw_decode(text[start:])[0]["shell"]


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def checks_pass(bp):
    page = bp.page
    page.wait_for_selector("body[data-status]", state="attached", timeout=READY_TIMEOUT_MS)
    assert page.get_attribute("body", "data-status") == "pass", failure(bp, "a self-check failed")


def build_from_changed_sources(tmp_path, models, out, mark="a later build"):
    """`stemtone build-site out --models ...` from a copy of this checkout whose pycore and
    kernels differ by the comment `mark` (as a new release's would); returns its build.json."""
    src = tmp_path / "checkout"
    for folder in ("pycore", "kernels"):
        shutil.copytree(os.path.join(REPO, folder), src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("site", "weights", "node_modules"):
        os.symlink(os.path.join(REPO, folder), src / folder)
    shutil.copy(os.path.join(REPO, "pyproject.toml"), src)
    for changed in ("kernels/common.wgsl", "pycore/__init__.py"):
        with open(src / changed, "a") as f:
            f.write(f"\n// {mark}\n" if changed.endswith(".wgsl") else f"\n# {mark}\n")
    subprocess.run([sys.executable, "-m", "pycore.cli.main", "build-site", str(out), "--models", ",".join(models)],
                   cwd=src, env={**os.environ, "PYTHONPATH": str(src)}, check=True, capture_output=True)
    with open(out / "build.json") as f:
        return json.load(f)


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
    listed = shell(out)
    assert {"index.html", "tone.html", "diagnostics.html", "pkg/stemtone.zip", "build.json"} <= set(listed)
    assert {rel: digest(out / rel) for rel in listed} == listed


def test_pages_work_on_a_plain_static_server(static_site, browser, clip):
    url, info, _ = static_site
    page = browser.page
    page.goto(url + "/diagnostics.html")
    checks_pass(browser)
    assert page.evaluate("window.crossOriginIsolated")
    assert page.evaluate("navigator.serviceWorker.controller.scriptURL") == url + "/sw.js"
    assert page.inner_text("#app-version") == f"version {info['version']}"

    page.goto(url + "/")
    separate(browser, clip)
    browser.screenshot("static-demix-online.png")
    page.goto(url + "/tone.html")
    tone_loads(browser)
    assert instruments(page) == tone_models(MODELS)


def test_pages_work_offline_after_one_visit(static_site, browser, clip, tmp_path):
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
        take = record_take(browser, tmp_path)
        browser.screenshot("static-tone-offline.png")
    finally:
        page.context.set_offline(False)
    assert len(take) >= 0.9 * TAKE_S * MIC_RATE, len(take)
    assert np.isfinite(take).all()
    rms = float(np.sqrt(np.mean(take[len(take) // 4:] ** 2)))
    assert rms > 1e-3, f"the offline take is silent (rms {rms})"


def test_a_new_build_replaces_the_cached_app(static_site, browser, tmp_path):
    """OUT/ rebuilt in place while the site is served: the next visit of each page runs the
    new build whole (boot.js reloads onto it before Python starts), and every shell file a
    page receives from then on is the new build's."""
    url, old, out = static_site
    old_files = {rel: digest(out / rel) for rel in shell(out)}
    models = [m for m in MODELS if m != DROPPED]
    new = build_from_changed_sources(tmp_path, models, out)
    new_files = {rel: digest(out / rel) for rel in shell(out)}
    assert new["version"] != old["version"]
    changed = sorted(rel for rel in new_files if old_files.get(rel) != new_files[rel])
    assert {"pkg/stemtone.zip", "weights/models.json", "build.json"} <= set(changed), changed

    page = browser.page
    received = []   # every response of the site, in order

    def on_response(response):
        received.append(response)

    page.context.on("response", on_response)
    try:
        for path, ready in (("", separate_ready), ("tone.html", tone_loads), ("diagnostics.html", checks_pass)):
            received.clear()
            page.goto(f"{url}/{path}")
            page.wait_for_function(f"document.body.dataset.version === {new['version']!r}", timeout=READY_TIMEOUT_MS)
            ready(browser)
            assert page.inner_text("#app-version") == f"version {new['version']}"
            # from the last time the page's own document arrived, only the new build's files:
            # each served from its cache (which its service worker filled with files checked
            # against their sha256), and the binary ones checked here too (Playwright hands
            # back a service worker's text responses that name no charset decoded as
            # windows-1252, so their bytes cannot be compared)
            files = [(r.url[len(url) + 1:].split("?")[0] or "index.html", r) for r in received
                     if r.url.startswith(url + "/") and r.ok]
            start = max(i for i, (rel, _) in enumerate(files) if rel == (path or "index.html"))
            loaded = [(rel, r) for rel, r in files[start:] if rel in new_files]
            builds = [(rel, r.headers.get("x-stemtone-build")) for rel, r in loaded]
            assert {build for _, build in builds} == {new["version"]}, [b for b in builds if b[1] != new["version"]]
            mixed = sorted({rel for rel, r in loaded if rel.endswith((".zip", ".json", ".wasm"))
                            and hashlib.sha256(r.body()).hexdigest() != new_files[rel]})
            assert not mixed, f"/{path} received files of another build: {mixed}"
            assert "pkg/stemtone.zip" in {rel for rel, _ in builds}, builds
            if path == "tone.html":
                assert instruments(page) == tone_models(models)
                browser.screenshot("static-tone-new-build.png")
        caches = page.evaluate("caches.keys()")
        assert [c for c in caches if c.startswith("stemtone-app-")] == [f"stemtone-app-{new['version']}"], caches
    finally:
        page.context.remove_listener("response", on_response)


def test_a_half_uploaded_build_is_not_cached(static_site, browser, tmp_path):
    """A server that has the next build's sw.js but still the previous build's other files
    (an upload in progress, in the worst order): the new service worker finds files that
    are not its build's and does not install; the page runs the build it has. Once the
    upload is complete, the next visit runs the new build."""
    url, _, out = static_site
    page = browser.page
    running = json.loads((out / "build.json").read_text())["version"]
    staged = tmp_path / "staged"
    upload = build_from_changed_sources(tmp_path, [m for m in MODELS if m != DROPPED], staged, mark="an upload")
    shutil.copyfile(staged / "sw.js", out / "sw.js")
    page.goto(url + "/")
    separate_ready(browser)
    assert page.get_attribute("body", "data-version") == running
    caches = page.evaluate("caches.keys()")
    assert [c for c in caches if c.startswith("stemtone-app-")] == [f"stemtone-app-{running}"], caches

    shutil.copytree(staged, out, dirs_exist_ok=True)
    page.goto(url + "/")
    page.wait_for_function(f"document.body.dataset.version === {upload['version']!r}", timeout=READY_TIMEOUT_MS)
    separate_ready(browser)
