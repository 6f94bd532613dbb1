"""Learn worker: the GPU side of the learn page (site/learn.html), run by PyScript.

It owns the WebGPU device, the clip's frames, the trainer (pycore.learn) and the last
saved state: after every epoch the model, its Adam moments and the epoch count are read
back into a safetensors file in memory (pycore.learn.checkpoint). That file is what
"Download model" offers, and what training resumes from after a pause or a lost device.

Messages (plain JS objects; each message to the page carries a "stemtone" key):

    page -> worker   {cmd: "hello", base: the site's URL (page_kit.site_url())}
                     {cmd: "clip", samples: Float32Array (mono, SAMPLE_RATE), name}
                     {cmd: "train", size: "tiny" | "small" | "standard", epochs}   from scratch
                     {cmd: "resume", epochs}   from the last saved state (a loaded model too)
                     {cmd: "pause"}            stops within a step; the partial epoch is dropped
                     {cmd: "generate", seconds, temperature, seed}
                     {cmd: "save"}             the last saved state as a file
                     {cmd: "load", data: ArrayBuffer, name}   a model downloaded before
                     {cmd: "lose-device"}      destroys the device as a driver reset does (tests)
    worker -> page   {stemtone: "ready", gpu, f16}
                     {stemtone: "clip", seconds, frames}
                     {stemtone: "training", epoch, epochs, size}
                     {stemtone: "step", epoch, step, steps}
                     {stemtone: "epoch", epoch, epochs, loss, seconds}   seconds: the epoch, not its save
                     {stemtone: "paused" | "trained", epoch}
                     {stemtone: "recovered", epoch, message}   the device was lost: resumed
                     {stemtone: "generating", fraction}
                     {stemtone: "generated", wav: Blob, seconds, compute_seconds}
                     {stemtone: "model", file: Blob, epoch}
                     {stemtone: "loaded", epoch, size, name}
                     {stemtone: "error", kind, title, message, detail}
"""

import array
import asyncio
import time
import traceback

from polyscript import xworker
from pyodide.ffi import create_proxy

from pycore.audio.wav import encode_wav
from pycore.gpu.runtime import DeviceLostError, GPUOutOfMemoryError, NoGPUError
from pycore.learn import checkpoint
from pycore.learn.clip import check_clip, clip_frames
from pycore.learn.generate import Generator
from pycore.learn.train import Trainer
from pycore.models.magnet import DEFAULTS, SIZES, MagNet
from pycore.weights import safetensors

from worker_kit import GPUWorker, Throttle, blob, post, post_error, post_no_webgpu

SAMPLE_RATE = DEFAULTS["sample_rate"]   # every size runs at the card's rate
STEP_EVERY_S = 0.25                     # progress inside an epoch, four a second
MAX_RECOVERIES = 3                      # lost devices in a row before giving up
WAV_BITS = 16


class Paused(Exception):
    """The user paused: the epoch under way is dropped."""


def size_of(config) -> str:
    return next((name for name, c in SIZES.items() if all(config[k] == c[k] for k in c)), "custom")


