"""`stemtone regress`: the regression suite against a committed baseline.

    stemtone regress [--suite quick|full] [--backend native|browser|both] [--baseline FILE]
                     [--out DIR] [--update-baseline FILE] [--only FAMILY,...]
    stemtone regress report A.json B.json ...     each metric's trend over several runs

Writes DIR/results.json (schema-versioned), DIR/summary.md and DIR/report.html (opens
offline). With --baseline each metric is classed improved / unchanged / regressed against
its tolerance, and the exit code is 1 on any regression. --update-baseline FILE writes
this run's results there.

Baselines are per backend and adapter class: tests/baselines/<backend>-<class>.json
(native-lavapipe.json, browser-swiftshader.json; pycore.regress.environment.adapter_class).
`--baseline auto` compares each backend with its adapter's file and stops with a message
naming the missing file where there is none; `--update-baseline auto` (re)writes them.
"""

from __future__ import annotations

import json
import os
import sys
import time

SCHEMA = "stemtone-regress/1"
AUTO = "auto"
DEFAULT_OUT = "regress-out"


def add_parser(sub):
    r = sub.add_parser("regress", help="the regression suite: metrics against a baseline, summary and report")
    r.add_argument("report", nargs="*", metavar="report A.json B.json",
                   help="`report` followed by results files: draw each metric's trend (DIR/trend.html)")
    r.add_argument("--suite", choices=("quick", "full"), default="quick")
    r.add_argument("--backend", choices=("native", "browser", "both"), default="native")
    r.add_argument("--baseline", metavar="FILE|auto",
                   help="results.json to compare with (exit 1 on a regression); auto: tests/baselines/"
                        "<backend>-<adapter class>.json for each backend")
    r.add_argument("--out", metavar="DIR", default=DEFAULT_OUT, help="output folder (default %(default)s)")
    r.add_argument("--update-baseline", metavar="FILE|auto",
                   help="also write this run's results to FILE; auto: each backend's to tests/baselines/"
                        "<backend>-<adapter class>.json")
    r.add_argument("--advisory", metavar="FAMILY,...", default="",
                   help="families whose regressions are reported but do not fail the run (make test: speed, "
                        "whose figures swing more than twofold between runs on a shared machine)")
    r.add_argument("--only", metavar="FAMILY,...", default="",
                   help="run only these metric families (kernels, dispatch, parity, quality, tone, timbre, browser)")
    r.set_defaults(fn=cmd_regress)


def load_results(path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            res = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"stemtone regress: cannot read {path} ({e}); give a results.json that "
                         "`stemtone regress` wrote") from None
    if res.get("schema") != SCHEMA:
        raise SystemExit(f"stemtone regress: {path} has schema {res.get('schema')!r}, not {SCHEMA!r}; "
                         "regenerate it with --update-baseline")
    return res


def cmd_regress(args) -> int:
    from ..regress import report

    if args.report:
        if args.report[0] != "report" or len(args.report) < 2:
            raise SystemExit("stemtone regress: positional arguments are `report A.json B.json ...`")
        files = args.report[1:]
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "trend.html")
        with open(path, "w", encoding="utf-8") as f:
            f.write(report.trend_html([load_results(p) for p in files], files))
        print(f"trend of {len(files)} runs: {path}")
        return 0
    families = [f for f in args.only.split(",") if f]
    if args.update_baseline == AUTO and families:
        raise SystemExit("stemtone regress: --update-baseline auto records the whole suite; drop --only "
                         "(or write the partial results to a file of your own)")
    if args.baseline == AUTO:
        baseline = None      # chosen per backend once the adapters are known
        if args.backend in ("native", "both"):
            auto_baseline({"adapters": {"native": native_description()}}, ["native"])  # fail before running
    else:
        baseline = load_results(args.baseline) if args.baseline else None
    results, figures = run(args.suite, args.backend, families)
    if args.baseline == AUTO:
        baseline = auto_baseline(results["environment"], results["backends"])
    advisory = tuple(f for f in args.advisory.split(",") if f)
    if args.update_baseline == AUTO:
        update_auto(results)
    return write(results, figures, baseline, args.out,
                 None if args.update_baseline == AUTO else args.update_baseline, advisory)


