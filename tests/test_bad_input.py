"""Bad input for `stemtone separate`: a corpus made here, each case either separated
correctly or failed with ONE error line that names the file and the problem, without
losing the other inputs' results or leaving partial files behind.

The GPU work uses a reduced-width Spleeter with random weights (pycore.models.spleeter.
random_weights, loaded by the real Demixer), so each case costs about one segment.
"Correct output" is checked without a reference: the two stems' ratio masks sum to
one, so vocals + accompaniment = the input low-passed at 11 kHz, which is the input
itself for the band-limited test signals used here. The one-hour file runs with a
CPU stand-in for the demixer (GainDemixer below): a whole hour on lavapipe's GPU
would take ~10 minutes, and what is tested there is the file pipeline's memory.
"""

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from pycore.cli import main as cli
from pycore.demix import Demixer
from pycore.models.spleeter import random_weights
from pycore.demix.files import separate_async

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def small(dev):
    """The real Demixer running a reduced-width U-Net with random weights."""
    return asyncio.run(Demixer.load(dev, weights=random_weights(widths=(2, 2, 4, 4, 8, 8), seed=3)))


@pytest.fixture
def stemtone(small, monkeypatch, capfd):
    """Run the CLI in this process with the small model; returns (exit code, stdout
    lines, stderr lines). capfd also catches what C libraries print to fd 2."""
    async def load(cls, dev, name="spleeter-2stems", weights=None, dtype="f32"):
        if name != "spleeter-2stems":
            raise ValueError(f"unknown model {name!r}; available: spleeter-2stems")
        return small

    monkeypatch.setattr(Demixer, "load", classmethod(load))

    def run(*argv):
        capfd.readouterr()
        rc = cli.main(["separate", "-q", *map(str, argv)])
        out, err = capfd.readouterr()
        return rc, out.splitlines(), err.splitlines()
    return run


def tones(rate, seconds, channels, base=220.0):
    """Band-limited test music: three tones per channel (different per channel, all
    below 4 kHz and the 11 kHz Spleeter cut-off) with 50 ms raised-cosine fades so
    nothing broadband happens at the ends. float32 [channels, n]."""
    n = round(rate * seconds)
    t = np.arange(n) / rate
    x = np.stack([0.3 * np.sin(2 * np.pi * base * (c + 1) * t) + 0.2 * np.sin(2 * np.pi * (1100 + 500 * c) * t + c)
                  + 0.1 * np.sin(2 * np.pi * 3100 * t + 0.5 * c) for c in range(channels)])
    ramp = min(n // 2, round(0.05 * rate))
    fade = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    x[:, :ramp] *= fade
    x[:, n - ramp:] *= fade[::-1]
    return x.astype(np.float32)


def write(path, x, rate, **kw):
    sf.write(path, np.ascontiguousarray(x.T), rate, **kw)
    return path


def read(path):
    x, rate = sf.read(path, dtype="float64", always_2d=True)
    return x.T, rate


def error_lines(err):
    return [line for line in err if line.startswith("stemtone: error:")]


def assert_one_error(err, path, *words):
    """Exactly one error line, naming the file and the problem; nothing else on stderr."""
    errors = error_lines(err)
    assert len(errors) == 1 and err == errors, err
    assert str(path) in errors[0], errors[0]
    for w in words:
        assert w in errors[0], errors[0]


def assert_no_leftovers(folder):
    """No stems and no temporary files: the folder is absent or holds no .part files."""
    if os.path.isdir(folder):
        assert not [f for f in os.listdir(folder) if f.endswith(".part") or f.startswith(".")], os.listdir(folder)


def assert_stems_sum_to_input(outdir, track, x, rate, tol):
    stems = {}
    for stem in ("vocals", "accompaniment"):
        y, r = read(os.path.join(outdir, track, f"{stem}.wav"))
        assert r == rate and y.shape == x.shape, (r, y.shape, x.shape)
        stems[stem] = y
    # the masks sum to 1: vocals + accompaniment = the (band-limited) input
    assert np.abs(stems["vocals"] + stems["accompaniment"] - x).max() < tol
    for y in stems.values():  # and each stem is a real part of it, not all or nothing
        assert 0.01 < np.sqrt(np.mean(y ** 2) / np.mean(x ** 2)) < 0.99


# --------------------------------------------------------------------------- the corpus


def test_truncated_mp3(stemtone, tmp_path):
    path = tmp_path / "cut.mp3"
    write(path, tones(44100, 4.0, 2), 44100)  # soundfile (libsndfile + LAME) writes MP3
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    rc, out, err = stemtone(path, "-o", tmp_path / "out")
    assert rc == 1 and out == []
    # libmpg123's own stderr warning ("Xing stream size off by more than 1%") is silenced
    assert_one_error(err, path, "truncated", "of audio decoded, its header announces 0:04.0")
    assert not (tmp_path / "out" / "cut").exists()


def test_truncated_flac(stemtone, tmp_path):
    path = tmp_path / "cut.flac"
    write(path, tones(44100, 4.0, 2), 44100)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    rc, out, err = stemtone(path, "-o", tmp_path / "out")
    assert rc == 1
    assert_one_error(err, path, "damaged or truncated (flac decoder lost sync)")
    assert not (tmp_path / "out" / "cut").exists()


def test_truncated_wav(stemtone, tmp_path):
    path = tmp_path / "cut.wav"
    write(path, tones(8000, 2.0, 1), 8000)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 8000])
    rc, out, err = stemtone(path, "-o", tmp_path / "out")
    assert rc == 1
    assert_one_error(err, path, "truncated: 0:01.500 of audio decoded, its header announces 0:02.000")


