"""Streaming HTDemucs separation: demucs.apply.apply_model(model, mix, shifts=0,
split=True, overlap=0.25, transition_power=1) segment by segment, with pycore.demix's
push/finish contract.

What apply_model does (demucs==4.1.0), and so what this does:
  segment_length = int(model.segment * samplerate)     (7.8 s: 343,980 samples)
  stride = int(0.75 * segment_length)                   (257,985)
  for offset in 0, stride, 2 stride, ... < length:
      chunk = mix[offset : offset + segment_length], cut at the track's end (length n_k)
      the model runs on segment_length samples centered on the chunk: samples
      offset - d // 2 ... with d = segment_length - n_k, taken from the track (its real
      neighbours, TensorChunk.padded) and zeros outside it; its output is center-trimmed
      back to the chunk
      out[offset : offset + n_k] += w[:n_k] * chunk_out;  sum_w[...] += w[:n_k]
  out /= sum_w,  w = triangle 1 .. segment_length // 2, then down to 1, divided by its max

A segment runs as soon as its whole chunk is pushed (then d = 0 and nothing depends on
where the track ends); finish() runs the rest. Samples before the next segment's offset
are final once a segment is done: only neighbouring segments overlap (overlap < 1/2).
Host memory is O(segment): the audio from (next offset - segment_length / 2) on, and the
weighted sums of the samples not yet emitted. GPU memory is one segment's forward.
Each segment's output is read back (the network's output, [S, C, segment_length]); the
overlap-add runs on the host (numpy natively, array('f') loops in the browser).
"""

from __future__ import annotations

import array
import json

from .demix import Cancelled, _f32, _flat_f32, _is_numpy, _out
from .models.htdemucs import HTDemucs
from .safetensors import load as load_safetensors
from .safetensors import load_metadata

OVERLAP = 0.25


def load_models(dev, src, dtype="f32"):
    """The networks of a converted demucs file (`stemtone weights convert`): src is a
    path or the file's bytes. Returns (models, sources, bag weights or None)."""
    meta = load_metadata(src)
    if meta.get("format") != "demucs":
        raise ValueError(f"not a converted demucs checkpoint (format {meta.get('format')!r})")
    arch = json.loads(meta["architecture"])
    if arch.get("klass") != "demucs.htdemucs.HTDemucs":
        raise ValueError(f"{arch.get('klass')}: only demucs.htdemucs.HTDemucs models are supported")
    tensors = load_safetensors(src)
    models = []
    for m in arch["models"]:
        if m["args"]:
            raise ValueError("HTDemucs: positional constructor arguments are not supported")
        models.append(HTDemucs(dev, tensors, m["kwargs"], sources=arch["sources"], dtype=dtype, prefix=m["prefix"]))
    return models, list(arch["sources"]), arch.get("weights")


class Bag:
    """The networks of one Demixer model: one HTDemucs, or a bag such as htdemucs_ft."""

    def __init__(self, models, stems, weights):
        self.models, self.stems, self.weights = models, stems, weights

    @classmethod
    async def load(cls, dev, name, weights=None, dtype="f32") -> "Bag":
        """weights: None (natively: the file `stemtone weights fetch NAME` wrote), a path,
        or the safetensors file's bytes (a dict of tensors lacks the architecture)."""
        if weights is None:
            from .demix_umx import weights_file

            weights = weights_file(name)
        if isinstance(weights, dict):
            raise ValueError(f"{name}: give the converted file (path or bytes), not a dict of tensors: "
                             "the network is built from its architecture metadata")
        from .demix import MODELS

        models, stems, bag_weights = load_models(dev, weights, dtype)
        if stems != MODELS[name]["stems"]:
            raise ValueError(f"{name}: the weights hold stems {stems}, expected {MODELS[name]['stems']}")
        return cls(models, stems, bag_weights)

    def stream(self, channels: int, wanted=None) -> "HTDemucsStream":
        return HTDemucsStream(self.models, self.stems, channels, self.weights, wanted)


