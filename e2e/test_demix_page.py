"""site/index.html, the demix page, in headless Chromium (SwiftShader WebGPU).

One page (shared by the tests of this module, in order) separates a 5 s real-music
clip through the UI: the file goes into input[type=file], every stem is downloaded
through its a[download] link and compared with the native CLI's output for the same
file (`stemtone separate --bits 32f` on lavapipe). The same page then gets a file it
cannot decode and a separation that is cancelled: each fails in its own row of the
queue and leaves the earlier stems in place (the queue itself: e2e/test_demix_queue.py). A second browser without WebGPU must get a clear message.

SwiftShader runs the shaders on the CPU: Spleeter costs about 24 GFLOP per segment
of 11.9 s (both stems), so the clip is one segment (5 s) and waits are generous.
The measured browser time goes to e2e/artifacts/demix-timing.json for
`stemtone bench separate`.
"""

import copy
import functools
import json
import os
import subprocess
import sys
import time
import urllib.request
import zipfile

import numpy as np
import pytest
import soundfile as sf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
import audio_fixtures  # noqa: E402

STEMS = ("vocals", "accompaniment")
CLIP_S = 5.0             # one segment: ~20 s on SwiftShader with 2 cores
LONG_CLIP_S = 14.0       # two segments: room to cancel between them
READY_TIMEOUT_MS = 180_000
SEPARATE_TIMEOUT_MS = 900_000
LAST = "#jobs > .job:last-child"  # the row of the song dropped last
# browser (SwiftShader) vs native (lavapipe), the same code: reached 142.4 / 146.0 dB
# (vocals / accompaniment); the bar leaves 20 dB for other drivers' summation order
MIN_SDR_DB = 120.0


def sdr_db(ref, est):
    ref, est = np.asarray(ref, np.float64), np.asarray(est, np.float64)
    return 10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - est) ** 2), 1e-30))


def read_wav(path):
    """[channels, samples] float32 and the sample rate."""
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return x.T, sr


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def clip():
    """The clip as float32 WAV (44.1 kHz stereo): the browser decodes it losslessly."""
    return str(audio_fixtures.real_music_wav(CLIP_S))


