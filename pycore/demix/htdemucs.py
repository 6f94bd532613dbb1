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

Around apply_model, as demucs.api.Separator.separate_tensor: the track is normalized by
its mono mix's mean and std (MixStats / mix_stats: the whole track's, so a file is read
twice: once for the statistics, block by block, then streamed; Normalized applies them),
and apply_model's `shifts` (ShiftedStream: N passes over the track delayed by seeded
random offsets of up to 0.5 s, averaged). Bag.stream puts these together.
"""

from __future__ import annotations

import array
import json
import math
import random

from ..audio.buffers import as_f32, flat_f32, is_numpy, to_caller
from ..models.htdemucs import HTDemucs
from ..weights import model_file
from ..weights.safetensors import load as load_safetensors
from ..weights.safetensors import load_metadata
from .base import Cancelled, Demixer, check_channels, checked_block, file_architecture, register

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
    """The networks of one model: one HTDemucs, or a bag such as htdemucs_ft."""

    def __init__(self, models, stems, weights):
        self.models, self.stems, self.weights = models, stems, weights

    def stream(self, channels: int, wanted=None, shifts=0, seed=None, stats=None):
        """A push/finish stream. wanted: the stems to return (default all); shifts, seed:
        apply_model's random shifts (see ShiftedStream); stats: (mean, std) of the whole
        track (mix_stats) for demucs.api's normalization, None = none."""
        if shifts:
            stream = ShiftedStream(self.models, self.stems, channels, self.weights, wanted, shifts, seed)
        else:
            stream = HTDemucsStream(self.models, self.stems, channels, self.weights, wanted)
        return Normalized(stream, *stats) if stats is not None else stream


@register
class HTDemucsDemixer(Demixer):
    """Demucs v4 (pycore.models.htdemucs) as demucs.api runs it: normalized by the
    track's statistics (a first pass), apply_model's segments, shifts and bags."""

    family = "htdemucs"
    models = {
        "htdemucs": {"stems": ["drums", "bass", "other", "vocals"], "sample_rate": 44100},
        "htdemucs_6s": {"stems": ["drums", "bass", "other", "vocals", "guitar", "piano"], "sample_rate": 44100},
        "htdemucs_ft": {"stems": ["drums", "bass", "other", "vocals"], "sample_rate": 44100},
    }
    stream_options = ("shifts", "seed", "stats")
    file_format = "demucs"

    @classmethod
    def match_file(cls, metadata: dict) -> tuple:
        """Its own name when the stems match, else the model with the same sources that
        is a bag exactly when the file is (htdemucs_ft)."""
        arch = file_architecture(metadata)
        stems, named = arch.get("sources"), metadata.get("model")
        if named in cls.models and stems == cls.models[named]["stems"]:
            return stems, named
        bag = len(arch.get("models", ())) > 1
        return stems, next((m for m, info in cls.models.items()
                            if stems == info["stems"] and bag == (m == "htdemucs_ft")), None)

    @classmethod
    async def open(cls, dev, name, weights, dtype) -> "HTDemucsDemixer":
        """weights: None (natively: the file `stemtone weights fetch NAME` wrote), a path,
        or the safetensors file's bytes (a dict of tensors lacks the architecture)."""
        if weights is None:
            weights = model_file(name)
        if isinstance(weights, dict):
            raise ValueError(f"{name}: give the converted file (path or bytes), not a dict of tensors: "
                             "the network is built from its architecture metadata")
        models, stems, bag_weights = load_models(dev, weights, dtype)
        if stems != cls.models[name]["stems"]:
            raise ValueError(f"{name}: the weights hold stems {stems}, expected {cls.models[name]['stems']}")
        return cls(dev, Bag(models, stems, bag_weights), name, stems, cls.models[name]["sample_rate"])

    def open_stream(self, channels: int, wanted=None, shifts=0, seed=None, stats=None):
        return self.model.stream(channels, wanted, shifts, seed, stats)

    def stats(self) -> "MixStats":
        return MixStats()

    def release_plans(self):
        release_segment_plans(self.model.models)


