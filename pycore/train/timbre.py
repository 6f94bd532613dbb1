"""Build the timbre check (pycore.tone.timbre) from renders the instrument models were
not trained on, and measure its ceiling.

    python -m pycore.train.timbre [--out weights/timbre-check.safetensors]

Setup (Debian, once; a developer tool, not part of `make test`):

    apt-get install -y fluidsynth fluid-soundfont-gm timgm6mb-soundfont \\
        musescore-general-soundfont-small csound-soundfont

Reference renders: melodies of pycore.train.data (the instrument's range, articulation,
dynamics and vibrato), rendered by fluidsynth with four General MIDI soundfonts:

    TimGM6mb.sf2              (timgm6mb-soundfont, GPL-2)
    MuseScore_General_Lite.sf3 (musescore-general-soundfont-small, MIT)
    sf_GMbank.sf2             (csound-soundfont, LGPL-2.1)
    FluidR3_GM.sf2            (fluid-soundfont-gm, MIT): the models' training soundfont,
                              with melody indices from 100 on; the models' data sets use
                              indices 0..19, so none of these renders was trained on

and the programs of each class (related programs count for their instrument: a viola
and a fiddle are violins to a listener; an alto model should still read as a saxophone
next to a tenor); "other" is a set of GM programs that are none of the five, among them
choir and voice (the singer's own timbre must not pass for an instrument). Melodies
100..100 + FIT - 1 fit the classifier; 110..110 + TEST - 1 measure it (the ceiling).
Every (soundfont, program, melody) of one soundfont is one MIDI file, one fluidsynth
call, cut apart afterwards (a soundfont loads once; MuseScore's .sf3 takes seconds).

The synthetic class: bare oscillators (pycore.tone.timbre.oscillator: sine, sawtooth,
square, triangle, or a random static spectrum against harmonic number; half of them with
white noise under the tone's envelope, -40..+10 dB) driven by made-up voice contours (`voice_contour`:
phrases, syllables, slides, scoops, vibrato, drift, swells, consonant dips; general traits
of singing, nothing measured on a recording) folded into each instrument's range as the
engine folds a singer. It is what the sine and sawtooth controls are, so a window like
them is labelled "synthetic"; SYNTH_PER_RANGE segments per instrument range and melody
index, seeded by soundfont slot and index (leaving a soundfont out leaves its synthetic
segments out too). With them, UNTRAINED_PER_RANGE segments of the instrument models' own
DDSP synthesizer with an untrained decoder (random weights, `untrained_ddsp_audio`) on
the same contours: a harmonic-plus-noise buzz whose spectrum moves with the controls,
what a model with shuffled weights plays. (Without them the check read 4 of 20 such
segments as an instrument, and a retrained violin model with its weights shuffled as a
violin.)

Classifier: scikit-learn's MLPClassifier (one hidden layer of 128 ReLUs, L2 penalty
0.1, Adam, early stopping on 10 % of the fitting windows, seed 0) on standardized window
features (pycore.tone.timbre.window_features), classes balanced by repeating windows.
(A linear discriminant on the same features reached 0.28-0.79 per class on held-out
renders, with 4 fitting melodies; the network, with 8, 0.83-0.95, and 0.52 on the
violin with 4.) Verification (open set): each class's centroid and
covariance (shrunk by SHRINK towards its mean variance) in the standardized space; the
class radius is the VERIFY_QUANTILE percentile of the class's own fitting windows'
Mahalanobis distances; a window labelled as a class beyond its radius is "none". Its
parameters are stored in float32 in weights/timbre-check.safetensors with the ceiling
and the soundfonts' packages, licenses and sha256 in the metadata ("info").
Renders are kept with --cache DIR (keyed by the soundfont's sha256 and the MIDI), so a
refit skips fluidsynth.

Ceiling figures: the share of held-out windows of each class labelled as that class,
(a) over all four soundfonts, (b) per soundfont, and (c) leaving each soundfont out of
the fit entirely (how the check generalizes to a soundfont it has not seen: the case of
a model's output); and (d) for the held-out synthetic segments, per waveform, the share
of windows labelled as an instrument and the segments an instrument wins (the controls'
failure, measured without a singer).

Native only (numpy, scikit-learn, soundfile, the fluidsynth program; torch for the untrained
synthesizer).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from ..tone import timbre as T
from . import data as D

SF_DIR2, SF_DIR3 = "/usr/share/sounds/sf2", "/usr/share/sounds/sf3"
SOUNDFONTS = {
    "TimGM6mb": f"{SF_DIR2}/TimGM6mb.sf2",
    "MuseScore_General_Lite": f"{SF_DIR3}/MuseScore_General_Lite.sf3",
    "csound_GMbank": f"{SF_DIR2}/sf_GMbank.sf2",
    "FluidR3_GM": f"{SF_DIR2}/FluidR3_GM.sf2",
}
SOURCES = {                       # soundfont: (Debian package, license); sha256 measured at build time
    "TimGM6mb": ("timgm6mb-soundfont", "GPL-2"),
    "MuseScore_General_Lite": ("musescore-general-soundfont-small", "MIT"),
    "csound_GMbank": ("csound-soundfont", "LGPL-2.1"),
    "FluidR3_GM": ("fluid-soundfont-gm", "MIT"),
}
PROGRAMS = {                      # GM programs, 0-based
    "violin": (40, 41, 110),                    # violin, viola, fiddle
    "flute": (73, 72),                          # flute, piccolo
    "trumpet": (56, 59),                        # trumpet, muted trumpet
    "saxophone": (64, 65, 66, 67),              # soprano, alto, tenor, baritone
    "guitar": (29, 30),                         # overdriven, distortion
    "other": (0, 19, 21, 22, 24, 52, 53, 60, 68, 70, 71, 80),
    # piano, church organ, accordion, harmonica, nylon guitar, choir aahs, voice oohs,
    # french horn, oboe, bassoon, clarinet, square lead (a bare oscillator: no sawtooth lead,
    # which would be the sawtooth control itself)
}
RANGES = ("violin", "saxophone", "flute", "trumpet")   # melody ranges the "other" programs cycle through
FIT, TEST = 8, 2                  # melodies per program: fitting, ceiling (4 fitting melodies: violin 0.52)
FIT_FROM, TEST_FROM = 100, 110
SECONDS = 10.0
GAP = 1.0                         # silence between segments of one render
VERIFY_QUANTILE = 99.5            # class radius: this percentile of the class's fitting windows' distances
SHRINK = 0.9                      # class covariance: (1 - SHRINK) * sample + SHRINK * mean variance * I
HIDDEN, ALPHA = 128, 0.1          # the network's hidden units and L2 penalty
SYNTHETIC = "synthetic"
SYNTH_PER_RANGE = 2               # synthetic segments per melody index and instrument range
UNTRAINED = "untrained-ddsp"      # the synthetic class's DDSP synthesizer with an untrained decoder
UNTRAINED_PER_RANGE = 1           # of those per melody index and instrument range


def segments(labels=PROGRAMS, indices=()) -> list:
    """[(label, program, melody index, Melody)] of one soundfont's render."""
    out = []
    for label, programs in labels.items():
        for k, program in enumerate(programs):
            for index in indices:
                rng = label if label in D.INSTRUMENTS else RANGES[(k + index) % len(RANGES)]
                m = D.melody(rng, index, SECONDS)
                m.program = program
                out.append((label, program, index, m))
    return out


