"""`stemtone bench kernels`: WGSL kernels next to numpy (OpenBLAS / pocketfft), same run.
`stemtone bench separate`: demixing next to the PyTorch CPU reference, same run.
`stemtone bench memory`: peak GPU memory against the track's length.

Machines are shared and noisy, so every figure comes with a reference measured in
the same run, and the ratio is what counts. Native only (uses numpy).
"""

from __future__ import annotations

import json
import os
import time


def bench_kernels(dev, quick=False, progress=True):
    from .ops import conv, matmul, scan, spectral

    rows = []

    log = _logger(progress)

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


# --------------------------------------------------------------------------- bench separate

BROWSER_TIMING = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "e2e", "artifacts", "demix-timing.json")


def _logger(progress):
    """log(message): a progress line on stdout, or nothing."""
    def log(msg):
        if progress:
            print(f"  ... {msg}", flush=True)
    return log


def _music(seconds):
    """A stereo real-music clip [2, n] (pycore.testdata), or BenchUnavailable saying why not."""
    from .testdata import TestDataUnavailable, real_music_clip

    try:
        return real_music_clip(seconds)
    except TestDataUnavailable as e:
        raise BenchUnavailable(str(e)) from None


def _time_separate(dev, demixer, model, clip, seconds, log):
    """(stems, seconds taken, resident GPU bytes before, peak GPU bytes during) of one
    separation of the stereo clip, after a 1 s warm-up run that compiles every kernel."""
    import asyncio

    log(f"{model}: warm-up (compiles every kernel)")
    asyncio.run(demixer.separate([ch[:demixer.sample_rate] for ch in clip]))
    log(f"{model}: {seconds:g} s on {dev.describe()}")
    dev.flush()
    resident = dev.mem_in_use
    dev.reset_peak()
    t0 = time.perf_counter()
    ours = asyncio.run(demixer.separate([clip[0], clip[1]]))
    return ours, time.perf_counter() - t0, resident, dev.mem_peak


def default_seconds(model: str) -> float:
    """--seconds' default: 30 s of music for Spleeter, 10 s for the (much heavier) Demucs
    v4 and Open-Unmix, whose references run on the CPU too."""
    from .demix import MODELS

    return 10.0 if MODELS.get(model, {}).get("family") in ("htdemucs", "umx") else 30.0


class BenchUnavailable(RuntimeError):
    """Something the benchmark needs is missing (the real-music clip, the weights)."""


