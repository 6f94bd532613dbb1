"""Train a DDSP instrument model (pycore/train/ddsp_torch.py) on torch CPU.

    apt-get install -y fluidsynth fluid-soundfont-gm            # once (Debian)
    python -m pycore.train.data violin                          # the data, cached
    python -m pycore.train.train_ddsp --instrument violin --steps 450 \\
        --out weights/ddsp-violin.safetensors                   # also the manifest entry and card
    python -m pycore.train.evaluate violin                      # hold-out figures on the GPU path

Training (ddsp's solo_instrument recipe, scaled to a CPU):

    batch       8 random crops of 4 s (1000 frames, 64000 samples) from the training
                melodies, picked with probability proportional to their length
    model       f0_hz, loudness_db -> decoder -> controls -> harmonic + filtered noise
                -> trained reverb (ddsp_torch.DDSP; noise from torch.rand; the harmonic
                part through `harmonic` below, the same math ~5x faster)
    loss        multi-scale spectral loss (ddsp SpectralLoss as solo_instrument.gin sets
                it: FFT sizes 2048 .. 64, 75 % overlap, L1 of the magnitudes plus L1 of
                their logs, each a mean over its spectrogram, summed over the sizes)
    optimizer   Adam, learning rate 1e-3 decaying exponentially to 1e-4 at the last
                step, gradients clipped to a global norm of 3 (ddsp's default);
                --extend takes a finished run further on the same decay
    seeds       torch.manual_seed(seed) before the model is built; crops from
                numpy.random.default_rng(seed): the same command gives the same weights
                (on the same torch version and thread count; the timings in the
                metadata differ)

CONFIG is smaller than pycore.models.ddsp's default (ch 128, GRU 128, reverb 0.5 s
instead of 256, 256, 3 s): ~1.1 s of CPU per step instead of ~1.5 s, and a quarter of
the decoder's work at inference. Its sizes travel in the weights' metadata, where the
GPU model reads its Config from. Every `--eval-every` steps the spectral loss on fixed
hold-out crops is logged (the torch synthesizer); the weights are written as float16
with the training record in the metadata ("stemtone_training", JSON), the model's entry
in weights/manifest.json and its card weights/cards/ddsp-<instrument>.md are
(re)written; evaluate.py adds the GPU-path hold-out figures to the card. Native only
(torch, numpy).

Long runs in slices: `--checkpoint FILE` saves the whole training state every 50 steps;
the same command resumes from it (same weights as one uninterrupted run), and
`--stop-after N` ends a slice after N steps, e.g. under `nice -n 19` on a shared machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..tone.timbre import load_check
from . import data as D
from . import timbre
from .ddsp_torch import CONFIG, DDSP, next_frame, filtered_noise, save, upsample_linear

FFT_SIZES = (2048, 1024, 512, 256, 128, 64)
REPO = Path(__file__).resolve().parent.parent.parent
WEIGHTS_DIR = REPO / "weights"
CARDS_DIR = WEIGHTS_DIR / "cards"
DATA_LICENSE = ("MIT (FluidR3_GM.sf2, Copyright (c) 2000-2002, 2008 Frank Wen; Debian package "
                "fluid-soundfont-gm); rendered with fluidsynth")


# --------------------------------------------------------------------------- loss


def stft_magnitude(x, n_fft, overlap=0.75):
    """|STFT| of x [B, N] as tf.signal.stft(pad_end=True) computes it: frames of n_fft
    every n_fft / 4 samples, ceil(N / hop) of them, the last ones zero-padded; periodic
    Hann window; [B, frames, n_fft / 2 + 1]."""
    hop = int(n_fft * (1 - overlap))
    N = x.shape[-1]
    frames = -(-N // hop)
    x = F.pad(x, (0, (frames - 1) * hop + n_fft - N))
    window = torch.hann_window(n_fft, periodic=True, dtype=x.dtype, device=x.device)
    return torch.fft.rfft(x.unfold(-1, n_fft, hop) * window, dim=-1).abs()


def spectral_loss(audio, target, fft_sizes=FFT_SIZES, eps=1e-5):
    """Multi-scale spectral loss: sum over the FFT sizes of mean |S - T| + mean |log S -
    log T| (ddsp safe_log: log(max(x, 1e-5)))."""
    loss = 0.0
    for n in fft_sizes:
        s, t = stft_magnitude(audio, n), stft_magnitude(target, n)
        loss = loss + (s - t).abs().mean() + (torch.log(s.clamp(min=eps)) - torch.log(t.clamp(min=eps))).abs().mean()
    return loss


# --------------------------------------------------------------------------- synthesis


def harmonic(f0_hz, amplitude, distribution, sample_rate, hop):
    """ddsp_torch.harmonic reorganized for training speed (the same numbers to float32
    rounding, > 100 dB SDR; tests/test_train.py): f0 is an input, not trained, so the
    sines of all harmonics are computed once without autograd, in float32 from the float64
    phase of the fundamental, and the Hann-window upsampling of the amplitudes moves out
    of the sum over harmonics. Sample j of frame f is

        (1 - w_j) sum_k A[f, k] sin_k[f hop + j] + w_j sum_k A[f + 1, k] sin_k[f hop + j]

    with w_j = (1 - cos(pi j / hop)) / 2: two batched matrix-vector products per frame,
    whose backward pass is as cheap."""
    B, Fr, K = distribution.shape
    k = torch.arange(1, K + 1, dtype=f0_hz.dtype, device=f0_hz.device)
    nyquist = sample_rate / 2
    d = torch.where(f0_hz[..., None] * k >= nyquist, torch.zeros_like(distribution), distribution)
    total = d.sum(-1, keepdim=True)
    amps = amplitude[..., None] * d / torch.where(total == 0, torch.full_like(total, 1e-7), total)  # [B, F, K]
    with torch.no_grad():
        f0n = upsample_linear(f0_hz, hop)                                          # [B, N]
        phase = (torch.cumsum(f0n.double() / sample_rate, -1) % 1.0).float()      # cycles
        sines = (phase[..., None] * k).frac_().mul_(2 * math.pi).sin_()            # [B, N, K]
        sines.masked_fill_(f0n[..., None] * k >= nyquist, 0.0)
        sines = sines.view(B, Fr, hop, K)
        j = torch.arange(hop, dtype=torch.float64, device=f0_hz.device)
        w = (0.5 - 0.5 * torch.cos(math.pi * j / hop)).to(sines.dtype)           # [hop]
    out = (1 - w) * torch.einsum("bfjk,bfk->bfj", sines, amps) + w * torch.einsum("bfjk,bfk->bfj", sines, next_frame(amps))
    return out.reshape(B, Fr * hop)


def synthesize(model, controls, noise=None):
    """model.synthesize(controls, noise) with the faster harmonic() above."""
    c = model.config
    f0, amp = controls[..., 0], controls[..., 1]
    dist, mags = controls[..., 2:2 + c.n_harmonics], controls[..., 2 + c.n_harmonics:]
    if noise is None:
        noise = torch.rand(f0.shape[0], f0.shape[1] * c.hop, device=controls.device) * 2 - 1
    audio = harmonic(f0, amp, dist, c.sample_rate, c.hop) + filtered_noise(mags, noise)
    return model.reverb(audio) if model.reverb is not None else audio


# --------------------------------------------------------------------------- data


class Crops:
    """Random crops of `frames` frames from a list of melodies (dicts of f0_hz,
    loudness_db, audio), each melody picked with probability proportional to its length."""

    def __init__(self, items, frames, hop, seed):
        self.items = [d for d in items if len(d["f0_hz"]) >= frames]
        if not self.items:
            raise ValueError(f"no melody has {frames} frames")
        lengths = np.array([len(d["f0_hz"]) - frames + 1 for d in self.items], np.float64)
        self.p = lengths / lengths.sum()
        self.frames, self.hop = frames, hop
        self.rng = np.random.default_rng(seed)

    def crop(self, d, start):
        n = self.frames * self.hop
        audio = d["audio"][start * self.hop:start * self.hop + n]
        audio = np.pad(audio, (0, n - len(audio)))
        return (d["f0_hz"][start:start + self.frames], d["loudness_db"][start:start + self.frames], audio)

    def batch(self, size):
        rows = []
        for i in self.rng.choice(len(self.items), size, p=self.p):
            d = self.items[i]
            rows.append(self.crop(d, int(self.rng.integers(0, len(d["f0_hz"]) - self.frames + 1))))
        return tuple(torch.tensor(np.stack(col)) for col in zip(*rows))

    def fixed(self, per_item=2):
        """Deterministic crops (start and middle of each melody) for monitoring."""
        rows = []
        for d in self.items:
            last = len(d["f0_hz"]) - self.frames
            rows += [self.crop(d, s) for s in sorted({0, last // 2})[:per_item]]
        return tuple(torch.tensor(np.stack(col)) for col in zip(*rows))


def loss_on(model, batch, seed=0, chunk=8):
    """Spectral loss of the model on a batch (no gradient), noise from a fixed seed."""
    f0, ld, audio = batch
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    with torch.no_grad():
        for a in range(0, len(f0), chunk):
            controls, _ = model(f0[a:a + chunk], ld[a:a + chunk])
            noise = torch.rand(controls.shape[0], controls.shape[1] * model.config.hop, generator=gen) * 2 - 1
            y = synthesize(model, controls, noise)
            total += float(spectral_loss(y, audio[a:a + chunk])) * len(y)
    return total / len(f0)


# --------------------------------------------------------------------------- training


def train_step(model, opt, batch, clip=3.0):
    """One optimizer step on batch (f0 [B, F], loudness [B, F], audio [B, F * hop]):
    returns the loss before the step."""
    f0, ld, audio = batch
    controls, _ = model(f0, ld)
    loss = spectral_loss(synthesize(model, controls), audio)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return float(loss.detach())


def fit(instrument, steps, batch=8, seconds=4.0, lr=1e-3, final_lr=1e-4, seed=0, config=CONFIG, eval_every=50,
        threads=1, checkpoint=None, checkpoint_every=50, stop_after=None, extend=False, log=print):
    """Train a model; returns (model, training record), or (None, None) when stop_after
    steps of this call ran out before the last step.

    checkpoint: a file (torch.save) written atomically every checkpoint_every steps and
    at the end: model, optimizer and schedule state, the step, the crop generator's and
    torch's random states, the curves and the time spent. When it exists, training
    resumes from it, and the result is the same as one uninterrupted run (same weights:
    every random state is restored). stop_after: run at most this many steps in this
    call, then write the checkpoint and return (a long run in bounded slices).
    extend: the checkpoint may be of a shorter run (even a finished one); training goes
    on from it to `steps` on the same exponential learning-rate decay (the schedule's
    factor comes from the checkpoint, so the rate keeps falling past final_lr), and the
    record's final_lr is the rate actually reached."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    hop = config.hop
    frames = int(round(seconds * config.sample_rate / hop))
    train_set = Crops(D.load_split(instrument, "train"), frames, hop, seed)
    hold = Crops(D.load_split(instrument, "holdout"), frames, hop, seed).fixed()
    model = DDSP(config)
    opt = torch.optim.Adam(model.parameters(), lr)
    decay = (final_lr / lr) ** (1 / max(1, steps - 1))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, decay)
    curve, holdout, recent, step_times, spent, first, extended_from = [], [], [], [], 0.0, 1, None
    if checkpoint and Path(checkpoint).exists():
        ck = torch.load(checkpoint, weights_only=False)
        longer = extend and ck["steps"] < steps
        if (ck["steps"] != steps and not longer) or ck["instrument"] != instrument:
            raise ValueError(f"{checkpoint}: a checkpoint of {ck['instrument']} for {ck['steps']} steps; "
                             f"asked for {instrument} with {steps} steps (delete it to start over, or extend a "
                             f"shorter run with --extend)")
        extended_from = ck.get("extended_from") or (ck["steps"] if longer else None)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        torch.set_rng_state(ck["torch_rng"])
        train_set.rng.bit_generator.state = ck["crop_rng"]
        curve, holdout, recent, step_times, spent = ck["curve"], ck["holdout"], ck["recent"], ck["step_times"], ck["spent"]
        first = ck["step"] + 1
        log(f"{instrument}: resumed from {checkpoint} at step {ck['step']}")
    else:
        holdout.append((0, round(loss_on(model, hold), 4)))
        log(f"{instrument}: {sum(p.numel() for p in model.parameters()):,} parameters, {len(train_set.items)} "
            f"training melodies, hold-out crops {len(hold[0])}, step 0 hold-out loss {holdout[-1][1]}")
    t_start = time.time()

    def save_checkpoint(step):
        state = {"instrument": instrument, "steps": steps, "extended_from": extended_from, "step": step,
                 "model": model.state_dict(),
                 "opt": opt.state_dict(), "sched": sched.state_dict(), "torch_rng": torch.get_rng_state(),
                 "crop_rng": train_set.rng.bit_generator.state, "curve": curve, "holdout": holdout,
                 "recent": recent, "step_times": step_times, "spent": spent + time.time() - t_start}
        tmp = Path(str(checkpoint) + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, checkpoint)

    for step in range(first, steps + 1):
        t0 = time.time()
        recent.append(train_step(model, opt, train_set.batch(batch)))
        sched.step()
        step_times.append(time.time() - t0)
        if step % 10 == 0 or step == steps:
            curve.append((step, round(float(np.mean(recent)), 4)))
            recent = []
            log(f"step {step}: train loss {curve[-1][1]:.3f} ({np.median(step_times[-10:]):.2f} s/step, "
                f"lr {sched.get_last_lr()[0]:.2e}, {spent + time.time() - t_start:.0f} s)")
        if step % eval_every == 0 or step == steps:
            holdout.append((step, round(loss_on(model, hold), 4)))
            log(f"step {step}: hold-out loss {holdout[-1][1]:.3f}")
        if checkpoint and (step % checkpoint_every == 0 or step == steps):
            save_checkpoint(step)
        if stop_after is not None and step - first + 1 >= stop_after and step < steps:
            if checkpoint:
                save_checkpoint(step)
            log(f"{instrument}: stopped after step {step} of {steps}" + (f"; resume from {checkpoint}" if checkpoint else ""))
            return None, None
    record = {
        "instrument": instrument, "steps": steps, "batch": batch, "crop_seconds": seconds, "lr": lr,
        "final_lr": float(f"{sched.get_last_lr()[0] / sched.gamma:.3g}") if extended_from else final_lr,
        "extended_from": extended_from, "seed": seed, "clip_norm": 3.0, "fft_sizes": list(FFT_SIZES),
        "threads": threads, "torch": torch.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "median_step_seconds": round(float(np.median(step_times)), 3),
        "wall_seconds": round(spent + time.time() - t_start, 1),
        "train_melodies": len(train_set.items), "holdout_crops": len(hold[0]),
        "train_curve": curve, "holdout_curve": holdout,
    }
    return model, record


