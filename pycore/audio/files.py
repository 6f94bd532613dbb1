"""Audio files for `stemtone separate` (native: soundfile + numpy).

Reading: `AudioReader(path)` opens anything soundfile (libsndfile 1.1+) decodes:
WAV/RF64/W64, FLAC, Ogg Vorbis/Opus, MP3, AIFF, CAF, ... and streams float32 blocks
[channels, n]. Problems become one `AudioFileError` whose message names the file and
says what is wrong, in words a user can act on:

  empty file / not audio / unsupported    raised when opening
  no samples (a valid header, 0 frames)   raised when opening
  NaN or infinite samples                 raised by blocks(), with the first bad time
  decoding error in the middle (FLAC)     raised by blocks()
  truncated file                          raised by blocks() at the end, when fewer
                                          frames decode than the header announces
                                          (MP3 with a Xing/LAME header, FLAC, WAV)
Nothing is repaired: a damaged file gives no stems rather than stems of part of it.
A truncated Ogg file ends at its last complete page and cannot be told from a
shorter file; an MP3 without a VBR header has no length to compare with.

Writing: `StemWriter` writes one stem as WAV, FLAC or MP3 (libsndfile 1.1+ with
LAME; --bits does not apply to it), atomically: samples go to a
hidden temporary file next to the target, which replaces the target only when
complete (os.replace), so an interrupted run never leaves a half-written stem under
the final name. PCM output (16/24-bit) is clip-safe without knowing the peak in
advance: a memoryless soft limiter leaves |x| <= 0.9 untouched and bends larger
values smoothly towards full scale (x = 0.9 + 0.1 tanh((|x| - 0.9) / 0.1)), so a
stem that would clip is distorted only in its loudest peaks instead of wrapping or
hard-clipping; the writer counts the samples that were above full scale and the
peak, and the CLI reports them. 32-bit float output is written as it is, no limiter.
"""

from __future__ import annotations

import contextlib
import os
import struct

import numpy as np
import soundfile as sf

FORMATS = {"wav": "WAV", "flac": "FLAC", "mp3": "MP3"}
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)  # what MPEG audio defines
SUBTYPES = {16: "PCM_16", 24: "PCM_24", "32f": "FLOAT"}
KNEE = 0.9               # the soft limiter is the identity up to here
TRUNCATION_SLACK = 0.01  # an MP3 may decode this much less than its header's estimate


class AudioFileError(Exception):
    """A problem with one input or output file; str(e) is the full message with the path."""

    def __init__(self, path, problem):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = str(path), problem


def timestamp(seconds: float) -> str:
    """0:01.234 / 1:02:03.456"""
    m, s = divmod(max(seconds, 0.0), 60)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:06.3f}" if h else f"{m}:{s:06.3f}"