@pytest.fixture(scope="module")
def native_stems(clip, tmp_path_factory):
    """The CLI's output for the same file: {stem: [channels, samples]}."""
    out = tmp_path_factory.mktemp("native")
    env = dict(os.environ, XDG_RUNTIME_DIR=os.environ.get("XDG_RUNTIME_DIR", "/tmp"))
    r = subprocess.run([sys.executable, "-m", "pycore.cli.main", "separate", clip, "-o", str(out), "--bits", "32f"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"stemtone separate failed:\n{r.stdout}\n{r.stderr}"
    track = os.path.splitext(os.path.basename(clip))[0]
    return {stem: read_wav(out / track / f"{stem}.wav")[0] for stem in STEMS}


class Demix:
    """The demix page of one browser, and what the first separation produced."""

    def __init__(self, bp):
        self.bp = bp
        self.page = bp.page
        self.downloads = {}  # stem -> downloaded file
        self.timing = {}

    def results(self):
        return int(self.page.get_attribute("body", "data-results") or 0)

    def wait_idle(self, timeout=SEPARATE_TIMEOUT_MS):
        self.page.wait_for_function("document.body.dataset.state === 'idle'", timeout=timeout)

    def stem_links(self):
        return self.page.eval_on_selector_all(
            "[data-stem] a[download]",
            "links => links.map(a => [a.closest('[data-stem]').dataset.stem, a.href, a.download])")

    def failure(self, what):
        page = self.page
        error = page.inner_text("#error") if page.is_visible("#error") else "(no error shown)"
        return f"{what}\nerror on the page: {error}\nconsole:\n{self.bp.console_report()}"


@pytest.fixture(scope="module")
def demix(server, open_module_browser, clip):
    """The page after one separation of `clip` through the UI (screenshots on the way)."""
    bp = open_module_browser(webgpu=True)
    d = Demix(bp)
    page = d.page
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready]", state="attached", timeout=READY_TIMEOUT_MS)
    assert page.get_attribute("body", "data-ready") == "true", d.failure("the page did not become ready")
    bp.screenshot("demix-empty.png")

    t0 = time.perf_counter()
    page.set_input_files("input[type=file]", clip)
    page.wait_for_function(f"document.querySelector('{LAST} .job-stage').textContent.startsWith('Separating')",
                           timeout=READY_TIMEOUT_MS)
    t_separating = time.perf_counter()
    bp.screenshot("demix-progress.png")
    d.wait_idle()
    t_total = time.perf_counter() - t0
    assert d.results() == 1, d.failure("the separation did not finish")
    bp.screenshot("demix-done.png")

    body = page.get_attribute
    d.timing = {
        "seconds_audio": float(body("body", "data-audio-seconds")),
        "seconds_wall": float(body("body", "data-separate-seconds")),   # Demixer.separate in the worker
        "seconds_ui": round(time.perf_counter() - t_separating, 2),     # as the user waits, from the Separating stage
        "seconds_from_file_to_stems": round(t_total, 2),                # incl. decoding, weights, export
        "adapter": page.inner_text("#gpu-name"),
        "model": "spleeter-2stems",
    }
    # the keys `stemtone bench separate` reads (browser_row in pycore/cli/bench/)
    d.timing.update(demix_s=d.timing["seconds_wall"], audio_s=d.timing["seconds_audio"])
    bp.save_json("demix-timing.json", d.timing)
    print(f"\nbrowser separation of {d.timing['seconds_audio']:.1f} s of audio: {d.timing['seconds_wall']:.1f} s "
          f"in the worker, {t_total:.1f} s from file to stems")
    return d


# ------------------------------------------------------------------ tests (in order, one page)


def test_stems_downloaded_from_the_page_match_the_native_cli(demix, native_stems, clip, tmp_path):
    page = demix.page
    links = demix.stem_links()
    assert sorted(stem for stem, _, _ in links) == sorted(STEMS), links
    x, _ = read_wav(clip)
    figures = {}
    for stem in STEMS:
        with page.expect_download() as info:
            page.click(f'[data-stem="{stem}"] a[download]')
        download = info.value
        path = tmp_path / download.suggested_filename
        download.save_as(path)
        demix.downloads[stem] = path
        got, sr = read_wav(path)
        want = native_stems[stem]
        assert sr == 44100 and got.shape == want.shape == x.shape, (sr, got.shape, want.shape, x.shape)
        figures[stem] = sdr_db(want, got)
    print("SDR browser vs native CLI: " + ", ".join(f"{s} {v:.1f} dB" for s, v in figures.items()))
    demix.timing["sdr_vs_native_db"] = {s: round(float(v), 1) for s, v in figures.items()}
    demix.bp.save_json("demix-timing.json", demix.timing)
    for stem, value in figures.items():
        assert value >= MIN_SDR_DB, f"{stem}: SDR {value:.1f} dB < {MIN_SDR_DB} dB against the native CLI"


def test_zip_holds_every_stem(demix, clip, tmp_path):
    page = demix.page
    with page.expect_download() as info:
        page.click("#zip")
    path = tmp_path / info.value.suggested_filename
    info.value.save_as(path)
    track = os.path.splitext(os.path.basename(clip))[0]
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == sorted(f"{track}/{s}.wav" for s in STEMS)
        for stem in STEMS:
            if stem in demix.downloads:  # the same bytes as the per-stem download
                assert z.read(f"{track}/{stem}.wav") == demix.downloads[stem].read_bytes()


def test_players_and_mix_controls(demix):
    page = demix.page
    page.click('[data-stem="vocals"] .solo')
    classes = page.eval_on_selector_all("[data-stem].stem", "rows => rows.map(r => [r.dataset.stem, r.className])")
    silent = {stem for stem, cls in classes if "silent" in cls}
    assert silent == {"accompaniment"}, classes
    page.click('[data-stem="vocals"] .solo')
    page.click(f"{LAST} .play-button")
    page.wait_for_function(f"document.querySelector('{LAST} .time').textContent.startsWith('0:01')",
                           timeout=30_000)
    page.click(f"{LAST} .play-button")  # pause
    assert page.get_attribute(f"{LAST} .play-button", "aria-label") == "Play"
    assert not demix.bp.errors, demix.bp.console_report()


def test_undecodable_file_is_reported_and_keeps_the_stems(demix, tmp_path):
    page = demix.page
    before = demix.stem_links()
    bad = tmp_path / "not-audio.wav"
    bad.write_text("This is a text file renamed to .wav; no browser can decode it.\n" * 20)
    page.set_input_files("input[type=file]", str(bad))
    page.wait_for_selector("body[data-error]", state="attached", timeout=60_000)
    demix.wait_idle(60_000)
    assert page.get_attribute("body", "data-error") == "decode"
    row = '#jobs > .job[data-file="not-audio.wav"]'
    assert page.get_attribute(row, "data-status") == "failed" and page.get_attribute(row, "data-error") == "decode"
    message = page.inner_text(row)
    assert "not-audio.wav" in message and "decode" in message, message
    demix.bp.screenshot("demix-undecodable.png")
    assert demix.stem_links() == before  # the same stems, the same blob URLs
    assert demix.results() == 1


def test_cancel_stops_between_segments_and_keeps_the_stems(demix, tmp_path):
    page = demix.page
    before = demix.stem_links()
    long_clip = str(audio_fixtures.real_music_wav(LONG_CLIP_S))
    page.set_input_files("input[type=file]", long_clip)
    page.wait_for_function(f"document.querySelector('{LAST} .job-stage').textContent.startsWith('Separating')",
                           timeout=READY_TIMEOUT_MS)
    time.sleep(4)  # the bar moves between the worker's reports: at the first run's speed
    demix.bp.screenshot("demix-progress-eta.png")
    assert "left" in page.inner_text(f"{LAST} .job-eta"), page.inner_text(LAST)
    # the page stays responsive while the worker computes
    t = time.perf_counter()
    page.click('[data-stem="accompaniment"] .mute')
    assert page.get_attribute('[data-stem="accompaniment"] .mute', "aria-pressed") == "true"
    page.click('[data-stem="accompaniment"] .mute')
    assert time.perf_counter() - t < 5.0, "the page did not respond to clicks during the separation"
    page.click(f"{LAST} .job-cancel")
    demix.wait_idle()
    assert page.get_attribute("body", "data-error") == "cancelled", demix.failure("not cancelled")
    assert demix.results() == 1, "the separation ran to the end despite Cancel"
    assert demix.stem_links() == before
    assert not demix.bp.errors, demix.bp.console_report()


def test_cached_weights_are_used_and_a_corrupted_entry_is_downloaded_again(server, open_browser, clip):
    """A second visit loads the weights from the Cache API (no request); a cache entry
    whose bytes no longer match the manifest's sha256 is dropped and downloaded again,
    and the separation still completes."""
    bp = open_browser(webgpu=True)
    page, requests = bp.page, []

    def count(route):
        requests.append(route.request.url)
        route.continue_()

    page.context.route("**/weights/*.safetensors", count)

    def visit_and_separate():
        page.goto(server.url + "/")
        page.wait_for_selector("body[data-ready]", state="attached", timeout=READY_TIMEOUT_MS)
        page.set_input_files("input[type=file]", clip)
        page.wait_for_function("(document.body.dataset.results|0) > 0 || document.body.dataset.error",
                               timeout=SEPARATE_TIMEOUT_MS)
        assert page.get_attribute("body", "data-error") is None, bp.console_report()
        page.wait_for_function("document.body.dataset.state === 'idle'", timeout=60_000)

    visit_and_separate()
    assert len(requests) == 1, requests                        # first visit: downloaded
    visit_and_separate()
    assert len(requests) == 1, requests                        # second visit: from the cache
    corrupted = page.evaluate("""async () => {
        const cache = await caches.open("stemtone-weights");
        const keys = await cache.keys();
        for (const k of keys) await cache.put(k, new Response(new Uint8Array(64)));
        return keys.length;
    }""")
    assert corrupted == 1
    visit_and_separate()
    assert len(requests) == 2, requests                        # the bad entry: downloaded again
    assert page.locator("[data-stem] a[download]").count() == len(STEMS)


def test_device_lost_during_a_separation_keeps_the_stems_and_the_next_one_works(demix, clip):
    """The device is destroyed mid-separation, as a driver reset would (the page's
    "stemtone-lose-device" hook): the song's row fails with the lost-device message, the
    stems already on the page stay, and the next song is separated on a fresh device
    without a reload."""
    page = demix.page
    before, done = demix.stem_links(), demix.results()
    page.set_input_files("input[type=file]", clip)
    page.wait_for_function(f"document.querySelector('{LAST} .job-stage').textContent.startsWith('Separating')",
                           timeout=READY_TIMEOUT_MS)
    page.evaluate("document.dispatchEvent(new Event('stemtone-lose-device'))")
    demix.wait_idle()
    demix.bp.screenshot("demix-device-lost.png")
    assert page.get_attribute("body", "data-error") == "device-lost", demix.failure("not a lost device")
    assert page.get_attribute(LAST, "data-status") == "failed" and page.get_attribute(LAST, "data-error") == "device-lost"
    message = page.inner_text("#error")
    assert "The GPU device was lost" in message and "previous results are kept" in message, message
    assert page.is_visible("#error-help a[href='diagnostics.html']")
    assert demix.stem_links() == before and demix.results() == done
    rows = page.eval_on_selector_all("[data-status]", "rows => rows.length")
    page.set_input_files("input[type=file]", clip)                   # no reload
    # the page is idle until its change handler has queued the song: wait for its row first
    page.wait_for_function(f"document.querySelectorAll('[data-status]').length > {rows}", timeout=READY_TIMEOUT_MS)
    demix.wait_idle()
    assert demix.results() == done + 1, demix.failure("no separation after the lost device")
    assert page.get_attribute(LAST, "data-status") == "done"
    assert page.get_attribute("body", "data-error") is None


CACHED_WEIGHTS_JS = "async () => (await (await caches.open('stemtone-weights')).keys()).length"


def test_cancel_during_the_weights_download(server, open_browser, clip):
    """A fresh browser (nothing cached): the weights request is held until the test has
    clicked Cancel, so the download is under way when the cancel arrives. The song's row
    says Cancelled, nothing is cached (the partial download is dropped), and the same
    page separates the next song, downloading the weights again."""
    bp = open_browser(webgpu=True)
    page, held, requests = bp.page, [], []

    def hold(route):
        requests.append(route.request.url)
        held.append(route)

    page.context.route("**/weights/*.safetensors", hold)
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready]", state="attached", timeout=READY_TIMEOUT_MS)
    page.set_input_files("input[type=file]", clip)
    page.wait_for_function(f"document.querySelector('{LAST} .job-stage').textContent.startsWith('Downloading')",
                           timeout=READY_TIMEOUT_MS)
    for _ in range(600):  # Playwright hands the held request to hold() while the test waits
        if held:
            break
        page.wait_for_timeout(50)
    assert len(held) == 1, requests
    page.click(f"{LAST} .job-cancel")
    held.pop().continue_()  # the download now runs, and stops at its first chunk
    page.wait_for_function("document.body.dataset.state === 'idle'", timeout=READY_TIMEOUT_MS)
    bp.screenshot("demix-cancelled-download.png")
    assert page.get_attribute(LAST, "data-status") == "cancelled", bp.console_report()
    assert page.get_attribute("body", "data-error") == "cancelled"
    assert "Cancelled" in page.inner_text(f"{LAST} .job-error")
    assert page.evaluate(CACHED_WEIGHTS_JS) == 0        # the partial download is not kept
    assert page.locator("[data-stem] a[download]").count() == 0

    page.context.unroute("**/weights/*.safetensors")
    page.context.route("**/weights/*.safetensors", lambda route: (requests.append(route.request.url),
                                                                   route.continue_()))
    page.set_input_files("input[type=file]", clip)
    page.wait_for_function("(document.body.dataset.results|0) > 0 || document.body.dataset.error",
                           timeout=SEPARATE_TIMEOUT_MS)
    assert page.get_attribute("body", "data-error") is None, bp.console_report()
    assert page.get_attribute(LAST, "data-status") == "done"
    assert len(requests) == 2, requests                  # downloaded again, in full
    assert page.evaluate(CACHED_WEIGHTS_JS) == 1
    assert page.locator("[data-stem] a[download]").count() == len(STEMS)


