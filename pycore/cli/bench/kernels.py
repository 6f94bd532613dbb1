"""`stemtone bench kernels`: single WGSL kernels (pycore.ops) next to numpy in the same
run: matmul and conv2d against OpenBLAS, the STFT against pocketfft (numpy rfft), and the
phase cumsum's drift over an hour at 48 kHz against a naive float32 cumsum."""

from __future__ import annotations

import time

from .common import logger, row


def bench_kernels(dev, quick=False, progress=True):
    from ...ops import conv, matmul, scan, spectral

    rows = []

    log = logger(progress)

    reps = 2 if quick else 5
    shapes = [("matmul 1024x1024x1024", 1024, 1024, 1024),
              ("matmul 2048x512x2048 (FFN-like)", 2048, 2048, 512)]
    if quick:
        shapes = [("matmul 256x256x256", 256, 256, 256)]
    for name, M, N, K in shapes:
        log(name)
        r = matmul.bench_matmul(dev, M, N, K, repeats=reps)
        rows.append(row(name, "GFLOP/s", r["wgsl_gflops"], r["numpy_gflops"], r["ratio"],
                        f"numpy/OpenBLAS; variant {r.get('config', '?')}"))

    log("conv2d")
    h, w = (64, 128) if quick else (256, 512)
    r = conv.bench_conv2d(dev, h=h, w=w, repeats=reps)
    rows.append(row(f"conv2d 1x16x{h}x{w} -> 32, k5 s2 p2", "ms", r["wgsl_ms"], r["numpy_ms"],
                    r["numpy_ms"] / r["wgsl_ms"], "numpy im2col + OpenBLAS matmul; ratio = speed-up"))

    seconds = 5 if quick else 30
    log(f"stft {seconds}s stereo")
    r = spectral.bench_stft(dev, seconds=seconds, repeat=reps)
    rows.append(row(f"stft n_fft 4096 hop 1024, {seconds} s stereo 44.1 kHz", "ms", r["wgsl_ms"], r["numpy_ms"],
                    r["numpy_ms"] / r["wgsl_ms"], "numpy rfft of the same frames; ratio = speed-up"))

    hours = 60 if quick else 3600
    log(f"phase cumsum drift over {hours} s at 48 kHz")
    t0 = time.perf_counter()
    r = scan.bench_phase_drift(dev, seconds=hours, sr=48000)
    rows.append(row(f"phase cumsum, {hours} s at 48 kHz", "cycles max drift", r["max_drift"], r["naive_f32_drift"],
                    note=f"ref = naive float32 cumsum; target ours <= 1e-3; {time.perf_counter() - t0:.0f} s"))
    return rows