def bench_separate(dev, model="spleeter-2stems", seconds=30.0, progress=True):
    """`stemtone bench separate`: Demucs v4 and Open-Unmix go to bench_separate_random.
    Spleeter: demix `seconds` of real music (stereo, 44.1 kHz) with
    our WGSL pipeline and with the PyTorch CPU reference in the same run; our peak GPU
    memory; the whole file-to-file CLI path on the same clip at 48 kHz; and the browser
    time that the e2e test recorded in e2e/artifacts/demix-timing.json, if present."""
    from .demix import MODELS

    if MODELS.get(model, {}).get("family") in ("htdemucs", "umx"):
        return bench_separate_random(dev, model, seconds, progress)
    import asyncio

    import numpy as np

    from .demix import Demixer
    from .separation import separate_async

    log = _logger(progress)
    clip = _music(seconds)
    n = clip.shape[1]
    try:
        demixer = asyncio.run(Demixer.load(dev, model))
    except (FileNotFoundError, ValueError) as e:
        raise BenchUnavailable(f"model {model}: {e}") from None
    ours, t_ours, resident, peak = _time_separate(dev, demixer, model, clip, seconds, log)


    t_ref, sdrs, ref_note = None, {}, ""
    try:
        import torch

        from .reference import spleeter_torch as ref
    except ImportError:
        ref_note = "reference not run: torch is not installed (pip install torch==2.13.0)"
    else:
        log(f"PyTorch CPU reference ({torch.get_num_threads()} threads)")
        weights = ref.load_weights()
        ref.separate(clip[:, :demixer.sample_rate], weights)  # warm-up
        t0 = time.perf_counter()
        want = ref.separate(clip, weights, length=n)
        t_ref = time.perf_counter() - t0
        for stem in demixer.stems:
            got = np.stack(ours[stem]).astype(np.float64)
            err = np.sum((got - want[stem]) ** 2)
            sdrs[stem] = float("inf") if err == 0 else 10 * np.log10(np.sum(want[stem].astype(np.float64) ** 2) / err)
        ref_note = (f"ref = PyTorch {torch.__version__} CPU, {torch.get_num_threads()} threads; ratio = speed-up; "
                    "SDR vs ref " + ", ".join(f"{s} {v:.1f} dB" for s, v in sdrs.items()))

    rows = [{"name": f"demix {seconds:g} s stereo 44.1 kHz, {model}", "unit": "s", "ours": t_ours,
             "ref": t_ref, "ratio": None if t_ref is None else t_ref / t_ours, "note": ref_note,
             "sdr_db": sdrs or None},
            {"name": "  real-time factor", "unit": "x real time", "ours": seconds / t_ours,
             "ref": None if t_ref is None else seconds / t_ref, "ratio": None,
             "note": "audio seconds per second of compute"},
            {"name": "  peak GPU memory", "unit": "MiB", "ours": peak / 2 ** 20, "ref": None, "ratio": None,
             "note": f"resident {resident / 2 ** 20:.0f} MiB (weights, cached weight layouts) + working set "
                     f"{(peak - resident) / 2 ** 20:.0f} MiB (independent of the track's length)"}]

    log("file to file: 48 kHz WAV -> stemtone separate -> 2 x 16-bit WAV")
    import tempfile

    import soundfile as sf

    from .resample import resample

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "clip48k.wav")
        sf.write(src, resample(clip, 44100, 48000).T, 48000, subtype="PCM_16")
        t0 = time.perf_counter()
        (r,) = asyncio.run(separate_async([src], demixer, os.path.join(tmp, "out"), progress=False))
        t_file = time.perf_counter() - t0
    rows.append({"name": f"stemtone separate, {seconds:g} s 48 kHz file", "unit": "s",
                 "ours": t_file if r.ok else None, "ref": None, "ratio": None,
                 "note": "decode, 48k -> 44.1k -> 48k resampling, demix, write" if r.ok else f"failed: {r.error}"})

    rows.append(browser_row())
    return rows


def browser_row() -> dict:
    """The e2e test's measurement, e2e/artifacts/demix-timing.json: {"demix_s": seconds
    of separation in the page, "audio_s": seconds of audio, "adapter": "..."} (other
    keys are ignored)."""
    row = {"name": "demix in the browser (e2e)", "unit": "s", "ours": None, "ref": None, "ratio": None}
    try:
        with open(BROWSER_TIMING, encoding="utf-8") as f:
            t = json.load(f)
    except (OSError, ValueError):
        row["note"] = "no e2e/artifacts/demix-timing.json yet (run the e2e tests: pytest e2e)"
        return row
    row["ours"] = t.get("demix_s")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(BROWSER_TIMING)))
    row["note"] = (f"{t.get('audio_s', '?')} s clip, {t.get('adapter', 'browser WebGPU')}; "
                   f"from e2e/artifacts/demix-timing.json ({when})")
    return row


# --------------------------------------------------------------------------- random-weight models

# Official configurations (random weights: the published checkpoints are not reachable
# here; speed and memory do not depend on the values). HTDemucs: the constructor's
# defaults plus what the 955717e8 (htdemucs) package sets, as tests/htdemucs_official_parity.py.
HTDEMUCS_OFFICIAL = dict(bottom_channels=512, dconv_mode=3, t_layers=5, segment=7.8)
# A reduced configuration of the same architecture, STFT and 7.8 s segments (narrower
# channels, two transformer layers), for lavapipe: whether memory grows with the track is
# about the streaming, not the width.
HTDEMUCS_REDUCED = dict(channels=8, t_layers=2, t_heads=2, bottom_channels=32, dconv_mode=3, segment=7.8)
UMX_REDUCED_HIDDEN = 128


def _require_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        raise BenchUnavailable("the reference and the random weights need torch: "
                               "pip install torch==2.13.0 (and --no-deps demucs==4.1.0 for HTDemucs)") from None


