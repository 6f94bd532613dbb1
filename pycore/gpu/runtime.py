"""The GPU runtime: one small interface, two backends.

A `Device` owns a GPU device (native wgpu-py or the browser's navigator.gpu) and
offers five things:

    dev.tensor(data, shape)        upload host data -> Tensor (GPU-resident)
    dev.empty(shape)               allocate a Tensor
    dev.kernel(file, entry, ...)   compile kernels/<file>.wgsl (cached)
    dev.run(kernel, grid, **args)  record one dispatch; args are the shader's own
                                   binding names (tensors) and Params fields (scalars)
    await dev.read(tensor)         flush, then read back (the only async op besides
                                   device creation)

Everything in between is recorded and submitted in batches, so tensors stay on the
GPU between ops. Backends implement only the primitives at the bottom of `Device`
(`_create_buffer`, `_write_buffer`, `_create_pipeline`, `_submit`, `_read_buffer`,
`_destroy_buffer`); binding layouts, parameter packing, limit checks and dispatch
splitting are shared here. This module must import without numpy (browser).
"""

from __future__ import annotations

import array
import os
import re
import struct

# --------------------------------------------------------------------------- errors


class GPUError(RuntimeError):
    """A WebGPU validation or internal error; the message names the kernel."""


class GPUOutOfMemoryError(GPUError):
    """The GPU could not allocate memory."""


class DeviceLostError(GPUError):
    """The GPU device was lost (driver reset, tab in background too long, ...)."""


class NoGPUError(GPUError):
    """No WebGPU adapter is available."""


# --------------------------------------------------------------------------- kernel sources

KERNEL_DIRS = [
    os.environ.get("STEMTONE_KERNELS", ""),
    os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "kernels"),
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels"),
]

_BINDING_RE = re.compile(
    r"@group\(0\)\s*@binding\((\d+)\)\s*var<\s*(storage|uniform)\s*(?:,\s*(read|read_write)\s*)?>"
    r"\s*(\w+)\s*:\s*([^;]+);"
)
_STRUCT_RE = re.compile(r"struct\s+Params\s*\{([^}]*)\}", re.S)
_FIELD_RE = re.compile(r"(\w+)\s*:\s*(u32|i32|f32)")
_ALIAS_RE = r"alias\s+{name}\s*=\s*\w+\s*;"
PARAM_FORMATS = {"u32": "<I", "i32": "<i", "f32": "<f"}


def kernel_source(file: str) -> str:
    """Read kernels/<file>.wgsl from the first kernel directory that has it."""
    for d in KERNEL_DIRS:
        path = os.path.join(d, file + ".wgsl") if d else ""
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                return f.read()
    raise FileNotFoundError(f"kernel file {file}.wgsl not found in {[d for d in KERNEL_DIRS if d]}")


class Binding:
    __slots__ = ("index", "kind", "access", "name", "type")

    def __init__(self, index, kind, access, name, type_):
        self.index, self.kind, self.access, self.name, self.type = index, kind, access, name, type_

    @property
    def read_only(self):
        return self.kind == "storage" and self.access != "read_write"


class Kernel:
    """A compiled compute pipeline plus what the runtime parsed from its source."""

    def __init__(self, label, source, entry, bindings, params, pipeline, layout):
        self.label = label            # "file:entry", used in every error message
        self.source = source
        self.entry = entry
        self.bindings = bindings      # storage bindings, in binding order
        self.params = params          # [(name, wgsl type)] of struct Params, or []
        self.pipeline = pipeline
        self.layout = layout          # backend bind group layout

    def __repr__(self):
        return f"<Kernel {self.label}>"


def parse_kernel(source: str):
    """Return (storage bindings, params fields) declared by a WGSL source."""
    bindings, has_uniform = [], False
    for m in _BINDING_RE.finditer(source):
        idx, kind, access, name, type_ = int(m.group(1)), m.group(2), m.group(3), m.group(4), m.group(5)
        if kind == "uniform":
            if idx != 0 or name != "p":
                raise ValueError("kernel convention: the uniform is `@binding(0) var<uniform> p: Params`")
            has_uniform = True
        else:
            bindings.append(Binding(idx, kind, access, name, type_.strip()))
    params = []
    if has_uniform:
        m = _STRUCT_RE.search(source)
        if not m:
            raise ValueError("kernel declares a uniform but no `struct Params`")
        params = _FIELD_RE.findall(m.group(1))
    bindings.sort(key=lambda b: b.index)
    return bindings, params


