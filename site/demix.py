"""Demix worker: the GPU side of the demix page (site/index.html), run by PyScript.

The page's main thread (demix-main.py) decodes the file and plays the stems; this
worker owns the WebGPU device and does everything heavy, so that the page stays
responsive:

    fetch the weights (progress, Cache API, sha256 check)  ->  Demixer.load
    Demixer.separate (progress, cancellation between segments)
    waveform peaks, one WAV per stem (pycore.wav) and a zip of them all

Messages are plain JS objects sent with postMessage; each carries a "stemtone" key
naming its kind.

    main -> worker   {cmd: "hello", flag: SharedArrayBuffer(4), base: page origin}
                     {cmd: "separate", model: manifest entry as JSON, name: track name,
                      channels: [Float32Array at 44.1 kHz, ...]}
                     {cmd: "checkpoint", id: session model name, files: [{name, data:
                      ArrayBuffer}], fetchable: JSON {name: manifest entry with "fetch"}}
    worker -> main   {stemtone: "ready", gpu: adapter description, f16: bool}
                     {stemtone: "model", entry: JSON of a manifest-like entry with
                      "session": true, "runs_as": the pycore.demix model, "stems"}
                     {stemtone: "progress", stage: "weights"|"separate"|"export"|"checkpoint",
                      fraction: 0..1, message: str}
                     {stemtone: "result", stems: [{name, channels: [Float32Array],
                      peaks: Float32Array, wav: Blob}], zip: Blob,
                      seconds: separation wall time, seconds_audio}
                     {stemtone: "error", kind, title, message, detail}

A checkpoint file the user picks (a demucs .th, Open-Unmix .pth files, or a converted
.safetensors) is converted here by pycore.convert.checkpoint (pure Python: Pyodide has
no numpy), loaded, and kept as a model of this session under the id the page gave it.

Cancellation: the main thread sets the first Int32 of the shared flag; the worker
reads it between downloaded chunks and between segments (Demixer's should_cancel).
"""

import array
import io
import json
import math
import time
import traceback
import zipfile

import js
from polyscript import xworker
from pyodide.ffi import JsException, create_proxy, to_js

from pycore.backend_browser import create_device
from pycore.convert.checkpoint import convert_files, demix_model
from pycore.demix import MODELS, Cancelled, Demixer, segment_count
from pycore.safetensors import load_metadata
from pycore.runtime import DeviceLostError, GPUOutOfMemoryError, NoGPUError
from pycore.wav import encode_wav


WEIGHTS_URL = "/weights/"
CACHE_NAME = "stemtone-weights"    # Cache API storage; entries are keyed by sha256
PEAK_COLUMNS = 1600                # waveform resolution sent to the page
WAV_BITS = 32                      # IEEE float: lossless and never clips
PROGRESS_EVERY_S = 0.1             # at most ten progress messages a second


class WeightsError(Exception):
    """The model's weights could not be downloaded, verified or read."""


class InputError(Exception):
    """The decoded audio cannot be separated (reported to the user as is)."""


class CheckpointError(Exception):
    """A checkpoint file the user picked cannot be converted or loaded."""


def _js(obj):
    return to_js(obj, dict_converter=js.Object.fromEntries)


def post(kind, /, **fields):
    xworker.postMessage(_js({"stemtone": kind, **fields}))


