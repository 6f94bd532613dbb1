"""Demix page, main thread (PyScript): input, progress, players, downloads.

The heavy work runs in the worker (demix.py); this side does what only the page's
main thread can do:

    decode any audio the browser can play (decodeAudioData on an OfflineAudioContext
    at 44.1 kHz), send the channels to the worker, show its progress with an ETA,
    cancel it (a SharedArrayBuffer flag the worker reads between segments), and play
    the stems it sends back: one AudioBufferSourceNode per stem into a GainNode
    (mute/solo), all started together on one shared transport.

Stable hooks for end-to-end tests:
    input[type=file]                   the file input (the drop zone wraps it)
    body[data-ready]                   "true" once a file can be separated, "false" when
                                       it never can (then body[data-error] says why)
    body[data-state]                   "starting" | "idle" | "busy"
    body[data-error]                   kind of the error on display: decode | input |
                                       weights | checkpoint | oom | device-lost | memory |
                                       cancelled | no-webgpu | crash (removed when a job starts)
    body[data-results]                 number of separations finished so far
    body[data-checkpoints]             number of checkpoint files loaded as models so far
    #model option[value=NAME]          the separation models; data-installed="false" for
                                       the ones the server does not have
    #checkpoint                        the checkpoint file input (multiple files)
    [data-stem=NAME] a[download]       each finished stem and its WAV

Models: /weights/models.json (pycore/cli/serve.py) lists the manifest's models with whether
the server has their weights; those it lacks are listed with the command that installs
them. A checkpoint file picked in the page is converted and loaded by the worker and
becomes a model of this session ("file:1", ...).

The DOM helpers, the worker's start and the error notice are shared with the tone
page's main thread: site/page_kit.py.
"""

import asyncio
import json
import time

import js
from pyodide.ffi import JsException, create_proxy
from pyscript import document
from pyscript.ffi import to_js

from page_kit import by_id, connect_worker, fetch_json, floats, hide_error, listen, show_error

SAMPLE_RATE = 44100  # the models' rate; decodeAudioData resamples to it
MANIFEST_URL = "/weights/models.json"  # the manifest with "installed" (pycore/cli/serve.py)
CACHE_NAME = "stemtone-weights"  # the workers' weights cache (worker_kit.py)
STAGE_TITLES = {"decode": "Decoding", "weights": "Loading the model", "separate": "Separating", "export": "Exporting"}


def fmt_time(seconds):
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def fmt_eta(seconds):
    if seconds < 60:
        return f"about {max(1, round(seconds))} s left"
    return f"about {round(seconds / 60)} min left"


def fmt_mb(nbytes):
    return f"{nbytes / 1e6:.1f} MB"


def stem_label(name):
    return name.replace("_", " ").capitalize()


def is_separation(m):
    """A manifest entry of a separation model (the Demucs and Open-Unmix entries carry
    stems and no task)."""
    return m.get("task") == "separate" or ("task" not in m and "stems" in m)


def model_title(m):
    # the stems are listed below the selector: "Spleeter 2 stems (vocals / ...)" -> "Spleeter 2 stems"
    return (m.get("title") or m["name"]).split(" (")[0]


# ------------------------------------------------------------------ audio decoding


class DecodeError(Exception):
    pass


async def decode(file):
    """A File -> AudioBuffer at 44.1 kHz with 1 or 2 channels (more are downmixed)."""
    try:
        data = await file.arrayBuffer()
    except JsException as e:
        raise DecodeError(f"the file could not be read ({e})") from None
    if data.byteLength == 0:
        raise DecodeError("the file is empty")
    try:
        audio = await js.OfflineAudioContext.new(1, 1, SAMPLE_RATE).decodeAudioData(data)
    except JsException as e:
        reason = str(e).split(": ", 1)[-1]
        raise DecodeError(f"this browser cannot decode it as audio ({reason}). It may not be an audio file, "
                          "be damaged, or use a format this browser does not support") from None
    if audio.length == 0:
        raise DecodeError("it contains no audio samples")
    if audio.numberOfChannels > 2:
        # Web Audio's standard speaker downmix (e.g. 5.1 -> stereo)
        ctx = js.OfflineAudioContext.new(2, audio.length, SAMPLE_RATE)
        src = ctx.createBufferSource()
        src.buffer = audio
        src.connect(ctx.destination)
        src.start()
        audio = await ctx.startRendering()
    return audio


