"""Learn page (site/learn.html), main thread: decodes the dropped clip to mono at the
model's rate (decodeAudioData on an OfflineAudioContext, which resamples), hands it to
the worker (site/learn-worker.py, which trains and generates on the GPU), draws the loss
curve, shows progress and ETA, plays and offers the generated audio and the model file.

Body attributes (for people reading the DOM, and for e2e/test_learn_page.py):
    body[data-ready]      "true" once the GPU worker is ready, "false" when it never can be
    body[data-state]      starting | idle | training | paused | trained | generating
    body[data-epoch]      epochs trained so far (the saved state)
    body[data-error]      the kind of the error on display (page_kit.show_error)
    body[data-recovered]  how many times training resumed after a lost device
    body[data-losses], body[data-epoch-seconds]   per epoch, comma-separated

A document event "stemtone-lose-device" asks the worker to destroy its device, as a driver
reset would (the e2e test's way to check the recovery; page_kit.connect_worker).
"""

import asyncio
import time

import js
from pyscript import document
from pyscript.ffi import to_js

from page_kit import DecodeError, by_id, connect_worker, decode_audio, hide_error, listen, q, show_error, site_url

SAMPLE_RATE = 22050          # pycore.models.magnet.DEFAULTS["sample_rate"]: every size's rate
ETA_EPOCHS = 5               # the ETA uses the mean of the last few epochs




def epochs_text(n):
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def clock(seconds):
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class LossChart:
    """The loss per epoch on a canvas: a line on a log scale (training losses fall by decades)."""

    def __init__(self, canvas):
        self.canvas = canvas
        self.losses = []

    def reset(self, losses=()):
        self.losses = list(losses)
        self.draw()

    def add(self, loss):
        self.losses.append(loss)
        self.draw()

    def draw(self):
        import math

        c = self.canvas
        ratio = js.devicePixelRatio or 1
        w, h = int(c.clientWidth * ratio), int(c.clientHeight * ratio)
        if w <= 0 or h <= 0:
            return
        c.width, c.height = w, h
        g = c.getContext("2d")
        g.clearRect(0, 0, w, h)
        style = js.getComputedStyle(c)
        ink, accent = style.color, style.getPropertyValue("--accent").strip() or "#5b4cf0"
        pad_l, pad_r, pad_t, pad_b = 56 * ratio, 12 * ratio, 10 * ratio, 22 * ratio
        g.font = f"{11 * ratio}px sans-serif"
        g.fillStyle = ink
        values = [v for v in self.losses if v > 0]
        if not values:
            g.fillText("The loss of each epoch appears here.", pad_l, h / 2)
            return
        lo, hi = math.log10(min(values)), math.log10(max(values))
        if hi - lo < 0.1:
            lo, hi = lo - 0.05, hi + 0.05
        n = max(2, len(self.losses))

        def xy(i, v):
            x = pad_l + (w - pad_l - pad_r) * i / (n - 1)
            y = pad_t + (h - pad_t - pad_b) * (hi - math.log10(v)) / (hi - lo)
            return x, y

        g.globalAlpha = 0.35
        g.strokeStyle = ink
        g.lineWidth = ratio
        for v in (10 ** lo, 10 ** ((lo + hi) / 2), 10 ** hi):
            _, y = xy(0, v)
            g.beginPath()
            g.moveTo(pad_l, y)
            g.lineTo(w - pad_r, y)
            g.stroke()
        g.globalAlpha = 1
        for v in (10 ** lo, 10 ** ((lo + hi) / 2), 10 ** hi):
            g.fillText(f"{v:.3g}", 4 * ratio, xy(0, v)[1] + 4 * ratio)
        g.fillText("epoch 1", pad_l, h - 6 * ratio)
        g.fillText(f"{len(self.losses)}", w - pad_r - 20 * ratio, h - 6 * ratio)
        g.strokeStyle = accent
        g.lineWidth = 2 * ratio
        g.beginPath()
        for i, v in enumerate(self.losses):
            x, y = xy(i, max(v, 10 ** lo))
            if i:
                g.lineTo(x, y)
            else:
                g.moveTo(x, y)
        g.stroke()
        if len(self.losses) == 1:
            x, y = xy(0, self.losses[0])
            g.fillStyle = accent
            g.fillRect(x - 3 * ratio, y - 3 * ratio, 6 * ratio, 6 * ratio)


