"""The timbre check: which instrument does a piece of audio sound like? Native (numpy).

Tone transfer's following figures (pitch error, loudness correlation) hold by
construction, whatever the weights; this measure asks whether a trumpet model's output
sounds like a trumpet. It is a small network over level-independent spectral-envelope
features, fitted by pycore.train.timbre on renders the instrument models were never
trained on (other General MIDI soundfonts and related programs, and melodies of the
training soundfont that its data set does not contain), with an "other" class of other
GM programs (piano, organ, voices, reeds, ...) and a "synthetic" class of bare
oscillators on voice-like contours. Its parameters and its ceiling (accuracy on
held-out renders) are stored in weights/timbre-check.safetensors.

    check = load_check()                         # weights/timbre-check.safetensors
    labels = check.classify(audio_16k)           # one label per 1 s window of sound
    result = check.identify(audio_16k, "trumpet")  # {"share": ..., "identified": ...}

Features, per 1 s window (hop 0.5 s) at 16 kHz:
  - frames of 1024 samples, hop 256, Hann; power spectrum into 40 mel bands
    (60 Hz .. 7.6 kHz); log; a DCT gives cepstral coefficients c1..c19 (c0, the level,
    is dropped, so the features do not depend on loudness);
  - frames that sound: within 30 dB of the window's loudest frame and above -60 dBFS;
    a window counts when at least 60 % of its frames sound;
  - per window: mean and standard deviation of c1..c19 over its sounding frames, the
    mean frame-to-frame change of c1..c10 (how fast the envelope moves), mean and
    standard deviation of the log spectral flatness (noisiness), standard deviation of
    the frame level in dB / 10 (a plucked note decays, a bowed one swells).

Decision: a small network (one hidden layer of ReLUs, softmax over the classes) on the
standardized features picks the label; the classes are the five instruments, "other"
(other GM programs) and "synthetic" (bare oscillators, sine to sawtooth, with and
without noise, driven by voice-like f0 and loudness contours: what a control sounds
like; and the DDSP synthesizer with an untrained decoder on the same contours: what a
model that learned nothing sounds like). A window labelled as an instrument is then
verified (open set): it must also lie inside that instrument's own distribution, its
Mahalanobis distance to the class centroid (the class's own covariance, shrunk) within
the class radius, a quantile of the class's fitting windows; otherwise it is labelled
"none". An instrument is identified on a recording when it wins at least half of the
windows (`MAJORITY`); "none", "other" and "synthetic" (`NOT_INSTRUMENTS`) never identify
one.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

SAMPLE_RATE = 16000
N_FFT, FRAME_HOP = 1024, 256
N_MELS, N_CEPS = 40, 20
FMIN, FMAX = 60.0, 7600.0
WINDOW_S, WINDOW_HOP_S = 1.0, 0.5
DYNAMIC_DB, FLOOR_DB = 30.0, -60.0
SOUNDING = 0.6                    # fraction of a window's frames that must sound
MAJORITY = 0.5                    # share of windows that identifies an instrument
NONE = "none"                     # label of a rejected window
NOT_INSTRUMENTS = (NONE, "other", "synthetic")   # labels that never identify an instrument
FILE = "timbre-check.safetensors"
N_DELTA = 10                      # cepstra whose mean frame-to-frame change is a feature
FEATURES = 2 * (N_CEPS - 1) + N_DELTA + 3


def mel_filters(n_mels=N_MELS, n_fft=N_FFT, sample_rate=SAMPLE_RATE, fmin=FMIN, fmax=FMAX):
    """[n_mels, n_fft // 2 + 1] triangular filters, equally spaced on the mel scale
    (2595 log10(1 + f / 700)), each peaking at 1."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)           # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)           # noqa: E731
    edges = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up, down = (freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down))


def _dct_matrix(n_out=N_CEPS, n_in=N_MELS):
    """Orthonormal DCT-II rows 0 .. n_out - 1."""
    k, n = np.arange(n_out)[:, None], np.arange(n_in)[None, :]
    m = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * math.sqrt(2.0 / n_in)
    m[0] /= math.sqrt(2.0)
    return m


