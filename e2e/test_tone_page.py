"""site/tone.html, live tone transfer, in headless Chromium (SwiftShader WebGPU).

A fake microphone plays real singing (Vocadito, tests/singing.py) from a 16-bit WAV that
Chromium loops. One page (shared by the first tests, in order) picks the violin one
octave up, starts, records about a second, stops, waits for the take and downloads it
with the input as processed. The take must follow the singing: the f0 that
pycore.tone.features measures natively on the take equals the input's f0 moved up an octave
and folded into the violin's range (as pycore.tone does), within 50 cents median over
voiced frames, once aligned by the engine's index shift (searched, and at most the
engine's stated latency).

SwiftShader is far slower than real time (about 10-20x here), so the page must say so
and report late blocks instead of stuttering; the tests check what was processed, never
timing. Further browsers check the error messages: no WebGPU, microphone permission
denied, no input device, and an instrument whose weights fail to load.
"""

import asyncio
import concurrent.futures
import json
import os
import struct
import sys
import time
import urllib.request
import zlib

import numpy as np
import pytest
import soundfile as sf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "site"))           # tone_ring: the page's latency arithmetic
ARTIFACTS = os.path.join(REPO, "e2e", "artifacts")   # as in e2e/conftest.py

SR = 16000
CLIP_S = 3.0                 # the looped singing
CAPTURE_S = 1.0              # the take: about a second (SwiftShader needs ~15 s per second)
STREAM_VS_OFFLINE_DB = 60.0       # the take vs the native offline rendering (reached 73.5 dB)
INSTRUMENT = "ddsp-violin"
OVERFLOW_RING_S = 1          # the capture ring of the overflow test (tone.html?capture-seconds=)
STALL_S = 3                  # and how long its engine is stalled mid-take
OCTAVE = 1
READY_TIMEOUT_MS = 180_000
TAKE_TIMEOUT_MS = 240_000
MAX_MEDIAN_CENTS = 50.0
VOICED = 0.8                 # CREPE confidence of the input frames compared (clearly voiced)


def manifest():
    with open(os.path.join(REPO, "weights", "manifest.json")) as f:
        return json.load(f)


def tone_entries():
    return [m for m in manifest()["models"] if m.get("task") == "tone"]


@pytest.fixture(scope="module")
def singing(tmp_path_factory):
    """The fake microphone's WAV (16-bit, 16 kHz mono) and its samples."""
    singing = pytest.importorskip("singing")
    x = singing.vocadito(10, SR, seconds=CLIP_S, offset=1.0)
    x = (0.9 / max(1e-6, float(np.abs(x).max()))) * x
    path = tmp_path_factory.mktemp("mic") / "singing.wav"
    sf.write(str(path), x, SR, subtype="PCM_16")
    return str(path), sf.read(str(path), dtype="float32")[0]


def wait_ready(page):
    page.wait_for_selector("body[data-ready]", state="attached", timeout=READY_TIMEOUT_MS)


def wait_loaded(page):
    """Until the selected instrument is loaded (Start enabled) or an error shows."""
    page.wait_for_function("!document.querySelector('[data-action=start]').disabled || document.body.dataset.error",
                           timeout=READY_TIMEOUT_MS)


TRAIL_PIXELS_JS = """() => {
    const c = document.getElementById('trail');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
    return n;
}"""


def trail_pixels(page):
    """Non-transparent pixels of the pitch-trail canvas (the grid is on another canvas)."""
    return page.evaluate(TRAIL_PIXELS_JS)