def test_zero_length_file(stemtone, tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    rc, _, err = stemtone(path, "-o", tmp_path / "out")
    assert rc == 1
    assert_one_error(err, path, "empty file (0 bytes)")
    assert not (tmp_path / "out").exists()


def test_wav_without_samples(stemtone, tmp_path):
    path = write(tmp_path / "silent.wav", np.zeros((2, 0), np.float32), 44100)
    rc, _, err = stemtone(path, "-o", tmp_path / "out")
    assert rc == 1
    assert_one_error(err, path, "no audio in the file (0 samples)")


def test_text_file_renamed_wav(stemtone, tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("These are my song notes, not audio.\n" * 20)
    rc, _, err = stemtone(path, "-o", tmp_path / "out")
    assert rc == 1
    assert_one_error(err, path, "not an audio file that can be decoded", "format not recognised")


@pytest.mark.parametrize("bad,word", [(np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "infinite")])
def test_non_finite_samples(stemtone, tmp_path, bad, word):
    x = tones(44100, 3.0, 2)
    x[1, 66150] = bad  # 1.5 s into the second channel
    path = write(tmp_path / "broken.wav", x, 44100, subtype="FLOAT")
    rc, _, err = stemtone(path, "-o", tmp_path / "out")
    assert rc == 1
    assert_one_error(err, path, f"{word} sample at 0:01.500 (channel 2); the file is damaged")
    assert not (tmp_path / "out" / "broken").exists()


def test_8khz_mono(stemtone, tmp_path):
    x = tones(8000, 5.0, 1)
    path = write(tmp_path / "phone.wav", x, 8000)  # 16-bit
    x = read(path)[0]
    rc, out, err = stemtone(path, "-o", tmp_path / "out", "--bits", "32f")
    assert rc == 0 and err == [] and out[0].startswith(f"{path} -> {tmp_path / 'out' / 'phone'}/")
    # resampling 8k -> 44.1k -> 8k of tones well inside the band: ~1e-5; float32 STFT ~1e-6
    assert_stems_sum_to_input(tmp_path / "out", "phone", x, 8000, tol=1e-4)
    assert sf.info(tmp_path / "out" / "phone" / "vocals.wav").subtype == "FLOAT"


def test_96khz_four_channels(stemtone, tmp_path):
    """Four channels are demixed as two pairs; each output channel must come from its
    own input channel (the tones differ per channel)."""
    x = tones(96000, 3.0, 4)
    path = write(tmp_path / "quad.flac", x, 96000, subtype="PCM_24")
    x = read(path)[0]
    rc, out, err = stemtone(path, "-o", tmp_path / "out", "--bits", "32f")
    assert rc == 0 and err == []
    assert_stems_sum_to_input(tmp_path / "out", "quad", x, 96000, tol=1e-4)


def test_unwritable_output_directory(stemtone, tmp_path):
    src = write(tmp_path / "song.wav", tones(44100, 1.0, 2), 44100)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked_by = lock_directory(locked)
    try:
        rc, out, err = stemtone(src, "-o", locked)
    finally:
        unlock_directory(locked, locked_by)
    assert rc == 1 and out == []
    assert_one_error(err, src, str(locked))
    assert "cannot create the output folder" in err[0] or "cannot write here" in err[0]
    assert os.listdir(locked) == []


def test_output_directory_is_a_file(stemtone, tmp_path):
    src = write(tmp_path / "song.wav", tones(44100, 1.0, 2), 44100)
    (tmp_path / "taken").write_text("a file where the output folder should go")
    rc, _, err = stemtone(src, "-o", tmp_path / "taken")
    assert rc == 1
    assert_one_error(err, src, str(tmp_path / "taken"), "cannot create the output folder")


def test_existing_output_is_kept_unless_overwrite(stemtone, tmp_path):
    x = tones(22050, 2.0, 2)
    src = write(tmp_path / "song.wav", x, 22050)
    folder = tmp_path / "out" / "song"
    folder.mkdir(parents=True)
    (folder / "vocals.wav").write_bytes(b"my earlier vocals")
    rc, _, err = stemtone(src, "-o", tmp_path / "out")
    assert rc == 1
    assert_one_error(err, src, str(folder / "vocals.wav"), "already exists (use --overwrite to replace it)")
    assert (folder / "vocals.wav").read_bytes() == b"my earlier vocals"
    assert sorted(os.listdir(folder)) == ["vocals.wav"]

    rc, out, err = stemtone(src, "-o", tmp_path / "out", "--overwrite", "--bits", "32f")
    assert rc == 0 and err == []
    assert_stems_sum_to_input(tmp_path / "out", "song", read(src)[0], 22050, tol=1e-4)


def test_one_bad_input_among_several(stemtone, tmp_path):
    good1 = write(tmp_path / "one.ogg", tones(44100, 2.0, 2), 44100)
    bad = tmp_path / "two.wav"
    bad.write_text("not audio")
    missing = tmp_path / "three.mp3"
    good2 = write(tmp_path / "four.flac", tones(32000, 2.0, 1), 32000)
    rc, out, err = stemtone(good1, bad, missing, good2, "-o", tmp_path / "out")
    assert rc == 1
    errors = error_lines(err)
    assert err == errors and len(errors) == 2
    assert str(bad) in errors[0] and "not an audio file" in errors[0]
    assert str(missing) in errors[1] and "no such file" in errors[1]
    assert out[-1] == f"2 of 4 inputs separated into {tmp_path / 'out'}/; 2 failed"
    for track, rate, channels in (("one", 44100, 2), ("four", 32000, 1)):
        for stem in ("vocals", "accompaniment"):
            info = sf.info(tmp_path / "out" / track / f"{stem}.wav")
            assert (info.samplerate, info.channels, info.frames) == (rate, channels, 2 * rate)
    assert not (tmp_path / "out" / "two").exists()


def test_same_track_name_twice(stemtone, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write(tmp_path / "a" / "song.wav", tones(44100, 1.0, 1), 44100)
    second = write(tmp_path / "b" / "song.flac", tones(44100, 1.0, 1), 44100)
    rc, out, err = stemtone(first, second, "-o", tmp_path / "out")
    assert rc == 1
    assert_one_error(err, second, f"same track name 'song' as {first}")
    assert (tmp_path / "out" / "song" / "vocals.wav").exists()


def test_a_failure_mid_track_leaves_nothing_behind(tmp_path):
    """The demixer failing after some output was written (GPU lost, out of memory):
    one error naming the file, no stem files, no temporary files, no empty folder."""
    src = write(tmp_path / "song.wav", tones(44100, 30.0, 2), 44100)
    results = asyncio.run(separate_async([src], GainDemixer(fail_after=3), tmp_path / "out", progress=False))
    assert not results[0].ok
    assert results[0].error == f"{src}: RuntimeError: the GPU device was lost (test)"
    assert not (tmp_path / "out" / "song").exists()


def test_interrupted_run_leaves_nothing_behind(tmp_path):
    src = write(tmp_path / "song.wav", tones(44100, 30.0, 2), 44100)
    (tmp_path / "out" / "song").mkdir(parents=True)  # a folder that existed before stays
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(separate_async([src], GainDemixer(fail_after=3, error=KeyboardInterrupt),
                                   tmp_path / "out", progress=False))
    assert os.listdir(tmp_path / "out" / "song") == []


# --------------------------------------------------------------------------- memory


class GainDemixer(Demixer):
    """A CPU stand-in implementing the Demixer interface (tests only, not registered):
    vocals = 0.25 x, accompaniment = 0.75 x, released a 524,288-sample segment at a time
    like the real stream, so a pipeline that held whole tracks would show in memory.
    fail_after=k raises `error` on the k-th push."""

    family = "gain-stand-in"
    SEGMENT = 512 * 1024

    def __init__(self, fail_after=None, error=RuntimeError):
        super().__init__(None, None, "gain-stand-in", ["vocals", "accompaniment"], 44100)
        self.fail_after, self.error, self.pushes = fail_after, error, 0

    def open_stream(self, channels, wanted=None):
        return GainStream(self, channels)


class GainStream:
    stems = ["vocals", "accompaniment"]
    numpy_kind = True
    segments_done = 0

    def __init__(self, demixer, channels):
        self.d, self.buf = demixer, np.zeros((channels, 0), np.float32)

    def _take(self, n):
        x, self.buf = self.buf[:, :n], self.buf[:, n:]
        return {"vocals": list(0.25 * x), "accompaniment": list(0.75 * x)}

    async def push(self, block, progress=None, should_cancel=None):
        self.d.pushes += 1
        if self.d.fail_after is not None and self.d.pushes >= self.d.fail_after:
            raise self.d.error("the GPU device was lost (test)")
        self.buf = np.concatenate([self.buf, np.stack(block)], axis=1)
        n = self.buf.shape[1] // self.d.SEGMENT * self.d.SEGMENT
        if n and progress:
            progress(1.0, "segment")
        return self._take(n)

    async def finish(self, progress=None, should_cancel=None):
        return self._take(self.buf.shape[1])


MEMORY_SCRIPT = """
import asyncio, json, resource, sys
sys.path.insert(0, {tests!r})
from test_bad_input import GainDemixer
from pycore.demix.files import separate_async
r = asyncio.run(separate_async([sys.argv[1]], GainDemixer(), sys.argv[2], progress=False))[0]
print(json.dumps({{"ok": r.ok, "error": r.error, "frames": r.frames,
                  "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def write_long(path, seconds, rate=8000):
    """A long 16-bit mono WAV written a minute at a time: a 440 Hz tone in the first
    second of every minute, silence otherwise."""
    with sf.SoundFile(path, "w", rate, 1, "PCM_16") as f:
        for start in range(0, seconds, 60):
            t = np.arange(start * rate, (start + 60) * rate) / rate
            f.write((0.5 * np.sin(2 * np.pi * 440 * t) * (t % 60 < 1)).astype(np.float32))
    return path


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB is Linux's convention")
def test_one_hour_file_memory_stays_flat(tmp_path):
    """A 1-hour 8 kHz file goes through everything but the GPU (reader, 8k -> 44.1k,
    stand-in demixer, 44.1k -> 8k per stem, writers): peak RSS must stay within 40 MiB
    of a 1-minute file's. Holding the track anywhere would cost far more: the hour at
    44.1 kHz is 635 MB per float32 copy."""
    code = MEMORY_SCRIPT.format(tests=TESTS)
    runs = {}
    for seconds in (60, 3600):
        src = write_long(tmp_path / f"long{seconds}.wav", seconds)
        r = subprocess.run([sys.executable, "-c", code, str(src), str(tmp_path / "out")], cwd=REPO,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        runs[seconds] = json.loads(r.stdout.splitlines()[-1])
        assert runs[seconds]["ok"] and runs[seconds]["frames"] == seconds * 8000, runs[seconds]
    assert runs[3600]["max_rss_mib"] - runs[60]["max_rss_mib"] < 40, runs
    # the end of the hour is where it belongs: the tone of the last minute, at 1/4
    y, rate = read(tmp_path / "out" / "long3600" / "vocals.wav")
    assert rate == 8000 and y.shape == (1, 3600 * 8000)
    last = y[0, 3540 * 8000:]
    t = np.arange(len(last)) / 8000
    want = 0.125 * np.sin(2 * np.pi * 440 * (t + 3540)) * (t < 1)
    # 16-bit input and output, resampling both ways, the tone's hard edges: small error
    assert np.abs(last - want)[80:7920].max() < 2e-4  # away from the tone's hard start/stop
    assert np.abs(last[8100:]).max() < 1e-3


def test_gpu_memory_does_not_grow_with_the_track(small, dev, tmp_path):
    """The real pipeline on the GPU: a 36 s track (4 segments) peaks at the same GPU
    memory as a 1 s track (1 segment)."""
    peaks = {}
    for seconds in (1, 36):
        src = write(tmp_path / f"t{seconds}.wav", tones(44100, seconds, 2), 44100)
        dev.flush()
        base = dev.mem_in_use
        dev.reset_peak()
        (r,) = asyncio.run(separate_async([src], small, tmp_path / "out", progress=False))
        assert r.ok, r.error
        peaks[seconds] = dev.mem_peak - base
    assert peaks[36] <= peaks[1] + 2 ** 20, peaks


# --------------------------------------------------------------------------- helpers: a read-only folder


def lock_directory(path):
    """Make `path` unwritable, even for root where possible; returns how."""
    os.chmod(path, stat.S_IRUSR | stat.S_IXUSR)
    if not _writable(path):
        return "chmod"
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        if not _writable(path):
            return "chattr"
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    os.chmod(path, stat.S_IRWXU)
    pytest.skip("cannot make a folder unwritable here (root without chattr); "
                "test_output_directory_is_a_file covers the error path")


def unlock_directory(path, how):
    if how == "chattr":
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    os.chmod(path, stat.S_IRWXU)


def _writable(path):
    probe = os.path.join(path, ".probe")
    try:
        with open(probe, "w"):
            pass
    except OSError:
        return False
    os.remove(probe)
    return True
