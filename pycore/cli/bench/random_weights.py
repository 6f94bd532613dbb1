"""Demucs v4 (htdemucs, htdemucs_6s) and Open-Unmix (umxl) with seeded random weights,
for `bench separate`, `bench memory` and `bench runtime`: our Demixer and the PyTorch CPU
reference (demucs==4.1.0, openunmix==1.3.0) built from the same values. The published
checkpoints are not reachable here; speed and memory do not depend on the values.
HTDemucs' random weights are a converted demucs file (random_htdemucs_file), which
`bench runtime --browser` also serves to the bench page.

The reference runs in a child process (run_reference -> reference_child), so that the
peak RSS it reports is its own."""

from __future__ import annotations

import json
import os
import time

from .common import ROOT, BenchUnavailable

# Official configurations. HTDemucs: the constructor's defaults plus what the 955717e8
# (htdemucs) package sets, as tests/htdemucs_official_parity.py.
HTDEMUCS_OFFICIAL = dict(bottom_channels=512, dconv_mode=3, t_layers=5, segment=7.8)
# A reduced configuration of the same architecture, STFT and 7.8 s segments (narrower
# channels, two transformer layers), for lavapipe: whether memory grows with the track is
# about the streaming, not the width.
HTDEMUCS_REDUCED = dict(channels=8, t_layers=2, t_heads=2, bottom_channels=32, dconv_mode=3, segment=7.8)
UMX_REDUCED_HIDDEN = 128


def _require_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        raise BenchUnavailable("the reference and the random weights need torch: "
                               "pip install torch==2.13.0 (and --no-deps demucs==4.1.0 for HTDemucs)") from None


HTDEMUCS_MODELS = ("htdemucs", "htdemucs_6s", "htdemucs_ft")


def _htdemucs_networks(model, reduced, seed=0) -> list:
    """The reference demucs HTDemucs modules with seeded random weights: one, or for the
    htdemucs_ft bag four (seeds seed .. seed + 3), one specialist per stem."""
    _require_torch()
    import torch

    from ...demix import MODELS

    try:
        from demucs.htdemucs import HTDemucs as TorchHTDemucs
    except ImportError as e:
        raise BenchUnavailable(f"demucs==4.1.0 is needed for the reference ({e})") from None
    from fractions import Fraction

    cfg = dict(HTDEMUCS_REDUCED if reduced else HTDEMUCS_OFFICIAL)
    cfg["segment"] = Fraction(cfg["segment"]).limit_denominator(1000)
    stems = list(MODELS[model]["stems"])
    nets = []
    for i in range(len(stems) if model == "htdemucs_ft" else 1):
        torch.manual_seed(seed + i)
        nets.append(make_scales_matter(TorchHTDemucs(sources=stems, **cfg).eval()))
    return nets


def bag_weights(model):
    """htdemucs_ft's per-model, per-stem weights (each specialist gives its own stem, as
    the published bag); None for a single model."""
    from ...demix import MODELS

    n = len(MODELS[model]["stems"])
    return [[float(i == j) for j in range(n)] for i in range(n)] if model == "htdemucs_ft" else None


def _htdemucs_reference(model, reduced, seed=0):
    """The reference demucs module with seeded random weights: an HTDemucs, or for
    htdemucs_ft a demucs BagOfModels of four."""
    nets = _htdemucs_networks(model, reduced, seed)
    if model != "htdemucs_ft":
        return nets[0]
    return demucs_apply().BagOfModels(nets, bag_weights(model))


def make_scales_matter(net):
    """Random layer scales and norms that matter (they start near 1e-4 / 1, and the output
    would be ~the mix's mean): what the HTDemucs parity tests and this benchmark run."""
    import torch

    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(".scale"):
                p.uniform_(0.05, 0.3)
            elif "norm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            elif "norm" in name and name.endswith("bias"):
                p.uniform_(-0.2, 0.2)
    return net


def _umx_weights(reduced, seed=0):
    _require_torch()
    from ...reference import umx_torch

    try:
        umx_torch.modules()
    except ImportError as e:
        raise BenchUnavailable(f"openunmix==1.3.0 is needed for the reference ({e})") from None
    config = dict(umx_torch.CONFIG, hidden_size=UMX_REDUCED_HIDDEN) if reduced else dict(umx_torch.CONFIG)
    return umx_torch.random_weights(seed=seed, config=config), config


def random_htdemucs_file(model="htdemucs", reduced=False, seed=0) -> bytes:
    """The seeded random weights of run_reference's network as the file `stemtone
    weights convert` writes (pycore.weights.fetch: float32 tensors under the reference's
    state-dict names, the architecture in the metadata), so that
    pycore.demix.htdemucs.load_models builds it, natively and in the browser."""
    from ...demix import MODELS
    from ...weights.safetensors import dumps

    if model not in HTDEMUCS_MODELS:
        raise BenchUnavailable(f"{model}: random HTDemucs weights cover {', '.join(HTDEMUCS_MODELS)}")
    nets = _htdemucs_networks(model, reduced, seed)
    stems = list(MODELS[model]["stems"])
    kwargs = dict(HTDEMUCS_REDUCED if reduced else HTDEMUCS_OFFICIAL)
    prefixes = [f"model{i}." if len(nets) > 1 else "" for i in range(len(nets))]   # as weights convert names a bag's
    arch = {"klass": "demucs.htdemucs.HTDemucs", "sources": stems,
            "models": [{"prefix": p, "sig": f"random{seed + i}", "args": [], "kwargs": kwargs}
                       for i, p in enumerate(prefixes)], "weights": bag_weights(model)}
    tensors = {p + k: ("f32", tuple(v.shape), v.detach().float().contiguous().numpy().tobytes())
               for p, net in zip(prefixes, nets) for k, v in net.state_dict().items() if v.is_floating_point()}
    return dumps(tensors, {"model": model, "format": "demucs", "architecture": json.dumps(arch),
                           "source": json.dumps([{"file": f"random weights, seed {seed}"}])})


