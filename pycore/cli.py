"""The `stemtone` command line.

    stemtone serve [--port N] [--host H]     serve the web app (what `make demo` runs)
    stemtone doctor [--json]                 native adapter, limits, features, kernel self-checks
    stemtone bench kernels [--json] [--quick]  WGSL kernels next to numpy, same run
    stemtone separate IN... [-m MODEL] [-o OUTDIR] [--format wav|flac] [--bits 16|24|32f] [--overwrite]
                                             split audio files into stems
    stemtone bench separate [--json] [-m MODEL] [--seconds 30]
                                             demixing next to the PyTorch CPU reference, same run
    stemtone weights fetch NAME | convert FILE... [--name NAME] | list  [--dir DIR]
                                             official Demucs v4 / Open-Unmix checkpoints -> safetensors
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
    elif args.what == "separate":
        try:
            rows = bench.bench_separate(dev, model=args.model, seconds=args.seconds, progress=not args.json)
        except bench.BenchUnavailable as e:
            print(f"stemtone: error: {e}", file=sys.stderr)
            return 2
    else:  # pragma: no cover - argparse restricts choices
        raise SystemExit(f"unknown benchmark {args.what}")
    if args.json:
        print(json.dumps({"device": dev.describe(), "rows": rows}, indent=2))
    else:
        print(bench.format_table(dev, rows))
    return 0


def _bits(value: str):
    """--bits: 16, 24 or 32f (32-bit float; "32" is accepted for it too)."""
    if value in ("16", "24"):
        return int(value)
    if value in ("32f", "32", "float"):
        return "32f"
    raise argparse.ArgumentTypeError(f"{value!r}: use 16, 24 or 32f")


def cmd_separate(args) -> int:
    from .audiofile import check_output_format

    try:
        check_output_format(args.format, args.bits)
    except ValueError as e:
        print(f"stemtone: error: {e}", file=sys.stderr)
        return 2
    dev = _native_device()
    if dev is None:
        return 2
    return asyncio.run(_separate_main(dev, args))


async def _separate_main(dev, args) -> int:
    from .demix import Demixer
    from .separation import separate_async

    try:
        demixer = await Demixer.load(dev, args.model)
    except Exception as e:  # unknown model, missing weights file, GPU trouble
        print(f"stemtone: error: model {args.model}: {e}", file=sys.stderr)
        return 2

    def report(r):
        if r.ok:
            names = ", ".join(os.path.basename(p) for p in r.outputs.values())
            folder = os.path.dirname(next(iter(r.outputs.values())))
            print(f"{r.input} -> {folder}/ ({names}) in {r.elapsed:.1f} s", flush=True)
            for note in r.notes:
                print(f"stemtone: note: {r.input}: {note}", file=sys.stderr, flush=True)
        else:
            print(f"stemtone: error: {r.error}", file=sys.stderr, flush=True)

    results = await separate_async(args.inputs, demixer, args.outdir, args.format, args.bits,
                                   args.overwrite, progress=not args.quiet, on_result=report)
    failed = sum(not r.ok for r in results)
    if len(results) > 1:
        print(f"{len(results) - failed} of {len(results)} inputs separated into {args.outdir}/"
              + (f"; {failed} failed" if failed else ""), flush=True)
    return 1 if failed else 0


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
    b.add_argument("what", choices=["kernels", "separate"])
    b.add_argument("--json", action="store_true")
    b.add_argument("--quick", action="store_true", help="kernels: smaller sizes (a smoke run)")
    b.add_argument("-m", "--model", default="spleeter-2stems", help="separate: the model (default %(default)s)")
    b.add_argument("--seconds", type=float, default=30.0, help="separate: length of the real-music clip (default 30)")
    b.set_defaults(fn=cmd_bench)

    s = sub.add_parser("separate", help="split audio files into stems (OUTDIR/<track>/<stem>.wav)",
                       description="Split audio files into stems with a demixing model on the GPU. Writes "
                                   "OUTDIR/<track name>/<stem>.<format> at each input's sample rate and channel "
                                   "count. Reads whatever soundfile reads (wav, flac, ogg, mp3, aiff, ...).")
    s.add_argument("inputs", nargs="+", metavar="IN", help="audio files")
    s.add_argument("-m", "--model", default="spleeter-2stems", help="demixing model (default %(default)s)")
    s.add_argument("-o", "--outdir", default="separated", help="output folder (default ./%(default)s)")
    s.add_argument("--format", choices=["wav", "flac"], default="wav", help="output format (default wav)")
    s.add_argument("--bits", type=_bits, default=16, metavar="{16,24,32f}",
                   help="sample format: 16 or 24-bit PCM (soft-limited, never wraps) or 32f float (default 16)")
    s.add_argument("--overwrite", action="store_true", help="replace existing stem files")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(fn=cmd_separate)

    from .convert import fetch  # `stemtone weights fetch | convert | list`

    fetch.add_parser(sub)
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