def native_description() -> str:
    from ..gpu.native import get_device

    return get_device().describe()


def auto_baseline(env, backends) -> dict:
    """One baseline (results dict) made of each backend's file for its adapter class."""
    from ..regress.environment import adapter_class, baseline_file

    merged = None
    for backend in backends:
        path = baseline_file(backend, env)
        if not os.path.isfile(path):
            raise SystemExit(f"stemtone regress: no baseline for the {backend} adapter "
                             f"{adapter_class(env['adapters'][backend])!r} ({env['adapters'][backend]}): "
                             f"{path} does not exist. Record one on this machine with "
                             f"`stemtone regress --backend {backend} --update-baseline auto`, or compare with "
                             "--baseline FILE")
        res = load_results(path)
        if merged is None:
            merged = res
        else:
            merged = {**merged, "metrics": merged["metrics"] + res["metrics"]}
    return merged


def update_auto(results):
    """Write each backend's part of `results` to its adapter's baseline file."""
    from ..regress.environment import baseline_file

    for backend in results["backends"]:
        path = baseline_file(backend, results["environment"])
        part = {**results, "backends": [backend],
                "metrics": [m for m in results["metrics"] if m["name"].startswith(backend + "/")]}
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(part, f, indent=1)
        print(f"baseline for {backend}: {path}")


def run(suite, backend, families=()) -> tuple:
    """(results, figures) of the suite on the backend(s)."""
    from ..gpu.native import get_device
    from ..regress import environment, suite as suites

    t0 = time.perf_counter()
    dev = get_device()
    log = lambda msg: print(f"  ... [{time.perf_counter() - t0:4.0f} s] {msg}", flush=True)  # noqa: E731
    metrics, figures, browser_env = [], {}, None
    native_families = [f for f in families if f != "browser"] or None
    if backend in ("native", "both") and (not families or native_families):
        m, figures = suites.run_native(dev, suite, native_families, log=log)
        metrics += m
    if backend in ("browser", "both") and (not families or "browser" in families):
        from ..regress import browser

        m, browser_env = browser.run_browser(dev, suites.config(suite), log=log)
        metrics += m
    backends = ["native", "browser"] if backend == "both" else [backend]
    results = {"schema": SCHEMA, "suite": suite, "backends": backends, "families": families or "all",
               "environment": environment.environment(dev, browser_env), "seconds": time.perf_counter() - t0,
               "metrics": metrics}
    return results, figures


def write(results, figures, baseline, out, update_baseline=None, advisory=()) -> int:
    from ..regress import metrics as M
    from ..regress import report

    os.makedirs(out, exist_ok=True)
    rows = None
    if baseline is not None:
        ran = {m["name"].split("/")[0] + "/" + m["family"] for m in results["metrics"]}
        base = [m for m in baseline["metrics"] if m["name"].split("/")[0] + "/" + m["family"] in ran]
        rows = M.compare(base, results["metrics"])
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    summary = report.summary_markdown(results, rows, advisory)
    with open(os.path.join(out, "summary.md"), "w", encoding="utf-8") as f:
        f.write(summary)
    with open(os.path.join(out, "report.html"), "w", encoding="utf-8") as f:
        f.write(report.report_html(results, rows, figures, advisory))
    if update_baseline:
        os.makedirs(os.path.dirname(os.path.abspath(update_baseline)), exist_ok=True)
        with open(update_baseline, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    print(summary)
    if rows is not None and advisory and M.regressions(rows) != M.regressions(rows, advisory):
        print(f"(advisory, not failing the run: regressions of {', '.join(advisory)})")
    print(f"report: {os.path.join(out, 'report.html')}")
    return 1 if rows is not None and M.regressions(rows, advisory) else 0
