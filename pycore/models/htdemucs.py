"""Hybrid Transformer Demucs (demucs==4.1.0 `demucs.htdemucs.HTDemucs`) on the WGSL ops.

Built from a safetensors file written by `stemtone weights convert` (pycore/weights/
fetch.py): tensors keep the reference state_dict names (a bag member's names start with
"model{i}."), and the metadata "architecture" JSON records the constructor kwargs. The
attribute names below mirror the state_dict, so `encoder[1].dconv.layers[0]` holds
"encoder.1.dconv.layers.0.*".

One call of `HTDemucs.forward(mix)` is the reference `model(mix)` on one segment:

    mix [B, C, L] --_spec--> z [B, C, F, T] complex --cac--> x [B, 2C, F, T], normalized
    frequency branch: encoder[i] (Conv2d k x 1 stride s x 1, GELU, DConv, 1x1 rewrite + GLU)
    time branch:      tencoder[i] (the same with Conv1d), on the normalized waveform
    freq_emb added after encoder[0]; at the bottom: channel_upsampler(_t) (1x1 convs),
    crosstransformer (self and cross attention alternating between the two branches),
    channel_downsampler(_t); then decoder[i] / tdecoder[i] (skip + rewrite + GLU, DConv,
    transposed conv), de-normalization, iSTFT of the frequency branch + the time branch.

The reference's own STFT framing is reproduced exactly (`_spec` / `_ispec`): reflect
padding by 3 hop / 2 (+ up to a whole hop at the end), a normalized periodic-Hann STFT
with n_fft = nfft, hop = nfft / 4, dropping the Nyquist bin and the 2 first / 2 last
frames; the inverse pads them back with zeros.

Supported configurations: what HTDemucs builds with cac=True, no multi_freqs, the sin
positional embeddings, dense attention (no sparse attention), norm_first transformer
layers with layer scale, DConv without LSTM/attention, and every layer a frequency
layer paired with a time layer (no merged branches: nfft / 2 / stride^(depth-1) >
kernel_size) -- all released HTDemucs checkpoints. Anything else is a ValueError at
load time. Attention runs as matmul + softmax + matmul a few heads at a time (see
`attention`). Batch size 1 (the normalization statistics are per item), as apply_model
calls it. Browser-safe: no numpy.
"""

from __future__ import annotations

import math
from fractions import Fraction

from ..ops import LOOP_LIMIT, expect
from ..ops import activations as A
from ..ops import conv as CV
from ..ops import elementwise as E
from ..ops import matmul as MM
from ..ops import norm as N
from ..ops import reduce as R
from ..ops import spectral as SP
from ..gpu.runtime import ceil_div
from .layers import floats, upload

# HTDemucs constructor defaults (demucs/htdemucs.py) for the kwargs we read.
DEFAULTS = dict(audio_channels=2, channels=48, channels_time=None, growth=2, nfft=4096, cac=True,
                depth=4, rewrite=True, multi_freqs=None, freq_emb=0.2, emb_scale=10, emb_smooth=True,
                kernel_size=8, time_stride=2, stride=4, context=1, context_enc=0, norm_starts=4,
                norm_groups=4, dconv_mode=1, dconv_depth=2, dconv_comp=8, dconv_init=1e-3,
                bottom_channels=0, t_layers=5, t_emb="sin", t_hidden_scale=4.0, t_heads=8,
                t_norm_in=True, t_norm_in_group=False, t_group_norm=False, t_norm_first=True,
                t_norm_out=True, t_max_period=10000.0, t_layer_scale=True, t_gelu=True,
                t_weight_pos_embed=1.0, t_cross_first=False, t_sin_random_shift=0,
                t_sparse_self_attn=False, t_sparse_cross_attn=False, samplerate=44100,
                segment=10, use_train_segment=True)


