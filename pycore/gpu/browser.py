"""Browser backend: navigator.gpu (WebGPU) through Pyodide's `js` FFI.

    from pycore.gpu.browser import create_device
    dev = await create_device()

Runs in a PyScript page or worker. Everything is a direct WebGPU call on JS objects;
Python dicts become plain JS objects with `_js()` (WebGPU rejects JS Maps).

Errors: WebGPU validation errors never raise in JS. All work runs inside error scopes
(validation, out-of-memory, internal) that are popped and re-pushed at every readback's
issue (start_read), so a mistake in any recorded dispatch is raised as GPUError at the
await of the next readback issued after it.
Errors that escape the scopes land in `onuncapturederror` and are raised at the next
`run` / `flush` / `read`. Their messages name the kernel: every shader module and
pipeline carries the label "file:entry". A lost device sets `lost_reason`, which makes
the runtime raise DeviceLostError.

This module imports natively too (without `js` there is no WebGPU, and create_device
raises NoGPUError), so it never needs numpy.
"""

from __future__ import annotations

import array
import os
import time

from .native import WANTED_LIMITS
from .runtime import Device, GPUError, GPUOutOfMemoryError, NoGPUError, Plan

try:
    import js
    from pyodide.ffi import JsException, create_once_callable, create_proxy, jsnull, to_js
except ImportError:  # native Python: no browser, no WebGPU
    js = None

NO_WEBGPU = (
    "WebGPU is not available in this browser: use a recent Chrome or Edge (113 or newer), "
    "Firefox 141+ on Windows or Safari 26+, or enable WebGPU in the browser's settings"
)
NO_ADAPTER = (
    "WebGPU is not available in this browser: it offers no GPU adapter (the GPU may be "
    "blocklisted or hardware acceleration turned off; see chrome://gpu). Turn hardware "
    "acceleration on, update the browser or graphics driver, or enable WebGPU "
    "(chrome://flags/#enable-unsafe-webgpu on Linux)"
)

# Limits reported in adapter info and Device.limits (WebGPU names, hyphenated like wgpu-py).
LIMIT_NAMES = WANTED_LIMITS + (
    "max-compute-workgroups-per-dimension",
    "max-uniform-buffer-binding-size",
    "max-bind-groups",
    "max-bindings-per-bind-group",
    "min-storage-buffer-offset-alignment",
    "min-uniform-buffer-offset-alignment",
)
ERROR_SCOPES = ("internal", "out-of-memory", "validation")  # pushed in this order
LOST_WAIT_MS = 200     # how long a failed readback waits for device.lost to tell why


def _camel(name: str) -> str:
    """'max-buffer-size' -> 'maxBufferSize' (JS property names of GPUSupportedLimits)."""
    first, *rest = name.split("-")
    return first + "".join(w[:1].upper() + w[1:] for w in rest)


def _js(obj):
    """Python dict/list -> plain JS object/array (JS objects inside pass through)."""
    return to_js(obj, dict_converter=js.Object.fromEntries)


def _missing(v) -> bool:
    """JS undefined arrives as None, JS null as jsnull."""
    return v is None or (js is not None and v is jsnull)


def _read_limits(limits) -> dict:
    out = {}
    for name in LIMIT_NAMES:
        v = getattr(limits, _camel(name), None)
        if not _missing(v):
            out[name] = int(v)
    return out


def _as_gpu_error(err, where: str = "") -> GPUError:
    """A JS GPUError object (from an error scope or uncaptured event) -> Python exception."""
    kind = str(err.constructor.name)  # GPUValidationError / GPUOutOfMemoryError / GPUInternalError
    msg = str(err.message).strip()
    prefix = f"{where}: " if where else ""
    if kind == "GPUOutOfMemoryError":
        return GPUOutOfMemoryError(f"{prefix}GPU out of memory: {msg}")
    return GPUError(f"{prefix}WebGPU {kind.replace('GPU', '').replace('Error', '').lower()} error: {msg}")


