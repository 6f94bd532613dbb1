"""What every benchmark shares: the row that each measurement becomes (the `--json`
output), the table that prints the rows, progress lines, best-of-n timing and the
real-music clip (pycore.audio.testdata) that the separation benchmarks run on."""

from __future__ import annotations

import os
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


class BenchUnavailable(RuntimeError):
    """Something the benchmark needs is missing (the real-music clip, the weights)."""


def row(name, unit, ours, ref=None, ratio=None, note="", **extra) -> dict:
    """One measurement: ours next to the reference measured in the same run, their ratio
    (None where it means nothing) and a note; `extra` keys follow (e.g. sdr_db)."""
    return {"name": name, "unit": unit, "ours": ours, "ref": ref, "ratio": ratio, "note": note, **extra}


def format_table(dev, rows, ours="WGSL", ref="reference") -> str:
    out = [f"device: {dev.describe() if dev is not None else 'CPU only'}", "",
           f"| {'benchmark':52s} | {'unit':16s} | {ours:>10s} | {ref:>10s} | {'ratio':>7s} | note",
           f"|{'-' * 54}|{'-' * 18}|{'-' * 12}|{'-' * 12}|{'-' * 9}|------"]
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3f}"
        out.append(f"| {r['name']:52s} | {r['unit']:16s} | {fmt(r['ours']):>10s} | {fmt(r['ref']):>10s} "
                   f"| {ratio:>7s} | {r['note']}")
    return "\n".join(out)


def fmt(v):
    if v is None:
        return ""
    if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e5):
        return f"{v:.2e}"
    return f"{v:.2f}"


def logger(progress):
    """log(message): a progress line on stdout, or nothing."""
    def log(msg):
        if progress:
            print(f"  ... {msg}", flush=True)
    return log


def best_time(fn, repeat=2) -> float:
    """The shortest of `repeat` wall-clock timings of fn() (seconds)."""
    out = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t0)
    return out


def music_clip(seconds):
    """A stereo real-music clip [2, n] (pycore.audio.testdata), or BenchUnavailable saying why not."""
    from ...audio.testdata import TestDataUnavailable, real_music_clip

    try:
        return real_music_clip(seconds)
    except TestDataUnavailable as e:
        raise BenchUnavailable(str(e)) from None