class Worker(GPUWorker):
    def __init__(self):
        super().__init__()
        self.samples = None       # the clip: array('f') at SAMPLE_RATE
        self.frames = None        # its normalized frames (flat floats) for the model in training
        self.trainer = None
        self.saved = None         # bytes of the last saved state (safetensors)
        self.model = None         # the model generation uses (trained or loaded)
        self.busy = False
        self.pausing = False

    def forget_models(self):
        self.replace_trainer(None)
        self.model = None

    async def on_message(self, event):
        data = event.data
        cmd = getattr(data, "cmd", None)
        try:
            if cmd == "hello":
                await self.hello(data.base)
            elif cmd == "pause":
                self.pausing = self.busy
            elif cmd == "lose-device":
                self.lose_device()
            elif self.busy:
                post_error("busy", "Still working", "Wait for the training or generation under way, or pause it.")
            elif cmd == "clip":
                self.set_clip(array.array("f", data.samples.to_bytes()))
            elif cmd == "train":
                await self.run(self.train(str(data.size), int(data.epochs)))
            elif cmd == "resume":
                await self.run(self.resume(int(data.epochs)))
            elif cmd == "generate":
                await self.run(self.generate(float(data.seconds), float(data.temperature), int(data.seed)))
            elif cmd == "save":
                self.save()
            elif cmd == "load":
                await self.run(self.load(data.data.to_bytes(), str(data.name)))
        except NoGPUError as e:
            post_no_webgpu(e)
        except Exception as e:  # a bug: show it instead of hanging the page
            post_error("crash", "The learn worker crashed", f"{type(e).__name__}: {e}", traceback.format_exc())

    async def run(self, job):
        """One job at a time; its failures become messages the user can act on."""
        self.busy, self.pausing = True, False
        try:
            await job
        except Paused:
            post("paused", epoch=self.trainer.epochs_done if self.trainer else 0)
        except ValueError as e:  # the clip or the model file: said in words
            post_error("input", "This cannot be used", f"{str(e)[:1].upper()}{str(e)[1:]}.")
        except GPUOutOfMemoryError as e:
            self.forget_models()
            post_error("oom", "The GPU ran out of memory",
                       "Choose a smaller model size or a shorter clip, or close other tabs that use the GPU.", str(e))
        except DeviceLostError as e:
            self.reset()
            post_error("device-lost", "The GPU device was lost",
                       "The graphics driver reset several times in a row. Press Resume to continue from the "
                       "last saved epoch on a fresh device.", str(e))
        finally:
            self.busy = False

    # ---- the clip
    def set_clip(self, samples):
        try:
            check_clip(samples, SAMPLE_RATE)
        except ValueError as e:
            post_error("clip", "This clip cannot be learned", f"{str(e)[:1].upper()}{str(e)[1:]}.")
            return
        self.samples, self.frames = samples, None
        self.replace_trainer(None)
        post("clip", seconds=len(samples) / SAMPLE_RATE)

    def need_clip(self):
        if self.samples is None:
            raise ValueError("drop a clip to learn from first")

    # ---- training
    async def train(self, size, epochs):
        self.need_clip()
        if size not in SIZES:
            raise ValueError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
        dev = await self.device()
        model = MagNet.create(dev, SIZES[size], seed=0)
        z, model.mean, model.std = await clip_frames(dev, self.samples, model.config)
        self.frames = await z.read()
        self.replace_trainer(Trainer(model, self.frames))
        self.model = model
        self.saved = await checkpoint.to_bytes(self.trainer)  # epoch 0: what a lost device falls back to
        await self.epochs(epochs)

    async def resume(self, epochs):
        """Continue from the last saved state, on the clip (normalized as the model was trained)."""
        self.need_clip()
        if self.saved is None:
            raise ValueError("there is no training to resume: press Train")
        dev = await self.device()
        if self.frames is None:
            model = checkpoint.load_model(dev, self.saved)
            if model.config["sample_rate"] != SAMPLE_RATE:
                raise ValueError(f"this model was trained at {model.config['sample_rate']} Hz; the page trains "
                                 f"at {SAMPLE_RATE} Hz: continue it with `stemtone learn --resume`, or press Train")
            z, _, _ = await clip_frames(dev, self.samples, model.config, (model.mean, model.std))
            self.frames = await z.read()
        self.replace_trainer(checkpoint.load_trainer(dev, self.saved, self.frames))
        self.model = self.trainer.model
        await self.epochs(epochs)

    def replace_trainer(self, trainer):
        """The trainer from now on (or None); the old one's recorded training step gives
        its GPU memory back, unless its device is lost (its memory went with it)."""
        old, self.trainer = self.trainer, trainer
        if old is not None and old.dev.lost_reason is None:
            old.release()

    async def epochs(self, epochs):
        trainer, recoveries = self.trainer, 0
        post("training", epoch=trainer.epochs_done, epochs=epochs, size=size_of(trainer.model.config))
        throttle = Throttle(STEP_EVERY_S)
        while trainer.epochs_done < epochs:
            epoch = trainer.epochs_done + 1

            async def on_step(step):
                if throttle.due():
                    post("step", epoch=epoch, step=step, steps=trainer.steps())
                await asyncio.sleep(0)  # lets "pause" in
                if self.pausing:
                    raise Paused()

            t0 = time.perf_counter()
            try:
                loss = await trainer.epoch(on_step)
                seconds = time.perf_counter() - t0  # the epoch alone: the save below is not training
                self.saved = await checkpoint.to_bytes(trainer)
            except Paused:
                self.replace_trainer(checkpoint.load_trainer(self.dev, self.saved, self.frames))  # drop the partial epoch
                self.model = self.trainer.model
                raise
            except DeviceLostError as e:
                recoveries += 1
                if recoveries > MAX_RECOVERIES:
                    raise
                self.reset()
                dev = await self.device()
                self.replace_trainer(checkpoint.load_trainer(dev, self.saved, self.frames))
                trainer = self.trainer
                self.model = trainer.model
                post("recovered", epoch=trainer.epochs_done,
                     message=f"The GPU device was lost ({e}); training resumed from the saved epoch "
                             f"{trainer.epochs_done} on a new device.")
                continue
            recoveries = 0
            post("epoch", epoch=trainer.epochs_done, epochs=epochs, loss=loss, seconds=seconds)
        post("trained", epoch=trainer.epochs_done)

    # ---- generation
    async def generate(self, seconds, temperature, seed):
        if self.model is None:
            if self.saved is None:
                raise ValueError("there is no model yet: train one on a clip, or load a model file")
            self.model = checkpoint.load_model(await self.device(), self.saved)
        if not 0.1 <= seconds <= 600:
            raise ValueError(f"{seconds:g} s cannot be generated: ask for 0.1 to 600 seconds")
        model = self.model
        prime = None
        if self.frames is not None and self.trainer is not None and self.trainer.model is model:
            prime = self.frames[:model.config["seq_len"] * model.bins]  # start from the clip
        gen = Generator(model, seed=seed, temperature=temperature, prime=prime)
        rate, total = model.config["sample_rate"], round(seconds * model.config["sample_rate"])
        out, t0 = array.array("f"), time.perf_counter()
        async for block in gen.blocks(seconds):
            out.extend(block)
            post("generating", fraction=len(out) / total)
        peak = max((abs(v) for v in out), default=0.0)
        if peak > 0.99:  # Griffin-Lim can overshoot the clip's peak: scale, never clip
            out = array.array("f", (v * (0.99 / peak) for v in out))
        post("generated", wav=blob(encode_wav([out], rate, bits=WAV_BITS), "audio/wav"),
             seconds=len(out) / rate, compute_seconds=time.perf_counter() - t0)

    # ---- the model file
    def save(self):
        if self.saved is None:
            post_error("input", "There is no model yet", "Train on a clip first, or load a model file.")
            return
        epoch = int(safetensors.load_metadata(self.saved).get("epochs", 0))
        post("model", file=blob(self.saved, "application/octet-stream"), epoch=epoch)

    async def load(self, data, name):
        model = checkpoint.load_model(await self.device(), data)  # ValueError when it is not one
        self.saved, self.model, self.trainer, self.frames = data, model, None, None
        post("loaded", epoch=int(safetensors.load_metadata(data).get("epochs", 0)),
             size=size_of(model.config), name=name)


worker = Worker()
handler = create_proxy(worker.on_message)
xworker.onmessage = handler  # PyScript calls this script's global `xworker.onmessage`
