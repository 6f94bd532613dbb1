"""Demix page, main thread (PyScript): input, progress, players, downloads.

The heavy work runs in the worker (demix.py); this side does what only the page's
main thread can do:

    decode any audio the browser can play (decodeAudioData on an OfflineAudioContext
    at 44.1 kHz), send the channels to the worker, show its progress with an ETA,
    cancel it (a SharedArrayBuffer flag the worker reads between segments), zip the
    stems, and play the stems it sends back: one AudioBufferSourceNode per stem into a GainNode
    (mute/solo), all started together on one shared transport.

Several songs dropped or picked at once become a queue (#jobs, one Job row each),
separated one after another with the settings shown when each starts: the model, the
stems to keep (every stem, or "X + everything but X": X and no_X, the mix minus X) and
the download format (WAV 16-bit, 24-bit or 32-bit float, or Ogg Opus where the
browser's WebCodecs AudioEncoder encodes Opus: the option says why where it does
not). Each row has its progress
and ETA, a Cancel button, and once done its players and downloads; above them the
queue's ETA, Cancel all, and one zip of every stem of every finished song.

Stable hooks for end-to-end tests:
    input[type=file]                   the file input (multiple; the drop zone wraps it)
    body[data-ready]                   "true" once a file can be separated, "false" when
                                       it never can (then body[data-error] says why)
    body[data-state]                   "starting" | "idle" | "busy" (the queue runs)
    body[data-error]                   kind of the last error: decode | input |
                                       weights | checkpoint | oom | device-lost | memory |
                                       encode | cancelled | no-webgpu | crash (removed when songs
                                       are added)
    body[data-results]                 number of separations finished so far
    body[data-checkpoints]             number of checkpoint files loaded as models so far
    #model option[value=NAME]          the separation models; data-installed="false" for
                                       the ones the server does not have
    #two-stems, #format                the stems to keep ("" or a stem), the download format;
                                       #format option[value=opus] is enabled once the browser
                                       says it encodes Opus (else disabled, its title says why)
    #checkpoint                        the checkpoint file input (multiple files)
    #jobs > .job[data-file=NAME]       a song's row: data-status waiting | running | done |
                                       failed | cancelled, data-error (its kind), .job-error
                                       (its message), .job-cancel, .play-button, .time
    .job [data-stem=NAME] a[download]  each finished stem and its file
    #zip, #cancel-all, #clear          every stem of every finished song; cancel the queue;
                                       remove the finished and failed rows

Models: /weights/models.json (pycore/cli/serve.py) lists the manifest's models with whether
the server has their weights; those it lacks are listed with the command that installs
them. A checkpoint file picked in the page is converted and loaded by the worker and
becomes a model of this session ("file:1", ...).

The DOM helpers, the worker's start and the error notice are shared with the tone
page's main thread: site/page_kit.py.
"""

import asyncio
import io
import json
import time
import zipfile

import js
from pyodide.ffi import JsException, create_proxy
from pyscript import document
from pyscript.ffi import to_js

from pycore.audio.oggopus import encoder_config
from pycore.weights.manifest import check_models

from page_kit import (DecodeError, by_id, connect_worker, decode_audio, fetch_json, floats, hide_error, listen,
                      show_error, site_url)

SAMPLE_RATE = 44100  # the models' rate; decodeAudioData resamples to it
MANIFEST_URL = "weights/models.json"  # the manifest with "installed" (pycore/cli/serve.py)
CACHE_NAME = "stemtone-weights"  # the workers' weights cache (worker_kit.py)
# the download formats: what the stem's button says, its file's extension
FORMATS = {"wav16": ("WAV 16-bit", "wav"), "wav24": ("WAV 24-bit", "wav"), "wav32": ("WAV 32-bit float", "wav"),
           "opus": ("Opus 160 kbps", "opus")}
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


# ------------------------------------------------------------------ playback