def test_weights_that_fail_to_load_are_reported(server, open_browser, clip):
    bp = open_browser(webgpu=True)
    page = bp.page
    # a fresh browser (empty Cache API) whose weights download is a broken file
    page.context.route("**/weights/*.safetensors", lambda route: route.fulfill(status=200, body=b"broken" * 100))
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready]", state="attached", timeout=READY_TIMEOUT_MS)
    page.set_input_files("input[type=file]", clip)
    page.wait_for_selector("body[data-error]", state="attached", timeout=READY_TIMEOUT_MS)
    page.wait_for_function("document.body.dataset.state === 'idle'", timeout=60_000)
    bp.screenshot("demix-weights-error.png")
    assert page.get_attribute("body", "data-error") == "weights", bp.console_report()
    message = page.inner_text("#error")
    assert "model could not be loaded" in message and "spleeter-2stems.safetensors" in message, message
    assert page.locator("[data-stem] a[download]").count() == 0
    assert page.is_enabled("input[type=file]")  # the user can try again


# the service worker (site/sw.js) keeps the models list it cached on the first visit
FORGET_THE_APP_JS = """async () => {
    for (const r of await navigator.serviceWorker.getRegistrations()) await r.unregister();
    for (const k of await caches.keys()) if (k.startsWith("stemtone-app-")) await caches.delete(k);
}"""


