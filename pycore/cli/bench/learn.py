"""`stemtone bench learn`: MAGNet training and generation, ours next to PyTorch (CPU).

Rows: seconds per training epoch on a 9 s clip (held-out song, default config) for our
WGSL path and for the same model, windows, loss and optimizer in PyTorch on this CPU
(ratio); generation real-time factor (audio seconds per wall second, frames sampled +
fast Griffin-Lim); and, given a trained model (--model), the quality figures: the
long-term average spectrum (LTAS) difference in 1/3-octave bands over the band holding
the central 99% of the training clip's energy, and the longest run of generated frames
that copies consecutive training frames (RMS distance below COPY_DIST clip-std units).
"""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np

from .common import logger, row

CLIP = dict(seconds=9.0, offset=60.0, song="mutilated_mime")  # held out: tunes nothing
COPY_DIST = 0.25


def _clip_path():
    from ...audio.testdata import real_music_wav
    return real_music_wav(**CLIP)


def torch_epoch_seconds(config, frames, lr=1e-3):
    import torch

    F, H, L, S, B = config["n_fft"] // 2 + 1, config["hidden"], config["layers"], config["seq_len"], config["batch"]
    lstm, out = torch.nn.LSTM(F, H, L), torch.nn.Linear(H, F)
    params = list(lstm.parameters()) + list(out.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    z = torch.from_numpy(np.ascontiguousarray(frames, np.float32))
    n = len(z) - 1
    windows = n // (B * S)
    lane = windows * S
    idx = torch.arange(B)[None, :] * lane + torch.arange(S)[:, None]
    t0 = time.perf_counter()
    state = None
    for w in range(windows):
        x, y = z[idx + w * S], z[idx + w * S + 1]
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


def bench_learn(dev, model_path=None, gen_seconds=10.0, epochs=1, progress=True):
    from ...learn.clip import clip_frames
    from ...learn.files import generate, read_mono
    from ...learn.generate import Generator
    from ...learn.train import Trainer
    from ...learn.files import open_model
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
        out = "/tmp/stemtone-learn-bench.wav"
        asyncio.run(generate(model_path, out, gen_seconds, seed=1, prime_from=path))
        import soundfile as sf
        g, sr = sf.read(out, dtype="float32")
        worst, band, _ = ltas_figures(x, g, sr)
        rows.append(row("LTAS |generated - clip|, max over 1/3 oct (dB)", "dB", worst, 3.0, None,
                        f"band {band[0]:.0f}-{band[1]:.0f} Hz holds 99% of the clip's energy; bar 3 dB"))
        trained, _, _ = open_model(dev, model_path)
        gz = asyncio.run(_sampled_frames(trained, frames, gen_seconds))
        run = longest_copy(gz, frames)
        rows.append(row("longest copied run (frames)", "frames", run, None, None,
                        f"{run * DEFAULTS['hop'] / DEFAULTS['sample_rate']:.2f} s; RMS distance < {COPY_DIST} std"))
    return rows


async def _sampled_frames(model, frames, seconds):
    from ...learn.generate import Generator
    gen = Generator(model, seed=1, prime=list(frames[:model.config["seq_len"]].ravel()))
    n = round(seconds * model.config["sample_rate"] / model.config["hop"])
    z = np.asarray(await gen.frames(n), np.float32).reshape(n, model.bins)
    gen.release()
    return z
