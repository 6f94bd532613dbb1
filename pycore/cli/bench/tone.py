"""`stemtone bench tone`: the tone-transfer stages on the shipped model, each as a
real-time factor (compute seconds per second of audio; < 1 is faster than real time)
with its FLOPs per second of audio; the decoder + synthesizer against the PyTorch DDSP
(pycore.train.ddsp_torch, CPU) in the same run; the oscillator's phase drift over an
hour against float32 increments alone.

`stemtone bench tone --kernels`: where one engine block's time goes (kernel_profile):
per kernel of the recorded block plan, its dispatches and the process CPU time they
take, each step replayed alone and read back."""

from __future__ import annotations

import time

from .common import best_time, logger, row

SAMPLE_RATE = 16000  # the tone models' input rate


ENGINE_BLOCK_20MS = 320      # the largest block the tone page may run (DDSP-VST's 20 ms hop)
LIVE_DEPTH = 3               # blocks in flight in live_row (the page picks its own from its round trip)
SINGING_LIVE_SECONDS = 30    # real singing fed in real time by the full run (singing_live_rows)
LIVE_WARM_BLOCKS = 12        # blocks through a throwaway stream first, as the tone page's warm-up


def bench_tone(dev, seconds=10.0, instrument="violin", drift_seconds=3600, block=128, progress=True):
    """One row (or two) per stage, run on a `seconds` long test melody:

      features   CREPE-tiny f0 + A-weighted loudness (pycore.tone.features), offline
      decoder    the DDSP decoder (pycore.models.ddsp), offline and in page-sized blocks
      synth      harmonic + noise + reverb, offline and in page-sized blocks
      engine     pycore.tone.ToneStream fed `block` samples at a time, as the tone page
                 runs it (features + controls + decoder + synth + readbacks), and in
                 20 ms blocks; wall RTF and process CPU per second of audio; and fed
                 in real time with LIVE_DEPTH blocks in flight: late blocks (live_row);
                 the full run also feeds 30 s of real singing in 20 ms blocks
      reference  the PyTorch DDSP (pycore.train.ddsp_torch, CPU) decoder + synth on the
                 same controls, same run (skipped without torch)
      pitch rate CREPE at a lower analysis rate (every STEPS-th frame, f0 interpolated
                 in cents) against full-rate CREPE on real singing (pitch_rate_rows)
      drift      oscillator phase after `drift_seconds` of synthesis at 48 kHz against a
                 float64 oscillator (target <= 1e-3 cycles)
    """
    from ...tone import load_tone_model

    log = logger(progress)
    model = load_tone_model(dev, instrument)
    x = melody(seconds)
    rows = [features_row(dev, x, seconds, log)]
    rows += decoder_synth_rows(dev, model.config, seconds, block, log)
    for b in sorted({block, ENGINE_BLOCK_20MS}):
        rows += engine_rows(model, x, b, log)
        rows.append(live_row(model, x, b, LIVE_DEPTH, log))
    if seconds >= 10:
        rows += singing_live_rows(model, log)
    rows += reference_rows(dev, model, seconds, log)
    rows += pitch_rate_rows(dev, log, clips=None if seconds >= 10 else 1)
    rows.append(drift_row(dev, drift_seconds, log))
    return rows


def melody(seconds: float, sample_rate: int = SAMPLE_RATE):
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


def features_row(dev, x, seconds, log) -> dict:
    """CREPE-tiny f0 and A-weighted loudness over the whole melody, offline (best of 2,
    after a 1 s run that compiles the kernels)."""
    import asyncio

    from ...models.crepe import flops_per_frame
    from ...tone.features import FRAME_RATE, features, load_crepe

    crepe_flops = flops_per_frame(load_crepe(dev).channels) * FRAME_RATE
    loud_flops = (2.5 * 512 * 9 + 3 * 257) * FRAME_RATE
    log(f"features over {seconds:g} s")
    asyncio.run(features(dev, x[:SAMPLE_RATE]))                           # compile first
    t = best_time(lambda: asyncio.run(features(dev, x)))
    return row("features (CREPE-tiny + loudness), offline", "RTF", t / seconds,
               note=f"{(crepe_flops + loud_flops) / 1e9:.2f} GFLOP per s of audio (CREPE {crepe_flops / 1e9:.2f})")


