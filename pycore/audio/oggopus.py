"""Ogg Opus files in pure Python (RFC 7845 in an RFC 3533 Ogg stream): `ogg_opus`.

The demix page encodes its compressed downloads with the browser's WebCodecs
AudioEncoder, which returns bare Opus packets: a player needs them in a container.
This module writes that container, browser-safe (no numpy, standard library only).

Why by hand: the page runs on Pyodide, which has no Ogg muxer. libogg/libopusenc
(pyogg, opuslib) and libsndfile (soundfile) are native libraries the page does not
load, and libsndfile only writes Opus it encodes itself, never packets given to it;
mutagen reads Ogg but does not write streams. The format is small: pages of at most
255 lacing segments with a CRC, two header packets and granule positions.

The file (RFC 7845):
    page 0 (beginning of stream):  OpusHead, alone: version 1, channels, pre-skip,
                                   the input's sample rate, output gain 0, mapping 0
    page 1...:                     OpusTags (vendor string, user comments)
    then the audio packets, on pages of about PAGE_BYTES each; the last page carries
    the end-of-stream flag.
Granule positions count 48 kHz samples (Opus always decodes at 48 kHz), pre-skip
included: a page's granule is the decoded length after its last complete packet,
-1 when no packet ends on it. The last page's granule is pre-skip + the audio's length
at 48 kHz, which trims the encoder's padding at the end. Every packet's length comes
from its own TOC byte (RFC 6716 section 3.1), not from the encoder's timestamps.

The Ogg CRC is CRC-32 with polynomial 0x04C11DB7, MSB first, initial value 0 and no
final XOR: not zlib's (reflected, initial and final 0xFFFFFFFF). `ogg_crc` still runs
in zlib's C code (a Python loop per byte is slow on Pyodide): the MSB-first CRC of some
bytes is the bit-reversed LSB-first CRC of the bytes with their bits reversed, and
zlib.crc32(data, 0xFFFFFFFF) ^ 0xFFFFFFFF is the LSB-first CRC with initial value 0.
"""

from __future__ import annotations

import struct
import zlib

OPUS_RATE = 48000      # Opus decodes at 48 kHz whatever the input's rate
OPUS_BITRATE_PER_CHANNEL = 80_000  # the page's downloads: 160 kbps stereo, 80 kbps mono
PAGE_BYTES = 4096      # a page ends after the packet that brings its body to this size
MAX_SEGMENTS = 255     # lacing values per page (one byte counts them)

FLAG_CONTINUED = 0x01  # the page begins with the rest of a packet of the previous page
FLAG_FIRST = 0x02      # beginning of stream
FLAG_LAST = 0x04       # end of stream

_REVERSED = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))  # each byte with its bits reversed


