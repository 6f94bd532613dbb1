"""Tone transfer: a sung or played melody in, the same melody on a trained instrument out.

    model = load_tone_model(dev, "ddsp-violin")            # DDSP decoder + synth + CREPE
    stream = ToneStream(model, octave=0, loudness_db=0.0)
    out = await stream.push(samples_16k)                   # any number of samples
    pending = stream.submit(samples_16k)                   # or: issue the GPU work now ...
    out = await pending                                    # ... and await it later (pipelined)
    ... out["audio"], out["f0_hz"], out["confidence"], out["loudness_db"], out["played_f0_hz"]
    out = await stream.flush()                             # end of the take

One engine serves the live page (site/tone-worker.py, blocks of 128 samples) and the
offline CLI (`stemtone tone`, pycore.tone.files.tone_file: blocks of a few seconds): the output does
not depend on how the input is cut into blocks, so streaming and offline rendering of
the same input agree to float32 rounding (tests/test_tone.py).

Per frame f (16 kHz, hop 64 samples, 250 frames per second), on the GPU:

  features   A-weighted loudness of the 512 samples centered on sample 64 f
             (pycore.ops.loudness, DDSP's compute_loudness), and the pitch (f0 +
             confidence) of frame f - PITCH_LAG (3 frames, 12 ms late): CREPE runs on
             every second frame only (its 1024 samples centered on sample 64 g, g even),
             and odd frames take the halfway point of their even neighbours, in cents
             (kernels/pitch_track.wgsl). That halves CREPE, the engine's largest cost on a
             CPU driver; measured on real singing, 99.8 % of confidently voiced frames
             stay within 10 cents of CREPE at every frame (`stemtone bench tone`), and
             DDSP-VST analyses every 20 ms. Frame f - 3 needs CREPE up to frame f - 2,
             so frame f is ready once sample 64 f + 383 has arrived (LOOKAHEAD = 384
             samples, 24 ms).
  controls   a few numbers per frame, on the GPU with their state in a GPU buffer
             (kernels/tone_controls.wgsl, pycore.ops.tone_controls, which holds the
             pure-Python reference), the same tone-transfer adjustments as Magenta's
             DDSP demo:
             - voiced = confidence >= VOICED (0.5). Unvoiced frames keep the last voiced
               f0 (no random pitch jumps in breaths or consonants). A note carries on
               through up to HOLD_FRAMES (100 ms) of unvoiced frames, as a player's note
               carries through a singer's consonant; after that the harmonic amplitude
               is gated off, so breaths, noise and unpitched input give the instrument's
               filtered noise only. The loudness is left as it is (Magenta's demo also
               lowers unvoiced frames by 20 dB; measured on real singing that makes the
               output's loudness follow the input's worse, 0.895 against 0.917
               correlation, for no audible gain once the harmonics are gated);
             - f0 times 2**octave, times 2**R (the register shift, below), then folded
               by whole octaves into the instrument's trained range (manifest
               "midi_range"), so a bass voice on a flute plays an octave or two up
               instead of an untrained, out-of-range tone. Folded alone, frame by frame,
               a melody that crosses the fold's boundary breaks (one note jumps an octave
               against its neighbours) and a low singer sits at the bottom edge of a
               flute's range; so a model that carries its input calibration
               (pycore.tone.calibration: its training pitch quantiles) gets the singer's
               register moved into its own first: R whole octaves, the smallest shift
               (in size) that puts the running mean of the input's voiced pitch in MIDI
               inside the model's central training register (the band between its
               training pitch quantiles at 1/8 and 7/8; a singer already inside is not
               moved), the mean counted like the loudness mean below (voiced frames
               above -50 dB, plain over the first AUTO_FRAMES, then exponential), and R
               changes only at a note start (a voiced frame after at least HOLD_FRAMES
               unvoiced ones: where the harmonic gate closed, so no note or legato
               phrase is split; the take's first voiced frame is one), and after the
               take's first note only once the shifted mean lies more than
               REGISTER_MARGIN (1/12 octave) outside the band (hysteresis: a singer
               whose mean dips just past the band's edge keeps its octave).
               The fold stays as the guard for notes that still fall outside the range,
               and the octave knob is an offset on top;
             - loudness + loudness_db (user trim), then moved to the level the model was
               trained at: the decoder sees the input's loudness shifted by
               (the model's voiced median, manifest "loudness_db") - (the running mean
               of the input's voiced loudness: a plain mean over the first AUTO_FRAMES
               voiced frames, 3 s, then exponential over that many), as Magenta's demo
               auto-adjusts it; a loud singer on a quiet guitar otherwise drives the
               model far outside what it learned. A model that carries its input
               calibration (pycore.tone.calibration: its training loudness quantiles)
               gets the singer's loudness mapped onto that distribution instead, by a
               causal quantile map whose prior is this mean shift. The level stage
               below restores the input's own loudness;
             - input below SILENCE_DB (-70 dB) gates the whole output off (silence in,
               silence out: the decoder never saw true silence in training).
  decoder    pycore.models.ddsp.Decoder (GRU state carried across blocks)
  synth      pycore.models.ddsp.Synth (oscillator phase, noise and reverb tails carried)
  level      the output's loudness follows the input's. The instrument models learned
             their loudness from a few minutes of sampled notes (a plucked guitar
             decays, a sampled saxophone is louder on some notes than others), so a
             singer's dynamics do not always come out as sung. While the output sounds
             (the output gate is open: on notes, and between them, where the
             instrument's filtered noise stands for the singer's breaths and consonants;
             holding the gain there made the output's loudness follow real singing
             worse: correlation 0.909-0.928 against 0.923-0.948 on Vocadito clip 14 for
             the five instruments), a slow gain (one-pole over LEVEL_FRAMES = 4 frames,
             within +-LEVEL_MAX_DB = 12 dB of undoing the auto-adjust shift) moves the
             synthesized output's A-weighted loudness, measured on the GPU over
             the last 512 output samples, toward the input's over the same 512 samples
             (the input frame LEVEL_LAG = 4 frames earlier) minus HEADROOM_DB (6 dB, so
             that a loud singer does not drive a peakier instrument into the limit), but
             at least SILENCE_DB + 20 dB (-50 dB): quiet singing turns the instrument
             down as far as the clamp allows, where the gain used to hold for every
             target under -50 dB (the first notes of a quiet take came out 20 dB over
             the singer; correlation on Vocadito clip 14 +0.001 to +0.007, clip 10
             unchanged); it holds while the output is gated off or the input is silent.
             Where the auto shift takes effect (the take's first voiced frame: the
             decoder's input loudness jumps by the shift), the gain moves against it at
             once: the stage would otherwise take its lag and time constant to catch the
             jump, and a quiet take's first note came out 15-20 dB over the singer
             (correlation on Vocadito clip 14 violin 0.948 -> 0.951, flute 0.926 ->
             0.929; clip 10 unchanged).
             A frame whose peak would pass LEVEL_PEAK (0.95) gets no more gain than
             keeps it there.

Output per frame, besides the audio: the input's features as the engine analysed them
(f0_hz, confidence, loudness_db) and played_f0_hz, the f0 the decoder was given (after
the octave knob, the register shift and the fold; held through unvoiced frames): the
page's pitch trail draws it.

Timing. The output is a stream of its own: push() returns, in order, the samples of
every frame that became computable. Output sample n is the rendering of input sample
n - delay_samples (delay_samples = the synthesizer's one hop, 64): to line the output
up with the input offline, drop its first delay_samples. In real time, output sample n
exists once the input up to the end of its frame's analysis window has arrived; the
worst case over a frame is latency_samples = LOOKAHEAD + delay_samples = 448 samples (28 ms) of
algorithmic latency, to which the caller's block and audio buffers add (the page states
its breakdown). flush() renders the frames left at the end of the take, then lets the
reverb ring out with the output gated off: a take's output is delay_samples +
len(input), rounded up to whole frames, + the reverb's length.

A block of F frames is one recorded plan (pycore.gpu.runtime.Plan, one per F, parity
of the first frame and side, the last MAX_PLANS kept): one upload of its input samples
(and of the live settings, octave and trim, when they change), the replayed dispatches,
and ONE readback of a buffer holding the audio and the frame features. Everything
carried across blocks (the last analysed pitch row, the controls' state, the GRU state,
the oscillator phase, the noise counter and tails, the reverb history, the output
history) is a tensor made before recording: the controls' state and the noise counter
are updated in place, the rest lives twice (two "sides"): a block reads one side and
its plan stores the new state into the other (Plan.store), so no dispatch copies state.

Pipelined blocks. submit() issues a push's blocks at once (upload, replay, readback
copy and map request: Device.start_read) and returns an awaitable of its output, so
that block n + 1 is on the GPU before block n's readback has come back, and a GPU
round trip longer than a block does not stall the stream (the page chooses how many
blocks it keeps in flight from the measured round trip: site/tone-worker.py). The
output is the same as sequential pushes, bit for bit, because everything a block does
is a queue operation, ordered after everything issued before it: its input upload
(queue.writeBuffer) lands after the previous blocks' submits, so overwriting the plan's
input tensor never touches data an earlier block still reads; the carried state is read
and written by those submits in issue order, whatever the host awaits when; and the
copy of a block's output into its staging buffer is part of its own submit, so the next
replay of the same plan (two blocks later) overwrites the output tensor only after that
copy. The only thing a block in flight holds alone is its staging buffer, one per
readback in flight, from the runtime's pool. All host bookkeeping (frame counter,
input history, side) advances at issue.

Browser-safe: no numpy (array('f') on the host; numpy arrays are accepted natively).
"""

