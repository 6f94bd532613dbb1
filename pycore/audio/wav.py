"""WAV files in pure Python: `encode_wav` and `decode_wav` (browser-safe, no numpy).

The demix page builds its stem downloads with encode_wav, and decode_wav reads WAVs
back where soundfile is not available. Everything is done in bulk with array/bytes
operations; the only per-sample Python is one list comprehension for the float ->
integer conversion when encoding PCM (about 0.1 us per sample natively).

Conventions (the same as libsndfile, so files match what `stemtone separate` writes):
  - PCM with b bits stores k = round(x * 2**(b-1)) clipped to [-2**(b-1), 2**(b-1) - 1];
    decoding gives k / 2**(b-1). So -1.0 and 0.5 round-trip exactly and +1.0 becomes
    the largest code, 1 - 2**(1-b).
  - 8-bit PCM is unsigned (offset 128), as the WAV format defines it.
  - bits=32 in encode_wav means IEEE float32 (never clips); decode_wav reads 32-bit
    integer PCM as well as float32/float64.
  - Samples are interleaved frame by frame; multi-byte values are little-endian.
Samples must be finite: NaN has no PCM code (callers validate their audio first).
"""

from __future__ import annotations

import array
import struct
import sys

FORMAT_PCM = 1
FORMAT_FLOAT = 3
FORMAT_EXTENSIBLE = 0xFFFE

# Adding 1.5 * 2**52 to a double (|x| < 2**51) rounds x to the nearest integer k and
# leaves k's two's complement in the low mantissa bits, i.e. in the low bytes of the
# little-endian double: a bulk float -> int conversion without a Python int per sample.
_MAGIC = 1.5 * 2.0 ** 52
CHUNK = 1 << 18  # samples converted per list comprehension (bounds the temporary list)


def _floats(ch):
    """A channel as something indexable of Python floats (array('f'), list, numpy array...)."""
    if isinstance(ch, array.array) and ch.typecode in "fd":
        return ch
    tolist = getattr(ch, "tolist", None)  # numpy arrays: one C-level conversion
    return tolist() if tolist is not None else ch


def _interleave(chans, typecode):
    """[C arrays of n values] -> one array of C*n values, frame by frame."""
    if len(chans) == 1:
        return chans[0]
    c, n = len(chans), len(chans[0])
    out = array.array(typecode, bytes(array.array(typecode).itemsize * c * n))
    for i, ch in enumerate(chans):
        out[i::c] = ch
    return out


def _pcm_bytes(samples, bits):
    """Float samples -> little-endian signed PCM bytes of `bits` bits (16, 24 or 32)."""
    scale = float(2 ** (bits - 1))
    hi, lo, m = _MAGIC + (scale - 1.0), _MAGIC - scale, _MAGIC
    top = (scale - 0.5) / scale  # from here on x * scale would round past the largest code
    width = bits // 8
    out = bytearray()
    for start in range(0, len(samples), CHUNK):  # a chunk at a time: Python floats are big
        # one comprehension: clip, scale and round (by the magic add)
        d = array.array("d", [hi if v >= top else lo if v < -1.0 else m + v * scale
                              for v in samples[start:start + CHUNK]])
        if sys.byteorder != "little":
            d.byteswap()
        raw = d.tobytes()
        part = bytearray(width * len(d))
        for i in range(width):  # keep the low `width` bytes of every 8-byte double
            part[i::width] = raw[i::8]
        out += part
    return bytes(out)