# --------------------------------------------------------------------------- normalization


class MixStats:
    """demucs.api.Separator.separate_tensor's normalization statistics, accumulated block
    by block so that a file can be read once without holding it:

        ref = wav.mean(0)                 (the mono mix: the mean of the model's channels;
                                           a mono track is duplicated, so ref = the track)
        mean = ref.mean();  std = ref.std() + 1e-8     (torch.std: unbiased, N - 1)

    Blocks are merged with Chan et al.'s pairwise update of (count, mean, M2) in float64,
    so a long track loses no precision. add() takes a list of channel arrays (numpy,
    array('f') or lists); pure Python where numpy is missing (the browser)."""

    def __init__(self):
        self.n, self._mean, self._m2 = 0, 0.0, 0.0

    def add(self, block):
        block = list(block)
        n = len(block[0]) if block else 0
        if n == 0:
            return self
        try:
            import numpy as np
        except ImportError:
            ref = [sum(v) / len(block) for v in zip(*block)]
            mean = math.fsum(ref) / n
            m2 = math.fsum((v - mean) ** 2 for v in ref)
        else:
            chans = [np.asarray(ch, dtype=np.float32) for ch in block]
            ref = chans[0] if len(chans) == 1 else (chans[0] + chans[1]) / np.float32(2)  # float32, as torch
            ref = ref.astype(np.float64)
            mean = float(ref.mean())
            m2 = float(np.sum((ref - mean) ** 2))
        total = self.n + n
        delta = mean - self._mean
        self._m2 += m2 + delta * delta * self.n * n / total
        self._mean += delta * n / total
        self.n = total
        return self

    @property
    def mean(self) -> float:
        return self._mean

    @property
    def std(self) -> float:
        return (math.sqrt(self._m2 / (self.n - 1)) if self.n > 1 else float("nan")) + 1e-8

    @property
    def value(self) -> tuple:
        """(mean, std): what HTDemucsDemixer.stream(stats=...) takes."""
        return self.mean, self.std


def mix_stats(audio) -> tuple:
    """(mean, std) of a whole track (a list of 1 or 2 channel arrays) as demucs.api
    normalizes it; give them to Bag.stream(stats=...) / Demixer.stream(stats=...)."""
    s = MixStats()
    step = 1 << 20
    audio = list(audio)
    n = len(audio[0]) if audio else 0
    for i in range(0, n, step):
        s.add([ch[i:i + step] for ch in audio])
    return s.mean, s.std


def _affine(x, scale, shift) -> array.array:
    """scale * x + shift as array('f') (numpy natively, a loop in the browser)."""
    try:
        import numpy as np
    except ImportError:
        return array.array("f", (scale * v + shift for v in x))
    y = np.asarray(x, dtype=np.float32) * np.float32(scale) + np.float32(shift)
    out = array.array("f")
    out.frombytes(y.astype(np.float32).tobytes())
    return out


class Normalized:
    """A stream that sees (x - mean) / std and whose outputs are y * std + mean, as
    demucs.api does around apply_model (every stem gets the mean back)."""

    def __init__(self, stream, mean: float, std: float):
        self.stream, self.mean, self.std = stream, float(mean), float(std)
        self.numpy_kind = False

    def __getattr__(self, name):  # stems, channels, segments_done, models_run, ...
        return getattr(self.stream, name)

    async def push(self, block, progress=None, should_cancel=None) -> dict:
        block = list(block)
        self.numpy_kind = bool(block) and is_numpy(block[0])
        scaled = [_affine(ch, 1 / self.std, -self.mean / self.std) for ch in block]
        return self._back(await self.stream.push(scaled, progress, should_cancel))

    async def finish(self, progress=None, should_cancel=None) -> dict:
        return self._back(await self.stream.finish(progress, should_cancel))

    def _back(self, out):
        return {stem: [to_caller(_affine(ch, self.std, self.mean), self.numpy_kind) for ch in chans]
                for stem, chans in out.items()}


