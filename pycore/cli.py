"""The `stemtone` command line.

    stemtone serve [--port N] [--host H]     serve the web app (what `make demo` runs)
    stemtone doctor [--json]                 native adapter, limits, features, kernel self-checks
    stemtone bench kernels [--json] [--quick]  WGSL kernels next to numpy, same run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys


def cmd_serve(args) -> int:
    from .serve import serve

    serve(port=args.port, host=args.host)
    return 0


def _native_device():
    from .backend_native import get_device
    from .runtime import NoGPUError

    try:
        return get_device()
    except NoGPUError as e:
        print(f"stemtone: {e}", file=sys.stderr)
        return None


KEY_LIMITS = (
    "max-storage-buffer-binding-size", "max-buffer-size", "max-compute-workgroups-per-dimension",
    "max-compute-invocations-per-workgroup", "max-compute-workgroup-storage-size",
    "max-storage-buffers-per-shader-stage",
)


def cmd_doctor(args) -> int:
    from . import selfcheck

    dev = _native_device()
    if dev is None:
        return 2
    report = {
        "adapter": dev.adapter_info,
        "limits": {k: dev.limits.get(k) for k in KEY_LIMITS},
        "features": sorted(dev.features),
        "checks": [],
    }
    if not args.json:
        print(f"adapter   {dev.describe()}")
        print(f"type      {dev.adapter_info.get('adapter_type', '?')} / {dev.adapter_info.get('backend_type', '?')}")
        print(f"features  {', '.join(sorted(dev.features)) or '(none)'}")
        print(f"shader-f16 {'yes' if dev.has_f16 else 'no (f16 weights fall back to f32 storage)'}")
        for k in KEY_LIMITS:
            print(f"  {k:42s} {dev.limits.get(k)}")
        print()

    def show(name, ok, detail, secs):
        report["checks"].append({"name": name, "ok": ok, "detail": detail, "seconds": round(secs, 4)})
        if not args.json:
            print(f"  {'PASS' if ok else 'FAIL'}  {name:24s} {secs * 1000:8.1f} ms  {detail}", flush=True)

    results = asyncio.run(selfcheck.run_all(dev, on_result=show))
    failed = [r[0] for r in results if not r[1]]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed")
    if not results:
        print("stemtone: no self-checks are registered", file=sys.stderr)
        return 1
    return 1 if failed else 0


def cmd_bench(args) -> int:
    from . import bench

    dev = _native_device()
    if dev is None:
        return 2
    if args.what == "kernels":
        rows = bench.bench_kernels(dev, quick=args.quick, progress=not args.json)
    else:  # pragma: no cover - argparse restricts choices
        raise SystemExit(f"unknown benchmark {args.what}")
    if args.json:
        print(json.dumps({"device": dev.describe(), "rows": rows}, indent=2))
    else:
        print(bench.format_table(dev, rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stemtone", description="Stemtone: music ML on WGSL compute shaders")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="serve the web app (what `make demo` runs)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--host", default="127.0.0.1")
    s.set_defaults(fn=cmd_serve)

    d = sub.add_parser("doctor", help="show the native GPU adapter and run every kernel self-check")
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_doctor)

    b = sub.add_parser("bench", help="benchmarks (ratios against a reference measured in the same run)")
    b.add_argument("what", choices=["kernels"])
    b.add_argument("--json", action="store_true")
    b.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    b.set_defaults(fn=cmd_bench)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("stemtone: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