def train(instrument, steps, out, batch=8, seconds=4.0, lr=1e-3, final_lr=1e-4, seed=0, config=CONFIG,
          eval_every=50, threads=1, checkpoint=None, stop_after=None, extend=False, log=print):
    """Train (fit) and save the weights, the manifest entry and the card; returns the
    training record (also in the weights' metadata), or None when stopped early."""
    model, record = fit(instrument, steps, batch, seconds, lr, final_lr, seed, config, eval_every, threads,
                        checkpoint, stop_after=stop_after, extend=extend, log=log)
    if model is None:
        return None
    out = Path(out)
    save_weights(model, out, record)
    store_calibration(out, D.calibration(D.load_split(instrument, "train")), "the cached training melodies")
    update_manifest(instrument, out, record)
    write_card(instrument, out)
    log(f"wrote {out} ({out.stat().st_size:,} bytes) and {card_path(instrument)}")
    return record


# --------------------------------------------------------------------------- manifest, card


def save_weights(model, path, record):
    """The weights as float16 safetensors, with the Config and the training record
    (JSON under "stemtone_training") in the metadata."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save(model.eval(), str(path), dtype=torch.float16, metadata={"stemtone_training": json.dumps(record)})


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def store_calibration(path, cal, source):
    """Add the input calibration (pycore.train.data.calibration's dict) to a weights file:
    the tensors "calibration.loudness_db" and "calibration.midi" (float32, the quantiles
    pycore.tone.calibration reads) and a "stemtone_calibration" record (JSON) in the
    metadata; the other tensors and metadata are kept as they are."""
    from ..tone import calibration as C
    from ..weights.safetensors import load_metadata, load_numpy, save as save_st

    tensors = dict(load_numpy(str(path)))
    tensors[C.LOUDNESS] = np.asarray(cal["loudness_db"], np.float32)
    tensors[C.MIDI] = np.asarray(cal["midi"], np.float32)
    meta = dict(load_metadata(str(path)))
    meta["stemtone_calibration"] = json.dumps({
        "frames": cal["frames"],
        "probabilities": f"k / {D.CALIBRATION_POINTS - 1}, k = 0 .. {D.CALIBRATION_POINTS - 1}",
        "frames_counted": f"training melodies, score holds a note, loudness above {D.CALIBRATION_FLOOR_DB:g} dB",
        "source": source})
    save_st(str(path), tensors, meta)


def calibrate(instrument, path, melodies=20, seconds=15.0, log=print):
    """Re-render the training melodies (pycore.train.data.calibration_renders) and store
    their calibration in an existing weights file (models trained before the calibration
    existed); the manifest's sha256 and size follow."""
    items = D.calibration_renders(instrument, melodies, seconds, log=log)
    cal = D.calibration(items)
    store_calibration(path, cal, f"re-rendered training melodies ({len(items)} of {melodies}, "
                      f"{sum(len(d['audio']) for d in items) / D.SAMPLE_RATE:.1f} s)")
    manifest_path = WEIGHTS_DIR / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = next(m for m in manifest["models"] if m["name"] == f"ddsp-{instrument}")
    path = Path(path).resolve()
    entry["files"] = [{"path": os.path.relpath(path, WEIGHTS_DIR), "sha256": sha256(path), "size": path.stat().st_size}]
    manifest_path.write_text(set_manifest_entry(manifest_path.read_text(), entry))
    set_calibration_section(instrument, path)
    return cal


def update_manifest(instrument, path, record):
    """Add or replace the model's entry in weights/manifest.json (task "tone"), leaving
    the text of the other entries as it is."""
    path = Path(path).resolve()
    manifest_path = WEIGHTS_DIR / "manifest.json"
    name = f"ddsp-{instrument}"
    entry = {
        "name": name, "title": f"DDSP {instrument} (tone transfer)", "task": "tone", "instrument": instrument,
        "midi_range": [D.INSTRUMENTS[instrument].low, D.INSTRUMENTS[instrument].high],   # trained pitch range
        "loudness_db": D.voiced_loudness_median(instrument),     # trained loudness (voiced median)
        "sample_rate": CONFIG.sample_rate, "params": record["parameters"],
        "files": [{"path": os.path.relpath(path, WEIGHTS_DIR), "sha256": sha256(path), "size": path.stat().st_size}],
        "source": "trained by this project: pycore.train.train_ddsp",
        "data": "melodies rendered by pycore.train.data with fluidsynth and FluidR3_GM.sf2",
        "license": "MIT", "data_license": DATA_LICENSE, "card": f"cards/{name}.md",
    }
    manifest_path.write_text(set_manifest_entry(manifest_path.read_text(), entry))


def set_manifest_entry(text, entry) -> str:
    """The manifest's text with `entry` replacing the model of the same name, or appended
    to "models"; the other entries' text untouched."""
    manifest = json.loads(text)
    decoder = json.JSONDecoder()
    i = text.index("[", text.index('"models"')) + 1
    spans = []                                             # (start, end, name) of each entry
    while True:
        while text[i] in " \t\r\n,":
            i += 1
        if text[i] == "]":
            break
        obj, end = decoder.raw_decode(text, i)
        spans.append((i, end, obj["name"]))
        i = end
    body = _json(entry).replace("\n", "\n    ")
    for start, end, name in spans:
        if name == entry["name"]:
            return text[:start] + body + text[end:]
    if not spans:
        raise ValueError("the manifest lists no models")
    last_end = spans[-1][1]
    out = text[:last_end] + ",\n    " + body + text[last_end:]
    assert len(json.loads(out)["models"]) == len(manifest["models"]) + 1
    return out


def _json(obj) -> str:
    """JSON indented by 2 with lists of plain values on one line (the manifest's style)."""
    text = json.dumps(obj, indent=2)
    return re.sub(r"\[\s*([^\[\]{}]*?)\s*\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)


def card_path(instrument) -> Path:
    return CARDS_DIR / f"ddsp-{instrument}.md"


CALIBRATION_SECTION = "## Input calibration"
CALIBRATION_FIGURES = "calibration.json"     # in weights/cards: evaluate.follow_singing's rows, per instrument


def calibration_section(instrument, weights) -> list:
    """The card's lines on the model's input calibration: its stored quantiles and, when
    evaluate.py has measured them (weights/cards/calibration.json), the following figures
    on real singing with and without it."""
    from ..tone import calibration as C
    from ..weights.safetensors import load_metadata, load_numpy

    tensors, meta = load_numpy(str(weights)), load_metadata(str(weights))
    if C.LOUDNESS not in tensors:
        return []
    rec = json.loads(meta["stemtone_calibration"])
    ks = (0, 4, 8, 16, 24, 28, 32)
    out = [CALIBRATION_SECTION, "",
           "The tone engine maps a singer's loudness onto this model's training distribution by quantiles, "
           "causally (`pycore.tone.calibration`, kernels/tone_controls.wgsl): the distribution is stored in the "
           f"weights as `{C.LOUDNESS}` and `{C.MIDI}` (float32 [33], probabilities {rec['probabilities']}), "
           f"computed by `pycore.train.data.calibration` over {rec['frames']:,} frames ({rec['frames_counted']}; "
           f"{rec['source']}: `python -m pycore.train.train_ddsp --instrument {instrument} --calibrate-only`; "
           "training stores it itself). The engine maps the loudness by the loudness quantiles, and moves the singer's "
           "register by whole octaves into the pitch quantiles' central band, 4/32 .. 28/32 (the register shift: the "
           "smallest R that puts the singer's running mean pitch + 12 R inside it, chosen at note starts only, with a "
           "semitone of hysteresis, before the octave fold into the MIDI range).", "",
           _table([["loudness (dB)", *[f"{tensors[C.LOUDNESS][k]:.1f}" for k in ks]],
                   ["pitch of the score (MIDI)", *[f"{tensors[C.MIDI][k]:.1f}" for k in ks]]],
                  ["quantile", *[f"{k}/32" for k in ks]]), ""]
    path = CARDS_DIR / CALIBRATION_FIGURES
    rows = json.loads(path.read_text()).get(instrument) if path.exists() else None
    if rows:
        out += ["On real singing (whole Vocadito clips, CC BY 4.0, through `stemtone tone`'s engine, octave 0), "
                "without the calibration (the running-mean shift, the octave fold alone), with its loudness map "
                "(register: no) and with its register shift too (register: yes). Pitch: median |cents| between the "
                "output's CREPE f0 and the input's, the output taken 3 frames (12 ms) later, the engine's known "
                "pitch lag, and to the nearest octave (the engine folds octaves into the model's range); in "
                "brackets without that alignment. Loudness: correlation of the input's and output's loudness "
                "tracks. KS: Kolmogorov-Smirnov distance between the decoder's loudness on voiced frames and the "
                "training distribution above. Timbre: share of 1 s windows the timbre check reads as "
                f"{instrument}. Octave breaks: share of the frame-to-frame steps inside the engine's notes (voiced "
                "frames less than the hold apart) where its octave choice (the played f0 over the input's, 3 "
                "frames later) changes (the contour broken mid-note; `evaluate.octave_breaks`), and the share "
                "of voiced frames at each octave choice; the singer's "
                "median pitch (MIDI) is given with the clip.", "",
                _table([[f"{r['clip']} ({r['singer_midi']})" if "singer_midi" in r else r["clip"],
                         "yes" if r["calibrated"] else "no", "yes" if r.get("register") else "no",
                         f"{r['pitch_cents']} ({r['pitch_cents_unaligned']})", r["loudness_corr"], r["ks"],
                         r["decoder_loudness_p5_p50_p95"], r["timbre_share"],
                         f"{r['octave_breaks']} {_octaves(r['octaves'])}" if "octaves" in r else "not measured"]
                        for r in rows],
                       ["singing", "calibrated", "register", "pitch (cents)", "loudness correlation", "KS",
                        "decoder loudness p5 / p50 / p95 (dB)", "timbre share", "octave breaks (octaves)"]), "",
                f"Reproduce: `python -m pycore.train.evaluate {instrument} --singing`.", ""]
    return out


def set_calibration_section(instrument, weights=None):
    """Rewrite the card's calibration section (inserted before the timbre check or
    "## Reproduce") and its file line (size, sha256) for the weights as they are now."""
    weights = Path(weights or WEIGHTS_DIR / f"ddsp-{instrument}.safetensors").resolve()
    text = card_path(instrument).read_text()
    text = re.sub(r"\(([\d,]+) bytes, float16[^)]*\), sha256 `[0-9a-f]{64}`",
                  f"({weights.stat().st_size:,} bytes, float16; the calibration float32), sha256 `{sha256(weights)}`",
                  text, count=1)
    body = "\n".join(calibration_section(instrument, weights))
    if CALIBRATION_SECTION in text:
        a = text.index(CALIBRATION_SECTION)
        b = text.find("\n## ", a + len(CALIBRATION_SECTION))
        text = text[:a] + body + ("\n" + text[b + 1:] if b >= 0 else "")
    elif body:
        at = [i for i in (text.find(timbre.SECTION), text.find("## Reproduce")) if i >= 0]
        text = text + "\n" + body if not at else text[:min(at)] + body + "\n" + text[min(at):]
    card_path(instrument).write_text(text)


def _octaves(shares) -> str:
    """{"+1": 0.9, "+2": 0.1} as "(+1: 0.9, +2: 0.1)"."""
    return "(" + ", ".join(f"{k}: {v}" for k, v in shares.items()) + ")"


def _table(rows, header):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(v) for v in r) + " |" for r in rows])