from __future__ import annotations

import array
import json
import math

from ..models.crepe import Crepe
from ..models.ddsp import SynthState
from ..ops import elementwise as E
from ..ops.loudness import loudness_db as loudness_op
from ..ops.pitch import FRAME, crepe_decode, crepe_frames, pitch_track
from ..ops.tone_controls import LAG, Rules, initial_state, tone_controls, tone_level
from .controls import (AUTO_FRAMES, DEFAULT_RANGE, GATE_FRAMES, HEADROOM_DB, HOLD_FRAMES, LEVEL_FRAMES,  # noqa: F401
                       LEVEL_MAX_DB, LEVEL_PEAK, REGISTER_MARGIN, SILENCE_DB, VOICED, fold_f0)  # (fold_f0: public)
from .controls import CAL_FRAMES, CAL_PRIOR_FRAMES
from .features import HOP, LOUDNESS_N_FFT, SAMPLE_RATE, load_crepe
from .calibration import pitch_band

PITCH_STEP = 2                    # CREPE analyses every second frame (8 ms) ...
PITCH_LAG = 3                     # ... and frame f plays the pitch track at frame f - 3
LOOKAHEAD = FRAME // 2 - HOP * (PITCH_LAG - 1)   # 384: frame f needs CREPE up to frame f - 2
LEVEL_LAG = LOUDNESS_N_FFT // (2 * HOP)   # 4: the causal output window centers this many frames back
MAX_BLOCK_FRAMES = 1000           # frames per GPU pass (4 s); longer pushes are split
MAX_PLANS = 8                     # recorded block plans kept per stream (per frames-per-block, parity, side)
assert LEVEL_LAG == LAG, "pycore.ops.tone_controls.LAG must be the level stage's lag"
assert PITCH_STEP == 2, "kernels/pitch_track.wgsl interpolates halfway: every second frame"


