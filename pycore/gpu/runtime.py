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

A readback can also be issued now and awaited later: `pending = dev.start_read(t)`
submits the pending work with a copy of `t` into a staging buffer and requests its map,
all at once; `await pending` gives what `await dev.read(t)` would have (dev.read is
start_read and await). Work recorded after start_read runs after that copy on the
queue, so several readbacks may be in flight (pipelined blocks, pycore.tone.stream);
each holds its own staging buffer from a small pool until awaited, and errors of the
work it submitted (validation, device lost) are raised at its await.

Everything in between is recorded and submitted in batches, so tensors stay on the
GPU between ops. Host cost per dispatch is kept near the encoding calls alone:

  pool      released and collected tensors return their buffers to a size-class pool
            (BufferPool) that later allocations reuse; `trim()` empties it, and an
            out-of-memory allocation empties it and retries once. mem_in_use / mem_peak
            count live tensors exactly; mem_reserved(_peak) what the GPU holds.
  params    no GPU object per dispatch: each dispatch's Params go into a slot of one
            uniform arena, written once per submit, selected by a dynamic offset.
  bindings  bind groups are cached by (layout, buffers), so repeated dispatches over
            pooled buffers create none.
  plans     a fixed-shape computation is recorded once (`with dev.plan() as p: ...`)
            and replayed with new input data at the cost of the encoding calls alone
            (see Plan for its one rule).