def _htdemucs_reference(model, reduced, seed=0):
    """The reference demucs HTDemucs module with seeded random weights."""
    _require_torch()
    import torch

    from .demix import MODELS

    try:
        from demucs.htdemucs import HTDemucs as TorchHTDemucs
    except ImportError as e:
        raise BenchUnavailable(f"demucs==4.1.0 is needed for the reference ({e})") from None
    from fractions import Fraction

    cfg = dict(HTDEMUCS_REDUCED if reduced else HTDEMUCS_OFFICIAL)
    cfg["segment"] = Fraction(cfg["segment"]).limit_denominator(1000)
    torch.manual_seed(seed)
    net = TorchHTDemucs(sources=list(MODELS[model]["stems"]), **cfg).eval()
    return make_scales_matter(net)


def make_scales_matter(net):
    """Random layer scales and norms that matter (they start near 1e-4 / 1, and the output
    would be ~the mix's mean): what the HTDemucs parity tests and this benchmark run."""
    import torch

    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(".scale"):
                p.uniform_(0.05, 0.3)
            elif "norm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            elif "norm" in name and name.endswith("bias"):
                p.uniform_(-0.2, 0.2)
    return net


def _umx_weights(reduced, seed=0):
    _require_torch()
    from .reference import umx_torch

    try:
        umx_torch.modules()
    except ImportError as e:
        raise BenchUnavailable(f"openunmix==1.3.0 is needed for the reference ({e})") from None
    config = dict(umx_torch.CONFIG, hidden_size=UMX_REDUCED_HIDDEN) if reduced else dict(umx_torch.CONFIG)
    return umx_torch.random_weights(seed=seed, config=config), config


def random_demixer(dev, model, reduced=False, seed=0):
    """Our Demixer for `model` (htdemucs, htdemucs_6s or umxl) with the same seeded
    random weights as the reference that _reference_run builds."""
    import asyncio

    import numpy as np

    from .demix import MODELS, Demixer
    from .safetensors import Entry

    def entries(arrays):
        return {k: Entry("f32", tuple(v.shape), np.ascontiguousarray(v, np.float32).tobytes())
                for k, v in arrays.items()}

    if model == "umxl":
        weights, _ = _umx_weights(reduced, seed)
        return asyncio.run(Demixer.load(dev, "umxl", weights=entries(weights)))
    if model not in ("htdemucs", "htdemucs_6s"):
        raise BenchUnavailable(f"{model}: random-weight benchmarks cover htdemucs, htdemucs_6s and umxl")
    from .demix_htdemucs import Bag
    from .models.htdemucs import HTDemucs

    net = _htdemucs_reference(model, reduced, seed)
    kw = dict(HTDEMUCS_REDUCED if reduced else HTDEMUCS_OFFICIAL)
    stems = list(MODELS[model]["stems"])
    ours = HTDemucs(dev, entries({k: v.detach().numpy() for k, v in net.state_dict().items()}), kw, sources=stems)
    return Demixer(dev, Bag([ours], stems, None), model, stems, MODELS[model]["sample_rate"])