def tone_models(manifest: dict) -> list:
    """The tone-transfer entries ("task": "tone") of a weights manifest, in its order."""
    return [m for m in manifest.get("models", []) if m.get("task") == "tone"]


def read_manifest() -> dict:
    """Native: weights/manifest.json."""
    from ..weights import MANIFEST

    with open(MANIFEST, encoding="utf-8") as f:
        return json.load(f)


def instrument_names(manifest: dict | None = None) -> list:
    """Instruments with a tone model: ["violin", "flute", ...] (native: the repo manifest)."""
    return [m.get("instrument") or m["name"] for m in tone_models(manifest or read_manifest())]


def resolve(name: str, manifest: dict | None = None) -> dict:
    """The manifest entry of a tone model given by its name ("ddsp-violin") or instrument
    ("violin"); ValueError listing the choices when there is none."""
    models = tone_models(manifest or read_manifest())
    for m in models:
        if name in (m["name"], m.get("instrument")):
            return m
    choices = ", ".join(m.get("instrument") or m["name"] for m in models) or "none installed"
    raise ValueError(f"unknown instrument {name!r}; available: {choices}")


class ToneModel:
    """Everything a ToneStream needs, loaded once: the DDSP decoder and synthesizer, the
    CREPE pitch model, and the instrument's trained pitch range (MIDI notes)."""

    def __init__(self, dev, config, decoder, synth, crepe: Crepe, name="", instrument="", midi_range=None,
                 loudness_db=None, calibration=None):
        self.dev, self.config, self.decoder, self.synth, self.crepe = dev, config, decoder, synth, crepe
        self.name, self.instrument = name, instrument
        self.loudness_db = loudness_db      # trained level (voiced median), None: no auto-adjust
        self.calibration = calibration      # pycore.tone.calibration.read's dict, None: the mean shift
        lo, hi = midi_range or DEFAULT_RANGE
        if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and hi - lo >= 12):
            raise ValueError(f"{name}: midi_range must span at least an octave, got {midi_range!r}")
        self.midi_range = (float(lo), float(hi))
        if config.sample_rate != SAMPLE_RATE or config.hop != HOP:
            raise ValueError(f"{name}: tone transfer runs at {SAMPLE_RATE} Hz with {HOP}-sample frames; "
                             f"this model has {config.sample_rate} Hz, hop {config.hop}")