class Page:
    def __init__(self):
        self.worker = None
        self.gpu_ready = False
        self.state = "starting"
        self.clip_name = None
        self.epoch = 0              # epochs in the saved state
        self.target = 0             # epochs asked for
        self.size = None            # size of the model in training / loaded
        self.has_model = False
        self.epoch_times = []
        self.epoch_started = 0.0
        self.chart = LossChart(by_id("loss-chart"))
        self.urls = []
        self.recovered = 0

    # ---- startup
    async def start(self):
        self.wire()
        self.worker = await connect_worker("learn-worker", self.on_message, self.on_worker_crash)
        self.set_status("running", "Starting the GPU worker…")
        self.send("hello", base=site_url())

    def wire(self):
        zone, picker = by_id("dropzone"), by_id("file")

        def over(event):
            event.preventDefault()
            if not picker.disabled:
                zone.classList.add("over")

        def drop(event):
            event.preventDefault()
            zone.classList.remove("over")
            files = event.dataTransfer.files
            if files.length and not picker.disabled:
                asyncio.ensure_future(self.open_clip(files.item(0)))

        def picked(event):
            if picker.files.length:
                file = picker.files.item(0)
                picker.value = ""  # choosing the same file again fires change again
                asyncio.ensure_future(self.open_clip(file))

        def model_picked(event):
            box = by_id("model-file")
            if box.files.length:
                file = box.files.item(0)
                box.value = ""
                asyncio.ensure_future(self.open_model(file))

        listen(zone, "dragenter", over)
        listen(zone, "dragover", over)
        listen(zone, "dragleave", lambda e: zone.classList.remove("over"))
        listen(zone, "drop", drop)
        listen(picker, "change", picked)
        listen(document, "dragover", lambda e: e.preventDefault())
        listen(document, "drop", lambda e: e.preventDefault())
        listen(by_id("model-file"), "change", model_picked)
        listen(q("[data-action=train]"), "click", lambda e: self.train())
        listen(q("[data-action=pause]"), "click", lambda e: self.pause())
        listen(q("[data-action=resume]"), "click", lambda e: self.resume())
        listen(q("[data-action=save]"), "click", lambda e: self.send("save"))
        listen(q("[data-action=generate]"), "click", lambda e: self.generate())
        listen(by_id("error-close"), "click", lambda e: hide_error())
        listen(js.window, "resize", lambda e: self.chart.draw())

    def send(self, cmd, **fields):
        self.worker.postMessage(to_js({"cmd": cmd, **fields}))

    # ---- state and controls
    def set_state(self, state):
        self.state = state
        document.body.dataset.state = state
        busy = state in ("starting", "training", "generating")
        ready = self.gpu_ready and not busy
        q("[data-action=train]").disabled = not (ready and self.clip_name)
        q("[data-action=pause]").disabled = state != "training"
        q("[data-action=resume]").disabled = not (ready and self.clip_name and self.has_model)
        q("[data-action=generate]").disabled = not (ready and self.has_model)
        q("[data-action=save]").disabled = not (ready and self.has_model)
        for el in (by_id("file"), by_id("model-file")):
            el.disabled = not ready
        by_id("dropzone").dataset.disabled = "false" if ready else "true"
        by_id("load-button").dataset.disabled = "false" if ready else "true"
        by_id("size").disabled = busy

    def set_status(self, kind, text):
        badge = by_id("status-badge")
        badge.className = f"badge {kind}"
        badge.textContent = {"running": "Starting", "pass": "Ready", "fail": "Unavailable",
                             "busy": "Working"}[kind]
        by_id("status-text").textContent = text

    def epochs_wanted(self):
        try:
            n = int(by_id("epochs").value)
        except ValueError:
            n = 0
        if not 1 <= n <= 5000:
            show_error("input", "Epochs", "Give a number of epochs from 1 to 5000.")
            return None
        return n

    # ---- actions
    async def open_clip(self, file):
        hide_error()
        name = str(file.name)
        self.set_status("busy", f"Decoding {name}…")
        try:
            samples = (await decode_audio(file, SAMPLE_RATE, max_channels=1)).getChannelData(0)
        except DecodeError as e:
            show_error("decode", f"{name} cannot be used", f"{str(e)[:1].upper()}{str(e)[1:]}.")
            self.set_status("pass", "Ready · drop a clip")
            return
        self.pending_name = name
        self.send("clip", samples=samples, name=name)

    async def open_model(self, file):
        hide_error()
        self.set_status("busy", f"Loading {file.name}…")
        self.send("load", data=await file.arrayBuffer(), name=str(file.name))
        self.set_state("generating")  # busy until the worker answers

    def train(self):
        n = self.epochs_wanted()
        if n is None:
            return
        hide_error()
        self.size = str(by_id("size").value)
        self.chart.reset()
        self.epoch, self.target, self.epoch_times = 0, n, []
        self.show_training()
        self.send("train", size=self.size, epochs=n)

    def resume(self):
        n = self.epochs_wanted()
        if n is None:
            return
        if n <= self.epoch:
            n = self.epoch + int(by_id("epochs").value)
            by_id("epochs").value = str(n)
        hide_error()
        self.target = n
        self.show_training()
        self.send("resume", epochs=n)

    def pause(self):
        self.send("pause")
        by_id("train-text").textContent = "Pausing…"

    def generate(self):
        try:
            seconds, temperature = float(by_id("seconds").value), float(by_id("temperature").value)
        except ValueError:
            show_error("input", "Generate", "Give the seconds and the variation as numbers.")
            return
        if not (1 <= seconds <= 600 and 0 <= temperature <= 2):
            show_error("input", "Generate", "Seconds go from 1 to 600, variation from 0 to 2.")
            return
        hide_error()
        by_id("gen-progress").hidden = False
        by_id("gen-bar").style.width = "0%"
        self.prior_state = self.state
        self.set_state("generating")
        self.set_status("busy", "Generating…")
        self.send("generate", seconds=seconds, temperature=temperature, seed=int(time.time()) % 100000)

    def show_training(self):
        by_id("train-card").hidden = False
        by_id("train-text").textContent = "Preparing the clip's frames and compiling the shaders…"
        by_id("train-eta").textContent = ""
        self.epoch_started = time.perf_counter()
        self.set_state("training")
        self.set_status("busy", "Training…")

    # ---- messages from the worker
    def on_message(self, event):     # guarded by page_kit.connect_worker
        self.handle(event.data)

    def handle(self, d):
        kind = getattr(d, "stemtone", None) if d is not None else None
        if kind == "ready":
            self.gpu_ready = True
            by_id("gpu-name").textContent = str(d.gpu)
            document.body.dataset.ready = "true"
            self.set_status("pass", "Ready · drop a clip")
            self.set_state("idle")
        elif kind == "clip":
            self.clip_name = self.pending_name
            by_id("clip-info").textContent = f"{self.clip_name} · {float(d.seconds):.1f} s"
            by_id("drop-title").textContent = self.clip_name
            self.set_status("pass", "Ready · press Train")
            self.set_state(self.state if self.state != "starting" else "idle")
        elif kind == "training":
            self.size = str(d.size)
            self.epoch, self.target = int(d.epoch), int(d.epochs)
            self.epoch_started = time.perf_counter()
            self.show_progress(0.0)
        elif kind == "step":
            self.show_progress(int(d.step) / int(d.steps))
        elif kind == "epoch":
            self.epoch, self.has_model = int(d.epoch), True
            document.body.dataset.epoch = str(self.epoch)
            self.epoch_times.append(float(d.seconds))
            self.epoch_started = time.perf_counter()
            self.chart.add(float(d.loss))
            document.body.dataset.losses = ",".join(f"{v:.7g}" for v in self.chart.losses)
            document.body.dataset.epochSeconds = ",".join(f"{v:.3f}" for v in self.epoch_times)
            by_id("loss").textContent = f"loss {float(d.loss):.4f}"
            by_id("model-info").textContent = f"{self.size} · {epochs_text(self.epoch)}"
            self.show_progress(0.0)
            self.set_state("training")  # Download / Generate stay off until it stops
        elif kind in ("paused", "trained"):
            self.epoch = int(d.epoch)
            document.body.dataset.epoch = str(self.epoch)
            by_id("train-bar").style.width = f"{100 * self.epoch / max(1, self.target):.1f}%"
            by_id("train-text").textContent = (f"Paused after epoch {self.epoch}" if kind == "paused"
                                               else f"Trained {epochs_text(self.epoch)}")
            by_id("train-eta").textContent = ""
            by_id("generate-card").hidden = not self.has_model
            self.set_status("pass", "Paused · Resume continues" if kind == "paused" else "Trained · generate below")
            self.set_state(kind)
        elif kind == "recovered":
            self.recovered += 1
            document.body.dataset.recovered = str(self.recovered)
            self.epoch = int(d.epoch)
            self.chart.reset(self.chart.losses[:self.epoch])
            show_error("device-lost", "The GPU device was lost", str(d.message))
            by_id("error").className = "notice info"
        elif kind == "generating":
            by_id("gen-bar").style.width = f"{100 * float(d.fraction):.1f}%"
        elif kind == "generated":
            self.on_generated(d)
        elif kind == "model":
            self.download(d.file, f"{self.model_stem()}.safetensors")
        elif kind == "loaded":
            self.has_model, self.epoch, self.size = True, int(d.epoch), str(d.size)
            document.body.dataset.epoch = str(self.epoch)
            by_id("model-info").textContent = f"{d.name} · {self.size} · {epochs_text(self.epoch)}"
            by_id("generate-card").hidden = False
            self.chart.reset()
            self.set_status("pass", "Model loaded · generate below, or drop a clip and Resume")
            self.set_state("trained")
        elif kind == "error":
            self.on_error(str(d.kind), str(d.title), str(d.message), str(d.detail))

    def show_progress(self, fraction):
        done = self.epoch + fraction
        by_id("train-bar").style.width = f"{100 * done / max(1, self.target):.1f}%"
        by_id("train-text").textContent = (f"Epoch {self.epoch + 1} of {self.target}"
                                           + (f" · {100 * fraction:.0f}%" if fraction else ""))
        recent = self.epoch_times[-ETA_EPOCHS:]
        if recent:
            per = sum(recent) / len(recent)
            left = per * (self.target - done)
            by_id("train-eta").textContent = f"{per:.1f} s per epoch · about {clock(left)} left"
        else:
            by_id("train-eta").textContent = "ETA after the first epoch"

    def on_generated(self, d):
        url = js.URL.createObjectURL(d.wav)
        self.urls.append(url)
        audio, link = by_id("gen-audio"), by_id("gen-link")
        audio.src = url
        audio.hidden = False
        link.href = url
        link.download = f"{self.model_stem()}.generated.wav"
        link.hidden = False
        by_id("gen-progress").hidden = True
        seconds, compute = float(d.seconds), float(d.compute_seconds)
        by_id("gen-meta").textContent = (f"{seconds:.1f} s generated in {compute:.1f} s "
                                         f"({seconds / max(compute, 1e-9):.2f}x real time)")
        document.body.dataset.generated = f"{seconds:.3f}"
        self.set_status("pass", "Generated · play or download it")
        self.set_state(self.prior_state if self.prior_state in ("paused", "trained") else "trained")

    def model_stem(self):
        stem = (self.clip_name or "sound").rsplit(".", 1)[0]
        return f"{stem}.{self.size or 'magnet'}"

    def download(self, data, name):
        url = js.URL.createObjectURL(data)
        a = document.createElement("a")
        a.href, a.download = url, name
        document.body.appendChild(a)
        a.click()
        a.remove()
        js.setTimeout(to_js(lambda: js.URL.revokeObjectURL(url)), 60_000)

    def on_error(self, kind, title, message, detail):
        if kind == "no-webgpu":
            by_id("gpu-name").textContent = "none (no WebGPU)"
            self.set_status("fail", title)
            show_error(kind, title, message + ".", detail)
            document.body.dataset.ready = "false"
            self.set_state("idle")
            return
        show_error(kind, title, message, detail)
        by_id("gen-progress").hidden = True
        if self.state in ("training", "generating"):
            self.set_state("paused" if self.has_model else "idle")
            by_id("train-text").textContent = f"Stopped after epoch {self.epoch}"
            by_id("train-eta").textContent = ""
        self.set_status("pass" if self.gpu_ready else "fail", "Ready" if self.gpu_ready else title)

    def on_worker_crash(self, event):
        error = getattr(event, "error", None) or event
        self.set_status("fail", "The learn worker crashed")
        show_error("crash", "The learn worker crashed", f"The GPU worker stopped: {error}. Reload the page.")
        document.body.dataset.ready = "false"


page = Page()
try:
    await page.start()  # noqa: F704 - PyScript runs scripts with top-level await
except Exception as e:
    import traceback

    page.set_status("fail", "The page failed to start")
    show_error("crash", "The page failed to start", f"{type(e).__name__}: {e}", traceback.format_exc())
    document.body.dataset.ready = "false"
