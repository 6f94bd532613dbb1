"""Demix worker: the GPU side of the demix page (site/index.html), run by PyScript.

The page's main thread (demix-main.py) decodes the file and plays the stems; this
worker owns the WebGPU device and does everything heavy, so that the page stays
responsive:

    fetch the weights (progress, Cache API, sha256 check)  ->  Demixer.load
    Demixer.separate (progress, cancellation between segments)
    waveform peaks and one file per stem: WAV (pycore.audio.wav) or Ogg Opus (the
    browser's WebCodecs AudioEncoder, wrapped by pycore.audio.oggopus)

Messages are plain JS objects sent with postMessage; each carries a "stemtone" key
naming its kind.

    main -> worker   {cmd: "hello", flag: SharedArrayBuffer(4), base: the site's URL (page_kit.site_url())}
                     {cmd: "separate", model: manifest entry as JSON, name: track name,
                      channels: [Float32Array at 44.1 kHz, ...], format: "wav16" |
                      "wav24" | "wav32" (float) | "opus" (the files'), two_stems: "" or
                      a stem X (keep X and no_X, the mix minus X:
                      pycore.demix.base.everything_but)}
                     {cmd: "checkpoint", id: session model name, files: [{name, data:
                      ArrayBuffer}], fetchable: JSON {name: manifest entry with "fetch"}}
                     {cmd: "lose-device"}  destroys the device as a driver reset does (tests)
    worker -> main   {stemtone: "ready", gpu: adapter description, f16: bool}
                     {stemtone: "model", entry: JSON of a manifest-like entry with
                      "session": true, "runs_as": the pycore.demix model, "stems"}
                     {stemtone: "progress", stage: "weights"|"separate"|"export"|"checkpoint",
                      fraction: 0..1, message: str; stage "separate" also: steps, the
                      number of reports the separation gives (one per segment), 0 when
                      the model reports fractions of the track (Demixer.progress_steps)}
                     {stemtone: "result", stems: [{name, channels: [Float32Array],
                      peaks: Float32Array, file: Blob}], seconds: separation wall
                      time, seconds_audio}  (the page zips the stems of every song)
                     {stemtone: "error", kind, title, message, detail}

A checkpoint file the user picks (a demucs .th, Open-Unmix .pth files, or a converted
.safetensors) is converted here by pycore.weights.checkpoint (pure Python: Pyodide has
no numpy), runs as the model pycore.demix.base.model_for_file names, and is kept as a
model of this session under the id the page gave it.

Cancellation: the main thread sets the first Int32 of the shared flag; the worker
reads it between downloaded chunks and between segments (Demixer's should_cancel).

The device, the weights download and cache, and the messages' helpers are shared with
the tone page's worker: site/worker_kit.py.
"""

import array
import json
import math
import time
import traceback

import js
from polyscript import xworker
from pyodide.ffi import create_proxy
from pyscript.ffi import to_js

from pycore.audio.oggopus import OPUS_RATE, encoder_config, ogg_opus
from pycore.audio.wav import encode_wav
from pycore.demix import Cancelled, Demixer
from pycore.demix.base import everything_but, model_for_file
from pycore.gpu.runtime import DeviceLostError, GPUOutOfMemoryError, NoGPUError
from pycore.weights.checkpoint import convert_files
from pycore.weights.safetensors import load_metadata

from worker_kit import GPUWorker, Throttle, WeightsError, blob, fetch_weights, post, post_error, post_no_webgpu

PEAK_COLUMNS = 1600                # waveform resolution sent to the page
PROGRESS_EVERY_S = 0.1             # at most ten progress messages a second
WAV_BITS = {"wav16": 16, "wav24": 24, "wav32": 32}  # the page's WAV formats (32: float)
ENCODE_BLOCK_S = 1.0               # audio handed to the Opus encoder at a time


class InputError(Exception):
    """The decoded audio cannot be separated (reported to the user as is)."""


class EncodeError(Exception):
    """The browser's Opus codec failed (the WAV formats still work)."""