# ------------------------------------------------------------------ playback


class Player:
    """All stems on one transport; mute/solo through one GainNode per stem."""

    ctx = None  # one AudioContext for the page, made on the first click on Play

    def __init__(self, buffers, on_tick):
        self.buffers = buffers          # stem name -> AudioBuffer
        self.duration = max(b.duration for b in buffers.values())
        self.on_tick = on_tick          # called with the position while playing
        self.gains = {}
        self.sources = []
        self.playing = False
        self.offset = 0.0               # position while paused
        self.started = 0.0              # ctx time at which position 0 would have played
        self.muted, self.soloed = set(), set()
        self._frame = create_proxy(self._tick)

    def _ensure_graph(self):
        if Player.ctx is None:
            Player.ctx = js.AudioContext.new()
        if not self.gains:
            for name in self.buffers:
                g = Player.ctx.createGain()
                g.connect(Player.ctx.destination)
                self.gains[name] = g
            self._apply_gains(instant=True)

    def position(self):
        if self.playing:
            return min(max(0.0, Player.ctx.currentTime - self.started), self.duration)
        return self.offset

    def play(self):
        if self.playing:
            return
        self._ensure_graph()
        ctx = Player.ctx
        ctx.resume()
        if self.offset >= self.duration - 0.01:
            self.offset = 0.0
        t0 = ctx.currentTime + 0.05  # every stem starts on the same audio frame
        for name, buffer in self.buffers.items():
            src = ctx.createBufferSource()
            src.buffer = buffer
            src.connect(self.gains[name])
            src.start(t0, self.offset)
            self.sources.append(src)
        self.started = t0 - self.offset
        self.playing = True
        js.requestAnimationFrame(self._frame)

    def _stop_sources(self):
        for src in self.sources:
            src.stop()
            src.disconnect()
        self.sources = []

    def pause(self):
        if self.playing:
            self.offset = self.position()
            self._stop_sources()
            self.playing = False
        self.on_tick(self.offset)

    def toggle(self):
        self.pause() if self.playing else self.play()

    def seek(self, seconds):
        seconds = min(max(0.0, seconds), self.duration)
        if self.playing:
            self._stop_sources()
            self.playing = False
            self.offset = seconds
            self.play()
        else:
            self.offset = seconds
        self.on_tick(seconds)

    def _tick(self, _now):
        if not self.playing:
            return
        pos = self.position()
        if pos >= self.duration:
            self._stop_sources()
            self.playing, self.offset = False, 0.0
            self.on_tick(self.duration)
            return
        self.on_tick(pos)
        js.requestAnimationFrame(self._frame)

    def set_mute(self, name, on):
        (self.muted.add if on else self.muted.discard)(name)
        self._apply_gains()

    def set_solo(self, name, on):
        (self.soloed.add if on else self.soloed.discard)(name)
        self._apply_gains()

    def audible(self, name):
        return name not in self.muted and (not self.soloed or name in self.soloed)

    def _apply_gains(self, instant=False):
        if not self.gains:
            return
        now = Player.ctx.currentTime
        for name, g in self.gains.items():
            level = 1.0 if self.audible(name) else 0.0
            if instant:
                g.gain.value = level
            else:
                g.gain.setTargetAtTime(level, now, 0.01)  # ~10 ms fade: no clicks

    def close(self):
        self._stop_sources()
        self.playing = False
        for g in self.gains.values():
            g.disconnect()
        self.gains = {}


# ------------------------------------------------------------------ waveforms


