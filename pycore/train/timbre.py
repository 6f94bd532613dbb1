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

Classifier: scikit-learn's MLPClassifier (one hidden layer of 128 ReLUs, L2 penalty
0.1, Adam, seed 0) on standardized window features (pycore.tone.timbre.window_features),
classes balanced by repeating windows. (A linear discriminant on the same features
reached 0.28-0.79 per class on held-out renders; the network 0.63-0.95.) The rejection
radius is the 99th percentile of the fitting windows' Mahalanobis distances to the
nearest class centroid (pooled within-class covariance, Ledoit-Wolf shrinkage). Its parameters are stored in float32 in
weights/timbre-check.safetensors with the ceiling in the metadata ("info").

Ceiling figures: the share of held-out windows of each class labelled as that class,
(a) over all four soundfonts, (b) per soundfont, and (c) leaving each soundfont out of
the fit entirely (how the check generalizes to a soundfont it has not seen: the case of
a model's output).

Native only (numpy, scikit-learn, soundfile, the fluidsynth program).
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
FIT, TEST = 4, 2                  # melodies per program: fitting, ceiling
FIT_FROM, TEST_FROM = 100, 110
SECONDS = 10.0
GAP = 1.0                         # silence between segments of one render
REJECT_QUANTILE = 99.0
HIDDEN, ALPHA = 128, 0.1          # the network's hidden units and L2 penalty


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


def reference_features(soundfonts=SOUNDFONTS, labels=PROGRAMS, fit=FIT, test=TEST, log=print) -> list:
    """[{"soundfont", "label", "program", "split", "features" [W, 40]}] of every render."""
    rows = []
    indices = [("fit", FIT_FROM + i) for i in range(fit)] + [("test", TEST_FROM + i) for i in range(test)]
    for name, path in soundfonts.items():
        t0 = time.time()
        segs = segments(labels, [i for _, i in indices])
        split = {i: s for s, i in indices}
        for (label, program, index, _), audio in zip(segs, render_segments(path, segs)):
            feats, _ = T.window_features(audio)
            rows.append({"soundfont": name, "label": label, "program": program, "split": split[index],
                         "features": feats})
        log(f"{name}: {len(segs)} segments rendered and analyzed in {time.time() - t0:.0f} s")
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


def fit(rows, labels=tuple(PROGRAMS), info=None, seed=0) -> T.TimbreCheck:
    """A TimbreCheck fitted on rows (reference_features' "fit" split or any subset)."""
    from sklearn.covariance import LedoitWolf
    from sklearn.neural_network import MLPClassifier

    labels = list(labels)
    x, y = _stack(rows, labels)
    mean, scale = x.mean(0), x.std(0) + 1e-9
    z = (x - mean) / scale
    net = MLPClassifier((HIDDEN,), alpha=ALPHA, max_iter=400, random_state=seed).fit(*balanced(z, y))
    centroids = np.stack([z[y == i].mean(0) for i in range(len(labels))])
    precision = np.linalg.inv(LedoitWolf().fit(z - centroids[y]).covariance_)
    check = T.TimbreCheck(labels, mean, scale, net.coefs_[0], net.intercepts_[0], net.coefs_[1],
                          net.intercepts_[1], centroids, precision, np.inf, info)
    _, dist = check.scores(x)
    check.radius = float(np.percentile(dist, REJECT_QUANTILE))
    return check


def shares(check: T.TimbreCheck, rows) -> dict:
    """Per class: the share of its windows labelled as itself (rejections count as misses)."""
    out = {}
    for label in check.labels:
        feats = [r["features"] for r in rows if r["label"] == label and len(r["features"])]
        if not feats:
            continue
        best, dist = check.scores(np.concatenate(feats))
        hit = (np.asarray(check.labels)[best] == label) & (dist <= check.radius)
        out[label] = round(float(hit.mean()), 3)
    return out


def build(soundfonts=SOUNDFONTS, fit_n=FIT, test_n=TEST, log=print) -> T.TimbreCheck:
    """Render, fit on all soundfonts, and measure the ceiling (see the module docstring)."""
    missing = [p for p in soundfonts.values() if not D.fluidsynth_available(p)]
    if missing:
        raise RuntimeError(f"needs the fluidsynth program and {', '.join(missing)}: see python -m pycore.train.timbre -h")
    rows = reference_features(soundfonts, PROGRAMS, fit_n, test_n, log)
    fitting = [r for r in rows if r["split"] == "fit"]
    held = [r for r in rows if r["split"] == "test"]
    check = fit(fitting)
    per_sf = {sf: shares(check, [r for r in held if r["soundfont"] == sf]) for sf in soundfonts}
    unseen = {}
    for sf in soundfonts:
        other = fit([r for r in fitting if r["soundfont"] != sf])
        unseen[sf] = shares(other, [r for r in held if r["soundfont"] == sf])
    check.info = {
        "soundfonts": list(soundfonts), "programs": {k: list(v) for k, v in PROGRAMS.items()},
        "melodies": {"fit": [FIT_FROM, FIT_FROM + fit_n - 1], "test": [TEST_FROM, TEST_FROM + test_n - 1],
                     "seconds": SECONDS},
        "windows": {"fit": int(sum(len(r["features"]) for r in fitting)),
                    "test": int(sum(len(r["features"]) for r in held))},
        "radius": round(check.radius, 3),
        "ceiling": shares(check, held), "ceiling_per_soundfont": per_sf, "ceiling_soundfont_left_out": unseen,
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
            "on). A recording is identified as the instrument when it wins at least half of the 1 s windows. "
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
        return text[:a] + body + (text[b + 1:] if b >= 0 else "")
    at = text.find("## Reproduce")
    return text + "\n" + body if at < 0 else text[:at] + body + "\n" + text[at:]


def main(argv=None):
    from ..weights import BUNDLED_DIR

    p = argparse.ArgumentParser(prog="python -m pycore.train.timbre", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(BUNDLED_DIR, T.FILE))
    p.add_argument("--fit", type=int, default=FIT, help="melodies per program to fit on")
    p.add_argument("--test", type=int, default=TEST, help="melodies per program to measure the ceiling on")
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
    check = build(fit_n=a.fit, test_n=a.test)
    T.save_check(a.out, check)
    print(json.dumps(check.info, indent=1))
    print(f"wrote {Path(a.out)}")


if __name__ == "__main__":
    main()