def render_segments(soundfont: str, segs: list, gain: float = 0.8) -> list:
    """Audio of each segment: all of them in one MIDI file (each GAP seconds after the
    previous one ends, with its own program change and expression), one fluidsynth call."""
    events, starts, t = [], [], 0.0
    for _, _, _, m in segs:
        starts.append(t)
        offset = round(t * D.TICKS_PER_SECOND)
        events += [(tick + offset, msg) for tick, msg in D.midi_events(m)]
        t += m.duration + GAP
    events.sort(key=lambda e: e[0])            # stable: each segment's own order is kept
    audio = D.render(D.midi_bytes(events), gain, soundfont=soundfont)
    out = []
    for (_, _, _, m), s in zip(segs, starts):
        a, b = int(s * D.SAMPLE_RATE), int((s + m.duration + GAP / 2) * D.SAMPLE_RATE)
        out.append(audio[a:b])
    return out


def cached_render(soundfont: str, segs: list, cache=None) -> list:
    """render_segments, kept in cache/<soundfont file>-<key>.npz when a cache folder is
    given (the key hashes the soundfont's sha256, the segments' MIDI and the gap)."""
    if not cache:
        return render_segments(soundfont, segs)
    import hashlib

    h = hashlib.sha256(f"{sha256_file(soundfont)}/{GAP}".encode())
    for _, _, _, m in segs:
        h.update(D.midi_bytes(D.midi_events(m)))
    path = Path(cache, f"{Path(soundfont).stem}-{h.hexdigest()[:16]}.npz")
    if path.exists():
        with np.load(path) as z:
            return [z[f"s{i}"] for i in range(len(segs))]
    audio = render_segments(soundfont, segs)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path.with_suffix(".tmp.npz"), **{f"s{i}": a for i, a in enumerate(audio)})
    os.replace(path.with_suffix(".tmp.npz"), path)
    return audio