class Worker:
    def __init__(self):
        self.dev = None
        self.demixers = {}     # model name -> loaded Demixer
        self.flag = None       # Int32Array over the main thread's SharedArrayBuffer
        self.base = ""         # the page's origin: a worker has no base URL of its own
        self.last_post = 0.0

    # ---- messages
    async def on_message(self, event):
        data = event.data
        cmd = getattr(data, "cmd", None)
        if cmd == "hello":
            self.flag = js.Int32Array.new(data.flag)
            self.base = str(data.base)
            await self.hello()
        elif cmd == "separate":
            await self.run_job(data)
        elif cmd == "checkpoint":
            await self.load_checkpoint(data)

    async def hello(self):
        try:
            dev = await self.device()
        except NoGPUError as e:
            post("error", kind="no-webgpu", title="WebGPU is not available", message=str(e), detail="")
            return
        post("ready", gpu=dev.describe().split(": ", 1)[-1], f16=dev.has_f16)

    def cancelled(self) -> bool:
        return self.flag is not None and js.Atomics.load(self.flag, 0) != 0

    def progress(self, stage, fraction, message, force=False):
        now = time.perf_counter()
        if force or now - self.last_post >= PROGRESS_EVERY_S:
            self.last_post = now
            post("progress", stage=stage, fraction=max(0.0, min(1.0, float(fraction))), message=message)

    # ---- GPU device and models
    async def device(self):
        if self.dev is None or self.dev.lost_reason is not None:
            self.dev, self.demixers = None, {}
            self.dev = await create_device()
        return self.dev

    async def demixer(self, model):
        name = model["name"]
        if model.get("session") and name not in self.demixers:
            raise WeightsError(f"the model from {model['title']} was unloaded (the GPU was reset); "
                               "pick the checkpoint file again")
        if name not in self.demixers:
            dev = await self.device()
            weights = await self.fetch_weights(model)
            self.progress("weights", 1.0, "Uploading the weights to the GPU…", force=True)
            try:
                self.demixers[name] = await Demixer.load(dev, name, weights=weights)
            except ValueError as e:  # not a valid safetensors file / unexpected tensors
                raise WeightsError(f"{name}: {e}") from None
        return self.demixers[name]

    async def fetch_weights(self, model) -> bytes:
        """The model's safetensors file: from the Cache API if there, else downloaded
        with progress (and cached); always checked against the manifest's sha256."""
        (entry,) = model["files"]
        url = self.base + WEIGHTS_URL + entry["path"]
        name = "weights/" + entry["path"]  # for messages
        key = f"{url}?sha256={entry['sha256']}"
        size = int(entry["size"])
        cache = await open_cache()
        data = None
        if cache is not None:
            hit = await cache.match(key)
            if hit:
                self.progress("weights", 0.0, "Reading the model from this browser's cache…", force=True)
                data = js.Uint8Array.new(await hit.arrayBuffer())
                if await sha256(data) != entry["sha256"]:
                    await cache.delete(key)
                    data = None
        if data is None:
            data = await self.download(url, name, size)
            if await sha256(data) != entry["sha256"]:
                raise WeightsError(f"the downloaded {name} does not match its sha256 in weights/manifest.json")
            if cache is not None:
                await store(cache, key, url, data)
        return data.to_bytes()

    async def download(self, url, name, size) -> "js.Uint8Array":
        mb = size / 1e6
        self.progress("weights", 0.0, f"Downloading the model (0 of {mb:.1f} MB)…", force=True)
        try:
            response = await js.fetch(url)
        except JsException as e:
            raise WeightsError(f"the download of {name} failed ({e})") from None
        if not response.ok:
            raise WeightsError(f"the server answered {response.status} {response.statusText} for {name}")
        data = js.Uint8Array.new(size)
        got = 0
        reader = response.body.getReader()
        try:
            while True:
                chunk = await reader.read()
                if chunk.done:
                    break
                n = chunk.value.length
                if got + n > size:
                    raise WeightsError(f"{name} is larger than the {size:,} bytes in weights/manifest.json")
                data.set(chunk.value, got)
                got += n
                self.progress("weights", got / size, f"Downloading the model ({got / 1e6:.1f} of {mb:.1f} MB)…")
                if self.cancelled():
                    await reader.cancel()
                    raise Cancelled()
        except JsException as e:
            raise WeightsError(f"the download of {name} was interrupted ({e})") from None
        if got != size:
            raise WeightsError(f"the downloaded {name} has {got:,} bytes, weights/manifest.json says {size:,}")
        return data

    # ---- a checkpoint file picked in the page
    async def load_checkpoint(self, data):
        key = str(data.id)
        file_names = [str(f.name) for f in data.files]
        names = ", ".join(file_names)
        try:
            files = [(str(f.name), js.Uint8Array.new(f.data).to_bytes()) for f in data.files]
            safetensors_files = [n for n, _ in files if n.endswith(".safetensors")]
            if safetensors_files and len(files) > 1:
                raise CheckpointError("pick one .safetensors file alone (it holds the whole model)")
            if safetensors_files:
                weights = files[0][1]
            else:
                self.checkpoint_progress(f"Converting {names}…")
                fetchable = json.loads(str(data.fetchable))
                published = any(sorted(f["file"] for f in m["fetch"]["files"]) == sorted(n for n, _ in files)
                                for m in fetchable.values())
                # several files of no published model (e.g. Open-Unmix targets of one's own):
                # `stemtone weights convert --name`; here the stems decide what they run as
                name = None if published or len(files) == 1 else "checkpoint"
                _, weights = convert_files(files, fetchable, name)
            files = None  # the checkpoints' bytes can go: only the converted file is needed
            meta = load_metadata(weights)
            runs_as = demix_model(meta)
            self.checkpoint_progress(f"Loading {names} on the GPU…")
            demixer = await Demixer.load(await self.device(), runs_as, weights=weights)
        except (ValueError, KeyError, CheckpointError) as e:
            message = str(e) if not isinstance(e, KeyError) else f"a tensor the model needs is missing ({e})"
            if not any(message.startswith(n) for n in file_names):  # file names keep their case
                message = message[:1].upper() + message[1:]
            post("error", kind="checkpoint", title="This checkpoint cannot be used",
                 message=f"{message}. Pick an official Demucs v4 .th file, the four "
                 "Open-Unmix .pth files of one model, or a .safetensors file made by `stemtone weights convert`.",
                 detail="")
            return
        except Exception as e:
            self.report(e)
            return
        self.demixers[key] = demixer
        post("model", entry=json.dumps({
            "name": key, "runs_as": runs_as, "session": True, "installed": True,
            "title": names, "stems": demixer.stems, "size": len(weights),
            "license": meta.get("license", "unknown"),
        }))

    def checkpoint_progress(self, message):
        post("progress", stage="checkpoint", fraction=0.0, message=message)

    # ---- one separation
    async def run_job(self, data):
        js.Atomics.store(self.flag, 0, 0)
        try:
            model = json.loads(data.model)
            channels = [to_floats(c) for c in data.channels]
            check_audio(channels)
            demixer = await self.demixer(model)
            seconds_audio = len(channels[0]) / demixer.sample_rate
            spleeter = MODELS[demixer.name].get("family") is None  # the others report fractions
            segments = segment_count(len(channels[0])) if spleeter else 0  # parts of 11.9 s

            def on_progress(fraction, _message=""):
                if not spleeter:
                    self.progress("separate", fraction, f"Separating · {100 * fraction:.0f}% done")
                    return
                done = round(fraction * segments)
                self.progress("separate", fraction, f"Separating · {done} of {segments} parts done", force=True)

            first = "Separating…" if segments <= 1 else f"Separating · 0 of {segments} parts done"
            self.progress("separate", 0.0, first, force=True)
            t0 = time.perf_counter()
            stems = await demixer.separate(channels, progress=on_progress, should_cancel=self.cancelled)
            seconds = time.perf_counter() - t0
            self.progress("export", 0.0, "Writing the WAV files…", force=True)
            result = export(stems, demixer.sample_rate, str(data.name),
                            lambda f: self.progress("export", f, "Writing the WAV files…"))
            post("result", seconds=seconds, seconds_audio=seconds_audio, **result)
        except Exception as e:
            self.report(e)

    def report(self, e):
        """Tell the page about a failed job in words the user can act on."""
        try:
            raise e
        except Cancelled:
            post("error", kind="cancelled", title="Cancelled", message="The separation was cancelled.", detail="")
        except InputError as e:
            post("error", kind="input", title="This file cannot be separated", message=str(e), detail="")
        except WeightsError as e:
            post("error", kind="weights", title="The model could not be loaded",
                 message=f"{str(e)[:1].upper()}{str(e)[1:]}. Try again; if it keeps failing, the server's weights "
                 "are missing or stale: run `make demo` (or `python -m pycore.convert`) there.", detail="")
        except GPUOutOfMemoryError as e:
            self.demixers = {}  # free what we can; the next try reloads
            post("error", kind="oom", title="The GPU ran out of memory",
                 message="Close other tabs or programs that use the GPU and try again, or try a shorter file. "
                 "Your previous results are kept.", detail=str(e))
        except DeviceLostError as e:
            self.dev, self.demixers = None, {}
            post("error", kind="device-lost", title="The GPU device was lost",
                 message="The graphics driver reset or the GPU was needed elsewhere. Drop the file again to "
                 "retry on a fresh device; your previous results are kept.", detail=str(e))
        except MemoryError:
            post("error", kind="memory", title="Not enough memory",
                 message="This file is too long for the memory of this browser tab; try a shorter file.", detail="")
        except NoGPUError as e:
            post("error", kind="no-webgpu", title="WebGPU is not available", message=str(e), detail="")
        except Exception as e:  # a bug: show it instead of hanging the page
            post("error", kind="crash", title="The separation crashed",
                 message=f"{type(e).__name__}: {e}", detail=traceback.format_exc())


