"""pycore/audio/oggopus.py: the Ogg Opus writer of the demix page's compressed downloads.

Checked against independent references: a table-free bitwise CRC written here from
the Ogg spec (RFC 3533), a page parser written here, and libsndfile (soundfile), which
both writes real Opus packets (its own Ogg Opus encoder: the packets we re-wrap) and
decodes the files this module writes.
"""

import struct
import zlib

import numpy as np
import pytest
import soundfile as sf

from pycore.audio.oggopus import (PAGE_BYTES, OggStream, lacing, ogg_crc, ogg_opus, opus_head,
                                  opus_packet_samples, opus_tags)


def bitwise_crc(data) -> int:
    """RFC 3533's CRC, one bit at a time: polynomial 0x04C11DB7, MSB first, init 0, no final XOR."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def parse_pages(data):
    """[(flags, granule, serial, sequence, crc, segment table, body, the page with its
    CRC field zeroed)] of an Ogg stream; asserts the capture pattern and each page's CRC
    (with the bitwise CRC)."""
    pages, pos = [], 0
    while pos < len(data):
        assert data[pos:pos + 4] == b"OggS", f"no capture pattern at byte {pos}"
        version, flags, granule, serial, seq, crc, n = struct.unpack_from("<BBqIIIB", data, pos + 4)
        assert version == 0
        table = list(data[pos + 27:pos + 27 + n])
        end = pos + 27 + n + sum(table)
        page = bytearray(data[pos:end])
        page[22:26] = b"\0\0\0\0"
        assert bitwise_crc(page) == crc, f"page {seq}: CRC mismatch"
        pages.append((flags, granule, serial, seq, crc, table, bytes(data[pos + 27 + n:end]), bytes(page)))
        pos = end
    return pages


def packets_of(pages):
    """[(packet, index of the page it ends on)]: segments joined across pages."""
    out, current = [], b""
    for i, (flags, *_, table, body, _page) in enumerate(pages):
        assert bool(flags & 1) == (current != b""), f"page {i}: continuation flag {flags & 1} is wrong"
        pos = 0
        for v in table:
            current += body[pos:pos + v]
            pos += v
            if v < 255:
                out.append((current, i))
                current = b""
    assert current == b"", "the stream ends inside a packet"
    return out


def celt_packet(size, toc=0xFC):
    """A packet of `size` bytes whose TOC says one CELT 20 ms stereo frame (960 samples);
    the body is not decoded by these container tests."""
    return bytes([toc]) + bytes((i * 7 + size) & 0xFF for i in range(size - 1))


# ------------------------------------------------------------------ CRC and headers


def test_crc_matches_the_bitwise_definition():
    rng = np.random.default_rng(0)
    for n in (0, 1, 3, 27, 255, 4096):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert ogg_crc(data) == bitwise_crc(data), n
    # the catalogue's CRC-32/POSIX check value 0x765E7680 is this CRC with a final XOR
    assert ogg_crc(b"123456789") == bitwise_crc(b"123456789") == 0x765E7680 ^ 0xFFFFFFFF
    assert ogg_crc(b"OggS") != zlib.crc32(b"OggS")  # not zlib's CRC


def test_opus_packet_samples_follow_the_toc():
    # config -> frame length (RFC 6716 Table 2): SILK 10/20/40/60 ms, hybrid 10/20, CELT 2.5/5/10/20
    want = {0: 480, 1: 960, 2: 1920, 3: 2880, 12: 480, 13: 960, 16: 120, 17: 240, 18: 480, 19: 960, 31: 960}
    for config, frame in want.items():
        assert opus_packet_samples(bytes([config << 3])) == frame
        assert opus_packet_samples(bytes([config << 3 | 1])) == 2 * frame  # two frames, equal size
        assert opus_packet_samples(bytes([config << 3 | 2, 5])) == 2 * frame  # two frames, sizes coded
    assert opus_packet_samples(bytes([19 << 3 | 3, 0x80 | 6])) == 6 * 960  # code 3: the count in byte 1
    for bad in (b"", bytes([3]), bytes([3, 0]), bytes([3 << 3 | 3, 3])):  # empty; no count; 0 frames; 180 ms
        with pytest.raises(ValueError, match="Opus packet"):
            opus_packet_samples(bad)


def test_headers():
    head = opus_head(2, 312, 44100)
    assert head == b"OpusHead" + bytes([1, 2]) + struct.pack("<HIhB", 312, 44100, 0, 0)
    tags = opus_tags("Stemtone", ["TITLE=vocals"])
    assert tags == b"OpusTags" + struct.pack("<I", 8) + b"Stemtone" + struct.pack("<II", 1, 12) + b"TITLE=vocals"
    with pytest.raises(ValueError, match="mono and stereo"):
        opus_head(6, 312, 48000)
    with pytest.raises(ValueError, match="pre-skip"):
        opus_head(2, 70000, 48000)


# ------------------------------------------------------------------ pages


def test_lacing_of_packets_around_255_bytes():
    assert lacing(0) == [0]
    assert lacing(254) == [254]
    assert lacing(255) == [255, 0]  # a multiple of 255 ends with a 0 segment
    assert lacing(300) == [255, 45]
    assert lacing(510) == [255, 255, 0]


def test_file_layout_granules_and_end_of_stream():
    sizes = [10, 254, 255, 256, 510, 700, 3, 1275] * 12  # 96 packets of 960 samples
    packets = [celt_packet(s) for s in sizes]
    pre_skip, frames = 312, 91000 - 312  # the audio ends inside packet 95 of 96
    data = ogg_opus(packets, 2, pre_skip, 48000, frames=frames, comments=["TITLE=test"])
    pages = parse_pages(data)
    flags = [p[0] for p in pages]
    assert flags[0] == 0x02 and all(f & 0x02 == 0 for f in flags[1:])  # beginning of stream: page 0 only
    assert flags[-1] & 0x04 and all(f & 0x04 == 0 for f in flags[:-1])  # end of stream: the last page only
    assert len({p[2] for p in pages}) == 1 and [p[3] for p in pages] == list(range(len(pages)))
    got = packets_of(pages)
    # OpusHead alone on page 0, OpusTags on page 1, audio from page 2
    assert got[0] == (opus_head(2, pre_skip, 48000), 0) and pages[0][5] == [len(got[0][0])]
    assert got[1][0] == opus_tags("Stemtone", ["TITLE=test"]) and got[1][1] == 1 and pages[0][1] == pages[1][1] == 0
    audio = got[2:]
    end = pre_skip + frames
    assert [p for p, _ in audio] == packets[:len(audio)]
    assert len(audio) == len(packets) - 1  # the last packet begins after the end: padding, left out
    # each page's granule: 960 x the packets that end on it or before; the last one: the end
    for i, (flags_, granule, *_rest) in enumerate(pages[2:], start=2):
        done = sum(1 for _, page in audio if page <= i)
        assert granule == (end if i == len(pages) - 1 else 960 * done), i
        assert granule <= end
    # every page but the last holds about PAGE_BYTES, whole packets (no 255-segment overflow here)
    assert all(len(p[6]) < PAGE_BYTES + 1275 for p in pages[2:])
    # the last page holds every packet that ends past the end (only it may trim)
    last = len(pages) - 1
    assert all(page == last for (_, page), e in zip(audio, range(960, 960 * 97, 960)) if e > end)


def test_a_packet_longer_than_a_page_continues_on_the_next():
    stream = OggStream(serial=7)
    big = bytes(range(256)) * 300  # 76,800 bytes: 302 segments, more than one page holds
    stream.add(b"first", 100)
    stream.add(big, 200)
    stream.add(b"after", 300)
    pages = parse_pages(stream.finish())
    # page 0: "first" and 254 segments of "big"; page 1: the rest of "big" (12,030 bytes:
    # more than PAGE_BYTES, so the page ends there); page 2: "after", the end of the stream
    assert [len(p[5]) for p in pages] == [255, 48, 1]
    assert pages[0][1] == 100  # "first" ends on page 0: its granule, though "big" goes on
    assert [p[0] for p in pages] == [0x02, 0x01, 0x04] and [p[1] for p in pages[1:]] == [200, 300]
    assert [p for p, _ in packets_of(pages)] == [b"first", big, b"after"]
    # a page on which no packet ends has granule -1
    stream = OggStream(serial=7)
    stream.add(big, 200)
    pages = parse_pages(stream.finish())
    assert pages[0][1] == -1 and pages[1][1] == 200 and pages[1][0] == 0x01 | 0x04


def test_too_few_packets_for_the_audio_is_refused():
    with pytest.raises(ValueError, match="silence after the audio"):
        ogg_opus([celt_packet(100)] * 10, 2, 312, 48000, frames=9600)  # 9600 samples, 312 + 9600 needed
    with pytest.raises(ValueError, match="packet 1"):
        ogg_opus([celt_packet(100), b""], 2, 312, 48000)


# ------------------------------------------------------------------ real Opus packets, decoded


def test_real_opus_packets_rewrapped_decode_as_libsndfile_wrote_them(tmp_path):
    """libsndfile encodes a signal to Ogg Opus; its packets, re-wrapped by ogg_opus with
    its pre-skip and the signal's length, decode (by libsndfile) to exactly what its
    own file decodes to, and match the signal."""
    if "OPUS" not in sf.available_subtypes("OGG"):
        pytest.skip("this libsndfile has no Ogg Opus")
    rate, n = 48000, 48000 + 777
    t = np.arange(n) / rate
    x = np.stack([0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t),
                  0.3 * np.sin(2 * np.pi * 660 * t + 1.0)]).T.astype(np.float32)
    theirs = tmp_path / "libsndfile.opus"
    sf.write(theirs, x, rate, format="OGG", subtype="OPUS")
    pages = parse_pages(theirs.read_bytes())  # their CRCs agree with the bitwise CRC...
    assert all(ogg_crc(p[7]) == p[4] for p in pages)  # ... and with ogg_crc
    packets = [p for p, _ in packets_of(pages)]
    head, audio = packets[0], packets[2:]
    pre_skip = struct.unpack_from("<H", head, 10)[0]
    ours = tmp_path / "ours.opus"
    ours.write_bytes(ogg_opus(audio, 2, pre_skip, rate, frames=n))
    parse_pages(ours.read_bytes())
    y_theirs, _ = sf.read(theirs, dtype="float32")
    y_ours, sr = sf.read(ours, dtype="float32")
    assert sr == 48000 and y_ours.shape == x.shape == y_theirs.shape
    np.testing.assert_array_equal(y_ours, y_theirs)
    snr = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((y_ours - x) ** 2.0))
    print(f"\nlibsndfile's Opus re-wrapped by ogg_opus: SNR {snr:.1f} dB against the signal")
    assert snr > 15.0