class Player:
    """All stems on one transport; mute/solo through one GainNode per stem."""

    ctx = None  # one AudioContext for the page, made on the first click on Play

    def __init__(self, buffers, on_tick, on_play=None):
        self.buffers = buffers          # stem name -> AudioBuffer
        self.duration = max(b.duration for b in buffers.values())
        self.on_tick = on_tick          # called with the position while playing
        self.on_play = on_play          # called with this player when it starts playing
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
        if self.on_play:
            self.on_play(self)
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


class Job:
    """One song of the queue: its row in #jobs, its progress and, once separated, its
    stems (one row each: mute/solo, waveform, download) on a transport of its own."""

    def __init__(self, serial, file):
        self.file = file
        self.name = str(file.name)
        self.track = self.name.rsplit(".", 1)[0] if "." in self.name else self.name
        self.size = max(1, int(file.size))
        self.status = "waiting"    # waiting | running | done | failed | cancelled
        self.cancel_requested = False
        self.stage = None          # decode | weights | separate | export, while running
        self.fraction, self.message = 0.0, ""
        self.t_stage, self.f_stage = 0.0, 0.0
        self.segments = None       # reports the separation gives (from the worker)
        self.t0 = None             # when it started; seconds = its whole time, once done
        self.seconds = None
        self.eta = None            # seconds left, as last shown
        self.settings = {}         # model, two_stems, format: fixed when it starts
        self.player = None
        self.stems = []            # (name, waveform peaks, file Blob, blob: URL)
        self.urls = []
        self.peak = 1.0
        row = by_id("job-row").content.firstElementChild.cloneNode(True)
        row.dataset.job = str(serial)
        row.dataset.file = self.name
        row.querySelector(".job-title").textContent = self.name
        self.row = row
        self.set_status("waiting")

    def el(self, selector):
        return self.row.querySelector(selector)

    def set_status(self, status, text=None):
        self.status = status
        self.row.dataset.status = status
        badge = self.el(".job-badge")
        badge.className = "badge job-badge " + {"waiting": "", "running": "running", "done": "pass",
                                                 "failed": "fail", "cancelled": "warn"}[status]
        badge.textContent = text or status.capitalize()
        cancel = self.el(".job-cancel")
        cancel.hidden = status not in ("waiting", "running")
        cancel.disabled = self.cancel_requested

    def fail(self, kind, message):
        self.row.dataset.error = kind
        error = self.el(".job-error")
        error.textContent = message
        error.hidden = False
        self.set_status("cancelled" if kind == "cancelled" else "failed")

    # ---- progress
    def set_stage(self, stage, fraction, message):
        if self.stage != stage:
            self.stage, self.t_stage, self.f_stage = stage, time.perf_counter(), fraction
        self.fraction, self.message = fraction, message

    def render_progress(self, seconds_per_segment):
        """Bar, percentage and ETA. Within the separation the worker reports once per
        segment, so once a separation has finished on this GPU its speed (seconds per
        segment) fills the gaps: the bar moves on and the ETA counts down in between."""
        if self.stage is None:
            return
        stage, fraction = self.stage, self.fraction
        elapsed = time.perf_counter() - self.t_stage
        shown, eta = fraction, None
        if stage == "separate" and seconds_per_segment and self.segments:
            total = seconds_per_segment * self.segments
            next_report = (round(fraction * self.segments) + 1) / self.segments
            shown = max(fraction, min(elapsed / total, next_report - 0.01))
            eta = max(1.0, total - elapsed)
        gained = fraction - self.f_stage
        if stage in ("weights", "separate") and 0 < fraction < 1 and gained > 0.01 and elapsed > 1.0:
            eta = elapsed * (1 - fraction) / gained
        self.eta = eta
        bar = self.el(".job-bar")
        bar.parentElement.classList.toggle("indeterminate", stage == "separate" and shown == 0)
        bar.style.width = f"{100 * shown:.1f}%"
        self.el(".job-stage").textContent = self.message
        pct = f"{100 * shown:.0f}%"
        if self.cancel_requested:
            text = "Cancelling…"
        elif stage not in ("weights", "separate") or shown >= 1:
            text = ""
        elif eta is None:
            text = f"{pct} · estimating the time left…" if shown else "estimating the time left…"
        else:
            text = f"{pct} · {fmt_eta(eta)}"
        self.el(".job-eta").textContent = text
        return shown

    # ---- the stems
    def show_result(self, msg, meta, on_play):
        buffers = {}
        label, ext = FORMATS[self.settings["format"]]
        for stem in msg.stems:
            name = str(stem.name)
            channels = list(stem.channels)
            buf = js.AudioBuffer.new(to_js({"length": channels[0].length, "numberOfChannels": len(channels),
                                            "sampleRate": SAMPLE_RATE}))
            for c, data in enumerate(channels):
                buf.copyToChannel(data, c)
            buffers[name] = buf
            url = js.URL.createObjectURL(stem.file)
            self.urls.append(url)
            self.stems.append((name, floats(stem.peaks), stem.file, url))
        self.player = Player(buffers, self.show_position, on_play)
        self.peak = max(max(abs(v) for v in p) for _, p, _, _ in self.stems) or 1.0
        self.el(".job-meta").textContent = meta
        box = self.el(".stems")
        for name, _, _, url in self.stems:
            row = by_id("stem-row").content.firstElementChild.cloneNode(True)
            row.dataset.stem = name
            row.querySelector(".stem-label").textContent = stem_label(name)
            row.querySelector(".mute").title = f"Mute {stem_label(name)}"
            row.querySelector(".solo").title = f"Solo {stem_label(name)}"
            link = row.querySelector("a[download]")
            link.href, link.download = url, f"{self.track} - {name}.{ext}"
            link.title = f"Download {stem_label(name)} as {label}"
            row.querySelector(".stem-format").textContent = label
            box.append(row)
            mute, solo = row.querySelector(".mute"), row.querySelector(".solo")
            listen(mute, "click", lambda e, n=name, b=mute: self.toggle(b, n, self.player.set_mute))
            listen(solo, "click", lambda e, n=name, b=solo: self.toggle(b, n, self.player.set_solo))
            listen(row.querySelector(".wave"), "pointerdown", self.on_seek)
        listen(self.el(".play-button"), "click", lambda e: self.player.toggle())
        self.el(".job-result").hidden = False
        self.set_status("done", "Done")
        self.draw()
        self.show_position(0.0)

    def toggle(self, button, name, setter):
        on = button.getAttribute("aria-pressed") != "true"
        button.setAttribute("aria-pressed", "true" if on else "false")
        setter(name, on)
        for row in self.el(".stems").children:
            row.classList.toggle("silent", not self.player.audible(str(row.dataset.stem)))

    def draw(self):
        for row in self.el(".stems").children:
            peaks = next(p for n, p, _, _ in self.stems if n == str(row.dataset.stem))
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
        for wave in self.row.querySelectorAll(".wave"):
            wave.querySelector(".wave-played").style.width = pct
            wave.querySelector(".wave-cursor").style.left = pct
        self.el(".time").textContent = f"{fmt_time(seconds)} / {fmt_time(self.player.duration)}"
        play = self.el(".play-button")
        play.classList.toggle("playing", self.player.playing)
        play.setAttribute("aria-label", "Pause" if self.player.playing else "Play")

    def close(self):
        if self.player:
            self.player.close()
        for url in self.urls:
            js.URL.revokeObjectURL(url)
        self.row.remove()


