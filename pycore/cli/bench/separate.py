"""`stemtone bench separate`: demixing `seconds` of real music (stereo, 44.1 kHz) with
our WGSL pipeline next to the PyTorch CPU reference in the same run: the speed-up, the
SDR between the two, our peak GPU memory. Spleeter: its released weights, the reference
in this process, plus the whole file-to-file CLI path and the browser time that the e2e
test recorded. Demucs v4 and Open-Unmix: random weights (random_weights), the reference
in a child process."""

from __future__ import annotations

import json
import os
import time

from .common import ROOT, BenchUnavailable, logger, music_clip, row
from .random_weights import random_demixer, run_reference

BROWSER_TIMING = os.path.join(ROOT, "e2e", "artifacts", "demix-timing.json")


def default_seconds(model: str) -> float:
    """--seconds' default: 30 s of music for Spleeter, 10 s for the (much heavier) Demucs
    v4 and Open-Unmix, whose references run on the CPU too."""
    from ...demix import MODELS

    return 10.0 if MODELS.get(model, {}).get("family") in ("htdemucs", "umx") else 30.0


def _time_separate(dev, demixer, model, clip, seconds, log):
    """(stems, seconds taken, resident GPU bytes before, peak GPU bytes during) of one
    separation of the stereo clip, after a 1 s warm-up run that compiles every kernel."""
    import asyncio

    log(f"{model}: warm-up (compiles every kernel)")
    asyncio.run(demixer.separate([ch[:demixer.sample_rate] for ch in clip]))
    log(f"{model}: {seconds:g} s on {dev.describe()}")
    dev.flush()
    resident = dev.mem_in_use
    dev.reset_peak()
    t0 = time.perf_counter()
    ours = asyncio.run(demixer.separate([clip[0], clip[1]]))
    return ours, time.perf_counter() - t0, resident, dev.mem_peak


def _sdrs(stems, ours, want) -> dict:
    """{stem: SDR (dB) of our stem against the reference's}."""
    import numpy as np

    out = {}
    for stem in stems:
        got = np.stack(ours[stem]).astype(np.float64)
        err = np.sum((got - want[stem]) ** 2)
        out[stem] = float("inf") if err == 0 else float(10 * np.log10(np.sum(want[stem].astype(np.float64) ** 2) / err))
    return out


def _sdr_note(sdrs) -> str:
    return "SDR vs ref " + ", ".join(f"{s} {v:.1f} dB" for s, v in sdrs.items())


def bench_separate(dev, model="spleeter-2stems", seconds=30.0, progress=True):
    """`stemtone bench separate`: Demucs v4 and Open-Unmix go to bench_separate_random.
    Spleeter: demix `seconds` of real music (stereo, 44.1 kHz) with
    our WGSL pipeline and with the PyTorch CPU reference in the same run; our peak GPU
    memory; the whole file-to-file CLI path on the same clip at 48 kHz; and the browser
    time that the e2e test recorded in e2e/artifacts/demix-timing.json, if present."""
    from ...demix import MODELS

    if MODELS.get(model, {}).get("family") in ("htdemucs", "umx"):
        return bench_separate_random(dev, model, seconds, progress)
    import asyncio

    from ...demix import Demixer

    log = logger(progress)
    clip = music_clip(seconds)
    try:
        demixer = asyncio.run(Demixer.load(dev, model))
    except (FileNotFoundError, ValueError) as e:
        raise BenchUnavailable(f"model {model}: {e}") from None
    ours, t_ours, resident, peak = _time_separate(dev, demixer, model, clip, seconds, log)
    t_ref, sdrs, ref_note = _spleeter_reference(demixer, clip, ours, log)

    rows = [row(f"demix {seconds:g} s stereo 44.1 kHz, {model}", "s", t_ours, t_ref,
                None if t_ref is None else t_ref / t_ours, ref_note, sdr_db=sdrs or None),
            row("  real-time factor", "x real time", seconds / t_ours, None if t_ref is None else seconds / t_ref,
                note="audio seconds per second of compute"),
            row("  peak GPU memory", "MiB", peak / 2 ** 20,
                note=f"resident {resident / 2 ** 20:.0f} MiB (weights, cached weight layouts) + working set "
                     f"{(peak - resident) / 2 ** 20:.0f} MiB (independent of the track's length)")]
    rows.append(_file_to_file_row(demixer, clip, seconds, log))
    rows.append(browser_row())
    return rows


