"""`stemtone regress` (pycore/regress, pycore/cli/regress.py): the comparison's rules on
hand-made metrics, and proof that a run catches injected regressions and only those:
a perturbed kernel through STEMTONE_KERNELS, a slowed op, a model with one weight tensor
changed, an op of one model made slightly wrong, and unchanged runs against their own
baseline. (The full quick suite runs in `make test`'s `stemtone regress --suite quick`
against tests/baselines/.)"""

import argparse
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from pycore.cli import regress as cli
from pycore.regress import metrics as M
from pycore.regress import browser_models, models, report, suite, timbre
from pycore.regress.cases import CASES
from pycore.regress.numerics import errors, reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def m(name, value, better="higher", tol=0.1, rel=0.0):
    return M.metric(name, "parity", value, "dB", better, tol=tol, rel=rel)


def test_classify_uses_direction_and_tolerance():
    assert M.classify(m("a", 10.0), m("a", 10.05))[0] == "unchanged"
    assert M.classify(m("a", 10.0), m("a", 9.8))[0] == "regressed"
    assert M.classify(m("a", 10.0), m("a", 10.2))[0] == "improved"
    assert M.classify(m("a", 10.0, "lower"), m("a", 10.2, "lower"))[0] == "regressed"
    # relative tolerance: the larger of the two runs' measured spreads counts
    assert M.classify(m("s", 100.0, tol=0, rel=0.1), m("s", 85.0, tol=0, rel=0.2))[0] == "unchanged"
    assert M.classify(m("s", 100.0, tol=0, rel=0.1), m("s", 85.0, tol=0, rel=0.1))[0] == "regressed"
    assert M.classify(m("n", 10.0), m("n", float("nan")))[0] == "regressed"


def test_compare_lists_worst_first_and_missing_metrics():
    base = [m("a", 10.0), m("b", 10.0), m("c", 10.0), m("gone", 1.0)]
    now = [m("a", 9.0), m("b", 5.0), m("c", 10.0), m("new", 1.0)]
    rows = M.compare(base, now)
    assert [(r["name"], r["status"]) for r in rows] == [
        ("b", "regressed"), ("a", "regressed"), ("gone", "missing"), ("new", "new"), ("c", "unchanged")]
    assert rows[0]["delta"] == -5.0 and rows[0]["old"] == 10.0 and rows[0]["new"] == 5.0
    assert {r["name"] for r in M.regressions(rows)} == {"a", "b", "gone"}


def test_advisory_families_are_listed_but_do_not_fail():
    base = [M.metric("k", "kernels", 1.0, "", "lower"), M.metric("s", "speed", 1.0, "x", "higher", rel=0.5)]
    now = [M.metric("k", "kernels", 2.0, "", "lower"), M.metric("s", "speed", 0.2, "x", "higher", rel=0.5)]
    rows = M.compare(base, now)
    assert {r["name"] for r in rows if r["status"] == "regressed"} == {"k", "s"}
    assert {r["name"] for r in M.regressions(rows, advisory=("speed",))} == {"k"}


def test_metric_refuses_an_unknown_direction():
    with pytest.raises(ValueError, match="better must be 'higher' or 'lower'"):
        M.metric("x", "f", 1.0, "dB", "up")


def test_numerics_reference_is_independent_and_exact_for_its_own_output():
    """Feeding the float64 reference back (as float32) gives errors at float32 rounding."""
    for family in CASES:
        want = reference(family)
        a, r = errors(family, want.shape, want.astype("float32").tobytes())
        assert a <= 6e-8 * max(1.0, abs(want).max()) and r <= 6e-8, family