class BrowserDevice(Device):
    backend = "browser"

    def __init__(self, adapter, device, adapter_info: dict):
        super().__init__()
        self.adapter = adapter
        self.device = device
        self.queue = device.queue
        self.adapter_info = adapter_info
        self.features = set(js.Array.from_(device.features).to_py())
        self.limits = _read_limits(device.limits)
        self.U = js.GPUBufferUsage
        self._layouts = {}
        self._errors = []        # Python GPUError exceptions waiting to be raised
        # keep the callbacks alive as long as the device
        self._on_error = create_proxy(self._uncaptured)
        device.onuncapturederror = self._on_error
        device.lost.then(create_once_callable(self._lost))
        self._push_scopes()

    # ---- error plumbing
    def _uncaptured(self, event):
        self._errors.append(_as_gpu_error(event.error))

    def _lost(self, info):
        self.lost_reason = f"{info.reason}: {info.message}".strip(": ")

    def _push_scopes(self):
        for s in ERROR_SCOPES:
            self.device.pushErrorScope(s)

    def _pop_promises(self) -> list:
        """Pop the error scopes and open them again (no await in between, so concurrent
        readbacks never interleave on the scope stack): the promises of their errors."""
        pending = [self.device.popErrorScope() for _ in ERROR_SCOPES]
        self._push_scopes()
        return pending

    def _collect(self, errors):
        """Errors resolved from popped scopes (JS null where none) into self._errors."""
        found = [_as_gpu_error(err) for err in errors if not _missing(err)]
        # pops go innermost first (validation, out-of-memory, internal): report OOM first
        found.sort(key=lambda e: not isinstance(e, GPUOutOfMemoryError))
        self._errors.extend(found)

    async def _pop_scopes(self):
        """Collect errors raised since the last pop into self._errors, then re-open scopes."""
        self._collect([await promise for promise in self._pop_promises()])

    def _raise_errors(self):
        if self._errors:
            first, self._errors = self._errors[0], []
            raise first

    def _check_alive(self):
        super()._check_alive()
        self._raise_errors()

    # ---- primitives
    def _create_buffer(self, nbytes):
        U = self.U
        return self.device.createBuffer(_js({"size": nbytes, "usage": U.STORAGE | U.COPY_SRC | U.COPY_DST}))

    def _create_uniform(self, nbytes):
        U = self.U
        return self.device.createBuffer(_js({"size": nbytes, "usage": U.UNIFORM | U.COPY_DST}))

    def _destroy_buffer(self, buf):
        buf.destroy()

    def _write_buffer(self, buf, raw):
        # zero-copy: a typed-array view on the Python bytes inside the WASM heap;
        # writeBuffer copies it before returning, so the view can be released at once
        proxy = create_proxy(memoryview(raw))
        view = proxy.getBuffer("u8")
        try:
            self.queue.writeBuffer(buf, 0, view.data)
        finally:
            view.release()
            proxy.destroy()

    def _create_staging(self, nbytes):
        U = js.GPUBufferUsage
        return self.device.createBuffer(_js({"size": nbytes, "usage": U.MAP_READ | U.COPY_DST, "label": "staging"}))

    def _start_read(self, buf, size, batch, staging):
        """Submit, request the map and pop the error scopes of the work submitted so far,
        all now; one JS promise settles them together (each await costs a trip through
        the event loop, more than the calls themselves)."""
        self._check_alive()
        self._submit(batch, copy=(buf, staging, size))
        promises = [staging.mapAsync(js.GPUMapMode.READ, 0, size)] + self._pop_promises()
        return js.Promise.allSettled(to_js(promises)), len(promises), size

    async def _finish_read(self, staging, handle):
        settled_promise, count, size = handle
        t0 = time.perf_counter()
        settled = await settled_promise
        self.wait_s += time.perf_counter() - t0
        mapped, *scopes = [settled[i] for i in range(count)]
        self._collect([r.value for r in scopes])
        map_error = None if str(mapped.status) == "fulfilled" else mapped.reason
        try:
            self._raise_errors()  # the recorded work's own error explains a failed map best
            if map_error is not None:
                if self.lost_reason is None:
                    await self._settle_lost()
                if self.lost_reason is not None or "lost" in str(map_error).lower():
                    self.lost_reason = self.lost_reason or str(map_error)
                    self._check_alive()  # raises DeviceLostError
                raise GPUError(f"readback failed: {map_error}")
            return staging.getMappedRange(0, size).to_bytes()
        finally:
            if str(staging.mapState) != "unmapped":
                staging.unmap()

    async def _settle_lost(self, wait_ms=LOST_WAIT_MS):
        """After a failed map: a destroyed device rejects the maps in flight ("unmapped
        before mapping was resolved") before its `lost` promise resolves, so wait for that
        promise (at most wait_ms) to tell a lost device from another failure."""
        timer = js.Promise.new(create_once_callable(lambda resolve, _reject: js.setTimeout(resolve, wait_ms)))
        await js.Promise.race(to_js([self.device.lost, timer]))

    def _layout(self, bindings, has_uniform):
        """Explicit bind group + pipeline layout from the parsed bindings (as native)."""
        key = (tuple(b.read_only for b in bindings), tuple(b.index for b in bindings), has_uniform)
        if key not in self._layouts:
            compute = js.GPUShaderStage.COMPUTE
            entries = []
            if has_uniform:
                entries.append({"binding": 0, "visibility": compute,
                                "buffer": {"type": "uniform", "hasDynamicOffset": True}})
            for b in bindings:
                t = "read-only-storage" if b.read_only else "storage"
                entries.append({"binding": b.index, "visibility": compute, "buffer": {"type": t}})
            bgl = self.device.createBindGroupLayout(_js({"entries": entries}))
            pl = self.device.createPipelineLayout(_js({"bindGroupLayouts": [bgl]}))
            self._layouts[key] = (bgl, pl)
        return self._layouts[key]

    def _create_pipeline(self, label, source, entry, bindings, has_uniform, consts):
        bgl, pl = self._layout(bindings, has_uniform)
        module = self.device.createShaderModule(_js({"label": label, "code": source}))
        compute = {"module": module, "entryPoint": entry}
        if consts:
            compute["constants"] = {k: float(v) for k, v in consts.items()}
        pipeline = self.device.createComputePipeline(_js({"label": label, "layout": pl, "compute": compute}))
        return pipeline, bgl

    def _bind(self, kernel, uniform, uniform_size, buffers):
        entries = []
        if uniform is not None:
            entries.append({"binding": 0, "resource": {"buffer": uniform, "size": uniform_size}})
        for b, buf in zip(kernel.bindings, buffers):
            entries.append({"binding": b.index, "resource": {"buffer": buf}})
        return self.device.createBindGroup(_js({"label": kernel.label, "layout": kernel.layout, "entries": entries}))

    def _encode_plan(self, steps):
        """A plan as the JS arrays `encode.js` takes: built once, replayed in one call."""
        return _js_steps(steps)

    def _submit(self, batch, copy=None):
        """One command buffer: the batch's compute pass (encode.js records each plan or
        run of fresh dispatches in one call), then the optional readback copy
        (source, destination, bytes)."""
        enc = self.device.createCommandEncoder()
        if batch:
            cpass = enc.beginComputePass()
            fresh = []
            for item in batch:
                if item.__class__ is Plan:
                    if fresh:
                        _ENCODE(cpass, *_js_steps(fresh))
                        fresh = []
                    _ENCODE(cpass, *item.encoded)
                else:
                    fresh.append(item)
            if fresh:
                _ENCODE(cpass, *_js_steps(fresh))
            cpass.end()
        if copy is not None:
            src, dst, size = copy
            enc.copyBufferToBuffer(src, 0, dst, 0, size)
        self.queue.submit(_js([enc.finish()]))

    async def sync_errors(self):
        """Wait for the GPU to validate everything so far; raise the first error."""
        self.flush()
        await self._pop_scopes()
        self._check_alive()