def pack_params(kernel: Kernel, values: dict) -> bytes:
    out = bytearray()
    for name, ty in kernel.params:
        if name not in values:
            raise ValueError(f"{kernel.label}: missing parameter {name!r}")
        v = values[name]
        if ty in ("u32", "i32"):
            if isinstance(v, bool):
                v = int(v)
            if not isinstance(v, int) and not (isinstance(v, float) and v.is_integer()):
                raise ValueError(f"{kernel.label}: parameter {name}={v!r} must be an integer")
            v = int(v)
            lo, hi = (0, 2**32 - 1) if ty == "u32" else (-(2**31), 2**31 - 1)
            if not lo <= v <= hi:
                raise ValueError(f"{kernel.label}: parameter {name}={v} does not fit {ty}")
        else:
            v = float(v)
        out += struct.pack(PARAM_FORMATS[ty], v)
    while len(out) % 16 or not out:
        out += b"\0\0\0\0"
    return bytes(out)


# --------------------------------------------------------------------------- tensors

DTYPES = {"f32": 4, "f16": 2, "u32": 4, "i32": 4}


def shape_size(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


class Tensor:
    """A contiguous row-major array that lives in one GPU buffer."""

    def __init__(self, dev: "Device", shape, dtype="f32", buffer=None, nbytes=None):
        self.dev = dev
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.size = shape_size(self.shape)
        self.nbytes = self.size * DTYPES[dtype]
        self.buffer = buffer if buffer is not None else dev._alloc(max(self.nbytes, 4), self)
        self._owner = buffer is None

    @property
    def ndim(self):
        return len(self.shape)

    def reshape(self, *shape) -> "Tensor":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = list(shape)
        if shape.count(-1) == 1:
            known = shape_size([s for s in shape if s != -1])
            shape[shape.index(-1)] = self.size // known if known else 0
        if shape_size(shape) != self.size:
            raise ValueError(f"reshape: cannot view shape {self.shape} as {tuple(shape)}")
        view = Tensor.__new__(Tensor)
        view.dev, view.shape, view.dtype = self.dev, tuple(shape), self.dtype
        view.size, view.nbytes, view.buffer, view._owner = self.size, self.nbytes, self.buffer, False
        view._base = self
        return view

    async def read(self):
        return await self.dev.read(self)

    def numpy(self):
        """Native only: synchronous readback as a numpy array."""
        return self.dev.read_sync(self)

    def release(self):
        """Free the GPU memory now instead of at garbage collection."""
        if self._owner and self.buffer is not None:
            self.dev.flush()  # recorded dispatches may still use this buffer
            self.dev._free(self.buffer, self.nbytes)
        self.buffer = None

    def __del__(self):
        # Garbage-collected tensors are freed after the next submit: recorded but not
        # yet submitted dispatches may still read them.
        try:
            if self._owner and self.buffer is not None:
                self.dev._graveyard.append((self.buffer, self.nbytes))
                self.buffer = None
        except Exception:
            pass

    def __repr__(self):
        return f"Tensor(shape={self.shape}, dtype={self.dtype})"


# --------------------------------------------------------------------------- device


class Device:
    """Backend-independent part of a GPU device. See module docstring."""

    backend = "abstract"
    MAX_PENDING = 512  # dispatches recorded before an automatic submit

    def __init__(self):
        self._kernels = {}
        self._pending = []          # [(kernel, bind group, (gx, gy, gz))]
        self._graveyard = []        # [(buffer, nbytes)] of collected tensors, freed after submit
        self.lost_reason = None
        self.mem_in_use = 0
        self.mem_peak = 0
        # filled by backends
        self.adapter_info = {}
        self.limits = {}
        self.features = set()

    # ---- properties
    @property
    def has_f16(self) -> bool:
        return "shader-f16" in self.features

    @property
    def max_binding(self) -> int:
        return int(self.limits.get("max-storage-buffer-binding-size", 134217728))

    @property
    def max_groups(self) -> int:
        return int(self.limits.get("max-compute-workgroups-per-dimension", 65535))

    def describe(self) -> str:
        i = self.adapter_info
        parts = [i.get("vendor", ""), i.get("architecture", ""), i.get("device", ""), i.get("description", "")]
        return f"{self.backend}: " + " / ".join(p for p in parts if p)

    def reset_peak(self):
        self.mem_peak = self.mem_in_use

    # ---- memory
    def _check_alive(self):
        if self.lost_reason is not None:
            raise DeviceLostError(
                f"the GPU device was lost ({self.lost_reason}); reload the page or restart the program"
            )

    def _alloc(self, nbytes: int, tensor=None):
        self._check_alive()
        if nbytes > self.max_binding:
            what = f"tensor of shape {tensor.shape}" if tensor is not None else "buffer"
            raise GPUOutOfMemoryError(
                f"{what} needs {nbytes / 2**20:.1f} MiB, more than this GPU's largest binding "
                f"({self.max_binding / 2**20:.0f} MiB); process the input in smaller chunks"
            )
        nbytes = (nbytes + 3) // 4 * 4
        buf = self._create_buffer(nbytes)
        self.mem_in_use += nbytes
        self.mem_peak = max(self.mem_peak, self.mem_in_use)
        return buf

    def _free(self, buf, nbytes):
        self.mem_in_use -= (max(nbytes, 4) + 3) // 4 * 4
        self._destroy_buffer(buf)

    # ---- tensors
    def empty(self, shape, dtype="f32") -> Tensor:
        if dtype not in DTYPES:
            raise ValueError(f"empty: unknown dtype {dtype!r}; use one of {sorted(DTYPES)}")
        if dtype == "f16" and not self.has_f16:
            raise ValueError("empty: dtype f16 needs the shader-f16 feature, which this GPU lacks")
        return Tensor(self, shape, dtype)

    def tensor(self, data, shape=None, dtype="f32") -> Tensor:
        """Upload host data: a numpy array, array.array, bytes/memoryview or list of numbers.

        dtype "f16" stores half floats where the adapter supports shader-f16; elsewhere it
        falls back to f32 storage (the caller's kernels accept both).
        """
        raw, shape = _host_bytes(data, shape, dtype)
        if dtype == "f16" and not self.has_f16:
            raw, dtype = _f16_to_f32_bytes(raw), "f32"
        t = Tensor(self, shape, dtype)
        self.write(t, raw)
        return t

    def write(self, t: Tensor, raw) -> None:
        if len(raw) != t.nbytes:
            raise ValueError(f"write: {len(raw)} bytes for a {t.dtype} tensor of shape {t.shape} ({t.nbytes} bytes)")
        self._check_alive()
        if not raw:
            return
        self.flush()  # queue writes run before later submits: finish recorded work first
        if len(raw) % 4:
            raw = bytes(raw) + b"\0" * (4 - len(raw) % 4)
        self._write_buffer(t.buffer, raw)

    async def read(self, t: Tensor):
        """Read a tensor back: numpy array natively (if numpy imports), else array('f')."""
        self.flush()
        raw = await self._read_buffer(t.buffer, t.nbytes)
        self._check_alive()
        return to_host(raw, t.shape, t.dtype)

    # ---- kernels
    def kernel(self, file: str, entry: str = "main", consts=None, aliases=None) -> Kernel:
        """Compile (once) entry point `entry` of kernels/<file>.wgsl.

        consts:  WGSL `override` constants, e.g. {"TILE": 8}
        aliases: rewrite `alias NAME = ...;` lines, e.g. {"W": "f16"} for half weights
        """
        consts = dict(consts or {})
        aliases = dict(aliases or {})
        key = (file, entry, tuple(sorted(consts.items())), tuple(sorted(aliases.items())))
        k = self._kernels.get(key)
        if k is not None:
            return k
        source = kernel_source("common") + "\n" + kernel_source(file)
        for name, ty in aliases.items():
            pat = _ALIAS_RE.format(name=re.escape(name))
            if not re.search(pat, source):
                raise ValueError(f"kernel {file}: no `alias {name} = ...;` to rewrite")
            source = re.sub(pat, f"alias {name} = {ty};", source)
        if "f16" in aliases.values():
            if not self.has_f16:
                raise ValueError(f"kernel {file}:{entry}: f16 needs shader-f16, which this GPU lacks")
            source = "enable f16;\n" + source
        bindings, params = parse_kernel(source)
        label = f"{file}:{entry}"
        self._check_alive()
        try:
            pipeline, layout = self._create_pipeline(label, source, entry, bindings, bool(params), consts)
        except GPUError:
            raise
        except Exception as e:  # backend exceptions -> one clear error naming the kernel
            raise GPUError(f"kernel {label} failed to compile: {e}") from None
        k = Kernel(label, source, entry, bindings, params, pipeline, layout)
        self._kernels[key] = k
        return k

    def run(self, kernel: Kernel, grid, **args) -> None:
        """Record one dispatch of `kernel` over `grid` workgroups.

        grid: an int (1-D, folded into x*y when it exceeds the per-dimension limit;
        kernels compute their linear id with `wg_linear`) or a tuple (x, y, z).
        args: every storage binding by its WGSL name (a Tensor) and every Params field.
        """
        self._check_alive()
        buffers = []
        for b in kernel.bindings:
            t = args.get(b.name)
            if not isinstance(t, Tensor):
                raise ValueError(f"{kernel.label}: binding {b.name!r} needs a Tensor, got {type(t).__name__}")
            if t.buffer is None:
                raise ValueError(f"{kernel.label}: tensor for {b.name!r} was released")
            buffers.append(t)
        params = pack_params(kernel, args) if kernel.params else None
        groups = self.fold_grid(kernel, grid)
        if 0 in groups:
            return
        bind_group = self._bind(kernel, buffers, params)
        self._pending.append((kernel, bind_group, groups))
        if len(self._pending) >= self.MAX_PENDING:
            self.flush()

    def fold_grid(self, kernel, grid):
        lim = self.max_groups
        if isinstance(grid, int):
            n = grid
            if n <= lim:
                return (n, 1, 1)
            y = -(-n // lim)
            x = -(-n // y)
            if y > lim:
                raise ValueError(f"{kernel.label}: {n} workgroups exceed {lim}x{lim}")
            return (x, y, 1)
        grid = tuple(int(g) for g in grid) + (1,) * (3 - len(grid))
        if any(g > lim for g in grid):
            raise ValueError(
                f"{kernel.label}: grid {grid} exceeds {lim} workgroups per dimension; use a 1-D grid"
            )
        return grid

    def flush(self) -> None:
        """Submit everything recorded so far, then free collected tensors."""
        if self._pending:
            batch, self._pending = self._pending, []
            self._check_alive()
            self._submit(batch)
        while self._graveyard:
            self._free(*self._graveyard.pop())

    def sync(self):
        self.flush()

    # ---- backend primitives
    def _create_buffer(self, nbytes):
        raise NotImplementedError

    def _destroy_buffer(self, buf):
        raise NotImplementedError

    def _write_buffer(self, buf, raw):
        raise NotImplementedError

    async def _read_buffer(self, buf, nbytes) -> bytes:
        raise NotImplementedError

    def _create_pipeline(self, label, source, entry, bindings, has_uniform, consts):
        raise NotImplementedError

    def _bind(self, kernel, tensors, params):
        raise NotImplementedError

    def _submit(self, batch):
        raise NotImplementedError


# --------------------------------------------------------------------------- host conversion


def _host_bytes(data, shape, dtype):
    """(raw little-endian bytes, shape) from host data, without needing numpy."""
    fmt = {"f32": "f", "u32": "I", "i32": "i", "f16": "e"}[dtype]
    np = _numpy()
    if np is not None and isinstance(data, np.ndarray):
        npdt = {"f32": np.float32, "f16": np.float16, "u32": np.uint32, "i32": np.int32}[dtype]
        arr = np.ascontiguousarray(data, dtype=npdt)
        shape = tuple(arr.shape) if shape is None else tuple(shape)
        if shape_size(shape) != arr.size:
            raise ValueError(f"tensor: {arr.size} values do not fill shape {shape}")
        return arr.tobytes(), shape
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        n = len(raw) // DTYPES[dtype]
    elif isinstance(data, array.array):
        if data.typecode != fmt and dtype != "f16":
            data = array.array(fmt, data)
        raw = data.tobytes() if dtype != "f16" or data.typecode == "e" else struct.pack(f"<{len(data)}e", *data)
        n = len(data)
    else:
        flat = list(_flatten(data))
        raw = struct.pack(f"<{len(flat)}{fmt}", *flat)
        n = len(flat)
    shape = (n,) if shape is None else tuple(shape)
    if shape_size(shape) != n:
        raise ValueError(f"tensor: {n} values do not fill shape {shape}")
    return raw, shape


def _flatten(x):
    if isinstance(x, (list, tuple)):
        for v in x:
            yield from _flatten(v)
    else:
        yield x


def _f16_to_f32_bytes(raw: bytes) -> bytes:
    np = _numpy()
    if np is not None:
        return np.frombuffer(raw, np.float16).astype(np.float32).tobytes()
    n = len(raw) // 2
    return struct.pack(f"<{n}f", *struct.unpack(f"<{n}e", raw))


def to_host(raw, shape, dtype):
    np = _numpy()
    if np is not None:
        npdt = {"f32": np.float32, "f16": np.float16, "u32": np.uint32, "i32": np.int32}[dtype]
        return np.frombuffer(bytes(raw), npdt).reshape(shape).copy()
    fmt = {"f32": "f", "u32": "I", "i32": "i"}.get(dtype)
    if fmt is None:  # f16 -> array('f')
        n = len(raw) // 2
        return array.array("f", struct.unpack(f"<{n}e", bytes(raw)))
    return array.array(fmt, bytes(raw))


_NP = False


def _numpy():
    """numpy if importable (native), else None (browser: no numpy build exists)."""
    global _NP
    if _NP is False:
        try:
            import numpy

            _NP = numpy
        except ImportError:
            _NP = None
    return _NP


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


__all__ = [
    "Device", "Tensor", "Kernel", "GPUError", "GPUOutOfMemoryError", "DeviceLostError",
    "NoGPUError", "ceil_div", "shape_size",
]
