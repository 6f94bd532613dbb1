"""`stemtone bench learn`: MAGNet training and generation, ours next to PyTorch (CPU).

Rows: seconds per training epoch on a 9 s clip (held-out song, default config) for our
WGSL path and for the same model, windows, loss and optimizer in PyTorch on this CPU
(ratio); generation real-time factor (audio seconds per wall second, frames sampled +
fast Griffin-Lim); and, given a trained model (--model) and the clip it learned
(--clip, default CLIP), the quality figures for three sampling seeds: the long-term
average spectrum (LTAS) difference in 1/3-octave bands over the band holding the central
99% of the training clip's energy, the headroom gain `stemtone generate` applies to the
file, and the longest run of generated frames that copies consecutive training frames
(RMS distance below COPY_DIST clip-std units).
"""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np

from .common import logger, row

CLIP = dict(seconds=9.0, offset=60.0, song="mutilated_mime")  # the card's first clip
COPY_DIST = 0.25
SEEDS = (1, 2, 3)   # sampling seeds of the quality rows


def _clip_path():
    from ...audio.testdata import real_music_wav
    return real_music_wav(**CLIP)


def torch_epoch_seconds(config, frames, lr=1e-3):
    import torch

    from ...learn.train import FEEDBACK

    F, H, L, S, B = config["n_fft"] // 2 + 1, config["hidden"], config["layers"], config["seq_len"], config["batch"]
    lstm, out = torch.nn.LSTM(F, H, L), torch.nn.Linear(H, F)
    params = list(lstm.parameters()) + list(out.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    z = torch.from_numpy(np.ascontiguousarray(frames, np.float32))
    n = len(z) - 1
    windows = n // (B * S)
    lane = windows * S
    idx = torch.arange(B)[None, :] * lane + torch.arange(S)[:, None]
    noise_std = torch.full((F,), 0.3)
    t0 = time.perf_counter()
    state = None
    for w in range(windows):
        x, y = z[idx + w * S], z[idx + w * S + 1]
        x = x + noise_std * torch.randn_like(x)     # ours: input noise (Trainer's default)
        if FEEDBACK:   # ours: scheduled sampling where it is the Trainer's default, at its largest mix
            with torch.no_grad():
                first = out(lstm(x, state)[0])
                loss = torch.nn.functional.mse_loss(first, y)
                mix = torch.rand(S, B, 1) < FEEDBACK
                mix[0] = False
                x = torch.where(mix, torch.cat([x[:1], first[:-1]]) + noise_std * torch.randn_like(x), x)
        pred, state = lstm(x, state)
        state = tuple(s.detach() for s in state)
        loss = torch.nn.functional.mse_loss(out(pred), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return time.perf_counter() - t0


def ltas_db(x, sr, n_fft=2048):
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::n_fft // 2] * np.hanning(n_fft)
    return np.mean(np.abs(np.fft.rfft(frames, axis=1)) ** 2, axis=0), np.fft.rfftfreq(n_fft, 1 / sr)


def ltas_figures(ref, gen, sr):
    """(max |dB difference| over 1/3-octave bands inside the central-99%-energy band, band)."""
    p_ref, f = ltas_db(ref, sr)
    p_gen, _ = ltas_db(gen, sr)
    c = np.cumsum(p_ref) / p_ref.sum()
    lo, hi = f[np.searchsorted(c, 0.005)], f[np.searchsorted(c, 0.995)]
    lo = max(lo, 20.0)
    edges = lo * 2.0 ** (np.arange(0, np.log2(hi / lo) * 3 + 1) / 3)
    diffs = []
    for a, b in zip(edges[:-1], edges[1:]):
        m = (f >= a) & (f < b)
        if m.any():
            diffs.append(10 * np.log10(p_gen[m].sum() / p_ref[m].sum()))
    return float(np.max(np.abs(diffs))), (float(lo), float(hi)), diffs


def longest_copy(gen_z, train_z, dist=COPY_DIST):
    """Longest run of generated frames g_k.. that match training frames t_j, t_j+1, ..."""
    d = np.sqrt(((gen_z[:, None, :] - train_z[None, :, :]) ** 2).mean(axis=2)) < dist
    best, run = 0, np.zeros(train_z.shape[0], int)
    for k in range(gen_z.shape[0]):
        prev = np.concatenate([[0], run[:-1]])
        run = np.where(d[k], prev + 1, 0)
        best = max(best, int(run.max()))
    return best


def bench_learn(dev, model_path=None, gen_seconds=10.0, epochs=1, progress=True, clip=None):
    """clip: the audio file the model at model_path was trained on (default: CLIP's)."""
    from ...learn.clip import clip_frames
    from ...learn.files import read_mono
    from ...learn.generate import Generator
    from ...learn.train import Trainer
    from ...models.magnet import DEFAULTS, MagNet

    log, rows = logger(progress), []
    path = _clip_path()
    x = read_mono(path, DEFAULTS["sample_rate"])
    model = MagNet.create(dev, DEFAULTS, 0)
    z, model.mean, model.std = asyncio.run(clip_frames(dev, x, DEFAULTS))
    frames = z.numpy()
    trainer = Trainer(model, frames.ravel())
    log("one warm-up epoch (compiles the kernels)")
    asyncio.run(trainer.epoch())
    t0, h0 = time.perf_counter(), time.thread_time()
    for _ in range(epochs):
        asyncio.run(trainer.epoch())
    ours = (time.perf_counter() - t0) / epochs
    host = (time.thread_time() - h0) / epochs
    log("PyTorch epoch")
    torch_epoch_seconds(DEFAULTS, frames)
    ref = min(torch_epoch_seconds(DEFAULTS, frames) for _ in range(epochs))
    rows.append(row("MAGNet epoch, 9 s clip (s)", "s/epoch", ours, ref, ours / ref,
                    f"{trainer.steps()} Adam steps of {DEFAULTS['batch']}x{DEFAULTS['seq_len']} frames; ref torch CPU"))
    rows.append(row("MAGNet epoch host time (s)", "s/epoch", host, None, None,
                    "thread CPU time of the Python thread that encodes and submits"))
    log("generation")
    gen = Generator(model, seed=1)
    load = os.getloadavg()[0]
    t0, h0, p0 = time.perf_counter(), time.thread_time(), time.process_time()

    async def run():
        n = 0
        async for b in gen.blocks(gen_seconds):
            n += len(b)
        return n
    n = asyncio.run(run())
    wall = time.perf_counter() - t0
    frames_n = n / DEFAULTS["hop"]
    rows.append(row("MAGNet generation (audio s per wall s)", "x real time", n / DEFAULTS["sample_rate"] / wall,
                    None, None, f"sampling + fast Griffin-Lim (32 iterations), untrained weights; "
                    f"load average {load:.1f} on {os.cpu_count()} cores"))
    rows.append(row("MAGNet generation host time per frame", "ms/frame", (time.thread_time() - h0) / frames_n * 1e3,
                    None, None, "thread CPU time of the Python thread"))
    rows.append(row("MAGNet generation CPU time per frame", "ms/frame", (time.process_time() - p0) / frames_n * 1e3,
                    None, None, f"all threads of the process (lavapipe's too); real time is "
                    f"{DEFAULTS['hop'] / DEFAULTS['sample_rate'] * 1e3:.1f} ms/frame"))
    if model_path:
        log("quality of the trained model")
        rows += quality_rows(dev, model_path, clip or path, gen_seconds)
    return rows


def quality_rows(dev, model_path, clip_path, seconds, seeds=SEEDS, temperature=1.0):
    """LTAS and copy rows for each seed: `seconds` generated as `stemtone generate --prime
    CLIP` does (primed with the clip's first seq_len frames), the LTAS taken of the
    generator's audio as it comes (before the file writer's headroom gain, reported in
    its own row: it scales the whole file when Griffin-Lim's peak passes 0.99, which a
    clip may do too), the copy run of the same seed's frames."""
    from ...learn.clip import clip_frames
    from ...learn.files import open_model, read_mono
    from ...learn.generate import Generator

    model, _, _ = open_model(dev, model_path)
    cfg = model.config
    x = read_mono(clip_path, cfg["sample_rate"])
    z, _, _ = asyncio.run(clip_frames(dev, x, cfg, (model.mean, model.std)))
    frames = z.numpy()
    prime = list(frames[:cfg["seq_len"]].ravel())
    n = round(seconds * cfg["sample_rate"] / cfg["hop"])
    rows = []
    for seed in seeds:
        async def sample():
            gen = Generator(model, seed=seed, temperature=temperature, prime=prime)
            y = np.concatenate([np.frombuffer(b, np.float32) async for b in gen.blocks(seconds)])
            gen = Generator(model, seed=seed, temperature=temperature, prime=prime)
            gz = np.asarray(await gen.frames(n), np.float32).reshape(n, model.bins)
            gen.release()
            return y, gz
        y, gz = asyncio.run(sample())
        worst, band, diffs = ltas_figures(x, y, cfg["sample_rate"])
        gain = 20 * np.log10(min(1.0, 0.99 / float(np.abs(y).max())))
        run = longest_copy(gz, frames)
        rows.append(row(f"LTAS |generated - clip|, max over 1/3 oct (dB), seed {seed}", "dB", worst, 3.0, None,
                        f"band {band[0]:.0f}-{band[1]:.0f} Hz holds 99% of the clip's energy; mean difference "
                        f"{np.mean(diffs):+.2f} dB; temperature {temperature:g}; bar 3 dB"))
        rows.append(row(f"headroom gain of the written file, seed {seed}", "dB", gain, None, None,
                        f"peak {np.abs(y).max():.2f} (the clip's {np.abs(x).max():.2f}): `stemtone generate` "
                        f"scales the file to a 0.99 peak: every band of the file is this much lower"))
        rows.append(row(f"longest copied run (frames), seed {seed}", "frames", run, None, None,
                        f"{run * cfg['hop'] / cfg['sample_rate']:.2f} s; RMS distance < {COPY_DIST} std"))
    return rows
