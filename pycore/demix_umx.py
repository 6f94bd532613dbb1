"""The Demixer stream for Open-Unmix models (umxl): pycore.demix's push/finish contract.

The computation is openunmix's Separator on the whole track (pycore/models/umx.py), whose
bidirectional LSTM reads every frame before it can emit the first, so no output is final
before finish(): push() only keeps the audio (host memory O(track), 0.35 MB per second
of stereo float32) and finish() separates. On the GPU, what grows with the track is the
LSTM's part, and everything else runs in windows of 300 frames (the Wiener filter's own
windows, wiener_win_len, so the result is unchanged):

  pass 1, per window: STFT of the window's audio (reflect padding at the track's ends
          only), magnitudes, every model's features (fc1, bn1, tanh): [frames, 1024]
  per target: the 3-layer BiLSTM over the whole sequence, skip connection, fc2, bn2,
          relu -> z [T, 1024] (4 KiB per frame per target, kept until the end)
  pass 2, per window: the STFT again, each model's fc3, bn3, output scaling and mask
          on its rows of z, the Wiener filter, the inverse STFT's overlap-add; the
          3,072 samples that overlap the next window are carried, the rest is divided by
          the whole track's squared-window envelope and read back.

So GPU memory is a constant (the weights, 431 MiB for umxl, plus ~103 MiB for a
window's STFTs and filter) plus the sequence memory, 16 KiB per frame (0.69 MB per
second of audio: the four targets' features or z): measured natively (umxl, random
weights) 540.0 MiB peak for 8 s and 542.7 MiB for 12 s, which extrapolates to ~575 MiB
for 1 minute and ~940 MiB for 10 minutes. Not flat: the exact BiLSTM needs the whole
sequence; a flat variant would keep z on the host, or run the LSTM directions in time
chunks carrying (h, c) with the sequences on the host.

STFT frame t covers samples 1024 t - 2048 .. 1024 t + 2047 of the track (centered);
window k = frames 300 k .. 300 k + 299 needs samples 307200 k - 2048 .. 307200 k +
307200 + 1023, with the reference's reflect padding before sample 0 and after L - 1.
"""

from __future__ import annotations

import array
import os

from . import models as _models
from .demix import Cancelled, _f32, _flat_f32, _is_numpy, _out
from .models.umx import HOP, N_FFT, WIENER_EPS
from .ops.elementwise import concat, pad, transpose
from .ops.spectral import istft, stft
from .ops.spectral_mask import magnitude, overlap_finish
from .ops.wiener import wiener

LEAD = N_FFT // 2                 # the centered STFT's padding before sample 0
CARRY = N_FFT - HOP               # overlap-add samples shared by neighbouring windows
MIN_LENGTH = LEAD + 1             # reflect padding of 2048 needs more than 2048 samples


def weights_file(name: str) -> str:
    """Native: the model's weights file: the one weights/manifest.json lists for it, else
    weights/<name>.safetensors (what `stemtone weights fetch <name>` writes)."""
    try:
        return _models.weights_path(name)
    except (ValueError, OSError):  # not listed, or listed but missing
        pass
    path = os.path.join(_models.WEIGHTS_DIR, f"{name}.safetensors")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing; run `stemtone weights fetch {name}` first")
    return path


def frame_count(length: int) -> int:
    return 1 + length // HOP


