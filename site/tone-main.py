"""Tone page, main thread (PyScript): microphone, audio graph, controls, pitch trail.

The tone engine runs in the worker (tone-worker.py); this side does what only the
page's main thread can do:

    an AudioContext at 16 kHz (the engine's rate: the browser resamples the microphone,
    Python never does), the microphone (getUserMedia), the two AudioWorklets of
    tone-worklets.js and the SharedArrayBuffer rings between them and the worker
    (layout: tone_ring.py), the dry/wet mix (two GainNodes; the dry path is delayed by
    the stated latency so both line up), level meters, the scrolling pitch trail, the
    latency readout and the take's downloads.

    microphone -> capture worklet -> [capture ring] -> worker: ToneStream.push
    speakers <- wet gain <- playback worklet <- [output ring] <-'
    speakers <- dry gain <- delay (the latency) <- microphone

Stable hooks for end-to-end tests:
    [data-action=start], [data-action=stop]   the transport buttons
    select[name=instrument]                   every tone model whose weights the site has
                                              (weights/models.json: "installed")
    a[download][data-take]                    the take (the instrument), a 16-bit WAV
    a[download][data-input]                   the input as processed, same length
    body[data-ready]      "true" once a take can start, "false" when none ever can
    body[data-state]      "starting" | "idle" | "loading" | "live" | "finishing"
    body[data-error]      kind of the error on display: no-webgpu | mic-denied | no-mic |
                          audio | weights | oom | device-lost | crash
    body[data-takes]      takes finished so far
    body[data-latency-ms] the stated algorithmic latency; body[data-engine-latency]
                          the engine's latency_samples; body[data-play-offset] the
                          playback worklet's offset (samples); body[data-depth] the
                          blocks the worker keeps in flight; body[data-rtt-ms] the GPU
                          round trip it measured (median, 90th percentile)
    body[data-late], body[data-lost], body[data-rtf]   real-time figures of the last take
    body[data-captured], body[data-processed]   input samples captured and processed by
                          the engine in the take under way (or the last one)
    tone.html?capture-seconds=S   a capture ring of S seconds instead of 20 (1 to 120)
    document events "stemtone-lose-device" (page_kit) and "stemtone-stall-engine"
                          (CustomEvent, detail: seconds): a driver reset, a GPU stall

The DOM helpers, the worker's start and the error notice are shared with the demix
page's main thread: site/page_kit.py. The pitch trail draws with the engine's own
voicing and silence thresholds (pycore.tone.controls), and the pitch the instrument
played as the engine reports it (after the octave knob, the register shift and the fold).
"""

import asyncio
import json
import math
import time

import js
from pyodide.ffi import JsException, create_proxy
from pyscript import document
from pyscript.ffi import to_js

from pycore.tone.controls import DEFAULT_RANGE, SILENCE_DB, VOICED
from pycore.weights.manifest import check_models

import tone_ring as R
from page_kit import by_id, connect_worker, fetch_json, floats, hide_error, listen, q, show_error, site_url

MANIFEST_URL = "weights/models.json"  # the manifest with "installed" (pycore/cli/site_build.py)
WORKLETS_URL = "tone-worklets.js"
TRAIL_SECONDS = 8
TRAIL_MIDI = (36, 96)      # C2 .. C7 on the pitch trail
NOTE_NAMES = ("C", "C♯", "D", "D♯", "E", "F", "F♯", "G", "G♯", "A", "A♯", "B")


def midi_of(hz):
    return 69.0 + 12.0 * math.log2(hz / 440.0)


def note_name(hz):
    midi = midi_of(hz)
    n = round(midi)
    cents = round(100 * (midi - n))
    return f"{NOTE_NAMES[n % 12]}{n // 12 - 1}", cents


def db(level):
    return 20 * math.log10(level) if level > 1e-6 else -120.0


def css_var(name, fallback):
    value = str(js.getComputedStyle(document.body).getPropertyValue(name)).strip()
    return value or fallback


# ------------------------------------------------------------------ pitch trail


