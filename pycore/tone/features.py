"""Tone-transfer features on the GPU: f0, confidence and loudness, 250 frames per second.

    f0_hz, confidence, loudness_db = await features(dev, audio_16k)
    ... = await features(dev, audio, sample_rate=44100)    # native: resampled to 16 kHz first

audio is mono (numpy float32 natively, array('f') or a list in the browser); the three
results have one value per frame, 1 + len(audio_16k) // 64 frames, frame f centered on
sample 64 f (4 ms apart), in the input's array type.

  f0_hz, confidence   CREPE (pycore.models.crepe, weights/crepe-tiny.safetensors by
                      default) on 1024-sample frames, zero-padded at both ends, each
                      normalized to zero mean and unit std; confidence = the largest
                      activation between fmin and fmax, f0 = the activation-weighted
                      mean of the 9 bins around it (pycore.ops.pitch.crepe_decode, which
                      also offers torchcrepe's weighted_argmax). Unvoiced frames keep
                      their (meaningless) f0: threshold the confidence (e.g. 0.5).
  loudness_db         A-weighted power as DDSP's compute_loudness (ddsp 3.7.0 defaults:
                      n_fft 512, ref_db 0, range_db 80, centered): -80 dB for silence
                      (pycore.ops.loudness).

Long audio runs in chunks of CHUNK_FRAMES frames (30 s): each chunk's samples, with
the zero padding or the neighbouring samples its frames reach into, are uploaded on
their own, so GPU memory stays the same for any length and each chunk computes
exactly what one pass over the whole signal would.
"""

from __future__ import annotations

import array

from ..weights import weights_path
from ..models.crepe import Crepe
from ..ops.loudness import loudness_db
from ..ops.pitch import FRAME, crepe_decode, crepe_frames
from ..weights.safetensors import load as load_safetensors

SAMPLE_RATE = 16000
FRAME_RATE = 250
HOP = SAMPLE_RATE // FRAME_RATE      # 64 samples
LOUDNESS_N_FFT = 512
CHUNK_FRAMES = 7500                  # 30 s of frames per upload
MODELS = ("crepe-tiny", "crepe-full")


def load_crepe(dev, name="crepe-tiny", weights=None, dtype="f32") -> Crepe:
    """The CREPE model `name` on dev. weights: None (natively: weights/<name>.safetensors;
    the model is then cached on the device), a path, the bytes of the safetensors file,
    or a dict from pycore.weights.safetensors.load (e.g. pycore.models.crepe.random_weights())."""
    if name not in MODELS:
        raise ValueError(f"unknown pitch model {name!r}; available: {', '.join(MODELS)}")
    cache = dev.__dict__.setdefault("_crepe_models", {}) if weights is None else {}
    key = (name, dtype)
    if key not in cache:
        params = weights if isinstance(weights, dict) else load_safetensors(weights or weights_path(name))
        cache[key] = Crepe(dev, params, dtype)
    return cache[key]


def _host_kind(audio):
    """(audio as float32 host data, numpy module or None)."""
    if hasattr(audio, "ndim") and hasattr(audio, "dtype"):
        import numpy as np

        audio = np.asarray(audio, np.float32)
        if audio.ndim != 1:
            raise ValueError(f"features: audio must be mono, one 1-D array (got shape {audio.shape}); "
                             "mix the channels down first")
        return audio, np
    if not isinstance(audio, array.array) or audio.typecode != "f":
        audio = array.array("f", audio)
    return audio, None


def _segment(audio, lo, hi, np):
    """Samples lo .. hi - 1 of audio, zeros where they fall outside it."""
    n = len(audio)
    before = max(0, min(hi, 0) - lo)
    a = max(lo, 0)
    middle = max(0, min(hi, n) - a)
    after = (hi - lo) - before - middle
    if np is not None:
        return np.concatenate([np.zeros(before, np.float32), audio[a:a + middle], np.zeros(after, np.float32)])
    return array.array("f", bytes(4 * before)) + audio[a:a + middle] + array.array("f", bytes(4 * after))


def _concat(parts, np):
    if np is not None:
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)
    out = array.array("f")
    for p in parts:
        out.extend(p)
    return out


async def _loudness_chunk(dev, audio, c0, last, np):
    """The loudness of frames c0 .. last (centered on their samples, zeros outside)."""
    half = LOUDNESS_N_FFT // 2
    lseg = dev.tensor(_segment(audio, c0 * HOP - half, last * HOP + half, np))
    out = await loudness_db(lseg, SAMPLE_RATE, FRAME_RATE, LOUDNESS_N_FFT, center=False).read()
    lseg.release()
    return out


async def loudness(dev, audio):
    """The loudness_db of features() alone (no pitch analysis): 16 kHz mono audio."""
    audio, np = _host_kind(audio)
    if len(audio) == 0:
        raise ValueError("loudness: audio is empty")
    total = 1 + len(audio) // HOP
    return _concat([await _loudness_chunk(dev, audio, c0, min(total, c0 + CHUNK_FRAMES) - 1, np)
                    for c0 in range(0, total, CHUNK_FRAMES)], np)


async def features(dev, audio, model="crepe-tiny", sample_rate=SAMPLE_RATE, decoder="local_average",
                   fmin=50.0, fmax=2006.0, progress=None):
    """(f0_hz, confidence, loudness_db) of mono audio, one value per 4 ms frame (see the
    module docstring). model: a name ("crepe-tiny", "crepe-full") or a loaded Crepe.
    sample_rate other than 16000 resamples first (native only: pycore.audio.resample).
    progress(fraction), if given, is called after each chunk."""
    if sample_rate != SAMPLE_RATE:
        if not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"features: sample_rate must be a positive int, got {sample_rate!r}")
        from ..audio.resample import resample  # native only (numpy)

        audio = resample(_host_kind(audio)[0], sample_rate, SAMPLE_RATE)
    audio, np = _host_kind(audio)
    if len(audio) == 0:
        raise ValueError("features: audio is empty")
    crepe = model if isinstance(model, Crepe) else load_crepe(dev, model)
    total = 1 + len(audio) // HOP
    f0s, confs, louds = [], [], []
    for c0 in range(0, total, CHUNK_FRAMES):
        count = min(CHUNK_FRAMES, total - c0)
        last = c0 + count - 1                     # centers of the chunk's frames: c0 .. last (* HOP)
        seg = dev.tensor(_segment(audio, c0 * HOP - FRAME // 2, last * HOP + FRAME // 2, np))
        for s in range(0, count, crepe.max_batch):
            frames = crepe_frames(seg, HOP, start=s, count=min(crepe.max_batch, count - s), center=False)
            act = crepe(frames)
            frames.release()
            fc = await crepe_decode(act, fmin, fmax, decoder).read()
            act.release()
            fc = fc.reshape(-1) if np is not None else fc
            f0s.append(fc[0::2])
            confs.append(fc[1::2])
        seg.release()
        louds.append(await _loudness_chunk(dev, audio, c0, last, np))
        if progress is not None:
            progress((c0 + count) / total)
    return _concat(f0s, np), _concat(confs, np), _concat(louds, np)
