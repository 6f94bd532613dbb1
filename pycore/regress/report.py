"""What a regression run writes: summary.md (what changed, worst first) and report.html
(one self-contained file that opens offline: every metric with its delta, colour-coded;
bars of each changed metric against the baseline; spectrograms of each estimated stem
next to its reference; input and output f0 tracks for tone), and the trend page of
`stemtone regress report A.json B.json ...`.

Plots are inline SVG and PNG (a small PNG writer: zlib + struct), so nothing is fetched.
"""

from __future__ import annotations

import base64
import html
import math
import struct
import zlib

import numpy as np

from .metrics import regressions

COLOURS = {"regressed": "#c62828", "missing": "#c62828", "improved": "#2e7d32", "new": "#1565c0",
           "unchanged": "#616161"}
ADVISORY_COLOUR = "#ef6c00"   # the banner when only advisory families regressed
LABEL_CHARS = 50              # a bar's label: longer metric names keep their end, after an ellipsis


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.3f}".rstrip("0").rstrip(".")


def verdict(rows, advisory=()) -> tuple:
    """(banner word, colour) of a comparison: REGRESSED when a gating metric regressed,
    "advisory regressions only" (amber) when only metrics of the `advisory` families did,
    else OK."""
    if regressions(rows, advisory):
        return "REGRESSED", COLOURS["regressed"]
    if regressions(rows):
        return f"OK, advisory regressions only ({', '.join(advisory)})", ADVISORY_COLOUR
    return "OK", COLOURS["improved"]


