"""Hold-out evaluation of trained DDSP instrument models on the GPU path.

    python -m pycore.train.evaluate violin [flute ...] [--weights PATH] [--no-card]

For each hold-out melody of the instrument (pycore.train.data: index 9 mod 10), from
its cached CREPE f0 and loudness, three renderings are compared with the original audio
by the multi-scale spectral loss of training (`spectral_loss`, numpy float64, the same
formula as train_ddsp.spectral_loss):

    model    the product's path: pycore.models.ddsp.load(dev, weights) -> Decoder ->
             Synth on the GPU device (lavapipe here), the whole melody in one call each.
             The streaming synthesizer lags ddsp by one hop, so one more frame (the last
             repeated) is rendered and the first hop of samples dropped.
    sine     a plain sine oscillator: f0 interpolated linearly between frames, phase =
             cumulative sum of f0 / sr, amplitude from the loudness: the amplitude whose
             pure tone at that f0 has the frame's A-weighted loudness,
             a = 10^((L - L1(f0)) / 20), L1(f) the loudness of a unit sine at f (see
             `unit_sine_loudness`), interpolated linearly between frames.
    silence  zeros: the loss of saying nothing, for scale.

Also, whether the model's output follows its controls: the median distance in cents
between the CREPE f0 of the output and of the original on confidently voiced frames
(confidence > 0.7, loudness > -50 dB), and the correlation of the two loudness tracks.

The model must beat the sine baseline clearly. Results go to the model card
(train_ddsp.write_card). Native only (numpy, a GPU device).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from . import data as D

FFT_SIZES = (2048, 1024, 512, 256, 128, 64)
SAMPLE_RATE, HOP, LOUDNESS_N_FFT = 16000, 64, 512
WEIGHTS_DIR = Path(__file__).resolve().parent.parent.parent / "weights"


# --------------------------------------------------------------------------- loss


def magnitudes(x, n_fft, overlap=0.75):
    """|STFT| [frames, n_fft / 2 + 1] with tf.signal.stft(pad_end=True)'s framing."""
    hop = int(n_fft * (1 - overlap))
    x = np.asarray(x, np.float64)
    frames = -(-len(x) // hop)
    x = np.pad(x, (0, (frames - 1) * hop + n_fft - len(x)))
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    return np.abs(np.fft.rfft(x[idx] * window, axis=1))


def spectral_loss_parts(audio, target, fft_sizes=FFT_SIZES, eps=1e-5):
    """(linear, log) terms of the multi-scale spectral loss of one signal: sums over the
    sizes of mean |S - T| and of mean |log max(S, eps) - log max(T, eps)|."""
    lin = log = 0.0
    for n in fft_sizes:
        s, t = magnitudes(audio, n), magnitudes(target, n)
        lin += np.mean(np.abs(s - t))
        log += np.mean(np.abs(np.log(np.maximum(s, eps)) - np.log(np.maximum(t, eps))))
    return float(lin), float(log)


def spectral_loss(audio, target, fft_sizes=FFT_SIZES, eps=1e-5):
    """The multi-scale spectral loss of one signal (train_ddsp.spectral_loss in numpy)."""
    return sum(spectral_loss_parts(audio, target, fft_sizes, eps))


# --------------------------------------------------------------------------- sine baseline


def unit_sine_loudness(freqs, sample_rate=SAMPLE_RATE, n_fft=LOUDNESS_N_FFT):
    """L1(f) in dB: the loudness (pycore.ops.loudness / ddsp compute_loudness: periodic
    Hann window of n_fft, mean over the rfft bins of the A-weighted power |X|^2) of a
    sine of amplitude 1 at each frequency, averaged over 16 starting phases."""
    from ..ops.loudness import a_weights

    f = np.asarray(freqs, np.float64)
    t = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * t / n_fft)
    phases = 2 * np.pi * np.arange(16) / 16
    x = np.sin(2 * np.pi * f[:, None, None] * t / sample_rate + phases[None, :, None]) * window
    power = np.abs(np.fft.rfft(x, axis=-1)) ** 2 * np.asarray(a_weights(n_fft, sample_rate))
    return 10 * np.log10(power.mean(axis=-1).mean(axis=-1))


_GRID = np.geomspace(20.0, 7900.0, 600)
_GRID_DB = None


def sine_amplitude(f0_hz, loudness_db):
    """Per-frame amplitude of a sine at f0 whose loudness is loudness_db."""
    global _GRID_DB
    if _GRID_DB is None:
        _GRID_DB = unit_sine_loudness(_GRID)
    f = np.clip(np.asarray(f0_hz, np.float64), _GRID[0], _GRID[-1])
    l1 = np.interp(np.log(f), np.log(_GRID), _GRID_DB)
    return 10 ** ((np.asarray(loudness_db, np.float64) - l1) / 20)