# ------------------------------------------------------------------ helpers


def to_floats(f32) -> array.array:
    """A JS Float32Array -> array('f') (one copy)."""
    out = array.array("f")
    out.frombytes(f32.to_bytes())
    return out


def check_audio(channels):
    if not channels or len(channels) > 2:
        raise InputError(f"expected 1 or 2 channels, got {len(channels)}")
    if len(channels[0]) == 0:
        raise InputError("the file contains no audio samples")
    for c, ch in enumerate(channels):
        if not math.isfinite(sum(ch)):  # NaN and inf both survive a sum
            raise InputError(f"channel {c + 1} contains NaN or infinite samples")


async def open_cache():
    """The weights cache, or None where the Cache API is unavailable (private mode, quota)."""
    try:
        return await js.caches.open(CACHE_NAME)
    except (JsException, AttributeError) as e:
        js.console.warn(f"stemtone: no Cache API, the weights are downloaded each time ({e})")
        return None


async def store(cache, key, url, data):
    """Cache the weights under `key`, dropping older versions of the same file."""
    try:
        for request in await cache.keys():
            if str(request.url).split("?")[0] == url and str(request.url) != key:
                await cache.delete(request)
        await cache.put(key, js.Response.new(data))
    except JsException as e:
        js.console.warn(f"stemtone: could not cache the weights ({e})")


