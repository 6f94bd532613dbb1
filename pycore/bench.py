"""`stemtone bench kernels`: WGSL kernels next to numpy (OpenBLAS / pocketfft), same run.
`stemtone bench separate`: demixing next to the PyTorch CPU reference, same run.

Machines are shared and noisy, so every figure comes with a reference measured in
the same run, and the ratio is what counts. Native only (uses numpy).
"""

from __future__ import annotations

import json
import os
import time


def bench_kernels(dev, quick=False, progress=True):
    from .ops import conv, matmul, scan, spectral

    rows = []

    def log(msg):
        if progress:
            print(f"  ... {msg}", flush=True)

    reps = 2 if quick else 5
    shapes = [("matmul 1024x1024x1024", 1024, 1024, 1024),
              ("matmul 2048x512x2048 (FFN-like)", 2048, 2048, 512)]
    if quick:
        shapes = [("matmul 256x256x256", 256, 256, 256)]
    for name, M, N, K in shapes:
        log(name)
        r = matmul.bench_matmul(dev, M, N, K, repeats=reps)
        rows.append({"name": name, "unit": "GFLOP/s", "ours": r["wgsl_gflops"], "ref": r["numpy_gflops"],
                     "ratio": r["ratio"], "note": f"numpy/OpenBLAS; variant {r.get('config', '?')}"})

    log("conv2d")
    h, w = (64, 128) if quick else (256, 512)
    r = conv.bench_conv2d(dev, h=h, w=w, repeats=reps)
    rows.append({"name": f"conv2d 1x16x{h}x{w} -> 32, k5 s2 p2", "unit": "ms", "ours": r["wgsl_ms"], "ref": r["numpy_ms"],
                 "ratio": r["numpy_ms"] / r["wgsl_ms"], "note": "numpy im2col + OpenBLAS matmul; ratio = speed-up"})

    seconds = 5 if quick else 30
    log(f"stft {seconds}s stereo")
    r = spectral.bench_stft(dev, seconds=seconds, repeat=reps)
    rows.append({"name": f"stft n_fft 4096 hop 1024, {seconds} s stereo 44.1 kHz", "unit": "ms",
                 "ours": r["wgsl_ms"], "ref": r["numpy_ms"], "ratio": r["numpy_ms"] / r["wgsl_ms"],
                 "note": "numpy rfft of the same frames; ratio = speed-up"})

    hours = 60 if quick else 3600
    log(f"phase cumsum drift over {hours} s at 48 kHz")
    t0 = time.perf_counter()
    r = scan.bench_phase_drift(dev, seconds=hours, sr=48000)
    rows.append({"name": f"phase cumsum, {hours} s at 48 kHz", "unit": "cycles max drift",
                 "ours": r["max_drift"], "ref": r["naive_f32_drift"], "ratio": None,
                 "note": f"ref = naive float32 cumsum; target ours <= 1e-3; {time.perf_counter() - t0:.0f} s"})
    return rows


def format_table(dev, rows) -> str:
    out = [f"device: {dev.describe()}", "",
           f"| {'benchmark':52s} | {'unit':16s} | {'WGSL':>10s} | {'reference':>10s} | {'ratio':>7s} | note",
           f"|{'-' * 54}|{'-' * 18}|{'-' * 12}|{'-' * 12}|{'-' * 9}|------"]
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3f}"
        out.append(f"| {r['name']:52s} | {r['unit']:16s} | {_fmt(r['ours']):>10s} | {_fmt(r['ref']):>10s} "
                   f"| {ratio:>7s} | {r['note']}")
    return "\n".join(out)


def _fmt(v):
    if v is None:
        return ""
    if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e5):
        return f"{v:.2e}"
    return f"{v:.2f}"


# --------------------------------------------------------------------------- bench separate

BROWSER_TIMING = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "e2e", "artifacts", "demix-timing.json")


class BenchUnavailable(RuntimeError):
    """Something the benchmark needs is missing (the real-music clip, the weights)."""