def summary_markdown(results, rows=None, advisory=()) -> str:
    env = results["environment"]
    out = [f"# stemtone regress: {results['suite']} suite, {', '.join(results['backends'])}", "",
           f"commit {env.get('commit', '?')}, {env.get('date', '?')}, {results['seconds']:.0f} s; "
           f"adapters: {'; '.join(env.get('adapters', {}).values())}", ""]
    if rows is None:
        out += ["No baseline given: every metric is listed.", "", "| metric | value | unit |", "|---|---|---|"]
        out += [f"| {m['name']} | {fmt(m['value'])} | {m['unit']} |" for m in results["metrics"]]
        return "\n".join(out) + "\n"
    changed = [r for r in rows if r["status"] != "unchanged"]
    counts = {s: sum(r["status"] == s for r in rows) for s in COLOURS}
    out.append(f"**{verdict(rows, advisory)[0]}**: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    out.append("")
    if changed:
        out += ["| status | metric | old → new | delta | allowed | unit |", "|---|---|---|---|---|---|"]
        out += [f"| {r['status']} | {r['name']} | {fmt(r['old'])} → {fmt(r['new'])} | {fmt(r['delta'])} "
                f"| ±{fmt(r['allowed'])} | {r['unit']} |" for r in changed]
    else:
        out.append("Nothing changed beyond its tolerance.")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ pictures


def png(rgb: np.ndarray) -> str:
    """A data: URL of an [h, w, 3] uint8 image."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\0" + rgb[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(data).decode()


def spectrogram(x: np.ndarray, n_fft=1024, hop=512, bins=256, width=400) -> str:
    """Log-magnitude spectrogram (mono downmix, 0-11 kHz at 44.1 kHz, -80..0 dB) as a PNG."""
    x = np.asarray(x, np.float64)
    x = x.mean(0) if x.ndim == 2 else x
    frames = max(1, 1 + (len(x) - n_fft) // hop)
    idx = np.arange(n_fft)[None] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(np.pad(x, (0, n_fft))[idx] * np.hanning(n_fft), axis=-1))[:, :bins]
    db = 20 * np.log10(spec / (spec.max() + 1e-12) + 1e-12)
    v = np.clip((db + 80) / 80, 0, 1).T[::-1]                       # [bins, frames], low at the bottom
    cols = np.linspace(0, v.shape[1] - 1, width).astype(int)
    v = v[:, cols]
    rgb = np.stack([v ** 0.6, v ** 1.5, 0.35 + 0.4 * v - 0.35 * v ** 3], -1)   # dark blue -> yellow
    return png((np.clip(rgb, 0, 1) * 255).astype(np.uint8))


def f0_svg(track, width=560, height=180) -> str:
    fi, fo, voiced = (np.asarray(track[k], np.float64) for k in ("f0_in", "f0_out", "voiced"))
    lo, hi = np.log2(60.0), np.log2(1200.0)

    def line(f, colour):
        """One polyline per run of voiced frames (no line drawn across a rest)."""
        runs, pts = [], []
        for i, (v, ok) in enumerate(zip(f, voiced)):
            if ok:
                pts.append(f"{i / max(1, len(f) - 1) * width:.1f},"
                           f"{height - (np.log2(max(v, 60)) - lo) / (hi - lo) * height:.1f}")
            elif pts:
                runs.append(pts)
                pts = []
        runs += [pts] if pts else []
        return "".join(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(r)}"/>'
                       for r in runs)
    grid = "".join(f'<line x1="0" x2="{width}" y1="{height - (np.log2(f) - lo) / (hi - lo) * height:.1f}" '
                   f'y2="{height - (np.log2(f) - lo) / (hi - lo) * height:.1f}" stroke="#ddd"/>'
                   f'<text x="2" y="{height - (np.log2(f) - lo) / (hi - lo) * height - 2:.1f}" font-size="10">{f} Hz</text>'
                   for f in (100, 200, 400, 800))
    return (f'<svg width="{width}" height="{height}" style="background:#fafafa">{grid}'
            f'{line(fi, "#1565c0")}{line(fo, "#e65100")}</svg>'
            '<div class="legend"><span style="color:#1565c0">input f0 (x 2^octave)</span> · '
            '<span style="color:#e65100">output f0</span> (voiced frames, CREPE; notes outside the '
            'instrument\'s range are played octaves up or down)</div>')


def bars_svg(rows, width=560) -> str:
    """Old (grey) and new (status colour) of each changed metric, scaled per metric."""
    rows = [r for r in rows if r["old"] is not None and r["new"] is not None and r["status"] != "unchanged"]
    if not rows:
        return "<p>No metric moved beyond its tolerance: nothing to draw.</p>"
    h = 34
    out = [f'<svg width="{width + 560}" height="{h * len(rows)}">']
    for i, r in enumerate(rows):
        top = max(abs(r["old"]), abs(r["new"])) or 1.0
        y = i * h
        for j, (v, colour) in enumerate(((r["old"], "#9e9e9e"), (r["new"], COLOURS[r["status"]]))):
            w = 0 if not math.isfinite(v) else abs(v) / top * width
            out.append(f'<rect x="310" y="{y + 4 + j * 12}" width="{w:.1f}" height="10" fill="{colour}"/>')
        name = r["name"] if len(r["name"]) <= LABEL_CHARS else "…" + r["name"][-(LABEL_CHARS - 1):]
        out.append(f'<text x="2" y="{y + 18}" font-size="11">{html.escape(name)}</text>')
        out.append(f'<text x="{320 + width}" y="{y + 18}" font-size="11">'
                   f'{fmt(r["old"])} → {fmt(r["new"])} {html.escape(r["unit"])}</text>')
    return "".join(out) + "</svg>"


CSS = """body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;width:100%}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}.st{color:#fff;border-radius:3px;padding:1px 6px}
.grid{display:grid;grid-template-columns:repeat(2,1fr);gap:12px}figure{margin:0}img{width:100%;image-rendering:pixelated}
figcaption{font-size:12px;color:#555}.legend{font-size:12px}h2{margin-top:28px}.banner{padding:10px;border-radius:4px;color:#fff}"""


def report_html(results, rows=None, figures=None, advisory=()) -> str:
    env = results["environment"]
    figures = figures or {}
    title = f"stemtone regress · {results['suite']} · {', '.join(results['backends'])}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if rows is not None:
        word, colour = verdict(rows, advisory)
        n = {s: sum(r["status"] == s for r in rows) for s in COLOURS}
        parts.append(f'<div class="banner" style="background:{colour}">{html.escape(word)}: '
                     + ", ".join(f"{v} {k}" for k, v in n.items() if v) + "</div>")
    parts.append("<h2>Environment</h2><table>" + "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in env.items()) + "</table>")
    if rows is not None:
        parts.append("<h2>What moved, against the baseline</h2>" + bars_svg(rows))
    parts.append("<h2>Every metric</h2><table><tr><th>status</th><th>metric</th><th>baseline</th><th>now</th>"
                 "<th>delta</th><th>allowed</th><th>unit</th><th>better</th><th>note</th></tr>")
    listing = rows if rows is not None else [
        {"name": m["name"], "status": "new", "old": None, "new": m["value"], "delta": None, "allowed": None,
         "unit": m["unit"], "better": m["better"], "note": m["note"]} for m in results["metrics"]]
    for r in listing:
        parts.append(f'<tr><td><span class="st" style="background:{COLOURS[r["status"]]}">{r["status"]}</span></td>'
                     f'<td>{html.escape(r["name"])}</td><td class="num">{fmt(r["old"])}</td>'
                     f'<td class="num">{fmt(r["new"])}</td><td class="num">{fmt(r["delta"])}</td>'
                     f'<td class="num">{"" if r["allowed"] is None else "±" + fmt(r["allowed"])}</td>'
                     f'<td>{html.escape(r["unit"])}</td><td>{r["better"]}</td><td>{html.escape(r["note"])}</td></tr>')
    parts.append("</table>")
    for key, heading in (("spectrograms", "Spectrograms: ours next to the reference implementation"),
                         ("quality", "Spectrograms: estimated stems next to the ground truth")):
        if figures.get(key):
            parts.append(f"<h2>{heading}</h2><div class='grid'>")
            for name, pair in figures[key].items():
                for which in ("ours", "reference"):
                    parts.append(f"<figure><img src='{spectrogram(pair[which])}'><figcaption>{html.escape(name)} · "
                                 f"{which} (0-11 kHz, 80 dB)</figcaption></figure>")
            parts.append("</div>")
    if figures.get("f0"):
        parts.append("<h2>Tone: input and output f0</h2>")
        for name, track in figures["f0"].items():
            parts.append(f"<h3>{html.escape(name)}</h3>{f0_svg(track)}")
    return "\n".join(parts) + "</body></html>\n"


def trend_html(results_list, names) -> str:
    """One small line chart per metric over several results files, in the given order."""
    metrics = {}
    for i, res in enumerate(results_list):
        for m in res["metrics"]:
            metrics.setdefault(m["name"], {"unit": m["unit"], "better": m["better"], "values": {}})["values"][i] = m["value"]
    n = len(results_list)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>stemtone regress trend</title>"
             f"<style>{CSS}</style></head><body><h1>Trend over {n} runs</h1><ol>"
             + "".join(f"<li>{html.escape(x)} ({html.escape(r['environment'].get('date', '?'))}, "
                       f"{html.escape(str(r['environment'].get('commit', '?')))})</li>" for x, r in zip(names, results_list))
             + "</ol><table><tr><th>metric</th><th>trend</th><th>first → last</th><th>unit</th><th>better</th></tr>"]
    w, h = 240, 40
    for name, m in metrics.items():
        pts = [(i, v) for i, v in sorted(m["values"].items()) if v is not None and math.isfinite(v)]
        svg = ""
        if pts:
            lo, hi = min(v for _, v in pts), max(v for _, v in pts)
            span = (hi - lo) or 1.0
            xy = [(i / max(1, n - 1) * (w - 8) + 4, h - 4 - (v - lo) / span * (h - 8)) for i, v in pts]
            svg = (f'<svg width="{w}" height="{h}"><polyline fill="none" stroke="#1565c0" stroke-width="1.5" '
                   f'points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in xy)}"/>'
                   + "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="#1565c0"/>' for x, y in xy) + "</svg>")
        first, last = (pts[0][1], pts[-1][1]) if pts else (None, None)
        parts.append(f"<tr><td>{html.escape(name)}</td><td>{svg}</td><td>{fmt(first)} → {fmt(last)}</td>"
                     f"<td>{html.escape(m['unit'])}</td><td>{m['better']}</td></tr>")
    return "\n".join(parts) + "</table></body></html>\n"
