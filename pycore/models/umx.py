"""Open-Unmix (openunmix 1.3.0, e.g. `umxl`) on the WGSL kernels.

One OpenUnmix model per target estimates that target's magnitude spectrogram from the
mixture's; a Wiener filter (one EM iteration) turns the estimates into complex STFTs.
Exactly openunmix's Separator with niter=1, softmask=False, residual=False,
wiener_win_len=300, n_fft 4096, hop 1024, on stereo audio:

  audio [2, L] --stft (periodic Hann, centered, reflect padding)--> X [2, 2049, T, 2]
  |X| --> mix [T, 2, 2049] (frames first, like the model's permute(3, 0, 1, 2))
  per target (OpenUnmix.forward, eval mode):
      x = (mix[..., :max_bin] + input_mean) * input_scale        [T, 2, max_bin]
      x = tanh(bn1(fc1(x.reshape(T, 2 * max_bin))))              [T, hidden]
      x = cat([x, lstm(x)])                                      [T, 2 * hidden]
      x = relu(bn2(fc2(x)));  x = bn3(fc3(x))                    [T, 2 * 2049]
      s = relu(x.reshape(T, 2, 2049) * output_scale + output_mean) * mix
  Y = wiener(X, [s_vocals, s_drums, ...], win=300)  (pycore.ops.wiener)
  istft(Y, length=L) --> [targets * 2, L]

Weights: a dict as from pycore.weights.safetensors.load whose keys are openunmix's state_dict keys
prefixed by the target, e.g. "vocals.fc1.weight", "vocals.lstm.weight_hh_l2_reverse".
The architecture (hidden size, max_bin, layers, bidirectional) is read off the shapes,
so any OpenUnmix configuration loads; umxl is hidden 1024, max_bin 1487, 3 layers.

The BiLSTM sees the whole track (as in the reference). OpenUnmix's forward pass is split
into features() (frame-local), sequence() (the LSTM over all frames) and spectrogram()
(frame-local), so that pycore/demix/umx.py runs everything but the LSTM in windows of
frames, and the LSTM layer by layer in time chunks (direction() gives one direction of
one layer as a unidirectional LSTM, post() the part after it); it drives the pipeline above.
"""

from __future__ import annotations

import struct

from ..ops.activations import relu, tanh
from ..ops.elementwise import add, concat, mul, pad
from ..ops.matmul import linear
from ..ops.norm import batch_norm
from ..ops.rnn import lstm

N_FFT = 4096
HOP = 1024
BN_EPS = 1e-5            # torch.nn.BatchNorm1d's default
WIENER_WIN = 300         # Separator's wiener_win_len (frames)
WIENER_EPS = 1e-10       # openunmix.filtering.wiener's default eps
TARGETS = ("vocals", "drums", "bass", "other")


def _raw(entry, dtype) -> bytes:
    """A safetensors Entry's bytes as dtype ("f32" or "f16")."""
    if entry.dtype == dtype:
        return entry.data
    src, dst = ("f", "e") if entry.dtype == "f32" else ("e", "f")
    n = len(entry.data) // (4 if src == "f" else 2)
    try:
        import numpy as np  # native: fast conversion
    except ImportError:  # the browser: struct
        return struct.pack(f"<{n}{dst}", *struct.unpack(f"<{n}{src}", entry.data))
    kinds = {"f": np.float32, "e": np.float16}
    return np.frombuffer(entry.data, kinds[src]).astype(kinds[dst]).tobytes()


def targets_of(weights) -> list:
    """The targets a weights dict holds, in umxl's order (then any others, sorted)."""
    found = {k.split(".", 1)[0] for k in weights if k.endswith(".fc1.weight")}
    return [t for t in TARGETS if t in found] + sorted(found - set(TARGETS))


