"""MAGNet-style spectral LSTM: predicts the next log-magnitude STFT frame from the
frames so far (Contemporary Machine Learning for Audio and Music Generation on the Web,
"MAGNet"), trained and sampled on the GPU.

    model = MagNet.create(dev, config, seed)      fresh weights (PyTorch's LSTM/Linear init)
    model = MagNet.load(dev, tensors, metadata)   from a safetensors file's entries
    pred = model.forward(x, tapes)                x [T, B, F] normalized log-mags -> [T, B, F]
    grads = model.backward(x, dpred, tapes)       name -> gradient Tensor (same names as params)
    model.noise_std                               per-bin std of the prediction error (or None)
    weights = model.sampling_weights()            for sampling: frames padded to padded_bins
    nxt = model.step(frame, tapes, weights)       frame [1, 1, padded_bins] -> next [1, 1, padded_bins]

Network: `layers` stacked LSTMs of `hidden` units on F = n_fft // 2 + 1 bins, then a
linear layer back to F bins. Frames are z = (log(|STFT| + 1e-4) - mean) / std with one
mean and std per clip (kept with the weights). Names: lstm.weight_ih_l{k} [4H, in],
lstm.weight_hh_l{k} [4H, H], lstm.bias_l{k} [4H] (nn.LSTM's b_ih + b_hh), out.weight [F, H],
out.bias [F].

The network is trained by mean squared error on z, i.e. as a Gaussian with a mean (the
prediction) and a fixed variance per bin; noise_std [F] is that spread, the RMS of the
prediction errors per bin over the last training epoch (pycore.learn.train), saved as
`sampling.noise_std`. Sampling draws from it (pycore.learn.generate): the prediction
alone is the conditional mean of the log-magnitude, whose exp() falls short of the
power of the frames it stands for (Jensen: E[exp(2 s z)] > exp(2 s E[z])).
"""

from __future__ import annotations

import math
import random

from ..ops import elementwise as E
from ..ops import expect
from ..ops.linear_grad import linear_backward
from ..ops.lstm_grad import LSTMTape, lstm_train_backward, lstm_train_forward
from ..ops.matmul import linear

DEFAULTS = {"sample_rate": 22050, "n_fft": 1024, "hop": 256, "hidden": 256, "layers": 2, "seq_len": 32,
            "batch": 8}
# Named sizes (the learn page's choice and `stemtone learn --size`): "standard" is the model
# card's; "small" trains several times faster; "tiny" is for a quick try and for tests on a
# software GPU (3 s of audio give it 8 Adam steps per epoch).
SIZES = {
    "standard": DEFAULTS,
    "small": {**DEFAULTS, "hidden": 128, "layers": 1},
    "tiny": {**DEFAULTS, "n_fft": 512, "hop": 128, "hidden": 32, "layers": 1, "seq_len": 16, "batch": 4},
}


NOISE_STD = "sampling.noise_std"   # the file's name for MagNet.noise_std


