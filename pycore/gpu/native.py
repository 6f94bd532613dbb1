"""Native backend: wgpu-py (wgpu-native) on the best adapter available.

On a machine without a GPU this is Mesa's lavapipe (Vulkan on the CPU).
"""

from __future__ import annotations

import os
import tempfile
import time

from .runtime import Device, DeviceLostError, GPUError, GPUOutOfMemoryError, NoGPUError, Plan, to_host

try:  # wgpu-py 0.32's own cffi bindings: the three encoding calls of a dispatch, without
    # its per-call wrapper (argument conversion and error capture cost more than the call;
    # encoding errors surface at finish()/submit(), which stay wrapped)
    from wgpu.backends.wgpu_native._ffi import ffi as _ffi
    from wgpu.backends.wgpu_native._ffi import lib as _lib
except ImportError:  # pragma: no cover - another wgpu-py: the public API below
    _ffi = _lib = None

# Limits we ask for up to what the adapter offers (WebGPU defaults are lower).
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
        self._staging = None    # reused MAP_READ buffer for readbacks

    # ---- primitives
    def _create_buffer(self, nbytes):
        U = self.U
        try:
            return self.device.create_buffer(size=nbytes, usage=U.STORAGE | U.COPY_SRC | U.COPY_DST)
        except Exception as e:
            raise _classify(e, f"allocating {nbytes / 2**20:.1f} MiB") from None

    def _create_uniform(self, nbytes):
        return self.device.create_buffer(size=nbytes, usage=self.U.UNIFORM | self.U.COPY_DST)

    def _destroy_buffer(self, buf):
        buf.destroy()

    def _write_buffer(self, buf, raw):
        self.queue.write_buffer(buf, 0, raw)

    async def _read_buffer(self, buf, nbytes):
        return self._read_now(buf, nbytes)

    def _read_now(self, buf, nbytes):
        """Copy into one reused MAP_READ staging buffer, map it, copy out (wgpu-py's
        queue.read_buffer makes and destroys a staging buffer per read)."""
        size = (nbytes + 3) // 4 * 4
        try:
            st = self._staging
            if st is None or st.size < size:
                if st is not None:
                    st.destroy()
                st = self._staging = self.device.create_buffer(
                    size=max(size, 1 << 16), usage=self.U.MAP_READ | self.U.COPY_DST)
            enc = self.device.create_command_encoder()
            enc.copy_buffer_to_buffer(buf, 0, st, 0, size)
            self.queue.submit([enc.finish()])
            st.map_sync("READ_NOSYNC", 0, size)
            try:
                data = st.read_mapped(0, size)
            finally:
                st.unmap()
        except Exception as e:
            raise _classify(e, "readback") from None
        return bytes(data)[:nbytes]

    def read_sync(self, t):
        if self._recording is not None:
            raise RuntimeError("read: a plan is recording; read its outputs after plan.replay()")
        self.flush()
        self.counts["readbacks"] += 1
        t0 = time.perf_counter()
        raw = self._read_now(t.buffer, t.nbytes)
        self.wait_s += time.perf_counter() - t0
        return to_host(raw, t.shape, t.dtype)

    def _layout(self, bindings, has_uniform):
        key = (tuple(b.read_only for b in bindings), tuple(b.index for b in bindings), has_uniform)
        if key not in self._layouts:
            wgpu = self._wgpu
            entries = []
            if has_uniform:
                entries.append({"binding": 0, "visibility": wgpu.ShaderStage.COMPUTE,
                                "buffer": {"type": wgpu.BufferBindingType.uniform, "has_dynamic_offset": True}})
            for b in bindings:
                t = wgpu.BufferBindingType.read_only_storage if b.read_only else wgpu.BufferBindingType.storage
                entries.append({"binding": b.index, "visibility": wgpu.ShaderStage.COMPUTE, "buffer": {"type": t}})
            bgl = self.device.create_bind_group_layout(entries=entries)
            self._layouts[key] = (bgl, self.device.create_pipeline_layout(bind_group_layouts=[bgl]))
        return self._layouts[key]

    def _create_pipeline(self, label, source, entry, bindings, has_uniform, consts):
        bgl, pl = self._layout(bindings, has_uniform)
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
        return steps, _raw_rows(steps)

    def _submit(self, batch):
        """One compute pass: fresh dispatches and replayed plans, in order. The dynamic
        offset selects each dispatch's parameters in its uniform buffer."""
        enc = self.device.create_command_encoder()
        cpass = enc.begin_compute_pass()
        label = "?"
        try:
            fresh = []
            for item in batch:
                if item.__class__ is Plan:
                    if fresh:
                        _encode(cpass, fresh, _raw_rows(fresh))
                        fresh = []
                    _encode(cpass, *item.encoded)
                else:
                    fresh.append(item)
            if fresh:
                _encode(cpass, fresh, _raw_rows(fresh))
            cpass.end()
            label = "submit of " + ", ".join(sorted({k.label for k in _kernels_of(batch)}))
            cmd = enc.finish()
            t0 = time.perf_counter()
            self.queue.submit([cmd])  # a CPU driver (lavapipe) runs the work here
            self.wait_s += time.perf_counter() - t0
        except Exception as e:
            raise _classify(e, label) from None


def _raw_rows(steps):
    """(handles, offsets) for _encode: per dispatch the pipeline and bind group handles,
    the number of dynamic offsets (0 or 1) and the grid; the offsets as one C array."""
    if _lib is None:
        return None
    rows = [(k.pipeline._internal, bg._internal, 1 if k.params else 0, *groups) for k, bg, _off, groups in steps]
    return rows, _ffi.new("uint32_t[]", [s[2] for s in steps] or [0])


def _encode(cpass, steps, raw):
    """Record dispatches into a compute pass (the objects in `steps` stay alive with it)."""
    if raw is None:
        for kernel, bind_group, offset, groups in steps:
            cpass.set_pipeline(kernel.pipeline)
            cpass.set_bind_group(0, bind_group, (offset,) if kernel.params else ())
            cpass.dispatch_workgroups(*groups)
        return
    rows, offsets = raw
    p, last = cpass._internal, None
    set_pipeline = _lib.wgpuComputePassEncoderSetPipeline
    set_bind_group = _lib.wgpuComputePassEncoderSetBindGroup
    dispatch = _lib.wgpuComputePassEncoderDispatchWorkgroups
    for i, (pipeline, bind_group, n, gx, gy, gz) in enumerate(rows):
        if pipeline != last:
            set_pipeline(p, pipeline)
            last = pipeline
        set_bind_group(p, 0, bind_group, n, offsets + i)
        dispatch(p, gx, gy, gz)


def _kernels_of(batch):
    for item in batch:
        if item.__class__ is Plan:
            yield from (s[0] for s in item.encoded[0])
        else:
            yield item[0]


_DEFAULT = None


def get_device() -> NativeDevice:
    """The process-wide native device (created on first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = NativeDevice()
    return _DEFAULT
