"""The models' part of the browser backend of `stemtone regress`: the regress page's
worker separates the same real-music clip with the same weights as the native backend,
and the host compares each stem with the native output.

    page_files(cfg, folder)          -> (extra, clip): the files the server adds for the
                                        page ({URL path: file}: job.json, the clip, the
                                        weights) and the clip [2, n]
    model_metrics(dev, cfg, clip, page_models)
                                     -> browser/parity/<model>/<stem>/vs_native (SDR, dB)
                                        and browser/speed/<model>/rtf

Models: those of Spleeter (the released weights) and the suite's random-weight models
(HTDemucs, Open-Unmix; reduced in quick, official in full: cfg["random"]) that
cfg["browser_models"] names (quick leaves out the 6-stem model and the 4-model ft bag:
SwiftShader computes on the same 2 cores), on the first cfg["browser_seconds"] of the
suite's clip.

job.json, read by site/regress.py:

    {"clip": URL of float32 little-endian [channels, frames], "channels": 2, "frames": n,
     "models": [{"key": "htdemucs-reduced", "model": "htdemucs", "weights": URL}, ...]}

The page answers {"models": {key: {"seconds": s, "stems": {stem: [[2, n], base64 float32]}}}}.
Browser and native run the same code on different drivers; they differ by summation order
only (the e2e demix tests reach 119-128 dB), so the tolerance is the parity one (3 dB).
"""

from __future__ import annotations

import base64
import json
import os

import numpy as np

from .metrics import metric
from .models import PARITY_TOL_DB, separate, sdr

JOB_URL = "/regress/job.json"
SDR_CAP_DB = 200.0


def models_of(cfg) -> list:
    """[(key, model, reduced)]: reduced None for Spleeter's released weights."""
    out = [("spleeter-2stems", "spleeter-2stems", None)] if cfg["spleeter_seconds"] else []
    out += [(f"{m}-{'reduced' if reduced else 'official'}", m, reduced) for m, _, reduced in cfg["random"]]
    return [o for o in out if o[1] in cfg["browser_models"]]


def page_files(cfg, folder) -> tuple:
    from ..audio.testdata import real_music_clip
    from ..cli.bench.random_weights import random_weights_file
    from ..weights import model_file

    clip = real_music_clip(cfg["browser_seconds"])
    extra, entries = {}, []

    def add(name, data=None, path=None):
        url = f"/regress/{name}"
        if path is None:
            path = os.path.join(folder, name)
            with open(path, "wb") as f:
                f.write(data)
        extra[url] = path
        return url.lstrip("/")           # relative to the site's base

    clip_url = add("clip.f32", clip.astype("<f4").tobytes())
    for key, model, reduced in models_of(cfg):
        weights = (add(f"{key}.safetensors", path=model_file(model)) if reduced is None else
                   add(f"{key}.safetensors", random_weights_file(model, reduced)))
        entries.append({"key": key, "model": model, "weights": weights})
    add("job.json", json.dumps({"clip": clip_url, "channels": clip.shape[0], "frames": clip.shape[1],
                                "models": entries}).encode())
    return extra, clip


def native_demixer(dev, model, reduced):
    from ..cli.bench.random_weights import random_demixer
    from .suite import spleeter_demixer

    return spleeter_demixer(dev) if reduced is None else random_demixer(dev, model, reduced)


def decode(shape, b64) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), "<f4").reshape(shape)


def model_metrics(dev, cfg, clip, page_models, log=print) -> list:
    out = []
    seconds = clip.shape[1] / 44100
    for key, model, reduced in models_of(cfg):
        if key not in page_models:
            raise RuntimeError(f"the regress page returned no output for {key}")
        got = page_models[key]
        log(f"browser: {key} against native on the same {seconds:g} s")
        native, _, _ = separate(dev, native_demixer(dev, model, reduced), clip)
        for stem, want in native.items():
            ours = decode(*got["stems"][stem])
            out.append(metric(f"parity/{key}/{stem}/vs_native", "parity", min(sdr(want, ours), SDR_CAP_DB), "dB",
                              "higher", tol=PARITY_TOL_DB,
                              note=f"SDR of the browser's stem against native, {seconds:g} s of real music "
                                   f"(capped at {SDR_CAP_DB:g} dB)"))
        out.append(metric(f"speed/{key}/rtf", "speed", seconds / got["seconds"], "x real time", "higher", rel=0.5,
                          note="PyScript worker, one run after loading (SwiftShader shares the CPU cores)"))
    return out
