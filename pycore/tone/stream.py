"""Tone transfer: a sung or played melody in, the same melody on a trained instrument out.

    model = load_tone_model(dev, "ddsp-violin")            # DDSP decoder + synth + CREPE
    stream = ToneStream(model, octave=0, loudness_db=0.0)
    out = await stream.push(samples_16k)                   # any number of samples
    ... out["audio"], out["f0_hz"], out["confidence"], out["loudness_db"]
    out = await stream.flush()                             # end of the take

One engine serves the live page (site/tone-worker.py, blocks of 128 samples) and the
offline CLI (`stemtone tone`, pycore.tone.files.tone_file: blocks of a few seconds): the output does
not depend on how the input is cut into blocks, so streaming and offline rendering of
the same input agree to float32 rounding (tests/test_tone.py).

Per frame f (16 kHz, hop 64 samples, 250 frames per second), on the GPU:

  features   A-weighted loudness of the 512 samples centered on sample 64 f
             (pycore.ops.loudness, DDSP's compute_loudness), and CREPE f0 + confidence
             of the 1024 samples centered on sample 64 (f - 1), i.e. the pitch is read
             one frame (4 ms) late. That saves a hop of lookahead: frame f is ready once
             sample 64 f + 447 has arrived (LOOKAHEAD = 448 samples, 28 ms) instead of
             64 f + 511.
  controls   on the host (a few numbers per frame), the same tone-transfer adjustments as
             Magenta's DDSP demo:
             - voiced = confidence >= VOICED (0.5). Unvoiced frames keep the last voiced
               f0 (no random pitch jumps in breaths or consonants). A note carries on
               through up to HOLD_FRAMES (100 ms) of unvoiced frames, as a player's note
               carries through a singer's consonant; after that the harmonic amplitude
               is gated off, so breaths, noise and unpitched input give the instrument's
               filtered noise only. The loudness is left as it is (Magenta's demo also
               lowers unvoiced frames by 20 dB; measured on real singing that makes the
               output's loudness follow the input's worse, 0.895 against 0.917
               correlation, for no audible gain once the harmonics are gated);
             - f0 times 2**octave, then folded by whole octaves into the instrument's
               trained range (manifest "midi_range"), so a bass voice on a flute plays
               an octave or two up instead of an untrained, out-of-range tone;
             - loudness + loudness_db (user trim), then moved to the level the model was
               trained at: the decoder sees the input's loudness shifted by
               (the model's voiced median, manifest "loudness_db") - (the running mean
               of the input's voiced loudness: a plain mean over the first AUTO_FRAMES
               voiced frames, 3 s, then exponential over that many), as Magenta's demo
               auto-adjusts it; a loud singer on a quiet guitar otherwise drives the
               model far outside what it learned. The level stage below restores the
               input's own loudness;
             - input below SILENCE_DB (-70 dB) gates the whole output off (silence in,
               silence out: the decoder never saw true silence in training).
  decoder    pycore.models.ddsp.Decoder (GRU state carried across blocks)
  synth      pycore.models.ddsp.Synth (oscillator phase, noise and reverb tails carried)
  level      the output's loudness follows the input's. The instrument models learned
             their loudness from a few minutes of sampled notes (a plucked guitar
             decays, a sampled saxophone is louder on some notes than others), so a
             singer's dynamics do not always come out as sung. While a note plays, a slow
             gain (one-pole over LEVEL_FRAMES = 4 frames, within +-LEVEL_MAX_DB = 12 dB
             of undoing the auto-adjust shift)
             moves the synthesized output's A-weighted loudness, measured on the GPU over
             the last 512 output samples, toward the input's over the same 512 samples
             (the input frame LEVEL_LAG = 4 frames earlier) minus HEADROOM_DB (6 dB, so
             that a loud singer does not drive a peakier instrument into the limit); it
             holds while no note plays. A frame whose peak would pass LEVEL_PEAK (0.95)
             gets no more gain than keeps it there.

Timing. The output is a stream of its own: push() returns, in order, the samples of
every frame that became computable. Output sample n is the rendering of input sample
n - delay_samples (delay_samples = the synthesizer's one hop, 64): to line the output
up with the input offline, drop its first delay_samples. In real time, output sample n
exists once the input up to the end of its frame's analysis window has arrived; the
worst case over a frame is latency_samples = LOOKAHEAD + delay_samples = 512 samples (32 ms) of
algorithmic latency, to which the caller's block and audio buffers add (the page states
its breakdown). flush() renders the frames left at the end of the take, then lets the
reverb ring out with the output gated off: a take's output is delay_samples +
len(input), rounded up to whole frames, + the reverb's length.

Browser-safe: no numpy (array('f') on the host; numpy arrays are accepted natively).
"""