def png_rgb(data: bytes) -> np.ndarray:
    """[H, W, 3] uint8 of an 8-bit RGB/RGBA PNG (what Chromium's screenshots are)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * bpp)
    out = np.zeros((h, w * bpp), np.int32)
    for y in range(h):
        f, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        up = out[y - 1] if y else np.zeros(w * bpp, np.int32)
        if f == 0:
            out[y] = line
        elif f == 2:
            out[y] = (line + up) & 255
        else:  # 1 (sub), 3 (average), 4 (Paeth) depend on the left neighbour: pixel by pixel
            row = out[y]
            for x in range(w * bpp):
                a = row[x - bpp] if x >= bpp else 0
                b, c = up[x], (up[x - bpp] if x >= bpp else 0)
                if f == 1:
                    pred = a
                elif f == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                row[x] = (line[x] + pred) & 255
    return out.reshape(h, w, bpp)[:, :, :3].astype(np.uint8)


class Session:
    """The tone page of one browser and what its take produced."""

    def __init__(self, bp):
        self.bp, self.page = bp, bp.page
        self.files = {}
        self.figures = {}

    def body(self, name):
        return self.page.get_attribute("body", f"data-{name}")

    def failure(self, what):
        page = self.page
        error = page.inner_text("#error") if page.is_visible("#error") else "(no error shown)"
        return f"{what}\nerror on the page: {error}\nconsole:\n{self.bp.console_report()}"


@pytest.fixture(scope="module")
def session(server, open_module_browser, singing, tmp_path_factory):
    wav, _ = singing
    bp = open_module_browser(webgpu=True, microphone=wav)
    s = Session(bp)
    page = s.page
    t0 = time.perf_counter()
    page.goto(server.url + "/tone.html")
    wait_ready(page)
    assert s.body("ready") == "true", s.failure("the page did not become ready")
    page.select_option("select[name=instrument]", INSTRUMENT)
    page.select_option("select[name=octave]", str(OCTAVE))
    wait_loaded(page)
    assert not s.body("error"), s.failure("the instrument did not load")
    t_loaded = time.perf_counter()
    os.makedirs(ARTIFACTS, exist_ok=True)
    with open(os.path.join(ARTIFACTS, "tone-trail-empty.png"), "wb") as f:
        f.write(page.locator(".trail").screenshot())

    # SwiftShader keeps the CPU busy and the page slow to paint: click without Playwright's
    # actionability waits (they need animation frames), so that the take stays short
    page.dispatch_event("[data-action=start]", "click")
    t_start = time.perf_counter()
    page.wait_for_function(f"Number(document.body.dataset.captured || 0) >= {int(CAPTURE_S * SR)}",
                           timeout=60_000, polling=50)
    t_captured = time.perf_counter()
    page.dispatch_event("[data-action=stop]", "click")
    t_stop = time.perf_counter()
    s.figures.update(seconds_start_to_capture=round(t_captured - t_start, 1),
                     seconds_capture_to_stop=round(t_stop - t_captured, 1))
    page.wait_for_function("document.body.dataset.state === 'finishing'", timeout=30_000)
    page.wait_for_function(f"({TRAIL_PIXELS_JS})() > 200", timeout=TAKE_TIMEOUT_MS)  # the trail is being drawn
    bp.screenshot("tone-finishing.png")
    page.wait_for_function("document.body.dataset.takes === '1' || document.body.dataset.error",
                           timeout=TAKE_TIMEOUT_MS)
    assert s.body("takes") == "1", s.failure("the take did not finish")
    t_take = time.perf_counter()
    bp.screenshot("tone-take.png")
    with open(os.path.join(ARTIFACTS, "tone-trail.png"), "wb") as f:
        f.write(page.locator(".trail").screenshot())

    out = tmp_path_factory.mktemp("take")
    for key, selector in (("take", "a[download][data-take]"), ("input", "a[download][data-input]")):
        with page.expect_download() as info:
            page.click(selector)
        path = out / info.value.suggested_filename
        info.value.save_as(path)
        s.files[key] = str(path)
    s.figures.update(
        seconds_to_loaded=round(t_loaded - t0, 1), seconds_finishing=round(t_take - t_stop, 1),
        captured_s=int(s.body("captured")) / SR, take_s=float(s.body("take-seconds")),
        compute_s=float(s.body("compute-seconds")), late_blocks=int(s.body("late")),
        lost_samples=int(s.body("lost")), latency_ms=float(s.body("latency-ms")),
        engine_latency=int(s.body("engine-latency")), play_offset=int(s.body("play-offset")),
        block_ms=float(s.body("block-ms")), depth=int(s.body("depth")), block=int(s.body("block")),
        work_ms={int(k): float(v) for k, v in (kv.split(":") for kv in s.body("work-ms").split(","))},
        rtt_ms=[float(v) for v in s.body("rtt-ms").split(",")], adapter=page.inner_text("#gpu-name"))
    return s


# ------------------------------------------------------------------ the take


def native_features(*clips):
    """(f0_hz, confidence, loudness_db) per clip, by pycore.tone.features on the native device
    (lavapipe). In a thread of its own: Playwright's sync API holds this thread's event loop."""
    from pycore.gpu.native import NativeDevice
    from pycore.tone.features import features

    async def run():
        dev = NativeDevice()
        return [[np.asarray(v, np.float64) for v in await features(dev, np.asarray(c, np.float32))] for c in clips]

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def test_take_follows_the_sung_pitch(session):
    take, sr = sf.read(session.files["take"], dtype="float32")
    dry, sr2 = sf.read(session.files["input"], dtype="float32")
    assert sr == sr2 == SR and take.ndim == dry.ndim == 1
    assert len(take) == len(dry) >= int(0.9 * CAPTURE_S * SR), (len(take), len(dry))
    assert np.isfinite(take).all() and np.isfinite(dry).all()
    assert session.figures["lost_samples"] == 0, "input overflowed the 20 s capture ring"
    (f_out, _, _), (f_in, c_in, l_in) = native_features(take, dry)
    voiced = (c_in >= VOICED) & (l_in > -50)
    assert voiced.sum() >= 50, f"only {voiced.sum()} clearly voiced input frames: is the microphone silent?"
    # output sample n renders input sample n - shift: find the shift (whole frames)
    max_shift = session.figures["engine_latency"] // 64
    medians = {}
    for d in range(0, max_shift + 1):
        n = len(f_in) - d
        m = voiced[:n]
        # to the nearest whole octave: the register shift (chosen at note starts) and the
        # fold into the model's range move the played pitch by octaves
        cents = 1200 * np.log2(f_out[d:d + n][m] / f_in[:n][m])
        medians[d] = float(np.median(np.abs(cents - 1200 * np.round(cents / 1200))))
    shift = min(medians, key=medians.get)
    rms = float(np.sqrt(np.mean(take[len(take) // 4:] ** 2)))
    session.figures.update(median_cents=round(medians[shift], 1), shift_samples=64 * shift,
                           voiced_frames=int(voiced.sum()), take_rms=round(rms, 4),
                           medians_by_shift={64 * d: round(v, 1) for d, v in medians.items()})
    session.bp.save_json("tone-figures.json", session.figures)
    print(f"\ntone take: median |f0 take - f0 input| {medians[shift]:.1f} cents over {voiced.sum()} voiced frames, "
          f"shift {64 * shift} samples; {session.figures}")
    assert rms > 1e-3, f"the take is silent (rms {rms})"
    assert medians[shift] <= MAX_MEDIAN_CENTS, medians


def test_take_matches_the_offline_rendering(session):
    """Issue 6: streaming (the page: 8 or 20 ms blocks on the browser's WebGPU) and offline
    (pycore.tone.ToneStream natively, the whole input in one push) agree: SDR of the take
    against the native rendering of the page's own input >= 60 dB, once aligned (the
    shift is searched over +-1024 samples by cross-correlation). Float32 rounding differs
    between SwiftShader and lavapipe; a block-boundary discontinuity or a lost state would
    cost far more."""
    from pycore.gpu.native import NativeDevice
    from pycore.tone import ToneStream, load_tone_model

    take, _ = sf.read(session.files["take"], dtype="float32")
    dry, _ = sf.read(session.files["input"], dtype="float32")

    async def render():
        stream = ToneStream(load_tone_model(NativeDevice(), INSTRUMENT), octave=OCTAVE)
        # the input WAV is zero-padded to the take's length; the page flushed its stream
        # where the input ended, which the take's length tells: frames = the last input
        # frame + 1 + the reverb tail (ToneStream.flush). Flushing at the same frame:
        last = len(take) // 64 - 1 - stream.tail_frames
        parts = [await stream.push(dry[:64 * last + 63]), await stream.flush()]
        return np.concatenate([np.frombuffer(p["audio"], np.float32) for p in parts])

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        ref = pool.submit(asyncio.run, render()).result().astype(np.float64)
    take = take.astype(np.float64)
    n = len(take)
    padded = np.concatenate([np.zeros(1024), ref, np.zeros(n + 1024)])
    corr = np.array([np.dot(padded[1024 + d:1024 + d + n], take) for d in range(-1024, 1025)])
    d = int(np.argmax(corr)) - 1024
    aligned = padded[1024 + d:1024 + d + n]
    sdr = 10 * np.log10(np.sum(aligned ** 2) / max(np.sum((aligned - take) ** 2), 1e-30))
    session.figures.update(stream_vs_offline_sdr_db=round(float(sdr), 1), stream_vs_offline_shift=d)
    session.bp.save_json("tone-figures.json", session.figures)
    print(f"\ntone take vs native offline rendering: SDR {sdr:.1f} dB at shift {d} samples")
    # reached 73.5 dB at shift 0 (SwiftShader vs lavapipe); the bar leaves 13 dB for the
    # drivers' summation order in the decoder and the oscillator's phase
    assert sdr >= STREAM_VS_OFFLINE_DB, (sdr, d)


def test_input_take_is_the_microphone_signal(session, singing):
    """The input WAV is what the fake microphone played: the looped file, at some offset."""
    _, source = singing
    dry, _ = sf.read(session.files["input"], dtype="float32")
    a = dry[SR // 4:SR // 4 + SR // 2].astype(np.float64)      # half a second of the take
    tiled = np.tile(source, 3).astype(np.float64)
    corr = np.correlate(tiled, a, mode="valid")
    energy = np.sqrt(np.convolve(tiled ** 2, np.ones(len(a)), mode="valid") * np.sum(a ** 2))
    best = float(np.max(corr / np.maximum(energy, 1e-12)))
    session.figures["input_vs_file_correlation"] = round(best, 3)
    assert best > 0.9, best


def test_page_states_latency_and_real_time(session):
    """The latency card: engine, engine block, and a playback buffer of one block per
    block the worker keeps in flight. The block is 8 ms where the GPU does an 8 ms
    block's work in 8 ms, else 20 ms (tone_ring.choose_block, from both measured at
    load); the depth comes from the GPU round trip and a block's work
    (tone_ring.pipeline_depth), so on SwiftShader, far slower than real time, it rises
    (capped) and the card says what latency results."""
    import tone_ring as R

    page, fig = session.page, session.figures
    depth, (rtt, rtt_p90), block = fig["depth"], fig["rtt_ms"], fig["block"]
    assert sorted(fig["work_ms"]) == list(R.BLOCK_SIZES), fig
    assert block == R.choose_block([fig["work_ms"][n] for n in R.BLOCK_SIZES]), fig
    block_dur = 1000 * block / SR
    assert 0 < rtt <= rtt_p90 and 1 <= depth <= R.MAX_DEPTH, fig
    need_ms = fig["block_ms"] - rtt + rtt_p90             # a block's work and a slow round trip
    assert depth == R.MAX_DEPTH or depth * block_dur >= need_ms - 0.02, fig     # (the page shows 2 decimals)
    assert depth == 1 or (depth - 1) * block_dur < need_ms + 0.02, fig
    assert fig["latency_ms"] == pytest.approx(1000 * (fig["engine_latency"] + block + depth * block) / SR, abs=0.05)
    assert fig["play_offset"] >= depth * block, fig
    legend = page.inner_text(".latency-legend")
    assert "tone engine" in legend and "engine block" in legend and "playback buffer" in legend, legend
    assert f"{depth} block{'s' if depth > 1 else ''} of {block_dur:.0f} ms in flight" in legend, legend
    assert f"{fig['latency_ms']:.0f} ms of 50 ms" in page.inner_text("#latency-total")
    assert ("fail" in page.get_attribute("#latency-total", "class")) == (fig["latency_ms"] > 50), fig
    meta = page.inner_text("#take-meta")
    if fig["late_blocks"]:  # SwiftShader: slower than real time, reported rather than played
        assert "late" in meta, meta
    assert not session.bp.errors, session.bp.console_report()


def test_pitch_trail_is_drawn(session):
    """About a second of singing: two lines (voice, instrument) 2 px wide over ~100 px."""
    drawn = trail_pixels(session.page)
    session.figures["trail_canvas_pixels"] = drawn
    assert drawn > 150, drawn
    before = png_rgb(open(os.path.join(ARTIFACTS, "tone-trail-empty.png"), "rb").read()).astype(int)
    after = png_rgb(open(os.path.join(ARTIFACTS, "tone-trail.png"), "rb").read()).astype(int)
    assert before.shape == after.shape
    changed = np.abs(after - before).max(axis=2) > 60
    session.figures["trail_changed_pixels"] = int(changed.sum())
    session.bp.save_json("tone-figures.json", session.figures)
    assert changed.sum() > 150, changed.sum()


def test_instrument_picker_lists_every_tone_model(session):
    values = session.page.eval_on_selector_all("select[name=instrument] option", "os => os.map(o => o.value)")
    assert values == [m["name"] for m in tone_entries()]


def test_a_second_take_replaces_the_first(session):
    page = session.page
    first = page.get_attribute("a[download][data-take]", "href")
    page.dispatch_event("[data-action=start]", "click")
    page.wait_for_function("Number(document.body.dataset.captured || 0) > 0 && document.body.dataset.state === 'live'",
                           timeout=60_000, polling=50)
    page.dispatch_event("[data-action=stop]", "click")
    page.wait_for_function("document.body.dataset.takes === '2' || document.body.dataset.error",
                           timeout=TAKE_TIMEOUT_MS)
    assert page.get_attribute("body", "data-takes") == "2", session.failure("the second take did not finish")
    assert page.get_attribute("a[download][data-take]", "href") != first
    assert page.is_enabled("[data-action=start]") and page.is_disabled("[data-action=stop]")
    assert not session.bp.errors, session.bp.console_report()


def test_device_lost_during_a_take_keeps_the_last_take_and_the_next_take_works(session):
    """The device is destroyed mid-take, as a driver reset would (the page's
    "stemtone-lose-device" hook): the page says so, shows the last finished take again,
    loads the instrument on a fresh device, and the next take works without a reload."""
    page = session.page
    takes = int(session.body("takes"))
    last = page.get_attribute("a[download][data-take]", "href")
    page.dispatch_event("[data-action=start]", "click")
    page.wait_for_function("Number(document.body.dataset.processed) > 0 && document.body.dataset.state === 'live'",
                           timeout=TAKE_TIMEOUT_MS, polling=50)  # the engine is pushing blocks of this take
    page.evaluate("document.dispatchEvent(new Event('stemtone-lose-device'))")
    page.wait_for_function("document.body.dataset.error", timeout=TAKE_TIMEOUT_MS)
    session.bp.screenshot("tone-device-lost.png")
    assert session.body("error") == "device-lost", session.failure("not a lost device")
    message = page.inner_text("#error")
    assert "The GPU device was lost" in message and "press Start" in message, message
    assert session.body("takes") == str(takes)
    assert page.is_visible("#take-card") and page.is_visible("a[download][data-take]")
    assert page.get_attribute("a[download][data-take]", "href") == last       # the last take is kept
    assert page.inner_text("#take-title").startswith(f"Take {takes} ")
    page.wait_for_function("!document.querySelector('[data-action=start]').disabled",  # loaded on a fresh device
                           timeout=READY_TIMEOUT_MS)
    page.dispatch_event("[data-action=start]", "click")
    page.wait_for_function("Number(document.body.dataset.captured || 0) > 0 && document.body.dataset.state === 'live'",
                           timeout=60_000, polling=50)
    page.dispatch_event("[data-action=stop]", "click")
    page.wait_for_function(f"document.body.dataset.takes === '{takes + 1}' || document.body.dataset.error",
                           timeout=TAKE_TIMEOUT_MS)
    assert session.body("takes") == str(takes + 1), session.failure("no take after the lost device")
    assert page.get_attribute("a[download][data-take]", "href") != last


def test_capture_ring_overflow_is_counted_and_shown(session, tmp_path):
    """A 1 s capture ring (tone.html?capture-seconds=1) and the engine stalled for 3 s
    mid-take (the page's "stemtone-stall-engine" hook, as a GPU stall would): the writer
    laps the reader, whatever the GPU's speed. The lost input is counted (body[data-lost]),
    said under the take, and is silence in the take, which still covers all the input."""
    page = session.page
    page.goto(session.page.url.split("?")[0] + f"?capture-seconds={OVERFLOW_RING_S}")
    wait_ready(page)
    page.select_option("select[name=instrument]", INSTRUMENT)
    page.wait_for_function("!document.querySelector('[data-action=start]').disabled", timeout=READY_TIMEOUT_MS)
    page.dispatch_event("[data-action=start]", "click")
    page.wait_for_function("Number(document.body.dataset.processed) > 0 && document.body.dataset.state === 'live'",
                           timeout=TAKE_TIMEOUT_MS, polling=50)
    page.evaluate(f"document.dispatchEvent(new CustomEvent('stemtone-stall-engine', {{detail: {STALL_S}}}))")
    stalled_at = int(session.body("captured"))
    page.wait_for_function(f"Number(document.body.dataset.captured) >= {stalled_at + int((STALL_S + 0.5) * SR)}",
                           timeout=60_000, polling=50)
    page.dispatch_event("[data-action=stop]", "click")
    page.wait_for_function("document.body.dataset.takes === '1' || document.body.dataset.error",
                           timeout=TAKE_TIMEOUT_MS)
    assert session.body("takes") == "1", session.failure("the take did not finish")
    session.bp.screenshot("tone-overflow.png")
    lost, captured = int(session.body("lost")), int(session.body("captured"))
    assert lost > 0, (lost, captured)  # the stall alone writes STALL_S s into a ring of OVERFLOW_RING_S s
    session.figures.update(overflow_lost_samples=lost, overflow_captured_samples=captured)
    print(f"\ncapture ring overflow: {lost} of {captured} samples lost ({lost / SR:.2f} s)")
    meta = page.inner_text("#take-meta")
    assert f"{lost / SR:.1f} s of input overflowed the buffer" in meta, meta
    with page.expect_download() as info:
        page.click("a[download][data-input]")
    dry, _ = sf.read(str(info.value.path()), dtype="float32")
    assert len(dry) >= captured                               # every captured sample has its place
    assert int(np.sum(dry == 0.0)) >= lost                    # the lost ones are silence


# ------------------------------------------------------------------ error messages


def test_without_webgpu_the_page_says_so(server, open_browser):
    bp = open_browser(webgpu=False)
    page = bp.page
    page.goto(server.url + "/tone.html")
    wait_ready(page)
    bp.screenshot("tone-no-webgpu.png")
    assert page.get_attribute("body", "data-ready") == "false"
    assert page.get_attribute("body", "data-error") == "no-webgpu", bp.console_report()
    assert "WebGPU is not available" in page.inner_text("#error")
    assert page.is_disabled("[data-action=start]")


def test_a_malformed_manifest_is_refused_by_name(server, open_browser):
    """The page's main thread checks weights/models.json (the manifest with what the
    site installed) with the CLI's checks (pycore.weights.manifest): a sha256 that is
    not 64 hex digits is named, not used."""
    with urllib.request.urlopen(server.url + "/weights/models.json") as r:
        doc = json.load(r)
    violin = next(m for m in doc["models"] if m["name"] == INSTRUMENT)
    violin["files"][0]["sha256"] = violin["files"][0]["sha256"][:8]
    bp = open_browser(webgpu=True)
    page = bp.page
    page.context.route("**/weights/models.json", lambda route: route.fulfill(
        status=200, body=json.dumps(doc), content_type="application/json"))
    page.goto(server.url + "/tone.html")
    wait_ready(page)
    message = page.inner_text("#error") if page.is_visible("#error") else "(no error shown)"
    assert page.get_attribute("body", "data-ready") == "false", message
    assert page.get_attribute("body", "data-error") == "weights", bp.console_report()
    assert "instrument list is malformed" in message, message
    assert f"weights/models.json: model {INSTRUMENT}: ddsp-violin.safetensors: sha256 must have 64 hex digits" \
        in message, message
    assert page.is_disabled("[data-action=start]")


def test_microphone_permission_denied(server, open_browser, singing):
    bp = open_browser(webgpu=True, microphone=singing[0], allow_microphone=False)
    page = bp.page
    page.goto(server.url + "/tone.html")
    wait_ready(page)
    wait_loaded(page)
    page.click("[data-action=start]")
    page.wait_for_selector("body[data-error]", state="attached", timeout=30_000)
    bp.screenshot("tone-mic-denied.png")
    assert page.get_attribute("body", "data-error") == "mic-denied", bp.console_report()
    assert "Microphone permission denied" in page.inner_text("#error")
    assert page.get_attribute("body", "data-state") == "idle"
    assert page.is_enabled("[data-action=start]")  # allowed later, the user can try again


def test_weights_failure_and_no_microphone(server, open_browser):
    """No input device at all (no fake device), and the first instrument's weights broken."""
    first = tone_entries()[0]
    bp = open_browser(webgpu=True, extra=["--use-fake-ui-for-media-stream"])
    page = bp.page
    page.context.route(f"**/weights/{first['files'][0]['path']}",
                       lambda route: route.fulfill(status=200, body=b"broken" * 100))
    page.goto(server.url + "/tone.html")
    wait_ready(page)
    wait_loaded(page)
    bp.screenshot("tone-weights-error.png")
    assert page.get_attribute("body", "data-error") == "weights", bp.console_report()
    assert "could not be loaded" in page.inner_text("#error")
    assert page.is_disabled("[data-action=start]")
    other = tone_entries()[1]["name"]
    page.select_option("select[name=instrument]", other)   # another instrument still works
    wait_loaded(page)
    assert page.get_attribute("body", "data-error") is None, bp.console_report()
    inputs = page.evaluate("async () => (await navigator.mediaDevices.enumerateDevices())"
                           ".filter(d => d.kind === 'audioinput').length")
    if inputs:
        pytest.skip(f"this machine has {inputs} audio input device(s): the no-microphone case cannot happen")
    page.click("[data-action=start]")
    page.wait_for_selector("body[data-error]", state="attached", timeout=30_000)
    bp.screenshot("tone-no-mic.png")
    assert page.get_attribute("body", "data-error") == "no-mic", bp.console_report()
    assert "microphone" in page.inner_text("#error").lower()