_SHA = {}


def sha256_file(path: str) -> str:
    import hashlib

    if path not in _SHA:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA[path] = h.hexdigest()
    return _SHA[path]


# --------------------------------------------------------------------------- the synthetic class


def voice_contour(rng, seconds: float = SECONDS, hop_s: float = D.HOP / D.SAMPLE_RATE):
    """(f0_hz, confidence, loudness_db) at 250 frames per second of a made-up singer:
    phrases of 1.5-5 s between breaths of 0.2-1.2 s; syllables of 0.12-0.8 s on a random
    walk of notes (a voice's range, MIDI 40-76, each note up to 30 cents off), joined by
    slides of 30-250 ms, sometimes scooped from below; vibrato of 4.5-7 Hz and up to
    +-0.8 semitone on notes longer than 0.4 s, faded in after 0.1-0.4 s; a slow pitch
    drift of up to 25 cents; a phrase level of -40..-12 dB with a swell or fade of up to
    +-10 dB, each syllable's attack, consonant dips of 3-25 dB between syllables
    (sometimes unvoiced, 30-120 ms), tremolo of up to 3 dB with the vibrato; and what a
    pitch tracker adds: up to 10 cents of frame-to-frame f0 noise, up to 1.5 dB of
    loudness flutter smoothed over 20-80 ms, and up to 10 short voicing dropouts
    (4-48 ms) a second. Drawn from `rng` (numpy Generator) alone: general traits of
    singing and of its analysis, nothing measured on a recording."""
    n = int(round(seconds / hop_s))
    t = np.arange(n) * hop_s
    midi, level = np.full(n, np.nan), np.full(n, -120.0)
    conf = np.zeros(n)
    pos, pitch = rng.uniform(0.1, 0.5), rng.uniform(45, 70)
    while pos < seconds:
        length = rng.uniform(1.5, 5.0)
        end = min(seconds, pos + length)
        base = rng.uniform(-40, -12)
        swell = rng.uniform(-10, 10)
        s = pos
        prev = None
        while s < end - 0.05:
            dur = min(rng.uniform(0.12, 0.8), end - s)
            pitch = float(np.clip(pitch + rng.choice([0, 1, 2, 2, 3, 4, 5, 7]) * rng.choice([-1, 1]), 40, 76))
            target = pitch + rng.uniform(-0.3, 0.3)
            i = (t >= s) & (t < s + dur)
            u = t[i] - s
            curve = np.full(u.shape, target)
            glide = rng.uniform(0.03, 0.25)
            start = prev if prev is not None else (target - rng.uniform(0.5, 2.0) if rng.random() < 0.3 else target)
            w = np.clip(u / glide, 0, 1)
            curve += (start - target) * 0.5 * (1 + np.cos(np.pi * w))
            trem = np.zeros(u.shape)
            if dur > 0.4:
                rate, depth, onset = rng.uniform(4.5, 7.0), rng.uniform(0.0, 0.8), rng.uniform(0.1, 0.4)
                fade = np.clip((u - onset) / 0.3, 0, 1)
                vib = np.sin(2 * np.pi * rate * u + rng.uniform(0, 6.3))
                curve += depth * fade * vib
                trem = rng.uniform(0, 3) * fade * vib
            env = base + swell * (t[i] - pos) / max(end - pos, 1e-3)
            attack = rng.uniform(0.02, 0.08)
            env = env - rng.uniform(3, 25) * np.clip(1 - u / attack, 0, 1) + trem
            midi[i], level[i], conf[i] = curve, env, 1.0
            if prev is not None and rng.random() < 0.3:          # an unvoiced consonant before the syllable
                gap = (t >= s) & (t < s + rng.uniform(0.03, 0.12))
                conf[gap] = 0.0
            prev = target
            s += dur
        pos = end + rng.uniform(0.2, 1.2)
    drift = np.cumsum(rng.normal(0, 1, n))
    drift = np.convolve(drift - drift.mean(), np.ones(25) / 25, mode="same")
    drift *= rng.uniform(0, 0.25) / (np.abs(drift).max() + 1e-9)
    midi = midi + drift + rng.normal(0, rng.uniform(0, 0.1), n)          # tracker noise: 0-10 cents a frame
    smooth = int(rng.integers(5, 21))
    flutter = np.convolve(rng.normal(0, 1, n), np.ones(smooth) / np.sqrt(smooth), mode="same")   # unit variance
    level = level + flutter * rng.uniform(0, 1.5)
    for _ in range(rng.poisson(rng.uniform(0, 10) * seconds)):         # the tracker's confidence dipping
        at = int(rng.integers(0, n))
        conf[at:at + int(rng.integers(1, 13))] = 0.0
    f0 = np.where(np.isnan(midi), 0.0, 440.0 * 2 ** ((np.nan_to_num(midi, nan=69.0) - 69) / 12))
    return f0, conf, level