from __future__ import annotations

import array
import json
import math

from ..models.crepe import Crepe
from ..ops import elementwise as E
from ..ops.loudness import loudness_db as loudness_op
from ..ops.pitch import FRAME, crepe_decode, crepe_frames
from .controls import (AUTO_FRAMES, DEFAULT_RANGE, GATE_FRAMES, HEADROOM_DB, HOLD_FRAMES, LEVEL_FRAMES, LEVEL_MAX_DB,
                       LEVEL_PEAK, SILENCE_DB, VOICED, fold_f0)
from .features import HOP, LOUDNESS_N_FFT, SAMPLE_RATE, load_crepe

LOOKAHEAD = FRAME // 2 - HOP      # 448: CREPE window of frame f - 1 ends at 64 f + 448
LEVEL_LAG = LOUDNESS_N_FFT // (2 * HOP)   # 4: the causal output window centers this many frames back
MAX_BLOCK_FRAMES = 1000           # frames per GPU pass (4 s); longer pushes are split


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
                 loudness_db=None):
        self.dev, self.config, self.decoder, self.synth, self.crepe = dev, config, decoder, synth, crepe
        self.name, self.instrument = name, instrument
        self.loudness_db = loudness_db      # trained level (voiced median), None: no auto-adjust
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

    entry = resolve(name, manifest)
    src = weights if weights is not None else weights_path(entry["name"])
    try:
        config, decoder, synth = ddsp.load(dev, src, dtype=dtype)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{entry['name']}: not a usable DDSP weights file ({e})") from e
    if isinstance(crepe_weights, str):
        from ..weights.safetensors import load as load_st

        crepe_weights = load_st(crepe_weights)
    elif isinstance(crepe_weights, (bytes, bytearray, memoryview)):
        from ..weights.safetensors import load as load_st

        crepe_weights = load_st(bytes(crepe_weights))
    crepe = load_crepe(dev, "crepe-tiny", weights=crepe_weights)
    return ToneModel(dev, config, decoder, synth, crepe, entry["name"], entry.get("instrument", ""),
                     entry.get("midi_range"), entry.get("loudness_db"))


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
    if any(v != v or v in (math.inf, -math.inf) for v in x):
        x = array.array("f", (0.0 if (v != v or v in (math.inf, -math.inf)) else v for v in x))
    return x


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
        self.history = array.array("f", bytes(4 * (FRAME // 2 + HOP)))
        self.start = -(FRAME // 2 + HOP)
        self.received = 0
        self.frame = 0                  # next frame to compute
        self.flushed = False
        lo, hi = model.midi_range
        self.hold_f0 = midi_to_hz((lo + hi) / 2)   # f0 for unvoiced frames before any voiced one
        self.harm_gate = 0.0            # smoothed gates, carried across blocks
        self.unvoiced_run = HOLD_FRAMES # unvoiced frames since the last voiced one (none yet)
        self.out_gate = 0.0
        self.h = None                   # GRU state
        self.out_hist = None            # the last LOUDNESS_N_FFT - HOP synthesized samples (GPU)
        self.ld_lag = array.array("f", [-80.0] * LEVEL_LAG)   # input loudness of the last frames
        self.gain_db = 0.0              # output level correction
        self.playing = array.array("f") # harmonic gate per frame of the current block
        self.shifts = array.array("f")  # auto-adjust shift (dB) per frame of the current block
        self.sung_db = 0.0              # running mean of the input's voiced loudness
        self.sung_frames = 0
        self.synth_state = None
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
        """Keep what the next frame's windows read: from CREPE's window start of frame
        self.frame - 1 (the earliest sample any future frame needs) on."""
        keep_from = (self.frame - 1) * HOP - FRAME // 2
        drop = keep_from - self.start
        if drop > 0:
            del self.history[:drop]
            self.start = keep_from

    # -- public API -------------------------------------------------------------------

    async def push(self, samples) -> dict:
        """Feed 16 kHz mono samples; returns the output of every frame that became
        computable (see the module docstring)."""
        if self.flushed:
            raise RuntimeError("tone: this take was flushed; start a new ToneStream")
        x = _as_f32(samples)
        self.history.extend(x)
        self.received += len(x)
        return await self._run(self._ready_frames())

    async def flush(self) -> dict:
        """End of the take: the remaining frames (zeros after the last sample), then, with
        the output gated off, frames for the reverb's tail to ring out (TAIL_FRAMES)."""
        if self.flushed:
            return self._empty()
        self.last_input_frame = self.received // HOP          # the last frame touching the input
        total = self.last_input_frame + 1 + self.tail_frames
        out = await self._run(max(0, total - self.frame))
        self.flushed = True
        return out

    def _empty(self) -> dict:
        e = array.array("f")
        return {"audio": e, "f0_hz": array.array("f"), "confidence": array.array("f"),
                "loudness_db": array.array("f")}

    async def _run(self, count: int) -> dict:
        result = self._empty()
        while count > 0:
            n = min(count, MAX_BLOCK_FRAMES)
            part = await self._block(n)
            for k in result:
                result[k].extend(part[k])
            count -= n
        return result

    async def _block(self, F: int) -> dict:
        """Frames self.frame .. self.frame + F - 1: features, controls, decoder, synth."""
        m, dev = self.model, self.model.dev
        f0_ = self.frame
        # CREPE of frames f - 1 (windows centered on 64 (f - 1)), loudness of frames f
        seg = dev.tensor(self._segment((f0_ - 1) * HOP - FRAME // 2, (f0_ + F - 2) * HOP + FRAME // 2))
        decoded = []                     # all GPU work is queued before the first readback
        for s in range(0, F, m.crepe.max_batch):
            frames = crepe_frames(seg, HOP, start=s, count=min(m.crepe.max_batch, F - s), center=False)
            act = m.crepe(frames)
            frames.release()
            decoded.append(crepe_decode(act, 50.0, 2006.0, "local_average"))
            act.release()
        seg.release()
        half = LOUDNESS_N_FFT // 2
        lseg = dev.tensor(self._segment(f0_ * HOP - half, (f0_ + F - 1) * HOP + half))
        ld_t = loudness_op(lseg, SAMPLE_RATE, SAMPLE_RATE // HOP, LOUDNESS_N_FFT, center=False)
        lseg.release()
        f0s, confs = array.array("f"), array.array("f")
        for t in decoded:
            fc = _host(await t.read())
            f0s.extend(fc[0::2])
            confs.extend(fc[1::2])
        ld = _host(await ld_t.read())
        self.frame += F
        self._trim_history()

        # controls on the host
        dec_f0, dec_ld, gates = self._controls(f0_, f0s, confs, ld)
        f0_t, ld_t = dev.tensor(dec_f0), dev.tensor(dec_ld)
        controls, self.h = m.decoder(f0_t, ld_t, self.h)
        gated = E.mul(controls, dev.tensor(gates, controls.shape))
        audio_t, self.synth_state = m.synth.render(gated, self.synth_state)

        # loudness of the synthesized output over the 512 samples ending at each frame's end
        if self.out_hist is None:
            n = LOUDNESS_N_FFT - HOP
            self.out_hist = dev.tensor(bytes(4 * n), (n,))
        oseg = E.concat([self.out_hist, audio_t])
        measured_t = loudness_op(oseg, SAMPLE_RATE, SAMPLE_RATE // HOP, LOUDNESS_N_FFT, center=False)
        self.out_hist = E.pad(oseg, (-(F * HOP), 0))
        audio = _host(await audio_t.read())
        measured = _host(await measured_t.read())
        self._level(audio, measured, ld)
        self.frames_done += F
        return {"audio": audio, "f0_hz": f0s, "confidence": confs, "loudness_db": ld}

    def _level(self, audio, measured, lds):
        """Scale each frame of `audio` in place by the level correction (see the module
        docstring); gains ramp linearly across a frame, so there are no steps."""
        targets = self.ld_lag + lds             # input loudness of frames f - LEVEL_LAG
        self.ld_lag = targets[len(targets) - LEVEL_LAG:]
        trim = float(self.loudness_db)
        rate = 1.0 - math.exp(-1.0 / LEVEL_FRAMES)
        for k in range(len(measured)):
            target, got = targets[k] + trim - HEADROOM_DB, measured[k]
            before = self.gain_db
            if self.playing[k] >= 1.0 and target > SILENCE_DB + 20 and got > SILENCE_DB:
                undo = -self.shifts[k]
                want = max(undo - LEVEL_MAX_DB, min(undo + LEVEL_MAX_DB, target - got))
                self.gain_db += (want - self.gain_db) * rate
            g0, g1 = 10.0 ** (before / 20.0), 10.0 ** (self.gain_db / 20.0)
            if g0 == g1 == 1.0:
                continue
            base = k * HOP
            peak = max(abs(v) for v in audio[base:base + HOP])
            limit = max(1.0, LEVEL_PEAK / peak) if peak > 0 else g1   # never turn a note into a blast
            if g1 > limit:
                g1, self.gain_db = limit, 20.0 * math.log10(limit)
            g0 = min(g0, limit)
            step = (g1 - g0) / HOP
            for j in range(HOP):
                audio[base + j] *= g0 + step * (j + 1)

    def _controls(self, first, f0s, confs, lds):
        """(decoder f0 [F], decoder loudness [F], controls multiplier [F, C]) from the
        frame features; updates the carried f0 hold and gates."""
        c = self.model.config
        lo, hi = self.model.midi_range
        K, M = c.n_harmonics, c.n_noise
        shift = 2.0 ** int(self.octave)
        trim = float(self.loudness_db)
        step = 1.0 / GATE_FRAMES
        dec_f0, dec_ld, gates = array.array("f"), array.array("f"), array.array("f")
        F = len(f0s)
        self.playing, self.shifts = array.array("f"), array.array("f")
        ref = self.model.loudness_db
        for i in range(F):
            f0, conf, ld = float(f0s[i]), float(confs[i]), float(lds[i])
            voiced = conf >= VOICED and math.isfinite(f0) and f0 > 0
            if voiced:
                self.hold_f0 = fold_f0(f0 * shift, lo, hi)
                self.unvoiced_run = 0
                if ld > -50:
                    self.sung_frames += 1
                    self.sung_db += (ld - self.sung_db) / min(self.sung_frames, AUTO_FRAMES)
            else:
                self.unvoiced_run = min(self.unvoiced_run + 1, HOLD_FRAMES)
            playing = self.unvoiced_run < HOLD_FRAMES          # voiced, or a note carrying on
            auto = ref - self.sung_db if ref is not None and self.sung_frames else 0.0
            self.shifts.append(auto)
            loud = ld + trim + auto
            closing = self.last_input_frame is not None and first + i > self.last_input_frame
            want_h = 1.0 if playing and not closing else 0.0
            want_o = 1.0 if ld > SILENCE_DB and not closing else 0.0
            self.harm_gate += max(-step, min(step, want_h - self.harm_gate))
            self.out_gate += max(-step, min(step, want_o - self.out_gate))
            if closing:
                self.harm_gate = self.out_gate = 0.0
            dec_f0.append(self.hold_f0)
            dec_ld.append(max(-80.0, loud))           # the loudness floor the models were trained on
            g = self.out_gate
            self.playing.append(self.harm_gate * g)
            row = array.array("f", [1.0, g * self.harm_gate]) + array.array("f", [1.0]) * K \
                + array.array("f", [g]) * M
            gates.extend(row)
        return dec_f0, dec_ld, gates
