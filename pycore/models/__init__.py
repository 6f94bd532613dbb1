"""Models built from the WGSL ops: each module holds one network, constructed from the
tensors of a safetensors file (`pycore.safetensors.load`), with attribute names that
mirror the checkpoint's keys. Browser-safe: nothing here imports numpy.

weights_path(name) finds a model's file under weights/ natively (the browser fetches
the weights over HTTP instead)."""

from __future__ import annotations

import json
import os

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "weights")


def weights_path(name: str) -> str:
    """Native: the weights file of a model of weights/manifest.json (it must exist)."""
    manifest = os.path.join(WEIGHTS_DIR, "manifest.json")
    with open(manifest, encoding="utf-8") as f:
        models = {m["name"]: m for m in json.load(f)["models"]}
    if name not in models:
        raise ValueError(f"{manifest} lists no model {name!r}")
    path = os.path.join(WEIGHTS_DIR, models[name]["files"][0]["path"])
    if not os.path.exists(path):
        cmd = "python -m pycore.convert" + ("" if models[name].get("default", True) else f" {name}")
        raise FileNotFoundError(f"{path} is missing; run `{cmd}` (make weights) first")
    return path
