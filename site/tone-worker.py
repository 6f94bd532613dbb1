"""Tone worker: the GPU side of the live tone page (site/tone.html), run by PyScript.

It owns the WebGPU device and the tone engine (pycore.tone). During a take it pulls the
microphone's samples from the capture ring (a SharedArrayBuffer written by the capture
AudioWorklet), runs ToneStream.push on them, writes the instrument's output to the
output ring (read by the playback AudioWorklet) and keeps the whole take. Layout and
index arithmetic: site/tone_ring.py.

While the worker keeps up it reads one engine block at a time: 128 samples (8 ms, the
lowest latency), or 320 (20 ms) where the GPU cannot do 8 ms blocks in real time
(tone_ring.choose_block, from both measured at load), and submits it to the engine at once (ToneStream.submit: the GPU work is issued, the
readback awaited later), keeping up to `depth` blocks in flight: block n + 1 is on the
GPU before block n's readback is back, so a GPU round trip longer than a block does not
stall the audio. The depth is chosen at load time from the round trip measured then
(a few tiny readbacks: median and 90th percentile) and one block's GPU work
(tone_ring.pipeline_depth); the page's latency card shows it and the playback buffer
it needs (one block of slack per block in flight). When it falls behind (a slow GPU,
or software WebGPU in CI) it reads up to MAX_CHUNK samples per push instead, in order:
nothing is skipped unless the 20 s capture ring overflows, and then the lost input is
counted and the take gets silence there. The
playback worklet plays what is on time and counts the rest as late blocks; the take
always holds everything that was processed. After Stop the backlog is finished with
progress reports, then the take is offered as WAV files.

Messages (plain JS objects; each message to the page carries a "stemtone" key):

    page -> worker   {cmd: "hello", base: the site's URL (page_kit.site_url())}
                     {cmd: "load", model: manifest entry (JSON), crepe: CREPE-tiny's entry
                      (JSON), manifest: the whole manifest (JSON)}
                     {cmd: "start", capture, output: SharedArrayBuffer, octave: int}
                     {cmd: "set", octave: int}
                     {cmd: "stop"}        the AudioContext is closed: the capture is final
                     {cmd: "lose-device"} destroys the device as a driver reset does (tests)
                     {cmd: "stall", seconds}  the take stops reading the capture ring for
                                          that long, as a GPU stall would (tests: overflow)
    worker -> page   {stemtone: "ready", gpu, f16}
                     {stemtone: "loading", name, message}
                     {stemtone: "loaded", name, latency: engine latency (samples),
                      lag: engine lag for its blocks (samples), block: the engine block
                      (samples), block_ms: GPU time of one block measured while warming
                      up (with its round trip), work_ms: "128:ms,320:ms" each size's work,
                      rtt_ms, rtt_p90_ms: the GPU round trip (median, 90th percentile),
                      depth: blocks kept in flight}
                     {stemtone: "frames", f0, confidence, loudness, played (the f0 the
                      instrument played): Float32Array (one per new 4 ms frame), processed: input samples done, captured: input
                      samples captured, lost: input samples lost, rtf: GPU time /
                      audio time of the last blocks (Take.rtf)}
                     {stemtone: "finishing", fraction, seconds_left}
                     {stemtone: "take", wav, input_wav: Blob, seconds, lost, processed,
                      compute_seconds}
                     {stemtone: "error", kind, title, message, detail}

The device, the weights download and cache, and the messages' helpers are shared with
the demix page's worker: site/worker_kit.py.
"""

import array
import asyncio
import collections
import json
import math
import time
import traceback

import js
from polyscript import xworker
from pyodide.ffi import create_proxy
from pyscript.ffi import to_js

from pycore.audio.wav import encode_wav
from pycore.gpu.runtime import DeviceLostError, GPUOutOfMemoryError, NoGPUError
from pycore.tone import SAMPLE_RATE, ToneStream, load_tone_model

import tone_ring as R
from worker_kit import GPUWorker, Throttle, WeightsError, blob, fetch_weights, post, post_error, post_no_webgpu