def triangle(n: int) -> list:
    """apply_model's transition weights (transition_power 1) for a segment of n samples."""
    w = list(range(1, n // 2 + 1)) + list(range(n - n // 2, 0, -1))
    top = max(w)
    return [v / top for v in w]


def _axpy(acc, start, w, x, x_start, count, scale=1.0):
    """acc[start + i] += scale * w[i] * x[x_start + i] for i < count (array('f')s)."""
    try:
        import numpy as np
    except ImportError:
        for i in range(count):
            acc[start + i] += scale * w[i] * x[x_start + i]
        return
    a = np.frombuffer(acc, np.float32)
    a[start:start + count] += (np.float32(scale) * np.frombuffer(w, np.float32)[:count]
                               * np.frombuffer(x, np.float32)[x_start:x_start + count])


def _divide(acc, den, count):
    """acc[:count] / den[:count] as a new array('f')."""
    try:
        import numpy as np
    except ImportError:
        return array.array("f", (acc[i] / den[i] for i in range(count)))
    out = array.array("f")
    out.frombytes((np.frombuffer(acc, np.float32)[:count] / np.frombuffer(den, np.float32)[:count]).tobytes())
    return out


class HTDemucsStream:
    """push()/finish() over one HTDemucs network (pycore.models.htdemucs.HTDemucs) or a
    bag of them with per-stem weights (see `models`, `weights`)."""

    def __init__(self, models, stems, channels: int, weights=None, wanted=None):
        """models: list of HTDemucs with outputs `stems`; weights: per model a list of
        per-stem weights (demucs BagOfModels: stem k = sum_i w_ik out_ik / sum_i w_ik),
        None = all 1; wanted: the stems to return (default all). A model whose weights
        for the wanted stems are all 0 never runs (htdemucs_ft: only the specialists of
        the wanted stems)."""
        if channels not in (1, 2):
            raise ValueError(f"demix: audio must have 1 or 2 channels, got {channels}")
        self.models = list(models)
        self.all_stems = list(stems)
        self.stems = list(wanted) if wanted else list(stems)
        unknown = [s for s in self.stems if s not in self.all_stems]
        if unknown:
            raise ValueError(f"demix: unknown stems {unknown}; the model has {self.all_stems}")
        self.channels = channels
        S = len(self.all_stems)
        weights = weights or [[1.0] * S for _ in self.models]
        totals = [sum(w[k] for w in weights) for k in range(S)]
        # stem k of model i enters with weight w_ik / sum_i w_ik (BagOfModels)
        self.factors = [[w[k] / totals[k] if s in self.stems else 0.0 for k, s in enumerate(self.all_stems)]
                        for w in weights]
        m = self.models[0]
        self.dev = m.dev
        self.model_channels = m.audio_channels
        self.seg = m.training_length
        self.stride = int((1 - OVERLAP) * self.seg)
        self.window = array.array("f", triangle(self.seg))
        self._audio = [array.array("f") for _ in range(channels)]
        self._audio_start = 0     # track index of _audio[c][0]
        self._pushed = 0
        self._offset = 0          # next segment's offset
        self._emitted = 0         # output samples returned so far
        self._acc = [[array.array("f") for _ in range(channels)] for _ in range(S)]  # from _emitted on
        self.models_run = 0       # forward passes so far
        self._den = array.array("f")
        self._done = False
        self.segments_done = 0
        self.numpy_kind = False

    def segment_count(self, length: int) -> int:
        return -(-length // self.stride) if length > 0 else 0

    async def push(self, block, progress=None, should_cancel=None) -> dict:
        if self._done:
            raise RuntimeError("demix: push() after finish()")
        block = list(block)
        if len(block) != self.channels:
            raise ValueError(f"demix: expected {self.channels} channel arrays, got {len(block)}")
        if len({len(ch) for ch in block}) > 1:
            raise ValueError(f"demix: channels differ in length ({', '.join(str(len(ch)) for ch in block)})")
        self.numpy_kind = _is_numpy(block[0])
        n, pos = len(block[0]), 0
        out = self._empty()
        while True:
            # keep at most one segment beyond the next offset, then run it if complete
            want = self._offset + self.seg - self._pushed
            take = min(max(want, 0), n - pos)
            for buf, ch in zip(self._audio, block):
                buf.extend(_f32(ch[pos:pos + take]))
            pos += take
            self._pushed += take
            if self._pushed < self._offset + self.seg:
                break
            self._append(out, await self._run(None, progress, should_cancel))
        return self._result(out)

    async def finish(self, progress=None, should_cancel=None) -> dict:
        if self._done:
            raise RuntimeError("demix: finish() called twice")
        out = self._empty()
        while self._offset < self._pushed:
            self._append(out, await self._run(self._pushed, progress, should_cancel))
        self._done = True
        self._audio = []
        return self._result(out)

    # ---- internals

    def _empty(self):
        return {stem: [array.array("f") for _ in range(self.channels)] for stem in self.stems}

    @staticmethod
    def _append(out, more):
        for stem, chans in more.items():
            for a, b in zip(out[stem], chans):
                a.extend(b)

    def _result(self, out):
        return {stem: [_out(a, self.numpy_kind) for a in chans] for stem, chans in out.items()}

    def _chunk(self, start: int, length: int) -> bytes:
        """Model input [model_channels, seg]: track samples start .. start + seg - 1,
        zeros outside 0 .. length - 1; mono is duplicated."""
        seg = self.seg
        lo, hi = max(0, start), min(length, start + seg)
        rows = []
        for buf in self._audio:
            a, b = lo - self._audio_start, hi - self._audio_start
            rows.append(bytes(4 * (lo - start)) + buf[a:b].tobytes() + bytes(4 * (start + seg - hi)))
        if self.channels == 1:
            rows = rows * self.model_channels
        return b"".join(rows)

    async def _run(self, length, progress, should_cancel) -> dict:
        """Run the segment at self._offset; length = the track's length (finish())."""
        if should_cancel is not None and should_cancel():
            raise Cancelled("separation cancelled")
        seg, offset, C = self.seg, self._offset, self.channels
        known = self._pushed if length is None else length
        n = min(seg, known - offset)          # the chunk's length
        delta = seg - n
        start = offset - delta // 2           # TensorChunk.padded
        mix = self.dev.tensor(self._chunk(start, known), (1, self.model_channels, seg))
        mc = self.model_channels
        for model, factors in zip(self.models, self.factors):
            if not any(factors):
                continue
            y = model.forward(mix)            # [1, S, model_channels, seg]
            self.models_run += 1
            host = _flat_f32(await self.dev.read(y))
            y.release()
            for k, f in enumerate(factors):
                for c in range(C):
                    rows = range(mc) if C == 1 else (c,)   # mono: the mean of the model's channels
                    for r in rows:
                        self._add(k, c, host, (k * mc + r) * seg + delta // 2, offset, n, f / len(rows))
        mix.release()
        self._add_den(offset, n)
        self._offset += self.stride
        self.segments_done += 1
        # samples before the next offset are final (only neighbours overlap)
        result = self._emit(min(self._offset, known))
        # keep the audio the next segment may need: from next offset - seg // 2 on
        keep = max(0, self._offset - seg // 2 - 1)
        if keep > self._audio_start:
            for buf in self._audio:
                del buf[:keep - self._audio_start]
            self._audio_start = keep
        if progress is not None:
            total_segs = self.segment_count(known)
            progress(min(1.0, self.segments_done / max(total_segs, 1)),
                     f"segment {self.segments_done} of {total_segs}")
        return result

    def _grow(self, end):
        """Make the accumulators cover output samples _emitted .. end - 1."""
        need = end - self._emitted - len(self._den)
        if need > 0:
            zeros = bytes(4 * need)
            self._den.frombytes(zeros)
            for chans in self._acc:
                for a in chans:
                    a.frombytes(zeros)

    def _add(self, k, c, host, x_start, offset, n, scale):
        if scale:
            self._grow(offset + n)
            _axpy(self._acc[k][c], offset - self._emitted, self.window, host, x_start, n, scale)

    def _add_den(self, offset, n):
        self._grow(offset + n)
        i0 = offset - self._emitted
        ones = array.array("f", [1.0]) * n
        _axpy(self._den, i0, self.window, ones, 0, n)

    def _emit(self, final):
        count = final - self._emitted
        out = {stem: [array.array("f") for _ in range(self.channels)] for stem in self.stems}
        if count <= 0:
            return out
        for k, stem in enumerate(self.all_stems):
            for c in range(self.channels):
                if stem in out:
                    out[stem][c] = _divide(self._acc[k][c], self._den, count)
                del self._acc[k][c][:count]
        del self._den[:count]
        self._emitted = final
        return out
