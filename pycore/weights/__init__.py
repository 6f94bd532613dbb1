"""Weights: where model files live, and how they are read, fetched and converted.

    install_dir()        where new weights are written: --weights-dir / $STEMTONE_WEIGHTS,
                         else the checkout's weights/ (developers), else the per-user
                         data folder (an installed wheel)
    weights_dirs()       where weights are looked for, in order: install_dir(), the
                         per-user data folder, the bundled weights (the checkout's weights/
                         or the wheel's copy)
    weights_path(name)   native: a manifest model's file, from the first folder that has it
    model_file(name)     the same, or <name>.safetensors (fetched or converted), or a path
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

from ..paths import asset, in_checkout

BUNDLED_DIR = Path(asset("weights"))  # the manifest, model cards, this project's weights
MANIFEST = BUNDLED_DIR / "manifest.json"
ENV = "STEMTONE_WEIGHTS"


def user_install_dir() -> Path:
    """The per-user data folder's weights/ (platformdirs: ~/.local/share/stemtone/weights
    on Linux), or $STEMTONE_WEIGHTS."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    import platformdirs  # native only (the browser never asks)

    return Path(platformdirs.user_data_dir("stemtone", appauthor=False)) / "weights"


def install_dir() -> Path:
    """Where fetched and converted weights are written (see the module docstring)."""
    if not os.environ.get(ENV) and in_checkout():
        return BUNDLED_DIR
    return user_install_dir()


def weights_dirs() -> list:
    """Where weights are looked for, first match wins (no duplicates)."""
    out = []
    for d in (install_dir(), user_install_dir(), BUNDLED_DIR):
        d = Path(os.path.abspath(d))
        if d not in out:
            out.append(d)
    return out


def find_weights(filename: str):
    """The path of a weights file in the first of weights_dirs() that has it, or None."""
    if os.path.basename(filename) != filename:
        return None
    for d in weights_dirs():
        if (d / filename).is_file():
            return str(d / filename)
    return None


def manifest_models() -> dict:
    with open(MANIFEST, encoding="utf-8") as f:
        return {m["name"]: m for m in json.load(f)["models"]}


def weights_path(name: str) -> str:
    """Native: the weights file of a model of the manifest (it must exist)."""
    models = manifest_models()
    if name not in models:
        raise ValueError(f"{MANIFEST} lists no model {name!r}")
    filename = models[name]["files"][0]["path"]
    path = find_weights(filename)
    if path is None:
        m = models[name]
        cmd = (f"stemtone weights fetch {name}" if "fetch" in m else
               "python -m pycore.weights" + ("" if m.get("default", True) else f" {name}"))
        raise FileNotFoundError(f"{filename} is in none of {', '.join(map(str, weights_dirs()))}; "
                                f"run `{cmd}` first")
    return path


def model_file(name: str) -> str:
    """Native: a model's weights file: a path to a .safetensors file as given; the file
    the manifest lists for a manifest model; else <name>.safetensors in weights_dirs()
    (what `stemtone weights fetch|convert` writes)."""
    if name.endswith(".safetensors") or os.sep in name or "/" in name:
        if not os.path.isfile(name):
            raise FileNotFoundError(f"{name}: no such weights file")
        return name
    try:
        return weights_path(name)
    except (ValueError, OSError):  # not listed, or listed but missing
        pass
    path = find_weights(f"{name}.safetensors")
    if path is None:
        raise FileNotFoundError(
            f"{name}.safetensors is in none of {', '.join(map(str, weights_dirs()))}; run "
            f"`stemtone weights fetch {name}` (official models) or `stemtone weights convert FILE --name {name}`")
    return path