@contextlib.contextmanager
def _quiet_decoder():
    """Silence what C decoders print straight to the process's stderr (libmpg123 warns
    'Xing stream size off by more than 1%' on truncated MP3s): our own message says it
    in one line. Python's sys.stderr is untouched outside these calls."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _declared_wav_frames(path, info):
    """Frames a RIFF/WAVE header announces in its data chunk, or None (not WAV, or a
    streamed file with a placeholder size). libsndfile itself silently reads only what
    is there, so this is how a truncated WAV is noticed."""
    if info.format not in ("WAV", "WAVEX"):
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return None
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, block = 12, None
    while pos + 8 <= len(head):
        cid, size = head[pos:pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if cid == b"fmt " and pos + 22 <= len(head):
            block = struct.unpack_from("<H", head, pos + 20)[0]
        if cid == b"data":
            if not block or size in (0, 0xFFFFFFFF):
                return None
            return size // block
        pos += 8 + size + (size & 1)
    return None


class AudioReader:
    """An open input file. Attributes: path, sample_rate, channels, frames (announced
    by the header; exact for WAV and FLAC, estimated for MP3), format, duration."""

    def __init__(self, path):
        self.path = str(path)
        try:
            size = os.path.getsize(self.path)
        except FileNotFoundError:
            raise AudioFileError(path, "no such file") from None
        except OSError as e:
            raise AudioFileError(path, f"cannot read ({e.strerror or e})") from None
        if os.path.isdir(self.path):
            raise AudioFileError(path, "is a directory, not an audio file")
        if size == 0:
            raise AudioFileError(path, "empty file (0 bytes)")
        try:
            with _quiet_decoder():
                self._f = sf.SoundFile(self.path)
        except sf.LibsndfileError as e:
            raise AudioFileError(path, f"not an audio file that can be decoded ({_reason(e)})") from None
        except (OSError, RuntimeError, TypeError) as e:
            raise AudioFileError(path, f"cannot open ({e})") from None
        self.sample_rate, self.channels = self._f.samplerate, self._f.channels
        self.frames, self.format = self._f.frames, self._f.format
        if self.frames == 0:
            self._f.close()
            raise AudioFileError(path, "no audio in the file (0 samples)")
        if self.sample_rate <= 0 or self.channels <= 0:
            self._f.close()
            raise AudioFileError(path, f"bad header ({self.channels} channels at {self.sample_rate} Hz)")
        declared = _declared_wav_frames(self.path, self._f)
        if declared is not None and declared > self.frames:
            self.frames_declared = declared
        else:
            self.frames_declared = self.frames

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate

    def blocks(self, size: int):
        """Yield float32 arrays [channels, <= size] until the end; checks every sample
        is finite and that the whole announced length decodes."""
        done = 0
        while True:
            try:
                with _quiet_decoder():
                    x = self._f.read(size, dtype="float32", always_2d=True)
            except sf.LibsndfileError as e:
                where = f": decoding failed after {timestamp(done / self.sample_rate)}" if done else ""
                raise AudioFileError(self.path, f"damaged or truncated{where} ({_reason(e)})") from None
            if len(x) == 0:
                break
            bad = ~np.isfinite(x)
            if bad.any():
                frame, ch = np.argwhere(bad)[0]
                what = "NaN" if np.isnan(x[frame, ch]) else "infinite"
                raise AudioFileError(self.path, f"{what} sample at {timestamp((done + frame) / self.sample_rate)} "
                                                f"(channel {ch + 1}); the file is damaged")
            done += len(x)
            yield np.ascontiguousarray(x.T)
        slack = TRUNCATION_SLACK * self.frames_declared if self.format == "MP3" else 0  # MP3 lengths are estimates
        if self.frames_declared - done > slack:
            raise AudioFileError(self.path, f"truncated: {timestamp(done / self.sample_rate)} of audio "
                                            f"decoded, its header announces "
                                            f"{timestamp(self.frames_declared / self.sample_rate)}")
        self.frames = done

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _reason(e) -> str:
    """libsndfile's message without the repeated path ("Error opening 'x': Format not recognised.")."""
    msg = str(getattr(e, "error_string", "") or e).strip().rstrip(".")
    if ":" in msg and msg.lower().replace(" ", "").startswith(("erroropening", "error:")):
        msg = msg.split(":", 1)[1].strip()
    return msg[:1].lower() + msg[1:] if msg else "unknown error"


# --------------------------------------------------------------------------- writing


def check_output_format(format: str, bits) -> None:
    """ValueError for combinations soundfile cannot write (FLAC stores integers only)."""
    if format not in FORMATS:
        raise ValueError(f"unknown output format {format!r}; use one of {sorted(FORMATS)}")
    if bits not in SUBTYPES:
        raise ValueError(f"unknown bit depth {bits!r}; use 16, 24 or '32f'")
    if format == "flac" and bits == "32f":
        raise ValueError("FLAC stores integer samples: use --bits 16 or 24 with --format flac, "
                         "or --format wav for 32-bit float")
    if format == "mp3" and "MP3" not in sf.available_formats():
        raise ValueError(f"this libsndfile ({sf.__libsndfile_version__}) cannot write MP3 (1.1.0 or later with "
                         f"LAME can): update libsndfile, or use --format wav or flac")