WARMUP_BLOCKS = 12                # pushes of silence after loading: compiles the shaders, measures the lag
POST_EVERY_S = 0.05               # pitch trail updates, twenty a second
FINISH_EVERY_S = 0.25             # progress of the backlog after Stop, four a second
RTF_PUSHES = 50                   # the real-time factor reported is over this many pushes
RTT_READS = 20                    # tiny readbacks timed at load: the GPU round trip
WAV_BITS = 16


def f32(values) -> "js.Float32Array":
    return to_js(values if isinstance(values, array.array) else array.array("f", values))


class Ring:
    """Python's view of one ring (see tone_ring): JS typed arrays over its SharedArrayBuffer."""

    def __init__(self, sab):
        self.head = js.Int32Array.new(sab, 0, R.HEADER)
        self.capacity = (sab.byteLength - R.HEADER_BYTES) // 4
        self.data = js.Float32Array.new(sab, R.HEADER_BYTES, self.capacity)

    def load(self, slot) -> int:
        return int(js.Atomics.load(self.head, slot))

    def store(self, slot, value):
        js.Atomics.store(self.head, slot, int(value))

    def read(self, position, count) -> array.array:
        out = array.array("f")
        for offset, n in R.segments(position, count, self.capacity):
            out.frombytes(self.data.subarray(offset, offset + n).to_bytes())
        return out

    def write(self, position, samples):
        """Samples at positions position ..; then publishes the new write position."""
        done = 0
        for offset, n in R.segments(position, len(samples), self.capacity):
            self.data.set(to_js(samples[done:done + n]), offset)
            done += n
        self.store(R.WRITE, position + len(samples))

    async def wait_write(self, seen, timeout_ms=100):
        """Until the writer moves past `seen` (or timeout_ms passes)."""
        waiter = js.Atomics.waitAsync(self.head, R.WRITE, int(seen), timeout_ms)
        if getattr(waiter, "async"):  # else it answered at once ("not-equal": already moved on)
            await waiter.value