def decoder_synth_rows(dev, config, seconds, block, log) -> list:
    """The DDSP decoder and the synthesizer (harmonic + noise + reverb), each offline and
    in blocks of `block` samples' worth of frames (pycore.models.ddsp.benchmark)."""
    from ...models import ddsp

    log("decoder and synthesizer (offline and in blocks)")
    flops = ddsp.stage_flops(config)
    r = ddsp.benchmark(dev, seconds=seconds, block_frames=max(1, block // config.hop), config=config, repeat=2)
    rows = []
    for stage, key, fl in (("decoder", "decoder", flops["decoder"]),
                           ("synth (harmonic+noise+reverb)", "synth",
                            flops["harmonic"] + flops["noise"] + flops["reverb"])):
        rows.append(row(f"{stage}, offline", "RTF", r["rtf"][f"{key}_offline"],
                        note=f"{fl / 1e9:.3f} GFLOP per s of audio"))
        rows.append(row(f"{stage}, blocks of {r['block_frames']} frames", "RTF", r["rtf"][f"{key}_stream"],
                        note="waits for the GPU after each block, as a live stream must"))
    return rows


def engine_rows(model, x, block, log) -> list:
    """The whole live engine (pycore.tone.ToneStream) fed `block` samples at a time over
    the first 4 s of the melody (thousands of blocks already), as the tone page runs it:
    its real-time factor (wall), and the CPU seconds the whole process spent per second
    of audio (the calling thread and the CPU driver's threads: what a shared, loaded
    machine does not inflate; a CPU driver on N idle cores keeps real time when it is
    below about N)."""
    import asyncio

    from ...tone import ToneStream

    log(f"whole engine in blocks of {block} samples")
    n = min(len(x), int(4 * SAMPLE_RATE))

    async def engine():
        s = ToneStream(model)
        for i in range(0, n, block):
            await s.push(x[i:i + block])
    cpu0 = time.process_time()
    t = best_time(lambda: asyncio.run(engine()), repeat=1)
    cpu = time.process_time() - cpu0
    ms = block / 16
    return [row(f"engine (ToneStream), blocks of {block} samples", "RTF", t / (n / SAMPLE_RATE),
                note=f"{ms:g} ms blocks; RTF < 1 keeps real time; the tone page runs this"),
            row(f"engine (ToneStream), blocks of {block} samples, process CPU", "CPU s per s of audio",
                cpu / (n / SAMPLE_RATE), note=f"{ms:g} ms blocks; all threads (the CPU driver's too)")]


def kernel_profile(model, block=ENGINE_BLOCK_20MS, reps=10, warm_seconds=1.0) -> list:
    """Rows: per kernel of the engine's steady-state block plan (`block` samples, after
    `warm_seconds` of the test melody), its dispatches per block and the process CPU
    milliseconds they take per block (all threads: the CPU driver runs the work), then
    the sum over the steps and the whole plan replayed in one submit. Each step is
    replayed alone (Plan.replay_step) and followed by a readback of one float, whose cost
    alone is subtracted; the mean over `reps` blocks. Process CPU, not wall time: what a
    loaded machine inflates least (it still does, through shared cores and caches)."""
    import asyncio

    from ...tone import ToneStream

    dev = model.dev
    stream = ToneStream(model)
    x = melody(warm_seconds)

    async def warm():
        for i in range(0, len(x), block):
            await stream.push(x[i:i + block])
    asyncio.run(warm())
    frames = block // 64
    keys = [k for k in stream.plans if k[0] == frames]
    if not keys:
        raise ValueError(f"kernel_profile: no plan of {frames} frames after {warm_seconds} s in blocks of {block}")
    plan = stream.plans[keys[-1]][0]
    probe = dev.tensor([0.0])

    def cpu_ms(queue, n):
        dev.read_sync(probe)
        t0 = time.process_time()
        for _ in range(n):
            queue()
            dev.read_sync(probe)
        return (time.process_time() - t0) * 1e3 / n

    empty = cpu_ms(lambda: None, 5 * reps)
    per_kernel, count = {}, {}
    for _ in range(reps):
        for i, step in enumerate(plan.steps):
            label = step[0].label
            per_kernel[label] = per_kernel.get(label, 0.0) + (cpu_ms(lambda: plan.replay_step(i), 1) - empty) / reps
            count[label] = count.get(label, 0) + 1
    whole = cpu_ms(plan.replay, reps) - empty
    stream.release()
    ms = block / 16
    rows = [row(f"{label} x {count[label] // reps}", "CPU ms per block", v,
                note=f"{v / (count[label] // reps):.3f} ms per dispatch")
            for label, v in sorted(per_kernel.items(), key=lambda kv: -kv[1])]
    rows.append(row(f"sum of the {plan.dispatches} steps alone", "CPU ms per block", sum(per_kernel.values()),
                    note=f"{ms:g} ms blocks: {sum(per_kernel.values()) / ms:.2f} CPU s per s of audio"))
    rows.append(row("the whole plan in one submit", "CPU ms per block", whole,
                    note=f"{ms:g} ms blocks: {whole / ms:.2f} CPU s per s of audio"))
    return rows


def live_row(model, x, block, depth, log, seconds=4.0, what="") -> dict:
    """The engine fed as a microphone feeds it: block k arrives at k * block / 16 kHz
    (the feeder sleeps until then), is submitted at once with up to `depth` blocks in
    flight (ToneStream.submit), and must be back within `depth` blocks of its arrival,
    the playback buffer the page keeps for that depth; later ones count as late. A
    feeder that falls behind submits as soon as it can, so an engine slower than real
    time shows almost every block late. Over the first `seconds` of x (`what` names it
    in the row)."""
    import asyncio
    from collections import deque

    from ...tone import ToneStream

    log(f"live engine, blocks of {block} samples, {depth} in flight{what}")
    n = min(len(x), int(seconds * SAMPLE_RATE))
    period = block / SAMPLE_RATE

    async def live():
        warm = ToneStream(model)                       # as the page warms up after loading: every
        for i in range(0, LIVE_WARM_BLOCKS * block, block):   # shader compiled, matmul shapes tuned
            await warm.push(x[i:i + block])
        warm.release()
        s = ToneStream(model)
        await s.push(x[:block])                        # its first plan is recorded
        inflight, late, blocks = deque(), 0, 0
        start = time.perf_counter()
        for k, i in enumerate(range(0, n, block)):
            arrival = start + (k + 1) * period
            while inflight and (len(inflight) >= depth or inflight[0][1] <= arrival):   # due by now
                pending, deadline = inflight.popleft()
                await pending
                late += time.perf_counter() > deadline
            pause = arrival - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            inflight.append((s.submit(x[i:i + block]), arrival + depth * period))
            blocks += 1
        while inflight:
            pending, deadline = inflight.popleft()
            await pending
            late += time.perf_counter() > deadline
        return late, blocks

    late, blocks = asyncio.run(live())
    return row(f"engine fed in real time{what}, blocks of {block} samples, {depth} in flight", "late blocks",
               late, note=f"of {blocks} blocks ({n / SAMPLE_RATE:g} s); late = back more than "
                          f"{depth} blocks after its input arrived; 0 keeps real time")


def singing_live_rows(model, log, seconds=SINGING_LIVE_SECONDS) -> list:
    """live_row over `seconds` of real singing (pycore.audio.testdata's clips one after
    the other, again from the first while too short) in 20 ms blocks, the page's block
    on a CPU driver; [] where the clips cannot be fetched."""
    import numpy as np

    from ...audio import testdata

    try:
        clips = [testdata.vocadito(clip) for clip in testdata.SINGING_CLIPS]
    except testdata.TestDataUnavailable as e:
        log(f"no singing clips, the singing live row is skipped: {e}")
        return []
    one_pass = np.concatenate(clips)
    x = np.tile(one_pass, -(-int(seconds * SAMPLE_RATE) // len(one_pass))).astype(np.float32)
    return [live_row(model, x, ENGINE_BLOCK_20MS, LIVE_DEPTH, log, seconds=seconds,
                     what=f" on {seconds:g} s of real singing")]


def reference_rows(dev, model, seconds, log) -> list:
    """Decoder + synthesizer offline, ours against the PyTorch DDSP on the CPU with the
    same weights and the same controls (a steady 330 Hz, loudness -40 -> 0 dB); [] without
    torch."""
    try:
        import torch

        from ...train import ddsp_torch
    except ImportError:
        log("no torch: the PyTorch reference row is skipped")
        return []
    from ...tone.features import FRAME_RATE
    from ...weights import weights_path

    log("PyTorch reference (CPU)")
    ref = ddsp_torch.load(weights_path(model.name))
    fr = int(seconds * FRAME_RATE)
    f0 = torch.full((1, fr), 330.0)
    ld = torch.linspace(-40, 0, fr)[None]

    def ref_run():
        with torch.no_grad():
            ref.synthesize(ref(f0, ld)[0])
    t_ref = best_time(ref_run)
    f0_t, ld_t = dev.tensor(f0[0].numpy()), dev.tensor(ld[0].numpy())

    def ours():
        controls, _ = model.decoder(f0_t, ld_t)
        dev.read_sync(model.synth.render(controls)[0])
    ours()
    t_ours = best_time(ours)
    return [row("decoder + synth, offline vs PyTorch CPU", "RTF", t_ours / seconds, t_ref / seconds, t_ref / t_ours,
                f"pycore.train.ddsp_torch, torch {torch.__version__}, "
                f"{torch.get_num_threads()} threads; ratio = speed-up")]


PITCH_STEPS = (2, 3, 4, 5)    # analysis every 8, 12, 16, 20 ms (DDSP-VST: 20 ms)
VOICED = 0.5                  # pycore.tone.controls.VOICED
OCTAVE_CENTS = 600            # an f0 this far off counts as an octave error


def cents(f0_hz):
    """f0 in cents above 10 Hz (CREPE's scale), numpy."""
    import numpy as np

    return 1200 * np.log2(np.maximum(f0_hz, 1e-3) / 10.0)


def lower_rate(f0_hz, confidence, step):
    """(f0_hz, confidence) of CREPE run on frames 0, step, 2 step, ... only, brought back
    to every frame: f0 interpolated linearly in cents, confidence linearly, between the
    analysed frames around each frame (frames after the last analysed one keep its
    values). CREPE sees each frame's window alone, so the analysed frames' values are
    exactly what a lower-rate run computes: this measures the lower rate without running it."""
    import numpy as np

    f0_hz, confidence = np.asarray(f0_hz, np.float64), np.asarray(confidence, np.float64)
    frames = np.arange(len(f0_hz))
    grid = frames[::step]
    f0 = 10.0 * 2 ** (np.interp(frames, grid, cents(f0_hz[grid])) / 1200)
    return f0, np.interp(frames, grid, confidence[grid])


def octave_jumps(f0_hz, confidence, radius=10):
    """Voiced frames whose f0 lies OCTAVE_CENTS or more off the median of the voiced frames
    within +-radius frames (a track's octave errors, with no ground truth needed)."""
    import numpy as np

    c, voiced = cents(f0_hz), np.asarray(confidence) >= VOICED
    count = 0
    for i in np.flatnonzero(voiced):
        lo, hi = max(0, i - radius), i + radius + 1
        count += abs(c[i] - np.median(c[lo:hi][voiced[lo:hi]])) >= OCTAVE_CENTS
    return int(count)


def pitch_rate_rows(dev, log, clips=None) -> list:
    """For each analysis step of PITCH_STEPS, on the real singing clips of
    pycore.audio.testdata (the first `clips` of them; None: all): the share of
    confidently voiced frames (full-rate confidence >= VOICED) whose interpolated f0 is
    within 10 cents of full-rate CREPE-tiny (target >= 99%), and octave errors (the
    track's octave jumps; ref = full rate). [] where the clips cannot be fetched."""
    import asyncio

    import numpy as np

    from ...audio import testdata
    from ...tone.features import features

    tracks = []
    for clip in testdata.SINGING_CLIPS[:clips]:
        try:
            x = testdata.vocadito(clip)
        except testdata.TestDataUnavailable as e:
            log(f"no singing clips, pitch-rate rows skipped: {e}")
            return []
        log(f"full-rate CREPE on singing clip {clip} ({len(x) / SAMPLE_RATE:.1f} s)")
        f0, conf, _ = asyncio.run(features(dev, x))
        tracks.append((np.asarray(f0), np.asarray(conf)))
    voiced = sum(int((conf >= VOICED).sum()) for _, conf in tracks)
    ref_jumps = sum(octave_jumps(f0, conf) for f0, conf in tracks)
    rows = []
    for step in PITCH_STEPS:
        near, jumps = 0, 0
        for f0, conf in tracks:
            g, gc = lower_rate(f0, conf, step)
            near += int((np.abs(cents(g) - cents(f0))[conf >= VOICED] <= 10).sum())
            jumps += octave_jumps(g, gc)
        rows.append(row(f"CREPE every {step} frames ({4 * step} ms), f0 within 10 cents", "% voiced frames",
                        100.0 * near / voiced, note=f"{voiced} voiced frames of {len(tracks)} sung clip(s) "
                        "vs full-rate CREPE-tiny; target >= 99"))
        rows.append(row(f"CREPE every {step} frames ({4 * step} ms), octave errors", "frames", jumps, ref_jumps,
                        note="octave jumps in the track; ref = full rate"))
    return rows


def drift_row(dev, drift_seconds, log) -> dict:
    """The oscillator's worst phase drift (cycles) after `drift_seconds` at 48 kHz, vibrato
    and steady, against a float64 oscillator; ref = float32 increments alone."""
    from ...ops.ddsp import bench_oscillator_drift

    log(f"oscillator drift over {drift_seconds:g} s at 48 kHz")
    t0 = time.perf_counter()
    d = bench_oscillator_drift(dev, seconds=drift_seconds)
    worst = max(d[k]["max_drift"] for k in ("vibrato", "steady"))
    hi = max(d[k]["hi_only_drift"] for k in ("vibrato", "steady"))
    return row(f"oscillator phase, {drift_seconds:g} s at 48 kHz", "cycles max drift", worst, hi,
               note=f"ref = float32 increments alone; target ours <= 1e-3; {time.perf_counter() - t0:.0f} s")
