"""Native backend: wgpu-py (wgpu-native) on the best adapter available.

On a machine without a GPU this is Mesa's lavapipe (Vulkan on the CPU).

Parameters in a storage buffer on a CPU adapter. Every kernel reads its parameters from
`var<uniform> p: Params`, bound at a dynamic offset. Lavapipe (Mesa 22.3, Debian 12's)
"inlines" uniform values that decide an `if` or a loop's trip count: at each dispatch
whose uniform binding changed (every dispatch here: each has its own offset), it clones
the shader, substitutes the values, optimizes, and keeps the result unless it is not at
least half the size of the original; a kept variant is compiled by LLVM at that dispatch
and not cached. The size test subtracts unsigned counts, so a shader that grows (a short
loop unrolled once its trip count is known, as kernels/tone_controls.wgsl's loop over a
block's 2 to 7 frames) passes it as well. Such a kernel is recompiled at every dispatch:
2 to 13 ms instead of 0.05 ms (tone_controls; fft.wgsl's overlap_add, whose `p.raw`
and window branches fold away, 0.9 ms instead of 0.08). Only uniform-buffer loads are
inlined, so on a CPU adapter (params_in_storage) the backend declares the same struct as
`var<storage, read> p: Params` (same layout: Params holds 32-bit scalars only) and binds
the parameter buffers as read-only storage; kernels and the browser are unchanged.
STEMTONE_UNIFORM_PARAMS=1 keeps uniforms (to measure the difference).
"""

from __future__ import annotations

import os
import tempfile
import time

from .runtime import Device, DeviceLostError, GPUError, GPUOutOfMemoryError, NoGPUError, Plan, to_host

try:  # wgpu-py 0.32's own cffi bindings. A submit is a dozen C calls; wgpu-py's objects
    # (argument structs, Python wrappers, finalizers) cost more than the calls themselves,
    # so the submit path calls wgpu-native directly: `_lib` plain, `_libf` with wgpu-py's
    # error capture (validation errors raise), used where errors surface: finish, submit
    # and writes. Encoding errors are kept by the encoder and raised at finish.
    from wgpu.backends.wgpu_native._api import libf as _libf
    from wgpu.backends.wgpu_native._ffi import ffi as _ffi
    from wgpu.backends.wgpu_native._ffi import lib as _lib
except ImportError:  # pragma: no cover - another wgpu-py: the public API below
    _ffi = _lib = _libf = None

# Limits we ask for up to what the adapter offers (WebGPU defaults are lower).
UNIFORM_DECL = "var<uniform> p: Params"      # the kernels' one parameter declaration (runtime.parse_kernel)
STORAGE_DECL = "var<storage, read> p: Params"

WANTED_LIMITS = (
    "max-storage-buffer-binding-size",
    "max-buffer-size",
    "max-storage-buffers-per-shader-stage",
    "max-compute-workgroup-storage-size",
    "max-compute-invocations-per-workgroup",
    "max-compute-workgroup-size-x",
    "max-compute-workgroup-size-y",
    "max-compute-workgroup-size-z",
)


def _wgpu():
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    try:
        import wgpu
    except ImportError as e:  # pragma: no cover - install problem
        raise NoGPUError(f"wgpu-py is not installed ({e}); run `make demo` or `pip install wgpu`") from None
    return wgpu


def _classify(e: Exception, label: str) -> GPUError:
    wgpu = _wgpu()
    msg = str(e).strip()
    if isinstance(e, getattr(wgpu, "GPUOutOfMemoryError", ())) or "out of memory" in msg.lower():
        return GPUOutOfMemoryError(f"{label}: GPU out of memory: {msg}")
    if "lost" in msg.lower() and "device" in msg.lower():
        return DeviceLostError(f"{label}: the GPU device was lost: {msg}")
    return GPUError(f"{label}: {msg}")