class Take:
    """One take: the engine stream, the output and input kept so far, the statistics."""

    def __init__(self, model, capture, output, octave, depth=1, rtt_s=0.0, block=R.BLOCK):
        self.stream = ToneStream(model, octave=octave)
        self.block = block          # engine block in samples (tone_ring.choose_block)
        self.depth = depth          # blocks kept in flight (tone_ring.pipeline_depth)
        self.rtt_s = rtt_s          # the median GPU round trip measured at load
        self.in_flight = collections.deque()   # (task of the block's output, its input, issue time)
        self.watch = None           # a task waiting for the capture writer to move
        self.last_done = None       # when the previous block's output came back
        self.capture, self.output = Ring(capture), Ring(output)
        self.read = 0               # input samples consumed (processed or lost)
        self.out_pos = 0            # output samples written to the output ring
        self.out = array.array("f")  # the take: the instrument
        self.dry = array.array("f")  # the take: the input as processed (silence where lost)
        self.lost = 0
        self.compute = 0.0          # GPU seconds of the pushes (see rtf)
        self.recent = []            # (compute seconds, input samples) of the last pushes
        self.stopping = False
        self.stop_at = None         # capture position at Stop
        self.seen = 0               # the writer's position at the last step
        self.stall = 0.0            # seconds to wait before the next step (tests: a GPU stall)
        self.frames = {"f0": array.array("f"), "confidence": array.array("f"), "loudness": array.array("f"),
                       "played": array.array("f")}
        self.throttle = Throttle(POST_EVERY_S)

    def rtf(self) -> float:
        """GPU time over audio time of the last RTF_PUSHES pushes (1.0: just real time). A
        push's GPU time (settle) is the shorter of: its submit to its result less the
        median round trip (the pipeline hides the round trip; exact while the GPU keeps
        up), and the time since the previous push's result (exact while blocks queue
        behind each other on a GPU that is behind)."""
        del self.recent[:-RTF_PUSHES]
        audio = sum(n for _, n in self.recent) / SAMPLE_RATE
        return sum(t for t, _ in self.recent) / audio if audio else 0.0

    def lose(self, n):
        """n input samples were overwritten before they were read: silence in the take,
        in its place after the blocks still in flight (a (None, n, None) entry)."""
        if n:
            self.lost += n
            self.read += n
            if self.in_flight:
                self.in_flight.append((None, n, None))
            else:
                self.silence(n)

    def silence(self, n):
        zeros = array.array("f", bytes(4 * n))
        self.dry.extend(zeros)
        self.out.extend(zeros)
        self.out_pos += n

    def issue(self) -> bool:
        """Read what is waiting in the capture ring and submit it to the engine (its GPU
        work is issued now); False when nothing was waiting."""
        cap = self.capture
        written = cap.load(R.WRITE) if self.stop_at is None else self.stop_at
        self.seen = written
        lost, count = R.reader_plan(self.read, written, cap.capacity, block=self.block)
        self.lose(lost)
        if count == 0 and self.stop_at is not None and written > self.read:
            count = written - self.read              # the last, partial block of the take
        if count == 0:
            return False
        x = cap.read(self.read, count)
        gone = R.overwritten(self.read, count, cap.load(R.WRITE), cap.capacity) if self.stop_at is None else 0
        if gone:                                     # the writer lapped us during the copy
            self.lose(gone)
            x = x[gone:]
            count -= gone
        self.read += count
        cap.store(R.READ, self.read)
        self.in_flight.append((asyncio.ensure_future(_timed(self.stream.submit(x))), x, time.perf_counter()))
        return True

    async def settle(self):
        """The oldest block in flight: await its output, write it out, count it."""
        task, x, issued = self.in_flight.popleft()
        if task is None:                             # input lost while blocks were in flight
            self.silence(x)
            return
        out, done = await task
        seconds = done - issued - self.rtt_s
        if self.last_done is not None:
            seconds = min(seconds, done - self.last_done)
        self.last_done = done
        self.account(x, out, max(0.0, seconds))

    async def step(self) -> bool:
        """One move of the pipeline: settle the oldest block when `depth` are in flight or
        it is back, else submit what is waiting; False when there was nothing to do."""
        head = self.in_flight[0][0] if self.in_flight else None
        if self.in_flight and (len(self.in_flight) >= self.depth or head is None or head.done()):
            await self.settle()
            return True
        return self.issue()

    async def idle(self):
        """Until the capture writer moves past what was seen or the oldest block is back."""
        if self.watch is None or self.watch.done():
            self.watch = asyncio.ensure_future(self.capture.wait_write(self.seen))
        waits = [self.watch] + [t for t in [self.in_flight[0][0] if self.in_flight else None] if t is not None]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)

    def abandon(self):
        """After an error: the blocks still in flight are dropped (their errors too)."""
        for task, _, _ in self.in_flight:
            if task is None:
                continue
            task.add_done_callback(_quiet)
        self.in_flight.clear()

    def account(self, x, out, seconds):
        self.compute += seconds
        self.recent.append((seconds, len(x)))
        self.dry.extend(x)
        audio = out["audio"]
        self.out.extend(audio)
        if not self.stopping and len(audio):
            self.output.write(self.out_pos, audio)
        self.out_pos += len(audio)
        self.frames["f0"].extend(out["f0_hz"])
        self.frames["confidence"].extend(out["confidence"])
        self.frames["loudness"].extend(out["loudness_db"])
        self.frames["played"].extend(out["played_f0_hz"])

    def post_frames(self, force=False):
        if not self.throttle.due(force):
            return
        fr = self.frames
        post("frames", f0=f32(fr["f0"]), confidence=f32(fr["confidence"]), loudness=f32(fr["loudness"]),
             played=f32(fr["played"]),
             processed=self.read, captured=self.capture.load(R.WRITE), lost=self.lost, rtf=self.rtf())
        for v in fr.values():
            del v[:]