def load_tone_model(dev, name="violin", weights=None, crepe_weights=None, manifest=None, dtype="f32"):
    """A ToneModel for a tone model of the manifest, by model name or instrument.

    weights: the DDSP safetensors (path or bytes; natively default weights/<file>);
    crepe_weights: CREPE-tiny's (bytes or path; natively default weights/crepe-tiny...);
    manifest: the weights manifest dict (natively default weights/manifest.json; the
    browser passes the one it fetched)."""
    from ..models import ddsp
    from ..weights import weights_path
    from ..weights.safetensors import load as load_st
    from . import calibration

    entry = resolve(name, manifest)
    src = weights if weights is not None else weights_path(entry["name"])
    try:
        config, decoder, synth = ddsp.load(dev, src, dtype=dtype)
        calib = calibration.read(load_st(src), entry["name"])
    except (KeyError, ValueError) as e:
        raise ValueError(f"{entry['name']}: not a usable DDSP weights file ({e})") from e
    if isinstance(crepe_weights, str):
        crepe_weights = load_st(crepe_weights)
    elif isinstance(crepe_weights, (bytes, bytearray, memoryview)):
        crepe_weights = load_st(bytes(crepe_weights))
    crepe = load_crepe(dev, "crepe-tiny", weights=crepe_weights)
    return ToneModel(dev, config, decoder, synth, crepe, entry["name"], entry.get("instrument", ""),
                     entry.get("midi_range"), entry.get("loudness_db"), calib)


def midi_to_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def _as_f32(samples) -> array.array:
    """Host float32 samples from array('f'), a list, bytes-like float32 or a numpy array;
    NaN and infinity become 0 (a glitching input must not poison the GRU state)."""
    if hasattr(samples, "dtype") and hasattr(samples, "ndim"):   # numpy, native only
        import numpy as np

        x = np.asarray(samples, np.float32)
        if x.ndim != 1:
            raise ValueError(f"tone: samples must be mono, one 1-D array (got shape {x.shape})")
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        return array.array("f", x.tobytes())
    if isinstance(samples, array.array) and samples.typecode == "f":
        x = samples
    else:
        x = array.array("f", samples)
    total = sum(x)      # NaN or infinite exactly when some sample is (float32s cannot overflow a double sum)
    if total != total or total in (math.inf, -math.inf):
        x = array.array("f", (0.0 if (v != v or v in (math.inf, -math.inf)) else v for v in x))
    return x


