"""The regression suite: which metric families run, on what, in `quick` and `full`.

    run_native(dev, suite, families=None, log=print) -> (metrics, figures)

Metric families (each metric's name starts with its backend, e.g. "native/parity/..."):

    kernels   max abs / rel error per op family against float64 numpy (cases.py, numerics.py)
    dispatch  host µs per dispatch (dispatch.py)
    parity    per model and stem, SDR of ours against the reference implementation;
              speed (real-time factor, ratio to the reference) and peak GPU memory of
              the same runs (models.py); CREPE-tiny against torchcrepe and a tone of
              known f0, the DDSP decoder and synthesizer against PyTorch (tone_models.py)
    quality   BSS Eval v4 SDR / SIR / SAR against ground-truth stems (quality.py)
    tone      f0-following and loudness correlation on real singing (tone.py)
    timbre    each instrument's hold-out spectral loss and its ratio to the sine baseline,
              the model cards' figures recomputed (timbre.py)

The browser backend (browser.py) runs the kernel cases, the dispatch timing and the
demixing models (those of Spleeter and cfg["random"] named in cfg["browser_models"], on
the first cfg["browser_seconds"] of the clip), compared with native.

A suite is a name of SUITES or a dict with the same keys (tests run reduced ones):
config(suite) gives the dict.
"""

from __future__ import annotations

from . import models, numerics, quality, timbre, tone, tone_models
from .cases import run_cases
from .dispatch import host_us_per_dispatch
from .metrics import metric

SUITES = {
    # quick: what `make test` runs (a few minutes on 2 CPU cores, lavapipe)
    "quick": {"spleeter_seconds": 4.0, "pairs": 2, "random": [("htdemucs", 4.0, True), ("htdemucs_6s", 2.0, True),
                                                              ("htdemucs_ft", 2.0, True), ("umxl", 3.0, True)],
              "crepe_seconds": 2.0, "ddsp": ["violin"], "ddsp_seconds": 2.0,
              "quality_seconds": 6.0, "tone": tone.QUICK, "tone_seconds": 4.0, "browser_seconds": 2.0,
              "browser_models": ["spleeter-2stems", "htdemucs", "umxl"], "holdout": ["violin"], "holdout_melodies": 1},
    # full: official configurations (random weights), longer clips, every instrument
    "full": {"spleeter_seconds": 20.0, "pairs": 5,
             "random": [("htdemucs", 10.0, False), ("htdemucs_6s", 10.0, False), ("htdemucs_ft", 5.0, False),
                        ("umxl", 10.0, False)],
             "crepe_seconds": 6.0, "ddsp": ["violin", "flute", "trumpet", "saxophone", "guitar"], "ddsp_seconds": 6.0,
             "quality_seconds": 10.0, "tone": tone.FULL, "tone_seconds": 6.0, "browser_seconds": 4.0,
             "browser_models": ["spleeter-2stems", "htdemucs", "htdemucs_6s", "htdemucs_ft", "umxl"], "holdout": ["violin", "flute", "trumpet", "saxophone", "guitar"], "holdout_melodies": 2},
}


def family_kernels(dev, cfg, log, figures):
    import asyncio

    log("kernels: one case per op family against float64 numpy")
    return numerics.kernel_metrics(asyncio.run(run_cases(dev)))


def family_dispatch(dev, cfg, log, figures):
    log("dispatch: host µs per recorded elementwise dispatch")
    us, spread = host_us_per_dispatch(dev)
    return [metric("dispatch/host_us", "dispatch", us, "µs", "lower", rel=max(0.5, 3 * spread),
                   note="N elementwise adds recorded then flushed, no readback; median of 7 batches")]


def family_parity(dev, cfg, log, figures):
    from ..audio.testdata import real_music_clip

    out = []
    if cfg["spleeter_seconds"]:
        clip = real_music_clip(cfg["spleeter_seconds"])
        out, ours, want = models.spleeter_metrics(dev, clip, cfg["pairs"], demixer=spleeter_demixer(dev), log=log)
        figures["spectrograms"] = {f"spleeter-2stems/{s}": {"ours": ours[s], "reference": want[s]} for s in ours}
    for model, seconds, reduced in cfg["random"]:
        out += models.random_weight_metrics(dev, model, real_music_clip(seconds), reduced, log=log)
    if cfg["crepe_seconds"]:
        out += tone_models.crepe_metrics(dev, seconds=cfg["crepe_seconds"], tone_seconds=cfg["crepe_seconds"] / 2,
                                         log=log)
    for instrument in cfg["ddsp"]:
        out += tone_models.ddsp_metrics(dev, instrument, cfg["ddsp_seconds"], log=log)
    return out


def family_quality(dev, cfg, log, figures):
    log("quality: Spleeter on singing over a real song, BSS Eval v4")
    mix, refs = quality.singing_mix(cfg["quality_seconds"])
    ests, _, _ = models.separate(dev, spleeter_demixer(dev), mix)
    figures["quality"] = {f"spleeter-2stems/{s}": {"ours": ests[s], "reference": refs[s]} for s in refs}
    return quality.quality_metrics("spleeter-2stems", refs, ests)


def family_tone(dev, cfg, log, figures):
    out, tracks = tone.tone_metrics(dev, cfg["tone"], cfg["tone_seconds"], log=log)
    figures["f0"] = tracks
    return out


def family_timbre(dev, cfg, log, figures):
    return timbre.holdout_metrics(dev, cfg["holdout"], cfg["holdout_melodies"], log=log)


FAMILIES = {"kernels": family_kernels, "dispatch": family_dispatch, "parity": family_parity,
            "quality": family_quality, "tone": family_tone, "timbre": family_timbre}

_SPLEETER = {}


def spleeter_demixer(dev):
    """The Spleeter demixer the parity and quality families share (loaded once per device;
    tests replace it through use_spleeter to inject a changed weight)."""
    if dev not in _SPLEETER:
        _SPLEETER[dev] = models.load_spleeter(dev)
    return _SPLEETER[dev]


def use_spleeter(dev, demixer):
    """Run the suite on `dev` with this Spleeter demixer (None: the shipped one again)."""
    if demixer is None:
        _SPLEETER.pop(dev, None)
    else:
        _SPLEETER[dev] = demixer


def config(suite) -> dict:
    if not isinstance(suite, dict) and suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; use one of {', '.join(SUITES)}")
    return suite if isinstance(suite, dict) else SUITES[suite]


def run_native(dev, suite="quick", families=None, log=print) -> tuple:
    """(metrics, figures): figures holds arrays for the report (spectrograms, f0 tracks)."""
    cfg = config(suite)
    unknown = [f for f in families or () if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown metric families {unknown}; choose from {', '.join(FAMILIES)}")
    figures, out = {}, []
    for name, fn in FAMILIES.items():
        if families and name not in families:
            continue
        out += fn(dev, cfg, log, figures)
    for m in out:
        m["name"] = "native/" + m["name"]
    return out, figures