def sine_baseline(f0_hz, loudness_db, hop=HOP, sample_rate=SAMPLE_RATE):
    """A sine oscillator driven by f0 and loudness frames: [F * hop] samples, frame f at
    sample f * hop, f0 and amplitude interpolated linearly towards frame f + 1."""
    f0 = np.asarray(f0_hz, np.float64)
    amp = sine_amplitude(f0, loudness_db)
    t = np.arange(len(f0) * hop) / hop
    frames = np.arange(len(f0))
    f0n, ampn = np.interp(t, frames, f0), np.interp(t, frames, amp)
    phase = np.cumsum(f0n / sample_rate) % 1.0
    return ampn * np.sin(2 * np.pi * phase)


# --------------------------------------------------------------------------- the model on the GPU


def resynthesize(dev, model, f0_hz, loudness_db):
    """The GPU path's audio for f0 and loudness frames [F]: [F * hop] samples aligned
    with the frames (the synthesizer's one hop of latency removed). model: (config,
    decoder, synth) from pycore.models.ddsp.load."""
    config, decoder, synth = model
    f0 = np.append(np.asarray(f0_hz, np.float32), np.float32(f0_hz[-1]))
    ld = np.append(np.asarray(loudness_db, np.float32), np.float32(loudness_db[-1]))
    controls, _ = decoder(dev.tensor(f0), dev.tensor(ld))
    audio, _ = synth.render(controls)
    return audio.numpy().astype(np.float64)[config.latency:]


def evaluate(instrument, weights=None, dev=None, log=print) -> dict:
    """Hold-out losses of the model, the sine baseline and silence, per melody and mean."""
    from ..gpu.native import get_device
    from ..models.ddsp import load
    from ..tone.timbre import load_check

    dev = dev or get_device()
    weights = weights or str(WEIGHTS_DIR / f"ddsp-{instrument}.safetensors")
    model, check = load(dev, weights), load_check()
    rows = []
    paths = sorted(D.cache_dir(instrument).glob("m[0-9][0-9][0-9].npz"))
    for p in paths:
        if not D.is_holdout(int(p.stem[1:])):
            continue
        with np.load(p) as z:
            audio, f0, ld, z_conf = z["audio"].astype(np.float64), z["f0_hz"], z["loudness_db"], z["confidence"]
        n = len(audio)
        y = resynthesize(dev, model, f0, ld)[:n]
        sine = sine_baseline(f0, ld)[:n]
        row = {"melody": p.stem, "seconds": round(n / SAMPLE_RATE, 1)}
        for name, x in (("model", y), ("sine", sine), ("silence", np.zeros(n))):
            lin, logmag = spectral_loss_parts(x, audio)
            row.update({name: round(lin + logmag, 3), f"{name}_lin": round(lin, 3), f"{name}_log": round(logmag, 3)})
        # does the resynthesis follow its controls? CREPE and loudness of the output
        # against the input features, on confidently voiced, non-silent frames
        f0_out, _, ld_out = D.compute_features(dev, y.astype(np.float32))
        voiced = (z_conf > 0.7) & (ld > -50)
        row["f0_cents_median"] = round(float(np.median(1200 * np.abs(np.log2(f0_out[voiced] / f0[voiced])))), 1)
        row["loudness_corr"] = round(float(np.corrcoef(ld_out, ld)[0, 1]), 3)
        # does it sound like the instrument where its controls are in distribution? The
        # timbre check on the resynthesis and, for scale, on the original render
        row["timbre_model"] = check.identify(y.astype(np.float32), instrument)["share"]
        row["timbre_original"] = check.identify(audio.astype(np.float32), instrument)["share"]
        rows.append(row)
        log(instrument, rows[-1])
    if not rows:
        raise FileNotFoundError(f"no hold-out melodies in {D.cache_dir(instrument)}")
    mean = {k: round(float(np.mean([r[k] for r in rows])), 3) for k in rows[0] if k not in ("melody", "seconds")}
    return {"instrument": instrument, "weights": str(weights), "rows": rows, **mean,
            "ratio": round(mean["model"] / mean["sine"], 3), "device": dev.describe(),
            "description": (f"{len(rows)} hold-out melodies ({sum(r['seconds'] for r in rows):.0f} s), multi-scale "
                            "spectral loss against the original (lower is better; in brackets its linear "
                            "and log-magnitude terms): the model through "
                            "pycore.models.ddsp on the GPU device (" + dev.describe() + "), a sine oscillator "
                            "driven by the same CREPE f0 and loudness, and silence. Last two columns: does the "
                            "model's output follow its controls (CREPE f0 of the output against the input's on "
                            "confidently voiced frames; correlation of the loudness tracks)? Timbre: share of the "
                            "1 s windows the timbre check (pycore.tone.timbre) reads as the instrument, for the "
                            "model's resynthesis and for the original render: the model's identity where its "
                            "controls are in distribution.")}