class NativeDevice(Device):
    backend = "native"

    def __init__(self, power_preference="high-performance", adapter=None, f16=True):
        super().__init__()
        wgpu = self._wgpu = _wgpu()
        try:
            adapter = adapter or wgpu.gpu.request_adapter_sync(power_preference=power_preference)
        except Exception as e:
            raise NoGPUError(
                f"no GPU adapter found ({e}). On Debian install `mesa-vulkan-drivers` for a CPU fallback"
            ) from None
        if adapter is None:
            raise NoGPUError("no GPU adapter found. On Debian install `mesa-vulkan-drivers` for a CPU fallback")
        self.adapter = adapter
        info = adapter.info
        self.adapter_info = {k: info.get(k, "") for k in ("vendor", "architecture", "device", "description", "adapter_type", "backend_type")}
        feats = set(adapter.features)
        want = [f for f in ("shader-f16", "timestamp-query", "subgroup") if f in feats]
        if not f16 or os.environ.get("STEMTONE_NO_F16"):
            want = [f for f in want if f != "shader-f16"]
        limits = {k: adapter.limits[k] for k in WANTED_LIMITS if k in adapter.limits}
        self.device = adapter.request_device_sync(required_features=want, required_limits=limits)
        self.features = set(self.device.features)
        self.limits = dict(self.device.limits)
        self.queue = self.device.queue
        self.U = wgpu.BufferUsage
        self._layouts = {}
        # see the module docstring: a CPU driver recompiles kernels whose uniforms steer control flow
        self.params_in_storage = (self.adapter_info["adapter_type"].lower() == "cpu"
                                  and not os.environ.get("STEMTONE_UNIFORM_PARAMS"))

    # ---- primitives
    def _create_buffer(self, nbytes):
        U = self.U
        try:
            return self.device.create_buffer(size=nbytes, usage=U.STORAGE | U.COPY_SRC | U.COPY_DST)
        except Exception as e:
            raise _classify(e, f"allocating {nbytes / 2**20:.1f} MiB") from None

    def _create_uniform(self, nbytes):
        """A buffer of kernel parameters (read at a dynamic offset)."""
        kind = self.U.STORAGE if self.params_in_storage else self.U.UNIFORM
        return self.device.create_buffer(size=nbytes, usage=kind | self.U.COPY_DST)

    def _destroy_buffer(self, buf):
        buf.destroy()

    def _write_buffer(self, buf, raw):
        if _lib is None:
            self.queue.write_buffer(buf, 0, raw)
            return
        _libf.wgpuQueueWriteBuffer(self.queue._internal, buf._internal, 0, _ffi.from_buffer(raw), len(raw))

    def _create_staging(self, nbytes):
        return self.device.create_buffer(size=nbytes, usage=self.U.MAP_READ | self.U.COPY_DST)

    def _start_read(self, buf, size, batch, staging):
        """Submit `batch` and a copy of `buf` into `staging` in a single command buffer
        (wgpu-py's queue.read_buffer makes and destroys a staging buffer per read and
        submits twice), then request the map: one C call, its completion kept in
        _MAPPED under a ticket of its own. Returns (ticket, submission index)."""
        try:
            index = self._submit(batch, copy=(buf, staging, size))
            if _lib is None:
                return None, size
            ticket = _next_ticket()
            info = _ffi.new("WGPUBufferMapCallbackInfo *")
            info.mode = _lib.WGPUCallbackMode_AllowProcessEvents
            info.callback = _on_mapped
            info.userdata1 = _ffi.cast("void *", ticket)
            _lib.wgpuBufferMapAsync(staging._internal, _lib.WGPUMapMode_Read, 0, size, info[0])
            return ticket, index, size
        except GPUError:
            raise
        except Exception as e:
            raise _classify(e, "readback") from None

    async def _finish_read(self, staging, handle):
        return self._map_read(staging, handle)

    def _map_read(self, st, handle) -> bytes:
        """The staging buffer's bytes once its map completes: a blocking device poll up
        to the readback's own submission (later submissions may still run), one copy
        (wgpu-py's map_sync wakes its poll thread and makes a C callback per call, which
        costs more than the copy)."""
        try:
            if _lib is None:
                _, size = handle
                t0 = time.perf_counter()
                st.map_sync("READ_NOSYNC", 0, size)
                self.wait_s += time.perf_counter() - t0
                try:
                    return bytes(st.read_mapped(0, size))
                finally:
                    st.unmap()
            ticket, index, size = handle
            t0 = time.perf_counter()
            while ticket not in _MAPPED:         # the work before the copy runs to completion first
                _lib.wgpuDevicePoll(self.device._internal, True, index)
            self.wait_s += time.perf_counter() - t0
            status, message = _MAPPED.pop(ticket)
            if status != _lib.WGPUMapAsyncStatus_Success:
                raise _classify(RuntimeError(f"could not map the readback buffer ({status}: {message})"), "readback")
            try:
                return _ffi.buffer(_lib.wgpuBufferGetConstMappedRange(st._internal, 0, size), size)[:]
            finally:
                _lib.wgpuBufferUnmap(st._internal)
        except GPUError:
            raise
        except Exception as e:
            raise _classify(e, "readback") from None

    def read_sync(self, t):
        if self._recording is not None:
            raise RuntimeError("read: a plan is recording; read its outputs after plan.replay()")
        steps = self.start_read(t).__await__()   # a native readback's await never suspends
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        raise RuntimeError("read_sync: the native readback suspended")

    def _layout(self, bindings, has_uniform):
        key = (tuple(b.read_only for b in bindings), tuple(b.index for b in bindings), has_uniform)
        if key not in self._layouts:
            wgpu = self._wgpu
            entries = []
            if has_uniform:
                kind = wgpu.BufferBindingType.read_only_storage if self.params_in_storage else wgpu.BufferBindingType.uniform
                entries.append({"binding": 0, "visibility": wgpu.ShaderStage.COMPUTE,
                                "buffer": {"type": kind, "has_dynamic_offset": True}})
            for b in bindings:
                t = wgpu.BufferBindingType.read_only_storage if b.read_only else wgpu.BufferBindingType.storage
                entries.append({"binding": b.index, "visibility": wgpu.ShaderStage.COMPUTE, "buffer": {"type": t}})
            bgl = self.device.create_bind_group_layout(entries=entries)
            self._layouts[key] = (bgl, self.device.create_pipeline_layout(bind_group_layouts=[bgl]))
        return self._layouts[key]

    def _create_pipeline(self, label, source, entry, bindings, has_uniform, consts):
        bgl, pl = self._layout(bindings, has_uniform)
        if has_uniform and self.params_in_storage:
            source = storage_params(source, label, len(bindings), self.limits["max-storage-buffers-per-shader-stage"])
        module = self.device.create_shader_module(label=label, code=source)
        compute = {"module": module, "entry_point": entry}
        if consts:
            compute["constants"] = {k: float(v) for k, v in consts.items()}
        pipeline = self.device.create_compute_pipeline(label=label, layout=pl, compute=compute)
        return pipeline, bgl

    def _bind(self, kernel, uniform, uniform_size, buffers):
        entries = []
        if uniform is not None:
            entries.append({"binding": 0, "resource": {"buffer": uniform, "offset": 0, "size": uniform_size}})
        for b, buf in zip(kernel.bindings, buffers):
            entries.append({"binding": b.index, "resource": {"buffer": buf, "offset": 0, "size": buf.size}})
        try:
            return self.device.create_bind_group(layout=kernel.layout, entries=entries)
        except Exception as e:
            raise _classify(e, kernel.label) from None

    def _encode_plan(self, steps):
        return _raw_rows(steps)

    def _submit(self, batch, copy=None):
        """One command buffer: a compute pass with the fresh dispatches and replayed plans
        in order (the dynamic offset selects each dispatch's parameters in its uniform
        buffer), then the optional copy (source, destination, bytes) of a readback."""
        try:
            if _lib is None:
                cmd = self._record_objects(batch, copy)
                t0 = time.perf_counter()
                self.queue.submit([cmd])
                self.wait_s += time.perf_counter() - t0
                return
            enc = _lib.wgpuDeviceCreateCommandEncoder(self.device._internal, _ffi.NULL)
            try:
                if batch:
                    cpass = _lib.wgpuCommandEncoderBeginComputePass(enc, _ffi.NULL)
                    try:
                        fresh = []
                        for item in batch:
                            if item.__class__ is Plan:
                                if fresh:
                                    _encode(cpass, _raw_rows(fresh))
                                    fresh = []
                                _encode(cpass, item.encoded)
                            else:
                                fresh.append(item)
                        if fresh:
                            _encode(cpass, _raw_rows(fresh))
                        _lib.wgpuComputePassEncoderEnd(cpass)
                    finally:
                        _lib.wgpuComputePassEncoderRelease(cpass)
                if copy is not None:
                    src, dst, size = copy
                    _lib.wgpuCommandEncoderCopyBufferToBuffer(enc, src._internal, 0, dst._internal, 0, size)
                cmd = _libf.wgpuCommandEncoderFinish(enc, _ffi.NULL)     # encoding errors raise here
            finally:
                _lib.wgpuCommandEncoderRelease(enc)
            try:
                t0 = time.perf_counter()
                index = _ffi.new("WGPUSubmissionIndex *")
                index[0] = _libf.wgpuQueueSubmitForIndex(self.queue._internal, 1,
                                                         _ffi.new("WGPUCommandBuffer[1]", [cmd]))
                self.wait_s += time.perf_counter() - t0                 # a CPU driver (lavapipe) may run work here
                return index                                            # for a poll that waits for this submit
            finally:
                _lib.wgpuCommandBufferRelease(cmd)
        except Exception as e:
            label = "submit of " + ", ".join(sorted({k.label for k in _kernels_of(batch)})) if batch else "readback"
            raise _classify(e, label) from None

    def _record_objects(self, batch, copy):
        """_submit through wgpu-py's objects (a wgpu-py without cffi access)."""
        enc = self.device.create_command_encoder()
        if batch:
            cpass = enc.begin_compute_pass()
            for item in batch:
                for kernel, bind_group, offset, groups in (item.steps if item.__class__ is Plan else [item]):
                    cpass.set_pipeline(kernel.pipeline)
                    cpass.set_bind_group(0, bind_group, (offset,) if kernel.params else ())
                    cpass.dispatch_workgroups(*groups)
            cpass.end()
        if copy is not None:
            src, dst, size = copy
            enc.copy_buffer_to_buffer(src, 0, dst, 0, size)
        return enc.finish()