# --------------------------------------------------------------------------- streaming apply_model


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


def segment_forward(model, mix: bytes):
    """The network on one segment (float32 bytes of [1, channels, segment]), as a plan
    recorded on the first segment and replayed for every later one: the same dispatches,
    encoded again at the cost of the encoding calls alone. The plan and its input and
    output tensors stay with the model; the output is valid until the next call."""
    if getattr(model, "segment_plan", None) is None:
        x = model.dev.empty((1, model.audio_channels, model.training_length))
        plan = model.dev.plan()
        with plan:
            y = model.forward(x)
        model.segment_plan = (plan, x, y)
    plan, x, y = model.segment_plan
    model.dev.write(x, mix)
    plan.replay()
    return y


def release_segment_plans(models):
    """Give the segment plans of these networks back (they are recorded again on the next
    segment): for memory measurements, and to free the GPU memory of an idle model."""
    for model in models:
        if getattr(model, "segment_plan", None) is not None:
            model.segment_plan[0].release()
            model.segment_plan = None


class HTDemucsStream:
    """push()/finish() over one HTDemucs network (pycore.models.htdemucs.HTDemucs) or a
    bag of them with per-stem weights (see `models`, `weights`)."""

    def __init__(self, models, stems, channels: int, weights=None, wanted=None, front=0, factors=None):
        """models: list of HTDemucs with outputs `stems`; weights: per model a list of
        per-stem weights (demucs BagOfModels: stem k = sum_i w_ik out_ik / sum_i w_ik),
        None = all 1; wanted: the stems to return (default all). A model whose weights
        for the wanted stems are all 0 never runs (htdemucs_ft: only the specialists of
        the wanted stems). front: zeros before the track, whose outputs are dropped
        (one pass of apply_model's shifts); factors: per model, per stem, the factor
        its output enters with (overrides weights)."""
        check_channels(channels)
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
        if factors is not None:
            self.factors = [[f if s in self.stems else 0.0 for f, s in zip(row, self.all_stems)] for row in factors]
        self._front = front       # zeros still to insert before the first sample
        self._drop = front        # output samples still to drop
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
        block = checked_block(block, self.channels, self._done)
        self.numpy_kind = is_numpy(block[0])
        n, pos = len(block[0]), 0
        if n and self._front:
            for buf in self._audio:
                buf.frombytes(bytes(4 * self._front))
            self._pushed += self._front
            self._front = 0
        out = self._empty()
        while True:
            # keep at most one segment beyond the next offset, then run it if complete
            want = self._offset + self.seg - self._pushed
            take = min(max(want, 0), n - pos)
            for buf, ch in zip(self._audio, block):
                buf.extend(as_f32(ch[pos:pos + take]))
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
        if self._drop:
            k = min(self._drop, min((len(a) for chans in out.values() for a in chans), default=0))
            for chans in out.values():
                for a in chans:
                    del a[:k]
            self._drop -= k
        return {stem: [to_caller(a, self.numpy_kind) for a in chans] for stem, chans in out.items()}

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
        mix = self._chunk(start, known)
        mc = self.model_channels
        for model, factors in zip(self.models, self.factors):
            if not any(factors):
                continue
            y = segment_forward(model, mix)   # [1, S, model_channels, seg]
            self.models_run += 1
            host = flat_f32(await self.dev.read(y))
            for k, f in enumerate(factors):
                for c in range(C):
                    rows = range(mc) if C == 1 else (c,)   # mono: the mean of the model's channels
                    for r in rows:
                        self._add(k, c, host, (k * mc + r) * seg + delta // 2, offset, n, f / len(rows))
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


class ShiftedStream:
    """apply_model(model, mix, shifts=N): N passes, each over the track delayed by a random
    offset o in 0 .. max_shift = int(0.5 * samplerate) (random.randint, inclusive), i.e.
    max_shift - o zeros before it, with those samples cut from its output; the passes are
    averaged. For a bag, demucs applies this per model (each draws its own N offsets, in
    the bag's order) and then combines the models with their per-stem weights. Here the
    offsets come from random.Random(seed) in the same order (offsets are drawn for the
    models that do not run too, so a stem's result does not depend on which other stems
    are asked for), and every (model, pass) is an HTDemucsStream of its own; their
    outputs are summed, with factor w_ik / sum_i w_ik / N, as far as all have produced.
    Host memory is O(segment) per pass, GPU memory one segment's forward."""

    def __init__(self, models, stems, channels, weights=None, wanted=None, shifts=1, seed=None,
                 offsets=None):
        """offsets: per model, the N offsets to use (tests); default: drawn from seed."""
        if shifts < 1:
            raise ValueError(f"demix: shifts must be >= 1, got {shifts}")
        self.all_stems = list(stems)
        S = len(self.all_stems)
        weights = weights or [[1.0] * S for _ in models]
        totals = [sum(w[k] for w in weights) for k in range(S)]
        max_shift = int(0.5 * models[0].samplerate)
        if offsets is None:
            rng = random.Random(seed)
            offsets = [[rng.randint(0, max_shift) for _ in range(shifts)] for _ in models]
        self.offsets = offsets
        self.parts = []
        for model, w, offs in zip(models, weights, offsets):
            factors = [[w[k] / totals[k] / shifts for k in range(S)]]
            for o in offs:
                p = HTDemucsStream([model], stems, channels, None, wanted, front=max_shift - o, factors=factors)
                if any(p.factors[0]):
                    self.parts.append(p)
        if not self.parts:
            raise ValueError("demix: no model of the bag contributes to the wanted stems")
        self.stems = self.parts[0].stems
        self.channels = channels
        self._pending = [self._empty() for _ in self.parts]
        self._fractions = [0.0] * len(self.parts)
        self.numpy_kind = False

    @property
    def segments_done(self):
        return sum(p.segments_done for p in self.parts)

    @property
    def models_run(self):
        return sum(p.models_run for p in self.parts)

    async def push(self, block, progress=None, should_cancel=None) -> dict:
        block = list(block)
        for i, p in enumerate(self.parts):
            self._keep(i, await p.push(block, self._progress(i, progress), should_cancel))
        self.numpy_kind = self.parts[0].numpy_kind
        return self._take()

    async def finish(self, progress=None, should_cancel=None) -> dict:
        for i, p in enumerate(self.parts):
            self._keep(i, await p.finish(self._progress(i, progress), should_cancel))
        return self._take()

    def _progress(self, i, progress):
        if progress is None:
            return None
        def report(fraction, message):  # the passes run side by side: their mean
            self._fractions[i] = fraction
            progress(sum(self._fractions) / len(self.parts), f"pass {i + 1} of {len(self.parts)}: {message}")
        return report

    def _empty(self):
        return {stem: [array.array("f") for _ in range(self.channels)] for stem in self.stems}

    def _keep(self, i, out):
        for stem, chans in out.items():
            for a, x in zip(self._pending[i][stem], chans):
                a.extend(as_f32(x))

    def _take(self):
        n = min(len(pend[self.stems[0]][0]) for pend in self._pending)
        out = self._empty()
        for stem in self.stems:
            for c in range(self.channels):
                acc = array.array("f", bytes(4 * n))
                ones = array.array("f", [1.0]) * n
                for pend in self._pending:
                    _axpy(acc, 0, ones, pend[stem][c], 0, n)
                    del pend[stem][c][:n]
                out[stem][c] = to_caller(acc, self.numpy_kind)
        return out
