"""Read and write safetensors files (the weights format of Stemtone).

Format (https://github.com/huggingface/safetensors, "Format" section):

    8 bytes    N, the header length, unsigned 64-bit little-endian
    N bytes    JSON header: {name: {"dtype": "F32", "shape": [2, 3],
                                    "data_offsets": [begin, end]}, ...,
                             "__metadata__": {str: str}}   (metadata optional)
    rest       the data buffer; each tensor's bytes are buffer[begin:end],
               little-endian, C order

Offsets are relative to the start of the data buffer. Tensors must not overlap and
must cover the buffer without holes (the spec forbids holes so that a file cannot
smuggle other content).

`load` and `dumps` need no numpy: they run in the browser too, where the raw bytes go
straight into GPU buffers (`dev.tensor(data, shape, dtype)`) and back (the learn page
saves its model with `dumps`). `load_numpy` and `save` are native-only conveniences and
import numpy when called.

Only float32 ("F32") and float16 ("F16") are supported: the GPU kernels take no other
weight types. Any other dtype is rejected with a ValueError naming the file.
"""

from __future__ import annotations

import json
import os
import struct
from collections import namedtuple

# safetensors dtype name -> (runtime dtype name, bytes per element)
DTYPES = {"F32": ("f32", 4), "F16": ("f16", 2)}
RUNTIME_TO_ST = {rt: st for st, (rt, _) in DTYPES.items()}

MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's limit too

# One tensor: dtype is the runtime name ("f32" / "f16"), shape a tuple of ints,
# data a memoryview of the raw little-endian bytes (zero-copy into the file's bytes).
Entry = namedtuple("Entry", "dtype shape data")


def _read_source(src):
    """(bytes-like, name for error messages) from a path, bytes or memoryview."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return memoryview(src).cast("B"), "<bytes>"
    path = os.fspath(src)
    with open(path, "rb") as f:
        return memoryview(f.read()), path


def read_header(src):
    """Parse and validate the header: (tensor infos, metadata, data start, buffer, name).

    tensor infos maps name -> (safetensors dtype, shape tuple, begin, end), with
    begin/end absolute positions in the buffer.
    """
    buf, name = _read_source(src)

    def bad(msg):
        return ValueError(f"{name}: not a valid safetensors file: {msg}")

    if len(buf) < 8:
        raise bad(f"truncated ({len(buf)} bytes, the header length alone needs 8)")
    (n,) = struct.unpack("<Q", buf[:8])
    if n > MAX_HEADER:
        raise bad(f"header length {n} exceeds the {MAX_HEADER}-byte limit")
    if 8 + n > len(buf):
        raise bad(f"header length {n} runs past the end of the file ({len(buf)} bytes)")
    try:
        header = json.loads(bytes(buf[8:8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise bad(f"header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise bad("__metadata__ must map strings to strings")

    start = 8 + n
    size = len(buf) - start
    infos = {}
    for key, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"tensor {key!r}: entry must have exactly dtype, shape, data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPES:
            raise ValueError(f"{name}: tensor {key!r} has dtype {dtype!r}; "
                             f"only {', '.join(DTYPES)} are supported")
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise bad(f"tensor {key!r}: shape {shape!r} is not a list of non-negative ints")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(type(o) is int for o in offsets)):
            raise bad(f"tensor {key!r}: data_offsets {offsets!r} is not [begin, end]")
        begin, end = offsets
        if not 0 <= begin <= end <= size:
            raise bad(f"tensor {key!r}: data_offsets [{begin}, {end}] out of range "
                      f"(data buffer has {size} bytes)")
        numel = 1
        for d in shape:
            numel *= d
        if end - begin != numel * DTYPES[dtype][1]:
            raise bad(f"tensor {key!r}: {end - begin} bytes for shape {shape} {dtype} "
                      f"(needs {numel * DTYPES[dtype][1]})")
        infos[key] = (dtype, tuple(shape), start + begin, start + end)

    # Tensors must tile the data buffer exactly: sorted by begin, each starts where
    # the previous one ended, and the last ends at the end of the file.
    pos = start
    for key, (_, _, begin, end) in sorted(infos.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin < pos:
            raise bad(f"tensor {key!r} overlaps the previous tensor (starts at {begin - start}, "
                      f"previous ends at {pos - start})")
        if begin > pos:
            raise bad(f"hole in the data buffer before tensor {key!r} (bytes {pos - start}..{begin - start})")
        pos = end
    if pos != len(buf):
        raise bad(f"{len(buf) - pos} bytes after the last tensor are not indexed by the header")
    return infos, metadata, start, buf, name


def load(src) -> dict:
    """Read a safetensors file (path, bytes or memoryview) without numpy.

    Returns {name: Entry(dtype, shape, data)} in file order, where dtype is the runtime
    dtype name ("f32" or "f16"), shape a tuple and data a memoryview of raw bytes.
    """
    infos, _, _, buf, _ = read_header(src)
    return {k: Entry(DTYPES[dt][0], shape, buf[b:e]) for k, (dt, shape, b, e) in infos.items()}


def load_metadata(src) -> dict:
    """The file's "__metadata__" (empty dict when absent)."""
    return read_header(src)[1]