class Worker(GPUWorker):
    def __init__(self):
        super().__init__()
        self.models = {}          # model name -> (ToneModel, info dict)
        self.crepe_bytes = None
        self.current = None       # name of the model the next take uses
        self.take = None
        self.octave = 0

    def forget_models(self):
        self.models = {}

    async def on_message(self, event):
        data = event.data
        cmd = getattr(data, "cmd", None)
        try:
            if cmd == "hello":
                await self.hello(data.base)
            elif cmd == "load":
                await self.load(json.loads(data.model), json.loads(data.crepe), json.loads(data.manifest))
            elif cmd == "start":
                await self.run_take(data)
            elif cmd == "set":
                self.octave = int(data.octave)
                if self.take is not None:
                    self.take.stream.octave = self.octave
            elif cmd == "stop":
                if self.take is not None:
                    self.take.stop_at = self.take.capture.load(R.WRITE)
                    self.take.stopping = True
            elif cmd == "lose-device":
                self.lose_device()
            elif cmd == "stall" and self.take is not None:
                self.take.stall = float(data.seconds)
        except NoGPUError as e:
            post_no_webgpu(e)
        except Exception as e:  # a bug: show it instead of hanging the page
            post_error("crash", "The tone engine crashed", f"{type(e).__name__}: {e}", traceback.format_exc())

    # ---- instruments
    async def load(self, model, crepe, manifest):
        name = model["name"]
        self.current = name
        label = model.get("instrument") or name
        try:
            if name not in self.models:
                dev = await self.device()
                post("loading", name=name, message=f"Loading the {label}…")
                if self.crepe_bytes is None:
                    self.crepe_bytes = await fetch_weights(self.base, crepe)
                weights = await fetch_weights(self.base, model)
                try:
                    tone = load_tone_model(dev, name, weights=weights, crepe_weights=self.crepe_bytes,
                                           manifest=manifest)
                except ValueError as e:
                    raise WeightsError(str(e)) from None
                post("loading", name=name, message=f"Warming up the {label} on the GPU…")
                info = await warm_up(tone)
                self.models[name] = (tone, info)
            post("loaded", name=name, **self.models[name][1])
        except WeightsError as e:
            post_error("weights", f"The {label} could not be loaded",
                       f"{str(e)[:1].upper()}{str(e)[1:]}. Pick another instrument or reload the page; if it "
                       "keeps failing, the server's weights are missing or stale: run `make demo` there.",
                       name=name)

    # ---- one take
    async def run_take(self, data):
        if self.current not in self.models:
            post_error("crash", "No instrument is loaded", "Pick an instrument first.")
            return
        tone, info = self.models[self.current]
        take = self.take = Take(tone, data.capture, data.output, int(data.octave), info["depth"],
                                info["rtt_ms"] / 1000, info["block"])
        self.octave = int(data.octave)
        try:
            await self.live(take)
            await self.finish(take)
        except GPUOutOfMemoryError as e:
            post_error("oom", "The GPU ran out of memory",
                       "Close other tabs or programs that use the GPU and start again.", str(e))
        except DeviceLostError as e:
            self.reset()
            post_error("device-lost", "The GPU device was lost",
                       "The graphics driver reset or the GPU was needed elsewhere, and this take stopped. The "
                       "instrument is loaded again on a fresh device: press Start when it is ready. Your "
                       "previous take is kept.", str(e))
        finally:
            take.abandon()
            self.take = None

    async def live(self, take):
        """Until Stop: submit blocks as they arrive, settle them as they come back."""
        while not take.stopping:
            if take.stall:
                seconds, take.stall = take.stall, 0.0
                await asyncio.sleep(seconds)
            if not await take.step():
                take.post_frames()
                await take.idle()          # returns at once if the writer moved since
                continue
            take.post_frames()

    async def finish(self, take):
        """After Stop: the backlog, then the engine's tail; then the WAV files."""
        begin = take.read
        todo = max(1, take.stop_at - begin)
        t0 = time.perf_counter()
        every = Throttle(FINISH_EVERY_S)
        while True:
            if not await take.step():
                if not take.in_flight:
                    break
                await take.settle()                  # nothing left to submit: the oldest block
            if every.due():
                now = time.perf_counter()
                done = (take.read - begin) / todo
                rate = (take.read - begin) / max(1e-6, now - t0)
                post("finishing", fraction=done, seconds_left=(take.stop_at - take.read) / rate if rate else -1.0)
            take.post_frames()
        t = time.perf_counter()
        out = await take.stream.flush()
        take.account(array.array("f"), out, time.perf_counter() - t)
        take.post_frames(force=True)
        post("finishing", fraction=1.0, seconds_left=0.0)
        take.dry.extend(array.array("f", bytes(4 * max(0, len(take.out) - len(take.dry)))))  # same length
        post("take", wav=blob(encode_wav([take.out], SAMPLE_RATE, bits=WAV_BITS), "audio/wav"),
             input_wav=blob(encode_wav([take.dry], SAMPLE_RATE, bits=WAV_BITS), "audio/wav"),
             seconds=len(take.out) / SAMPLE_RATE, processed=take.read, lost=take.lost,
             compute_seconds=take.compute)