def test_summary_and_report_name_what_changed():
    base = [m("native/parity/x", 100.0)]
    now = [m("native/parity/x", 60.0)]
    rows = M.compare(base, now)
    res = {"suite": "quick", "backends": ["native"], "seconds": 1.0, "metrics": now,
           "environment": {"commit": "abc", "date": "today", "adapters": {"native": "llvmpipe"}}}
    md = report.summary_markdown(res, rows)
    assert "**REGRESSED**" in md and "native/parity/x | 100 → 60 | -40" in md
    page = report.report_html(res, rows, {})
    assert "REGRESSED" in page and "native/parity/x" in page and "<svg" in page
    # a regression of an advisory family only: the run passes, and the banner says so
    assert "**REGRESSED**" not in report.summary_markdown(res, rows, advisory=("parity",))
    page = report.report_html(res, rows, {}, advisory=("parity",))
    assert "REGRESSED" not in page and "advisory regressions only (parity)" in page
    assert report.ADVISORY_COLOUR in page
    # a long metric name keeps its end in the bar label, after an ellipsis
    long = "native/speed/htdemucs_6s-reduced/ratio_to_reference_with_more"
    svg = report.bars_svg(M.compare([m(long, 1.0)], [m(long, 0.1)]))
    assert "…" + long[-(report.LABEL_CHARS - 1):] in svg
    # f0 tracks: one line per voiced run of each track (none across the rest in the middle)
    track = {"f0_in": [100, 110, 0, 0, 200, 210, 220], "f0_out": [200, 220, 0, 0, 400, 420, 440],
             "voiced": [1, 1, 0, 0, 1, 1, 1]}
    svg = report.f0_svg(track)
    lines = re.findall(r'<polyline [^>]*points="([^"]*)"', svg)
    assert [len(pts.split()) for pts in lines] == [2, 3, 2, 3]