class CheckpointError(Exception):
    """A checkpoint file the user picked cannot be converted or loaded."""


class Worker(GPUWorker):
    def __init__(self):
        super().__init__()
        self.demixers = {}     # model name -> loaded Demixer
        self.flag = None       # Int32Array over the main thread's SharedArrayBuffer
        self.throttle = Throttle(PROGRESS_EVERY_S)
        self.opus_delays = {}  # (rate, channels) -> the encoder's delay at 48 kHz (measured once)

    def forget_models(self):
        self.demixers = {}

    # ---- messages
    async def on_message(self, event):
        data = event.data
        cmd = getattr(data, "cmd", None)
        if cmd == "hello":
            self.flag = js.Int32Array.new(data.flag)
            await self.hello(data.base)
        elif cmd == "separate":
            await self.run_job(data)
        elif cmd == "checkpoint":
            await self.load_checkpoint(data)
        elif cmd == "lose-device":
            self.lose_device()

    def cancelled(self) -> bool:
        return self.flag is not None and js.Atomics.load(self.flag, 0) != 0

    def progress(self, stage, fraction, message, force=False, **fields):
        if self.throttle.due(force):
            post("progress", stage=stage, fraction=max(0.0, min(1.0, float(fraction))), message=message, **fields)

    # ---- models
    async def demixer(self, model):
        name = model["name"]
        if model.get("session") and name not in self.demixers:
            raise WeightsError(f"the model from {model['title']} was unloaded (the GPU was reset); "
                               "pick the checkpoint file again")
        if name not in self.demixers:
            dev = await self.device()
            weights = await fetch_weights(self.base, model, progress=self.weights_progress,
                                          should_cancel=self.cancelled, cancelled=Cancelled)
            self.progress("weights", 1.0, "Uploading the weights to the GPU…", force=True)
            try:
                self.demixers[name] = await Demixer.load(dev, name, weights=weights)
            except ValueError as e:  # not a valid safetensors file / unexpected tensors
                raise WeightsError(f"{name}: {e}") from None
        return self.demixers[name]

    def weights_progress(self, fraction, message, force=False):
        self.progress("weights", fraction, message, force)

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
            runs_as = model_for_file(meta)
            self.checkpoint_progress(f"Loading {names} on the GPU…")
            demixer = await Demixer.load(await self.device(), runs_as, weights=weights)
        except (ValueError, KeyError, CheckpointError) as e:
            message = str(e) if not isinstance(e, KeyError) else f"a tensor the model needs is missing ({e})"
            if not any(message.startswith(n) for n in file_names):  # file names keep their case
                message = message[:1].upper() + message[1:]
            post_error("checkpoint", "This checkpoint cannot be used",
                       f"{message}. Pick an official Demucs v4 .th file, the four Open-Unmix .pth files of "
                       "one model, or a .safetensors file made by `stemtone weights convert`.")
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
        # the page clears the flag when the job starts: a Cancel clicked while the audio
        # was on its way here must still count
        try:
            if self.cancelled():
                raise Cancelled()
            model = json.loads(data.model)
            channels = [to_floats(c) for c in data.channels]
            check_audio(channels)
            demixer = await self.demixer(model)
            seconds_audio = len(channels[0]) / demixer.sample_rate
            segments = demixer.progress_steps(len(channels[0]))  # one report per segment; 0: fractions

            def on_progress(fraction, _message=""):
                if segments:
                    message, force = f"Separating · {round(fraction * segments)} of {segments} parts done", True
                else:
                    message, force = f"Separating · {100 * fraction:.0f}% done", False
                self.progress("separate", fraction, message, force, steps=segments)

            first = "Separating…" if segments <= 1 else f"Separating · 0 of {segments} parts done"
            self.progress("separate", 0.0, first, force=True, steps=segments)
            t0 = time.perf_counter()
            stems = await demixer.separate(channels, progress=on_progress, should_cancel=self.cancelled)
            seconds = time.perf_counter() - t0
            fmt = str(data.format)
            what = "Encoding Opus" if fmt == "opus" else "Writing the WAV files"
            self.progress("export", 0.0, f"{what}…", force=True)
            if str(data.two_stems):
                stems = everything_but(model["name"], stems, channels, str(data.two_stems))
            result = await self.export(stems, demixer.sample_rate, fmt,
                                       lambda f: self.progress("export", f, f"{what}…"))
            # GPU buffers created and not destroyed (pooled ones included): flat from job to job
            post("result", seconds=seconds, seconds_audio=seconds_audio, live_buffers=self.dev.live_buffers,
                 **result)
        except Exception as e:
            self.report(e)

    async def export(self, stems, sample_rate, fmt, progress):
        """Per stem: channels (Float32Array), peaks and its file Blob: WAV (16, 24-bit
        PCM; 32-bit IEEE float, lossless and never clips) or Ogg Opus."""
        out = []
        for i, (name, channels) in enumerate(stems.items()):
            if fmt == "opus":
                delay = await self.opus_delay(sample_rate, len(channels))
                packets = await encode_opus(channels, sample_rate, delay)
                file = blob(ogg_opus(packets, len(channels), delay, sample_rate, frames=len(channels[0]),
                                     comments=[f"TITLE={name}"]), "audio/ogg")
            else:
                file = blob(encode_wav(channels, sample_rate, bits=WAV_BITS[fmt]), "audio/wav")
            out.append({"name": name, "channels": [to_js(ch) for ch in channels],
                        "peaks": to_js(peaks(channels)), "file": file})
            progress((i + 1) / len(stems))
        return {"stems": out}

    async def opus_delay(self, rate, channels):
        """The Opus pre-skip: how many 48 kHz samples the browser's encoder delays its
        input by, measured once per rate and channel count (measure_opus_delay)."""
        key = (rate, channels)
        if key not in self.opus_delays:
            self.opus_delays[key] = await measure_opus_delay(rate, channels)
        return self.opus_delays[key]

    def report(self, e):
        """Tell the page about a failed job in words the user can act on."""
        try:
            raise e
        except Cancelled:
            post_error("cancelled", "Cancelled", "The separation was cancelled.")
        except InputError as e:
            post_error("input", "This file cannot be separated", str(e))
        except EncodeError as e:
            post_error("encode", "The Opus download could not be made", f"{e}. Pick a WAV format and add the song "
                       "again.")
        except WeightsError as e:
            post_error("weights", "The model could not be loaded",
                       f"{str(e)[:1].upper()}{str(e)[1:]}. Try again; if it keeps failing, the server's weights "
                       "are missing or stale: run `make demo` (or `python -m pycore.weights`) there.")
        except GPUOutOfMemoryError as e:
            self.forget_models()  # free what we can; the next try reloads
            post_error("oom", "The GPU ran out of memory",
                       "Close other tabs or programs that use the GPU and try again, or try a shorter file. "
                       "Your previous results are kept.", str(e))
        except DeviceLostError as e:
            self.reset()
            post_error("device-lost", "The GPU device was lost",
                       "The graphics driver reset or the GPU was needed elsewhere. Drop the file again to "
                       "retry on a fresh device; your previous results are kept.", str(e))
        except MemoryError:
            post_error("memory", "Not enough memory",
                       "This file is too long for the memory of this browser tab; try a shorter file.")
        except NoGPUError as e:
            post_no_webgpu(e)
        except Exception as e:  # a bug: show it instead of hanging the page
            post_error("crash", "The separation crashed", f"{type(e).__name__}: {e}", traceback.format_exc())


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