def bench_separate(dev, model="spleeter-2stems", seconds=30.0, progress=True):
    """`stemtone bench separate`: demix `seconds` of real music (stereo, 44.1 kHz) with
    our WGSL pipeline and with the PyTorch CPU reference in the same run; our peak GPU
    memory; the whole file-to-file CLI path on the same clip at 48 kHz; and the browser
    time that the e2e test recorded in e2e/artifacts/demix-timing.json, if present."""
    import asyncio

    import numpy as np

    from .demix import Demixer
    from .separation import separate_async
    from .testdata import TestDataUnavailable, real_music_clip

    def log(msg):
        if progress:
            print(f"  ... {msg}", flush=True)

    try:
        clip = real_music_clip(seconds)
    except TestDataUnavailable as e:
        raise BenchUnavailable(str(e)) from None
    n = clip.shape[1]
    try:
        demixer = asyncio.run(Demixer.load(dev, model))
    except (FileNotFoundError, ValueError) as e:
        raise BenchUnavailable(f"model {model}: {e}") from None
    log(f"{model}: warm-up (compiles every kernel)")
    asyncio.run(demixer.separate([ch[:demixer.sample_rate] for ch in clip]))

    log(f"{model}: {seconds:g} s on {dev.describe()}")
    dev.flush()
    resident = dev.mem_in_use
    dev.reset_peak()
    t0 = time.perf_counter()
    ours = asyncio.run(demixer.separate([clip[0], clip[1]]))
    t_ours = time.perf_counter() - t0
    peak = dev.mem_peak

    t_ref, sdrs, ref_note = None, {}, ""
    try:
        import torch

        from .reference import spleeter_torch as ref
    except ImportError:
        ref_note = "reference not run: torch is not installed (pip install torch==2.13.0)"
    else:
        log(f"PyTorch CPU reference ({torch.get_num_threads()} threads)")
        weights = ref.load_weights()
        ref.separate(clip[:, :demixer.sample_rate], weights)  # warm-up
        t0 = time.perf_counter()
        want = ref.separate(clip, weights, length=n)
        t_ref = time.perf_counter() - t0
        for stem in demixer.stems:
            got = np.stack(ours[stem]).astype(np.float64)
            err = np.sum((got - want[stem]) ** 2)
            sdrs[stem] = float("inf") if err == 0 else 10 * np.log10(np.sum(want[stem].astype(np.float64) ** 2) / err)
        ref_note = (f"ref = PyTorch {torch.__version__} CPU, {torch.get_num_threads()} threads; ratio = speed-up; "
                    "SDR vs ref " + ", ".join(f"{s} {v:.1f} dB" for s, v in sdrs.items()))

    rows = [{"name": f"demix {seconds:g} s stereo 44.1 kHz, {model}", "unit": "s", "ours": t_ours,
             "ref": t_ref, "ratio": None if t_ref is None else t_ref / t_ours, "note": ref_note,
             "sdr_db": sdrs or None},
            {"name": "  real-time factor", "unit": "x real time", "ours": seconds / t_ours,
             "ref": None if t_ref is None else seconds / t_ref, "ratio": None,
             "note": "audio seconds per second of compute"},
            {"name": "  peak GPU memory", "unit": "MiB", "ours": peak / 2 ** 20, "ref": None, "ratio": None,
             "note": f"resident {resident / 2 ** 20:.0f} MiB (weights, cached weight layouts) + working set "
                     f"{(peak - resident) / 2 ** 20:.0f} MiB (independent of the track's length)"}]

    log("file to file: 48 kHz WAV -> stemtone separate -> 2 x 16-bit WAV")
    import tempfile

    import soundfile as sf

    from .resample import resample

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "clip48k.wav")
        sf.write(src, resample(clip, 44100, 48000).T, 48000, subtype="PCM_16")
        t0 = time.perf_counter()
        (r,) = asyncio.run(separate_async([src], demixer, os.path.join(tmp, "out"), progress=False))
        t_file = time.perf_counter() - t0
    rows.append({"name": f"stemtone separate, {seconds:g} s 48 kHz file", "unit": "s",
                 "ours": t_file if r.ok else None, "ref": None, "ratio": None,
                 "note": "decode, 48k -> 44.1k -> 48k resampling, demix, write" if r.ok else f"failed: {r.error}"})

    rows.append(browser_row())
    return rows


def browser_row() -> dict:
    """The e2e test's measurement, e2e/artifacts/demix-timing.json: {"demix_s": seconds
    of separation in the page, "audio_s": seconds of audio, "adapter": "..."} (other
    keys are ignored)."""
    row = {"name": "demix in the browser (e2e)", "unit": "s", "ours": None, "ref": None, "ratio": None}
    try:
        with open(BROWSER_TIMING, encoding="utf-8") as f:
            t = json.load(f)
    except (OSError, ValueError):
        row["note"] = "no e2e/artifacts/demix-timing.json yet (run the e2e tests: pytest e2e)"
        return row
    row["ours"] = t.get("demix_s")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(BROWSER_TIMING)))
    row["note"] = (f"{t.get('audio_s', '?')} s clip, {t.get('adapter', 'browser WebGPU')}; "
                   f"from e2e/artifacts/demix-timing.json ({when})")
    return row