Backends implement only the primitives at the bottom of `Device` (`_create_buffer`,
`_create_uniform`, `_write_buffer`, `_create_pipeline`, `_bind`, `_submit`,
`_create_staging`, `_start_read`, `_finish_read`, `_destroy_buffer`); binding layouts,
parameter packing, limit checks and dispatch splitting are shared here. `counts` tallies dispatches, uploads, readbacks,
submits and GPU objects created (staging buffers apart), for tests and benchmarks. This module must import
without numpy (browser).
"""

from __future__ import annotations

import array
import contextlib
import os
import re
import struct
import weakref

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
        self.names = tuple(n for n, _ in params)
        self.packer = struct.Struct("<" + "".join(PARAM_FORMATS[t][1] for _, t in params)) if params else None

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
    """The Params struct of one dispatch (little-endian, fields in declaration order)."""
    try:  # fast path: every field present and of the right kind
        return kernel.packer.pack(*[values[n] for n in kernel.names])
    except (KeyError, struct.error, TypeError):
        return _pack_checked(kernel, values)


def _pack_checked(kernel: Kernel, values: dict) -> bytes:
    """pack_params with each field converted and checked: a clear error naming the
    kernel and the parameter."""
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
    return bytes(out)


# --------------------------------------------------------------------------- tensors

DTYPES = {"f32": 4, "f16": 2, "u32": 4, "i32": 4}


def shape_size(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


class Tensor:
    """A contiguous row-major array that lives in one GPU buffer.

    The buffer comes from the device's pool and goes back to it on release() or garbage
    collection. A tensor made by an op while a plan records belongs to that plan (its
    buffer is the plan's until plan.release())."""

    def __init__(self, dev: "Device", shape, dtype="f32", buffer=None, upload=False):
        self.dev = dev
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.size = shape_size(self.shape)
        self.nbytes = self.size * DTYPES[dtype]
        self._owner = buffer is None
        self._plan = None
        self.capacity = 0                 # bytes of the buffer (its size class)
        if buffer is None:
            buffer = dev._alloc_for(self, upload)
        self.buffer = buffer

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
        view._plan, view.capacity = None, self.capacity
        view._base = self
        return view

    async def read(self):
        return await self.dev.read(self)

    def numpy(self):
        """Native only: synchronous readback as a numpy array."""
        return self.dev.read_sync(self)

    def release(self):
        """Give the GPU memory back to the pool now instead of at garbage collection.
        (No flush is needed: a pooled buffer is never destroyed while recorded work may
        still use it, and every later upload into it is ordered after that work.)"""
        if self._owner and self.buffer is not None:
            self.dev._release(self.buffer, self.capacity, self.nbytes, self._plan)
        self.buffer = None
        self.dev.releases += 1

    def __del__(self):
        # Collected tensors give their buffer back at the next allocation or flush (not
        # here: a collection can run in the middle of the pool's own bookkeeping). The
        # device holds every buffer it made, so a tensor collected in a reference cycle
        # never takes its buffer's wgpu object down with it.
        try:
            if self._owner and self.buffer is not None:
                self.dev._graveyard.append((self.buffer, self.capacity, self.nbytes, self._plan))
        except Exception:
            pass

    def __repr__(self):
        return f"Tensor(shape={self.shape}, dtype={self.dtype})"


# --------------------------------------------------------------------------- memory pool


def size_class(nbytes: int) -> int:
    """Bytes a buffer of `nbytes` is allocated with: at least 256, rounded up to one of
    eight steps per octave (at most 12.5 % more than asked), so that buffers of nearby
    sizes can be reused for each other."""
    n = max(256, nbytes)
    step = 1 << max(0, n.bit_length() - 4)
    return -(-n // step) * step


class BufferPool:
    """Released GPU buffers, kept by size class and handed out again (as PyTorch's CUDA
    caching allocator does, without block splitting). `bytes` is what it holds."""

    def __init__(self):
        self.free = {}           # size class -> [buffer]
        self.bytes = 0

    def take(self, size):
        bufs = self.free.get(size)
        if bufs:
            self.bytes -= size
            return bufs.pop()
        return None

    def give(self, buf, size):
        self.free.setdefault(size, []).append(buf)
        self.bytes += size

    def drain(self):
        """Every pooled (buffer, size), removed from the pool."""
        out = [(b, size) for size, bufs in self.free.items() for b in bufs]
        self.free, self.bytes = {}, 0
        return out


# --------------------------------------------------------------------------- plans


class Plan:
    """A fixed-shape computation recorded once and replayed like a CUDA graph:

        x = dev.empty((2, 4096))                 # inputs: made before recording
        plan = dev.plan()
        with plan:                               # ops record their dispatches; nothing runs
            y = model(x)
        dev.write(x, block)                      # new data ...
        plan.replay()                            # ... the same dispatches, re-encoded only
        out = await y.read()

    The one rule: between replays only the *contents* of tensors made before recording
    may change (write them with dev.write). Shapes, parameters and which tensors are
    bound are fixed; an upload made while recording (dev.tensor) is a constant of the
    plan, written once. Tensors made by ops while recording belong to the plan (they
    stay valid until plan.release(); release() on them just drops the name); buffers
    released while recording are reused later in the same recording, so a plan needs no
    more memory than one eager call. Tensors the plan reads must not be released while
    the plan is used (replay() checks).
    """

    def __init__(self, dev):
        self.dev = dev
        self.recording = False
        self.recorded = False
        self.steps = []          # while recording: (kernel, buffers, params | None, groups)
        self.buffers = []        # (buffer, size) the plan owns
        self.made = set()        # their ids
        self.free = {}           # size -> [buffer] released during recording
        self.created = []        # weak references to the tensors it made
        self.inputs = {}         # tensors made outside the plan that it binds (a list once recorded)
        self.encoded = None      # the backend's replay form
        self.params = None       # its uniform buffer
        self.dispatches = 0
        self.checked = -1        # dev.releases when replay() last found every input alive
        self.stores = []         # (new, old) pairs of store()

    def take_free(self, size):
        """(size, buffer) of the smallest buffer released while recording that holds
        `size` bytes and is at most twice as big, else (size, None): best fit, so that
        the plan's memory stays close to the eager run's live peak."""
        fits = [s for s, bufs in self.free.items() if bufs and size <= s <= 2 * size]
        if not fits:
            return size, None
        best = min(fits)
        return best, self.free[best].pop()

    def __enter__(self):
        self.dev._begin_recording(self)
        return self

    def __exit__(self, kind, value, tb):
        self.dev._end_recording(self, failed=kind is not None)
        return False

    def store(self, new: "Tensor", old: "Tensor"):
        """While recording: the steps that compute `new` (a tensor this plan made) write
        into `old` (a tensor made before recording, of the same dtype and size) instead,
        so that a replay leaves its result where the next replay, or another plan, reads
        it, without a copy. `old` must not be bound by this plan otherwise (checked when
        the recording ends), so no step reads it while another writes it; `new` must
        stay alive until then."""
        if not self.recording:
            raise RuntimeError("plan.store: only while the plan records")
        if new.dtype != old.dtype or new.nbytes != old.nbytes or new.buffer is None or old.buffer is None:
            raise ValueError(f"plan.store: {new} into {old}: both alive, of one dtype and size")
        if getattr(new, "_base", new)._plan is not self or old._plan is not None:
            raise ValueError("plan.store: `new` must be made by this plan, `old` before recording")
        self.stores.append((new, old))

    def replay(self):
        self.dev._replay(self)

    def replay_step(self, i: int):
        """Queue step i of the recorded plan alone, as a fresh dispatch: for profiling one
        kernel of a plan (its inputs are whatever the last replay left in them)."""
        self.dev._replay_step(self, i)

    def release(self):
        """Give the plan's buffers back to the pool; its tensors become invalid."""
        self.dev._release_plan(self)


# --------------------------------------------------------------------------- readbacks


class PendingRead:
    """A readback issued by Device.start_read: `await pending` gives the tensor's host data
    as it was when start_read was called (the same as `await dev.read(t)` then), or raises
    the error of the work that readback submitted. Await each one (its staging buffer
    returns to the pool then); awaiting twice gives the same data."""

    __slots__ = ("dev", "shape", "dtype", "ticket", "error", "value", "done")

    def __init__(self, dev, shape, dtype, ticket, error):
        self.dev, self.shape, self.dtype = dev, shape, dtype
        self.ticket, self.error = ticket, error      # the backend's handle, or the GPUError of the issue
        self.value, self.done = None, False

    def __await__(self):
        return self._result().__await__()

    async def _result(self):
        if not self.done:
            try:
                if self.error is not None:
                    raise self.error
                raw = await self.dev._finish_staged(self.ticket)   # adds its waits to wait_s
                self.dev._check_alive()
                self.value = to_host(raw, self.shape, self.dtype)
            except GPUError as e:
                self.error = e
                raise
            finally:
                self.done = True
                self.ticket = None
        if self.error is not None:
            raise self.error
        return self.value


class StagingPool:
    """MAP_READ buffers for readbacks in flight: one per readback until it is awaited, then
    kept for the next (at most KEEP of them and KEEP_BYTES in all; larger one-off reads
    get a buffer of their own that is destroyed after use). At least MIN_BYTES each, in
    size classes, so a stream of small reads of varying size reuses the same few."""

    KEEP = 32
    KEEP_BYTES = 64 << 20
    MIN_BYTES = 1 << 16

    def __init__(self):
        self.free = []           # (size, buffer), the smallest first
        self.bytes = 0           # held in `free`
        self.created = 0
        self.destroyed = 0

    def take(self, size, create):
        """(buffer, capacity) of at least `size` bytes: the smallest free one that fits,
        else a new one from create(capacity)."""
        for i, (cap, buf) in enumerate(self.free):
            if cap >= size:
                del self.free[i]
                self.bytes -= cap
                return buf, cap
        cap = size_class(max(size, self.MIN_BYTES))
        buf = create(cap)
        self.created += 1
        return buf, cap

    def give(self, buf, cap, destroy):
        """Back after its readback: kept, or destroyed when the pool is full."""
        if len(self.free) < self.KEEP and self.bytes + cap <= self.KEEP_BYTES:
            self.free.append((cap, buf))
            self.free.sort(key=lambda e: e[0])
            self.bytes += cap
        else:
            destroy(buf)
            self.destroyed += 1

    def drain(self, destroy):
        for _, buf in self.free:
            destroy(buf)
            self.destroyed += 1
        self.free, self.bytes = [], 0

    @property
    def live(self) -> int:
        return self.created - self.destroyed


# --------------------------------------------------------------------------- device


class Device:
    """Backend-independent part of a GPU device. See module docstring."""

    backend = "abstract"
    MAX_PENDING = 512       # fresh dispatches recorded before an automatic submit
    PARAM_SLOT = 256        # bytes per dispatch in a uniform arena (WebGPU's offset alignment)
    BIND_CACHE = 8192       # bind groups kept for reuse

    def __init__(self):
        self._kernels = {}
        self._pending = []          # [Dispatch | Plan] in submission order
        self._fresh = 0             # fresh dispatches in _pending (their params are in the arena)
        self._arena = None          # uniform buffer of MAX_PENDING parameter slots
        self._arena_host = bytearray()
        self._graveyard = []        # collected tensors, returned to the pool at the next alloc/flush
        self._pool = BufferPool()
        self._bind_cache = {}       # (layout, uniform buffer, storage buffers) -> bind group
        self._bind_keys = {}        # id(buffer) -> keys of the bind groups that bind it
        self._recording = None      # the Plan being recorded
        self._buffers = {}          # id -> every storage buffer made and not destroyed
        self._staging = StagingPool()   # MAP_READ buffers of readbacks (see start_read)
        self.lost_reason = None
        self.mem_in_use = 0         # bytes of live tensors (exact: what they asked, rounded to 4)
        self.mem_peak = 0
        self.mem_reserved = 0       # bytes of GPU buffers held: live, pooled and planned
        self.mem_reserved_peak = 0
        self.releases = 0           # tensor.release() calls so far (plans recheck their inputs)
        self.wait_s = 0.0           # seconds spent waiting for the GPU (submits a CPU driver runs, readback maps)
        self.counts = dict.fromkeys(("dispatches", "replayed", "uploads", "readbacks", "submits",
                                     "buffers_created", "buffers_destroyed", "bind_groups_created"), 0)
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

    @property
    def live_buffers(self) -> int:
        """GPU buffers that exist now (created and not destroyed): tensors, pool, plans,
        the uniform arena, and the staging buffers of readbacks."""
        return self.counts["buffers_created"] - self.counts["buffers_destroyed"] + self._staging.live

    @property
    def live_bind_groups(self) -> int:
        return len(self._bind_cache)

    @property
    def cpu_adapter(self) -> bool:
        """Whether the adapter computes on the CPU (lavapipe natively, SwiftShader in a
        browser), where an invocation is one SIMD lane of a CPU core: ops pick kernel
        variants laid out for that (pycore.ops.conv's conv_run)."""
        i = self.adapter_info
        names = " ".join(str(i.get(k, "")) for k in ("architecture", "device", "description")).lower()
        return str(i.get("adapter_type", "")).lower() == "cpu" or "swiftshader" in names or "llvmpipe" in names

    def describe(self) -> str:
        i = self.adapter_info
        parts = [i.get("vendor", ""), i.get("architecture", ""), i.get("device", ""), i.get("description", "")]
        return f"{self.backend}: " + " / ".join(p for p in parts if p)

    def reset_peak(self):
        self.mem_peak = self.mem_in_use
        self.mem_reserved_peak = self.mem_reserved

    def pending_kernels(self) -> list:
        """The kernels recorded and not yet submitted, in order (plans expanded)."""
        out = []
        for item in self._pending:
            out += [s[0] for s in item.steps] if isinstance(item, Plan) else [item[0]]
        return out

    # ---- memory
    def _check_alive(self):
        if self.lost_reason is not None:
            raise DeviceLostError(
                f"the GPU device was lost ({self.lost_reason}); reload the page or restart the program"
            )

    def _alloc_for(self, t: Tensor, upload: bool):
        """The buffer of a new tensor: from the recording plan's free list, the pool, or
        a new GPU buffer (out of memory: empty the pool and try once more)."""
        self._check_alive()
        nbytes = max(t.nbytes, 4)
        if nbytes > self.max_binding:
            raise GPUOutOfMemoryError(
                f"tensor of shape {t.shape} needs {nbytes / 2**20:.1f} MiB, more than this GPU's largest binding "
                f"({self.max_binding / 2**20:.0f} MiB); process the input in smaller chunks"
            )
        self._bury()
        size = size_class(nbytes)
        plan = None if upload else self._recording
        buf = None
        if plan is not None:
            size, buf = plan.take_free(size)
        if buf is None:
            buf = self._pool.take(size)
            if buf is None:
                buf = self._new_buffer(size)
            if plan is not None:
                plan.buffers.append((buf, size))
                plan.made.add(id(buf))
        if plan is not None:
            t._plan = plan
            t._born = len(plan.steps)     # the first step that may write it (Plan.store)
            plan.created.append(weakref.ref(t))
        t.capacity = size
        self.mem_in_use += (nbytes + 3) // 4 * 4
        self.mem_peak = max(self.mem_peak, self.mem_in_use)
        return buf

    def _new_buffer(self, size):
        try:
            buf = self._create_buffer(size)
        except GPUOutOfMemoryError:
            if not self._pool.bytes:
                raise
            self.trim()
            buf = self._create_buffer(size)
        self.counts["buffers_created"] += 1
        self._buffers[id(buf)] = buf
        self.mem_reserved += size
        self.mem_reserved_peak = max(self.mem_reserved_peak, self.mem_reserved)
        return buf

    def _release(self, buf, size, nbytes, plan):
        """A tensor's buffer back to where it came from (see Tensor and Plan)."""
        self.mem_in_use -= (max(nbytes, 4) + 3) // 4 * 4
        if plan is None:
            self._pool.give(buf, size)
        elif plan.recording:
            plan.free.setdefault(size, []).append(buf)
        # a recorded plan keeps its buffers until plan.release()

    def _bury(self):
        while self._graveyard:
            self._release(*self._graveyard.pop())

    def trim(self):
        """Destroy the pooled buffers (GPU memory back to the system)."""
        self.flush()  # recorded work may still use a pooled buffer
        for buf, size in self._pool.drain():
            self._forget_buffer(buf)
            del self._buffers[id(buf)]
            self._destroy_buffer(buf)
            self.counts["buffers_destroyed"] += 1
            self.mem_reserved -= size
        self._staging.drain(self._destroy_buffer)     # free ones only: those in flight come back later

    def _forget_buffer(self, buf):
        for key in self._bind_keys.pop(id(buf), ()):
            self._bind_cache.pop(key, None)

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
        falls back to f32 storage (the caller's kernels accept both). While a plan
        records, an upload is a constant of the plan (see Plan).
        """
        raw, shape = _host_bytes(data, shape, dtype)
        if dtype == "f16" and not self.has_f16:
            raw, dtype = _f16_to_f32_bytes(raw), "f32"
        t = Tensor(self, shape, dtype, upload=True)
        self.write(t, raw)
        return t

    def write(self, t: Tensor, raw) -> None:
        """Replace a tensor's contents (queued before any work recorded after it)."""
        if len(raw) != t.nbytes:
            raise ValueError(f"write: {len(raw)} bytes for a {t.dtype} tensor of shape {t.shape} ({t.nbytes} bytes)")
        if t.buffer is None:
            raise ValueError(f"write: the tensor of shape {t.shape} was released")
        self._check_alive()
        if not raw:
            return
        self.flush()  # queue writes run before later submits: finish recorded work first
        if len(raw) % 4:
            raw = bytes(raw) + b"\0" * (4 - len(raw) % 4)
        self.counts["uploads"] += 1
        self._write_buffer(t.buffer, raw)

    async def read(self, t: Tensor):
        """Read a tensor back: numpy array natively (if numpy imports), else array('f')."""
        return await self.start_read(t)

    def start_read(self, t: Tensor) -> PendingRead:
        """Issue a readback of `t` now, await it later (see the module docstring): the
        pending work and the copy of `t` go in one submit, and the staging buffer's map
        is requested. Results come in the order of issue; the tensor may be written or
        recomputed right after this call (later work is queued after the copy)."""
        if self._recording is not None:
            raise RuntimeError("read: a plan is recording; read its outputs after plan.replay()")
        if t.buffer is None:
            raise ValueError(f"read: the tensor of shape {t.shape} was released")
        self.counts["readbacks"] += 1
        ticket = error = None
        try:
            batch = self._take_batch()   # the pending work rides in the readback's submit
            ticket = self._start_staged(t.buffer, t.nbytes, batch)
        except GPUError as e:            # raised at the await, as a plain read raises it
            error = e
        self._bury()
        return PendingRead(self, t.shape, t.dtype, ticket, error)

    def _start_staged(self, buf, nbytes, batch):
        """Take a staging buffer and start the backend's readback into it."""
        size = (nbytes + 3) // 4 * 4
        self._check_alive()
        staging, cap = self._staging.take(size, self._create_staging)
        try:
            return staging, cap, nbytes, self._start_read(buf, size, batch, staging)
        except BaseException:
            self._staging.give(staging, cap, self._destroy_buffer)
            raise

    async def _finish_staged(self, ticket) -> bytes:
        staging, cap, nbytes, handle = ticket
        try:
            raw = await self._finish_read(staging, handle)
        finally:
            self._staging.give(staging, cap, self._destroy_buffer)
        return raw[:nbytes]

    # ---- kernels
    def kernel(self, file: str, entry: str = "main", consts=None, aliases=None) -> Kernel:
        """Compile (once) entry point `entry` of kernels/<file>.wgsl.

        consts:  WGSL `override` constants, e.g. {"TILE": 8}
        aliases: rewrite `alias NAME = ...;` lines, e.g. {"W": "f16"} for half weights
        """
        key = (file, entry, tuple(sorted(consts.items())) if consts else (),
               tuple(sorted(aliases.items())) if aliases else ())
        k = self._kernels.get(key)
        if k is not None:
            return k
        consts = dict(consts or {})
        aliases = dict(aliases or {})
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
        tensors = []
        for b in kernel.bindings:
            t = args.get(b.name)
            if not isinstance(t, Tensor):
                raise ValueError(f"{kernel.label}: binding {b.name!r} needs a Tensor, got {type(t).__name__}")
            if t.buffer is None:
                raise ValueError(f"{kernel.label}: tensor for {b.name!r} was released")
            tensors.append(t)
        params = pack_params(kernel, args) if kernel.params else None
        groups = self.fold_grid(kernel, grid)
        if 0 in groups:
            return
        self.counts["dispatches"] += 1
        plan = self._recording
        if plan is not None:
            for t in tensors:  # keep what it reads from outside alive (its own tensors may die)
                if id(t.buffer) not in plan.made:
                    plan.inputs[id(t)] = t
            plan.steps.append((kernel, [t.buffer for t in tensors], params, groups))
            return
        offset, arena = 0, None
        if params is not None:
            arena = self._arena or self._arena_buffer()
            offset = self._fresh * self.PARAM_SLOT
            self._arena_host[offset:offset + len(params)] = params
            self._fresh += 1
        bind_group = self._bind_group(kernel, arena, [t.buffer for t in tensors])
        self._pending.append((kernel, bind_group, offset, groups))
        if self._fresh >= self.MAX_PENDING or len(self._pending) >= self.MAX_PENDING:
            self.flush()

    def _arena_buffer(self):
        if self._arena is None:
            self._arena = self._create_uniform(self.MAX_PENDING * self.PARAM_SLOT)
            self.counts["buffers_created"] += 1
            self._arena_host = bytearray(self.MAX_PENDING * self.PARAM_SLOT)
        return self._arena

    def _bind_group(self, kernel, uniform, buffers):
        """The bind group of these buffers for this kernel's layout: cached, so that
        repeated dispatches over pooled buffers create none."""
        key = (id(kernel.layout), id(uniform), *map(id, buffers))
        bg = self._bind_cache.get(key)
        if bg is None:
            if len(self._bind_cache) >= self.BIND_CACHE:
                self._bind_cache.clear()
                self._bind_keys.clear()
            bg = self._bind(kernel, uniform, self.PARAM_SLOT, buffers)
            self.counts["bind_groups_created"] += 1
            self._bind_cache[key] = bg
            for b in buffers:
                self._bind_keys.setdefault(id(b), []).append(key)
        return bg

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
        """Submit everything recorded so far, then return collected tensors to the pool."""
        batch = self._take_batch()
        if batch:
            self._submit(batch)
        self._bury()

    def _take_batch(self) -> list:
        """The pending work, ready for one submit (the arena's parameters written first);
        [] if there is none."""
        if not self._pending:
            return []
        batch, self._pending = self._pending, []
        self._check_alive()
        if self._fresh:
            self._write_buffer(self._arena, bytes(self._arena_host[:self._fresh * self.PARAM_SLOT]))
            self._fresh = 0
        self.counts["submits"] += 1
        return batch

    def sync(self):
        self.flush()

    @contextlib.contextmanager
    def eager(self):
        """Suspend a recording plan: work inside runs as ordinary (eager) work. For what
        an op builds once and caches beyond any plan: packed weights, autotune runs."""
        plan, self._recording = self._recording, None
        try:
            yield
        finally:
            self._recording = plan

    # ---- plans
    def plan(self) -> Plan:
        """A new Plan; record it with `with plan: ...` (see Plan)."""
        return Plan(self)

    def _begin_recording(self, plan: Plan):
        if self._recording is not None:
            raise RuntimeError("plan: another plan is already recording")
        if plan.recorded or plan.recording:
            raise RuntimeError("plan: a plan is recorded once")
        self.flush()
        plan.recording, self._recording = True, plan

    def _end_recording(self, plan: Plan, failed=False):
        self._recording, plan.recording = None, False
        self._bury()
        if failed:
            self._release_plan(plan)
            return
        plan.inputs = list(plan.inputs.values())
        self._apply_stores(plan)
        n_params = sum(1 for s in plan.steps if s[2] is not None)
        if n_params:
            plan.params = self._create_uniform(n_params * self.PARAM_SLOT)
            self.counts["buffers_created"] += 1
            packed = bytearray(n_params * self.PARAM_SLOT)
        steps, slot = [], 0
        for kernel, buffers, params, groups in plan.steps:
            offset = 0
            if params is not None:
                offset = slot * self.PARAM_SLOT
                packed[offset:offset + len(params)] = params
                slot += 1
            bg = self._bind(kernel, plan.params if params is not None else None, self.PARAM_SLOT, buffers)
            self.counts["bind_groups_created"] += 1
            steps.append((kernel, bg, offset, groups))
        if n_params:
            self._write_buffer(plan.params, bytes(packed))
        plan.steps = steps
        plan.dispatches = len(steps)
        plan.encoded = self._encode_plan(steps)
        plan.recorded = True

    def _apply_stores(self, plan: Plan):
        """Plan.store: from the step where `new` was made on, its buffer is `old`'s
        (before that step the buffer served tensors already released)."""
        for new, old in plan.stores:
            base = getattr(new, "_base", new)
            if new.buffer is None:
                self._release_plan(plan)
                raise ValueError("plan.store: a stored tensor was released before the recording ended")
            if any(old.buffer is b for _, buffers, _, _ in plan.steps for b in buffers):
                self._release_plan(plan)
                raise ValueError(f"plan.store: the plan binds {old} itself; store into a tensor it does not read")
            plan.steps = [(k, [old.buffer if b is new.buffer else b for b in buffers] if i >= base._born else buffers,
                           params, groups)
                          for i, (k, buffers, params, groups) in enumerate(plan.steps)]
            plan.inputs.append(old)
            new.buffer = base.buffer = old.buffer    # reading `new` after a replay reads `old`
        plan.stores = []

    def _replay(self, plan: Plan):
        if not plan.recorded:
            raise RuntimeError("plan: record it (with plan: ...) before replay()")
        self._check_alive()
        if plan.checked != self.releases:   # some tensor was released since the last check
            for t in plan.inputs:
                if t.buffer is None:
                    raise ValueError(f"plan: a tensor it reads (shape {t.shape}) was released after recording")
            plan.checked = self.releases
        self.counts["replayed"] += plan.dispatches
        self._pending.append(plan)
        if len(self._pending) >= self.MAX_PENDING:
            self.flush()

    def _replay_step(self, plan: Plan, i: int):
        if not plan.recorded:
            raise RuntimeError("plan: record it (with plan: ...) before replay_step()")
        if not 0 <= i < len(plan.steps):
            raise ValueError(f"plan.replay_step: step {i} of a plan of {len(plan.steps)} steps")
        self._check_alive()
        self.counts["replayed"] += 1
        self._pending.append(plan.steps[i])
        if len(self._pending) >= self.MAX_PENDING:
            self.flush()

    def _release_plan(self, plan: Plan):
        self.flush()  # submitted work may still use the plan's buffers: keep the order
        for ref in plan.created:
            t = ref()
            if t is not None and getattr(t, "buffer", None) is not None:
                self.mem_in_use -= (max(t.nbytes, 4) + 3) // 4 * 4
                t.buffer = None
        for buf, size in plan.buffers:
            self._pool.give(buf, size)
        if plan.params is not None:
            self._destroy_buffer(plan.params)
            self.counts["buffers_destroyed"] += 1
        plan.buffers, plan.free, plan.created, plan.steps, plan.inputs, plan.made = [], {}, [], [], [], set()
        plan.encoded = plan.params = None
        plan.recorded, plan.stores = False, []

    # ---- backend primitives
    def _create_buffer(self, nbytes):
        raise NotImplementedError

    def _create_uniform(self, nbytes):
        raise NotImplementedError

    def _destroy_buffer(self, buf):
        raise NotImplementedError

    def _write_buffer(self, buf, raw):
        raise NotImplementedError

    def _create_staging(self, nbytes):
        """A MAP_READ | COPY_DST buffer of nbytes."""
        raise NotImplementedError

    def _start_read(self, buf, size, batch, staging):
        """Submit `batch` (may be empty) and a copy of buf's first `size` bytes into
        `staging` in one command buffer, then request staging's map (one submit per
        readback); returns what _finish_read needs. Errors raise here or there."""
        raise NotImplementedError

    async def _finish_read(self, staging, handle) -> bytes:
        """Wait for the map of _start_read, copy the bytes out and unmap (the staging
        buffer is then free for another readback)."""
        raise NotImplementedError

    def _create_pipeline(self, label, source, entry, bindings, has_uniform, consts):
        raise NotImplementedError

    def _bind(self, kernel, uniform, uniform_size, buffers):
        raise NotImplementedError

    def _encode_plan(self, steps):
        return steps

    def _submit(self, batch):
        """batch: (kernel, bind group, uniform offset, groups) tuples and Plans."""
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
    "Device", "Tensor", "Kernel", "Plan", "BufferPool", "PendingRead", "StagingPool", "GPUError",
    "GPUOutOfMemoryError", "DeviceLostError", "NoGPUError", "ceil_div", "shape_size",
]