def storage_params(source: str, label: str, storage_bindings: int, limit: int) -> str:
    """The kernel source with its parameters declared as a read-only storage buffer (see
    the module docstring); ValueError if the kernel has no room for one more storage
    binding or does not declare them the runtime's way."""
    if storage_bindings + 1 > limit:
        raise ValueError(f"kernel {label}: {storage_bindings} storage bindings leave no room for its parameters "
                         f"as a storage buffer on this adapter (at most {limit}); run with STEMTONE_UNIFORM_PARAMS=1")
    if source.count(UNIFORM_DECL) != 1:
        raise ValueError(f"kernel {label}: expected one `{UNIFORM_DECL}` declaration")
    return source.replace(UNIFORM_DECL, STORAGE_DECL)


def _raw_rows(steps):
    """(handles, offsets) for _encode: per dispatch the pipeline and bind group handles,
    the number of dynamic offsets (0 or 1) and the grid; the offsets as one C array."""
    if _lib is None:
        return None
    rows = [(k.pipeline._internal, bg._internal, 1 if k.params else 0, *groups) for k, bg, _off, groups in steps]
    return rows, _ffi.new("uint32_t[]", [s[2] for s in steps] or [0])


def _encode(cpass, raw):
    """Record dispatches into a raw compute pass handle (the objects behind the handles
    stay alive with the batch or plan that holds them)."""
    rows, offsets = raw
    last = None
    set_pipeline = _lib.wgpuComputePassEncoderSetPipeline
    set_bind_group = _lib.wgpuComputePassEncoderSetBindGroup
    dispatch = _lib.wgpuComputePassEncoderDispatchWorkgroups
    for i, (pipeline, bind_group, n, gx, gy, gz) in enumerate(rows):
        if pipeline != last:
            set_pipeline(cpass, pipeline)
            last = pipeline
        set_bind_group(cpass, 0, bind_group, n, offsets + i)
        dispatch(cpass, gx, gy, gz)


def _kernels_of(batch):
    for item in batch:
        if item.__class__ is Plan:
            yield from (s[0] for s in item.steps)
        else:
            yield item[0]


_MAPPED = {}       # ticket -> (status, message) of a completed map request, set by _on_mapped
_TICKETS = [0]


def _next_ticket() -> int:
    """A number naming one map request (passed through the callback's user data)."""
    _TICKETS[0] = _TICKETS[0] % 0xFFFFFFFF + 1
    return _TICKETS[0]


if _lib is not None:
    @_ffi.callback("void(WGPUMapAsyncStatus, WGPUStringView, void *, void *)")
    def _on_mapped(status, message, user1, _user2):
        text = _ffi.string(message.data, message.length).decode("utf-8", "replace") if message.data else ""
        _MAPPED[int(_ffi.cast("uintptr_t", user1))] = (status, text)


_DEFAULT = None


def get_device() -> NativeDevice:
    """The process-wide native device (created on first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = NativeDevice()
    return _DEFAULT