class Trail:
    """A scrolling plot of the detected f0 (your voice, by confidence) and the pitch the
    instrument plays (the engine's played f0: after the octave knob, the register shift
    and the fold), TRAIL_SECONDS wide. It scrolls
    by the frames the engine has processed, so a slow GPU scrolls slowly but shows all."""

    def __init__(self):
        self.canvas, self.grid = by_id("trail"), by_id("trail-grid")
        self.resize()
        self.carry = 0.0
        self.last_in = None    # (x, y) of the previous voiced frame, for line segments
        self.last_out = None
        self.frames = 0

    def resize(self):
        """Fit the canvases to their CSS size (at first, and when the window is resized;
        what is drawn so far is kept, right-aligned)."""
        ratio = js.devicePixelRatio or 1
        w = max(1, int(self.canvas.clientWidth * ratio))
        h = max(1, int(self.canvas.clientHeight * ratio))
        if (w, h) == (self.canvas.width, self.canvas.height) and getattr(self, "w", None) == w:
            return
        old = None
        if getattr(self, "w", None):
            old = document.createElement("canvas")
            old.width, old.height = self.w, self.h
            old.getContext("2d").drawImage(self.canvas, 0, 0)
        self.ratio, self.w, self.h = ratio, w, h
        for c in (self.canvas, self.grid):
            c.width, c.height = w, h
        g = self.canvas.getContext("2d", to_js({"willReadFrequently": True}))
        if old is not None:
            g.drawImage(old, w - old.width, 0, old.width, h)
        self.px_per_frame = w / (TRAIL_SECONDS * 250)
        self.draw_grid()

    def y(self, hz):
        lo, hi = TRAIL_MIDI
        return self.h * (1 - (midi_of(hz) - lo) / (hi - lo))

    def draw_grid(self):
        g = self.grid.getContext("2d")
        g.clearRect(0, 0, self.w, self.h)
        g.font = f"{11 * self.ratio}px system-ui, sans-serif"
        g.textBaseline = "middle"
        line, text = css_var("--border", "#e1e4ec"), css_var("--muted", "#5d6477")
        for midi in range(TRAIL_MIDI[0], TRAIL_MIDI[1] + 1):
            if midi % 12 not in (0, 7):       # the Cs, labelled, and the Gs, faint
                continue
            y = round(self.h * (1 - (midi - TRAIL_MIDI[0]) / (TRAIL_MIDI[1] - TRAIL_MIDI[0]))) + 0.5
            g.globalAlpha = 1.0 if midi % 12 == 0 else 0.5
            g.fillStyle = line
            g.fillRect(0, y, self.w, self.ratio)
            if midi % 12 == 0 and 8 * self.ratio < y < self.h - 8 * self.ratio:
                g.fillStyle = text
                g.fillText(f"C{midi // 12 - 1}", 6 * self.ratio, y - 7 * self.ratio)
        g.globalAlpha = 1.0

    def clear(self):
        self.canvas.getContext("2d").clearRect(0, 0, self.w, self.h)
        self.carry, self.last_in, self.last_out, self.frames = 0.0, None, None, 0

    def add(self, f0s, played, confs, louds, octave):
        n = len(f0s)
        if n == 0:
            return
        g = self.canvas.getContext("2d")
        total = n * self.px_per_frame + self.carry
        shift = int(total)
        self.carry = total - shift
        if shift:   # scroll left by whole pixels
            if shift < self.w:
                image = g.getImageData(shift, 0, self.w - shift, self.h)
                g.clearRect(0, 0, self.w, self.h)
                g.putImageData(image, 0, 0)
            else:
                g.clearRect(0, 0, self.w, self.h)
            self.last_in = self.last_in and (self.last_in[0] - shift, self.last_in[1])
            self.last_out = self.last_out and (self.last_out[0] - shift, self.last_out[1])
        voice, instrument = css_var("--accent", "#5b4cf0"), css_var("--accent-2", "#e0457b")
        g.lineWidth = 2 * self.ratio
        g.lineCap = "round"
        x0 = self.w - self.carry - n * self.px_per_frame
        for i in range(n):
            x = x0 + (i + 1) * self.px_per_frame
            f0, conf, loud = float(f0s[i]), float(confs[i]), float(louds[i])
            if not (conf >= VOICED and f0 > 0 and loud > SILENCE_DB):   # what the engine plays
                self.last_in = self.last_out = None
                continue
            y_in = self.y(f0)
            y_out = self.y(float(played[i]))
            if octave or abs(y_out - y_in) > 0.5:
                self.segment(g, self.last_out, (x, y_out), instrument, 0.85)
                self.last_out = (x, y_out)
            self.segment(g, self.last_in, (x, y_in), voice, 0.4 + 0.6 * min(1.0, conf))
            self.last_in = (x, y_in)
        self.frames += n

    @staticmethod
    def segment(g, a, b, color, alpha):
        g.strokeStyle = color
        g.globalAlpha = alpha
        g.beginPath()
        if a is None or abs(a[1] - b[1]) > 40:   # a jump (new note): start a new line
            g.moveTo(b[0] - 0.5, b[1])
        else:
            g.moveTo(a[0], a[1])
        g.lineTo(b[0], b[1])
        g.stroke()
        g.globalAlpha = 1.0


