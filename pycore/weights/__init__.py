"""Weights: where model files live, and how they are read, fetched and converted.

    weights_path(name)   native: a manifest model's file under weights/
    model_file(name)     the same, or weights/<name>.safetensors (fetched or converted)
    safetensors          the format every model loads (browser-safe)
    torchzip, checkpoint restricted readers of PyTorch checkpoints (no torch needed)
    fetch                official checkpoints from their published addresses
    convert              the shared converter steps and `python -m pycore.weights`
    convert_spleeter, convert_crepe   the registry packages' checkpoints

The browser fetches weights over HTTP instead (site/, the server's models list).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent.parent.parent / "weights"
MANIFEST = WEIGHTS_DIR / "manifest.json"


def weights_path(name: str) -> str:
    """Native: the weights file of a model of weights/manifest.json (it must exist)."""
    manifest = os.path.join(WEIGHTS_DIR, "manifest.json")
    with open(manifest, encoding="utf-8") as f:
        models = {m["name"]: m for m in json.load(f)["models"]}
    if name not in models:
        raise ValueError(f"{manifest} lists no model {name!r}")
    path = os.path.join(WEIGHTS_DIR, models[name]["files"][0]["path"])
    if not os.path.exists(path):
        cmd = "python -m pycore.weights" + ("" if models[name].get("default", True) else f" {name}")
        raise FileNotFoundError(f"{path} is missing; run `{cmd}` (make weights) first")
    return path


def model_file(name: str) -> str:
    """Native: a model's weights file: the one weights/manifest.json lists for it, else
    weights/<name>.safetensors (what `stemtone weights fetch|convert` writes)."""
    try:
        return weights_path(name)
    except (ValueError, OSError):  # not listed, or listed but missing
        pass
    path = os.path.join(WEIGHTS_DIR, f"{name}.safetensors")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing; run `stemtone weights fetch {name}` first")
    return path