def ogg_crc(data) -> int:
    """The Ogg page checksum of `data` (bytes-like): CRC-32, polynomial 0x04C11DB7,
    MSB first, initial value 0, no final XOR (see the module docstring)."""
    lsb_first = zlib.crc32(bytes(data).translate(_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{lsb_first:032b}"[::-1], 2)


# RFC 6716 section 3.1: the frame length of each of the 32 TOC configurations, in 48 kHz
# samples: SILK-only 10/20/40/60 ms (configs 0-11), hybrid 10/20 ms (12-15), CELT-only
# 2.5/5/10/20 ms (16-31)
_FRAME_SAMPLES = [480, 960, 1920, 2880] * 3 + [480, 960] * 2 + [120, 240, 480, 960] * 4


def opus_packet_samples(packet) -> int:
    """The number of 48 kHz samples an Opus packet decodes to, from its TOC byte:
    frame length x frame count (code 0: one frame, 1 and 2: two, 3: the count in the
    second byte). ValueError for an empty or malformed packet."""
    if len(packet) < 1:
        raise ValueError("Opus packet is empty (no TOC byte)")
    toc = packet[0]
    frame, code = _FRAME_SAMPLES[toc >> 3], toc & 3
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        if len(packet) < 2:
            raise ValueError("Opus packet with code 3 has no frame count byte")
        frames = packet[1] & 0x3F
        if frames == 0:
            raise ValueError("Opus packet with code 3 holds no frames")
    if frame * frames > 5760:  # RFC 6716: at most 120 ms per packet
        raise ValueError(f"Opus packet of {frame * frames} samples exceeds 120 ms")
    return frame * frames


def encoder_config(channels: int, sample_rate: int) -> dict:
    """The WebCodecs AudioEncoder configuration of the page's Opus downloads: the one
    the page asks isConfigSupported about and the one its worker encodes with."""
    return {"codec": "opus", "sampleRate": sample_rate, "numberOfChannels": channels,
            "bitrate": OPUS_BITRATE_PER_CHANNEL * channels}


def opus_head(channels: int, pre_skip: int, input_rate: int, gain_db: float = 0.0) -> bytes:
    """The identification header (RFC 7845 section 5.1), channel mapping family 0
    (mono or stereo)."""
    if channels not in (1, 2):
        raise ValueError(f"Ogg Opus: {channels} channels; this writer handles mono and stereo (mapping family 0)")
    if not 0 <= pre_skip < 65536:
        raise ValueError(f"Ogg Opus: pre-skip {pre_skip} is not a 16-bit count")
    if not 0 <= input_rate < 2 ** 32:
        raise ValueError(f"Ogg Opus: bad input sample rate {input_rate}")
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, input_rate, round(gain_db * 256), 0)


def opus_tags(vendor: str, comments=()) -> bytes:
    """The comment header (RFC 7845 section 5.2): the vendor string and "KEY=value" comments."""
    parts = [b"OpusTags", _string(vendor), struct.pack("<I", len(comments))]
    parts += [_string(c) for c in comments]
    return b"".join(parts)


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<I", len(raw)) + raw


def lacing(size: int) -> list:
    """The segment table entries of one packet of `size` bytes: 255 for each full 255
    bytes, then the rest (0 when the size is a multiple of 255, which ends the packet)."""
    return [255] * (size // 255) + [size % 255]


class OggStream:
    """The pages of one logical Ogg stream. add(packet, granule) appends a packet whose
    end is at `granule`; flush() ends the current page; finish() ends the last page
    with the end-of-stream flag (the page of the last packet: never an empty page) and
    returns the file's bytes."""

    def __init__(self, serial: int):
        self.serial = serial & 0xFFFFFFFF
        self.pages = []       # finished pages (bytes)
        self.sequence = 0
        self.lacing = []      # this page's segment table
        self.body = []        # this page's packet data (parts)
        self.granule = -1     # end of the last packet that completes on this page
        self.continued = False  # this page begins with the rest of a packet
        self.due = False      # this page is full: it ends before the next packet (or as the last)

    def add(self, packet: bytes, granule: int, flush_at: int = PAGE_BYTES):
        """Append one packet ending at `granule`; pages end when they reach 255
        segments (a packet may then continue on the next page) or, after this packet,
        when the body holds `flush_at` bytes or more."""
        if self.due:
            self.flush()
        values = lacing(len(packet))
        pos = 0
        while values:
            room = MAX_SEGMENTS - len(self.lacing)
            take, values = values[:room], values[room:]
            size = sum(take)
            self.lacing += take
            self.body.append(packet[pos:pos + size])
            pos += size
            if values:  # the packet goes on: this page is full and no packet ends on it here
                self._page(continues=True)
        self.granule = granule
        # the page ends before the next packet, so that the last one can carry the end flag
        self.due = sum(self.lacing) >= flush_at or len(self.lacing) == MAX_SEGMENTS

    def flush(self, last=False):
        """End the current page (if it holds anything, or to mark the end of the stream)."""
        if self.lacing or last:
            self._page(continues=False, last=last)

    def _page(self, continues, last=False):
        flags = (FLAG_CONTINUED if self.continued else 0) | (FLAG_FIRST if self.sequence == 0 else 0)
        flags |= FLAG_LAST if last else 0
        # a page on which no packet completes has granule -1 (continues: its packet ends later)
        granule = -1 if continues and not self._completes() else self.granule
        header = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, self.serial, self.sequence, 0,
                             len(self.lacing)) + bytes(self.lacing)
        page = bytearray(header + b"".join(self.body))
        struct.pack_into("<I", page, 22, ogg_crc(page))  # the CRC is computed with its field zero
        self.pages.append(bytes(page))
        self.sequence += 1
        self.continued = continues
        self.lacing, self.body, self.due = [], [], False

    def _completes(self) -> bool:
        """Whether a packet ends on the current page before the one that continues:
        a lacing value below 255 other than the last one."""
        return any(v < 255 for v in self.lacing[:-1])

    def finish(self) -> bytes:
        self.flush(last=True)
        return b"".join(self.pages)


def ogg_opus(packets, channels: int, pre_skip: int, input_rate: int, frames: int | None = None,
             vendor: str = "Stemtone", comments=(), serial: int = 0x5354454D) -> bytes:
    """A complete Ogg Opus file of `packets` (bytes-like Opus packets, in order).

    channels: 1 or 2; pre_skip: 48 kHz samples the decoder drops at the start (the
    encoder's delay); input_rate: the rate of the audio that was encoded (informative:
    players decode at 48 kHz and resample); frames: the audio's length at input_rate,
    which trims the end (the encoder pads its last packet): the last page's granule is
    pre_skip + frames at 48 kHz. Packets that begin after that end decode only padding
    and are left out. None keeps every decoded sample. ValueError when the packets are
    shorter than pre_skip + frames."""
    ends, total = [], 0
    for i, p in enumerate(packets):
        try:
            total += opus_packet_samples(p)
        except ValueError as e:
            raise ValueError(f"Ogg Opus: packet {i}: {e}") from None
        ends.append(total)
    end = total if frames is None else pre_skip + round(frames * OPUS_RATE / input_rate)
    if end > total:
        raise ValueError(f"Ogg Opus: the packets decode to {total} samples at 48 kHz, fewer than the "
                         f"pre-skip ({pre_skip}) plus the audio ({end - pre_skip}): feed the encoder "
                         "silence after the audio (at least the pre-skip) before flushing it")
    stream = OggStream(serial)
    stream.add(opus_head(channels, pre_skip, input_rate), 0)
    stream.flush()  # OpusHead alone on the first page
    stream.add(opus_tags(vendor, comments), 0)
    stream.flush()  # the audio starts on a page of its own
    # every packet that ends past the end belongs on the last page (only there may the
    # granule be less than the samples decoded), so no earlier page ends past it
    last_start = next((i for i, e in enumerate(ends) if e > end), len(ends))
    for i, (p, e) in enumerate(zip(packets, ends)):
        if e - opus_packet_samples(p) >= end and i > 0:
            break  # only padding from here on
        if i == last_start:
            stream.flush()
        stream.add(bytes(p), min(e, end), flush_at=PAGE_BYTES if i < last_start else 1 << 62)
    return stream.finish()