def _rows(entry, start, stop):
    """Rows start:stop of a 2-D Entry (or 1-D), as a new Entry (same dtype)."""
    cols = entry.shape[1] if len(entry.shape) == 2 else 1
    item = 4 if entry.dtype == "f32" else 2
    data = entry.data[start * cols * item: stop * cols * item]
    return type(entry)(entry.dtype, (stop - start,) + tuple(entry.shape[1:]), data)


def _run(dev, entry, out, **params):
    """One launch of kernels/htdemucs.wgsl (see its header)."""
    args = dict(n=out.size, len_in=1, len_out=1, lo=0, mode=0, eps=0.0)
    args.update(params)
    bind = {k: args.pop(k) for k in ("x", "m", "s")}
    bind["m"] = bind["m"] if bind["m"] is not None else bind["x"]
    bind["s"] = bind["s"] if bind["s"] is not None else bind["x"]
    dev.run(dev.kernel("htdemucs", entry), ceil_div(out.size, 256), out=out, **bind, **args)
    return out


def reflect_pad(x, lo, hi):
    """torch.nn.functional.pad(x, (lo, hi), mode="reflect") along the last dim."""
    length = x.shape[-1]
    expect("reflect_pad", 0 <= lo < length and 0 <= hi < length,
           f"reflect padding ({lo}, {hi}) needs more than max(lo, hi) samples", x)
    out = x.dev.empty(x.shape[:-1] + (length + lo + hi,))
    return _run(x.dev, "reflect_pad", out, x=x, m=None, s=None, len_in=length, len_out=out.shape[-1], lo=lo)


def standardize(x, mean, std, eps=1e-5):
    """(x - mean) / (eps + std) with 0-d GPU tensors mean and std."""
    return _run(x.dev, "standardize", x.dev.empty(x.shape), x=x, m=mean, s=std, mode=0, eps=eps)


def destandardize(x, mean, std):
    """x * std + mean with 0-d GPU tensors mean and std."""
    return _run(x.dev, "standardize", x.dev.empty(x.shape), x=x, m=mean, s=std, mode=1)


# ---------------------------------------------------------------- layers


def _upload(dev, entry, dtype):
    """Matrices and kernels (2+ dims) stored as dtype; vectors (biases, norm and scale
    parameters) always as f32, which every op takes."""
    return upload(dev, entry, dtype if len(entry.shape) >= 2 else "f32")


class Param:
    """Named GPU tensors of one module: Param(dev, params, "encoder.0.conv", dtype).weight."""

    def __init__(self, dev, params, prefix, dtype, names=("weight", "bias")):
        for n in names:
            setattr(self, n, _upload(dev, params[f"{prefix}.{n}"], dtype))
        self.shape = tuple(params[f"{prefix}.{names[0]}"].shape)


def group_norm(x, p, groups, eps=1e-5):
    """torch GroupNorm(groups, C) with weight/bias p (None: identity). One item's single
    group longer than the norm op's rows (the time branch's DConv: 96 x 85,995 values)
    is normalized with the reduce ops' mean and std instead."""
    if p is None:
        return x
    row = x.size // (x.shape[0] * groups)
    if groups == 1 and x.shape[0] == 1 and 3 * (ceil_div(row, 64) + 1) + 16 > LOOP_LIMIT:
        y = _run(x.dev, "standardize", x.dev.empty(x.shape), x=x, m=R.mean(x), s=R.std(x, unbiased=False),
                 mode=2, eps=eps)
        return E.channel_affine(y, p.weight, p.bias)
    return N.group_norm(x, groups, p.weight, p.bias, eps)


