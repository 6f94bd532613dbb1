"""`stemtone bench kernels`: WGSL kernels next to numpy (OpenBLAS / pocketfft), same run.

Machines are shared and noisy, so every figure comes with a reference measured in
the same run, and the ratio is what counts. Native only (uses numpy).
"""

from __future__ import annotations

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