def load_numpy(src) -> dict:
    """Native only: {name: numpy array} (float32 or float16, read-only views)."""
    import numpy as np

    np_dtype = {"f32": "<f4", "f16": "<f2"}
    return {k: np.frombuffer(e.data, dtype=np_dtype[e.dtype]).reshape(e.shape)
            for k, e in load(src).items()}


def dumps(tensors: dict, metadata: dict | None = None, where: str = "<bytes>") -> bytes:
    """Encode {name: (dtype, shape, raw little-endian bytes)} as a safetensors file, no
    numpy needed (the browser's writer). dtype: "f32" / "f16" (runtime names) or "F32" /
    "F16". Tensors are stored in sorted name order with the header padded by spaces to a
    multiple of 8 bytes (so every tensor starts 8-byte aligned): the same input always
    gives the same bytes. `where` names the destination in error messages."""
    header, blobs, pos = {}, [], 0
    for key in sorted(tensors):
        dtype, shape, raw = tensors[key]
        st = RUNTIME_TO_ST.get(dtype, dtype)
        if st not in DTYPES:
            raise ValueError(f"safetensors.save {where}: tensor {key!r} has dtype {dtype}; "
                             "only float32 and float16 are supported")
        numel = 1
        for d in shape:
            numel *= int(d)
        raw = memoryview(raw).cast("B")
        if len(raw) != numel * DTYPES[st][1]:
            raise ValueError(f"safetensors.save {where}: tensor {key!r} has {len(raw)} bytes, "
                             f"shape {list(shape)} {st} needs {numel * DTYPES[st][1]}")
        header[key] = {"dtype": st, "shape": [int(d) for d in shape], "data_offsets": [pos, pos + len(raw)]}
        blobs.append(raw)
        pos += len(raw)
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError(f"safetensors.save {where}: metadata must map strings to strings")
        header = {"__metadata__": dict(metadata), **header}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return b"".join([struct.pack("<Q", len(text)), text, *blobs])


def save(path, tensors: dict, metadata: dict | None = None) -> None:
    """Native only: write {name: numpy array} (float32 or float16) to `path` atomically,
    laid out as dumps() does (byte-for-byte deterministic for the same input)."""
    import numpy as np

    path = os.fspath(path)
    entries = {}
    for key, value in tensors.items():
        a = np.asarray(value)
        dtype = {("f", 4): "F32", ("f", 2): "F16"}.get((a.dtype.kind, a.dtype.itemsize))
        if dtype is None:
            raise ValueError(f"safetensors.save {path}: tensor {key!r} has dtype {a.dtype}; "
                             "only float32 and float16 are supported")
        entries[key] = (dtype, a.shape, np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes())
    write_atomic(path, [dumps(entries, metadata, path)])


def write_atomic(path, chunks) -> None:
    """Native only: write the byte strings `chunks` to `path` through a temporary file
    renamed into place, so no half-written file is ever left under its final name."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