def regress(tmp_path, name, *args, env=None):
    """`stemtone regress` in a child process (STEMTONE_KERNELS is read at import)."""
    out = tmp_path / name
    p = subprocess.run([sys.executable, "-m", "pycore.cli.main", "regress", "--out", str(out), *args],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    assert p.returncode in (0, 1), p.stderr[-3000:]
    return p.returncode, json.loads((out / "results.json").read_text()), (out / "summary.md").read_text()


def statuses(base, now):
    rows = M.compare(base["metrics"], now["metrics"])
    return {r["name"]: r["status"] for r in rows}


def test_unchanged_runs_report_no_regression_and_a_perturbed_kernel_is_caught(tmp_path):
    """Three runs of the kernel numerics against the first one's baseline: no regression.
    Then elementwise.wgsl with `x + y` perturbed by 1e-4 (relative) through
    STEMTONE_KERNELS: exactly the elementwise metrics regress, exit code 1."""
    base_file = tmp_path / "base.json"
    rc, base, _ = regress(tmp_path, "base", "--only", "kernels", "--update-baseline", str(base_file))
    assert rc == 0
    for i in range(3):
        rc, _, md = regress(tmp_path, f"same{i}", "--only", "kernels", "--baseline", str(base_file))
        assert rc == 0, md
        assert "**OK**" in md
    src = open(os.path.join(ROOT, "kernels", "elementwise.wgsl"), encoding="utf-8").read()
    assert "default: { return x + y; }" in src
    bad = tmp_path / "kernels"
    bad.mkdir()
    (bad / "elementwise.wgsl").write_text(src.replace("default: { return x + y; }",
                                                      "default: { return (x + y) * 1.0001; }"))
    rc, now, md = regress(tmp_path, "bad", "--only", "kernels", "--baseline", str(base_file),
                          env={"STEMTONE_KERNELS": str(bad)})
    assert rc == 1
    flagged = {k for k, v in statuses(base, now).items() if v != "unchanged"}
    assert flagged == {"native/kernels/elementwise/max_abs_err", "native/kernels/elementwise/max_rel_err"}, md
    assert "native/kernels/elementwise/max_abs_err" in md


def test_a_slowed_op_is_caught_in_dispatch_time_only(dev, monkeypatch):
    """elementwise.add made 2 ms slower on the host: the dispatch metric regresses, the
    kernel numerics (same op, same values) do not."""
    import time

    from pycore.ops import elementwise

    base, _ = suite.run_native(dev, "quick", ["kernels", "dispatch"], log=lambda s: None)
    add = elementwise.add

    def slow_add(a, b):
        time.sleep(0.002)
        return add(a, b)
    monkeypatch.setattr(elementwise, "add", slow_add)
    now, _ = suite.run_native(dev, "quick", ["kernels", "dispatch"], log=lambda s: None)
    rows = M.compare(base, now)
    assert {r["name"] for r in M.regressions(rows)} == {"native/dispatch/host_us"}


# the quick suite's parity and quality families, shortened (no random-weight models)
SMALL = {**suite.SUITES["quick"], "spleeter_seconds": 2.0, "pairs": 1, "random": [], "crepe_seconds": 1.0,
         "ddsp_seconds": 1.0, "quality_seconds": 4.0}


def flagged(base, now):
    """Names of the metrics that moved outside their tolerance (speed aside: one paired run
    on a shared machine is noise, as in make test's --advisory speed)."""
    return {r["name"] for r in M.compare(base, now) if r["status"] != "unchanged" and r["family"] != "speed"}


def test_a_changed_weight_and_a_wrong_op_are_caught_in_their_models_parity_only(dev, monkeypatch):
    """1. Our Spleeter loaded from a copy of its weights with one tensor (the vocals U-Net's
    first convolution) scaled by 1.001, the reference keeping the shipped file: both
    Spleeter parity stems regress (each stem's mask is its U-Net's share of the sum of
    both, so the vocals network moves the accompaniment too, ~50 dB each); separation
    quality (a 0.1 % change is no audible change), memory, CREPE and DDSP do not.
    2. The layer norm the DDSP decoder runs made 1e-4 (relative) wrong: the DDSP decoder's
    parity regresses; its synthesizer (fed the reference's controls) and CREPE do not."""
    from pycore.models import ddsp
    from pycore.ops import elementwise as E
    from pycore.weights import safetensors, weights_path

    quiet = lambda s: None  # noqa: E731
    base, _ = suite.run_native(dev, SMALL, ["parity", "quality"], log=quiet)
    assert {m["name"] for m in base} >= {"native/parity/crepe-tiny/f0", "native/parity/ddsp-violin/decoder",
                                         "native/parity/ddsp-violin/synth", "native/quality/spleeter-2stems/vocals/sdr"}
    weights = safetensors.load(weights_path("spleeter-2stems"))
    key = "vocals.down1_conv.1.weight"
    changed = np.frombuffer(weights[key].data, np.float32) * np.float32(1.001)
    weights[key] = weights[key]._replace(data=changed.tobytes())
    suite.use_spleeter(dev, models.load_spleeter(dev, weights=weights))
    try:
        now, _ = suite.run_native(dev, SMALL, ["parity", "quality"], log=quiet)
    finally:
        suite.use_spleeter(dev, None)
    assert flagged(base, now) == {"native/parity/spleeter-2stems/vocals",
                                  "native/parity/spleeter-2stems/accompaniment"}
    layer_norm = ddsp.layer_norm
    monkeypatch.setattr(ddsp, "layer_norm", lambda *a, **k: E.scale(layer_norm(*a, **k), 1.0001))
    now, _ = suite.run_native(dev, {**SMALL, "spleeter_seconds": 0}, ["parity"], log=quiet)
    assert flagged([m for m in base if "crepe" in m["name"] or "ddsp" in m["name"]], now) == {
        "native/parity/ddsp-violin/decoder"}


def test_the_browser_models_job_and_their_comparison_with_native(dev, tmp_path):
    """What the regress run serves to the page: job.json names the suite's models and a
    clip that, read as the page reads it, is the suite's real-music clip; the weights are
    served files. The page's stems against native: native's own output gives the cap
    (lavapipe is deterministic), native plus noise scaled to exactly 40 dB gives 40 dB
    (float32 rounding of the sum moves it by < 1e-6 dB); the real-time factor is the
    clip's length over the page's time; a model the page did not return is named."""
    import base64

    from pycore.audio.testdata import real_music_clip

    cfg = {**SMALL, "browser_seconds": 1.0}
    extra, clip = browser_models.page_files(cfg, str(tmp_path))
    with open(extra[browser_models.JOB_URL], encoding="utf-8") as f:
        job = json.load(f)
    assert [(e["key"], e["model"]) for e in job["models"]] == [("spleeter-2stems", "spleeter-2stems")]
    assert all(os.path.getsize(extra["/" + e["weights"]]) > 1e6 for e in job["models"])
    served = np.fromfile(extra["/" + job["clip"]], "<f4").reshape(job["channels"], job["frames"])
    assert np.array_equal(served, real_music_clip(1.0)) and np.array_equal(served, clip)

    native, _, _ = models.separate(dev, suite.spleeter_demixer(dev), clip)
    noise = np.random.default_rng(0).standard_normal(native["accompaniment"].shape)
    noise *= np.sqrt(np.sum(native["accompaniment"].astype(np.float64) ** 2) / np.sum(noise ** 2) / 1e4)
    page = {"vocals": native["vocals"], "accompaniment": (native["accompaniment"] + noise).astype(np.float32)}
    stems = {s: [list(x.shape), base64.b64encode(x.astype("<f4").tobytes()).decode()] for s, x in page.items()}
    out = browser_models.model_metrics(dev, cfg, clip, {"spleeter-2stems": {"seconds": 4.0, "stems": stems}},
                                       log=lambda s: None)
    values = {m["name"]: m["value"] for m in out}
    assert values["parity/spleeter-2stems/vocals/vs_native"] == browser_models.SDR_CAP_DB
    assert abs(values["parity/spleeter-2stems/accompaniment/vs_native"] - 40.0) < 1e-4
    assert values["speed/spleeter-2stems/rtf"] == pytest.approx(0.25)
    with pytest.raises(RuntimeError, match="no output for spleeter-2stems"):
        browser_models.model_metrics(dev, cfg, clip, {}, log=lambda s: None)


def test_timbre_recomputes_the_model_cards_holdout_figures(dev):
    """The violin's hold-out loss on melody m009 and its ratio to the sine baseline, by the
    suite's code, equal the model card's row (written by pycore.train.evaluate when the
    model was trained, 3 decimals): within the card's rounding (5e-4) plus 1e-4 relative
    for float32 summation order."""
    from pycore.train import data

    if not data.fluidsynth_available():
        pytest.skip("the hold-out melodies need fluidsynth and FluidR3_GM (make test installs them)")
    card = open(os.path.join(ROOT, "weights", "cards", "ddsp-violin.md"), encoding="utf-8").read()
    row = re.search(r"^\| m009 \| [\d.]+ \| ([\d.]+) \([^)]*\) \| ([\d.]+) ", card, re.M)
    model, sine = float(row[1]), float(row[2])
    got = {m["name"]: m["value"] for m in timbre.holdout_metrics(dev, ["violin"], 1, log=lambda s: None)}
    assert set(got) == {"timbre/violin/holdout_loss", "timbre/violin/holdout_vs_sine"}
    assert got["timbre/violin/holdout_loss"] == pytest.approx(model, abs=5e-4 + 1e-4 * model)
    ratio_room = model / sine * ((5e-4 + 1e-4 * model) / model + 5e-4 / sine)
    assert got["timbre/violin/holdout_vs_sine"] == pytest.approx(model / sine, abs=ratio_room)


def test_baselines_are_chosen_by_backend_and_adapter_class(tmp_path, monkeypatch):
    from pycore.regress import environment

    assert environment.adapter_class("native: llvmpipe / llvmpipe (LLVM 15.0.6, 256 bits) / Mesa 22.3.6") == "lavapipe"
    assert environment.adapter_class("browser: google / swiftshader") == "swiftshader"
    assert environment.adapter_class("native: NVIDIA GeForce RTX 4090 / NVIDIA GeForce RTX 4090 / 550.1") == \
        "nvidia-geforce-rtx-4090"
    # the committed baselines are this machine's: native on lavapipe, browser on SwiftShader
    for name in ("native-lavapipe.json", "browser-swiftshader.json"):
        res = cli.load_results(os.path.join(ROOT, "tests", "baselines", name))
        assert {m["name"].split("/")[0] for m in res["metrics"]} == {name.split("-")[0]}
    monkeypatch.setattr(environment, "BASELINES", str(tmp_path))
    env = {"adapters": {"native": "native: llvmpipe / llvmpipe", "browser": "browser: nvidia / ampere"}}
    results = {"schema": cli.SCHEMA, "backends": ["native", "browser"], "environment": env,
               "metrics": [m("native/parity/x", 1.0), m("browser/parity/x", 2.0)]}
    cli.update_auto(results)
    assert sorted(os.listdir(tmp_path)) == ["browser-nvidia-ampere.json", "native-lavapipe.json"]
    assert [x["value"] for x in cli.auto_baseline(env, ["browser"])["metrics"]] == [2.0]
    assert len(cli.auto_baseline(env, ["native", "browser"])["metrics"]) == 2
    os.remove(tmp_path / "browser-nvidia-ampere.json")
    with pytest.raises(SystemExit, match="no baseline for the browser adapter 'nvidia-ampere'.*"
                                         "browser-nvidia-ampere.json does not exist.*--update-baseline auto"):
        cli.auto_baseline(env, ["native", "browser"])


def test_bad_arguments_say_what_to_do(tmp_path):
    with pytest.raises(SystemExit, match="cannot read .*results.json"):
        cli.load_results(str(tmp_path / "nope.json"))
    (tmp_path / "old.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(SystemExit, match="regenerate it with --update-baseline"):
        cli.load_results(str(tmp_path / "old.json"))
    with pytest.raises(ValueError, match="unknown metric families"):
        suite.run_native(None, "quick", ["nope"])
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["regress", "--only", "kernels", "--update-baseline", "auto"])
    with pytest.raises(SystemExit, match="--update-baseline auto records the whole suite; drop --only"):
        cli.cmd_regress(args)