async def zip_stems(jobs):
    """A zip Blob of every stem of the finished `jobs`: "<track>/<stem>.<wav|opus>" (each
    song in the format it was made in), the track folders made unique ("song (2)") when
    one song was separated twice."""
    buf, folders = io.BytesIO(), set()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:  # audio does not deflate
        for job in jobs:
            folder, n = job.track, 1
            while folder in folders:
                n += 1
                folder = f"{job.track} ({n})"
            folders.add(folder)
            ext = FORMATS[job.settings["format"]][1]
            for name, _, file, _ in job.stems:
                data = js.Uint8Array.new(await file.arrayBuffer()).to_bytes()
                z.writestr(f"{folder}/{name}.{ext}", data)
    return js.Blob.new([to_js(buf.getvalue())], to_js({"type": "application/zip"}))


# ------------------------------------------------------------------ the page


class Page:
    def __init__(self):
        self.models = []
        self.ready = False     # the worker has a GPU
        self.loaded_files = 0  # checkpoint files loaded as session models
        self.worker = None
        self.flag = js.Int32Array.new(js.SharedArrayBuffer.new(4))  # cancel flag, read by the worker
        self.gpu = ""
        self.busy = False        # the queue is running
        self.loading_checkpoint = False
        self.jobs = []           # the songs in the list, in order (Job)
        self.current = None      # the Job being separated
        self.finished_job = None  # a Future set when the worker is done with the current job
        self.serial = 0
        self.finished = 0
        self.playing = None      # the Player that played last (the Space key toggles it)
        self.zip_url = None
        self.seconds_per_segment = None  # measured by the last separation, for the ETA
        self.resizes = 0

    # ---- startup
    async def start(self):
        body = document.body
        self.wire_inputs()
        asyncio.ensure_future(self.check_opus())
        try:
            await self.load_manifest()
        except ValueError as e:  # a list that fails pycore.weights.manifest's checks (or is not JSON)
            self.startup_failed("weights", "The model list is malformed",
                                f"{e}. The server makes this list from its weights/manifest.json: "
                                "`stemtone weights list` names the same fault there; fix the file and reload.")
            return
        except Exception as e:  # no list: nothing can be separated
            self.startup_failed("weights", "The model list could not be loaded",
                                f"{MANIFEST_URL}: {e}. Run `make demo` to create the weights.")
            return
        self.worker = await connect_worker("demix-worker", self.on_message, self.on_worker_crash)
        self.set_startup("running", "Starting the GPU worker…")
        self.worker.postMessage(to_js({"cmd": "hello", "flag": self.flag.buffer, "base": site_url()}))
        body.dataset.state = "starting"

    async def check_opus(self):
        """Offer Opus downloads where WebCodecs' AudioEncoder encodes Opus (mono and
        stereo at the models' rate); otherwise the option stays disabled and says why."""
        option = document.querySelector('#format option[value="opus"]')
        try:
            encoder = js.AudioEncoder  # AttributeError where the browser has no WebCodecs
            support = [await encoder.isConfigSupported(to_js(encoder_config(c, SAMPLE_RATE))) for c in (1, 2)]
            reason = None if all(r.supported for r in support) else "this browser's WebCodecs cannot encode Opus"
        except AttributeError:
            reason = "this browser has no WebCodecs audio encoder"
        except JsException as e:
            reason = f"this browser's WebCodecs refused the Opus settings ({e})"
        option.disabled = reason is not None
        option.textContent = "Opus 160 kbps (Ogg)" if reason is None else "Opus (not in this browser)"
        option.title = "Smaller files, lossy: 80 kbps per channel" if reason is None else reason[:1].upper() + reason[1:]

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
        check_models(manifest, MANIFEST_URL)  # the checks the CLI and the server make: a ValueError naming the fault
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
        self.fill_two_stems(m)
        if self.ready and not self.loading_checkpoint:
            self.set_input_enabled(True)

    def fill_two_stems(self, m):
        """"Every stem", or one stem and everything but it (the karaoke track for vocals);
        the choice is kept across models that have the stem."""
        select = by_id("two-stems")
        keep = select.value
        select.replaceChildren()
        for value, text in [("", "Every stem")] + [(s, f"{stem_label(s)} + everything but {s}") for s in m["stems"]]:
            opt = document.createElement("option")
            opt.value, opt.textContent = value, text
            select.append(opt)
        select.value = keep if keep in m["stems"] else ""

    async def is_cached(self, m):
        try:
            cache = await js.caches.open(CACHE_NAME)
            (entry,) = m["files"]
            hit = await cache.match(f"{site_url()}weights/{entry['path']}?sha256={entry['sha256']}")
            return bool(hit)
        except (JsException, AttributeError, ValueError):
            return False

    # ---- input: drop zone and file picker
    def wire_inputs(self):
        zone, picker = by_id("dropzone"), by_id("file")

        def over(event):
            event.preventDefault()
            if not picker.disabled:
                zone.classList.add("over")

        def leave(event):
            zone.classList.remove("over")

        def drop(event):
            event.preventDefault()
            zone.classList.remove("over")
            files = event.dataTransfer.files
            self.enqueue([files.item(i) for i in range(files.length)])

        def picked(event):
            files = [picker.files.item(i) for i in range(picker.files.length)]
            picker.value = ""  # choosing the same files again fires change again
            self.enqueue(files)

        listen(zone, "dragenter", over)
        listen(zone, "dragover", over)
        listen(zone, "dragleave", leave)
        listen(zone, "drop", drop)
        listen(picker, "change", picked)
        # a file dropped next to the drop zone must not navigate away from the results
        listen(document, "dragover", lambda e: e.preventDefault())
        listen(document, "drop", lambda e: e.preventDefault())
        listen(by_id("cancel-all"), "click", lambda e: self.cancel_all())
        listen(by_id("zip"), "click", lambda e: asyncio.ensure_future(self.download_zip()))
        listen(by_id("error-close"), "click", lambda e: hide_error())
        listen(by_id("clear"), "click", lambda e: self.clear())
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
            if serial == self.resizes:
                for job in self.jobs:
                    if job.status == "done":
                        job.draw()

        asyncio.ensure_future(later())

    def on_key(self, event):
        tag = str(event.target.tagName).lower()
        players = [j.player for j in self.jobs if j.player is not None]
        if event.key == " " and players and tag not in ("input", "button", "select", "textarea", "a"):
            event.preventDefault()
            (self.playing if self.playing in players else players[-1]).toggle()

    def set_input_enabled(self, on):
        """The audio input (only for a model that is installed; songs can be added while
        the queue runs) and the checkpoint input (not while the queue or a checkpoint
        keeps the worker busy)."""
        audio = on and self.usable() and not self.loading_checkpoint
        checkpoint = on and not self.busy and not self.loading_checkpoint
        by_id("file").disabled = not audio
        by_id("dropzone").dataset.disabled = "false" if audio else "true"
        by_id("checkpoint").disabled = not checkpoint
        by_id("checkpoint-button").dataset.disabled = "false" if checkpoint else "true"

    # ---- a checkpoint file of the user's: converted and loaded by the worker
    async def pick_checkpoint(self):
        picker = by_id("checkpoint")
        files = [picker.files.item(i) for i in range(picker.files.length)]
        picker.value = ""  # the same file again fires change again
        if not files or self.busy or self.loading_checkpoint:
            return
        self.loading_checkpoint = True
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
        self.loading_checkpoint = False
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

    # ---- the queue: decode here, separate in the worker, one song after another
    def enqueue(self, files):
        """Songs dropped or picked: a row each, separated in order with the settings
        shown when each one starts."""
        if not files or by_id("file").disabled:
            return
        hide_error()
        for file in files:
            self.serial += 1
            job = Job(self.serial, file)
            listen(job.el(".job-cancel"), "click", lambda e, j=job: self.cancel(j))
            self.jobs.append(job)
            by_id("jobs").append(job.row)
        by_id("queue").hidden = False
        if not self.busy:
            asyncio.ensure_future(self.run_queue())
        self.render_queue()

    async def run_queue(self):
        self.busy = True
        document.body.dataset.state = "busy"
        by_id("checkpoint").disabled = True
        by_id("checkpoint-button").dataset.disabled = "true"
        asyncio.ensure_future(self.tick())
        while (job := next((j for j in self.jobs if j.status == "waiting"), None)) is not None:
            await self.run_job(job)
        self.busy, self.current = False, None
        document.title = "Demix · Stemtone"
        self.render_queue()
        document.body.dataset.state = "idle"
        self.set_input_enabled(True)

    async def run_job(self, job):
        self.current = job
        js.Atomics.store(self.flag, 0, 0)
        job.t0 = time.perf_counter()
        job.settings = {"model": self.model(), "two_stems": str(by_id("two-stems").value),
                        "format": str(by_id("format").value)}
        job.set_status("running", "Running")
        self.set_stage(job, "decode", 0.0, "Decoding the audio…")
        try:
            audio = await decode_audio(job.file, SAMPLE_RATE)
        except DecodeError as e:
            self.job_failed(job, "decode", f"This file cannot be used: {e}.")
            return
        if job.cancel_requested:
            self.job_failed(job, "cancelled", "Cancelled.")
            return
        channels = [audio.getChannelData(c) for c in range(audio.numberOfChannels)]
        job.channels, job.audio_seconds = audio.numberOfChannels, audio.duration
        self.set_stage(job, "decode", 1.0, "Sending the audio to the GPU worker…")
        self.finished_job = asyncio.get_event_loop().create_future()
        self.worker.postMessage(to_js({"cmd": "separate", "model": json.dumps(job.settings["model"]),
                                       "name": job.track, "channels": channels, "format": job.settings["format"],
                                       "two_stems": job.settings["two_stems"]}))
        await self.finished_job

    def job_failed(self, job, kind, message):
        job.fail(kind, message)
        document.body.dataset.error = kind
        self.render_queue()

    def set_stage(self, job, stage, fraction, message):
        job.set_stage(stage, fraction, message)
        self.render_queue()

    def render_queue(self):
        """Each running row's bar and ETA; above them the queue's: songs done, failed and
        waiting, and the time left for all of them. Songs not yet decoded are estimated
        from their file size at the pace (seconds per byte) of the songs finished so far."""
        job, jobs = self.current, self.jobs
        running = job is not None and job.status == "running"
        shown = (job.render_progress(self.seconds_per_segment) or 0.0) if running else 0.0
        done = sum(1 for j in jobs if j.status == "done")
        failed = sum(1 for j in jobs if j.status in ("failed", "cancelled"))
        waiting = [j for j in jobs if j.status == "waiting"]
        todo = len(waiting) + running
        parts = [f"{done} of {done + todo} done" if todo else f"{done} done"]
        if failed:
            parts.append(f"{failed} not separated")
        if todo:
            finished = [j for j in jobs if j.status == "done" and j.seconds]
            pace = sum(j.seconds for j in finished) / sum(j.size for j in finished) if finished else None
            current = job.eta if running else 0.0
            if current is None or (waiting and pace is None):
                parts.append("estimating the time left…")
            else:
                left = current + sum(j.size * pace for j in waiting)
                parts.append(fmt_eta(left).replace("left", "left in all"))
        by_id("queue-status").textContent = " · ".join(parts)
        total = done + todo
        by_id("queue-bar").style.width = f"{100 * (done + shown) / total:.1f}%" if total else "100%"
        by_id("queue-bar").parentElement.hidden = not todo
        by_id("cancel-all").disabled = not todo
        by_id("zip").disabled = not done
        if todo and job:
            stage = STAGE_TITLES.get(job.stage, "Waiting")
            document.title = f"{done + 1}/{total} · {100 * shown:.0f}% · {stage} · Demix · Stemtone"

    async def tick(self):
        while self.busy:
            await asyncio.sleep(0.5)
            self.render_queue()

    def cancel(self, job):
        """Cancel one song: a waiting one is skipped, the running one stops at its next
        segment (the worker reads the shared flag)."""
        if job.status == "waiting":
            job.cancel_requested = True
            job.fail("cancelled", "Cancelled before it started.")
        elif job.status == "running" and not job.cancel_requested:
            job.cancel_requested = True
            js.Atomics.store(self.flag, 0, 1)
            job.set_status("running", "Cancelling")
        self.render_queue()

    def cancel_all(self):
        for job in list(self.jobs):
            self.cancel(job)

    def on_play(self, player):
        """One song plays at a time."""
        for job in self.jobs:
            if job.player is not None and job.player is not player:
                job.player.pause()
        self.playing = player

    async def download_zip(self):
        jobs = [j for j in self.jobs if j.status == "done"]
        if not jobs:
            return
        button = by_id("zip")
        button.disabled = True
        try:
            url = js.URL.createObjectURL(await zip_stems(jobs))
            link = document.createElement("a")
            link.href = url
            link.download = f"{jobs[0].track} - stems.zip" if len(jobs) == 1 else "Stemtone stems.zip"
            document.body.append(link)
            link.click()
            link.remove()
            if self.zip_url:
                js.URL.revokeObjectURL(self.zip_url)
            self.zip_url = url  # kept until the next zip: the download reads it after this returns
        finally:
            button.disabled = False

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
        elif kind == "progress" and self.current is not None:
            if str(d.stage) == "separate":
                # the reports the separation gives, one per segment (0: the model reports fractions)
                self.current.segments = int(d.steps) or None
            self.set_stage(self.current, str(d.stage), float(d.fraction), str(d.message))
        elif kind == "model":
            asyncio.ensure_future(self.on_model(json.loads(str(d.entry))))
        elif kind == "result":
            self.on_result(d)
        elif kind == "error":
            self.on_error(str(d.kind), str(d.title), str(d.message), str(d.detail))

    def job_ended(self):
        if self.finished_job is not None and not self.finished_job.done():
            self.finished_job.set_result(None)

    def on_worker_crash(self, event):
        error = getattr(event, "error", None) or event
        message = f"The GPU worker stopped: {error}"
        if document.body.dataset.ready == "true":
            show_error("crash", "The separation crashed", message + " Reload the page to start again.")
            self.cancel_all()
            if self.current is not None and self.current.status == "running":
                self.job_failed(self.current, "crash", message)
            self.job_ended()
        else:
            self.startup_failed("crash", "The page failed to start", message)

    def on_result(self, d):
        job = self.current
        job.seconds = time.perf_counter() - job.t0
        seconds = float(d.seconds)
        model = job.settings["model"]
        channels = {1: "mono", 2: "stereo"}.get(job.channels, "")
        meta = " · ".join(p for p in (fmt_time(float(d.seconds_audio)), channels,
                                      model.get("label") or model_title(model),
                                      f"separated in {seconds:.1f} s on {self.gpu}") if p)
        job.show_result(d, meta, self.on_play)
        self.finished += 1
        if job.segments:
            self.seconds_per_segment = seconds / job.segments
        body = document.body
        body.dataset.separateSeconds = f"{seconds:.3f}"
        body.dataset.audioSeconds = f"{float(d.seconds_audio):.3f}"
        body.dataset.results = str(self.finished)
        body.dataset.liveBuffers = str(d.live_buffers)  # the worker's GPU buffers (e2e: flat across jobs)
        asyncio.ensure_future(self.show_model())  # "cached in this browser" now
        self.render_queue()
        self.job_ended()

    def on_error(self, kind, title, message, detail):
        if kind == "no-webgpu":
            self.startup_failed(kind, title, message + ".", detail)
            by_id("gpu-name").textContent = "none (no WebGPU)"
            return
        job = self.current
        if job is None or job.status != "running":  # a checkpoint file failed to load
            by_id("checkpoint-status").textContent = ""
            self.checkpoint_done()
            show_error(kind, title, message, detail)
            return
        self.job_failed(job, kind, "Cancelled." if kind == "cancelled" else f"{title}: {message}")
        if kind not in ("cancelled", "input"):  # not about this song alone: the notice says it too
            show_error(kind, title, message, detail)
        self.job_ended()

    # ---- clearing
    def clear(self):
        """Remove the songs that are finished, failed or cancelled."""
        for job in [j for j in self.jobs if j.status in ("done", "failed", "cancelled")]:
            job.close()
            self.jobs.remove(job)
        by_id("queue").hidden = not self.jobs
        self.render_queue()


page = Page()
try:
    await page.start()  # noqa: F704 - PyScript runs scripts with top-level await
except Exception as e:
    import traceback

    page.startup_failed("crash", "The page failed to start", f"{type(e).__name__}: {e}", traceback.format_exc())
