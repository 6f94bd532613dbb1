"""The Demixer stream for Open-Unmix models (umxl): pycore.demix's push/finish contract.

The computation is openunmix's Separator on the whole track (pycore/models/umx.py), whose
bidirectional LSTM reads every frame before it can emit the first, so no output is final
before finish(): push() only keeps the audio (host memory O(track), 0.35 MB per second
of stereo float32) and finish() separates. GPU memory does not grow with the track:
everything runs in windows of 300 frames (the Wiener filter's own windows,
wiener_win_len, so the result is unchanged), and the per-frame sequences live on the host:

  pass 1, per window: STFT of the window's audio (reflect padding at the track's ends
          only), magnitudes, every model's features (fc1, bn1, tanh) -> host [T, hidden]
  per target: the 3-layer BiLSTM, exactly, in chunks of 300 frames (UmxStream._sequence):
          per layer the forward direction runs the chunks first to last carrying its
          (h, c), the reverse direction last to first carrying its own; each layer's
          outputs go to the host and come back chunk by chunk as the next layer's input;
          then skip connection, fc2, bn2, relu -> z, host [T, hidden]
  pass 2, per window: the STFT again, each model's fc3, bn3, output scaling and mask
          on its rows of z, the Wiener filter, the inverse STFT's overlap-add; the
          3,072 samples that overlap the next window are carried, the rest is divided by
          the whole track's squared-window envelope and read back.

Each pass's windows replay one recorded plan (pycore.gpu.runtime.Plan): in pass 1 every
full window, in pass 2 every window but the first and the last (which differ in what
they emit); between replays only the inputs' contents change (the chunk, the rows of z,
the window's position for the envelope, the carry the plan itself writes). A plan is
released before an eager window runs, so GPU memory stays that of one window.

openunmix itself (Separator, predict.separate) runs the whole track at once. Host
memory: the audio, the output, and for umxl 16 KiB per frame for the four targets' z
plus 12 KiB for the target in its LSTM (staged_bytes_per_frame; 1.2 MB per second), which
pycore.demix.files checks against the available memory before starting.

STFT frame t covers samples 1024 t - 2048 .. 1024 t + 2047 of the track (centered);
window k = frames 300 k .. 300 k + 299 needs samples 307200 k - 2048 .. 307200 k +
307200 + 1023, with the reference's reflect padding before sample 0 and after L - 1.
"""

from __future__ import annotations

import array
import os

from ..audio.buffers import as_f32, flat_f32, is_numpy, to_caller
from ..models.umx import HOP, N_FFT, WIENER_EPS, Separator, targets_of
from ..ops.elementwise import concat, pad, transpose
from ..ops.rnn import lstm
from ..ops.spectral import istft, stft
from ..ops.spectral_mask import magnitude, overlap_finish, position_bytes
from ..ops.wiener import wiener
from ..weights import model_file
from ..weights.safetensors import load as load_safetensors
from .base import Cancelled, Demixer, check_channels, checked_block, file_architecture, register

LEAD = N_FFT // 2                 # the centered STFT's padding before sample 0
CARRY = N_FFT - HOP               # overlap-add samples shared by neighbouring windows
MIN_LENGTH = LEAD + 1             # reflect padding of 2048 needs more than 2048 samples
LSTM_CHUNK = 300                  # frames per chunk of the BiLSTM (see UmxStream._sequence)


@register
class UmxDemixer(Demixer):
    """Open-Unmix: one BiLSTM mask network per target, then the Wiener filter
    (pycore.models.umx). The whole track is held on the host until finish()."""

    family = "umx"
    models = {"umxl": {"stems": ["vocals", "drums", "bass", "other"], "sample_rate": 44100}}
    file_format = "openunmix"

    @classmethod
    def match_file(cls, metadata: dict) -> tuple:
        """Open-Unmix files list their targets in any order: any umx model with the same
        set (its own name first)."""
        stems = file_architecture(metadata).get("targets")
        names = [metadata.get("model")] + list(cls.models)
        return stems, next((m for m in names if m in cls.models and set(stems or ()) == set(cls.models[m]["stems"])),
                           None)

    @classmethod
    async def open(cls, dev, name, weights, dtype) -> "UmxDemixer":
        """weights: None (natively: what `stemtone weights fetch NAME` wrote), a path,
        the safetensors file's bytes, or a dict of tensors."""
        weights = model_file(name) if weights is None else weights
        weights = weights if isinstance(weights, dict) else load_safetensors(weights)
        stems = cls.models[name]["stems"]
        if set(targets_of(weights)) != set(stems):
            raise ValueError(f"{name}: the weights hold targets {targets_of(weights)}, expected {stems}")
        return cls(dev, Separator(dev, weights, stems, dtype), name, stems, cls.models[name]["sample_rate"])

    def open_stream(self, channels: int, wanted=None) -> "UmxStream":
        return UmxStream(self, channels)

    def host_bytes(self, frames: int, channels: int) -> int:
        """The audio, the per-frame LSTM sequences staged on the host and the whole
        output, all float32, for `frames` samples at the model's rate."""
        groups = (channels + 1) // 2
        stems = len(self.stems)
        return 4 * frames * channels * (1 + stems) + groups * staged_bytes_per_frame(self) * frame_count(frames)