class DConv:
    """demucs.demucs.DConv on [N, C, T]: per layer x += scale * GLU(GN(conv1x1(GELU(GN(conv_k(x))))))
    with dilation 2^d (gelu=True, norm=True: GroupNorm(1, .))."""

    def __init__(self, dev, params, prefix, dtype, depth, zeros):
        self.layers = []
        for d in range(depth):
            q = f"{prefix}.layers.{d}"
            self.layers.append(dict(
                conv0=Param(dev, params, f"{q}.0", dtype), norm1=Param(dev, params, f"{q}.1", dtype),
                conv3=Param(dev, params, f"{q}.3", dtype), norm4=Param(dev, params, f"{q}.4", dtype),
                scale=_upload(dev, params[f"{q}.6.scale"], dtype), dilation=2 ** d))
        self.zeros = zeros

    def __call__(self, x):
        for lay in self.layers:
            k = lay["conv0"].shape[-1]
            d = lay["dilation"]
            y = CV.conv1d(x, lay["conv0"].weight, lay["conv0"].bias, dilation=d, padding=d * (k // 2))
            y = A.gelu(group_norm(y, lay["norm1"], 1))
            y = CV.conv1d(y, lay["conv3"].weight, lay["conv3"].bias)
            y = A.glu(group_norm(y, lay["norm4"], 1), dim=1)
            y = E.channel_affine(y, lay["scale"], self.zeros(lay["scale"].shape[0], lay["scale"].dtype))
            x = E.add(x, y)
        return x


def _dconv_freq(dconv, y):
    """Apply a DConv to [B, C, F, T] per frequency row, as the reference does."""
    B, C, Fr, T = y.shape
    y = E.transpose(y, (0, 2, 1, 3)).reshape(B * Fr, C, T)
    y = dconv(y)
    return E.transpose(y.reshape(B, Fr, C, T), (0, 2, 1, 3))


class EncLayer:
    """demucs.hdemucs.HEncLayer (freq: Conv2d [k, 1] on [B, C, F, T]; else Conv1d)."""

    def __init__(self, m, prefix, kernel_size, stride, freq, pad, norm, dconv):
        dev, params, dtype = m.dev, m.params, m.dtype
        self.freq, self.stride = freq, stride
        self.pad = kernel_size // 4 if pad else 0
        self.conv = Param(dev, params, f"{prefix}.conv", dtype)
        self.norm_groups = m.kw["norm_groups"]
        self.norm1 = Param(dev, params, f"{prefix}.norm1", dtype) if norm else None
        self.rewrite = Param(dev, params, f"{prefix}.rewrite", dtype) if m.kw["rewrite"] else None
        self.norm2 = Param(dev, params, f"{prefix}.norm2", dtype) if norm and self.rewrite else None
        self.dconv = DConv(dev, params, f"{prefix}.dconv", dtype, m.kw["dconv_depth"], m.zeros) if dconv else None

    def __call__(self, x):
        if self.freq:
            y = CV.conv2d(x, self.conv.weight, self.conv.bias, stride=(self.stride, 1), padding=(self.pad, 0))
        else:
            le = x.shape[-1]
            if le % self.stride:
                x = E.pad(x, (0, self.stride - le % self.stride))
            y = CV.conv1d(x, self.conv.weight, self.conv.bias, stride=self.stride, padding=self.pad)
        y = A.gelu(group_norm(y, self.norm1, self.norm_groups))
        if self.dconv:
            y = _dconv_freq(self.dconv, y) if self.freq else self.dconv(y)
        if self.rewrite:
            k = self.rewrite.shape[2]
            pad = (k // 2, k // 2) if self.freq else k // 2
            z = CV.conv2d(y, self.rewrite.weight, self.rewrite.bias, padding=pad) if self.freq else \
                CV.conv1d(y, self.rewrite.weight, self.rewrite.bias, padding=pad)
            return A.glu(group_norm(z, self.norm2, self.norm_groups), dim=1)
        return y


class DecLayer:
    """demucs.hdemucs.HDecLayer (context_freq=True)."""

    def __init__(self, m, prefix, kernel_size, stride, freq, pad, norm, dconv, last):
        dev, params, dtype = m.dev, m.params, m.dtype
        self.freq, self.stride, self.last = freq, stride, last
        self.pad = kernel_size // 4 if pad else 0
        self.norm_groups = m.kw["norm_groups"]
        self.conv_tr = Param(dev, params, f"{prefix}.conv_tr", dtype)
        self.norm2 = Param(dev, params, f"{prefix}.norm2", dtype) if norm else None
        self.rewrite = Param(dev, params, f"{prefix}.rewrite", dtype) if m.kw["rewrite"] else None
        self.norm1 = Param(dev, params, f"{prefix}.norm1", dtype) if norm and self.rewrite else None
        self.dconv = DConv(dev, params, f"{prefix}.dconv", dtype, m.kw["dconv_depth"], m.zeros) if dconv else None

    def __call__(self, x, skip, length):
        """Returns (z, pre): the layer output and the input of the transposed conv."""
        x = E.add(x, skip)
        y = x
        if self.rewrite:
            k = self.rewrite.shape[2]
            y = CV.conv2d(x, self.rewrite.weight, self.rewrite.bias, padding=(k // 2, k // 2)) if self.freq \
                else CV.conv1d(x, self.rewrite.weight, self.rewrite.bias, padding=k // 2)
            y = A.glu(group_norm(y, self.norm1, self.norm_groups), dim=1)
        if self.dconv:
            y = _dconv_freq(self.dconv, y) if self.freq else self.dconv(y)
        if self.freq:
            z = CV.conv_transpose2d(y, self.conv_tr.weight, self.conv_tr.bias, stride=(self.stride, 1))
        else:
            z = CV.conv_transpose1d(y, self.conv_tr.weight, self.conv_tr.bias, stride=self.stride)
        z = group_norm(z, self.norm2, self.norm_groups)
        if self.freq:
            if self.pad:
                z = E.pad(z, (0, 0, -self.pad, -self.pad))
        else:
            z = E.pad(z, (-self.pad, -(z.shape[-1] - self.pad - length)))
        if not self.last:
            z = A.gelu(z)
        return z, y


# ---------------------------------------------------------------- transformer


def sin_embedding(length, dim, max_period=10000.0):
    """demucs.transformer.create_sin_embedding as a flat list [length, dim]."""
    half = dim // 2
    out = []
    for pos in range(length):
        phases = [pos / (max_period ** (a / (half - 1))) for a in range(half)]
        out += [math.cos(p) for p in phases] + [math.sin(p) for p in phases]
    return out


def sin_embedding_2d(d_model, height, width, max_period=10000.0):
    """demucs.transformer.create_2d_sin_embedding rearranged "c fr t1 -> (t1 fr) c", flat."""
    half = d_model // 2
    div = [math.exp(i * -(math.log(max_period) / half)) for i in range(0, half, 2)]
    col_w = []  # per width position: the first half (sin/cos of the time position)
    for w in range(width):
        v = [0.0] * half
        for j, dv in enumerate(div):
            v[2 * j], v[2 * j + 1] = math.sin(w * dv), math.cos(w * dv)
        col_w.append(v)
    col_h = []
    for h in range(height):
        v = [0.0] * half
        for j, dv in enumerate(div):
            v[2 * j], v[2 * j + 1] = math.sin(h * dv), math.cos(h * dv)
        col_h.append(v)
    out = []
    for w in range(width):
        for h in range(height):
            out += col_w[w] + col_h[h]
    return out


SCORES = 1 << 24  # attention scores held at once (64 MB of f32)


def attention(q, k, v):
    """softmax(q k^T / sqrt(D)) v over q, k, v [B, H, L, D], as matmuls and a softmax
    (on lavapipe much faster than the fused kernel for these long sequences), a few
    heads at a time so that at most SCORES scores exist at once."""
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    q = E.scale(q, 1.0 / math.sqrt(D)).reshape(B * H, Lq, D)
    k, v = k.reshape(B * H, Lk, D), v.reshape(B * H, Lk, D)
    step = max(1, SCORES // (Lq * Lk))
    outs = []
    for h in range(0, B * H, step):
        crop = (0, 0, 0, 0, -h, -max(0, B * H - h - step))
        one = (lambda t: t) if step >= B * H else (lambda t: E.pad(t, crop))  # noqa: E731
        p = A.softmax(MM.matmul(one(q), one(k), trans_b=True), dim=-1)
        outs.append(MM.matmul(p, one(v)))
    o = outs[0] if len(outs) == 1 else E.concat(outs, dim=0)
    return o.reshape(B, H, Lq, D)


class Attention:
    """torch.nn.MultiheadAttention (batch_first) with q/k/v projections split from in_proj."""

    def __init__(self, m, prefix, heads):
        dev, params, dtype = m.dev, m.params, m.dtype
        w, b = params[f"{prefix}.in_proj_weight"], params[f"{prefix}.in_proj_bias"]
        c = w.shape[1]
        self.heads = heads
        self.q, self.k, self.v = ((_upload(dev, _rows(w, i * c, (i + 1) * c), dtype),
                                   _upload(dev, _rows(b, i * c, (i + 1) * c), dtype)) for i in range(3))
        self.out_proj = Param(dev, params, f"{prefix}.out_proj", dtype)

    def _heads(self, x, wb):
        B, L, C = x.shape
        y = MM.linear(x, wb[0], wb[1]).reshape(B, L, self.heads, C // self.heads)
        return E.transpose(y, (0, 2, 1, 3))

    def __call__(self, q, kv):
        B, L, C = q.shape
        o = attention(self._heads(q, self.q), self._heads(kv, self.k), self._heads(kv, self.v))
        o = E.transpose(o, (0, 2, 1, 3)).reshape(B, L, C)
        return MM.linear(o, self.out_proj.weight, self.out_proj.bias)


class TransformerLayer:
    """MyTransformerEncoderLayer (cross=False) or CrossTransformerEncoderLayer (cross=True),
    norm_first with layer scale, GELU feed-forward, MyGroupNorm(1) norm_out."""

    def __init__(self, m, prefix, cross):
        dev, params, dtype = m.dev, m.params, m.dtype
        self.cross = cross
        self.attn = Attention(m, f"{prefix}.{'cross_attn' if cross else 'self_attn'}", m.kw["t_heads"])
        self.linear1 = Param(dev, params, f"{prefix}.linear1", dtype)
        self.linear2 = Param(dev, params, f"{prefix}.linear2", dtype)
        self.norm1 = Param(dev, params, f"{prefix}.norm1", dtype)
        self.norm2 = Param(dev, params, f"{prefix}.norm2", dtype)
        self.norm3 = Param(dev, params, f"{prefix}.norm3", dtype) if cross else None
        self.norm_out = Param(dev, params, f"{prefix}.norm_out", dtype) if m.kw["t_norm_out"] else None
        self.gamma_1 = _upload(dev, params[f"{prefix}.gamma_1.scale"], dtype)
        self.gamma_2 = _upload(dev, params[f"{prefix}.gamma_2.scale"], dtype)
        self.act = "gelu" if m.kw["t_gelu"] else "relu"

    def __call__(self, x, k=None):
        C = x.shape[-1]
        ln = lambda t, p: N.layer_norm(t, C, p.weight, p.bias)  # noqa: E731
        if self.cross:
            a = self.attn(ln(x, self.norm1), ln(k, self.norm2))
            ff_norm = self.norm3
        else:
            h = ln(x, self.norm1)
            a = self.attn(h, h)
            ff_norm = self.norm2
        x = E.add(x, E.mul(a, self.gamma_1))
        h = MM.linear(ln(x, ff_norm), self.linear1.weight, self.linear1.bias, act=self.act)
        x = E.add(x, E.mul(MM.linear(h, self.linear2.weight, self.linear2.bias), self.gamma_2))
        if self.norm_out is not None:  # GroupNorm(1, C) over (T, C) of each batch item
            x = E.add(E.mul(N.layer_norm(x, x.shape[1:]), self.norm_out.weight), self.norm_out.bias)
        return x


class CrossTransformer:
    """demucs.transformer.CrossTransformerEncoder (emb="sin", norm_in=True)."""

    def __init__(self, m, prefix):
        dev, params, dtype = m.dev, m.params, m.dtype
        kw = m.kw
        self.dev = dev
        self.norm_in = Param(dev, params, f"{prefix}.norm_in", dtype)
        self.norm_in_t = Param(dev, params, f"{prefix}.norm_in_t", dtype)
        parity = 1 if kw["t_cross_first"] else 0
        self.layers = [TransformerLayer(m, f"{prefix}.layers.{i}", i % 2 != parity) for i in range(kw["t_layers"])]
        self.layers_t = [TransformerLayer(m, f"{prefix}.layers_t.{i}", i % 2 != parity)
                         for i in range(kw["t_layers"])]
        self.max_period = kw["t_max_period"]
        self.weight = kw["t_weight_pos_embed"]
        self._emb = {}

    def _embedding(self, key, make):
        if key not in self._emb:
            self._emb[key] = self.dev.tensor([v * self.weight for v in make()], key[1:])
        return self._emb[key]

    def __call__(self, x, xt):
        B, C, Fr, T1 = x.shape
        T2 = xt.shape[-1]
        pos2d = self._embedding(("2d", T1 * Fr, C), lambda: sin_embedding_2d(C, Fr, T1, self.max_period))
        pos1d = self._embedding(("1d", T2, C), lambda: sin_embedding(T2, C, self.max_period))
        x = E.transpose(x, (0, 3, 2, 1)).reshape(B, T1 * Fr, C)
        x = E.add(N.layer_norm(x, C, self.norm_in.weight, self.norm_in.bias), pos2d)
        xt = E.transpose(xt, (0, 2, 1))
        xt = E.add(N.layer_norm(xt, C, self.norm_in_t.weight, self.norm_in_t.bias), pos1d)
        for lay, lay_t in zip(self.layers, self.layers_t):
            if lay.cross:
                x, xt = lay(x, xt), lay_t(xt, x)
            else:
                x, xt = lay(x), lay_t(xt)
        x = E.transpose(x.reshape(B, T1, Fr, C), (0, 3, 2, 1))
        return x, E.transpose(xt, (0, 2, 1))


# ---------------------------------------------------------------- the model


class HTDemucs:
    """One HTDemucs network. `params`: {name: Entry} (prefix stripped by the caller, or
    given as `prefix`), `kwargs`: the constructor kwargs recorded in the checkpoint,
    `dtype`: "f32" or "f16" storage for the weights on the GPU (math stays f32)."""

    def __init__(self, dev, params, kwargs, sources=None, dtype="f32", prefix=""):
        kw = dict(DEFAULTS)
        kw.update(kwargs)
        if prefix:
            params = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
        for bad, why in ((not kw["cac"], "cac=False"), (bool(kw["multi_freqs"]), "multi_freqs"),
                         (kw["t_emb"] != "sin", f"t_emb={kw['t_emb']!r}"),
                         (kw["t_sparse_self_attn"] or kw["t_sparse_cross_attn"], "sparse attention"),
                         (not kw["t_norm_first"], "t_norm_first=False"), (not kw["t_norm_in"], "t_norm_in=False"),
                         (bool(kw["t_group_norm"]), "t_group_norm"), (not kw["t_layer_scale"], "t_layer_scale=False"),
                         (kw["t_sin_random_shift"] != 0, "t_sin_random_shift")):
            if bad:
                raise ValueError(f"HTDemucs: {why} is not supported")
        self.dev, self.params, self.dtype, self.kw = dev, params, dtype, kw
        self.sources = list(sources if sources is not None else kw["sources"])
        self.audio_channels = kw["audio_channels"]
        self.samplerate = kw["samplerate"]
        self.segment = float(kw["segment"])
        self.use_train_segment = kw["use_train_segment"]
        self.nfft = kw["nfft"]
        self.hop_length = self.nfft // 4
        self.depth = kw["depth"]
        self._zeros = {}
        self.window = SP.hann_window(dev, self.nfft)

        # Every layer of the released models is a frequency layer (Conv2d [k, 1]) paired
        # with a time layer (Conv1d): nfft / 2 / stride^(depth - 1) > kernel_size. The
        # reference's merged layers below that (an empty time layer injected into the
        # last frequency one) are not supported.
        freqs = self.nfft // 2 // kw["stride"] ** (self.depth - 1)
        if freqs <= kw["kernel_size"]:
            raise ValueError(f"HTDemucs: depth {self.depth} with nfft {self.nfft} merges the time and "
                             "frequency branches, which is not supported")
        layer = dict(kernel_size=kw["kernel_size"], stride=kw["stride"], pad=True)
        self.encoder, self.decoder, self.tencoder, self.tdecoder = [], [], [], []
        for i in range(self.depth):
            norm = i >= kw["norm_starts"]
            enc = dict(layer, norm=norm, dconv=kw["dconv_mode"] & 1)
            dec = dict(layer, norm=norm, dconv=kw["dconv_mode"] & 2, last=i == self.depth - 1)
            self.encoder.append(EncLayer(self, f"encoder.{i}", freq=True, **enc))
            self.tencoder.append(EncLayer(self, f"tencoder.{i}", freq=False, **enc))
            self.decoder.append(DecLayer(self, f"decoder.{i}", freq=True, **dec))
            self.tdecoder.append(DecLayer(self, f"tdecoder.{i}", freq=False, **dec))

        self.freq_emb = None
        if kw["freq_emb"]:
            w = params["freq_emb.embedding.weight"]  # [F after encoder 0, C]
            scale = kw["freq_emb"] * kw["emb_scale"]
            vals, (nf, c) = floats(w), w.shape
            # [C, F]: added to x transposed to [B, T, C, F] (broadcast over B and T)
            self.freq_emb = dev.tensor([vals[f * c + ch] * scale for ch in range(c) for f in range(nf)], (c, nf))
        self.channel_upsampler = None
        if kw["bottom_channels"]:
            for n in ("channel_upsampler", "channel_downsampler", "channel_upsampler_t", "channel_downsampler_t"):
                setattr(self, n, Param(dev, params, n, dtype))
        self.crosstransformer = CrossTransformer(self, "crosstransformer") if kw["t_layers"] > 0 else None

    def zeros(self, n, dtype):
        if (n, dtype) not in self._zeros:
            self._zeros[(n, dtype)] = self.dev.tensor([0.0] * n, (n,), dtype)
        return self._zeros[(n, dtype)]

    @property
    def training_length(self) -> int:
        """int(segment * samplerate) as demucs computes it with segment a Fraction (the
        checkpoint's Fraction(39, 5) is recorded as the float 7.8)."""
        return int(Fraction(self.segment).limit_denominator(1000) * self.samplerate)

    # ------------------------------------------------------------ STFT framing

    def _spec(self, mix):
        """HTDemucs._spec + _magnitude (cac): mix [B, C, L] -> [B, 2C, F, le]."""
        B, C, L = mix.shape
        hl, nfft = self.hop_length, self.nfft
        le = ceil_div(L, hl)
        pad = hl // 2 * 3
        x = reflect_pad(mix.reshape(B * C, L), pad, pad + le * hl - L)
        z = SP.stft(x, nfft, hl, window=self.window, normalized=True)  # [BC, F + 1, le + 4, 2]
        z = E.pad(z, (0, 0, -2, -(z.shape[2] - 2 - le), 0, -1))       # [BC, F, le, 2]
        z = E.transpose(z.reshape(B, C, nfft // 2, le, 2), (0, 1, 4, 2, 3))
        return z.reshape(B, 2 * C, nfft // 2, le)

    def _ispec(self, x, length):
        """HTDemucs._mask (cac) + _ispec: x [B, S, 2C, F, T] -> [B, S, C, length]."""
        B, S, C2, Fq, T = x.shape
        hl = self.hop_length
        z = E.transpose(x.reshape(B * S * C2 // 2, 2, Fq, T), (0, 2, 3, 1))  # [.., F, T, 2]
        z = E.pad(z, (0, 0, 2, 2, 0, 1))
        pad = hl // 2 * 3
        le = hl * ceil_div(length, hl) + 2 * pad
        y = SP.istft(z, self.nfft, hl, window=self.window, normalized=True, length=le)
        y = E.pad(y, (-pad, -(le - pad - length)))
        return y.reshape(B, S, C2 // 2, length)

    # ------------------------------------------------------------ forward

    def forward(self, mix, trace=None):
        """The reference HTDemucs.forward in eval mode: mix [B, C, L] -> [B, S, C, L].
        trace: optional dict that receives intermediate tensors by name."""
        keep = (lambda k, t: trace.__setitem__(k, t)) if trace is not None else (lambda k, t: None)
        expect("HTDemucs", mix.ndim == 3 and mix.shape[0] == 1 and mix.shape[1] == self.audio_channels,
               f"mix must be [1, {self.audio_channels}, L] (one item: the statistics are per item)", mix)
        length = mix.shape[-1]
        length_pre_pad = None
        if self.use_train_segment and length < self.training_length:
            length_pre_pad = length
            mix = E.pad(mix, (0, self.training_length - length))
        length = mix.shape[-1]
        x = self._spec(mix)
        B, _, Fq, T = x.shape
        mean, std = R.mean(x), R.std(x)
        x = standardize(x, mean, std)
        meant, stdt = R.mean(mix), R.std(mix)
        xt = standardize(mix, meant, stdt)

        saved, saved_t, lengths, lengths_t = [], [], [], []
        for idx, (encode, tencode) in enumerate(zip(self.encoder, self.tencoder)):
            lengths.append(x.shape[-1])
            lengths_t.append(xt.shape[-1])
            xt = tencode(xt)
            x = encode(x)
            if idx == 0 and self.freq_emb is not None:
                y = E.add(E.transpose(x, (0, 3, 1, 2)), self.freq_emb)
                x = E.transpose(y, (0, 2, 3, 1))
            keep(f"encoder.{idx}", x)
            keep(f"tencoder.{idx}", xt)
            saved.append(x)
            saved_t.append(xt)

        if self.crosstransformer is not None:
            if self.channel_upsampler is not None:
                b, c, f, t = x.shape
                x = self._conv1x1(x.reshape(b, c, f * t), self.channel_upsampler).reshape(b, -1, f, t)
                xt = self._conv1x1(xt, self.channel_upsampler_t)
            x, xt = self.crosstransformer(x, xt)
            if self.channel_upsampler is not None:
                b, c, f, t = x.shape
                x = self._conv1x1(x.reshape(b, c, f * t), self.channel_downsampler).reshape(b, -1, f, t)
                xt = self._conv1x1(xt, self.channel_downsampler_t)
            keep("crosstransformer", x)
            keep("crosstransformer_t", xt)

        for idx, (decode, tdecode) in enumerate(zip(self.decoder, self.tdecoder)):
            x, _ = decode(x, saved.pop(-1), lengths.pop(-1))
            xt, _ = tdecode(xt, saved_t.pop(-1), lengths_t.pop(-1))
            keep(f"decoder.{idx}", x)
            keep(f"tdecoder.{idx}", xt)

        S = len(self.sources)
        x = destandardize(x, mean, std).reshape(B, S, -1, Fq, T)
        x = self._ispec(x, length)
        xt = destandardize(xt, meant, stdt).reshape(B, S, -1, length)
        out = E.add(xt, x)
        if length_pre_pad:
            out = E.pad(out, (0, length_pre_pad - length))
        return out

    @staticmethod
    def _conv1x1(x, p):
        return CV.conv1d(x, p.weight, p.bias)