# ------------------------------------------------------------------ Opus (WebCodecs)
# The browser's AudioEncoder and AudioDecoder are JavaScript APIs: Pyodide reaches them
# through `js` (there is no other Opus codec in the page).


async def encode_opus(channels, rate, delay, pad=True) -> list:
    """Opus packets (bytes) of `channels` (sequences of floats at `rate`) from the
    browser's AudioEncoder (pycore.audio.oggopus.encoder_config). pad: follow the audio
    with silence a little longer than the encoder's `delay` (48 kHz samples), so that
    the packets hold all of the audio (the Ogg file's last granule trims the rest)."""
    packets, errors = [], []

    def on_output(chunk, _metadata=None):
        data = js.Uint8Array.new(chunk.byteLength)
        chunk.copyTo(data)
        packets.append(data.to_bytes())

    output, error = create_proxy(on_output), create_proxy(lambda e: errors.append(str(e)))
    encoder = js.AudioEncoder.new(to_js({"output": output, "error": error}))
    try:
        encoder.configure(to_js(encoder_config(len(channels), rate)))
        n, block = len(channels[0]), int(ENCODE_BLOCK_S * rate)
        tail = (delay + 960) * rate // OPUS_RATE + 1 if pad else 0  # the delay and one more frame
        for start in range(0, n + tail, block):
            frames = min(block, n + tail - start)
            planar = js.Float32Array.new(len(channels) * frames)  # zeros: the padding
            for c, ch in enumerate(channels):
                if start < n:
                    planar.set(to_js(array.array("f", ch[start:min(start + frames, n)])), c * frames)
            audio = js.AudioData.new(to_js({"format": "f32-planar", "sampleRate": rate, "numberOfFrames": frames,
                                            "numberOfChannels": len(channels), "data": planar,
                                            "timestamp": round(start * 1e6 / rate)}))
            encoder.encode(audio)
            audio.close()
        await encoder.flush()
    finally:
        if str(encoder.state) != "closed":
            encoder.close()
        output.destroy()
        error.destroy()
    if errors:
        raise EncodeError(f"the browser's Opus encoder failed: {errors[0]}")
    return packets