async def sha256(data) -> str:
    digest = js.Uint8Array.new(await js.crypto.subtle.digest("SHA-256", data))
    return digest.to_bytes().hex()


def peaks(channels, columns=PEAK_COLUMNS):
    """Waveform outline: [min0, max0, min1, max1, ...] over `columns` equal slices."""
    n = len(channels[0])
    columns = max(1, min(columns, n))
    out = array.array("f")
    for i in range(columns):
        a, b = i * n // columns, (i + 1) * n // columns
        lo = hi = 0.0
        for ch in channels:
            part = ch[a:b]
            lo, hi = min(lo, min(part)), max(hi, max(part))
        out.append(lo)
        out.append(hi)
    return out


def export(stems, sample_rate, track, progress):
    """Per stem: channels (Float32Array), peaks and a WAV Blob; plus one zip Blob."""
    out, zbuf = [], io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_STORED) as z:  # audio does not deflate
        for i, (name, channels) in enumerate(stems.items()):
            wav = encode_wav(channels, sample_rate, bits=WAV_BITS)
            z.writestr(f"{track}/{name}.wav", wav)
            out.append({
                "name": name,
                "channels": [to_js(ch) for ch in channels],
                "peaks": to_js(peaks(channels)),
                "wav": blob(wav, "audio/wav"),
            })
            progress((i + 1) / (len(stems) + 1))
    return {"stems": out, "zip": blob(zbuf.getvalue(), "application/zip")}


def blob(data: bytes, mime: str):
    return js.Blob.new([to_js(data)], _js({"type": mime}))


worker = Worker()
handler = create_proxy(worker.on_message)
xworker.onmessage = handler