class OpenUnmix:
    """One target's model; attributes mirror the state_dict (fc1, bn1, lstm, ...)."""

    def __init__(self, dev, weights, target, dtype="f32"):
        def entry(name):
            key = f"{target}.{name}"
            if key not in weights:
                raise ValueError(f"open-unmix weights: {key!r} is missing")
            return weights[key]

        def tensor(name, dt="f32"):
            e = entry(name)
            return dev.tensor(_raw(e, dt), e.shape, dt)

        def bn(prefix):
            return {k: tensor(f"{prefix}.{k}") for k in ("weight", "bias", "running_mean", "running_var")}

        self.hidden_size, fc1_in = entry("fc1.weight").shape
        self.max_bin = entry("input_mean").shape[0]
        self.nb_output_bins = entry("output_mean").shape[0]
        self.nb_channels = fc1_in // self.max_bin
        if self.nb_channels != 2 or fc1_in != 2 * self.max_bin:
            raise ValueError(f"open-unmix weights: {target} is not a stereo model (fc1 takes {fc1_in} features)")
        self.fc1 = tensor("fc1.weight", dtype)
        self.bn1 = bn("bn1")
        self.fc2 = tensor("fc2.weight", dtype)
        self.bn2 = bn("bn2")
        self.fc3 = tensor("fc3.weight", dtype)
        self.bn3 = bn("bn3")
        self.input_mean = tensor("input_mean")
        self.input_scale = tensor("input_scale")
        self.output_mean = tensor("output_mean")
        self.output_scale = tensor("output_scale")
        prefix = f"{target}.lstm."
        self.lstm = {k[len(prefix):]: dev.tensor(_raw(e, dtype), e.shape, dtype)
                     for k, e in weights.items() if k.startswith(prefix)}
        self.nb_layers = sum(1 for k in self.lstm if k.startswith("weight_ih_l") and not k.endswith("_reverse"))
        self.bidirectional = "weight_ih_l0_reverse" in self.lstm
        self.lstm_hidden = self.hidden_size // 2 if self.bidirectional else self.hidden_size

    # The forward pass in three parts, so that a caller can run the frame-local parts
    # on windows of frames and only the LSTM on the whole sequence (pycore/demix/umx.py).

    def features(self, mix):
        """mix [T, 2, nb_output_bins] magnitudes -> tanh(bn1(fc1(normalized input))) [T, hidden]."""
        T = mix.shape[0]
        cut = pad(mix, (0, self.max_bin - self.nb_output_bins))            # [T, 2, max_bin]
        x0 = add(cut, self.input_mean)
        cut.release()
        x1 = mul(x0, self.input_scale)
        x0.release()
        h = linear(x1.reshape(T, 2 * self.max_bin), self.fc1)
        x1.release()
        hb = batch_norm(h, eps=BN_EPS, **self.bn1)
        h.release()
        x = tanh(hb)
        hb.release()
        return x

    def sequence(self, x):
        """x [T, hidden] (features of the whole track) -> relu(bn2(fc2(cat(x, lstm(x))))) [T, hidden]."""
        T = x.shape[0]
        seq, (h_n, c_n) = lstm(x.reshape(T, 1, self.hidden_size), self.lstm, self.lstm_hidden,
                               self.nb_layers, self.bidirectional)
        h_n.release()
        c_n.release()
        z = self.post(x, seq.reshape(T, self.hidden_size))
        seq.release()
        return z

    def direction(self, layer: int, reverse: bool) -> dict:
        """One direction of one LSTM layer as the weights of a 1-layer unidirectional
        LSTM (pycore.ops.rnn.lstm's keys), for running the layers in time chunks."""
        sfx = f"_l{layer}" + ("_reverse" if reverse else "")
        return {k[:-len(sfx)] + "_l0": t for k, t in self.lstm.items() if k.endswith(sfx)}

    def post(self, x, seq):
        """x [T, hidden] features, seq [T, hidden] the LSTM's output -> z =
        relu(bn2(fc2(cat(x, seq)))) [T, hidden] (frame-local)."""
        skip = concat([x, seq], dim=1)                                      # [T, 2 * hidden]
        h = linear(skip, self.fc2)
        skip.release()
        hb = batch_norm(h, eps=BN_EPS, **self.bn2)
        h.release()
        z = relu(hb)
        hb.release()
        return z

    def spectrogram(self, z, mix):
        """z [T, hidden] from sequence(), mix [T, 2, nb_output_bins] -> the target's
        magnitude estimate relu(bn3(fc3(z)) * output_scale + output_mean) * mix."""
        T = z.shape[0]
        h = linear(z, self.fc3)
        hb = batch_norm(h, eps=BN_EPS, **self.bn3)
        h.release()
        y0 = mul(hb.reshape(T, 2, self.nb_output_bins), self.output_scale)
        hb.release()
        y1 = add(y0, self.output_mean)
        y0.release()
        y2 = relu(y1)
        y1.release()
        out = mul(y2, mix)
        y2.release()
        return out


class Separator:
    """Every target's OpenUnmix and the Wiener filter's window; pycore/demix/umx.py runs
    them (the STFT, the models' parts, the filter and the inverse STFT, window by window)."""

    def __init__(self, dev, weights, targets=None, dtype="f32", wiener_win=WIENER_WIN):
        self.dev = dev
        self.wiener_win = wiener_win  # frames per Wiener window (openunmix: wiener_win_len)
        self.targets = list(targets or targets_of(weights))
        if not self.targets:
            raise ValueError("open-unmix weights: no '<target>.fc1.weight' entries")
        self.models = [OpenUnmix(dev, weights, t, dtype) for t in self.targets]
        bins = {m.nb_output_bins for m in self.models}
        if bins != {N_FFT // 2 + 1}:
            raise ValueError(f"open-unmix weights: models output {sorted(bins)} bins, expected {N_FFT // 2 + 1}")