def _reference_run(model, reduced, seed, clip_path, out_path) -> dict:
    """In a child process (so that its peak RSS is its own): the reference separation of
    the clip, timed after a 1 s warm-up; the stems go to out_path (.npz)."""
    import resource

    import numpy as np
    import torch

    clip = np.load(clip_path)
    if model == "umxl":
        from .reference import umx_torch

        weights, config = _umx_weights(reduced, seed)
        sep = umx_torch.separator(weights, config)

        def run(x):
            return umx_torch.separate(sep, x)
    else:
        net = _htdemucs_reference(model, reduced, seed)
        apply_model = _demucs_apply_model()

        def run(x):  # demucs.api.Separator.separate_tensor: normalize, apply_model, undo
            wav = torch.from_numpy(np.ascontiguousarray(x))
            ref = wav.mean(0)
            mean, std = ref.mean(), ref.std() + 1e-8
            with torch.no_grad():
                out = apply_model(net, ((wav - mean) / std)[None], shifts=0, split=True, overlap=0.25)
            out = (out * std + mean)[0].numpy()
            return dict(zip(net.sources, out))

    run(clip[:, :44100])
    t0 = time.perf_counter()
    out = run(clip)
    seconds = time.perf_counter() - t0
    np.savez(out_path, **out)
    return {"seconds": seconds, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def _demucs_apply_model():
    """demucs.apply.apply_model; demucs.apply imports tqdm (used only for progress bars):
    an empty stand-in module where tqdm is not installed."""
    import importlib.util
    import sys
    import types

    stub = "tqdm" not in sys.modules and importlib.util.find_spec("tqdm") is None
    if stub:
        sys.modules["tqdm"] = types.ModuleType("tqdm")
    try:
        from demucs.apply import apply_model
    finally:
        if stub:
            del sys.modules["tqdm"]
    return apply_model


def _reference_child():  # python -c "from pycore.bench import _reference_child; _reference_child()" ARGS
    import sys

    a = json.loads(sys.argv[1])
    print(json.dumps(_reference_run(a["model"], a["reduced"], a["seed"], a["clip"], a["out"])))


def bench_separate_random(dev, model, seconds=10.0, progress=True, reduced=False):
    """`stemtone bench separate -m htdemucs|htdemucs_6s|umxl`: random weights in the
    official configuration (or `reduced`), `seconds` of real music; ours (Demixer.separate,
    normalization included) next to the reference (demucs: Separator.separate_tensor's
    normalization around apply_model(shifts=0, split, overlap 0.25); openunmix: Separator)
    run in a child process on the same clip, same weights; ratio, SDR between the two,
    our peak GPU memory and the reference process's peak RSS."""
    import asyncio
    import subprocess
    import sys
    import tempfile

    import numpy as np

    log = _logger(progress)
    clip = _music(seconds)
    config = "reduced" if reduced else "official"
    log(f"{model}: random weights, {config} configuration")
    demixer = random_demixer(dev, model, reduced)
    ours, t_ours, resident, peak = _time_separate(dev, demixer, model, clip, seconds, log)

    log("the PyTorch CPU reference, in a child process")
    with tempfile.TemporaryDirectory() as tmp:
        clip_path, out_path = os.path.join(tmp, "clip.npy"), os.path.join(tmp, "ref.npz")
        np.save(clip_path, clip)
        args = json.dumps({"model": model, "reduced": reduced, "seed": 0, "clip": clip_path, "out": out_path})
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        p = subprocess.run([sys.executable, "-c", "from pycore.bench import _reference_child; _reference_child()",
                            args], cwd=root, capture_output=True, text=True)
        if p.returncode != 0:
            raise BenchUnavailable(f"the reference failed: {p.stderr.strip().splitlines()[-1:]}")
        ref = json.loads(p.stdout.strip().splitlines()[-1])
        want = dict(np.load(out_path))
    sdrs = {}
    for stem in demixer.stems:
        got = np.stack(ours[stem]).astype(np.float64)
        err = np.sum((got - want[stem]) ** 2)
        sdrs[stem] = float("inf") if err == 0 else float(10 * np.log10(np.sum(want[stem].astype(np.float64) ** 2) / err))
    t_ref = ref["seconds"]
    note = (f"random weights, {config} configuration; ref = PyTorch {ref['torch']} CPU, {ref['threads']} threads; "
            "ratio = speed-up; SDR vs ref " + ", ".join(f"{s} {v:.1f} dB" for s, v in sdrs.items()))
    return [{"name": f"demix {seconds:g} s stereo 44.1 kHz, {model}", "unit": "s", "ours": t_ours, "ref": t_ref,
             "ratio": t_ref / t_ours, "note": note, "sdr_db": sdrs},
            {"name": "  real-time factor", "unit": "x real time", "ours": seconds / t_ours, "ref": seconds / t_ref,
             "ratio": None, "note": "audio seconds per second of compute"},
            {"name": "  peak memory", "unit": "MiB", "ours": peak / 2 ** 20, "ref": ref["peak_rss"] / 2 ** 20,
             "ratio": None, "note": f"ours: GPU, resident {resident / 2 ** 20:.0f} MiB + working set "
                                    f"{(peak - resident) / 2 ** 20:.0f} MiB; ref: peak RSS of its whole process"}]


def bench_memory(dev, model, lengths=(60.0, 600.0), reduced=True, progress=True):
    """`stemtone bench memory`: our peak GPU memory separating inputs of each length
    (seconds; stereo noise, streamed in 10 s blocks, outputs dropped), random weights.
    The point: it must not grow with the track."""
    import asyncio

    import numpy as np

    log = _logger(progress)

    demixer = random_demixer(dev, model, reduced)
    rng = np.random.default_rng(0)
    block = 10 * demixer.sample_rate
    rows = []
    for seconds in lengths:
        n = int(seconds * demixer.sample_rate)
        log(f"{model}: {seconds:g} s")
        dev.flush()
        resident = dev.mem_in_use
        dev.reset_peak()
        t0 = time.perf_counter()

        async def go():
            stream = demixer.stream(2, stats=(0.0, 0.1) if demixer.name.startswith("htdemucs") else None)
            for a in range(0, n, block):
                x = (rng.standard_normal((2, min(block, n - a))) * 0.1).astype(np.float32)
                await stream.push([x[0], x[1]])
            await stream.finish()

        asyncio.run(go())
        rows.append({"name": f"{model} ({'reduced' if reduced else 'official'}), {seconds:g} s", "unit": "MiB",
                     "ours": dev.mem_peak / 2 ** 20, "ref": None, "ratio": None,
                     "note": f"peak GPU memory; resident before {resident / 2 ** 20:.1f} MiB; "
                             f"{time.perf_counter() - t0:.0f} s"})
    if len(rows) > 1:
        rows.append({"name": "  longest / shortest", "unit": "", "ours": rows[-1]["ours"] / rows[0]["ours"],
                     "ref": None, "ratio": None, "note": "must stay within 1.10"})
    return rows


# --------------------------------------------------------------------------- bench tone


def _test_melody(seconds: float, sample_rate: int = 16000):
    """A sung-like test signal: a vibrato tone with a few harmonics sliding over notes,
    swelling and fading, with breaths of noise between phrases (numpy float32)."""
    import numpy as np

    t = np.arange(int(seconds * sample_rate)) / sample_rate
    notes = 220.0 * 2 ** (np.array([0, 2, 4, 5, 7, 5, 4, 2]) / 12)
    f0 = notes[(t / 0.5).astype(int) % len(notes)] * 2 ** (0.3 / 12 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = np.clip(np.sin(np.pi * (t % 2.0) / 1.8), 0, None) ** 0.5 * (t % 2.0 < 1.8)
    breath = 0.01 * np.random.default_rng(0).standard_normal(len(t)) * (t % 2.0 >= 1.8)
    return (0.2 * env * voice + breath).astype(np.float32)


def bench_tone(dev, seconds=10.0, instrument="violin", drift_seconds=3600, block=128, progress=True):
    """Real-time factor (compute seconds per second of audio; < 1 is faster than real
    time) of each tone-transfer stage on the shipped model, and FLOPs per second of
    audio of each stage:

      features   CREPE-tiny f0 + A-weighted loudness (pycore.features), offline
      decoder    the DDSP decoder (pycore.models.ddsp), offline and in page-sized blocks
      synth      harmonic + noise + reverb, offline and in page-sized blocks
      engine     pycore.tone.ToneStream fed `block` samples at a time, as the tone page
                 runs it (features + controls + decoder + synth + readbacks)
      reference  the PyTorch DDSP (pycore.train.ddsp_torch, CPU) decoder + synth on the
                 same controls, same run (skipped without torch)
      drift      oscillator phase after `drift_seconds` of synthesis at 48 kHz against a
                 float64 oscillator (target <= 1e-3 cycles)
    """
    import asyncio

    import numpy as np

    from .features import FRAME_RATE, features, load_crepe
    from .models import ddsp
    from .models.crepe import flops_per_frame
    from .ops.ddsp import bench_oscillator_drift
    from .tone import ToneStream, load_tone_model

    log = _logger(progress)

    def best(fn, repeat=2):
        out = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            out = min(out, time.perf_counter() - t0)
        return out

    rows = []
    model = load_tone_model(dev, instrument)
    c = model.config
    x = _test_melody(seconds)
    flops = ddsp.stage_flops(c)
    crepe = load_crepe(dev)
    crepe_flops = flops_per_frame(crepe.channels) * FRAME_RATE
    loud_flops = (2.5 * 512 * 9 + 3 * 257) * FRAME_RATE

    log(f"features over {seconds:g} s")
    asyncio.run(features(dev, x[:16000]))                                 # compile first
    t = best(lambda: asyncio.run(features(dev, x)))
    rows.append({"name": "features (CREPE-tiny + loudness), offline", "unit": "RTF", "ours": t / seconds,
                 "ref": None, "ratio": None,
                 "note": f"{(crepe_flops + loud_flops) / 1e9:.2f} GFLOP per s of audio (CREPE {crepe_flops / 1e9:.2f})"})

    log("decoder and synthesizer (offline and in blocks)")
    r = ddsp.benchmark(dev, seconds=seconds, block_frames=max(1, block // c.hop), config=c, repeat=2)
    bf = r["block_frames"]
    for stage, key, fl in (("decoder", "decoder", flops["decoder"]),
                           ("synth (harmonic+noise+reverb)", "synth",
                            flops["harmonic"] + flops["noise"] + flops["reverb"])):
        rows.append({"name": f"{stage}, offline", "unit": "RTF", "ours": r["rtf"][f"{key}_offline"], "ref": None,
                     "ratio": None, "note": f"{fl / 1e9:.3f} GFLOP per s of audio"})
        rows.append({"name": f"{stage}, blocks of {bf} frames", "unit": "RTF", "ours": r["rtf"][f"{key}_stream"],
                     "ref": None, "ratio": None, "note": "waits for the GPU after each block, as a live stream must"})

    log(f"whole engine in blocks of {block} samples")
    n = min(len(x), int(4 * 16000))                     # 4 s: thousands of blocks already

    async def engine():
        s = ToneStream(model)
        for i in range(0, n, block):
            await s.push(x[i:i + block])
    t = best(lambda: asyncio.run(engine()), repeat=1)
    rows.append({"name": f"engine (ToneStream), blocks of {block} samples", "unit": "RTF", "ours": t / (n / 16000),
                 "ref": None, "ratio": None,
                 "note": f"{block / 16:.0f} ms blocks; RTF < 1 keeps real time; the tone page runs this"})

    try:
        import torch

        from .train import ddsp_torch
    except ImportError:
        torch = None
        log("no torch: the PyTorch reference row is skipped")
    if torch is not None:
        log("PyTorch reference (CPU)")
        from .safetensors import load as load_st
        from .models import weights_path

        ref = ddsp_torch.DDSP(c)                                     # the same Config (dataclass)
        params = load_st(weights_path(model.name))
        ref.load_state_dict({k: torch.tensor(np.frombuffer(params[k].data, "<f2" if params[k].dtype == "f16"
                                                           else "<f4").astype(np.float32).reshape(params[k].shape))
                             for k in ref.state_dict()})
        fr = int(seconds * FRAME_RATE)
        f0 = torch.full((1, fr), 330.0)
        ld = torch.linspace(-40, 0, fr)[None]

        def ref_run():
            with torch.no_grad():
                ref.synthesize(ref(f0, ld)[0])
        t_ref = best(ref_run)
        f0_t, ld_t = dev.tensor(f0[0].numpy()), dev.tensor(ld[0].numpy())

        def ours():
            controls, _ = model.decoder(f0_t, ld_t)
            dev.read_sync(model.synth.render(controls)[0])
        ours()
        t_ours = best(ours)
        rows.append({"name": "decoder + synth, offline vs PyTorch CPU", "unit": "RTF", "ours": t_ours / seconds,
                     "ref": t_ref / seconds, "ratio": t_ref / t_ours,
                     "note": f"pycore.train.ddsp_torch, torch {torch.__version__}, "
                             f"{torch.get_num_threads()} threads; ratio = speed-up"})

    log(f"oscillator drift over {drift_seconds:g} s at 48 kHz")
    t0 = time.perf_counter()
    d = bench_oscillator_drift(dev, seconds=drift_seconds)
    worst = max(d[k]["max_drift"] for k in ("vibrato", "steady"))
    hi = max(d[k]["hi_only_drift"] for k in ("vibrato", "steady"))
    rows.append({"name": f"oscillator phase, {drift_seconds:g} s at 48 kHz", "unit": "cycles max drift",
                 "ours": worst, "ref": hi, "ratio": None,
                 "note": f"ref = float32 increments alone; target ours <= 1e-3; {time.perf_counter() - t0:.0f} s"})
    return rows
