"""The instruments' timbre in the regression suite: each DDSP model's hold-out
multi-scale spectral loss and its ratio to the sine baseline, the model cards' figures
recomputed (pycore.train.evaluate: the same melodies, loss and baseline).

    holdout_metrics(dev, instruments, melodies, log)
        timbre/<instrument>/holdout_loss     mean loss of the model's rendering (lower is better)
        timbre/<instrument>/holdout_vs_sine  that over the sine baseline's mean loss (the card's
                                             "Model / sine baseline")

The hold-out melodies (index 9 mod 10) are rendered with fluidsynth and analysed by CREPE
on the GPU once, then read from the training data's cache (pycore.train.data.cached_melody;
a 19 s melody takes about a minute of lavapipe the first time). `melodies` = 2 is the
card's set; quick runs the first one. The rendering is float32 GPU work fed float32
features: a kernel change at float32 rounding moves the loss by ~1e-5 relative, a
timbre change worth hearing by percent, so the tolerance is 1 % relative.
"""

from __future__ import annotations

import numpy as np

from .metrics import metric

REL = 0.01
HOLDOUT = (9, 19)          # the cards' hold-out melodies (20 per instrument, index 9 mod 10)


def holdout_metrics(dev, instruments, melodies=2, log=print) -> list:
    from ..models.ddsp import load
    from ..train import data as D
    from ..train import evaluate as E
    from ..weights import weights_path

    if not D.fluidsynth_available():
        log("timbre: SKIPPED, the hold-out melodies need fluidsynth and FluidR3_GM "
            "(apt-get install -y fluidsynth fluid-soundfont-gm; make test installs them)")
        return []
    out = []
    for instrument in instruments:
        model = load(dev, weights_path(f"ddsp-{instrument}"))
        losses = {"model": [], "sine": []}
        for index in HOLDOUT[:melodies]:
            d = D.cached_melody(dev, instrument, index,
                                made=lambda m: log(f"timbre: {instrument} melody {index} rendered and analysed"))
            audio, f0, ld = d["audio"].astype(np.float64), d["f0_hz"], d["loudness_db"]
            n = len(audio)
            losses["model"].append(E.spectral_loss(E.resynthesize(dev, model, f0, ld)[:n], audio))
            losses["sine"].append(E.spectral_loss(E.sine_baseline(f0, ld)[:n], audio))
        ours, sine = float(np.mean(losses["model"])), float(np.mean(losses["sine"]))
        log(f"timbre: {instrument} hold-out loss {ours:.3f}, sine baseline {sine:.3f}")
        what = f"hold-out melodies {', '.join(f'm{i:03d}' for i in HOLDOUT[:melodies])}"
        out += [metric(f"timbre/{instrument}/holdout_loss", "timbre", ours, "", "lower", rel=REL,
                       note=f"multi-scale spectral loss of the GPU rendering, {what} (the model card's figure)"),
                metric(f"timbre/{instrument}/holdout_vs_sine", "timbre", ours / sine, "x", "lower", rel=REL,
                       note=f"model loss / sine-baseline loss, {what} (the card's \"Model / sine baseline\")")]
    return out
