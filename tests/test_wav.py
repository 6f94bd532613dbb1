"""pycore.audio.wav: encode_wav / decode_wav against libsndfile (soundfile) and the PCM formula."""

import array
import io
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from pycore.audio.wav import decode_wav, encode_wav

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pcm_codes(x, bits):
    """The documented conversion: round(x * 2**(bits-1)), clipped to the integer range."""
    scale = 2.0 ** (bits - 1)
    return np.clip(np.rint(np.asarray(x, np.float64) * scale), -scale, scale - 1).astype(np.int64)


def signal(rng, channels, n):
    x = rng.uniform(-1.2, 1.2, (channels, n)).astype(np.float32)  # includes clipping
    x[:, :8] = np.array([0.0, 1.0, -1.0, 0.5, -0.5, 1 - 2 ** -16, -1 - 2 ** -16, 2 ** -17], np.float32)[:, None].T
    return x


@pytest.mark.parametrize("bits,subtype", [(16, "PCM_16"), (24, "PCM_24"), (32, "FLOAT")])
@pytest.mark.parametrize("channels", [1, 2, 5])
def test_encode_matches_formula_and_soundfile_reads_it(rng, bits, subtype, channels):
    n = 1001  # odd: 24-bit mono data has an odd byte count (pad byte)
    x = signal(rng, channels, n)
    data = encode_wav([array.array("f", ch) for ch in x], 22050, bits)
    info = sf.info(io.BytesIO(data))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (22050, channels, n, subtype)
    got, _ = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
    if bits == 32:
        np.testing.assert_array_equal(got.T, x)  # float32 stored exactly, never clipped
    else:
        np.testing.assert_array_equal(np.rint(got.T * 2.0 ** (bits - 1)), pcm_codes(x, bits))


@pytest.mark.parametrize("bits", [16, 24, 32])
def test_round_trip(rng, bits):
    x = rng.uniform(-1, 1, (2, 3000)).astype(np.float32)
    chans, sr = decode_wav(encode_wav(list(x), 48000, bits))  # numpy arrays accepted too
    assert sr == 48000 and len(chans) == 2 and all(isinstance(c, array.array) and c.typecode == "f" for c in chans)
    got = np.array(chans)
    if bits == 32:
        np.testing.assert_array_equal(got, x)
    else:  # decode is code / 2**(bits-1): the rounding error is at most half a step
        want = pcm_codes(x, bits) / 2.0 ** (bits - 1)
        np.testing.assert_array_equal(got, want.astype(np.float32))
        assert np.abs(got - x).max() <= 0.5 / 2 ** (bits - 1) + 1e-7


@pytest.mark.parametrize("bits", [16, 24])
def test_chunked_conversion(rng, monkeypatch, bits):
    """Long audio is converted a chunk at a time; chunk edges change nothing."""
    from pycore.audio import wav

    x = rng.uniform(-1.1, 1.1, (3, 1000)).astype(np.float32)
    whole = encode_wav(list(x), 8000, bits)
    monkeypatch.setattr(wav, "CHUNK", 7)
    assert encode_wav(list(x), 8000, bits) == whole
    np.testing.assert_array_equal(np.array(decode_wav(whole)[0]), pcm_codes(x, bits) / 2.0 ** (bits - 1))


@pytest.mark.parametrize("subtype,bits", [("PCM_U8", 8), ("PCM_16", 16), ("PCM_24", 24), ("PCM_32", 32),
                                          ("FLOAT", 32), ("DOUBLE", 64)])
@pytest.mark.parametrize("fmt", ["WAV", "WAVEX"])
def test_decode_what_libsndfile_writes(rng, subtype, bits, fmt):
    x = rng.uniform(-0.99, 0.99, (1234, 3)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, 44100, format=fmt, subtype=subtype)
    chans, sr = decode_wav(buf.getvalue())
    want, _ = sf.read(io.BytesIO(buf.getvalue()), dtype="float64")  # libsndfile's own reading
    assert sr == 44100 and len(chans) == 3
    # both divide the integer code by 2**(bits-1): exact in float32 up to 24 bits;
    # 32-bit PCM and doubles round to float32 (|x| < 1: error <= 2**-25)
    exact = bits < 32 or subtype == "FLOAT"
    np.testing.assert_allclose(np.array(chans).T, want, rtol=0, atol=0 if exact else 2 ** -25)


def test_zero_length_and_chunks_around_data():
    assert decode_wav(encode_wav([array.array("f")], 8000, 16)) == ([array.array("f")], 8000)
    # a LIST chunk before the data and another after it; odd-sized chunk padding
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    samples = struct.pack("<3h", 16384, -32768, 1)
    body = (b"fmt " + struct.pack("<I", 16) + fmt + b"LIST" + struct.pack("<I", 3) + b"abc\0"
            + b"data" + struct.pack("<I", len(samples)) + samples + b"junk" + struct.pack("<I", 2) + b"zz")
    wav = b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body
    chans, sr = decode_wav(wav)
    assert sr == 8000 and list(chans[0]) == [0.5, -1.0, 1 / 32768]


def test_truncated_data_keeps_whole_frames():
    data = encode_wav([array.array("f", [0.25] * 100), array.array("f", [-0.25] * 100)], 8000, 24)
    chans, _ = decode_wav(data[:-7])  # the data chunk claims more bytes than are there
    assert len(chans[0]) == len(chans[1]) == 98 and set(chans[1]) == {-0.25}


@pytest.mark.parametrize("data,message", [
    (b"", "not a WAV file"),
    (b"hello, this is a text file renamed .wav\n", "not a WAV file"),
    (b"RIFF\x04\x00\x00\x00WAVE", "no fmt chunk"),
])
def test_decode_rejects_non_wav(data, message):
    with pytest.raises(ValueError, match=message):
        decode_wav(data)


def test_decode_rejects_unsupported_encoding():
    buf = io.BytesIO()
    sf.write(buf, np.zeros(100, np.float32), 8000, format="WAV", subtype="ULAW")
    with pytest.raises(ValueError, match="unsupported sample format"):
        decode_wav(buf.getvalue())


def test_encode_rejects_bad_arguments():
    with pytest.raises(ValueError, match="bits"):
        encode_wav([[0.0]], 8000, 8)
    with pytest.raises(ValueError, match="different lengths"):
        encode_wav([[0.0, 0.1], [0.0]], 8000, 16)
    with pytest.raises(ValueError, match="no channels"):
        encode_wav([], 8000, 16)
    with pytest.raises(ValueError, match="sample rate"):
        encode_wav([[0.0]], 0, 16)


def test_works_without_numpy():
    """The browser has no numpy: encode and decode with numpy made unimportable."""
    code = ("import sys; sys.modules['numpy'] = None\n"
            "import array; from pycore.audio.wav import encode_wav, decode_wav\n"
            "x = [array.array('f', [0.5, -0.25, 1.5]), array.array('f', [0.0, 0.125, -2.0])]\n"
            "for bits in (16, 24, 32):\n"
            "    chans, sr = decode_wav(encode_wav(x, 44100, bits))\n"
            "    print(bits, sr, [list(c) for c in chans])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [
        "16 44100 [[0.5, -0.25, 0.999969482421875], [0.0, 0.125, -1.0]]",
        "24 44100 [[0.5, -0.25, 0.9999998807907104], [0.0, 0.125, -1.0]]",
        "32 44100 [[0.5, -0.25, 1.5], [0.0, 0.125, -2.0]]",
    ]
