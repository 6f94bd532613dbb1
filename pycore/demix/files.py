"""Files in, stems out: what `stemtone separate` and `pycore.separate()` run (native).

For each input file:

    AudioReader (any rate, any channel count, blocks of ~10 s)
      -> Resampler to the model's rate (44.1 kHz; skipped when already there)
      -> a demixer stream per channel pair (GPU, segment by segment; pycore.demix)
      -> per stem: Resampler back to the file's rate -> StemWriter (atomic)
    = OUTDIR/<track name>/<stem>.<wav|flac|mp3>, same rate, channels and length as the input

Everything streams, so host and GPU memory stay flat however long the track is.
Channels: mono and stereo go to the model as they are (the demixer duplicates mono
internally and returns mono). Files with more than two channels are demixed as
consecutive pairs (1+2, 3+4, ...; a last odd channel alone), so every output channel
comes from its own input channel and the channel layout is kept; e.g. 5.1 (L R C LFE
Ls Rs) is demixed as L+R, C+LFE, Ls+Rs.

Each input either succeeds completely or fails with one AudioFileError-style message
naming the file; a failure never stops the other inputs and never leaves a partial
stem file behind.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..audio.files import AudioFileError, AudioReader, StemWriter, check_output_format, timestamp
from ..audio.resample import Resampler
from ..weights import model_file
from ..weights.safetensors import load_metadata
from .base import FAMILIES, MODELS, Demixer, plan_outputs, register_file

BLOCK_SECONDS = 10


@dataclass
class TrackResult:
    """The outcome for one input. ok: every stem was written; error: the one-line
    message (naming the file) when not; outputs: {stem: path}; notes: remarks such as
    soft-limited peaks."""
    input: str
    ok: bool = False
    error: str | None = None
    outputs: dict = field(default_factory=dict)
    sample_rate: int = 0
    channels: int = 0
    frames: int = 0
    elapsed: float = 0.0
    notes: list = field(default_factory=list)


# --------------------------------------------------------------------------- progress


class ProgressBar:
    """A tqdm bar (the field's convention) over the fraction of one track done, on
    stderr: percent, elapsed and time left; it never goes back. Nothing is drawn
    before the first update (an input refused up front shows only its error)."""

    FORMAT = "{desc}: {percentage:3.0f}%|{bar:28}| {elapsed}<{remaining}"

    def __init__(self, label: str, stream=None, enabled=True):
        self.label, self.stream, self.enabled, self.bar = label, stream or sys.stderr, enabled, None

    def update(self, fraction: float):
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = tqdm(total=100, desc=self.label, file=self.stream, bar_format=self.FORMAT, leave=True)
        n = min(max(fraction, 0.0), 1.0) * 100
        if n > self.bar.n:
            self.bar.update(n - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------- one track


def channel_groups(channels: int) -> list:
    """[[0, 1], [2, 3], ..., [last]]: the channel pairs that go through the model together."""
    return [list(range(i, min(i + 2, channels))) for i in range(0, channels, 2)]


class _StemSink:
    """Per stem: resample back to the file's rate, then write; finish(frames) makes
    the file exactly `frames` long (the rate round trip can differ by one sample)."""

    def __init__(self, writer: StemWriter, resampler):
        self.writer, self.resampler = writer, resampler

    def put(self, x: np.ndarray):
        self.writer.write(self.resampler.process(x) if self.resampler is not None else x)

    def finish(self, frames: int):
        if self.resampler is not None:
            tail = self.resampler.flush()
            self.writer.write(tail[:, :max(frames - self.writer.frames, 0)])
        if self.writer.frames < frames:
            self.writer.write(np.zeros((self.writer.channels, frames - self.writer.frames), np.float32))


def _stack(parts, groups, channels, stem):
    """Demixer outputs of every channel group -> one float32 array [channels, n]."""
    lengths = {len(ch) for out in parts for ch in out[stem]}
    if len(lengths) > 1:
        raise RuntimeError(f"demixer returned channels of different lengths {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    y = np.empty((channels, n), np.float32)
    for out, group in zip(parts, groups):
        for c, ch in zip(group, out[stem]):
            y[c] = ch
    return y


def available_memory():
    """Bytes of host memory available now (Linux: MemAvailable; else free pages), or
    None where neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_host_memory(demixer, path, frames, channels, sample_rate):
    """Raise AudioFileError before any work when the track cannot fit in host memory."""
    at_model_rate = frames * demixer.sample_rate // max(sample_rate, 1) + 1
    need = demixer.host_bytes(at_model_rate, channels)
    have = available_memory()
    if need and have is not None and need > have:
        raise AudioFileError(path, f"too long for {demixer.name} on this machine: "
                                   f"{timestamp(frames / sample_rate)} needs about {need / 2**30:.1f} GiB of memory "
                                   f"and {have / 2**30:.1f} GiB is available ({demixer.name} holds the whole track; "
                                   f"split the file, or use a model that streams in constant memory, such as htdemucs)")


def track_stats(demixer, path, groups, rate) -> list:
    """The statistics a demixer wants from a first pass over the file (demixer.stats():
    HTDemucs' normalization), one per channel group, at the model's rate, read block by
    block (host memory O(block)); None per group when it wants none."""
    stats = [demixer.stats() for _ in groups]
    if stats[0] is None:
        return [None] * len(groups)
    with AudioReader(path) as reader:
        to_model = Resampler(reader.sample_rate, rate, reader.channels) if reader.sample_rate != rate else None

        def add(x):
            for s, g in zip(stats, groups):
                s.add([x[c] for c in g])

        for block in reader.blocks(BLOCK_SECONDS * reader.sample_rate):
            add(to_model.process(block) if to_model else block)
        if to_model is not None:
            add(to_model.flush())
    return [s.value for s in stats]


def track_name(path) -> str:
    """The folder an input's stems go to: its file name without the extension, kept
    inside OUTDIR whatever the name ("...wav" has the stem "..": it becomes "track..")."""
    name = Path(path).stem
    return name if name.strip(".") else f"track{name}"


def stem_targets(model_name, model_stems, path, outdir="separated", format="wav", stems=None, two_stems=None,
                 track=None) -> tuple:
    """(stems to compute, {output: [stems summed]}, {output: target path}) for one input:
    OUTDIR/<track>/<output>.<format>, track defaulting to the input's name (track_name)."""
    chosen, outputs = plan_outputs(model_name, model_stems, stems, two_stems)
    track = track or track_name(path)
    if track in (".", "..") or Path(track).name != track:
        raise ValueError(f"track folder name {track!r} would leave {outdir}")
    folder = Path(outdir) / track
    return chosen, outputs, {out: folder / f"{out}.{format}" for out in outputs}


async def separate_file(demixer, path, outdir="separated", format="wav", bits=16, overwrite=False,
                        progress=True, track=None, stems=None, shifts=0, seed=None, two_stems=None) -> TrackResult:
    """Separate one file into OUTDIR/<track>/<stem>.<format>; never raises for a bad
    file (the result carries the message) but lets KeyboardInterrupt through.
    stems: the stems to write (default all); two_stems=X: X and no_X (everything but X)
    as Demucs' --two-stems; shifts, seed: HTDemucs' random shifts."""
    result = TrackResult(input=str(path))
    t0 = time.perf_counter()
    chosen, outputs, targets = stem_targets(getattr(demixer, "name", "the model"), demixer.stems, path, outdir,
                                            format, stems, two_stems, track)
    folder = next(iter(targets.values())).parent
    writers, reader, made_folder = {}, None, False
    bar = ProgressBar(str(path), enabled=bool(progress))
    try:
        reader = AudioReader(path)
        sr, channels = reader.sample_rate, reader.channels
        result.sample_rate, result.channels = sr, channels
        check_host_memory(demixer, path, reader.frames_declared, channels, sr)
        for target in targets.values():
            if target.exists() and not overwrite:
                raise AudioFileError(target, "already exists (use --overwrite to replace it)")
        if not folder.is_dir():
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise AudioFileError(folder, f"cannot create the output folder ({e.strerror or e})") from None
            made_folder = True
        for stem, target in targets.items():
            writers[stem] = StemWriter(target, sr, channels, format, bits, overwrite, frames_hint=reader.frames)

        rate = demixer.sample_rate
        to_model = Resampler(sr, rate, channels) if sr != rate else None
        groups = channel_groups(channels)
        # a first pass where the model wants one (HTDemucs: normalized as demucs.api does)
        stats = track_stats(demixer, path, groups, rate)
        streams = [demixer.stream(len(g), chosen, shifts=shifts, seed=seed, stats=st) for g, st in zip(groups, stats)]
        sinks = {out: _StemSink(writers[out], Resampler(rate, sr, channels) if sr != rate else None)
                 for out in outputs}

        # Progress: the demixer reports after each segment the fraction done of what was
        # pushed to it; times the fraction of the file read so far, that is the fraction
        # of the whole track (segments are the work, reading and resampling are cheap).
        read = [0]
        done = [0.0] * len(streams)

        def on_segment(i):
            def report(fraction, _message):
                done[i] = fraction
                bar.update(sum(done) / len(done) * read[0] / max(reader.frames, read[0], 1))
            return report

        async def feed(x, last=False):
            if last:
                parts = [await s.finish(on_segment(i)) for i, s in enumerate(streams)]
            else:
                parts = [await s.push([x[c] for c in g], on_segment(i))
                         for i, (s, g) in enumerate(zip(streams, groups))]
            for out, sink in sinks.items():
                sink.put(sum(_stack(parts, groups, channels, stem) for stem in outputs[out]))

        bar.update(0.0)
        for block in reader.blocks(BLOCK_SECONDS * sr):
            read[0] += block.shape[1]
            await feed(to_model.process(block) if to_model else block)
        # reader.frames is now the exact decoded length: the length every stem gets
        if to_model is not None:
            await feed(to_model.flush())
        await feed(None, last=True)
        for sink in sinks.values():
            sink.finish(reader.frames)
        for stem, w in writers.items():
            w.commit()
            result.outputs[stem] = str(targets[stem])
            if w.over:
                peak_db = 20 * np.log10(w.peak)
                result.notes.append(f"{stem} peaked at {peak_db:+.1f} dBFS: {w.over} samples above full scale "
                                    f"were soft-limited (--bits 32f keeps them)")
        writers = {}
        bar.update(1.0)
        result.ok, result.frames = True, reader.frames
    except AudioFileError as e:  # about an output file: say which input it was for
        result.error = str(e) if e.path == str(path) else f"{path}: {e}"
    except Exception as e:  # GPU errors and the like: still one line, naming the file
        result.error = f"{path}: {type(e).__name__}: {e}"
    finally:
        bar.close()
        for w in writers.values():
            w.abort()
        if reader is not None:
            reader.close()
        if made_folder and not result.ok:
            try:
                folder.rmdir()  # only if empty: never removes anything we did not create
            except OSError:
                pass
        result.elapsed = time.perf_counter() - t0
    return result


# --------------------------------------------------------------------------- many tracks


async def load_model(dev, model: str, dtype: str = "f32") -> Demixer:
    """A loaded Demixer for `model`: a registry name (spleeter-2stems, htdemucs, ...), the
    name of a converted file in the weights folders (`-m my-finetune` for
    my-finetune.safetensors) or a path to a .safetensors file; a converted file runs with
    its own stems (pycore.demix.base.register_file)."""
    if model in MODELS and not MODELS[model].get("custom") and not os.path.isfile(model):
        return await Demixer.load(dev, model, dtype=dtype)
    try:
        path = model_file(model)
    except FileNotFoundError as e:  # neither: say what exists, and where files were looked for
        raise ValueError(f"unknown model {model!r}; available: {', '.join(MODELS)}, or a converted "
                         f"file ({e})") from None
    name = Path(path).name.removesuffix(".safetensors")
    runs_as = register_file(name, load_metadata(path))
    return await Demixer.load(dev, runs_as, weights=path, dtype=dtype)


def _as_list(inputs):
    if isinstance(inputs, (str, os.PathLike)):
        return [inputs]
    return list(inputs)


async def separate_async(inputs, model="spleeter-2stems", outdir="separated", format="wav", bits=16,
                         overwrite=False, progress=True, dev=None, on_result=None, stems=None, shifts=0,
                         seed=None, two_stems=None) -> list:
    """The async form of separate(); model may be a name or a loaded Demixer;
    on_result(TrackResult) is called as each input finishes (the CLI prints there)."""
    check_output_format(format, bits)
    if shifts < 0:
        raise ValueError(f"shifts must be 0 or more, got {shifts}")
    if isinstance(model, str):
        if dev is None:
            from ..gpu.native import get_device

            dev = get_device()
        demixer = await load_model(dev, model)
    else:
        demixer = model
    plan_outputs(getattr(demixer, "name", "the model"), demixer.stems, stems, two_stems)  # before any file
    if shifts and "shifts" not in getattr(demixer, "stream_options", ()):
        takes = [n for n, m in MODELS.items() if "shifts" in FAMILIES[m["family"]].stream_options]
        raise ValueError(f"{getattr(demixer, 'name', 'the model')}: shifts are for {', '.join(takes)} only")
    results, written = [], {}  # track name -> the input whose stems went there in this run
    for path in _as_list(inputs):
        name = track_name(path)
        if name in written:
            r = TrackResult(input=str(path), error=f"{path}: same track name {name!r} as {written[name]}, "
                                                  f"whose stems are in {Path(outdir) / name} (rename one)")
        else:
            r = await separate_file(demixer, path, outdir, format, bits, overwrite, progress,
                                    stems=stems, shifts=shifts, seed=seed, two_stems=two_stems)
            if r.ok:
                written[name] = str(path)
        results.append(r)
        if on_result is not None:
            on_result(r)
    return results


def separate(inputs, model="spleeter-2stems", outdir="separated", format="wav", bits=16,
             overwrite=False, progress=True, dev=None, stems=None, shifts=0, seed=None, two_stems=None) -> list:
    """Separate audio files into stems: OUTDIR/<track name>/<stem>.<format>, at each
    input's sample rate and channel count.

    inputs: a path or a list of paths (anything soundfile reads: wav, flac, ogg, mp3..).
    model: a model name, a converted file's name or path (see load_model), or a loaded
    pycore.demix.Demixer.
    format: "wav", "flac" or "mp3"; bits: 16, 24 or "32f" (float; WAV only; not for MP3).
    overwrite: replace existing stem files (otherwise such an input fails).
    progress: show a progress bar per track on stderr.
    stems: the stems to write (default all; an HTDemucs bag runs only the models they need).
    two_stems: a stem X: write X and no_X, the sum of all the others (Demucs' --two-stems).
    shifts, seed: HTDemucs only: apply_model's random-shift averaging (0 = off), seeded.
    HTDemucs models see the track normalized as demucs.api does (a first cheap pass
    over each file computes the mono mix's mean and std).
    Returns one TrackResult per input, in order; a bad input does not stop the others.
    """
    return asyncio.run(separate_async(inputs, model, outdir, format, bits, overwrite, progress, dev,
                                      stems=stems, shifts=shifts, seed=seed, two_stems=two_stems))