async def measure_opus_delay(rate, channels) -> int:
    """The browser encoder's delay in 48 kHz samples (the Opus pre-skip): a short pulse
    is encoded and decoded again (AudioDecoder, told no pre-skip) and the delay is where
    it comes out minus where it went in. Measured rather than read from the encoder's
    OpusHead because Chromium resamples 44.1 kHz input to 48 kHz before libopus and
    its OpusHead leaves that resampler's delay out (312 there; 347 measured)."""
    n, at, half = rate // 5, rate // 20, 8  # 0.2 s, the pulse at 50 ms, a Hann pulse of 17 samples
    pulse = array.array("f", bytes(4 * n))
    for j in range(-half, half + 1):
        pulse[at + j] = 0.8 * (0.5 + 0.5 * math.cos(math.pi * j / (half + 1)))
    packets = await encode_opus([pulse] * channels, rate, 0, pad=False)
    decoded, errors = array.array("f"), []

    def on_output(audio):
        plane = js.Float32Array.new(audio.numberOfFrames)
        audio.copyTo(plane, to_js({"planeIndex": 0, "format": "f32-planar"}))
        audio.close()
        decoded.frombytes(plane.to_bytes())

    output, error = create_proxy(on_output), create_proxy(lambda e: errors.append(str(e)))
    decoder = js.AudioDecoder.new(to_js({"output": output, "error": error}))
    try:
        decoder.configure(to_js({"codec": "opus", "sampleRate": OPUS_RATE, "numberOfChannels": channels}))
        t = 0
        for p in packets:
            decoder.decode(js.EncodedAudioChunk.new(to_js({"type": "key", "timestamp": t, "data": to_js(p)})))
            t += 20_000
        await decoder.flush()
    finally:
        if str(decoder.state) != "closed":
            decoder.close()
        output.destroy()
        error.destroy()
    peak = max(range(len(decoded)), key=decoded.__getitem__) if decoded else 0
    delay = round(peak - at * OPUS_RATE / rate)
    if errors or not decoded or decoded[peak] < 0.4 or not 0 <= delay < 65536:
        raise EncodeError(f"the browser's Opus codec did not return its test pulse ({errors or 'no echo'})")
    return delay


worker = Worker()
handler = create_proxy(worker.on_message)
xworker.onmessage = handler  # PyScript calls this script's global `xworker.onmessage`