def _js_steps(steps):
    """(pipelines, bind groups, offsets, counts, grids) as JS arrays for encode.js."""
    offsets, counts, grids = array.array("I"), array.array("I"), array.array("I")
    for kernel, _bg, offset, groups in steps:
        offsets.append(offset)
        counts.append(1 if kernel.params else 0)
        grids.extend(groups)
    return (to_js([s[0].pipeline for s in steps]), to_js([s[1] for s in steps]),
            js.Uint32Array.new(to_js(offsets.tolist())), js.Uint32Array.new(to_js(counts.tolist())),
            js.Uint32Array.new(to_js(grids.tolist())))


def _load_encoder():
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "encode.js"), encoding="utf-8") as f:
        body = f.read()
    return js.Function.new("pass", "pipelines", "groups", "offsets", "counts", "grids", body)


_ENCODE = _load_encoder() if js is not None else None


def _adapter_info(adapter) -> dict:
    info = getattr(adapter, "info", None)
    out = {}
    for k in ("vendor", "architecture", "device", "description"):
        v = None if _missing(info) else getattr(info, k, None)
        out[k] = "" if _missing(v) else str(v)
    out["backend_type"] = "WebGPU"
    return out


async def create_device(power_preference: str = "high-performance", f16: bool = True) -> BrowserDevice:
    """Ask the browser for a WebGPU adapter and device; NoGPUError if there is none."""
    if js is None:
        raise NoGPUError("the browser backend runs only inside Pyodide (use pycore.gpu.native here)")
    gpu = getattr(js.navigator, "gpu", None)
    if _missing(gpu):
        raise NoGPUError(NO_WEBGPU)
    try:
        adapter = await gpu.requestAdapter(_js({"powerPreference": power_preference}))
    except JsException as e:
        raise NoGPUError(f"{NO_ADAPTER} ({e})") from None
    if _missing(adapter):
        raise NoGPUError(NO_ADAPTER)
    offered = set(js.Array.from_(adapter.features).to_py())
    features = [f for f in ("shader-f16", "timestamp-query") if f in offered]
    if not f16:
        features = [f for f in features if f != "shader-f16"]
    limits = {_camel(k): v for k, v in _read_limits(adapter.limits).items() if k in WANTED_LIMITS}
    try:
        device = await adapter.requestDevice(_js({"requiredFeatures": features, "requiredLimits": limits}))
    except JsException as e:
        raise NoGPUError(f"the GPU adapter refused to create a device: {e}") from None
    return BrowserDevice(adapter, device, _adapter_info(adapter))
