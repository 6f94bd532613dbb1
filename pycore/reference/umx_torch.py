"""Reference Open-Unmix `umxl` separation: openunmix 1.3.0's own Separator and OpenUnmix
modules (PyTorch, CPU), for parity tests and benchmarks. Native only; the product never
imports it (it needs torch and `pip install --no-deps openunmix==1.3.0`).

The openunmix package's __init__ imports torchaudio (and utils.py needs it), which has no
build here, so this module executes the package's model.py, filtering.py and
transforms.py directly from their files as submodules of a private package. transforms.py
has a bare `import torchaudio` it never uses on the "torch" filterbank path: while it is
executed an empty module stands in for torchaudio when the real one is missing.

    sep = separator(weights)             # weights: {"vocals.fc1.weight": array, ...}
    est = separate(sep, wav)             # wav [2, L] float32 -> {target: [2, L] float32}
    weights = random_weights(seed=0)     # umxl's shapes, every parameter and BatchNorm
                                         # statistic random (so all of them matter)

umxl (openunmix.umxl / umxl_spec): OpenUnmix(nb_bins=2049, nb_channels=2,
hidden_size=1024, max_bin=1487 (16 kHz bandwidth), nb_layers=3) per target for vocals,
drums, bass, other; Separator(niter=1, residual=False, softmask=False, n_fft=4096,
n_hop=1024, nb_channels=2, wiener_win_len=300, filterbank="torch").
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types

import numpy as np

TARGETS = ("vocals", "drums", "bass", "other")
CONFIG = {"nb_bins": 2049, "nb_channels": 2, "hidden_size": 1024, "nb_layers": 3, "max_bin": 1487}
SEPARATOR = {"niter": 1, "residual": False, "softmask": False, "n_fft": 4096, "n_hop": 1024,
             "nb_channels": 2, "sample_rate": 44100.0, "wiener_win_len": 300, "filterbank": "torch"}

_PKG = "_openunmix_ref"


def _package_dir() -> str:
    spec = importlib.util.find_spec("openunmix")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("openunmix is not installed: pip install --no-deps openunmix==1.3.0")
    return list(spec.submodule_search_locations)[0]


def modules():
    """(model, filtering) modules of the installed openunmix, loaded by file path."""
    if _PKG + ".model" in sys.modules:
        return sys.modules[_PKG + ".model"], sys.modules[_PKG + ".filtering"]
    import torch  # noqa: F401  (fail early with torch's own message)

    root = _package_dir()
    pkg = types.ModuleType(_PKG)
    pkg.__path__ = [root]
    sys.modules[_PKG] = pkg
    stand_in = None
    try:
        import torchaudio  # noqa: F401
    except ImportError:
        stand_in = sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    try:
        for name in ("filtering", "transforms", "model"):  # model imports the other two
            spec = importlib.util.spec_from_file_location(f"{_PKG}.{name}", os.path.join(root, f"{name}.py"))
            mod = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = mod
            spec.loader.exec_module(mod)
    finally:
        if stand_in is not None and sys.modules.get("torchaudio") is stand_in:
            del sys.modules["torchaudio"]
    return sys.modules[_PKG + ".model"], sys.modules[_PKG + ".filtering"]


def random_weights(seed=0, targets=TARGETS, config=CONFIG) -> dict:
    """{"<target>.<state_dict key>": float32 array}: the modules' own initialization
    (seeded) with BatchNorm statistics and affine parameters, the input/output scaling
    randomized too."""
    import torch

    model_mod, _ = modules()
    torch.manual_seed(seed)
    g = np.random.default_rng(seed)
    out = {}
    for target in targets:
        net = model_mod.OpenUnmix(**config)
        sd = net.state_dict()
        for key, t in sd.items():
            n = t.shape
            if key.endswith("running_mean"):
                t.copy_(torch.from_numpy(g.normal(0.0, 0.3, n).astype(np.float32)))
            elif key.endswith("running_var"):
                t.copy_(torch.from_numpy(g.uniform(0.5, 2.0, n).astype(np.float32)))
            elif key.startswith("bn") and key.endswith("weight"):
                t.copy_(torch.from_numpy(g.uniform(0.5, 1.5, n).astype(np.float32)))
            elif key.startswith("bn") and key.endswith("bias"):
                t.copy_(torch.from_numpy(g.normal(0.0, 0.2, n).astype(np.float32)))
            elif key == "input_mean":
                t.copy_(torch.from_numpy(-g.uniform(0.0, 2.0, n).astype(np.float32)))
            elif key == "input_scale":
                t.copy_(torch.from_numpy(g.uniform(0.2, 1.0, n).astype(np.float32)))
            elif key in ("output_scale", "output_mean"):
                t.copy_(torch.from_numpy(g.uniform(0.5, 1.5, n).astype(np.float32)))
        for key, t in sd.items():
            if key.endswith("num_batches_tracked"):
                continue
            out[f"{target}.{key}"] = t.detach().numpy().astype(np.float32).copy()
    return out


def separator(weights: dict, config=CONFIG, **overrides):
    """openunmix Separator in umxl's configuration over the targets in `weights`."""
    import torch

    model_mod, _ = modules()
    targets = [t for t in TARGETS if f"{t}.fc1.weight" in weights]
    models = {}
    for target in targets:
        net = model_mod.OpenUnmix(**config)
        sd = {k[len(target) + 1:]: torch.from_numpy(np.asarray(v, np.float32))
              for k, v in weights.items() if k.startswith(target + ".")}
        net.load_state_dict(sd, strict=False)
        net.eval()
        models[target] = net
    sep = model_mod.Separator(target_models=models, **dict(SEPARATOR, **overrides))
    sep.freeze()
    return sep


def separate(sep, wav) -> dict:
    """wav [2, L] float32 -> {target: [2, L] float32 numpy}."""
    import torch

    with torch.no_grad():
        est = sep(torch.from_numpy(np.asarray(wav, np.float32))[None])
    return {t: est[0, k].numpy() for k, t in enumerate(sep.target_models)}