def draw_wave(canvas, peaks, scale, color, alpha=1.0):
    """Min/max outline of `peaks` ([min0, max0, ...]), one bar per device pixel column."""
    ratio = js.devicePixelRatio or 1
    width = max(1, int(canvas.clientWidth * ratio))
    height = max(1, int(canvas.clientHeight * ratio))
    canvas.width, canvas.height = width, height
    g = canvas.getContext("2d")
    g.clearRect(0, 0, width, height)
    g.fillStyle = color
    g.globalAlpha = alpha
    columns = len(peaks) // 2
    mid = height / 2
    amp = (height / 2 - 1) * scale
    bar = max(1, round(ratio))
    for x in range(0, width, bar):
        a = x * columns // width
        b = max(a + 1, (x + bar) * columns // width)
        lo = min(peaks[2 * i] for i in range(a, b))
        hi = max(peaks[2 * i + 1] for i in range(a, b))
        top = mid - hi * amp
        g.fillRect(x, top, bar, max(1.0, (hi - lo) * amp))
    g.fillRect(0, mid - 0.5 * ratio, width, ratio)  # the zero line, always visible


class Results:
    """The results card: one row per stem with player controls, waveform and download."""

    def __init__(self, msg, track, meta):
        self.urls = []   # blob: URLs, revoked by close()
        self.stems = []  # (name, waveform peaks, WAV blob URL)
        buffers = {}
        for stem in msg.stems:
            name = str(stem.name)
            channels = list(stem.channels)
            buf = js.AudioBuffer.new(to_js({"length": channels[0].length, "numberOfChannels": len(channels),
                                            "sampleRate": SAMPLE_RATE}))
            for c, data in enumerate(channels):
                buf.copyToChannel(data, c)
            buffers[name] = buf
            self.stems.append((name, floats(stem.peaks), self._url(stem.wav)))
        self.zip_url = self._url(msg.zip)
        self.player = Player(buffers, self.show_position)
        self.track, self.meta = track, meta
        self.peak = max(max(abs(v) for v in p) for _, p, _ in self.stems) or 1.0

    def _url(self, blob):
        url = js.URL.createObjectURL(blob)
        self.urls.append(url)
        return url

    def render(self):
        by_id("track-name").textContent = self.track
        by_id("track-meta").textContent = self.meta
        zip_link = by_id("zip")
        zip_link.href = self.zip_url
        zip_link.download = f"{self.track} - stems.zip"
        box = by_id("stems")
        box.replaceChildren()
        for name, _, url in self.stems:
            row = by_id("stem-row").content.firstElementChild.cloneNode(True)
            row.dataset.stem = name
            label = stem_label(name)
            row.querySelector(".stem-label").textContent = label
            row.querySelector(".mute").title = f"Mute {label}"
            row.querySelector(".solo").title = f"Solo {label}"
            link = row.querySelector("a[download]")
            link.href, link.download = url, f"{self.track} - {name}.wav"
            link.title = f"Download {label} as a 32-bit float WAV"
            box.append(row)
            mute, solo = row.querySelector(".mute"), row.querySelector(".solo")
            listen(mute, "click", lambda e, n=name, b=mute: self.toggle(b, n, self.player.set_mute))
            listen(solo, "click", lambda e, n=name, b=solo: self.toggle(b, n, self.player.set_solo))
            listen(row.querySelector(".wave"), "pointerdown", self.on_seek)
        by_id("results").hidden = False
        self.draw()
        self.show_position(0.0)

    def toggle(self, button, name, setter):
        on = button.getAttribute("aria-pressed") != "true"
        button.setAttribute("aria-pressed", "true" if on else "false")
        setter(name, on)
        for stem_name, _, _ in self.stems:
            row = by_id("stems").querySelector(f'[data-stem="{stem_name}"]')
            row.classList.toggle("silent", not self.player.audible(stem_name))

    def draw(self):
        for name, peaks, _ in self.stems:
            row = by_id("stems").querySelector(f'[data-stem="{name}"]')
            color = str(js.getComputedStyle(row).getPropertyValue("--stem")).strip() or "#5b4cf0"
            base, top = row.querySelector(".wave-base"), row.querySelector(".wave-top")
            top.style.width = f"{base.clientWidth}px"
            draw_wave(base, peaks, 0.95 / self.peak, color, alpha=0.3)  # not played yet: faded
            draw_wave(top, peaks, 0.95 / self.peak, color)

    def on_seek(self, event):
        rect = event.currentTarget.getBoundingClientRect()
        fraction = (event.clientX - rect.left) / max(1.0, rect.width)
        self.player.seek(fraction * self.player.duration)

    def show_position(self, seconds):
        fraction = seconds / self.player.duration if self.player.duration else 0.0
        pct = f"{100 * fraction:.3f}%"
        for row in by_id("stems").querySelectorAll(".wave"):
            row.querySelector(".wave-played").style.width = pct
            row.querySelector(".wave-cursor").style.left = pct
        by_id("time").textContent = f"{fmt_time(seconds)} / {fmt_time(self.player.duration)}"
        by_id("play").classList.toggle("playing", self.player.playing)
        by_id("play").setAttribute("aria-label", "Pause" if self.player.playing else "Play")

    def close(self):
        self.player.close()
        for url in self.urls:
            js.URL.revokeObjectURL(url)
        by_id("stems").replaceChildren()
        by_id("results").hidden = True


# ------------------------------------------------------------------ the page


class Page:
    def __init__(self):
        self.models = []
        self.ready = False     # the worker has a GPU
        self.loaded_files = 0  # checkpoint files loaded as session models
        self.worker = None
        self.flag = js.Int32Array.new(js.SharedArrayBuffer.new(4))  # cancel flag, read by the worker
        self.gpu = ""
        self.busy = False
        self.cancel_requested = False
        self.results = None
        self.finished = 0
        self.job = None  # {name, stage, fraction, message, t_stage, f_stage, segments (from the worker), ...}
        self.seconds_per_segment = None  # measured by the last separation, for the ETA
        self.resizes = 0

    # ---- startup
    async def start(self):
        body = document.body
        self.wire_inputs()
        try:
            await self.load_manifest()
        except Exception as e:  # no manifest: nothing can be separated
            self.startup_failed("weights", "The model list could not be loaded",
                                f"{MANIFEST_URL}: {e}. Run `make demo` to create the weights.")
            return
        self.worker = await connect_worker("demix-worker", self.on_message, self.on_worker_crash)
        self.set_startup("running", "Starting the GPU worker…")
        self.worker.postMessage(to_js({"cmd": "hello", "flag": self.flag.buffer, "base": str(js.location.origin)}))
        body.dataset.state = "starting"

    def set_startup(self, state, text):
        badge = by_id("startup-badge")
        badge.className = f"badge {state}"
        badge.textContent = {"running": "Starting", "pass": "Ready", "fail": "Unavailable"}[state]
        by_id("startup-text").textContent = text

    def startup_failed(self, kind, title, message, detail=""):
        self.set_startup("fail", title)
        show_error(kind, title, message, detail)
        document.body.dataset.ready = "false"
        document.body.dataset.state = "idle"

    async def load_manifest(self):
        manifest = await fetch_json(MANIFEST_URL)
        models = [m for m in manifest["models"] if is_separation(m)]
        self.fetchable = {m["name"]: m for m in manifest["models"] if "fetch" in m}  # for the converter
        # installed models first, in manifest order; then the ones the server lacks
        self.models = [m for m in models if m.get("installed", True)] + [
            m for m in models if not m.get("installed", True)]
        if not self.models:
            raise RuntimeError("no separation model is listed")
        select = by_id("model")
        select.replaceChildren()
        short = [model_title(m) for m in self.models]
        for m in self.models:  # "Hybrid Transformer Demucs v4 · htdemucs_6s" where the short titles collide
            m["label"] = model_title(m) + (f" · {m['name']}" if short.count(model_title(m)) > 1 else "")
            self.add_option(m)
        await self.show_model()

    def add_option(self, m, first=False):
        select = by_id("model")
        opt = document.createElement("option")
        opt.value = m["name"]
        installed = m.get("installed", True)
        opt.dataset.installed = "true" if installed else "false"
        opt.textContent = m.get("label", model_title(m)) + (" · your file" if m.get("session") else
                                                            "" if installed else " · not installed")
        if first:
            select.prepend(opt)
        else:
            select.append(opt)
        select.disabled = select.options.length < 2

    def model(self):
        name = by_id("model").value
        return next(m for m in self.models if m["name"] == name)

    def usable(self, m=None):
        m = m or self.model()
        return m.get("installed", True)

    async def show_model(self):
        m = self.model()
        chips = by_id("model-stems")
        chips.replaceChildren()
        for stem in m["stems"]:
            li = document.createElement("li")
            li.style.setProperty("--stem", f"var(--stem-{stem}, var(--stem-other))")
            li.textContent = stem_label(stem)
            chips.append(li)
        by_id("model-license").textContent = m.get("license", "—")
        by_id("model").title = m.get("title") or m["name"]
        missing = by_id("model-missing")
        missing.hidden = self.usable(m)
        if not self.usable(m):
            missing.replaceChildren()
            code = document.createElement("code")
            code.textContent = m.get("install") or f"stemtone weights fetch {m['name']}"
            missing.append("Not installed on this server: run ", code,
                           " there and reload this page, or use a checkpoint file below.")
            by_id("model-size").textContent = "not installed"
        elif m.get("session"):
            by_id("model-size").textContent = f"{fmt_mb(m['size'])} · from your file, for this visit"
        else:
            size = sum(int(f["size"]) for f in m["files"])
            cached = await self.is_cached(m)
            by_id("model-size").textContent = f"{fmt_mb(size)} · " + (
                "cached in this browser" if cached else "downloaded on first use")
        if self.ready and not self.busy:
            self.set_input_enabled(True)

    async def is_cached(self, m):
        try:
            cache = await js.caches.open(CACHE_NAME)
            (entry,) = m["files"]
            hit = await cache.match(f"/weights/{entry['path']}?sha256={entry['sha256']}")
            return bool(hit)
        except (JsException, AttributeError, ValueError):
            return False

    # ---- input: drop zone and file picker
    def wire_inputs(self):
        zone, picker = by_id("dropzone"), by_id("file")

        def over(event):
            event.preventDefault()
            if not self.busy and not picker.disabled:
                zone.classList.add("over")

        def leave(event):
            zone.classList.remove("over")

        def drop(event):
            event.preventDefault()
            zone.classList.remove("over")
            files = event.dataTransfer.files
            if files.length and not picker.disabled:
                asyncio.ensure_future(self.open_file(files.item(0)))

        def picked(event):
            if picker.files.length:
                file = picker.files.item(0)
                picker.value = ""  # choosing the same file again fires change again
                asyncio.ensure_future(self.open_file(file))

        listen(zone, "dragenter", over)
        listen(zone, "dragover", over)
        listen(zone, "dragleave", leave)
        listen(zone, "drop", drop)
        listen(picker, "change", picked)
        # a file dropped next to the drop zone must not navigate away from the results
        listen(document, "dragover", lambda e: e.preventDefault())
        listen(document, "drop", lambda e: e.preventDefault())
        listen(by_id("cancel"), "click", lambda e: self.cancel())
        listen(by_id("error-close"), "click", lambda e: hide_error())
        listen(by_id("clear"), "click", lambda e: self.clear())
        listen(by_id("play"), "click", lambda e: self.results and self.results.player.toggle())
        listen(by_id("model"), "change", lambda e: asyncio.ensure_future(self.show_model()))
        listen(by_id("checkpoint"), "change", lambda e: asyncio.ensure_future(self.pick_checkpoint()))
        listen(document, "keydown", self.on_key)
        listen(js.window, "resize", self.on_resize)

    def on_resize(self, _event):
        """Redraw the waveforms at the new width, once the resizing pauses."""
        self.resizes += 1
        serial = self.resizes

        async def later():
            await asyncio.sleep(0.15)
            if serial == self.resizes and self.results:
                self.results.draw()

        asyncio.ensure_future(later())

    def on_key(self, event):
        tag = str(event.target.tagName).lower()
        if event.key == " " and self.results and tag not in ("input", "button", "select", "textarea", "a"):
            event.preventDefault()
            self.results.player.toggle()

    def set_input_enabled(self, on):
        """The audio input (only for a model that is installed) and the checkpoint input."""
        audio = on and self.usable()
        by_id("file").disabled = not audio
        by_id("dropzone").dataset.disabled = "false" if audio else "true"
        by_id("checkpoint").disabled = not on
        by_id("checkpoint-button").dataset.disabled = "false" if on else "true"

    # ---- a checkpoint file of the user's: converted and loaded by the worker
    async def pick_checkpoint(self):
        picker = by_id("checkpoint")
        files = [picker.files.item(i) for i in range(picker.files.length)]
        picker.value = ""  # the same file again fires change again
        if not files or self.busy:
            return
        self.busy = True
        hide_error()
        document.body.dataset.state = "busy"
        self.set_input_enabled(False)
        status = by_id("checkpoint-status")
        status.textContent = "Reading " + ", ".join(str(f.name) for f in files) + "…"
        try:
            payload = [to_js({"name": str(f.name), "data": await f.arrayBuffer()}) for f in files]
        except JsException as e:
            self.checkpoint_done()
            status.textContent = ""
            show_error("checkpoint", "The checkpoint file could not be read", f"{e}")
            return
        self.loaded_files += 1
        self.worker.postMessage(to_js({"cmd": "checkpoint", "id": f"file:{self.loaded_files}",
                                       "files": payload, "fetchable": json.dumps(self.fetchable)}))

    def checkpoint_done(self):
        self.busy = False
        document.body.dataset.state = "idle"
        self.set_input_enabled(True)

    async def on_model(self, entry):
        """A checkpoint file became a model of this session: select it."""
        files = entry["title"].split(", ")
        entry["label"] = f"{entry['runs_as']} · {files[0]}" + (f" + {len(files) - 1}" if len(files) > 1 else "")
        self.models.insert(0, entry)
        self.add_option(entry, first=True)
        by_id("model").value = entry["name"]
        by_id("checkpoint-status").textContent = f"Loaded {entry['title']} as {entry['runs_as']}"
        self.checkpoint_done()
        await self.show_model()
        document.body.dataset.checkpoints = str(sum(1 for m in self.models if m.get("session")))

    # ---- a job: decode here, separate in the worker
    async def open_file(self, file):
        if self.busy:
            return
        name = str(file.name)
        track = name.rsplit(".", 1)[0] if "." in name else name
        self.begin_job(name)
        try:
            audio = await decode(file)
        except DecodeError as e:
            self.end_job()
            show_error("decode", f"“{name}” could not be opened", f"The file “{name}” cannot be used: {e}. "
                       + ("Your previous results are kept." if self.results else ""))
            return
        if self.cancel_requested:
            self.end_job()
            show_error("cancelled", "Cancelled", "The separation was cancelled.")
            return
        channels = [audio.getChannelData(c) for c in range(audio.numberOfChannels)]
        self.job["channels"] = audio.numberOfChannels
        self.job["seconds"] = audio.duration
        self.set_stage("decode", 1.0, "Sending the audio to the GPU worker…")
        self.worker.postMessage(to_js({"cmd": "separate", "model": json.dumps(self.model()), "name": track,
                                       "channels": channels}))

    def begin_job(self, filename):
        self.busy, self.cancel_requested = True, False
        js.Atomics.store(self.flag, 0, 0)
        hide_error()
        self.job = {"name": filename, "stage": None, "t0": time.perf_counter()}
        asyncio.ensure_future(self.tick())
        body = document.body
        body.dataset.state = "busy"
        self.set_input_enabled(False)
        by_id("job-title").textContent = filename
        by_id("cancel").disabled = False
        by_id("cancel").textContent = "Cancel"
        by_id("job").hidden = False
        self.set_stage("decode", 0.0, "Decoding the audio…")

    def set_stage(self, stage, fraction, message):
        """Record the worker's latest progress report (the display follows in render_progress)."""
        job = self.job
        if job is None:
            return
        if job["stage"] != stage:
            job.update(stage=stage, t_stage=time.perf_counter(), f_stage=fraction)
            done = True
            for li in by_id("steps").children:
                step = li.dataset.step
                done = done and step != stage
                li.className = "done" if done else ("current" if step == stage else "")
        job.update(fraction=fraction, message=message)
        self.render_progress()

    def render_progress(self):
        """Bar, percentage and ETA. Within the separation the worker reports once per
        segment, so once a separation has finished on this GPU its speed (seconds per
        segment) fills the gaps: the bar moves on and the ETA counts down in between."""
        job = self.job
        if job is None or job["stage"] is None:
            return
        stage, fraction = job["stage"], job["fraction"]
        elapsed = time.perf_counter() - job["t_stage"]
        shown, eta = fraction, None
        if stage == "separate" and self.seconds_per_segment and job.get("segments"):
            total = self.seconds_per_segment * job["segments"]
            next_report = (round(fraction * job["segments"]) + 1) / job["segments"]
            shown = max(fraction, min(elapsed / total, next_report - 0.01))
            eta = max(1.0, total - elapsed)
        gained = fraction - job["f_stage"]
        if stage in ("weights", "separate") and 0 < fraction < 1 and gained > 0.01 and elapsed > 1.0:
            eta = elapsed * (1 - fraction) / gained
        waiting = stage == "separate" and shown == 0
        by_id("job-bar").parentElement.classList.toggle("indeterminate", waiting)
        by_id("job-bar").style.width = f"{100 * shown:.1f}%"
        by_id("job-stage").textContent = job["message"]
        pct = f"{100 * shown:.0f}%"
        document.title = f"{pct} · {STAGE_TITLES[stage]} · Demix · Stemtone"
        if self.cancel_requested:
            text = "Cancelling…"
        elif stage not in ("weights", "separate") or shown >= 1:
            text = ""
        elif eta is None:
            text = f"{pct} · estimating the time left…" if shown else "estimating the time left…"
        else:
            text = f"{pct} · {fmt_eta(eta)}"
        by_id("job-eta").textContent = text

    async def tick(self):
        while self.busy:
            await asyncio.sleep(0.5)
            self.render_progress()

    def end_job(self):
        self.busy = False
        self.job = None
        by_id("job").hidden = True
        document.title = "Demix · Stemtone"
        document.body.dataset.state = "idle"
        self.set_input_enabled(True)

    def cancel(self):
        if not self.busy:
            return
        self.cancel_requested = True
        js.Atomics.store(self.flag, 0, 1)
        by_id("cancel").disabled = True
        by_id("cancel").textContent = "Cancelling…"
        self.render_progress()

    # ---- messages from the worker
    def on_message(self, event):
        d = event.data
        kind = getattr(d, "stemtone", None) if d is not None else None
        if kind == "ready":
            self.gpu = str(d.gpu)
            by_id("gpu-name").textContent = self.gpu
            self.set_startup("pass", "Ready")
            by_id("drop-state").hidden = True  # the GPU is named beside; nothing more to say
            self.ready = True
            self.set_input_enabled(True)
            document.body.dataset.ready = "true"
            document.body.dataset.state = "idle"
        elif kind == "progress" and str(d.stage) == "checkpoint":
            by_id("checkpoint-status").textContent = str(d.message)
        elif kind == "progress":
            if str(d.stage) == "separate" and self.job is not None:
                # the reports the separation gives, one per segment (0: the model reports fractions)
                self.job["segments"] = int(d.steps) or None
            self.set_stage(str(d.stage), float(d.fraction), str(d.message))
        elif kind == "model":
            asyncio.ensure_future(self.on_model(json.loads(str(d.entry))))
        elif kind == "result":
            self.on_result(d)
        elif kind == "error":
            self.on_error(str(d.kind), str(d.title), str(d.message), str(d.detail))

    def on_worker_crash(self, event):
        error = getattr(event, "error", None) or event
        message = f"The GPU worker stopped: {error}"
        if document.body.dataset.ready == "true":
            self.end_job()
            show_error("crash", "The separation crashed", message + " Reload the page to start again.")
        else:
            self.startup_failed("crash", "The page failed to start", message)

    def on_result(self, d):
        job = self.job
        name = job["name"] if job else "track"
        track = name.rsplit(".", 1)[0] if "." in name else name
        channels = {1: "mono", 2: "stereo"}.get(job and job.get("channels"), "")
        seconds = float(d.seconds)
        model = self.model().get("label") or model_title(self.model())
        meta = " · ".join(p for p in (fmt_time(float(d.seconds_audio)), channels, model,
                                      f"separated in {seconds:.1f} s on {self.gpu}") if p)
        new = Results(d, track, meta)
        if self.results is not None:  # replaced only now that the new ones exist
            self.results.close()
        self.results = new
        self.end_job()
        new.render()
        self.finished += 1
        body = document.body
        if job and job.get("segments"):
            self.seconds_per_segment = seconds / job["segments"]
        body.dataset.separateSeconds = f"{seconds:.3f}"
        body.dataset.audioSeconds = f"{float(d.seconds_audio):.3f}"
        body.dataset.results = str(self.finished)
        asyncio.ensure_future(self.show_model())  # "cached in this browser" now

    def on_error(self, kind, title, message, detail):
        if kind == "no-webgpu":
            self.startup_failed(kind, title, message + ".", detail)
            by_id("gpu-name").textContent = "none (no WebGPU)"
            return
        if self.job is None:  # a checkpoint file failed to load
            by_id("checkpoint-status").textContent = ""
            self.checkpoint_done()
            show_error(kind, title, message, detail)
            return
        self.end_job()
        if self.results and kind != "cancelled":
            message += "" if "previous results are kept" in message else " Your previous results are kept."
        show_error(kind, title, message, detail)

    # ---- clearing
    def clear(self):
        if self.results is not None:
            self.results.close()
            self.results = None


page = Page()
try:
    await page.start()  # noqa: F704 - PyScript runs scripts with top-level await
except Exception as e:
    import traceback

    page.startup_failed("crash", "The page failed to start", f"{type(e).__name__}: {e}", traceback.format_exc())