def _geometry(f0: int, F: int) -> dict:
    """Where the block of frames f0 .. f0 + F - 1 reads: its pitch rows are the track at
    frames f0 - PITCH_LAG on, interpolated from CREPE at even frames. The blocks before
    it analysed up to frame L (its row is carried); this block analyses n more, L + 2 ..
    L + 2 n (the even frames up to f0 + F - PITCH_LAG, which the last frame's
    interpolation needs); offset = f0 - PITCH_LAG - L (0 or 1). Its input samples are
    lo .. hi - 1: from the first analysed CREPE window (centered on 64 (L + 2)) to the
    end of the last frame's lookahead."""
    L = (f0 - PITCH_LAG) // PITCH_STEP * PITCH_STEP
    G = (f0 + F - PITCH_LAG) // PITCH_STEP * PITCH_STEP
    return {"n": (G - L) // PITCH_STEP, "offset": f0 - PITCH_LAG - L,
            "lo": (L + PITCH_STEP) * HOP - FRAME // 2, "hi": (f0 + F - 1) * HOP + LOOKAHEAD}


def _host(values) -> array.array:
    """A readback as array('f') (natively it comes back as a numpy array)."""
    return values if isinstance(values, array.array) else array.array("f", values.tobytes())


class ToneStream:
    """Incremental tone transfer over one take (see the module docstring). octave and
    loudness_db are plain attributes: change them between pushes."""

    def __init__(self, model: ToneModel, octave: int = 0, loudness_db: float = 0.0):
        self.model = model
        self.octave, self.loudness_db = octave, loudness_db
        c = model.config
        self.delay_samples = c.latency                        # output index - input index
        self.latency_samples = LOOKAHEAD + self.delay_samples   # real-time algorithmic latency
        # input history: absolute samples [self.start, self.received); zeros before 0
        self.history = array.array("f", bytes(4 * (FRAME // 2 + 2 * HOP)))
        self.start = -(FRAME // 2 + 2 * HOP)     # the first block's first CREPE window (frame -2)
        self.received = 0
        self.frame = 0                  # next frame to compute
        self.flushed = False
        lo, hi = model.midi_range
        # the control logic's constants; its state lives on the GPU (pycore.ops.tone_controls)
        self.rules = Rules(voiced=VOICED, silence_db=SILENCE_DB, gate_frames=GATE_FRAMES, hold_frames=HOLD_FRAMES,
                           auto_frames=AUTO_FRAMES, level_frames=LEVEL_FRAMES, level_max_db=LEVEL_MAX_DB,
                           headroom_db=HEADROOM_DB, level_peak=LEVEL_PEAK, lo_midi=lo, hi_midi=hi,
                           ref_db=model.loudness_db, harmonics=c.n_harmonics, noise=c.n_noise, hop=HOP,
                           calibration=model.calibration["loudness_db"] if model.calibration else None,
                           cal_prior_frames=CAL_PRIOR_FRAMES, cal_frames=CAL_FRAMES,
                           pitch_band=pitch_band(model.calibration), reg_margin=REGISTER_MARGIN)
        self.knobs = None               # GPU tensors made on the first block (_fixed_tensors)
        self.plans = {}                 # frames per block -> (plan, input tensor, output tensor)
        self.frames_done = 0
        self.last_input_frame = None    # set by flush()
        self.tail_frames = 1 + -(-c.reverb_length // HOP)

    # -- input bookkeeping --------------------------------------------------------------

    def _ready_frames(self) -> int:
        """Frames f >= self.frame whose analysis windows are complete: the last sample
        frame f reads is 64 f + LOOKAHEAD - 1."""
        last = (self.received - LOOKAHEAD) // HOP      # largest f with 64 f + LOOKAHEAD <= received
        return max(0, last + 1 - self.frame)

    def _segment(self, lo: int, hi: int) -> array.array:
        """Absolute samples lo .. hi - 1 (zeros before 0 and after the received end)."""
        out = array.array("f")
        if lo < self.start:
            raise AssertionError("tone: history dropped too early")
        a, b = lo - self.start, min(hi, self.received) - self.start
        if b > a:
            out.extend(self.history[a:b])
        if hi - lo > len(out):
            out.extend(array.array("f", bytes(4 * (hi - lo - len(out)))))
        return out

    def _trim_history(self):
        """Keep what the next block reads: from its first CREPE window on."""
        keep_from = _geometry(self.frame, 1)["lo"]
        drop = keep_from - self.start
        if drop > 0:
            del self.history[:drop]
            self.start = keep_from

    # -- public API -------------------------------------------------------------------

    def submit(self, samples):
        """Feed 16 kHz mono samples and issue the GPU work of every frame that became
        computable, now; returns an awaitable of the same output dict as push() (see
        "Pipelined blocks" in the module docstring: several may be in flight, each is
        awaited once). A GPU error of a block (device lost, validation) is raised at its
        await; one found while issuing (a device already known lost) raises here."""
        if self.flushed:
            raise RuntimeError("tone: this take was flushed; start a new ToneStream")
        x = _as_f32(samples)
        self.history.extend(x)
        self.received += len(x)
        return self._issue(self._ready_frames())

    async def push(self, samples) -> dict:
        """Feed 16 kHz mono samples; returns the output of every frame that became
        computable (see the module docstring): submit() and its await."""
        return await self.submit(samples)

    async def flush(self) -> dict:
        """End of the take: the remaining frames (zeros after the last sample), then, with
        the output gated off, frames for the reverb's tail to ring out (TAIL_FRAMES)."""
        if self.flushed:
            return self._empty()
        self.last_input_frame = self.received // HOP          # the last frame touching the input
        total = self.last_input_frame + 1 + self.tail_frames
        pending = self._issue(max(0, total - self.frame))
        self.flushed = True
        return await pending

    def _empty(self) -> dict:
        e = array.array("f")
        return {"audio": e, "f0_hz": array.array("f"), "confidence": array.array("f"),
                "loudness_db": array.array("f"), "played_f0_hz": array.array("f")}

    def _issue(self, count: int):
        """Issue `count` frames in blocks of at most MAX_BLOCK_FRAMES; the awaitable of
        their joined output."""
        blocks = []
        while count > 0:
            n = min(count, MAX_BLOCK_FRAMES)
            blocks.append((n, self._start_block(n)))
            count -= n
        return self._gather(blocks)

    async def _gather(self, blocks) -> dict:
        """Await each block's readback in order and join their outputs (all of them are
        awaited, so that each gives its staging buffer back; the first error raises)."""
        result, error = self._empty(), None
        for F, pending in blocks:
            try:
                host = _host(await pending)
            except Exception as e:
                error = error or e
                continue
            n = F * HOP
            part = {"audio": host[:n], "f0_hz": host[n:n + F], "confidence": host[n + F:n + 2 * F],
                    "loudness_db": host[n + 2 * F:n + 3 * F], "played_f0_hz": host[n + 3 * F:]}
            for k in result:
                result[k].extend(part[k])
        if error is not None:
            raise error
        return result

    def _fixed_tensors(self):
        """The tensors the block plans read and update in place, made once per take before
        any recording (a plan's one rule: only their contents change between replays)."""
        m, dev = self.model, self.model.dev
        self.knobs = dev.tensor([1.0, 0.0, -1.0])
        self.knobs_set = None
        self.control_state = initial_state(dev, self.rules)
        n = LOUDNESS_N_FFT - HOP
        # the carried state as a list: GRU state, output history, the synth's tensors.
        # Two of them: a block reads one and writes the other (Plan.store), so that no
        # dispatch copies state; the second is made when the first plan records
        no_pitch = dev.tensor([0.0, 0.0])        # the pitch row before the take: no f0, no confidence
        self.carried = [[no_pitch, m.decoder.initial_state(), dev.tensor(bytes(4 * n), (n,))]
                        + m.synth.initial_state().tensors(), None]
        self.side = 0                   # which of the two holds the current state

    def _plan(self, F: int):
        """(plan, input, output) for a block of F frames from self.frame on, reading the
        carried state on self.side, recorded on first use: the block's whole GPU work,
        from its input samples to one buffer with the audio and the frame features. The
        new carried state (last pitch row, GRU, synthesizer, output history) is stored on
        the other side; the controls' state and the noise counter are updated in place.
        Which frames CREPE analyses depends on the first frame's parity: it is in the key."""
        g = _geometry(self.frame, F)
        key = (F, g["offset"], self.side)
        if key in self.plans:
            return self.plans[key]
        while len(self.plans) >= MAX_PLANS:               # offline pushes vary F: keep a few
            old = self.plans.pop(next(iter(self.plans)))
            old[0].release()
        m, dev = self.model, self.model.dev
        pitch0, h0, hist0, *synth0 = self.carried[self.side]
        synth0 = SynthState(*synth0)
        # one upload serves both: CREPE's windows of the analysed frames, and inside them
        # the loudness windows of the block's frames
        x = dev.empty((g["hi"] - g["lo"],))
        before = self.frame * HOP - LOUDNESS_N_FFT // 2 - g["lo"]
        after = g["hi"] - ((self.frame + F - 1) * HOP + LOUDNESS_N_FFT // 2)
        plan = dev.plan()
        with plan:
            decoded, n = [], g["n"]
            for s in range(0, n, m.crepe.max_batch):
                frames = crepe_frames(x, PITCH_STEP * HOP, start=s, count=min(m.crepe.max_batch, n - s), center=False)
                act = m.crepe(frames)
                frames.release()
                decoded.append(crepe_decode(act, 50.0, 2006.0, "local_average"))
                act.release()
            rows = None if not decoded else decoded[0] if len(decoded) == 1 else E.concat(decoded)
            fc, pitch = pitch_track(pitch0, rows, F, g["offset"])
            ld = loudness_op(E.pad(x, (-before, -after)), SAMPLE_RATE, SAMPLE_RATE // HOP, LOUDNESS_N_FFT,
                             center=False)
            dec_f0, dec_ld, gates, aux = tone_controls(fc, ld, self.knobs, self.control_state, self.rules)
            controls, h = m.decoder(dec_f0, dec_ld, h0)
            audio, state = m.synth.render(E.mul(controls, gates), synth0)
            # loudness of the synthesized output over the 512 samples ending at each frame's end
            oseg = E.concat([hist0, audio])
            measured = loudness_op(oseg, SAMPLE_RATE, SAMPLE_RATE // HOP, LOUDNESS_N_FFT, center=False)
            out = tone_level(audio, measured, ld, fc, aux, self.knobs, self.control_state, self.rules)
            self._store_state(plan, [pitch, h, E.pad(oseg, (-(F * HOP), 0))] + state.tensors())
        self.plans[key] = (plan, x, out)
        return self.plans[key]

    def _store_state(self, plan, new_state):
        """Store each new state tensor on the other side; one updated in place (the same
        tensor as this side's) is shared by both sides."""
        here = self.carried[self.side]
        if self.carried[1 - self.side] is None:           # the first recording: make the other side
            with self.model.dev.eager():
                self.carried[1 - self.side] = [old if new is old or old is None else self.model.dev.empty(old.shape)
                                               for new, old in zip(new_state, here)]
        there = self.carried[1 - self.side]
        for new, old, other in zip(new_state, here, there):
            if (new is old) != (other is old):
                raise AssertionError("tone: a state tensor is updated in place in one block and not in another")
            if old is not None and new is not old:
                plan.store(new, other)

    def _start_block(self, F: int):
        """Frames self.frame .. self.frame + F - 1: one upload of the input samples, one
        replay of the block's plan, one readback issued (Device.start_read; awaited by
        _gather)."""
        dev = self.model.dev
        if self.knobs is None:
            self._fixed_tensors()
        plan, x, out = self._plan(F)
        knobs = (2.0 ** int(self.octave), float(self.loudness_db),
                 -1.0 if self.last_input_frame is None else float(self.last_input_frame))
        if knobs != self.knobs_set:                     # live settings: an upload only when changed
            dev.write(self.knobs, array.array("f", knobs).tobytes())
            self.knobs_set = knobs
        g = _geometry(self.frame, F)
        dev.write(x, self._segment(g["lo"], g["hi"]).tobytes())
        plan.replay()
        pending = dev.start_read(out)
        self.side = 1 - self.side
        self.frame += F
        self._trim_history()
        self.frames_done += F
        return pending

    def release(self):
        """Give the take's plans and their GPU memory back (also done when the stream is
        garbage-collected, through the plans' tensors)."""
        for plan, _, _ in self.plans.values():
            plan.release()
        self.plans.clear()