# ------------------------------------------------------------------ the live audio graph


class MicError(Exception):
    def __init__(self, kind, title, message):
        super().__init__(message)
        self.kind, self.title = kind, title


class Live:
    """One take's audio graph: AudioContext, microphone, worklets, rings, gains."""

    def __init__(self, ctx, stream, play_offset, total_latency_s, mix, capture_capacity):
        self.ctx, self.stream = ctx, stream
        self.capture_sab = js.SharedArrayBuffer.new(R.ring_bytes(capture_capacity))
        self.output_sab = js.SharedArrayBuffer.new(R.ring_bytes(R.OUTPUT_SECONDS * R.SAMPLE_RATE))
        self.capture_head = js.Int32Array.new(self.capture_sab, 0, R.HEADER)
        self.capture_levels = js.Float32Array.new(self.capture_sab, 0, R.HEADER)
        self.output_head = js.Int32Array.new(self.output_sab, 0, R.HEADER)
        self.output_levels = js.Float32Array.new(self.output_sab, 0, R.HEADER)
        options = {"capture": self.capture_sab, "output": self.output_sab, "header": R.HEADER,
                   "captureCapacity": capture_capacity,
                   "outputCapacity": R.OUTPUT_SECONDS * R.SAMPLE_RATE, "slots": R.SLOTS,
                   "playOffset": play_offset}
        self.source = ctx.createMediaStreamSource(stream)
        self.capture = js.AudioWorkletNode.new(ctx, "stemtone-capture", to_js({
            "numberOfInputs": 1, "numberOfOutputs": 1, "outputChannelCount": [1], "channelCount": 1,
            "channelCountMode": "explicit", "channelInterpretation": "speakers", "processorOptions": options}))
        self.playback = js.AudioWorkletNode.new(ctx, "stemtone-playback", to_js({
            "numberOfInputs": 0, "numberOfOutputs": 1, "outputChannelCount": [1], "processorOptions": options}))
        self.wet, self.dry = ctx.createGain(), ctx.createGain()
        self.delay = ctx.createDelay(1.0)
        self.delay.delayTime.value = total_latency_s
        self.set_mix(mix, instant=True)

    def connect(self):
        ctx = self.ctx
        self.source.connect(self.capture)
        self.capture.connect(ctx.destination)     # outputs silence; connected so that it is pulled
        self.playback.connect(self.wet)
        self.wet.connect(ctx.destination)
        self.source.connect(self.delay)
        self.delay.connect(self.dry)
        self.dry.connect(ctx.destination)

    def set_mix(self, wet, instant=False):
        for gain, level in ((self.wet, wet), (self.dry, 1.0 - wet)):
            if instant:
                gain.gain.value = level
            else:
                gain.gain.setTargetAtTime(level, self.ctx.currentTime, 0.02)

    def counter(self, head, slot):
        return int(js.Atomics.load(head, slot))

    async def stop(self):
        js.Atomics.store(self.capture_head, R.STOP, 1)
        try:
            await self.ctx.close()            # after this no worklet runs: the capture is final
        finally:
            for track in self.stream.getTracks():
                track.stop()


async def open_microphone():
    """getUserMedia for a raw mono voice; MicError with a message a person can act on."""
    devices = getattr(js.navigator, "mediaDevices", None)
    if devices is None or not hasattr(devices, "getUserMedia"):
        raise MicError("no-mic", "No microphone access in this browser",
                       "This browser offers no microphone API here (it needs a secure context: "
                       "http://127.0.0.1 or https).")
    constraints = {"audio": {"echoCancellation": False, "noiseSuppression": False, "autoGainControl": False,
                             "channelCount": 1}}
    try:
        return await devices.getUserMedia(to_js(constraints))
    except JsException as e:
        name = str(getattr(e, "name", "") or str(e).split(":", 1)[0]).strip()
        text = str(e)
        if "NotAllowed" in name or "NotAllowed" in text or "Security" in name or "Permission" in text:
            raise MicError("mic-denied", "Microphone permission denied",
                           "This page may not use the microphone. Allow it in the address bar's site "
                           "settings (the icon left of the address), then press Start again.") from None
        if "NotFound" in name or "NotFound" in text or "Overconstrained" in name or "not found" in text:
            raise MicError("no-mic", "No microphone found",
                           "No audio input device is connected or enabled. Plug in a microphone (or enable "
                           "it in your system's sound settings), then press Start again.") from None
        if "NotReadable" in name or "NotReadable" in text:
            raise MicError("no-mic", "The microphone is busy",
                           "The microphone could not be opened: another program may be using it. Close it "
                           "and press Start again.") from None
        raise MicError("no-mic", "The microphone could not be opened", text) from None