def serve_body(body, route):
    route.fulfill(status=200, body=body, content_type="application/json")


def test_a_malformed_models_list_is_refused_by_name(server, open_browser):
    """The page's main thread checks /weights/models.json with the checks the CLI and the
    server make (pycore.weights.manifest): a list that fails them is named, with the
    fault, and nothing can be separated (a file path that leaves /weights/ is not used)."""
    with urllib.request.urlopen(server.url + "/weights/models.json") as r:
        good = json.load(r)
    escaping = copy.deepcopy(good)
    spleeter = next(m for m in escaping["models"] if m["name"] == "spleeter-2stems")
    spleeter["files"][0]["path"] = "../index.html"
    cases = [(escaping, "model spleeter-2stems: a file record without a plain file name"),
             ({"models": {}}, 'no "models" list'),
             (b"<html>not JSON</html>", "not JSON")]
    bp = open_browser(webgpu=True)
    page = bp.page
    for served, words in cases:
        body = served if isinstance(served, bytes) else json.dumps(served).encode()
        page.context.route("**/weights/models.json", functools.partial(serve_body, body))
        page.goto(server.url + "/")
        page.wait_for_selector("body[data-ready]", state="attached", timeout=READY_TIMEOUT_MS)
        message = page.inner_text("#error") if page.is_visible("#error") else "(no error shown)"
        assert page.get_attribute("body", "data-ready") == "false", message
        assert page.get_attribute("body", "data-error") == "weights", bp.console_report()
        assert "weights/models.json" in message and words in message, message
        assert page.is_disabled("input[type=file]")
        page.context.unroute("**/weights/models.json")
        page.evaluate(FORGET_THE_APP_JS)  # else the service worker answers the next visit from its copy
    bp.screenshot("demix-malformed-models.png")
    assert "model list is malformed" in page.inner_text("#error")


def test_without_webgpu_the_page_says_so(server, open_browser):
    bp = open_browser(webgpu=False)
    page = bp.page
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready]", state="attached", timeout=READY_TIMEOUT_MS)
    bp.screenshot("demix-no-webgpu.png")
    assert page.get_attribute("body", "data-ready") == "false"
    assert page.get_attribute("body", "data-error") == "no-webgpu", bp.console_report()
    assert page.is_visible("#error") and "WebGPU is not available" in page.inner_text("#error")
    assert page.is_disabled("input[type=file]")
    assert page.is_visible("#error-help a[href='diagnostics.html']")