def _parts(row, name):
    """"total (linear + log)" of one loss in evaluate.py's rows."""
    if f"{name}_lin" not in row:
        return row[name]
    return f"{row[name]} ({row[name + '_lin']} + {row[name + '_log']})"


def train_commands(instrument, rec, cfg, name) -> list:
    """The training command lines that made a model with record `rec`: one run, or (an
    extended model) the shorter run and its --extend through the same checkpoint."""
    base = (f"python -m pycore.train.train_ddsp --instrument {instrument} --batch {rec['batch']} --seed {rec['seed']}"
            + "".join(f" --{k} {cfg[k]}" for k in ("gru", "ch") if cfg.get(k, getattr(CONFIG, k)) != getattr(CONFIG, k))
            + f" --out weights/{name}.safetensors")
    if not rec.get("extended_from"):
        return [f"{base} --steps {rec['steps']}"]
    ck = f"--checkpoint {instrument}.ckpt"
    return [f"{base} --steps {rec['extended_from']} {ck}", f"{base} --steps {rec['steps']} {ck} --extend"]


def write_card(instrument, weights, evaluation=None):
    """weights/cards/ddsp-<instrument>.md from the weights' metadata, the data summary
    and (optionally) evaluate.py's hold-out figures."""
    from ..weights.safetensors import load_metadata

    weights = Path(weights).resolve()
    meta = load_metadata(str(weights))
    rec = json.loads(meta["stemtone_training"])
    cfg = json.loads(meta["ddsp_config"])
    summary_path = D.cache_dir(instrument, "summary.json")
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    inst = D.INSTRUMENTS[instrument]
    name = f"ddsp-{instrument}"
    out = [f"# {name}: DDSP {instrument} for tone transfer", "",
           f"File `weights/{os.path.relpath(weights, WEIGHTS_DIR)}` ({Path(weights).stat().st_size:,} bytes, "
           f"float16; the calibration float32), sha256 `{sha256(weights)}`; {rec['parameters']:,} parameters. Trained by this project "
           "(`pycore.train.train_ddsp`); loaded by `pycore.models.ddsp.load`, which reads the configuration "
           "below from the file's metadata.", "",
           "Configuration: " + ", ".join(f"{k} {v}" for k, v in sorted(cfg.items())) + ".", "",
           "## Data", "",
           f"Melodies generated by `pycore.train.data` (random walks over MIDI notes {inst.low}..{inst.high}, "
           "varied tempo and note lengths, legato / detached / staccato phrases, velocity and expression "
           f"dynamics{', vibrato by pitch bend' if inst.vibrato else ''}"
           + (f"; melodies {D.SUNG_FROM} and up phrased as sung (`sung_melody`: notes scooped into from the "
              "previous one, soft onsets and swells, a voice's dynamics range"
              + (" and vibrato" if inst.vibrato else "") + ")"
              if summary and summary["train"]["melodies"] + summary["holdout"]["melodies"] > D.SUNG_FROM else "")
           + "), GM program(s) "
           f"{', '.join(map(str, inst.programs))}, rendered at 16 kHz mono by fluidsynth with FluidR3_GM.sf2 "
           "(reverb and chorus off). Features: CREPE-tiny f0 and A-weighted loudness, 250 frames per second, "
           "computed by `pycore.tone.features` on the GPU path. Melodies with index 9 mod 10 are held out.", ""]
    if summary:
        keys = list(summary["train"])
        out += [_table([[k, summary["train"][k], summary["holdout"][k]] for k in keys], ["", "train", "hold-out"]), ""]
    stems_path = D.cache_dir("guitar_stems.json")
    if instrument == "guitar" and stems_path.exists():
        stems = json.loads(stems_path.read_text())
        rows = [[k, *v.values()] for k, v in stems["stems"].items()]
        if "soundfont_guitar" in stems:
            rows.append(["soundfont renders (training data)", *stems["soundfont_guitar"].values()])
        out += ["Why not the real guitar stems: the isolated lead guitar of `fretsonfire-songs-muldjord` "
                f"(`python -m pycore.train.data --guitar-stems`, {stems['offset_seconds']:g} s into each song) is "
                "distorted and largely polyphonic (power chords): CREPE is confident on a few percent of its "
                "frames, and its spectra are hundreds of times flatter than the soundfont guitars' (noise-like "
                "distortion between the partials), so it gives no usable monophonic f0 to train on. The soundfont's sustaining electric "
                "guitars, the closest to that lead guitar (GM 29 overdriven, 30 distortion, played as single-note "
                "lines), are used instead. (A first model on the plucked GM 24/25/27 guitars decayed under a "
                "singer's sustained notes: its output followed sung loudness at 0.85 correlation.)", "",
                _table(rows, ["", "seconds", "non-silent fraction", "confidence > 0.7 (non-silent)",
                              "median confidence", "median spectral flatness"]), ""]
    out += ["Data license: " + DATA_LICENSE + ".", "",
            "## Training", "",
            f"{rec['steps']} steps of Adam (lr {rec['lr']} decaying exponentially to {rec['final_lr']}"
            + (f", a {rec['extended_from']}-step run continued on the same decay" if rec.get("extended_from") else "")
            + f", gradient "
            f"norm clipped at {rec['clip_norm']}), batches of {rec['batch']} random {rec['crop_seconds']} s crops, "
            f"multi-scale spectral loss (FFT sizes {', '.join(map(str, rec['fft_sizes']))}; L1 of magnitudes + L1 "
            f"of log magnitudes), seed {rec['seed']}, torch {rec['torch']} on CPU ({rec['threads']} "
            f"thread{'s' if rec['threads'] > 1 else ''}): "
            f"{rec['median_step_seconds']} s per step (median), {rec['wall_seconds'] / 60:.1f} min in all.", "",
            "Loss (training: mean over 10 steps; hold-out: fixed crops, torch synthesizer):", ""]
    curve = dict(rec["train_curve"])
    tc = rec["train_curve"]
    marks = sorted({s for s, _ in rec["holdout_curve"]} | {s for s, _ in tc[::max(1, len(tc) // 10)]} | {rec["steps"]})
    out += [_table([[s, curve.get(s, ""), dict(rec["holdout_curve"]).get(s, "")] for s in marks],
                   ["step", "train", "hold-out"]), ""]
    out += ["## Hold-out evaluation (GPU path)", ""]
    if evaluation:
        out += [evaluation["description"], "",
                _table([[r["melody"], r["seconds"]] + [_parts(r, k) for k in ("model", "sine", "silence")]
                        + [r.get("f0_cents_median", ""), r.get("loudness_corr", ""), r.get("timbre_model", ""),
                           r.get("timbre_original", "")]
                        for r in evaluation["rows"] + [{"melody": "mean", "seconds": "", **evaluation}]],
                       ["melody", "seconds", "model", "sine baseline", "silence", "output f0 error (median cents)",
                        "output loudness correlation", "timbre share, model", "timbre share, original"]), "",
                f"Model / sine baseline = {evaluation['ratio']}.", ""]
    else:
        out += ["Not evaluated yet: `python -m pycore.train.evaluate " + instrument + "`.", ""]
    out += calibration_section(instrument, weights)
    out += ["## Reproduce", "", "```",
            "apt-get install -y fluidsynth fluid-soundfont-gm",
            f"python -m pycore.train.data {instrument}"
            + (f" --melodies {summary['train']['melodies'] + summary['holdout']['melodies']}" if summary else ""),
            *train_commands(instrument, rec, cfg, name),
            f"python -m pycore.train.evaluate {instrument}", "```", "",
            "## Limits", "",
            "Trained briefly on CPU on synthesized (sampled) instrument audio: the timbre is the soundfont's, "
            "and inputs far outside the training range of pitch and loudness are extrapolated.", ""]
    CARDS_DIR.mkdir(parents=True, exist_ok=True)
    text = "\n".join(out)
    figures = CARDS_DIR / timbre.FIGURES
    if figures.exists() and instrument in json.loads(figures.read_text()):   # keep the timbre section
        text = timbre.set_section(text, timbre.card_section(instrument, json.loads(figures.read_text()),
                                                            load_check().info))
    card_path(instrument).write_text(text)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m pycore.train.train_ddsp", description=__doc__.split("\n\n")[0])
    p.add_argument("--instrument", required=True, choices=sorted(D.INSTRUMENTS))
    p.add_argument("--steps", type=int, help="training steps (required unless --calibrate-only)")
    p.add_argument("--calibrate-only", action="store_true",
                   help="no training: re-render the training melodies and store the input calibration in --out")
    p.add_argument("--out", help="weights file (default weights/ddsp-<instrument>.safetensors)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=4.0, help="crop length (default 4 s)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--final-lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a busy shared CPU, threads waiting for each other cost more "
                   "than they save)")
    p.add_argument("--gru", type=int, default=CONFIG.gru, help=f"GRU width (default {CONFIG.gru})")
    p.add_argument("--ch", type=int, default=CONFIG.ch, help=f"MLP width (default {CONFIG.ch})")
    p.add_argument("--checkpoint", help="resume from / save to this file (torch.save) every 50 steps")
    p.add_argument("--stop-after", type=int, help="run at most this many steps now, then checkpoint and stop")
    p.add_argument("--extend", action="store_true",
                   help="--checkpoint holds a shorter run: go on from it to --steps on the same learning-rate decay")
    a = p.parse_args(argv)
    if a.stop_after is not None and not a.checkpoint:
        p.error("--stop-after needs --checkpoint (where the next run resumes from)")
    out = a.out or str(WEIGHTS_DIR / f"ddsp-{a.instrument}.safetensors")
    if a.calibrate_only:
        cal = calibrate(a.instrument, out)
        print(f"{out}: calibration from {cal['frames']} frames, loudness quantiles "
              f"{', '.join(f'{v:.1f}' for v in cal['loudness_db'][::8])} dB (p = 0, 1/4, .., 1)")
        return
    if a.steps is None:
        p.error("--steps is required")
    config = dataclasses.replace(CONFIG, gru=a.gru, ch=a.ch)
    train(a.instrument, a.steps, out, a.batch, a.seconds, a.lr, a.final_lr, a.seed, config, eval_every=a.eval_every,
          threads=a.threads, checkpoint=a.checkpoint, stop_after=a.stop_after, extend=a.extend)


if __name__ == "__main__":
    main()