# ------------------------------------------------------------------ the page


class Page:
    def __init__(self):
        self.manifest = None
        self.models = []
        self.crepe = None
        self.worker = None
        self.state = "starting"
        self.gpu_ready = False
        self.loaded = {}          # model name -> {"latency", "lag", "block_ms"}
        self.live = None
        self.trail = Trail()
        self.meter = {"in": 0.0, "out": 0.0}
        self.takes = 0
        self.take_urls = []
        self.last_take = None     # {"title", "meta"} of the last finished take (its URLs: take_urls)
        # the backlog the worker may fall behind before input is lost: tone_ring.CAPTURE_SECONDS,
        # or what the URL asks for (?capture-seconds=S; the e2e test of an overflow uses 1 s)
        asked = js.URLSearchParams.new(js.location.search).get("capture-seconds")
        self.capture_capacity = R.capture_capacity(asked if asked else R.CAPTURE_SECONDS)
        self.stats = {}
        self.t_start = 0.0
        self.last_captured = 0
        self._frame = create_proxy(self.on_frame)

    # ---- startup
    async def start(self):
        self.wire()
        try:
            await self.load_manifest()
        except ValueError as e:  # a manifest that fails pycore.weights.manifest's checks (or is not JSON)
            self.startup_failed("weights", "The instrument list is malformed",
                                f"{e}. `stemtone weights list` names the same fault in the server's "
                                "weights/manifest.json; fix the file and reload.")
            return
        except Exception as e:
            self.startup_failed("weights", "The instrument list could not be loaded",
                                f"{MANIFEST_URL}: {e}.")
            return
        self.worker = await connect_worker("tone-worker", self.on_message, self.on_worker_crash)
        self.set_status("running", "Starting the GPU worker…")
        self.worker.postMessage(to_js({"cmd": "hello", "base": site_url()}))

    def wire(self):
        listen(q("[data-action=start]"), "click", self.on_start)
        listen(q("[data-action=stop]"), "click", lambda e: asyncio.ensure_future(self.stop_take()))
        listen(by_id("instrument"), "change", lambda e: self.pick_instrument())
        listen(by_id("octave"), "change", lambda e: self.set_octave())
        listen(by_id("mix"), "input", lambda e: self.set_mix())
        listen(by_id("error-close"), "click", lambda e: hide_error())
        listen(js.window, "resize", lambda e: self.trail.resize())
        # tests: the document event "stemtone-stall-engine" (detail: seconds) pauses the
        # engine's reading of the capture ring, as a GPU stall would: forces an overflow
        listen(document, "stemtone-stall-engine", lambda e: self.worker.postMessage(
            to_js({"cmd": "stall", "seconds": float(e.detail)})))

    async def load_manifest(self):
        self.manifest = await fetch_json(MANIFEST_URL)
        models = check_models(self.manifest, MANIFEST_URL)  # the CLI's checks: a ValueError naming the fault
        tone = [m for m in models if m.get("task") == "tone"]
        self.models = [m for m in tone if m.get("installed", True)]   # only what this site can load
        self.crepe = next((m for m in models if m["name"] == "crepe-tiny"), None)
        if not tone or self.crepe is None:
            raise RuntimeError("it lists no tone model, or no crepe-tiny")
        if not self.crepe["installed"]:
            raise RuntimeError("this site has no weights for the pitch tracker crepe-tiny; build it with them "
                               f"(`stemtone build-site OUT/ --models crepe-tiny,...`, after `{self.crepe['install']}`)")
        if not self.models:
            raise RuntimeError("this site has no weights for any instrument; build it with some "
                               f"(`stemtone build-site OUT/ --models crepe-tiny,{tone[0]['name']},...`)")
        select = by_id("instrument")
        select.replaceChildren()
        for m in self.models:
            opt = document.createElement("option")
            opt.value = m["name"]
            opt.textContent = (m.get("instrument") or m["name"]).capitalize()
            select.append(opt)
        self.show_model()

    def model(self):
        name = by_id("instrument").value
        return next(m for m in self.models if m["name"] == name)

    def midi_range(self):
        lo, hi = self.model().get("midi_range") or DEFAULT_RANGE
        return float(lo), float(hi)

    def show_model(self):
        m = self.model()
        size = sum(int(f["size"]) for f in m["files"]) + sum(int(f["size"]) for f in self.crepe["files"])
        by_id("model-size").textContent = f"{size / 1e6:.1f} MB (with the CREPE pitch tracker)"
        lo, hi = (round(v) for v in self.midi_range())
        low, high = note_name(440 * 2 ** ((lo - 69) / 12))[0], note_name(440 * 2 ** ((hi - 69) / 12))[0]
        by_id("model-range").textContent = f"{low} – {high} (other notes are moved by octaves)"
        by_id("model-license").textContent = m.get("license", "—")

    # ---- status, errors
    def set_state(self, state):
        self.state = state
        document.body.dataset.state = state
        live = state == "live"
        can_start = state == "idle" and self.gpu_ready and self.model()["name"] in self.loaded
        q("[data-action=start]").disabled = not can_start
        q("[data-action=stop]").disabled = not live
        by_id("instrument").disabled = (state in ("live", "finishing", "starting") or len(self.models) < 2
                                        or not self.gpu_ready)

    def set_status(self, kind, text):
        if getattr(self, "_status", None) == (kind, text):   # called every frame while live: no needless DOM writes
            return
        self._status = (kind, text)
        badge = by_id("status-badge")
        badge.className = f"badge {kind}"
        badge.textContent = {"running": "Starting", "pass": "Ready", "fail": "Unavailable", "live": "Live",
                             "warn": "Behind", "busy": "Working"}[kind]
        by_id("status-text").textContent = text

    def startup_failed(self, kind, title, message, detail=""):
        self.set_status("fail", title)
        show_error(kind, title, message, detail)
        document.body.dataset.ready = "false"
        self.set_state("idle")

    # ---- instruments
    def pick_instrument(self):
        self.show_model()
        hide_error()
        self.request_load()
        self.set_state(self.state)

    def request_load(self):
        m = self.model()
        if m["name"] in self.loaded:
            self.show_latency(self.loaded[m["name"]])
            self.set_status("pass", f"Ready · {self.instrument_label()}")
            return
        self.set_status("running", f"Loading the {self.instrument_label()}…")
        self.worker.postMessage(to_js({"cmd": "load", "model": json.dumps(m), "crepe": json.dumps(self.crepe),
                                       "manifest": json.dumps(self.manifest)}))

    def instrument_label(self):
        m = self.model()
        return (m.get("instrument") or m["name"]).lower()

    def show_latency(self, info):
        """The latency card: engine, capture block, and the playback buffer of the worker's
        pipeline (one block of slack per block in flight; a slow round trip needs more)."""
        engine, depth, block = int(info["latency"]), int(info["depth"]), int(info["block"])
        parts = R.latency_breakdown(engine, depth, block=block, buffer=block)
        self.latency = parts
        self.play_offset = R.play_offset(int(info["lag"]), depth, buffer=block)
        body = document.body.dataset
        body.latencyMs = f"{parts['total']:.1f}"
        body.engineLatency = str(engine)
        body.playOffset = str(self.play_offset)
        body.depth = str(depth)
        body.block = str(block)
        body.rttMs = f"{info['rtt_ms']:.2f},{info['rtt_p90_ms']:.2f}"
        block_ms = parts["block"]
        by_id("lat-block-what").textContent = (
            f"{block_ms:.0f} ms ({block} samples)" + ("" if block == R.BLOCK else
                                                     ": 8 ms blocks take this GPU longer than 8 ms"))
        by_id("lat-depth").textContent = (
            f"{depth} block{'s' if depth > 1 else ''} of {block_ms:.0f} ms in flight on the GPU "
            f"(round trip {info['rtt_ms']:.1f} ms, 90% within {info['rtt_p90_ms']:.1f} ms; "
            f"a block's work {max(0.0, info['block_ms'] - info['rtt_ms']):.1f} ms)"
            + (f": {parts['buffer'] - block_ms:.0f} ms more than one block" if depth > 1 else ""))
        scale = max(parts["total"], parts["budget"]) * 1.1
        for part in ("engine", "block", "buffer"):
            q(f'#latency-bar span[data-part="{part}"]').style.width = f"{100 * parts[part] / scale:.2f}%"
            by_id(f"lat-{part}").textContent = f"{parts[part]:.0f} ms"
        q("#latency-bar .latency-budget").style.left = f"{100 * parts['budget'] / scale:.2f}%"
        total = by_id("latency-total")
        total.textContent = f"{parts['total']:.0f} ms of {parts['budget']:.0f} ms"
        total.className = "latency-total " + ("pass" if parts["within"] else "fail")

    # ---- a take
    def on_start(self, _event):
        """The Start button. The AudioContext is made here, inside the click, so that the
        browser lets it play; the rest of the start is asynchronous."""
        if self.state != "idle":
            return
        hide_error()
        try:
            ctx = js.AudioContext.new(to_js({"sampleRate": R.SAMPLE_RATE, "latencyHint": "interactive"}))
        except JsException as e:
            show_error("audio", "The audio engine could not start",
                       f"This browser cannot run audio at {R.SAMPLE_RATE} Hz ({e}).")
            return
        self.set_state("starting")
        asyncio.ensure_future(self.start_take(ctx))

    async def start_take(self, ctx):
        info = self.loaded[self.model()["name"]]
        self.set_status("running", "Opening the microphone…")
        try:
            stream = await open_microphone()
            try:
                await ctx.audioWorklet.addModule(WORKLETS_URL)
                offset = R.play_offset(int(info["lag"]), int(info["depth"]), buffer=int(info["block"]))
                live = Live(ctx, stream, offset, self.latency["total"] / 1000, int(by_id("mix").value) / 100,
                            self.capture_capacity)
            except JsException as e:
                for track in stream.getTracks():
                    track.stop()
                raise MicError("audio", "The audio engine could not start",
                               f"This browser could not run the page's audio worklets at 16 kHz ({e}).") from None
        except MicError as e:
            ctx.close()
            show_error(e.kind, e.title, str(e))
            self.set_status("pass", f"Ready · {self.instrument_label()}")
            self.set_state("idle")
            return
        self.live = live
        document.body.dataset.captured = document.body.dataset.processed = "0"
        self.trail.clear()
        self.stats = {"rtf": 0.0, "processed": 0, "captured": 0, "lost": 0}
        by_id("take-card").hidden = True
        self.worker.postMessage(to_js({"cmd": "start", "capture": live.capture_sab, "output": live.output_sab,
                                       "octave": int(by_id("octave").value)}))
        live.connect()
        self.t_start = time.perf_counter()
        self.set_state("live")
        self.set_status("live", f"Listening · {self.instrument_label()} · sing!")
        js.requestAnimationFrame(self._frame)
        asyncio.ensure_future(self.ticker(live))
        await ctx.resume()
        base = float(ctx.baseLatency or 0) + float(getattr(ctx, "outputLatency", 0) or 0)
        by_id("lat-device").textContent = f" (here about {1000 * base:.0f} ms more)" if base else ""

    async def stop_take(self):
        if self.state != "live" or self.live is None:
            return
        live, self.live = self.live, None
        self.set_state("finishing")
        self.set_status("busy", "Finishing the take…")
        await live.stop()
        late = live.counter(live.output_head, R.LATE)
        played = live.counter(live.output_head, R.PLAYED)
        captured = live.counter(live.capture_head, R.WRITE)
        self.stats.update(late=late, played=played, captured=captured)
        rtf = self.stats.get("rtf", 0.0)
        self.set_realtime("realtime muted", (
            f"Live: {late} of {late + played} blocks were late"
            + (f" (this GPU needs {rtf:.1f}× real time)" if rtf > 1 else "")
            + "; the take holds everything that was sung.") if late else
            f"Live: all {played} blocks were on time.")
        body = document.body.dataset
        body.late, body.played, body.captured = str(late), str(played), str(captured)
        self.worker.postMessage(to_js({"cmd": "stop"}))
        card = by_id("take-card")
        card.hidden = False
        by_id("finishing").hidden = False
        by_id("take-audio").hidden = True
        for link in ("take-link", "input-link"):
            by_id(link).hidden = True
        by_id("take-title").textContent = f"Take {self.takes + 1} · {self.instrument_label()}"
        by_id("take-meta").textContent = f"{captured / R.SAMPLE_RATE:.1f} s captured"
        self.show_finishing(0.0, -1.0)
        self.meter = {"in": 0.0, "out": 0.0}
        self.draw_meters()

    def show_finishing(self, fraction, seconds_left):
        by_id("finish-bar").style.width = f"{100 * fraction:.1f}%"
        by_id("finish-text").textContent = (
            "Finishing the take: the GPU is catching up with what you sang" if fraction < 1
            else "Writing the WAV files…")
        by_id("finish-eta").textContent = (f"{100 * fraction:.0f}% · about {max(1, round(seconds_left))} s left"
                                          if 0 < fraction < 1 and seconds_left > 0 else "")

    def on_take(self, d):
        for url in self.take_urls:
            js.URL.revokeObjectURL(url)
        take_url, input_url = js.URL.createObjectURL(d.wav), js.URL.createObjectURL(d.input_wav)
        self.take_urls = [take_url, input_url]
        self.takes += 1
        name = self.instrument_label()
        stamp = time.strftime("%H%M%S")
        link, inp = by_id("take-link"), by_id("input-link")
        link.href, link.download = take_url, f"stemtone-{name}-{stamp}.wav"
        inp.href, inp.download = input_url, f"stemtone-voice-{stamp}.wav"
        by_id("take-audio").src = take_url
        s = self.stats
        processed, lost = int(d.processed), int(d.lost)
        late, played = s.get("late", 0), s.get("played", 0)
        parts = [f"{float(d.seconds):.1f} s", f"GPU time {float(d.compute_seconds):.1f} s for "
                 f"{processed / R.SAMPLE_RATE:.1f} s of input"]
        if late:
            parts.append(f"{late} of {late + played} live blocks were late (silent live, complete in the take)")
        if lost:
            parts.append(f"{lost / R.SAMPLE_RATE:.1f} s of input overflowed the buffer (silence in the take)")
        self.last_take = {"title": f"Take {self.takes} · {name}", "meta": " · ".join(parts)}
        self.show_last_take()
        body = document.body.dataset
        body.lost = str(lost)
        body.takeSeconds = f"{float(d.seconds):.3f}"
        body.computeSeconds = f"{float(d.compute_seconds):.3f}"
        body.takes = str(self.takes)
        self.set_status("pass", f"Ready · {self.instrument_label()}")
        self.set_state("idle")

    def show_last_take(self):
        """The take card with the last finished take (its player and downloads), or no
        card before the first: after a take, and when a later one fails."""
        card = by_id("take-card")
        card.hidden = self.last_take is None
        if self.last_take is None:
            return
        by_id("take-title").textContent = self.last_take["title"]
        by_id("take-meta").textContent = self.last_take["meta"]
        for el in ("take-link", "input-link", "take-audio"):
            by_id(el).hidden = False
        by_id("finishing").hidden = True

    # ---- live display
    def on_frame(self, _now):
        """Level meters, once per animation frame."""
        live = self.live
        if live is None:
            return
        for key, levels in (("in", live.capture_levels), ("out", live.output_levels)):
            peak = float(levels[R.LEVEL])
            self.meter[key] = max(peak, self.meter[key] * 0.92)      # fast attack, ~0.5 s fall
        self.draw_meters()
        js.requestAnimationFrame(self._frame)

    async def ticker(self, live):
        """The real-time figures, ten times a second. A timer, not animation frames: those
        stall while a software GPU (SwiftShader) is busy, timers do not."""
        while self.live is live:
            self.show_realtime(live)
            await asyncio.sleep(0.1)

    def draw_meters(self):
        for key in ("in", "out"):
            level = db(self.meter[key])
            width = max(0.0, min(1.0, (level + 60) / 60))
            bar = by_id(f"meter-{key}")
            bar.style.width = f"{100 * width:.1f}%"
            bar.classList.toggle("hot", level > -3)
            by_id(f"meter-{key}-db").textContent = f"{level:.0f} dB" if level > -60 else "—"

    def show_realtime(self, live):
        s = self.stats
        late = live.counter(live.output_head, R.LATE)
        played = live.counter(live.output_head, R.PLAYED)
        captured = live.counter(live.capture_head, R.WRITE)
        behind = max(0, captured - s.get("processed", 0)) / R.SAMPLE_RATE
        total = late + played
        recent_late = late - s.get("late_seen", 0)
        s["late_seen"] = late
        body = document.body.dataset
        body.late, body.rtf, body.captured = str(late), f"{s.get('rtf', 0.0):.3f}", str(captured)
        if total == 0:
            return
        if behind > 0.25 or recent_late:
            self.set_status("warn", "Behind real time: live output paused, the take keeps everything")
            self.set_realtime("realtime warn", (
                f"This GPU needs {s.get('rtf', 0.0):.1f}× real time. {late} of {total} blocks were late "
                f"and stay silent live; {behind:.1f} s of singing wait to be processed"
                + (f"; {s['lost'] / R.SAMPLE_RATE:.1f} s overflowed the "
                   f"{self.capture_capacity / R.SAMPLE_RATE:.0f} s buffer" if s.get("lost") else "")
                + ". Stop to finish the take."))
        else:
            self.set_status("live", f"Live · {self.instrument_label()}")
            self.set_realtime("realtime muted", (
                f"Real time: the GPU uses {100 * s.get('rtf', 0.0):.0f}% of each block's time · "
                f"{late} late blocks of {total}"))

    def set_realtime(self, cls, text):
        el = by_id("realtime")
        if el.textContent != text:
            el.className, el.textContent = cls, text

    # ---- the worker
    def on_message(self, event):     # guarded by page_kit.connect_worker
        self.handle(event.data)

    def handle(self, d):
        kind = getattr(d, "stemtone", None) if d is not None else None
        if kind == "ready":
            self.gpu_ready = True
            by_id("gpu-name").textContent = str(d.gpu)
            document.body.dataset.ready = "true"
            self.set_state("idle")
            self.request_load()
        elif kind == "loading":
            self.set_state("loading" if self.state in ("idle", "loading") else self.state)
            self.set_status("running", str(d.message))
        elif kind == "loaded":
            info = {"latency": int(d.latency), "lag": int(d.lag), "block": int(d.block),
                    "block_ms": float(d.block_ms), "work_ms": str(d.work_ms),
                    "rtt_ms": float(d.rtt_ms), "rtt_p90_ms": float(d.rtt_p90_ms), "depth": int(d.depth)}
            self.loaded[str(d.name)] = info
            document.body.dataset.blockMs = f"{info['block_ms']:.2f}"
            document.body.dataset.workMs = info["work_ms"]
            if str(d.name) == self.model()["name"]:
                self.show_latency(info)
                self.set_status("pass", f"Ready · {self.instrument_label()}")
                self.set_state("idle" if self.state in ("idle", "loading") else self.state)
        elif kind == "frames":
            self.stats.update(rtf=float(d.rtf), processed=int(d.processed), captured=int(d.captured),
                              lost=int(d.lost))
            f0, conf, loud = floats(d.f0), floats(d.confidence), floats(d.loudness)
            self.trail.add(f0, floats(d.played), conf, loud, int(by_id("octave").value))
            self.show_note(f0, conf)
            by_id("trail-time").textContent = f"{int(d.processed) / R.SAMPLE_RATE:.1f} s processed"
            document.body.dataset.processed = str(int(d.processed))
        elif kind == "finishing":
            self.show_finishing(float(d.fraction), float(d.seconds_left))
        elif kind == "take":
            self.on_take(d)
        elif kind == "error":
            self.on_error(str(d.kind), str(d.title), str(d.message), str(d.detail))

    def show_note(self, f0s, confs):
        for i in range(len(f0s) - 1, -1, -1):
            if confs[i] >= VOICED and f0s[i] > 0:
                name, cents = note_name(float(f0s[i]))
                by_id("note").textContent = f"{name} {cents:+d}¢ · {float(f0s[i]):.0f} Hz"
                return

    def on_error(self, kind, title, message, detail):
        if kind == "no-webgpu":
            by_id("gpu-name").textContent = "none (no WebGPU)"
            self.startup_failed(kind, title, message + ".", detail)
            return
        if kind == "weights":
            self.set_status("fail", title)
            show_error(kind, title, message, detail)
            self.set_state("idle" if self.state in ("idle", "loading") else self.state)
            return
        show_error(kind, title, message, detail)
        if self.live is not None:
            asyncio.ensure_future(self.live.stop())
            self.live = None
        self.show_last_take()  # the take that failed is gone; the one before stays
        self.set_status("fail", title)
        self.set_state("idle")
        if kind == "device-lost":  # the worker dropped the instruments: load this one on a fresh device
            self.loaded.clear()
            self.request_load()

    def on_worker_crash(self, event):
        error = getattr(event, "error", None) or event
        message = f"The GPU worker stopped: {error}. Reload the page to start again."
        self.startup_failed("crash", "The tone engine crashed", message)

    # ---- controls
    def set_octave(self):
        if self.worker is not None:
            self.worker.postMessage(to_js({"cmd": "set", "octave": int(by_id("octave").value)}))

    def set_mix(self):
        wet = int(by_id("mix").value)
        by_id("mix-value").textContent = {100: "100% instrument", 0: "100% voice"}.get(
            wet, f"{wet}% instrument · {100 - wet}% voice")
        if self.live is not None:
            self.live.set_mix(wet / 100)


page = Page()
try:
    await page.start()  # noqa: F704 - PyScript runs scripts with top-level await
except Exception as e:
    import traceback

    page.startup_failed("crash", "The page failed to start", f"{type(e).__name__}: {e}", traceback.format_exc())