MEL = mel_filters()
DCT = _dct_matrix()


def frame_features(audio):
    """Per frame: (cepstra c1..c19 [T, 19], log spectral flatness [T], level dB [T])."""
    x = np.asarray(audio, np.float64)
    if x.ndim != 1:
        raise ValueError(f"timbre: audio must be mono, one 1-D array (got shape {x.shape})")
    if len(x) < N_FFT:
        x = np.pad(x, (0, N_FFT - len(x)))
    n = 1 + (len(x) - N_FFT) // FRAME_HOP
    idx = np.arange(N_FFT)[None, :] + FRAME_HOP * np.arange(n)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)
    power = np.abs(np.fft.rfft(x[idx] * window, axis=1)) ** 2 + 1e-12
    logmel = np.log(power @ MEL.T + 1e-10)
    ceps = logmel @ DCT.T
    band = power[:, 4:N_FFT // 2 - 16]                        # ~60 Hz .. 7.75 kHz
    flatness = np.mean(np.log(band), axis=1) - np.log(np.mean(band, axis=1))
    level = 10 * np.log10(np.sum(power, axis=1) / np.sum(window ** 2) / N_FFT * 2)
    return ceps[:, 1:], flatness, level


def window_features(audio):
    """([W, FEATURES] features of the windows that sound, [W] start times in seconds)."""
    ceps, flat, level = frame_features(audio)
    delta = np.abs(np.diff(ceps, axis=0, prepend=ceps[:1]))
    per = int(round(WINDOW_S * SAMPLE_RATE / FRAME_HOP))
    step = int(round(WINDOW_HOP_S * SAMPLE_RATE / FRAME_HOP))
    rows, starts = [], []
    for a in range(0, max(1, len(level) - per + 1), step):
        lv = level[a:a + per]
        on = (lv > lv.max() - DYNAMIC_DB) & (lv > FLOOR_DB)
        if on.sum() < SOUNDING * per:
            continue
        c, fl = ceps[a:a + per][on], flat[a:a + per][on]
        rows.append(np.concatenate([c.mean(0), c.std(0), delta[a:a + per][on][:, :N_DELTA].mean(0),
                                    [fl.mean(), fl.std(), lv[on].std() / 10]]))
        starts.append(a * FRAME_HOP / SAMPLE_RATE)
    return np.asarray(rows, np.float64).reshape(-1, FEATURES), np.asarray(starts)


class TimbreCheck:
    """A fitted classifier: labels, standardization, a one-hidden-layer network (ReLU,
    softmax), each class's centroid, inverse covariance and verification radius, and the
    build's figures (ceiling)."""

    def __init__(self, labels, mean, scale, w1, b1, w2, b2, centroids, precision, radius, info=None):
        self.labels = list(labels)
        self.mean, self.scale = np.asarray(mean), np.asarray(scale)
        self.w1, self.b1, self.w2, self.b2 = (np.asarray(v) for v in (w1, b1, w2, b2))
        self.centroids, self.precision = np.asarray(centroids), np.asarray(precision)   # [C, D], [C, D, D]
        self.radius = np.asarray(radius, np.float64)                                 # [C]
        self.info = info or {}

    def scores(self, feats):
        """([W] best label index, [W] Mahalanobis distance of each window to the centroid
        of its best class under that class's covariance, standardized feature space)."""
        z = (np.asarray(feats) - self.mean) / self.scale
        best = np.argmax(np.maximum(z @ self.w1 + self.b1, 0.0) @ self.w2 + self.b2, axis=1)
        dist = np.zeros(len(z))
        for c in np.unique(best):
            d = z[best == c] - self.centroids[c]
            dist[best == c] = np.sqrt(np.maximum(0.0, np.einsum("wd,de,we->w", d, self.precision[c], d)))
        return best, dist

    def verified(self, best, dist):
        """[W] whether each window's best class holds it (distance within the class radius)."""
        return dist <= self.radius[best]

    def classify(self, audio) -> list:
        """One label per sounding window: an instrument, "other", "synthetic", or "none"
        (its best class does not hold it)."""
        feats, _ = window_features(audio)
        if not len(feats):
            return []
        best, dist = self.scores(feats)
        return [self.labels[b] if ok else NONE for b, ok in zip(best, self.verified(best, dist))]

    def identify(self, audio, instrument: str) -> dict:
        """How the check reads a recording meant to sound like `instrument`: the share of
        windows of each label, the instrument's share, and whether it is identified."""
        if instrument not in self.labels or instrument in NOT_INSTRUMENTS:
            raise ValueError(f"timbre: no class {instrument!r}; the check knows "
                             f"{', '.join(k for k in self.labels if k not in NOT_INSTRUMENTS)}")
        return summarize(self.classify(audio), instrument)


def summarize(labels: list, instrument: str | None = None) -> dict:
    """Shares of each label over windows; with an instrument: its share and identified
    (share >= MAJORITY); without: the largest instrument share (for controls)."""
    n = len(labels)
    shares = {k: round(labels.count(k) / n, 3) for k in sorted(set(labels))} if n else {}
    out = {"windows": n, "shares": shares}
    if instrument is not None:
        out["share"] = shares.get(instrument, 0.0)
        out["identified"] = bool(n) and out["share"] >= MAJORITY
    return out


def save_check(path, check: TimbreCheck):
    """Write the classifier as safetensors (float32 tensors; labels and figures in the
    metadata)."""
    from ..weights.safetensors import save

    tensors = {k: np.asarray(getattr(check, k), np.float32)
               for k in ("mean", "scale", "w1", "b1", "w2", "b2", "centroids", "precision", "radius")}
    meta = {"labels": json.dumps(check.labels), "info": json.dumps(check.info)}
    save(path, tensors, metadata=meta)


def load_check(path=None) -> TimbreCheck:
    """The stored timbre check (default weights/timbre-check.safetensors)."""
    from ..weights import BUNDLED_DIR
    from ..weights.safetensors import load_metadata, load_numpy

    path = str(path or os.path.join(BUNDLED_DIR, FILE))
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no timbre check; build it with python -m pycore.train.timbre")
    meta = load_metadata(path)
    t = {k: np.asarray(v, np.float64) for k, v in load_numpy(path).items()}
    return TimbreCheck(json.loads(meta["labels"]), t["mean"], t["scale"], t["w1"], t["b1"], t["w2"], t["b2"],
                       t["centroids"], t["precision"], t["radius"], json.loads(meta.get("info", "{}")))


# --------------------------------------------------------------------------- tone outputs


WAVEFORMS = ("sine", "sawtooth", "square", "triangle")


def harmonic_amplitudes(kind: str, n: int):
    """[n] amplitudes of harmonics 1..n of a waveform: sine (the fundamental alone),
    sawtooth (1/k), square (1/k, odd k), triangle (1/k^2, odd k)."""
    k = np.arange(1, n + 1, dtype=np.float64)
    if kind == "sine":
        return (k == 1).astype(np.float64)
    if kind == "sawtooth":
        return 1.0 / k
    if kind == "square":
        return np.where(k % 2 == 1, 1.0 / k, 0.0)
    if kind == "triangle":
        return np.where(k % 2 == 1, 1.0 / k ** 2, 0.0)
    raise ValueError(f"timbre: oscillator kind must be one of {', '.join(WAVEFORMS)}, got {kind!r}")


def held_f0_and_gate(f0_hz, confidence, midi_range=None):
    """([F] f0, [F] gate) per frame, as the engine plays a singer's features: the last
    voiced f0 (confidence >= VOICED) held, folded into midi_range (None: as given; before
    the first voiced frame, the range's middle), and a gate that ramps towards 1 on
    voiced frames and 0 elsewhere over GATE_FRAMES."""
    from .controls import DEFAULT_RANGE, GATE_FRAMES, VOICED, fold_f0

    lo, hi = midi_range or DEFAULT_RANGE
    f0s, gates, held, gate = [], [], 440.0 * 2 ** (((lo + hi) / 2 - 69) / 12), 0.0
    for f0, conf in zip(f0_hz, confidence):
        voiced = conf >= VOICED and f0 > 0
        if voiced:
            held = fold_f0(float(f0), lo, hi) if midi_range else float(f0)
        gate += max(-1.0 / GATE_FRAMES, min(1.0 / GATE_FRAMES, (1.0 if voiced else 0.0) - gate))
        f0s.append(held)
        gates.append(gate)
    return np.asarray(f0s, np.float64), np.asarray(gates, np.float64)


def oscillator(f0_hz, confidence, loudness_db, midi_range, kind="sine", amplitudes=None):
    """The controls of the check: a sine or a band-limited sawtooth (or any WAVEFORMS
    kind, or the harmonic `amplitudes` 1..n given) driven by the same frame features as
    the tone engine (16 kHz, 64-sample frames): the last voiced f0 (confidence >=
    VOICED), folded into midi_range as the engine folds it (midi_range None: the f0 as
    given, e.g. ToneStream's played_f0_hz, already moved), amplitude 10^(loudness / 20)
    on voiced frames and 0 elsewhere, ramped over GATE_FRAMES; f0 and amplitude
    interpolated linearly between frames; harmonics above 8 kHz left out; peak scaled
    to 0.5."""
    hop = 64
    f0s, gates = held_f0_and_gate(f0_hz, confidence, midi_range)
    amps = gates * 10.0 ** (np.asarray(loudness_db, np.float64) / 20.0)
    t = np.arange(len(f0s) * hop) / hop
    frames = np.arange(len(f0s))
    f, a = np.interp(t, frames, f0s), np.interp(t, frames, amps)
    phase = 2 * np.pi * (np.cumsum(f / SAMPLE_RATE) % 1.0)
    n = int(SAMPLE_RATE / 2 / f.min()) if len(f) else 0
    gains = harmonic_amplitudes(kind, n) if amplitudes is None else np.asarray(amplitudes, np.float64)[:n]
    x = np.zeros_like(phase)
    for k, g in enumerate(gains, start=1):
        if g != 0.0:
            x += np.where(k * f < SAMPLE_RATE / 2, g * np.sin(k * phase), 0.0)
    x *= a
    peak = np.abs(x).max() if len(x) else 0.0
    return (x * (0.5 / peak) if peak > 0 else x).astype(np.float32)


def winner(summary: dict):
    """The instrument that wins MAJORITY of a summary's windows, or None."""
    won = [k for k, v in summary["shares"].items() if k not in NOT_INSTRUMENTS and v >= MAJORITY]
    return won[0] if won else None


def tone_timbre(dev, instrument: str, audio_16k, check=None, model=None, labels=False) -> dict:
    """The timbre check on tone transfer of a recording (16 kHz mono): the model's output
    through ToneStream (offline, one push), and the sine and sawtooth controls driven by
    the same features (at the pitch the model played: octave knob, register shift, fold).
    {"model": identify(...), "sine": ..., "sawtooth": ...}; a control passes when no
    instrument wins MAJORITY of its windows ("identified_as": None)."""
    import asyncio

    from .stream import ToneStream, load_tone_model

    check = check or load_check()
    model = model or load_tone_model(dev, instrument)

    async def run():
        s = ToneStream(model)
        out = await s.push(np.asarray(audio_16k, np.float32))
        tail = await s.flush()
        return {k: np.concatenate([np.asarray(out[k]), np.asarray(tail[k])]) for k in out}

    out = asyncio.run(run())
    got = check.classify(out["audio"])
    result = {"model": summarize(got, instrument)}
    if labels:
        result["model"]["labels"] = got
    for kind in ("sine", "sawtooth"):
        got = check.classify(oscillator(out["played_f0_hz"], out["confidence"], out["loudness_db"], None, kind))
        r = summarize(got)
        r["identified_as"] = winner(r)
        if labels:
            r["labels"] = got
        result[kind] = r
    return result
