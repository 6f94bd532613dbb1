"""A file in, the same melody on an instrument out: what `stemtone tone` and
`pycore.tone()` run (native).

    AudioReader (any format soundfile reads, any rate and channel count, blocks of 10 s)
      -> mono (the mean of the channels) -> Resampler to 16 kHz
      -> ToneStream (pycore.tone: CREPE + loudness + DDSP decoder + synthesizer, GPU)
      -> the first delay_samples (one hop) dropped, cut to the input's length
      -> Resampler to the output rate (default: the input's) -> StemWriter (atomic)

Host memory is O(block) and GPU memory is one block's work however long the input is.
A bad input (missing, not audio, empty, damaged, NaN) gets one message naming the file,
and never leaves a partial output behind.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio.files import AudioFileError, AudioReader, StemWriter, check_output_format
from ..audio.resample import Resampler
from ..demix.files import ProgressBar
from .stream import SAMPLE_RATE, ToneStream, load_tone_model

BLOCK_SECONDS = 10


@dataclass
class ToneResult:
    """The outcome of one file. ok, error (the one-line message), output (path),
    sample_rate and frames of the output, f0 statistics for the summary line."""
    input: str
    ok: bool = False
    error: str | None = None
    output: str | None = None
    sample_rate: int = 0
    frames: int = 0
    elapsed: float = 0.0
    voiced_fraction: float = 0.0
    notes: list = field(default_factory=list)


def default_output(path, instrument: str) -> str:
    """<input name>.<instrument>.wav in the current directory."""
    return f"{Path(path).stem}.{instrument}.wav"


async def tone_file(model, path, output=None, octave=0, loudness_db=0.0, sample_rate=None, bits=16,
                    overwrite=False, progress=True) -> ToneResult:
    """Tone-transfer one file with a loaded ToneModel; never raises for a bad file (the
    result carries the message) but lets KeyboardInterrupt through."""
    result = ToneResult(input=str(path))
    t0 = time.perf_counter()
    output = str(output or default_output(path, model.instrument or model.name))
    bar = ProgressBar(str(path), enabled=bool(progress))
    writer = None
    try:
        check_output_format("wav", bits)
        if not isinstance(octave, int) or not -4 <= octave <= 4:
            raise ValueError(f"octave must be an integer from -4 to 4, got {octave!r}")
        if not -60.0 <= float(loudness_db) <= 60.0:
            raise ValueError(f"loudness_db must be within +-60 dB, got {loudness_db!r}")
        with AudioReader(path) as reader:
            out_rate = int(sample_rate or reader.sample_rate)
            if out_rate < 8000 or out_rate > 384000:
                raise ValueError(f"output sample rate must be 8000..384000 Hz, got {out_rate}")
            n16 = int(round(reader.frames_declared * SAMPLE_RATE / reader.sample_rate))
            to16 = Resampler(reader.sample_rate, SAMPLE_RATE) if reader.sample_rate != SAMPLE_RATE else None
            back = Resampler(SAMPLE_RATE, out_rate) if out_rate != SAMPLE_RATE else None
            writer = StemWriter(output, out_rate, 1, "wav", bits, overwrite,
                                frames_hint=int(reader.frames_declared * out_rate / reader.sample_rate))
            stream = ToneStream(model, octave=octave, loudness_db=loudness_db)
            skip = stream.delay_samples            # output samples before the input's first
            state = {"in": 0, "out": 0, "voiced": 0, "frames": 0}

            def emit(out):
                nonlocal skip
                y = np.frombuffer(out["audio"], np.float32)
                conf = np.frombuffer(out["confidence"], np.float32)
                state["voiced"] += int(np.count_nonzero(conf >= 0.5))
                state["frames"] += len(conf)
                if skip:
                    cut = min(skip, len(y))
                    y, skip = y[cut:], skip - cut
                y = y[:max(0, state["in"] - state["out"])]      # never past the input's end
                state["out"] += len(y)
                if back is not None:
                    y = back.process(y)[0]
                writer.write(y[None, :])

            for block in reader.blocks(BLOCK_SECONDS * reader.sample_rate):
                mono = block.mean(axis=0, dtype=np.float32) if block.shape[0] > 1 else block[0]
                x = to16.process(mono)[0] if to16 is not None else mono
                state["in"] += len(x)
                emit(await stream.push(x))
                bar.update(min(0.99, state["in"] / max(n16, 1)))
            if to16 is not None:
                x = to16.flush()[0]
                state["in"] += len(x)
                emit(await stream.push(x))
            emit(await stream.flush())
            if back is not None:
                writer.write(back.flush()[0][None, :])
        writer.commit()
        bar.update(1.0)
        result.ok, result.output, result.sample_rate, result.frames = True, output, out_rate, writer.frames
        result.voiced_fraction = state["voiced"] / max(state["frames"], 1)
        if state["voiced"] == 0:
            result.notes.append("no pitch was found in the input (silence or noise): the output is the "
                                "instrument's noise at most")
        if writer.over:
            result.notes.append(f"{writer.over} samples above full scale were soft-limited (try --loudness-db -6)")
    except (AudioFileError, ValueError) as e:
        if writer is not None:
            writer.abort()
        result.error = str(e) if isinstance(e, AudioFileError) else f"{path}: {e}"
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        bar.close()
    result.elapsed = time.perf_counter() - t0
    return result


async def tone_async(input, instrument="violin", output=None, octave=0, loudness_db=0.0, sample_rate=None,
                     bits=16, overwrite=False, progress=True, dev=None) -> ToneResult:
    if dev is None:
        from ..gpu.native import get_device

        dev = get_device()
    model = load_tone_model(dev, instrument)
    return await tone_file(model, input, output, octave, loudness_db, sample_rate, bits, overwrite, progress)


def tone(input, instrument="violin", output=None, octave=0, loudness_db=0.0, sample_rate=None, bits=16,
         overwrite=False, progress=True, dev=None) -> ToneResult:
    """Play the melody of an audio file on `instrument` (violin, flute, trumpet, saxophone,
    guitar): writes OUTPUT (default <input name>.<instrument>.wav), mono, at sample_rate
    (default the input's), the input's length. octave: whole octaves to shift the pitch
    (notes outside the instrument's range are folded into it by octaves); loudness_db:
    a trim on the input's loudness before the model. Returns a ToneResult."""
    return asyncio.run(tone_async(input, instrument, output, octave, loudness_db, sample_rate, bits,
                                  overwrite, progress, dev))