async def warm_up(tone) -> dict:
    """Push silence through throwaway streams in each engine block size (R.BLOCK_SIZES):
    compiles every shader before the first take and measures, per size, the time of one
    block from its push to its output (GPU work and one round trip) and the engine's lag
    (the most input samples that must arrive after an output sample's position before
    that sample is computed, which sets the playback offset); then the GPU round trip
    alone (round_trip). From them: the block size (tone_ring.choose_block: 8 ms where the
    GPU keeps up, else 20 ms) and the pipeline depth (tone_ring.pipeline_depth)."""
    measured = [await _warm_blocks(tone, n) for n in R.BLOCK_SIZES]
    rtt_ms, rtt_p90_ms = await round_trip(tone.dev)
    work = [max(0.0, ms - rtt_ms) for ms, _, _ in measured]
    block = R.choose_block(work)
    block_ms, lag, latency = measured[R.BLOCK_SIZES.index(block)]
    depth = R.pipeline_depth(block_ms - rtt_ms, rtt_p90_ms, block=block)
    return {"latency": latency, "lag": lag, "block": block, "block_ms": block_ms,
            "work_ms": ",".join(f"{n}:{w:.2f}" for n, w in zip(R.BLOCK_SIZES, work)),
            "rtt_ms": rtt_ms, "rtt_p90_ms": rtt_p90_ms, "depth": depth}


async def _warm_blocks(tone, block) -> tuple:
    """(median ms of a push of `block` samples of silence after the first half of
    WARMUP_BLOCKS, the engine's lag for such blocks, its latency in samples)."""
    stream = ToneStream(tone)
    zeros = array.array("f", bytes(4 * block))
    received = produced = lag = 0
    times = []
    for _ in range(WARMUP_BLOCKS):
        t0 = time.perf_counter()
        out = await stream.push(zeros)
        times.append(time.perf_counter() - t0)
        received += block
        if len(out["audio"]):
            lag = max(lag, received - produced)
        produced += len(out["audio"])
    stream.release()
    times = sorted(times[len(times) // 2:])                     # the first pushes compile shaders
    return 1000 * times[len(times) // 2], lag, stream.latency_samples


async def round_trip(dev, reads=RTT_READS) -> tuple:
    """(median, 90th percentile) in ms of a readback of 4 bytes: a submit, a copy and a
    map, the round trip each block's readback pays on top of its GPU work."""
    t = dev.tensor([0.0])
    times = []
    for _ in range(reads):
        t0 = time.perf_counter()
        await dev.read(t)
        times.append(1000 * (time.perf_counter() - t0))
    t.release()
    times.sort()
    return times[len(times) // 2], times[math.ceil(0.9 * len(times)) - 1]


async def _timed(pending):
    """(the awaited output, when it came back)."""
    out = await pending
    return out, time.perf_counter()


def _quiet(task):
    """Done-callback of an abandoned block: its error is retrieved (and dropped)."""
    if not task.cancelled():
        task.exception()


worker = Worker()
handler = create_proxy(worker.on_message)
xworker.onmessage = handler  # PyScript calls this script's global `xworker.onmessage`