# --------------------------------------------------------------------------- real singing

def follow_singing(dev, instrument, clip, calibrated=True, register=True, check=None, log=print) -> dict:
    """How the tone engine follows real singing (a whole Vocadito clip through ToneStream,
    as `stemtone tone` renders it: one push and a flush, octave 0, trim 0, the output
    lined up with the input), with the model's input calibration or without it (the
    running-mean shift, and no register shift), and with the calibration's register
    shift or without it (register=False: the octave fold alone, the engine before it):

      pitch_cents        median |cents| between the output's CREPE f0 at frame t + 3 and
                         the input's at frame t (the engine plays the pitch PITCH_LAG = 3
                         frames, 12 ms, late), to the nearest octave (the engine folds by
                         octaves into the model's range), over the input's voiced frames
                         (confidence > 0.5, loudness > -50 dB); pitch_cents_unaligned: the
                         same at frame t (tests/test_tone.py's alignment)
      loudness_corr      correlation of the input's and output's loudness tracks, all
                         frames (as tests/test_tone.py)
      ks                 Kolmogorov-Smirnov distance between the decoder's loudness on the
                         voiced frames (the engine's control rules through their float64
                         reference, pycore.ops.tone_controls.reference, on the input's
                         per-frame CREPE features) and the instrument's training
                         distribution (its calibration quantiles): 0 when the singer's
                         loudness lands where the model was trained
      timbre_share       share of the output's 1 s windows the timbre check
                         (pycore.tone.timbre) labels as the instrument
      octave_breaks      the contour figure: over the engine's notes (runs of voiced
                         frames, confidence >= 0.5, with fewer than HOLD_FRAMES unvoiced
                         frames between them: what the engine treats as one note), the
                         share of steps from one voiced frame to the next where the
                         engine's octave choice (decoder f0 over input f0, in whole
                         octaves: the register shift and the fold together) changes:
                         the melody's contour broken mid-note. The decisions are the
                         engine's own (ToneStream's played_f0_hz at frame t + PITCH_LAG
                         against the input's CREPE f0 at frame t): the float64 reference
                         on the input's offline features, which ks uses, can choose
                         another octave at a note start (its features differ a little
                         from the stream's); octave_breaks_count the number of such steps
      octaves            share of the voiced frames at each octave choice (e.g. {"+1": 0.9})
      singer_midi        median MIDI of the input's voiced frames (confidence > 0.5,
                         loudness > -50 dB); inst_midi the model's training pitch median
    """
    import asyncio

    from ..audio.testdata import vocadito
    from ..ops import tone_controls as T
    from ..tone import ToneStream, load_tone_model
    from ..tone.calibration import pitch_median
    from ..tone.features import features
    from ..tone.stream import PITCH_LAG
    from ..tone.timbre import load_check

    x = vocadito(clip)
    fi, ci, li = asyncio.run(features(dev, x))
    voiced = (ci > 0.5) & (li > -50)
    model = load_tone_model(dev, instrument)
    q = np.asarray(model.calibration["loudness_db"], np.float64)
    inst_midi = pitch_median(model.calibration)
    if not calibrated:
        model.calibration = None

    async def render():
        s = ToneStream(model)
        if not register:                        # the loudness calibration without the register shift
            s.rules = dataclasses.replace(s.rules, pitch_band=None)
        parts = [await s.push(x), await s.flush()]
        y = np.concatenate([np.frombuffer(p["audio"], np.float32) for p in parts])
        played = np.concatenate([np.asarray(p["played_f0_hz"], np.float64) for p in parts])
        return y[s.delay_samples:s.delay_samples + len(x)], s.rules, played

    y, rules, played = asyncio.run(render())
    fo, _, lo = asyncio.run(features(dev, y))

    def cents(out, inp):
        c = 1200 * np.log2(out / inp)
        return round(float(np.median(np.abs(c - 1200 * np.round(c / 1200)))), 1)

    n = len(fi) - PITCH_LAG
    F = len(li)
    _, dec = T.reference(np.stack([fi, ci], 1).reshape(-1).tolist(), li.tolist(), [0.0] * (F * rules.hop),
                         [-80.0] * F, [1.0, 0.0, -1.0], T.reference_state(rules), rules)[:2]
    d = np.sort(np.asarray(dec)[voiced])
    m = min(len(fi), len(played) - PITCH_LAG)
    breaks, steps, octaves = octave_breaks(fi[:m], ci[:m], played[PITCH_LAG:PITCH_LAG + m], rules)
    ks = np.max(np.abs(np.arange(1, len(d) + 1) / len(d) - np.interp(d, q, np.linspace(0, 1, len(q)))))
    row = {"clip": f"vocadito_{clip}", "calibrated": calibrated,
           "pitch_cents": cents(fo[PITCH_LAG:][voiced[:n]], fi[:n][voiced[:n]]),
           "pitch_cents_unaligned": cents(fo[voiced], fi[voiced]),
           "loudness_corr": round(float(np.corrcoef(li, lo)[0, 1]), 3), "ks": round(float(ks), 3),
           "decoder_loudness_p5_p50_p95": [round(float(v), 1) for v in np.percentile(d, [5, 50, 95])],
           "timbre_share": (check or load_check()).identify(y, instrument)["share"],
           "register": bool(rules.has_reg), "octave_breaks": round(breaks / max(steps, 1), 4),
           "octave_breaks_count": breaks, "octaves": octaves,
           "singer_midi": round(float(np.median(69 + 12 * np.log2(fi[voiced] / 440))), 1),
           "inst_midi": round(inst_midi, 1)}
    log(instrument, row)
    return row