def random_weights_file(model, reduced=False, seed=0) -> bytes:
    """random_demixer's weights as a safetensors file (for a page: the regress page
    separates with them in the browser): HTDemucs as random_htdemucs_file, Open-Unmix as
    the "<target>.<key>" tensors its loader reads."""
    import numpy as np

    from ...weights.safetensors import dumps

    if model != "umxl":
        return random_htdemucs_file(model, reduced, seed)
    weights, _ = _umx_weights(reduced, seed)
    return dumps({k: ("f32", tuple(v.shape), np.ascontiguousarray(v, np.float32).tobytes())
                  for k, v in weights.items()}, {"model": "umxl"})


def random_demixer(dev, model, reduced=False, seed=0):
    """Our Demixer for `model` (htdemucs, htdemucs_6s or umxl) with the same seeded
    random weights as the reference that run_reference builds."""
    import asyncio

    import numpy as np

    from ...demix import MODELS, Demixer
    from ...weights.safetensors import Entry

    def entries(arrays):
        return {k: Entry("f32", tuple(v.shape), np.ascontiguousarray(v, np.float32).tobytes())
                for k, v in arrays.items()}

    if model == "umxl":
        weights, _ = _umx_weights(reduced, seed)
        return asyncio.run(Demixer.load(dev, "umxl", weights=entries(weights)))
    if model not in HTDEMUCS_MODELS:
        raise BenchUnavailable(f"{model}: random-weight benchmarks cover {', '.join(HTDEMUCS_MODELS)} and umxl")
    return asyncio.run(Demixer.load(dev, model, weights=random_htdemucs_file(model, reduced, seed)))


def demucs_apply_model():
    return demucs_apply().apply_model


def demucs_apply():
    """The demucs.apply module (apply_model, BagOfModels); it imports tqdm (used only for
    progress bars): an empty stand-in module where tqdm is not installed."""
    import importlib.util
    import sys
    import types

    stub = "tqdm" not in sys.modules and importlib.util.find_spec("tqdm") is None
    if stub:
        sys.modules["tqdm"] = types.ModuleType("tqdm")
    try:
        import demucs.apply
    finally:
        if stub:
            del sys.modules["tqdm"]
    return demucs.apply


def _reference_separator(model, reduced, seed):
    """run(x [2, n]) -> {stem: [2, n]}: the reference separation with the random weights
    (openunmix: its Separator; demucs: Separator.separate_tensor's normalization around
    apply_model(shifts=0, split, overlap 0.25))."""
    import numpy as np
    import torch

    if model == "umxl":
        from ...reference import umx_torch

        weights, config = _umx_weights(reduced, seed)
        sep = umx_torch.separator(weights, config)
        return lambda x: umx_torch.separate(sep, x)

    net = _htdemucs_reference(model, reduced, seed)
    apply_model = demucs_apply_model()

    def run(x):
        wav = torch.from_numpy(np.ascontiguousarray(x))
        ref = wav.mean(0)
        mean, std = ref.mean(), ref.std() + 1e-8
        with torch.no_grad():
            out = apply_model(net, ((wav - mean) / std)[None], shifts=0, split=True, overlap=0.25)
        out = (out * std + mean)[0].numpy()
        return dict(zip(net.sources, out))
    return run


def _reference_run(model, reduced, seed, clip_path, out_path) -> dict:
    """In the child process: the reference separation of the clip, timed after a 1 s
    warm-up; the stems go to out_path (.npz)."""
    import resource

    import numpy as np
    import torch

    clip = np.load(clip_path)
    run = _reference_separator(model, reduced, seed)
    run(clip[:, :44100])
    t0 = time.perf_counter()
    out = run(clip)
    seconds = time.perf_counter() - t0
    np.savez(out_path, **out)
    return {"seconds": seconds, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "threads": torch.get_num_threads(), "torch": torch.__version__}


CHILD = "from pycore.cli.bench.random_weights import reference_child; reference_child()"


def reference_child():  # python -c CHILD ARGS
    import sys

    a = json.loads(sys.argv[1])
    print(json.dumps(_reference_run(a["model"], a["reduced"], a["seed"], a["clip"], a["out"])))


def run_reference(model, clip, reduced=False, seed=0):
    """(report, stems) of the reference separating `clip` [2, n] in a child process:
    report = {"seconds", "peak_rss" (bytes), "threads", "torch"}, stems = {stem: [2, n]}."""
    import subprocess
    import sys
    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        clip_path, out_path = os.path.join(tmp, "clip.npy"), os.path.join(tmp, "ref.npz")
        np.save(clip_path, clip)
        args = json.dumps({"model": model, "reduced": reduced, "seed": seed, "clip": clip_path, "out": out_path})
        p = subprocess.run([sys.executable, "-c", CHILD, args], cwd=ROOT, capture_output=True, text=True)
        if p.returncode != 0:
            raise BenchUnavailable(f"the reference failed: {p.stderr.strip().splitlines()[-1:]}")
        return json.loads(p.stdout.strip().splitlines()[-1]), dict(np.load(out_path))