def synthetic_audio(rng, instrument: str, seconds: float = SECONDS):
    """A bare oscillator on a voice contour, folded into the instrument's range as the
    engine folds a singer: one of pycore.tone.timbre.WAVEFORMS or a random static
    spectrum (harmonic k at k^-p, p 0.3-2.5, each harmonic +-0..6 dB off); half of them
    with white noise under the same envelope, from 40 dB below the tone to 10 dB above."""
    inst = D.INSTRUMENTS[instrument]
    f0, conf, ld = voice_contour(rng, seconds)
    kind = rng.choice(T.WAVEFORMS + ("spectrum",))
    amps = None
    if kind == "spectrum":
        k = np.arange(1, 201)
        amps = k ** -rng.uniform(0.3, 2.5) * 10 ** (rng.uniform(0, 6) * rng.standard_normal(len(k)) / 20)
    x = T.oscillator(f0, conf, ld, (inst.low, inst.high), "sine" if amps is not None else str(kind), amps)
    x = x.astype(np.float64)
    if rng.random() < 0.5:
        env = np.sqrt(np.convolve(x ** 2, np.ones(256) / 256, mode="same"))
        x = x + env * rng.standard_normal(len(x)) * 10 ** (rng.uniform(-40, 10) / 20)
    x = np.concatenate([x, np.zeros(int(GAP / 2 * T.SAMPLE_RATE))])
    return (0.5 * x / (np.abs(x).max() + 1e-9)).astype(np.float32), str(kind)