def encode_wav(channels, sample_rate: int, bits: int = 16) -> bytes:
    """A complete WAV file. channels: list of C equal-length float sequences
    (array('f'), lists, numpy arrays); bits: 16 or 24 (PCM, rounded and clipped to
    [-1, 1]) or 32 (IEEE float, stored as float32 without clipping)."""
    if bits not in (16, 24, 32):
        raise ValueError(f"encode_wav: bits must be 16, 24 or 32 (float), got {bits!r}")
    if not channels:
        raise ValueError("encode_wav: no channels")
    n = len(channels[0])
    if any(len(ch) != n for ch in channels):
        raise ValueError(f"encode_wav: channels of different lengths {[len(ch) for ch in channels]}")
    if not (isinstance(sample_rate, int) and 0 < sample_rate < 2 ** 32):
        raise ValueError(f"encode_wav: bad sample rate {sample_rate!r}")
    c = len(channels)
    if bits == 32:
        chans = [ch if isinstance(ch, array.array) and ch.typecode == "f" else array.array("f", _floats(ch))
                 for ch in channels]
        inter = _interleave(chans, "f")
        if sys.byteorder != "little":
            inter = array.array("f", inter)
            inter.byteswap()
        data, tag = inter.tobytes(), FORMAT_FLOAT
    else:
        chans = [ch if isinstance(ch, array.array) and ch.typecode in "fd" else array.array("d", _floats(ch))
                 for ch in channels]
        if len({ch.typecode for ch in chans}) > 1:
            chans = [array.array("d", ch) if ch.typecode == "f" else ch for ch in chans]
        data, tag = _pcm_bytes(_interleave(chans, chans[0].typecode), bits), FORMAT_PCM
    if len(data) > 2 ** 32 - 64:
        raise ValueError(f"encode_wav: {len(data) / 2**30:.1f} GiB of samples do not fit a WAV file (4 GiB)")
    block = c * bits // 8
    fmt = struct.pack("<HHIIHH", tag, c, sample_rate, sample_rate * block, block, bits)
    chunks = [b"fmt ", struct.pack("<I", len(fmt)), fmt]
    if tag == FORMAT_FLOAT:  # non-PCM formats carry a fact chunk with the frame count
        chunks += [b"fact", struct.pack("<II", 4, n)]
    chunks += [b"data", struct.pack("<I", len(data)), data]
    if len(data) % 2:
        chunks.append(b"\0")  # chunks are padded to an even size
    body = b"".join(chunks)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def _chunks(buf):
    """Yield (id, start, size) of the RIFF chunks after the WAVE header; the size is
    clipped to the bytes present (streamed or truncated files)."""
    pos = 12
    while pos + 8 <= len(buf):
        cid, size = bytes(buf[pos:pos + 4]), struct.unpack_from("<I", buf, pos + 4)[0]
        start = pos + 8
        yield cid, start, min(size, len(buf) - start)
        pos = start + size + (size & 1)


def _from_bytes(typecode, raw):
    a = array.array(typecode)
    a.frombytes(raw)  # bulk copy (array(typecode, memoryview) would iterate bytes)
    return a


def decode_wav(data):
    """Parse a WAV file -> (channels, sample_rate), channels a list of array('f').
    Reads PCM 8/16/24/32-bit and IEEE float 32/64-bit (also in WAVE_FORMAT_EXTENSIBLE
    files). Raises ValueError with the reason for anything else."""
    buf = memoryview(data).cast("B")
    if len(buf) < 12 or bytes(buf[0:4]) != b"RIFF" or bytes(buf[8:12]) != b"WAVE":
        raise ValueError("decode_wav: not a WAV file (no RIFF/WAVE header)")
    fmt = body = None
    for cid, start, size in _chunks(buf):
        if cid == b"fmt " and size >= 16:
            fmt = buf[start:start + size]
        elif cid == b"data":
            body = buf[start:start + size]
            break
    if fmt is None:
        raise ValueError("decode_wav: no fmt chunk")
    if body is None:
        raise ValueError("decode_wav: no data chunk")
    tag, c, rate, _, block, bits = struct.unpack_from("<HHIIHH", fmt, 0)
    if tag == FORMAT_EXTENSIBLE:
        if len(fmt) < 26:
            raise ValueError("decode_wav: truncated WAVE_FORMAT_EXTENSIBLE header")
        tag = struct.unpack_from("<H", fmt, 24)[0]  # first two bytes of the subformat GUID
    if c < 1 or rate < 1:
        raise ValueError(f"decode_wav: bad header ({c} channels, {rate} Hz)")
    kinds = {(FORMAT_PCM, 8), (FORMAT_PCM, 16), (FORMAT_PCM, 24), (FORMAT_PCM, 32),
             (FORMAT_FLOAT, 32), (FORMAT_FLOAT, 64)}
    if (tag, bits) not in kinds:
        raise ValueError(f"decode_wav: unsupported sample format (format tag {tag}, {bits} bits)")
    width = bits // 8
    if block != c * width:
        raise ValueError(f"decode_wav: block size {block} does not match {c} channels x {bits} bits")
    n = len(body) // block
    body = body[:n * block]

    if tag == FORMAT_FLOAT:
        samples = _from_bytes("f" if bits == 32 else "d", body)
        if sys.byteorder != "little":
            samples.byteswap()
        scale = None
    elif bits == 8:
        samples, offset, scale = _from_bytes("B", body), 128, 1 / 128
    else:
        if bits == 24:  # widen each 3-byte value to 4 bytes (low byte 0): value * 256
            wide = bytearray(4 * len(body) // 3)
            for i in range(3):
                wide[i + 1::4] = body[i::3]
            body, scale = wide, 1 / 2 ** 31
        else:
            scale = 1 / 2 ** (bits - 1)
        samples = _from_bytes("h" if bits == 16 else "i", body)
        if sys.byteorder != "little":
            samples.byteswap()
        offset = 0

    channels = []
    for i in range(c):
        s = samples[i::c] if c > 1 else samples
        if scale is None:
            channels.append(s if s.typecode == "f" else array.array("f", s))
            continue
        ch = array.array("f")
        for start in range(0, len(s), CHUNK):
            ch.extend(array.array("f", [(v - offset) * scale for v in s[start:start + CHUNK]]))
        channels.append(ch)
    return channels, rate