def soft_limit(x: np.ndarray) -> np.ndarray:
    """Identity for |x| <= KNEE, then KNEE + (1 - KNEE) tanh((|x| - KNEE) / (1 - KNEE)):
    continuous with slope 1 at the knee, approaching full scale (reached only in
    float32 rounding, from about +26 dBFS on)."""
    a = np.abs(x)
    over = a > KNEE
    if not over.any():
        return x
    y = x.copy()
    y[over] = np.sign(x[over]) * (KNEE + (1 - KNEE) * np.tanh((a[over] - KNEE) / (1 - KNEE)))
    return y


def quantize(x: np.ndarray, bits: int) -> np.ndarray:
    """float in [-1, 1] -> integer codes round(x * 2**(bits-1)), clipped, as int16
    (16-bit) or int32 holding code << 8 (24-bit: libsndfile keeps the top 24 bits)."""
    scale = float(2 ** (bits - 1))
    k = np.clip(np.rint(x.astype(np.float64) * scale), -scale, scale - 1)
    return k.astype(np.int16) if bits == 16 else (k.astype(np.int32) << 8)


class StemWriter:
    """Writes one output file atomically. write() takes float32 [channels, n]; commit()
    moves the finished file into place; abort() removes the temporary file. Attributes
    after writing: peak (largest |sample| before limiting), over (samples above full
    scale, soft-limited for PCM)."""

    def __init__(self, path, sample_rate: int, channels: int, format="wav", bits=16,
                 overwrite=False, frames_hint=0):
        check_output_format(format, bits)
        self.path, self.bits, self.overwrite = str(path), bits, overwrite
        self.channels = channels
        self.peak, self.over, self.frames = 0.0, 0, 0
        if os.path.exists(self.path) and not overwrite:
            raise AudioFileError(self.path, "already exists (use --overwrite to replace it)")
        major = FORMATS[format]
        if major == "MP3" and sample_rate not in MP3_RATES:
            raise AudioFileError(self.path, f"MP3 cannot store {sample_rate} Hz (it has "
                                            f"{', '.join(map(str, MP3_RATES))} Hz): use --format wav or flac")
        self.lossy = major == "MP3"  # bit depth means nothing there: soft-limited floats go to the encoder
        width = 4 if bits == "32f" else bits // 8
        if major == "WAV" and frames_hint * channels * width > 2 ** 32 - 2 ** 20:
            major = "RF64"  # a plain WAV cannot hold more than 4 GiB
        folder, name = os.path.split(os.path.abspath(self.path))
        self.tmp = os.path.join(folder, f".{name}.{os.getpid()}.part")  # hidden, same filesystem
        try:
            self._f = sf.SoundFile(self.tmp, "w", samplerate=sample_rate, channels=channels,
                                   format=major, subtype="MPEG_LAYER_III" if self.lossy else SUBTYPES[bits])
        except (OSError, sf.LibsndfileError) as e:
            _remove(self.tmp)
            raise AudioFileError(folder, f"cannot write here ({_reason(e)})") from None

    def write(self, x: np.ndarray) -> None:
        if x.shape[1] == 0:
            return
        a = np.abs(x)
        self.peak = max(self.peak, float(a.max()))
        self.frames += x.shape[1]
        if self.bits == "32f" and not self.lossy:
            data = x.T
        else:
            self.over += int(np.count_nonzero(a > 1.0))
            data = soft_limit(x).T if self.lossy else quantize(soft_limit(x), self.bits).T
        try:
            self._f.write(np.ascontiguousarray(data))
        except (OSError, sf.LibsndfileError, RuntimeError) as e:
            raise AudioFileError(self.path, f"write failed ({e})") from None

    def commit(self) -> None:
        self._f.close()
        if os.path.exists(self.path) and not self.overwrite:  # appeared while we worked
            _remove(self.tmp)
            raise AudioFileError(self.path, "already exists (use --overwrite to replace it)")
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._f.close()
        _remove(self.tmp)


def _remove(path):
    with contextlib.suppress(OSError):
        os.remove(path)