def _spleeter_reference(demixer, clip, ours, log):
    """(seconds, {stem: SDR dB}, note) of the PyTorch CPU Spleeter (pycore.reference)
    on the same clip after a 1 s warm-up; (None, {}, why) without torch."""
    try:
        import torch

        from ...reference import spleeter_torch as ref
    except ImportError:
        return None, {}, "reference not run: torch is not installed (pip install torch==2.13.0)"
    log(f"PyTorch CPU reference ({torch.get_num_threads()} threads)")
    weights = ref.load_weights()
    ref.separate(clip[:, :demixer.sample_rate], weights)  # warm-up
    t0 = time.perf_counter()
    want = ref.separate(clip, weights, length=clip.shape[1])
    t_ref = time.perf_counter() - t0
    sdrs = _sdrs(demixer.stems, ours, want)
    return t_ref, sdrs, (f"ref = PyTorch {torch.__version__} CPU, {torch.get_num_threads()} threads; "
                         "ratio = speed-up; " + _sdr_note(sdrs))


def _file_to_file_row(demixer, clip, seconds, log) -> dict:
    """`stemtone separate` on the clip written as a 48 kHz 16-bit WAV: decoding,
    resampling both ways, demixing and writing the stems."""
    import asyncio
    import tempfile

    import soundfile as sf

    from ...audio.resample import resample
    from ...demix.files import separate_async

    log("file to file: 48 kHz WAV -> stemtone separate -> 2 x 16-bit WAV")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "clip48k.wav")
        sf.write(src, resample(clip, 44100, 48000).T, 48000, subtype="PCM_16")
        t0 = time.perf_counter()
        (r,) = asyncio.run(separate_async([src], demixer, os.path.join(tmp, "out"), progress=False))
        t_file = time.perf_counter() - t0
    return row(f"stemtone separate, {seconds:g} s 48 kHz file", "s", t_file if r.ok else None,
               note="decode, 48k -> 44.1k -> 48k resampling, demix, write" if r.ok else f"failed: {r.error}")


def browser_row() -> dict:
    """The e2e test's measurement, e2e/artifacts/demix-timing.json: {"demix_s": seconds
    of separation in the page, "audio_s": seconds of audio, "adapter": "..."} (other
    keys are ignored)."""
    name = "demix in the browser (e2e)"
    try:
        with open(BROWSER_TIMING, encoding="utf-8") as f:
            t = json.load(f)
    except (OSError, ValueError):
        return row(name, "s", None, note="no e2e/artifacts/demix-timing.json yet (run the e2e tests: pytest e2e)")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(BROWSER_TIMING)))
    return row(name, "s", t.get("demix_s"), note=f"{t.get('audio_s', '?')} s clip, "
               f"{t.get('adapter', 'browser WebGPU')}; from e2e/artifacts/demix-timing.json ({when})")


def bench_separate_random(dev, model, seconds=10.0, progress=True, reduced=False):
    """`stemtone bench separate -m htdemucs|htdemucs_6s|umxl`: random weights in the
    official configuration (or `reduced`), `seconds` of real music; ours (Demixer.separate,
    normalization included) next to the reference (demucs: Separator.separate_tensor's
    normalization around apply_model(shifts=0, split, overlap 0.25); openunmix: Separator)
    run in a child process on the same clip, same weights; ratio, SDR between the two,
    our peak GPU memory and the reference process's peak RSS."""
    log = logger(progress)
    clip = music_clip(seconds)
    config = "reduced" if reduced else "official"
    log(f"{model}: random weights, {config} configuration")
    demixer = random_demixer(dev, model, reduced)
    ours, t_ours, resident, peak = _time_separate(dev, demixer, model, clip, seconds, log)

    log("the PyTorch CPU reference, in a child process")
    ref, want = run_reference(model, clip, reduced, seed=0)
    sdrs = _sdrs(demixer.stems, ours, want)
    t_ref = ref["seconds"]
    note = (f"random weights, {config} configuration; ref = PyTorch {ref['torch']} CPU, {ref['threads']} threads; "
            "ratio = speed-up; " + _sdr_note(sdrs))
    return [row(f"demix {seconds:g} s stereo 44.1 kHz, {model}", "s", t_ours, t_ref, t_ref / t_ours, note,
                sdr_db=sdrs),
            row("  real-time factor", "x real time", seconds / t_ours, seconds / t_ref,
                note="audio seconds per second of compute"),
            row("  peak memory", "MiB", peak / 2 ** 20, ref["peak_rss"] / 2 ** 20,
                note=f"ours: GPU, resident {resident / 2 ** 20:.0f} MiB + working set "
                     f"{(peak - resident) / 2 ** 20:.0f} MiB; ref: peak RSS of its whole process")]