def untrained_ddsp_audio(rng, instrument: str, seconds: float = SECONDS):
    """The instrument models' own synthesizer (pycore.train.ddsp_torch at CONFIG's sizes:
    decoder, harmonic-plus-noise synthesis, reverb) with a decoder that learned nothing,
    on a voice contour folded into the instrument's range (the last voiced f0 held; the
    loudness moved by -5..+15 dB, towards the calibrated input's levels) and gated to the
    voiced frames over GATE_FRAMES. Weights: each tensor as torch initializes it, times
    a gain of 0.5..4 (log-uniform, per tensor); layer norms' gains 1 + N(0, 0.05) and
    offsets N(0, 0.05); the reverb a noise burst at -80..-20 dB decaying with a time
    constant of 0.05..10 s (10 s: flat over its 0.5 s), or none (one in four). What a
    model with untrained or shuffled weights sounds like, drawn from `rng` alone: no
    trained model is used."""
    import torch

    from .ddsp_torch import CONFIG, DDSP

    inst = D.INSTRUMENTS[instrument]
    f0, conf, ld = voice_contour(rng, seconds)
    f0s, gates = T.held_f0_and_gate(f0, conf, (inst.low, inst.high))
    with torch.random.fork_rng():
        torch.manual_seed(int(rng.integers(2 ** 62)))
        model = DDSP(CONFIG)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name == "reverb.ir":
                    t = torch.arange(len(p), dtype=torch.float64) / CONFIG.sample_rate
                    burst = np.exp(-t.numpy() / np.exp(rng.uniform(np.log(0.05), np.log(10.0))))
                    level = 10 ** (rng.uniform(-80, -20) / 20) if rng.random() < 0.75 else 0.0
                    p.copy_(torch.from_numpy(rng.standard_normal(len(p)) * burst * level))
                elif ".norm." in name:
                    p.copy_(torch.from_numpy(rng.normal(1.0 if name.endswith("weight") else 0.0, 0.05, p.shape)))
                else:
                    p.mul_(float(np.exp(rng.uniform(np.log(0.5), np.log(4.0)))))
            controls, _ = model(torch.tensor(f0s[None], dtype=torch.float32),
                                torch.tensor(ld[None] + rng.uniform(-5, 15), dtype=torch.float32))
            noise = torch.from_numpy(rng.uniform(-1, 1, (1, len(f0s) * CONFIG.hop)).astype(np.float32))
            x = model.synthesize(controls, noise)[0].double().numpy()
    x = x * np.interp(np.arange(len(x)) / CONFIG.hop, np.arange(len(gates)), gates)
    x = np.concatenate([x, np.zeros(int(GAP / 2 * T.SAMPLE_RATE))])
    return (0.5 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def synthetic_rows(slot: int, name: str, indices) -> list:
    """Feature rows of the synthetic class for one soundfont's slot (seeded by slot and
    melody index, so leaving a soundfont out leaves its synthetic segments out too)."""
    rows = []
    for index, split in indices:
        for k, instrument in enumerate(D.INSTRUMENTS):
            for j in range(SYNTH_PER_RANGE):
                audio, kind = synthetic_audio(np.random.default_rng([slot, index, k, j]), instrument)
                feats, _ = T.window_features(audio)
                rows.append({"soundfont": name, "label": SYNTHETIC, "program": kind, "split": split,
                             "features": feats})
            for j in range(UNTRAINED_PER_RANGE):
                audio = untrained_ddsp_audio(np.random.default_rng([slot, index, k, SYNTH_PER_RANGE + j]), instrument)
                rows.append({"soundfont": name, "label": SYNTHETIC, "program": UNTRAINED, "split": split,
                             "features": T.window_features(audio)[0]})
    return rows


def reference_features(soundfonts=SOUNDFONTS, labels=PROGRAMS, fit=FIT, test=TEST, cache=None, log=print) -> list:
    """[{"soundfont", "label", "program", "split", "features" [W, FEATURES]}] of every
    render, and of the synthetic class (its "program" is the waveform)."""
    rows = []
    indices = [("fit", FIT_FROM + i) for i in range(fit)] + [("test", TEST_FROM + i) for i in range(test)]
    for slot, (name, path) in enumerate(soundfonts.items()):
        t0 = time.time()
        segs = segments(labels, [i for _, i in indices])
        split = {i: s for s, i in indices}
        for (label, program, index, _), audio in zip(segs, cached_render(path, segs, cache)):
            feats, _ = T.window_features(audio)
            rows.append({"soundfont": name, "label": label, "program": program, "split": split[index],
                         "features": feats})
        rows += synthetic_rows(slot, name, [(i, s) for s, i in indices])
        log(f"{name}: {len(segs)} segments rendered and analyzed, synthetic added, in {time.time() - t0:.0f} s")
    return rows


def _stack(rows, labels):
    x = np.concatenate([r["features"] for r in rows])
    y = np.concatenate([np.full(len(r["features"]), labels.index(r["label"])) for r in rows])
    return x, y


def balanced(x, y):
    """Rows repeated so that every class has as many as the largest (the "other" class
    has many programs; unbalanced, the network would lean towards it)."""
    n = np.bincount(y).max()
    idx = np.concatenate([np.resize(np.flatnonzero(y == i), n) for i in np.unique(y)])
    return x[idx], y[idx]


def class_precision(z):
    """Inverse of the class's covariance shrunk towards its mean variance (SHRINK)."""
    c = np.cov(z, rowvar=False)
    c = (1 - SHRINK) * c + SHRINK * np.trace(c) / len(c) * np.eye(len(c))
    return np.linalg.inv(c)


def fit(rows, labels=tuple(PROGRAMS) + (SYNTHETIC,), info=None, seed=0, quantile=VERIFY_QUANTILE) -> T.TimbreCheck:
    """A TimbreCheck fitted on rows (reference_features' "fit" split or any subset)."""
    from sklearn.neural_network import MLPClassifier

    labels = list(labels)
    x, y = _stack(rows, labels)
    mean, scale = x.mean(0), x.std(0) + 1e-9
    z = (x - mean) / scale
    net = MLPClassifier((HIDDEN,), alpha=ALPHA, max_iter=300, early_stopping=True, n_iter_no_change=10,
                        random_state=seed).fit(*balanced(z, y))
    centroids = np.stack([z[y == i].mean(0) for i in range(len(labels))])
    precision = np.stack([class_precision(z[y == i]) for i in range(len(labels))])
    check = T.TimbreCheck(labels, mean, scale, net.coefs_[0], net.intercepts_[0], net.coefs_[1],
                          net.intercepts_[1], centroids, precision, np.full(len(labels), np.inf), info)
    set_radii(check, x, y, quantile)
    return check


def set_radii(check: T.TimbreCheck, x, y, quantile=VERIFY_QUANTILE):
    """Each class's radius: the quantile of its own windows' distances to its centroid
    (over the windows of the class, whatever the network labels them)."""
    z = (x - check.mean) / check.scale
    radius = []
    for c in range(len(check.labels)):
        d = z[y == c] - check.centroids[c]
        dist = np.sqrt(np.einsum("wd,de,we->w", d, check.precision[c], d))
        radius.append(float(np.percentile(dist, quantile)) if quantile < 100 else np.inf)
    check.radius = np.asarray(radius)


def labelled(check: T.TimbreCheck, feats) -> np.ndarray:
    """[W] the label of each window ("none" where its best class does not hold it)."""
    best, dist = check.scores(feats)
    return np.where(check.verified(best, dist), np.asarray(check.labels)[best], T.NONE)


def shares(check: T.TimbreCheck, rows) -> dict:
    """Per class: the share of its windows labelled as itself (rejections count as misses)."""
    out = {}
    for label in check.labels:
        feats = [r["features"] for r in rows if r["label"] == label and len(r["features"])]
        if feats:
            out[label] = round(float((labelled(check, np.concatenate(feats)) == label).mean()), 3)
    return out


def synthetic_accepted(check: T.TimbreCheck, rows) -> dict:
    """Per waveform of the synthetic class: the share of its windows labelled as an
    instrument (what the controls must avoid), and the largest share any one segment
    gives its most frequent instrument (a control is identified at MAJORITY)."""
    out = {}
    for kind in sorted({r["program"] for r in rows if r["label"] == SYNTHETIC}):
        segs = [labelled(check, r["features"]) for r in rows
                if r["label"] == SYNTHETIC and r["program"] == kind and len(r["features"])]
        inst = [np.isin(s, T.NOT_INSTRUMENTS, invert=True) for s in segs]
        worst = max(max((np.mean(s == k) for k in set(s) if k not in T.NOT_INSTRUMENTS), default=0.0) for s in segs)
        out[kind] = {"windows_as_instrument": round(float(np.concatenate(inst).mean()), 3),
                     "segments": len(segs),
                     "segments_identified": int(sum(
                         any(np.mean(s == k) >= T.MAJORITY for k in set(s) if k not in T.NOT_INSTRUMENTS)
                         for s in segs)),
                     "worst_segment_share": round(float(worst), 3)}
    return out


def build(soundfonts=SOUNDFONTS, fit_n=FIT, test_n=TEST, cache=None, log=print) -> T.TimbreCheck:
    """Render, fit on all soundfonts, and measure the ceiling (see the module docstring)."""
    missing = [p for p in soundfonts.values() if not D.fluidsynth_available(p)]
    if missing:
        raise RuntimeError(f"needs the fluidsynth program and {', '.join(missing)}: see python -m pycore.train.timbre -h")
    rows = reference_features(soundfonts, PROGRAMS, fit_n, test_n, cache, log)
    fitting = [r for r in rows if r["split"] == "fit"]
    held = [r for r in rows if r["split"] == "test"]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(len(soundfonts) + 1, os.cpu_count() or 1)) as pool:   # seeded fits
        jobs = [pool.submit(fit, fitting)] + [pool.submit(fit, [r for r in fitting if r["soundfont"] != sf])
                                              for sf in soundfonts]
        check, left_out = jobs[0].result(), [j.result() for j in jobs[1:]]
    per_sf = {sf: shares(check, [r for r in held if r["soundfont"] == sf]) for sf in soundfonts}
    unseen = {}
    for sf, other in zip(soundfonts, left_out):
        unseen[sf] = shares(other, [r for r in held if r["soundfont"] == sf])
        log(f"{sf} left out: {unseen[sf]}")
    check.info = {
        "soundfonts": {k: {"file": soundfonts[k], "debian_package": SOURCES.get(k, ("?", "?"))[0],
                           "license": SOURCES.get(k, ("?", "?"))[1], "sha256": sha256_file(soundfonts[k])}
                       for k in soundfonts},
        "programs": {k: list(v) for k, v in PROGRAMS.items()},
        "synthetic": {"per_range_and_melody": SYNTH_PER_RANGE, "waveforms": list(T.WAVEFORMS) + ["spectrum"],
                      "untrained_ddsp_per_range_and_melody": UNTRAINED_PER_RANGE},
        "melodies": {"fit": [FIT_FROM, FIT_FROM + fit_n - 1], "test": [TEST_FROM, TEST_FROM + test_n - 1],
                     "seconds": SECONDS},
        "windows": {"fit": int(sum(len(r["features"]) for r in fitting)),
                    "test": int(sum(len(r["features"]) for r in held))},
        "verify_quantile": VERIFY_QUANTILE, "radius": dict(zip(check.labels, np.round(check.radius, 3).tolist())),
        "ceiling": shares(check, held), "ceiling_per_soundfont": per_sf, "ceiling_soundfont_left_out": unseen,
        "synthetic_held_out": synthetic_accepted(check, held),
    }
    return check


