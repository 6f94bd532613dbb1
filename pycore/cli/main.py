"""The `stemtone` command line.

    stemtone serve [--port N] [--host H] [--weights-dir DIR]
                                             serve the web app (what `make demo` runs)
    stemtone doctor [--json]                 native adapter, limits, features, kernel self-checks
    stemtone bench kernels [--json] [--quick]  WGSL kernels next to numpy, same run
    stemtone separate IN... [-m MODEL] [-o OUTDIR] [--format wav|flac|mp3] [--bits 16|24|32f] [--overwrite]
                      [--stems vocals,drums | --two-stems STEM] [--shifts N] [--seed S] [--cluster ADDRESS|local[:N]]
                                             split audio files into stems
    stemtone tone IN... [-i INSTRUMENT] [-o OUT.wav|DIR] [--octave N] [--loudness-db X] [--rate HZ] [--cluster A]
                                             play a melody on violin, flute, trumpet, saxophone or guitar
    stemtone bench separate [--json] [-m MODEL] [--seconds 30]
                                             demixing next to the PyTorch CPU reference, same run
    stemtone bench tone [--json] [--quick] [-i INSTRUMENT] [--seconds 10] [--kernels]
                                             tone transfer: real-time factor and FLOPs of each stage
    stemtone bench memory [-m MODEL] [--lengths 60,600] [--reduced]
    stemtone regress [--suite quick|full] [--backend native|browser|both] [--baseline FILE]
                     [--out DIR] [--update-baseline FILE]   the regression suite (pycore/regress)
                                             peak GPU memory against the track's length
    stemtone bench runtime [--json] [--browser] [--quick]
                                             host cost: µs per dispatch (fresh, replayed), per tone block
                                             and demix segment, HTDemucs' working set; --browser: Chromium too
    stemtone bench resample [--json] [--seconds 30]
                                             soxr next to the old polyphase resampler: SNR, speed
    stemtone weights fetch NAME | convert FILE... [--name NAME] | list  [--dir DIR]
                                             official Demucs v4 / Open-Unmix checkpoints -> safetensors
    stemtone build-site OUT/ [--models NAME,...]
                                             the web app as a static site (any static server)
    stemtone --weights-dir DIR COMMAND ...   the weights folder every command reads first
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys


def cmd_serve(args) -> int:
    from .serve import serve

    serve(port=args.port, host=args.host, weights_dir=args.weights_dir)
    return 0


def _native_device():
    from ..gpu.native import get_device
    from ..gpu.runtime import NoGPUError

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
    from ..gpu import selfcheck

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
    from .bench import common, kernels, memory, resample, separate, tone

    if args.what == "resample":  # CPU only: no device
        rows = resample.bench_resample(seconds=args.seconds or 30.0, progress=not args.json)
        print(json.dumps({"device": "CPU", "rows": rows}, indent=2) if args.json
              else common.format_table(None, rows, ours="soxr", ref="polyphase"))
        return 0
    dev = _native_device()
    if dev is None:
        return 2
    if args.what == "runtime":  # its own row format: {"figure", "backend", "value", "unit"}
        from .bench import runtime

        try:
            rows = runtime.bench_runtime(dev, browser=args.browser, progress=not args.json,
                                         htdemucs=not args.quick)
        except common.BenchUnavailable as e:
            print(f"stemtone: error: {e}", file=sys.stderr)
            return 2
        print(json.dumps(rows, indent=1) if args.json else f"device: {dev.describe()}\n\n" + runtime.format_rows(rows))
        return 0
    if args.what == "kernels":
        rows = kernels.bench_kernels(dev, quick=args.quick, progress=not args.json)
    elif args.what in ("separate", "memory"):
        try:
            if args.what == "separate":
                seconds = args.seconds or separate.default_seconds(args.model)
                rows = separate.bench_separate(dev, model=args.model, seconds=seconds, progress=not args.json)
            else:
                rows = memory.bench_memory(dev, args.model, args.lengths, reduced=args.reduced,
                                           progress=not args.json)
        except common.BenchUnavailable as e:
            print(f"stemtone: error: {e}", file=sys.stderr)
            return 2
    elif args.what == "tone":
        from ..tone import resolve

        try:
            instrument = resolve(args.instrument)["instrument"]
        except ValueError as e:
            print(f"stemtone: error: {e}", file=sys.stderr)
            return 2
        if args.kernels:
            from ..tone import load_tone_model

            rows = tone.kernel_profile(load_tone_model(dev, instrument), reps=3 if args.quick else 10)
        else:
            rows = tone.bench_tone(dev, seconds=args.seconds or (3.0 if args.quick else 10.0), instrument=instrument,
                                   drift_seconds=60 if args.quick else 3600, progress=not args.json)
    elif args.what == "learn":
        from .bench import learn

        rows = learn.bench_learn(dev, model_path=args.model if args.model.endswith(".safetensors") else None,
                                 gen_seconds=args.seconds or 10.0, progress=not args.json, clip=args.clip)
    else:  # pragma: no cover - argparse restricts choices
        raise SystemExit(f"unknown benchmark {args.what}")
    if args.json:
        print(json.dumps({"device": dev.describe(), "rows": rows}, indent=2))
    else:
        print(common.format_table(dev, rows))
    return 0


def _lengths(value: str) -> tuple:
    """--lengths 60,600 -> (60.0, 600.0)."""
    try:
        out = tuple(float(v) for v in value.split(","))
    except ValueError:
        out = ()
    if not out or min(out) <= 0:
        raise argparse.ArgumentTypeError(f"{value!r}: give positive seconds separated by commas, e.g. 60,600")
    return out


def _bits(value: str):
    """--bits: 16, 24 or 32f (32-bit float; "32" is accepted for it too)."""
    if value in ("16", "24"):
        return int(value)
    if value in ("32f", "32", "float"):
        return "32f"
    raise argparse.ArgumentTypeError(f"{value!r}: use 16, 24 or 32f")


def _stem_list(value: str) -> list:
    """--stems vocals,drums -> ["vocals", "drums"] (checked against the model later)."""
    stems = [v.strip() for v in value.split(",") if v.strip()]
    if not stems:
        raise argparse.ArgumentTypeError("give stem names separated by commas, e.g. vocals,drums")
    return stems


def cmd_separate(args) -> int:
    from ..audio.files import check_output_format

    try:
        check_output_format(args.format, args.bits)
    except ValueError as e:
        print(f"stemtone: error: {e}", file=sys.stderr)
        return 2
    if args.cluster:
        from .cluster import SeparateJob

        try:
            job = SeparateJob(args.model, args.outdir, args.format, args.bits, args.overwrite, args.stems,
                              args.two_stems, args.shifts, args.seed)
        except ValueError as e:
            print(f"stemtone: error: {e}", file=sys.stderr)
            return 2
        return _cluster_main(job, args)
    dev = _native_device()
    if dev is None:
        return 2
    return asyncio.run(_separate_main(dev, args))


def _cluster_main(job, args) -> int:
    """--cluster: every input a Ray task; one line per finished input, a summary."""
    from tqdm import tqdm

    from .cluster import run_on_cluster

    def report(path, r, error):
        if error:
            tqdm.write(f"stemtone: error: {error}", file=sys.stderr)
            return
        outputs = list(r.outputs.values()) if hasattr(r, "outputs") else [r.output]
        tqdm.write(f"{path} -> {', '.join(outputs)} in {r.elapsed:.1f} s", file=sys.stdout)
        for note in r.notes:
            tqdm.write(f"stemtone: note: {path}: {note}", file=sys.stderr)

    try:
        results = run_on_cluster(job, args.inputs, args.cluster, progress=not args.quiet, on_result=report)
    except ValueError as e:
        print(f"stemtone: error: {e}", file=sys.stderr)
        return 2
    failed = [p for p, _, e in results if e]
    print(f"{len(results) - len(failed)} of {len(results)} inputs done in {job.outdir}/"
          + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


async def _separate_main(dev, args) -> int:
    from ..demix.files import load_model, separate_async

    try:
        demixer = await load_model(dev, args.model)
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

    try:
        results = await separate_async(args.inputs, demixer, args.outdir, args.format, args.bits,
                                       args.overwrite, progress=not args.quiet, on_result=report,
                                       stems=args.stems, shifts=args.shifts, seed=args.seed,
                                       two_stems=args.two_stems)
    except ValueError as e:  # --stems the model lacks, --shifts on a model without them
        print(f"stemtone: error: {e}", file=sys.stderr)
        return 2
    failed = sum(not r.ok for r in results)
    if len(results) > 1:
        print(f"{len(results) - failed} of {len(results)} inputs separated into {args.outdir}/"
              + (f"; {failed} failed" if failed else ""), flush=True)
    return 1 if failed else 0


def cmd_tone(args) -> int:
    from ..tone import resolve

    try:
        model_entry = resolve(args.instrument)
    except ValueError as e:
        print(f"stemtone: error: {e}", file=sys.stderr)
        return 2
    if args.cluster or len(args.inputs) > 1:  # a batch: -o is a folder
        from .cluster import ToneJob

        job = ToneJob(args.instrument, args.output or ".", args.octave, args.loudness_db, args.rate, args.bits,
                      args.overwrite)
        if args.cluster:
            return _cluster_main(job, args)
        os.makedirs(job.outdir, exist_ok=True)
        codes = [_tone_one(model_entry, args, path, str(job.targets(path)[0])) for path in args.inputs]
        return max(codes)
    return _tone_one(model_entry, args, args.inputs[0], args.output)


def _tone_one(model_entry, args, path, output) -> int:
    from ..tone.files import tone_file

    dev = _native_device()
    if dev is None:
        return 2
    from ..tone import load_tone_model

    try:
        model = load_tone_model(dev, model_entry["name"])
    except (OSError, ValueError) as e:
        print(f"stemtone: error: instrument {args.instrument}: {e}", file=sys.stderr)
        return 2
    r = asyncio.run(tone_file(model, path, output, args.octave, args.loudness_db, args.rate,
                              args.bits, args.overwrite, progress=not args.quiet))
    if not r.ok:
        print(f"stemtone: error: {r.error}", file=sys.stderr)
        return 1
    print(f"{r.input} -> {r.output} ({model.instrument}, {r.frames / r.sample_rate:.1f} s at {r.sample_rate} Hz, "
          f"{100 * r.voiced_fraction:.0f}% voiced) in {r.elapsed:.1f} s", flush=True)
    for note in r.notes:
        print(f"stemtone: note: {r.input}: {note}", file=sys.stderr, flush=True)
    return 0


def cmd_learn(args) -> int:
    from tqdm import tqdm

    from ..learn.files import learn_file
    from ..models.magnet import SIZES

    bar = tqdm(total=args.epochs, unit="epoch", disable=args.quiet)

    def on_epoch(n, loss):
        bar.n = n
        bar.set_postfix(loss=f"{loss:.4f}")
        bar.refresh()
        if not args.quiet:
            tqdm.write(f"epoch {n}: loss {loss:.5f}")
    try:
        loss = learn_file(args.input, args.output, args.epochs, args.resume, config=SIZES[args.size], lr=args.lr,
                          on_epoch=on_epoch, input_noise=args.input_noise,
                          feedback=args.feedback, vary=args.vary_windows)
    except (ValueError, OSError, RuntimeError) as e:
        bar.close()
        print(f"stemtone: error: {e}", file=sys.stderr)
        return 1
    bar.close()
    print(f"{args.input} -> {args.output} (loss {loss})" if loss is not None else
          f"{args.output} already has {args.epochs} epochs; raise --epochs to train on", flush=True)
    return 0


def cmd_generate(args) -> int:
    import asyncio as _asyncio

    from ..learn.files import generate

    try:
        secs = _asyncio.run(generate(args.model, args.output, args.seconds, args.seed, args.temperature,
                                     args.prime))
    except (ValueError, OSError, RuntimeError) as e:
        print(f"stemtone: error: {e}", file=sys.stderr)
        return 1
    print(f"{args.model} -> {args.output} ({secs:.1f} s)", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ..learn.train import FEEDBACK
    p = argparse.ArgumentParser(prog="stemtone", description="Stemtone: music ML on WGSL compute shaders")
    p.add_argument("--weights-dir", dest="global_weights_dir", default=None, metavar="DIR",
                   help="the weights folder every command reads first and `weights fetch|convert` write "
                        "(default: $STEMTONE_WEIGHTS, else the per-user data folder; a checkout's weights/ "
                        "is always read)")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="serve the web app (what `make demo` runs)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--weights-dir", default=None, metavar="DIR",
                   help="also serve the models installed in DIR (where `stemtone weights fetch --dir DIR` "
                        "put them); the repo's weights/ is always served")
    s.set_defaults(fn=cmd_serve)

    d = sub.add_parser("doctor", help="show the native GPU adapter and run every kernel self-check")
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_doctor)

    b = sub.add_parser("bench", help="benchmarks (ratios against a reference measured in the same run)")
    b.add_argument("what", choices=["kernels", "separate", "memory", "tone", "resample", "learn", "runtime"])
    b.add_argument("--browser", action="store_true",
                   help="runtime: dispatch, tone block and HTDemucs segment figures measured in headless "
                        "Chromium too (same run; HTDemucs there takes minutes on SwiftShader)")
    b.add_argument("-i", "--instrument", default="violin", help="tone: the instrument model (default %(default)s)")
    b.add_argument("--kernels", action="store_true",
                   help="tone: instead of the stages, the process CPU time of each kernel of one engine block "
                        "of 320 samples (each step of its plan replayed alone)")
    b.add_argument("--json", action="store_true")
    b.add_argument("--quick", action="store_true",
                   help="kernels, tone: smaller sizes and a 60 s oscillator run instead of an hour (a smoke run); "
                        "runtime: without HTDemucs (natively and in the browser)")
    b.add_argument("-m", "--model", default="spleeter-2stems",
                   help="separate, memory: the model (default %(default)s; htdemucs, htdemucs_6s and umxl "
                        "run with random weights next to their PyTorch reference); learn: a trained "
                        "sound.safetensors for the quality rows")
    b.add_argument("--seconds", type=float, default=None,
                   help="separate: length of the real-music clip (default 30; 10 for htdemucs and umxl); "
                        "tone: length of the test melody (default 10; 3 with --quick); "
                        "resample: length of the noise (default 30)")
    b.add_argument("--clip", default=None, metavar="CLIP",
                   help="learn: the audio file the -m model was trained on (default: the model card's first "
                        "clip, mutilated_mime 9 s from 60 s)")
    b.add_argument("--lengths", type=_lengths, default=(60.0, 600.0), metavar="S1,S2",
                   help="memory: track lengths in seconds (default 60,600)")
    b.add_argument("--reduced", action="store_true",
                   help="memory: a reduced configuration of the model (same streaming, fewer channels)")
    b.set_defaults(fn=cmd_bench)

    s = sub.add_parser("separate", help="split audio files into stems (OUTDIR/<track>/<stem>.wav)",
                       description="Split audio files into stems with a demixing model on the GPU. Writes "
                                   "OUTDIR/<track name>/<stem>.<format> at each input's sample rate and channel "
                                   "count. Reads whatever soundfile reads (wav, flac, ogg, mp3, aiff, ...).")
    s.add_argument("inputs", nargs="+", metavar="IN", help="audio files")
    s.add_argument("-m", "--model", default="spleeter-2stems",
                   help="demixing model: a built-in name, the name of a converted checkpoint in the weights "
                        "folder (`stemtone weights convert FILE --name NAME`) or a .safetensors path; a "
                        "converted checkpoint runs with its own stems (default %(default)s)")
    s.add_argument("-o", "--outdir", default="separated", help="output folder (default ./%(default)s)")
    s.add_argument("--format", choices=["wav", "flac", "mp3"], default="wav",
                   help="output format (default wav; mp3 where libsndfile has LAME, --bits does not apply)")
    s.add_argument("--bits", type=_bits, default=16, metavar="{16,24,32f}",
                   help="sample format: 16 or 24-bit PCM (soft-limited, never wraps) or 32f float (default 16)")
    s.add_argument("--overwrite", action="store_true", help="replace existing stem files")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.add_argument("--stems", type=_stem_list, default=None, metavar="S1,S2",
                   help="write only these stems, e.g. vocals,drums (default all; htdemucs_ft then runs "
                        "only their specialists)")
    s.add_argument("--two-stems", default=None, metavar="STEM",
                   help="write STEM and no_STEM (everything but STEM, e.g. vocals and the instrumental), "
                        "as Demucs' --two-stems")
    s.add_argument("--cluster", default=None, metavar="ADDRESS|local[:N]",
                   help="run each input as a task on a Ray cluster (pip install 'stemtone[cluster]'); "
                        "OUTDIR must be storage every worker sees; finished tracks are skipped")
    s.add_argument("--shifts", type=int, default=0, metavar="N",
                   help="HTDemucs: average N passes over the track shifted by up to 0.5 s (default 0)")
    s.add_argument("--seed", type=int, default=0, help="HTDemucs: seed of the --shifts offsets (default 0)")
    s.set_defaults(fn=cmd_separate)

    t = sub.add_parser("tone", help="play the melody of an audio file on an instrument (DDSP tone transfer)",
                       description="Tone transfer: the pitch and loudness of IN (singing or a monophonic "
                                   "instrument; any format soundfile reads, any sample rate) drive a DDSP model "
                                   "of the instrument on the GPU. Writes a mono WAV of the same length.")
    t.add_argument("inputs", nargs="+", metavar="IN", help="audio files (several: -o is a folder)")
    t.add_argument("-i", "--instrument", default="violin",
                   help="violin, flute, trumpet, saxophone or guitar (default %(default)s)")
    t.add_argument("-o", "--output", default=None, metavar="OUT.wav",
                   help="output file (default ./<input name>.<instrument>.wav); with several inputs or "
                        "--cluster, the output folder")
    t.add_argument("--cluster", default=None, metavar="ADDRESS|local[:N]",
                   help="run each input as a task on a Ray cluster, as `separate --cluster`")
    t.add_argument("--octave", type=int, default=0, metavar="N",
                   help="shift the pitch by N octaves (-4..4; default 0); notes still outside the "
                        "instrument's range are folded into it by octaves")
    t.add_argument("--loudness-db", type=float, default=0.0, metavar="X",
                   help="add X dB to the input's loudness before the model (default 0)")
    t.add_argument("--rate", type=int, default=None, metavar="HZ",
                   help="output sample rate (default: the input's)")
    t.add_argument("--bits", type=_bits, default=16, metavar="{16,24,32f}", help="sample format (default 16)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(fn=cmd_tone)

    le = sub.add_parser("learn", help="train a MAGNet spectral LSTM on a short clip, on the GPU",
                        description="Learn a sound: trains a MAGNet-style LSTM on the log-magnitude frames of "
                                    "IN (2-60 s, mixed to mono, resampled to 22.05 kHz); saves weights, Adam "
                                    "state and epoch count to OUT after every epoch.")
    le.add_argument("input", metavar="IN.wav", help="audio file")
    le.add_argument("-o", "--output", required=True, metavar="sound.safetensors")
    le.add_argument("--epochs", type=int, default=200, metavar="N", help="total epochs (default %(default)s)")
    le.add_argument("--resume", action="store_true", help="continue the training saved in OUT")
    le.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default %(default)s)")
    le.add_argument("--input-noise", type=float, default=1.0, metavar="K",
                    help="train on inputs noised by K x the model's prediction error per bin, as sampling "
                         "noises them (against drift while generating; 0: clean inputs; default %(default)s)")
    le.add_argument("--feedback", type=float, default=FEEDBACK, metavar="Q",
                    help="scheduled sampling: train also on the model's own draws, each input frame replaced "
                         "by its draw with a probability rising to Q over the first 100 epochs (against drift "
                         "while generating; 0: off; default %(default)s)")
    le.add_argument("--vary-windows", action="store_true",
                    help="the training lanes start at a random frame each epoch (by default the same windows "
                         "every epoch)")
    le.add_argument("--size", choices=["standard", "small", "tiny"], default="standard",
                    help="model size (weights/cards/magnet.md; the learn page's sizes): standard (default), small "
                         "(1 layer x 128), tiny (1 layer x 32, n_fft 512: a quick try); --resume keeps the file's")
    le.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    le.set_defaults(fn=cmd_learn)

    g = sub.add_parser("generate", help="generate audio from a model trained with `stemtone learn`")
    g.add_argument("model", metavar="sound.safetensors")
    g.add_argument("-o", "--output", required=True, metavar="OUT.wav")
    g.add_argument("--seconds", type=float, default=30.0, help="length (default %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="noise seed (default %(default)s)")
    g.add_argument("--temperature", type=float, default=1.0,
                   help="scale of the noise drawn for each frame, in units of the model's prediction error per "
                        "bin: 1 samples the trained model (default), 0 follows its mean prediction (quieter, "
                        "settles on a static sound)")
    g.add_argument("--prime", metavar="CLIP", default=None,
                   help="start from this clip's first frames (default: from noise)")
    g.set_defaults(fn=cmd_generate)

    from ..weights import fetch  # `stemtone weights fetch | convert | list`
    from . import site_build  # `stemtone build-site OUT/`

    fetch.add_parser(sub)
    site_build.add_parser(sub)
    from . import regress  # `stemtone regress`

    regress.add_parser(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.global_weights_dir:  # read by pycore.weights wherever a command looks for weights
        os.environ["STEMTONE_WEIGHTS"] = os.path.abspath(args.global_weights_dir)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("stemtone: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