def octave_breaks(f0_in, conf, dec_f0, rules) -> tuple:
    """(steps where the octave choice changes inside a note, steps inside notes, share
    of voiced frames per octave choice) of follow_singing's octave_breaks: frames are
    voiced as the engine voices them (confidence >= rules.voiced, f0 > 0), two voiced
    frames are in one note when fewer than rules.hold_frames unvoiced frames lie between
    them; the octave choice of a voiced frame is round(log2(decoder f0 / input f0))."""
    voiced = np.flatnonzero((np.asarray(conf) >= rules.voiced) & (np.asarray(f0_in) > 0))
    k = np.round(np.log2(np.asarray(dec_f0, np.float64)[voiced] / np.asarray(f0_in, np.float64)[voiced])).astype(int)
    same_note = np.diff(voiced) - 1 < rules.hold_frames
    changed = k[1:] != k[:-1]
    values, counts = np.unique(k, return_counts=True)
    share = {f"{v:+d}": round(float(c) / len(k), 3) for v, c in zip(values, counts)}
    return int(np.sum(changed & same_note)), int(np.sum(same_note)), share


VARIANTS = {"none": (False, False), "calibrated": (True, False), "register": (True, True)}


def main(argv=None):
    from .train_ddsp import CALIBRATION_FIGURES, write_card

    p = argparse.ArgumentParser(prog="python -m pycore.train.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("instruments", nargs="+")
    p.add_argument("--weights", help="weights file (one instrument; default weights/ddsp-<instrument>.safetensors)")
    p.add_argument("--no-card", action="store_true", help="do not rewrite the model card")
    p.add_argument("--singing", action="store_true",
                   help="instead: follow_singing on the Vocadito clips, without the input calibration, with its "
                   "loudness map only, and with its register shift too; figures to weights/cards/"
                   f"{CALIBRATION_FIGURES} (rows of other variants kept) and the cards' calibration sections")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"with --singing: which of {', '.join(VARIANTS)} (default all)")
    a = p.parse_args(argv)
    for name in a.instruments:
        if name not in D.INSTRUMENTS:
            p.error(f"unknown instrument {name!r}; one of {', '.join(D.INSTRUMENTS)}")
    if a.singing:
        from ..audio.testdata import SINGING_CLIPS
        from ..gpu.native import get_device
        from .train_ddsp import CARDS_DIR, set_calibration_section

        variants = a.variants.split(",")
        for v in variants:
            if v not in VARIANTS:
                p.error(f"unknown variant {v!r}; one of {', '.join(VARIANTS)}")
        dev, path = get_device(), CARDS_DIR / CALIBRATION_FIGURES
        figures = json.loads(path.read_text()) if path.exists() else {}
        for name in a.instruments:
            new = [follow_singing(dev, name, clip, *VARIANTS[v]) for clip in SINGING_CLIPS for v in variants]
            key = lambda r: (r["clip"], r["calibrated"], r.get("register", False))   # noqa: E731
            done = {key(r) for r in new}
            rows = [r for r in figures.get(name, []) if key(r) not in done] + new
            figures[name] = sorted(rows, key=lambda r: (r["clip"], r["calibrated"], r.get("register", False)))
            path.write_text(json.dumps(figures, indent=1) + "\n")
            if not a.no_card:
                set_calibration_section(name)
        return
    for name in a.instruments:
        result = evaluate(name, a.weights if len(a.instruments) == 1 else None)
        print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
        if not a.no_card:
            write_card(name, Path(result["weights"]), result)


if __name__ == "__main__":
    main()