# --------------------------------------------------------------------------- on real singing

FIGURES = "timbre.json"           # in weights/cards: the check on real singing, per instrument
SECTION = "## Timbre check on real singing"


def evaluate_singing(paths, instruments=tuple(D.INSTRUMENTS), dev=None, check=None, log=print) -> dict:
    """pycore.tone.timbre.tone_timbre of each shipped model on each recording (any
    format soundfile reads; mixed to mono, resampled to 16 kHz), and over all of them
    (the windows pooled)."""
    import soundfile as sf

    from ..audio.resample import resample
    from ..gpu.native import get_device
    from ..tone.stream import load_tone_model

    dev = dev or get_device()
    check = check or T.load_check()
    out = {}
    for inst in instruments:
        model = load_tone_model(dev, inst)
        per, pooled = {}, {"model": [], "sine": [], "sawtooth": []}
        for path in paths:
            x, sr = sf.read(path, dtype="float32", always_2d=True)
            x = x.mean(axis=1)
            x = x if sr == T.SAMPLE_RATE else resample(x, sr, T.SAMPLE_RATE)
            r = T.tone_timbre(dev, inst, x, check, model, labels=True)
            for k in pooled:
                pooled[k] += r[k].pop("labels")
            per[Path(path).name] = r
            log(inst, Path(path).name, {k: v.get("share", v.get("identified_as")) for k, v in r.items()})
        total = {"model": T.summarize(pooled["model"], inst)}
        for kind in ("sine", "sawtooth"):
            total[kind] = T.summarize(pooled[kind])
            total[kind]["identified_as"] = T.winner(total[kind])
        out[inst] = {"recordings": per, "all": total}
    return out