def frame_count(length: int) -> int:
    return 1 + length // HOP


class UmxStream:
    """push() keeps the audio, finish() separates it (see the module docstring)."""

    stems = property(lambda self: self.demixer.stems)

    def __init__(self, demixer, channels: int):
        check_channels(channels)
        self.demixer = demixer
        self.channels = channels
        self._audio = [array.array("f") for _ in range(channels)]
        self._done = False
        self.lstm_chunk = LSTM_CHUNK  # frames per LSTM chunk (GPU memory; the result is the same)
        self._carry = None            # [J * 2, CARRY] overlap-add tail of the last window (GPU)
        self.segments_done = 0
        self.numpy_kind = False

    async def push(self, block, progress=None, should_cancel=None) -> dict:
        """Append a block (list of channel arrays of one length, possibly 0). Nothing is
        final before finish(): returns zero-length arrays."""
        block = checked_block(block, self.channels, self._done)
        self.numpy_kind = is_numpy(block[0])
        for buf, ch in zip(self._audio, block):
            buf.extend(as_f32(ch))
        return self._result(self._empty())

    async def finish(self, progress=None, should_cancel=None) -> dict:
        """Separate everything pushed; returns the whole output."""
        if self._done:
            raise RuntimeError("demix: finish() called twice")
        self._done = True
        audio, self._audio = self._audio, []
        L = len(audio[0])
        out = self._empty()
        if L == 0:
            return self._result(out)
        if L < MIN_LENGTH:
            raise ValueError(f"demix: {self.demixer.name} needs at least {MIN_LENGTH} samples "
                             f"(its STFT's reflect padding), got {L}")
        if self.channels == 1:
            audio = [audio[0], audio[0]]
        models = self.demixer.model.models
        T = frame_count(L)
        win = self.demixer.model.wiener_win
        windows = [(a, min(T, a + win)) for a in range(0, T, win)]
        steps = 2 * len(windows) + len(models)
        done = 0

        def tick(message):
            nonlocal done
            if should_cancel is not None and should_cancel():
                raise Cancelled("separation cancelled")
            done += 1
            self.segments_done = done
            if progress is not None:
                progress(min(1.0, done / steps), message)

        # pass 1: every model's frame-local features, window by window, to the host;
        # the full windows replay one plan (chunk in, features out), a partial last one
        # runs eagerly
        dev = self.demixer.dev
        feats = [bytearray(4 * T * m.hidden_size) for m in models]
        plan = None
        try:
            for k, (a, b) in enumerate(windows):
                tick(f"spectrogram {k + 1} of {len(windows)}")
                raw = _chunk(audio, a, b)
                if b - a == win:
                    if plan is None:
                        plan = _Recorded(dev, self._features, [(2, len(raw) // 8)])
                    fs = plan.run([raw])
                else:
                    plan = _release(plan)                               # its memory, before this one's
                    chunk = dev.tensor(raw, (2, len(raw) // 8))
                    fs = self._features(chunk)
                    chunk.release()
                for buf, model, f in zip(feats, models, fs):
                    await _store(dev, f, buf, a, model.hidden_size, release=plan is None)
        finally:
            plan = _release(plan)
        # the LSTMs over the whole sequence, one target at a time, in time chunks
        seqs = []
        for j, (model, name) in enumerate(zip(models, self.demixer.stems)):
            tick(f"{name}: LSTM over {T} frames")
            seqs.append(await self._sequence(model, feats[j], T))
            feats[j] = None
        # pass 2: masks, Wiener filter and overlap-add, window by window; the middle
        # windows (all full, with a carry before and after) replay one plan
        rows = self.channels
        self._carry = None
        position = dev.empty((2,), "u32")
        try:
            for k, (a, b) in enumerate(windows):
                tick(f"Wiener filter {k + 1} of {len(windows)}")
                last = k == len(windows) - 1
                start = LEAD if k == 0 else 0                           # output sample 0 = ola[2048]
                end = L + LEAD - a * HOP if last else win * HOP
                raws = [_chunk(audio, a, b)] + [_rows(z, a, b, m.hidden_size) for z, m in zip(seqs, models)]
                dev.write(position, position_bytes(a * HOP, T))
                if 0 < k and not last:
                    if plan is None:
                        shapes = [(2, len(raws[0]) // 8)] + [(win, m.hidden_size) for m in models]
                        plan = _Recorded(dev, lambda chunk, *zs: self._masked(chunk, zs, 0, win * HOP, position,
                                                                              True, True), shapes)
                    y = plan.run(raws)
                else:
                    plan = _release(plan)
                    inputs = [dev.tensor(raws[0], (2, len(raws[0]) // 8))]
                    inputs += [dev.tensor(r, (b - a, m.hidden_size)) for r, m in zip(raws[1:], models)]
                    y = self._masked(inputs[0], inputs[1:], start, end - start, position, k > 0, not last)
                    for t in inputs:
                        t.release()
                host = flat_f32(await dev.read(y))
                if plan is None:
                    y.release()
                n = end - start
                for j, stem in enumerate(self.demixer.stems):
                    for c in range(rows):
                        out[stem][c].extend(host[(j * rows + c) * n:(j * rows + c + 1) * n])
        finally:
            _release(plan)
            position.release()
            if self._carry is not None:
                self._carry.release()
                self._carry = None
        return self._result(out)

    async def _sequence(self, model, feats, T) -> bytearray:
        """z = model.post(x, BiLSTM(x)) for every frame, x = feats (host, [T, hidden]).

        Exactly the whole-sequence BiLSTM, in chunks of `lstm_chunk` frames so that GPU
        memory does not grow with the track: per layer, the forward direction runs the
        chunks first to last carrying its (h, c), the reverse direction last to first
        (each chunk's rows reversed on the host) carrying its own; each layer's outputs
        are staged on the host and read back chunk by chunk as the next layer's input."""
        dev = self.demixer.dev
        H, chunk = model.lstm_hidden, self.lstm_chunk
        spans = [(a, min(T, a + chunk)) for a in range(0, T, chunk)]
        inputs, widths = [feats], [model.hidden_size]
        for layer in range(model.nb_layers):
            outs = []
            for reverse in ((False, True) if model.bidirectional else (False,)):
                weights = model.direction(layer, reverse)
                out, h, c = bytearray(4 * T * H), None, None
                for a, b in (reversed(spans) if reverse else spans):
                    x = _upload(dev, inputs, widths, a, b, reverse)
                    y, (h_n, c_n) = lstm(x.reshape(b - a, 1, x.shape[1]), weights, H, 1, h0=h, c0=c)
                    x.release()
                    for t in (h, c):
                        if t is not None:
                            t.release()
                    h, c = h_n, c_n
                    await _store(dev, y, out, a, H, reverse)
                h.release()
                c.release()
                outs.append(out)
            inputs, widths = outs, [H] * len(outs)
        z = bytearray(4 * T * model.hidden_size)
        for a, b in spans:
            x = _upload(dev, [feats], [model.hidden_size], a, b)
            seq = _upload(dev, inputs, widths, a, b)
            await _store(dev, model.post(x, seq), z, a, model.hidden_size)
            x.release()
            seq.release()
        return z

    # ---- internals

    def _spectrum(self, chunk):
        """STFT of a window's audio chunk [2, samples] -> (X [2, 2049, n, 2], mix [n, 2, 2049])."""
        X = stft(chunk, N_FFT, HOP, center=False)
        mag = magnitude(X, N_FFT // 2 + 1)                              # [1, 2, n, 2049]
        mix = transpose(mag.reshape(mag.shape[1:]), (1, 0, 2))          # [n, 2, 2049]
        mag.release()
        return X, mix

    def _features(self, chunk) -> list:
        """Pass 1 on one window: every model's features [n, hidden] of the chunk's frames."""
        X, mix = self._spectrum(chunk)
        X.release()
        fs = [model.features(mix) for model in self.demixer.model.models]
        mix.release()
        return fs

    def _masked(self, chunk, zs, start, count, position, carry, tail):
        """Pass 2 on one window: the chunk's audio and every model's z [n, hidden] ->
        output samples start .. start + count - 1 of every stem [J * C, count] (masks,
        Wiener filter, overlap-add, envelope at `position`); self._carry is read if
        `carry` and then holds this window's tail if `tail`."""
        models, win = self.demixer.model.models, self.demixer.model.wiener_win
        X, mix = self._spectrum(chunk)
        est = []
        for z, model in zip(zs, models):
            s = model.spectrogram(z, mix)
            est.append(s.reshape(1, *s.shape))
        mix.release()
        mags = concat(est, dim=0)                                       # [J, n, 2, 2049]
        for s in est:
            s.release()
        Y = wiener(X, mags, win=win, eps=WIENER_EPS)                    # [J * 2, 2049, n, 2]
        X.release()
        mags.release()
        ola = istft(Y, N_FFT, HOP, center=False, envelope=False)        # [J * 2, 1024 n + 3072]
        Y.release()
        y = overlap_finish(ola, self._carry if carry else None, start, count, None, None, N_FFT, HOP,
                           mix=2 // self.channels, position=position)
        if tail:
            if self._carry is None:
                self._carry = self.demixer.dev.empty((ola.shape[0], CARRY))
            pad(ola, (-win * HOP, 0), out=self._carry)                 # ola[:, 1024 win:]
        ola.release()
        return y

    def _empty(self):
        return {stem: [array.array("f") for _ in range(self.channels)] for stem in self.demixer.stems}

    def _result(self, out):
        return {stem: [to_caller(a, self.numpy_kind) for a in chans] for stem, chans in out.items()}


def staged_bytes_per_frame(demixer) -> int:
    """Host bytes per STFT frame that finish() stages (the peak, during the last
    target's LSTM): every earlier target's z, and the current one's features, layer
    input and layer output (float32, hidden features each)."""
    models = demixer.model.models
    return sum(4 * m.hidden_size for m in models) + 3 * 4 * max(m.hidden_size for m in models)


def _rows(buf, a: int, b: int, width: int, reverse=False) -> bytes:
    """Rows a .. b-1 of a host [T, width] float32 buffer (in reverse order if asked)."""
    rb = 4 * width
    if not reverse:
        return bytes(buf[a * rb:b * rb])
    mv = memoryview(buf)
    return b"".join(mv[t * rb:(t + 1) * rb] for t in range(b - 1, a - 1, -1))


def _upload(dev, bufs, widths, a, b, reverse=False):
    """Rows a .. b-1 of host buffers [T, widths[i]] side by side on the GPU: [b - a, sum(widths)]."""
    parts = [dev.tensor(_rows(buf, a, b, w, reverse), (b - a, w)) for buf, w in zip(bufs, widths)]
    if len(parts) == 1:
        return parts[0]
    x = concat(parts, dim=1)
    for p in parts:
        p.release()
    return x


async def _store(dev, t, buf, a: int, width: int, reverse=False, release=True):
    """Read t ([n, width] or [n, 1, width]) into rows a .. a+n-1 of a host buffer; release t
    (unless a plan's output)."""
    host = flat_f32(await dev.read(t)).tobytes()
    if release:
        t.release()
    n = len(host) // (4 * width)
    if reverse:
        host = _rows(host, 0, n, width, reverse=True)
    buf[4 * width * a:4 * width * (a + n)] = host


class _Recorded:
    """fn(*inputs) on tensors of fixed shapes, recorded as a plan on the first run() and
    replayed on every run: run(raws) writes the inputs' bytes and returns fn's outputs
    (the plan's: valid until the next run or release())."""

    def __init__(self, dev, fn, shapes):
        self.dev = dev
        self.inputs = [dev.empty(shape) for shape in shapes]
        self.plan = dev.plan()
        with self.plan:
            self.outputs = fn(*self.inputs)

    def run(self, raws):
        for t, raw in zip(self.inputs, raws):
            self.dev.write(t, raw)
        self.plan.replay()
        return self.outputs

    def release(self):
        self.plan.release()
        for t in self.inputs:
            t.release()


def _release(recorded):
    """Release a _Recorded (or None); returns None."""
    if recorded is not None:
        recorded.release()
    return None


def _chunk(audio, a: int, b: int) -> bytes:
    """The stereo audio STFT frames a .. b-1 cover (float32 bytes of [2, samples])."""
    lo, hi = a * HOP - LEAD, (b - 1) * HOP + LEAD                      # samples lo .. hi-1
    return b"".join(_reflected(ch, lo, hi).tobytes() for ch in audio)


def _reflected(ch: array.array, lo: int, hi: int) -> array.array:
    """Samples lo .. hi-1 of a channel with torch's reflect padding beyond either end
    (x[-i] = x[i], x[L - 1 + i] = x[L - 1 - i]; needs lo > -L and hi < 2 L - 1)."""
    L = len(ch)
    out = array.array("f")
    if lo < 0:
        head = ch[1:1 - lo]
        head.reverse()
        out.extend(head)
    out.extend(ch[max(lo, 0):min(hi, L)])
    if hi > L:
        tail = ch[L - 1 - (hi - L):L - 1]
        tail.reverse()
        out.extend(tail)
    return out
