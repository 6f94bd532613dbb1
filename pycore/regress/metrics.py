"""Metrics and their comparison against a baseline.

A metric is a dict (so results.json is plain JSON):

    {"name": "parity/spleeter-2stems/vocals", "family": "parity", "value": 97.3,
     "unit": "dB", "better": "higher", "tol": 3.0, "rel": 0.0, "note": "..."}

A change is within tolerance when |new - old| <= tol + rel * |old| (speed metrics carry
their own measured spread in "rel": the larger of the two runs' is used). Outside it,
the direction says whether it improved or regressed.

    metric(...)                  one metric
    compare(baseline, current)   one row per metric: old, new, delta, status, excess
    STATUSES                     regressed, improved, unchanged, new, missing
"""

from __future__ import annotations

import math

STATUSES = ("regressed", "missing", "improved", "new", "unchanged")


def metric(name, family, value, unit, better, tol=0.0, rel=0.0, note="") -> dict:
    if better not in ("higher", "lower"):
        raise ValueError(f"metric {name}: better must be 'higher' or 'lower', not {better!r}")
    return {"name": name, "family": family, "value": None if value is None else float(value), "unit": unit,
            "better": better, "tol": float(tol), "rel": float(rel), "note": note}


def allowed(old: dict, new: dict) -> float:
    """The change a metric may make without being flagged."""
    return max(old["tol"], new["tol"]) + max(old["rel"], new["rel"]) * abs(old["value"])


def classify(old: dict, new: dict) -> tuple:
    """(status, excess): excess = |delta| / allowed change (how far outside; for sorting)."""
    a, b = old["value"], new["value"]
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        if a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b)):
            return "unchanged", 0.0
        bad = b is None or math.isnan(b) or (math.isinf(b) and (b > 0) == (new["better"] == "lower"))
        return ("regressed" if bad else "improved"), math.inf
    delta = b - a
    room = allowed(old, new)
    if abs(delta) <= room:
        return "unchanged", abs(delta) / room if room else 0.0
    better = delta > 0 if new["better"] == "higher" else delta < 0
    return ("improved" if better else "regressed"), (abs(delta) / room if room else math.inf)


def compare(baseline: list, current: list) -> list:
    """Rows {name, family, unit, better, old, new, delta, status, excess, note}, worst first:
    regressions (largest excess first), missing, improvements, new, unchanged."""
    old = {m["name"]: m for m in baseline}
    rows = []
    for m in current:
        o = old.pop(m["name"], None)
        if o is None:
            rows.append(_row(m, None, "new", 0.0))
        else:
            status, excess = classify(o, m)
            rows.append(_row(m, o, status, excess))
    rows += [_row(o, o, "missing", 0.0, new=False) for o in old.values()]
    rank = {s: i for i, s in enumerate(STATUSES)}
    rows.sort(key=lambda r: (rank[r["status"]], -r["excess"] if math.isfinite(r["excess"]) else -1e300, r["name"]))
    return rows


def _row(m, o, status, excess, new=True) -> dict:
    old = None if o is None else o["value"]
    value = m["value"] if new else None
    delta = None if old is None or value is None else value - old
    return {"name": m["name"], "family": m["family"], "unit": m["unit"], "better": m["better"], "old": old,
            "new": value, "delta": delta, "status": status, "excess": excess,
            "allowed": None if o is None or not new else allowed(o, m), "note": m["note"]}


def regressions(rows, advisory=()) -> list:
    """The rows that fail a run: regressed metrics and metrics the baseline has but this run
    lacks, except those of the `advisory` families (listed in the summary, not gating)."""
    return [r for r in rows if r["status"] in ("regressed", "missing") and r["family"] not in advisory]