def card_section(instrument, figures, check_info) -> list:
    """Markdown lines of the card's timbre section from evaluate_singing's figures."""
    f = figures[instrument]
    ceiling = check_info["ceiling"]
    unseen = [v[instrument] for v in check_info["ceiling_soundfont_left_out"].values()]
    rows = []
    for name, r in list(f["recordings"].items()) + [("all", f["all"])]:
        m = r["model"]
        rows.append([name, m["windows"], m["share"], "yes" if m["identified"] else "no",
                     ", ".join(f"{k} {v}" for k, v in sorted(m["shares"].items(), key=lambda kv: -kv[1])),
                     r["sine"]["identified_as"] or "none", r["sawtooth"]["identified_as"] or "none"])
    head = ["singing", "windows", f"{instrument} share", "identified", "labels (share of windows)",
            "sine control read as", "sawtooth control read as"]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    table += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    fooled = sorted({r[k]["identified_as"] for r in [f["all"]] for k in ("sine", "sawtooth") if r[k]["identified_as"]})
    caveat = [f"Not yet a clean control: the check reads a control oscillator as {' / '.join(fooled)}, so a reading "
              f"of {' / '.join(fooled)} is weak evidence of that timbre (issue 18).", ""] if fooled else []
    return [SECTION, "",
            "The model's output through `stemtone tone` (ToneStream, offline) on real solo singing (Vocadito "
            "clips 10 and 14, CC BY 4.0), read by the project's timbre check (`pycore.tone.timbre`, built by "
            "`python -m pycore.train.timbre` from renders of four GM soundfonts the models were not trained "
            "on, and a synthetic class of bare oscillators and of the DDSP synthesizer with an untrained decoder "
            "on made-up voice contours). A recording is identified "
            "as the instrument when it wins at least half of the 1 s windows. "
            f"Ceiling of the check for the {instrument} (share of held-out render windows labelled "
            f"{instrument}): {ceiling[instrument]} over four soundfonts; {min(unseen)}..{max(unseen)} on a "
            "soundfont left out of the fit. Controls: a sine and a sawtooth driven by the same features "
            "(f0 folded into the model's range, loudness) must not be read as any instrument.", "",
            *table, "", *caveat,
            "Reproduce: `python -m pycore.train.timbre --singing ~/.cache/stemtone/vocadito/vocadito_10.wav "
            "~/.cache/stemtone/vocadito/vocadito_14.wav` (the clips: tests/singing.py).", ""]


