"""pycore.weights.safetensors: round trips, the exact byte format, and rejection of bad files."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from pycore.weights import safetensors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def handmade(tensors, metadata=None, pad=0, extra=b""):
    """A safetensors file built independently of pycore: tensors is a list of
    (name, dtype string, shape, raw bytes), stored in the given order."""
    header, pos = {}, 0
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + len(raw)]}
        pos += len(raw)
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode() + b" " * pad
    return struct.pack("<Q", len(text)) + text + b"".join(t[3] for t in tensors) + extra


def test_roundtrip(tmp_path, rng):
    tensors = {
        "conv.weight": rng.standard_normal((16, 2, 5, 5)).astype(np.float32),
        "b": rng.standard_normal(7).astype(np.float16),
        "scalar": np.array(3.5, np.float32),
        "empty": np.zeros((0, 3), np.float32),
        "fortran": np.asfortranarray(rng.standard_normal((3, 5)).astype(np.float32)),
        "bigendian": rng.standard_normal((2, 3)).astype(">f4"),
    }
    meta = {"model": "test", "note": "ünïcode"}
    path = tmp_path / "t.safetensors"
    safetensors.save(path, tensors, meta)

    entries = safetensors.load(path)
    assert set(entries) == set(tensors)
    for k, a in tensors.items():
        e = entries[k]
        assert e.dtype == {4: "f32", 2: "f16"}[a.dtype.itemsize]
        assert e.shape == a.shape
        assert isinstance(e.data, memoryview)
        assert bytes(e.data) == np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
    arrays = safetensors.load_numpy(path)
    for k, a in tensors.items():
        assert arrays[k].dtype == a.dtype.newbyteorder("<") and np.array_equal(arrays[k], a)
    assert safetensors.load_metadata(path) == meta
    # bytes and memoryview sources read the same as the path
    raw = path.read_bytes()
    for src in (raw, memoryview(raw), bytearray(raw)):
        assert {k: (e.dtype, e.shape, bytes(e.data)) for k, e in safetensors.load(src).items()} == \
               {k: (e.dtype, e.shape, bytes(e.data)) for k, e in entries.items()}


def test_byte_layout_is_the_spec(tmp_path):
    """Header length u64 LE, JSON, data in sorted name order, 8-byte aligned, deterministic."""
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    h = np.array([1.0, -2.0, 0.5], np.float16)
    p1, p2 = tmp_path / "1.safetensors", tmp_path / "2.safetensors"
    safetensors.save(p1, {"z": a, "a": h}, {"k": "v"})
    safetensors.save(p2, {"a": h, "z": a}, {"k": "v"})
    raw = p1.read_bytes()
    assert raw == p2.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    header = json.loads(raw[8:8 + n])
    assert header == {"__metadata__": {"k": "v"},
                      "a": {"dtype": "F16", "shape": [3], "data_offsets": [0, 6]},
                      "z": {"dtype": "F32", "shape": [2, 3], "data_offsets": [6, 30]}}
    data = raw[8 + n:]
    assert data[:6] == struct.pack("<3e", 1.0, -2.0, 0.5)
    assert data[6:] == struct.pack("<6f", *range(6))


def test_reads_files_written_by_others():
    """Unsorted names, no padding, no metadata."""
    w = np.array([[1, 2], [3, 4]], "<f4")
    raw = handmade([("zeta", "F32", (2, 2), w.astype("<f4").tobytes()),
                    ("alpha", "F16", (1,), np.array([7], "<f2").tobytes())])
    got = safetensors.load_numpy(raw)
    assert list(got) == ["zeta", "alpha"]
    assert np.array_equal(got["zeta"], w) and got["alpha"][0] == 7
    assert safetensors.load_metadata(raw) == {}


def test_load_needs_no_numpy(tmp_path):
    """The reader runs in the browser, where numpy does not exist."""
    path = tmp_path / "t.safetensors"
    safetensors.save(path, {"x": np.array([1.5, 2.5], np.float32)})
    code = ("import sys; sys.modules['numpy'] = None\n"
            "from pycore.weights import safetensors\n"
            f"e = safetensors.load({str(path)!r})['x']\n"
            "print(e.dtype, e.shape, list(e.data.cast('f')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "f32 (2,) [1.5, 2.5]"


F4 = np.zeros(4, "<f4").tobytes()


@pytest.mark.parametrize("raw, message", [
    (b"\x10\x00\x00", "truncated"),
    (struct.pack("<Q", 500) + b"{}", "runs past the end"),
    (struct.pack("<Q", 4) + b"{no}", "not JSON"),
    (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    (handmade([("x", "F32", (4,), F4)])[:-1], "out of range"),
    (handmade([("x", "F32", (5,), F4)]), "bytes for shape"),
    (handmade([("x", "F32", (4,), F4)], extra=b"junk"), "not indexed"),
    (handmade([("x", "BF16", (8,), F4)]), "dtype 'BF16'"),
    (handmade([("x", "I64", (2,), F4)]), "dtype 'I64'"),
    (handmade([("x", "F32", (-4,), F4)]), "shape"),
    (handmade([("x", "F32", (4,), F4)], metadata={"n": 3}), "__metadata__"),
])
def test_rejects_bad_files(tmp_path, raw, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=message) as e:
        safetensors.load(path)
    assert str(path) in str(e.value)


def _patched_offsets(offsets):
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": offsets[0]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": offsets[1]}}
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + bytes(16)


@pytest.mark.parametrize("offsets, message", [
    ([[0, 8], [4, 12]], "overlaps"),
    ([[0, 8], [0, 8]], "overlaps"),
    ([[0, 8], [12, 20]], "out of range"),
    ([[4, 12], [8, 16]], "hole|overlaps"),
    ([[8, 16], [-8, 0]], "out of range"),
])
def test_rejects_bad_offsets(tmp_path, offsets, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(_patched_offsets(offsets))
    with pytest.raises(ValueError, match=message) as e:
        safetensors.load(path)
    assert str(path) in str(e.value)


def test_hole_is_rejected(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}
    text = json.dumps(header).encode()
    path = tmp_path / "hole.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(8))
    with pytest.raises(ValueError, match="hole"):
        safetensors.load(path)


def test_save_rejects_other_dtypes(tmp_path):
    for bad in (np.zeros(2, np.float64), np.zeros(2, np.int64)):
        with pytest.raises(ValueError, match="only float32 and float16"):
            safetensors.save(tmp_path / "x.safetensors", {"x": bad})
    assert not any(tmp_path.iterdir())


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    safetensors.save(path, {"x": np.ones(3, np.float32)})
    before = path.read_bytes()

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.os, "replace", fail)
    with pytest.raises(OSError):
        safetensors.save(path, {"x": np.zeros(3, np.float32)})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_dumps_needs_no_numpy_and_matches_save(tmp_path):
    """The browser's writer (learn page) gives the same bytes as the native save."""
    a = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    h = np.array([0.5, -2.0], np.float16)
    path = tmp_path / "n.safetensors"
    safetensors.save(path, {"w": a, "h": h}, {"epochs": "3"})
    code = ("import sys, array; sys.modules['numpy'] = None\n"
            "from pycore.weights import safetensors\n"
            f"w = array.array('f', {a.ravel().tolist()!r})\n"
            f"h = bytes.fromhex({h.tobytes().hex()!r})\n"
            "sys.stdout.write(safetensors.dumps({'w': ('f32', (2, 3), w), 'h': ('f16', [2], h)},"
            " {'epochs': '3'}).hex())")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert bytes.fromhex(r.stdout) == path.read_bytes()


def test_dumps_names_a_wrong_size():
    with pytest.raises(ValueError, match="'w' has 8 bytes, shape \\[3\\] F32 needs 12"):
        safetensors.dumps({"w": ("f32", (3,), bytes(8))}, where="model.safetensors")
