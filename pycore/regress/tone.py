"""Tone transfer in the regression suite, on real singing (Vocadito 14 and 10): how well
each instrument's output follows the input, measured by CREPE on both (pycore.tone.features):

    f0 error    median |f0_out - f0_in| in cents to the nearest whole octave (the octave
                knob, the register shift and the fold move the played pitch by octaves)
                over voiced frames (CREPE confidence > 0.5 and loudness > -50 dB); lower
                is better, tolerance 2 cents
    loudness    correlation of the input's and the output's A-weighted loudness tracks
                (250 frames per second); higher is better, tolerance 0.005
    timbre      the share of the output's 1 s windows that the timbre check
                (pycore.tone.timbre, weights/timbre-check.safetensors) labels as the
                instrument; higher is better, tolerance 0.15 (one window of ~10 is 0.1)

tone_metrics also returns the tracks, for the report's f0 plot.
"""

from __future__ import annotations

import asyncio

import numpy as np

from .metrics import metric

# (instrument, clip, octave): Vocadito 14 sings around 240 Hz, 10 around 125 Hz
QUICK = [("violin", 14, 0)]
FULL = [("violin", 14, 0), ("violin", 10, 1), ("flute", 14, 1), ("trumpet", 14, 0), ("saxophone", 14, 0),
        ("guitar", 10, 0)]


async def _render(model, x, octave):
    from ..tone import ToneStream

    s = ToneStream(model, octave=octave)
    parts = [(await s.push(x))["audio"], (await s.flush())["audio"]]
    y = np.concatenate([np.frombuffer(p, np.float32) for p in parts])
    return y[s.delay_samples:s.delay_samples + len(x)]


def tone_metrics(dev, cases, seconds=6.0, log=print) -> tuple:
    """(metrics, {name: {"f0_in", "f0_out", "voiced"}}) for each (instrument, clip, octave)."""
    from ..audio.testdata import vocadito
    from ..tone import load_tone_model
    from ..tone.features import features
    from ..tone.timbre import load_check, summarize

    check = load_check()
    out, tracks = [], {}
    for instrument, clip, octave in cases:
        log(f"tone: {instrument} on vocadito_{clip}, octave {octave:+d}")
        x = vocadito(clip, seconds=seconds, offset=1.0)
        y = asyncio.run(_render(load_tone_model(dev, instrument), x, octave))
        fi, ci, li = asyncio.run(features(dev, x))
        fo, _, lo = asyncio.run(features(dev, y))
        voiced = (ci > 0.5) & (li > -50)
        cents = 1200 * np.log2(fo[voiced] / fi[voiced])
        err = float(np.median(np.abs(cents - 1200 * np.round(cents / 1200))))
        played = int(np.round(np.median(cents) / 1200))            # the octaves the engine moved it by
        corr = float(np.corrcoef(li, lo)[0, 1])
        name = f"{instrument}/vocadito_{clip}{'' if octave == 0 else f'_oct{octave:+d}'}"
        out.append(metric(f"tone/{name}/f0_error", "tone", err, "cents", "lower", tol=2.0,
                          note="median over voiced frames to the nearest octave, CREPE on input and output"))
        out.append(metric(f"tone/{name}/loudness_corr", "tone", corr, "", "higher", tol=0.005,
                          note="A-weighted loudness tracks, 250 frames/s"))
        share = summarize(check.classify(y), instrument)["share"]
        out.append(metric(f"tone/{name}/timbre_share", "tone", share, "", "higher", tol=0.15,
                          note="share of 1 s windows the timbre check labels as the instrument"))
        tracks[name] = {"f0_in": (fi * 2.0 ** played).tolist(), "f0_out": np.asarray(fo).tolist(),
                        "voiced": voiced.tolist()}
    return out, tracks