class MagNet:
    def __init__(self, dev, config: dict, params: dict, mean: float, std: float, noise_std=None):
        self.dev, self.config, self.params = dev, dict(config), params
        self.noise_std = noise_std
        self.mean, self.std = float(mean), float(std)
        self.bins = config["n_fft"] // 2 + 1
        self.padded_bins = -(-self.bins // 4) * 4
        self.hidden, self.layers = config["hidden"], config["layers"]

    @classmethod
    def shapes(cls, config):
        F, H = config["n_fft"] // 2 + 1, config["hidden"]
        out = {}
        for k in range(config["layers"]):
            n_in = F if k == 0 else H
            out[f"lstm.weight_ih_l{k}"] = (4 * H, n_in)
            out[f"lstm.weight_hh_l{k}"] = (4 * H, H)
            out[f"lstm.bias_l{k}"] = (4 * H,)
        out["out.weight"], out["out.bias"] = (F, H), (F,)
        return out

    @classmethod
    def create(cls, dev, config, seed=0, mean=0.0, std=1.0):
        """Uniform(-1/sqrt(fan), 1/sqrt(fan)) as torch initializes nn.LSTM / nn.Linear."""
        config = {**DEFAULTS, **config}
        r = random.Random(seed)
        params = {}
        for name, shape in cls.shapes(config).items():
            fan = config["hidden"]
            s = 1.0 / math.sqrt(fan)
            n = math.prod(shape)
            params[name] = dev.tensor([r.uniform(-s, s) for _ in range(n)], shape)
        return cls(dev, config, params, mean, std)

    @classmethod
    def load(cls, dev, entries: dict, metadata: dict):
        """entries: pycore.weights.safetensors.load()'s name -> Entry(dtype, shape, data)."""
        config = {k: int(metadata[k]) for k in DEFAULTS if k in metadata}
        expect("MagNet.load", set(config) == set(DEFAULTS) and "mean" in metadata and "std" in metadata,
               "not a MAGNet file (its metadata lacks the model's config); train one with `stemtone learn`")
        params = {}
        for name, shape in cls.shapes(config).items():
            e = entries.get(name)
            expect("MagNet.load", e is not None and tuple(e.shape) == shape,
                   f"the file has no {name} of shape {shape}; it was not written by `stemtone learn`")
            expect("MagNet.load", e.dtype == "f32", f"{name} must be float32")
            params[name] = dev.tensor(e.data, shape)
        noise_std = entries.get(NOISE_STD)
        if noise_std is not None:   # files written before it was kept have none
            F = config["n_fft"] // 2 + 1
            expect("MagNet.load", tuple(noise_std.shape) == (F,) and noise_std.dtype == "f32",
                   f"{NOISE_STD} must be float32 of shape ({F},)")
            noise_std = dev.tensor(noise_std.data, (F,))
        return cls(dev, config, params, float(metadata["mean"]), float(metadata["std"]), noise_std)

    def metadata(self) -> dict:
        return {**{k: str(v) for k, v in self.config.items()}, "mean": repr(self.mean), "std": repr(self.std),
                "model": "magnet"}

    def tapes(self, T, B):
        return [LSTMTape(self.dev, T, B, self.hidden) for _ in range(self.layers)]

    def forward(self, x, tapes):
        """x [T, B, F] -> predictions of the next frames [T, B, F]; the tapes keep what
        backward needs (and the recurrent state, handed on with tape.carry())."""
        p, seq, self._inputs = self.params, x, []
        for k, tape in enumerate(tapes):
            self._inputs.append(seq)
            seq = lstm_train_forward(tape, seq, p[f"lstm.weight_ih_l{k}"], p[f"lstm.weight_hh_l{k}"],
                                     p[f"lstm.bias_l{k}"])
        self._top = seq
        return linear(seq, p["out.weight"], p["out.bias"])

    def backward(self, dpred, tapes):
        """Gradients of the loss whose gradient at forward()'s output is dpred."""
        p, grads = self.params, {}
        dh, grads["out.weight"], grads["out.bias"] = linear_backward(self._top, p["out.weight"], dpred)
        for k in range(len(tapes) - 1, -1, -1):
            dh, g = lstm_train_backward(tapes[k], self._inputs[k], p[f"lstm.weight_ih_l{k}"],
                                        p[f"lstm.weight_hh_l{k}"], dh, need_dx=k > 0)
            grads[f"lstm.weight_ih_l{k}"], grads[f"lstm.weight_hh_l{k}"] = g["weight_ih"], g["weight_hh"]
            grads[f"lstm.bias_l{k}"] = g["bias"]
        return grads

    def sampling_weights(self) -> dict:
        """The parameters for step(), with the bins padded with zeros to padded_bins (a
        multiple of 4): the first layer's weight_ih gains zero columns, out.weight zero
        rows and out.bias zeros. A matmul whose K or N is not a multiple of 4 repacks its
        operands on every call (pycore/ops/matmul.py), which for one frame per step meant
        copying weight_ih each step; padded once here, a step runs on its frame as it is.
        The extra values of a frame multiply zero weights, so they never reach a result.
        A copy: made again after the weights change."""
        w, extra = dict(self.params), self.padded_bins - self.bins
        if extra:
            w["lstm.weight_ih_l0"] = E.pad(w["lstm.weight_ih_l0"], (0, extra))
            w["out.weight"] = E.pad(w["out.weight"], (0, 0, 0, extra))
            w["out.bias"] = E.pad(w["out.bias"], (0, extra))
        return w

    def step(self, frame, tapes, weights):
        """One sampling step: frame [1, 1, padded_bins] -> the predicted next frame [1, 1,
        padded_bins] (its first `bins` values: forward()'s prediction). tapes: tapes(1, 1),
        whose state moves on one frame; weights: sampling_weights()."""
        seq = frame
        for k, tape in enumerate(tapes):
            seq = lstm_train_forward(tape, seq, weights[f"lstm.weight_ih_l{k}"], weights[f"lstm.weight_hh_l{k}"],
                                     weights[f"lstm.bias_l{k}"])
            tape.carry()
        return linear(seq, weights["out.weight"], weights["out.bias"])