class UmxStream:
    """push() keeps the audio, finish() separates it (see the module docstring)."""

    def __init__(self, demixer, channels: int):
        if channels not in (1, 2):
            raise ValueError(f"demix: audio must have 1 or 2 channels, got {channels}")
        self.demixer = demixer
        self.channels = channels
        self._audio = [array.array("f") for _ in range(channels)]
        self._done = False
        self.segments_done = 0
        self.numpy_kind = False

    async def push(self, block, progress=None, should_cancel=None) -> dict:
        """Append a block (list of channel arrays of one length, possibly 0). Nothing is
        final before finish(): returns zero-length arrays."""
        if self._done:
            raise RuntimeError("demix: push() after finish()")
        block = list(block)
        if len(block) != self.channels:
            raise ValueError(f"demix: expected {self.channels} channel arrays, got {len(block)}")
        if len({len(ch) for ch in block}) > 1:
            raise ValueError(f"demix: channels differ in length ({', '.join(str(len(ch)) for ch in block)})")
        self.numpy_kind = _is_numpy(block[0])
        for buf, ch in zip(self._audio, block):
            buf.extend(_f32(ch))
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

        # pass 1: every model's frame-local features, window by window
        feats = [[] for _ in models]
        for k, (a, b) in enumerate(windows):
            tick(f"spectrogram {k + 1} of {len(windows)}")
            X, mix = self._spectrum(audio, a, b)
            X.release()
            for parts, model in zip(feats, models):
                parts.append(model.features(mix))
            mix.release()
        # the LSTMs over the whole sequence, one target at a time
        seqs = []
        for parts, model, name in zip(feats, models, self.demixer.stems):
            tick(f"{name}: LSTM over {T} frames")
            x = concat(parts, dim=0) if len(parts) > 1 else parts[0]
            for p in parts:
                if p is not x:
                    p.release()
            seqs.append(model.sequence(x))
            x.release()
        # pass 2: masks, Wiener filter and overlap-add, window by window
        carry = None
        rows = self.channels
        for k, (a, b) in enumerate(windows):
            tick(f"Wiener filter {k + 1} of {len(windows)}")
            X, mix = self._spectrum(audio, a, b)
            est = []
            for z, model in zip(seqs, models):
                zk = pad(z, (0, 0, -a, b - T))                          # rows a .. b-1
                s = model.spectrogram(zk, mix)
                zk.release()
                est.append(s.reshape(1, *s.shape))
            mix.release()
            mags = concat(est, dim=0)                                   # [J, n, 2, 2049]
            for s in est:
                s.release()
            Y = wiener(X, mags, win=win, eps=WIENER_EPS)                # [J * 2, 2049, n, 2]
            X.release()
            mags.release()
            ola = istft(Y, N_FFT, HOP, center=False, envelope=False)    # [J * 2, 1024 n + 3072]
            Y.release()
            last = k == len(windows) - 1
            start = LEAD if k == 0 else 0                               # output sample 0 = ola[2048]
            end = L + LEAD - a * HOP if last else win * HOP
            y = overlap_finish(ola, carry, start, end - start, a * HOP, T, N_FFT, HOP, mix=2 // rows)
            if carry is not None:
                carry.release()
            carry = None if last else pad(ola, (-win * HOP, 0))        # ola[:, 1024 win:]
            ola.release()
            host = _flat_f32(await self.demixer.dev.read(y))
            y.release()
            n = end - start
            for j, stem in enumerate(self.demixer.stems):
                for c in range(rows):
                    out[stem][c].extend(host[(j * rows + c) * n:(j * rows + c + 1) * n])
        for z in seqs:
            z.release()
        return self._result(out)

    # ---- internals

    def _spectrum(self, audio, a, b):
        """STFT frames a .. b-1 of the stereo track -> (X [2, 2049, n, 2], mix [n, 2, 2049])."""
        dev = self.demixer.dev
        lo, hi = a * HOP - LEAD, (b - 1) * HOP + LEAD                  # samples lo .. hi-1
        raw = b"".join(_reflected(ch, lo, hi).tobytes() for ch in audio)
        chunk = dev.tensor(raw, (2, hi - lo))
        X = stft(chunk, N_FFT, HOP, center=False)
        chunk.release()
        mag = magnitude(X, N_FFT // 2 + 1)                              # [1, 2, n, 2049]
        mix = transpose(mag.reshape(mag.shape[1:]), (1, 0, 2))          # [n, 2, 2049]
        mag.release()
        return X, mix

    def _empty(self):
        return {stem: [array.array("f") for _ in range(self.channels)] for stem in self.demixer.stems}

    def _result(self, out):
        return {stem: [_out(a, self.numpy_kind) for a in chans] for stem, chans in out.items()}


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
