"""Native backend: wgpu-py (wgpu-native) on the best adapter available.

On a machine without a GPU this is Mesa's lavapipe (Vulkan on the CPU).
"""

from __future__ import annotations

import os
import tempfile

from .runtime import Device, DeviceLostError, GPUError, GPUOutOfMemoryError, NoGPUError

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

    # ---- primitives
    def _create_buffer(self, nbytes):
        U = self.U
        try:
            return self.device.create_buffer(size=nbytes, usage=U.STORAGE | U.COPY_SRC | U.COPY_DST)
        except Exception as e:
            raise _classify(e, f"allocating {nbytes / 2**20:.1f} MiB") from None

    def _destroy_buffer(self, buf):
        buf.destroy()

    def _write_buffer(self, buf, raw):
        self.queue.write_buffer(buf, 0, raw)

    async def _read_buffer(self, buf, nbytes):
        return self._read_now(buf, nbytes)

    def _read_now(self, buf, nbytes):
        size = (nbytes + 3) // 4 * 4
        try:
            data = self.queue.read_buffer(buf, 0, size)
        except Exception as e:
            raise _classify(e, "readback") from None
        return bytes(data)[:nbytes]

    def read_sync(self, t):
        from .runtime import to_host

        self.flush()
        return to_host(self._read_now(t.buffer, t.nbytes), t.shape, t.dtype)

    def _layout(self, bindings, has_uniform):
        key = (tuple(b.read_only for b in bindings), tuple(b.index for b in bindings), has_uniform)
        if key not in self._layouts:
            wgpu = self._wgpu
            entries = []
            if has_uniform:
                entries.append({"binding": 0, "visibility": wgpu.ShaderStage.COMPUTE,
                                "buffer": {"type": wgpu.BufferBindingType.uniform}})
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

    def _bind(self, kernel, tensors, params):
        entries = []
        if params is not None:
            ubuf = self.device.create_buffer_with_data(data=params, usage=self.U.UNIFORM)
            entries.append({"binding": 0, "resource": {"buffer": ubuf, "offset": 0, "size": len(params)}})
        for b, t in zip(kernel.bindings, tensors):
            entries.append({"binding": b.index, "resource": {"buffer": t.buffer, "offset": 0, "size": t.buffer.size}})
        try:
            return self.device.create_bind_group(layout=kernel.layout, entries=entries)
        except Exception as e:
            raise _classify(e, kernel.label) from None

    def _submit(self, batch):
        enc = self.device.create_command_encoder()
        cpass = enc.begin_compute_pass()
        label = "?"
        try:
            for kernel, bind_group, groups in batch:
                label = kernel.label
                cpass.set_pipeline(kernel.pipeline)
                cpass.set_bind_group(0, bind_group)
                cpass.dispatch_workgroups(*groups)
            cpass.end()
            label = "submit of " + ", ".join(sorted({k.label for k, _, _ in batch}))
            self.queue.submit([enc.finish()])
        except Exception as e:
            raise _classify(e, label) from None


_DEFAULT = None


def get_device() -> NativeDevice:
    """The process-wide native device (created on first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = NativeDevice()
    return _DEFAULT