def set_section(text: str, lines: list) -> str:
    """The card's text with its timbre section replaced (or inserted before "## Reproduce")."""
    body = "\n".join(lines)
    if SECTION in text:
        a = text.index(SECTION)
        b = text.find("\n## ", a + len(SECTION))
        return text[:a] + body + ("\n" + text[b + 1:] if b >= 0 else "")
    at = text.find("## Reproduce")
    return text + "\n" + body if at < 0 else text[:at] + body + "\n" + text[at:]


def main(argv=None):
    from ..weights import BUNDLED_DIR

    p = argparse.ArgumentParser(prog="python -m pycore.train.timbre", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(BUNDLED_DIR, T.FILE))
    p.add_argument("--fit", type=int, default=FIT, help="melodies per program to fit on")
    p.add_argument("--test", type=int, default=TEST, help="melodies per program to measure the ceiling on")
    p.add_argument("--cache", metavar="DIR", help="keep the soundfont renders here (a rebuild then skips fluidsynth)")
    p.add_argument("--singing", nargs="+", metavar="FILE",
                   help="instead of building: run the stored check on the shipped models' tone transfer of these "
                        "recordings; figures to weights/cards/timbre.json and the model cards")
    a = p.parse_args(argv)
    if a.singing:
        cards = Path(BUNDLED_DIR) / "cards"
        check = T.load_check()
        figures = evaluate_singing(a.singing, check=check)
        (cards / FIGURES).write_text(json.dumps(figures, indent=1) + "\n")
        for inst in figures:
            card = cards / f"ddsp-{inst}.md"
            card.write_text(set_section(card.read_text(), card_section(inst, figures, check.info)))
        print(json.dumps({k: v["all"] for k, v in figures.items()}, indent=1))
        return
    check = build(fit_n=a.fit, test_n=a.test, cache=a.cache)
    T.save_check(a.out, check)
    print(json.dumps(check.info, indent=1))
    print(f"wrote {Path(a.out)}")


if __name__ == "__main__":
    main()
