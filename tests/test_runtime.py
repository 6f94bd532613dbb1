"""The runtime interface itself: uploads, readback, parameter packing, grid folding,
limits and error reporting, on the native (lavapipe) backend."""

import asyncio

import numpy as np
import pytest

from pycore.gpu import runtime
from pycore.gpu.runtime import DeviceLostError, GPUError, GPUOutOfMemoryError

SCALE_WGSL = """
// test kernel: y[i] = x[i] * scale + offset, 1-D grid of 64-wide workgroups
struct Params { n: u32, scale: f32, offset: i32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
override WG: u32 = 64;
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = wg_linear(wid, nwg) * WG + li;
    if (i < p.n) { y[i] = x[i] * p.scale + f32(p.offset); }
}
"""

# a short loop and a branch decided by uniforms: what lavapipe would recompile per dispatch
# (pycore.gpu.native's module docstring) were the parameters a uniform buffer
TAPS_WGSL = """
struct Params { n: u32, taps: u32, negate: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.n) { return; }
    var acc = 0.0;
    for (var k = 0u; k < p.taps; k++) { acc += x[i + k]; }
    if (p.negate == 1u) { acc = -acc; }
    y[i] = acc;
}
"""

BROKEN_WGSL = """
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(1) fn main() { y[0] = undefined_name; }
"""


@pytest.fixture
def kdir(tmp_path, monkeypatch):
    (tmp_path / "t_scale.wgsl").write_text(SCALE_WGSL)
    (tmp_path / "t_broken.wgsl").write_text(BROKEN_WGSL)
    (tmp_path / "t_taps.wgsl").write_text(TAPS_WGSL)
    monkeypatch.setattr(runtime, "KERNEL_DIRS", [str(tmp_path)] + runtime.KERNEL_DIRS)
    return tmp_path


def test_roundtrip_dtypes(dev, rng):
    x = rng.standard_normal((3, 5, 7)).astype(np.float32)
    t = dev.tensor(x)
    assert t.shape == (3, 5, 7)
    np.testing.assert_array_equal(t.numpy(), x)
    np.testing.assert_array_equal(asyncio.run(t.read()), x)
    i = dev.tensor(np.arange(-5, 6, dtype=np.int32), dtype="i32")
    np.testing.assert_array_equal(i.numpy(), np.arange(-5, 6))
    # lists and bytes work without numpy
    assert dev.tensor([1.0, 2.0, 3.0]).numpy().tolist() == [1.0, 2.0, 3.0]
    assert dev.tensor(np.float32([4, 5]).tobytes()).numpy().tolist() == [4.0, 5.0]


def test_f16_storage_and_fallback(dev):
    from pycore.gpu.native import NativeDevice

    x = np.float32([1.0, -2.5, 65504.0, 1e-3])
    h = np.float16(x).astype(np.float32)  # what half storage keeps
    t = dev.tensor(x, dtype="f16")
    assert t.dtype == ("f16" if dev.has_f16 else "f32")
    np.testing.assert_array_equal(t.numpy().astype(np.float32), h)
    nof16 = NativeDevice(f16=False)
    assert not nof16.has_f16
    t2 = nof16.tensor(x, dtype="f16")
    assert t2.dtype == "f32"  # fallback: f32 storage holding the f16-rounded values
    np.testing.assert_array_equal(t2.numpy(), h)


def test_reshape_views_share_buffer(dev):
    t = dev.tensor(np.arange(12, dtype=np.float32))
    v = t.reshape(3, -1)
    assert v.shape == (3, 4) and v.buffer is t.buffer
    with pytest.raises(ValueError, match="reshape"):
        t.reshape(5, 3)


def test_run_params_and_large_grid_is_folded(dev, kdir):
    k = dev.kernel("t_scale", consts={"WG": 64})
    n = 64 * 70_000 + 3  # 70,001 workgroups: more than one grid dimension allows
    assert dev.fold_grid(k, -(-n // 64))[1] > 1
    x = np.arange(n, dtype=np.float32)
    y = dev.empty((n,))
    dev.run(k, -(-n // 64), x=dev.tensor(x), y=y, n=n, scale=0.5, offset=-3)
    np.testing.assert_array_equal(y.numpy(), x * np.float32(0.5) - 3)


def run_taps(d, x, taps, negate):
    n = len(x) - taps + 1
    y = d.empty((n,))
    d.run(d.kernel("t_taps"), -(-n // 64), x=d.tensor(x), y=y, n=n, taps=taps, negate=negate)
    return y.numpy()


def test_params_in_a_storage_buffer_on_a_cpu_adapter(dev, kdir, monkeypatch, rng):
    """On a CPU adapter the native backend binds kernel parameters as a read-only storage
    buffer (lavapipe recompiles kernels whose uniform values steer a loop or a branch);
    STEMTONE_UNIFORM_PARAMS=1 keeps the uniform buffer. Both give the numpy result, in
    eager runs and replayed plans, and the same bits."""
    from pycore.gpu.native import NativeDevice

    assert dev.params_in_storage == (dev.adapter_info["adapter_type"].lower() == "cpu")
    monkeypatch.setenv("STEMTONE_UNIFORM_PARAMS", "1")
    uniform = NativeDevice()
    assert not uniform.params_in_storage
    x = rng.standard_normal(300).astype(np.float32)
    for taps in (1, 2, 5, 9):
        for negate in (0, 1):
            want = np.convolve(x.astype(np.float64), np.ones(taps))[taps - 1:len(x)] * (-1 if negate else 1)
            got = [run_taps(d, x, taps, negate) for d in (dev, uniform)]
            np.testing.assert_array_equal(got[0], got[1])
            np.testing.assert_allclose(got[0], want, rtol=0, atol=taps * 4e-7 * np.abs(x).max())
    y = dev.empty((296,))
    xt = dev.tensor(x)
    plan = dev.plan()
    with plan:
        dev.run(dev.kernel("t_taps"), 5, x=xt, y=y, n=296, taps=5, negate=1)
    plan.replay()
    np.testing.assert_array_equal(y.numpy(), run_taps(uniform, x, 5, 1))
    plan.release()


def test_storage_params_rewrite_and_refusals():
    from pycore.gpu.native import STORAGE_DECL, UNIFORM_DECL, storage_params

    assert storage_params(TAPS_WGSL, "t", 2, 8) == TAPS_WGSL.replace(UNIFORM_DECL, STORAGE_DECL)
    with pytest.raises(ValueError, match=r"t: 8 storage bindings leave no room.*at most 8.*STEMTONE_UNIFORM_PARAMS=1"):
        storage_params(TAPS_WGSL, "t", 8, 8)
    with pytest.raises(ValueError, match=r"expected one `var<uniform> p: Params`"):
        storage_params(TAPS_WGSL.replace(UNIFORM_DECL, "var<uniform> q: Params"), "t", 2, 8)


def test_replay_step_runs_one_dispatch_of_a_plan(dev, kdir):
    """Plan.replay_step(i) (profiling) runs step i alone, on the plan's bindings and
    parameters; out-of-range steps and unrecorded plans are refused."""
    k = dev.kernel("t_scale")
    x = dev.tensor(np.float32([1, 2, 3, 4]))
    y, z = dev.empty((4,)), dev.empty((4,))
    plan = dev.plan()
    with plan:
        dev.run(k, 1, x=x, y=y, n=4, scale=2.0, offset=0)
        dev.run(k, 1, x=x, y=z, n=4, scale=1.0, offset=10)
    plan.replay()
    dev.write(x, np.float32([5, 6, 7, 8]).tobytes())
    plan.replay_step(1)
    assert z.numpy().tolist() == [15, 16, 17, 18] and y.numpy().tolist() == [2, 4, 6, 8]
    with pytest.raises(ValueError, match="step 2 of a plan of 2 steps"):
        plan.replay_step(2)
    plan.release()
    with pytest.raises(RuntimeError, match="before replay_step"):
        dev.plan().replay_step(0)


def test_run_rejects_bad_arguments(dev, kdir):
    k = dev.kernel("t_scale")
    x, y = dev.tensor(np.zeros(4, np.float32)), dev.empty((4,))
    with pytest.raises(ValueError, match=r"t_scale:main: binding 'y'"):
        dev.run(k, 1, x=x, n=4, scale=1.0, offset=0)
    with pytest.raises(ValueError, match=r"missing parameter 'offset'"):
        dev.run(k, 1, x=x, y=y, n=4, scale=1.0)
    with pytest.raises(ValueError, match=r"does not fit u32"):
        dev.run(k, 1, x=x, y=y, n=-1, scale=1.0, offset=0)
    with pytest.raises(ValueError, match=r"per dimension"):
        dev.run(k, (70_000, 1, 1), x=x, y=y, n=4, scale=1.0, offset=0)


def test_compile_error_names_the_kernel(dev, kdir):
    with pytest.raises(GPUError, match=r"t_broken:main"):
        dev.kernel("t_broken")
    with pytest.raises(FileNotFoundError, match="no_such_kernel.wgsl"):
        dev.kernel("no_such_kernel")


def test_tensor_over_binding_limit_is_refused_clearly(dev):
    too_many = dev.max_binding // 4 + 1
    with pytest.raises(GPUOutOfMemoryError, match=r"largest binding.*smaller chunks"):
        dev.empty((too_many,))


def test_memory_accounting(dev):
    import gc

    gc.collect()
    dev.flush()  # frees tensors collected earlier
    before = dev.mem_in_use
    t = dev.empty((1000,))
    assert dev.mem_in_use == before + 4000 and dev.mem_peak >= dev.mem_in_use
    t.release()
    assert dev.mem_in_use == before
    t = dev.empty((1000,))
    del t  # collected: freed after the next submit
    dev.flush()
    assert dev.mem_in_use == before


def test_lost_device_raises_clear_error(kdir):
    from pycore.gpu.native import NativeDevice

    d = NativeDevice()
    t = d.tensor(np.ones(4, np.float32))
    d.lost_reason = "simulated driver reset"
    with pytest.raises(DeviceLostError, match="simulated driver reset.*restart"):
        d.empty((4,))
    with pytest.raises(DeviceLostError):
        asyncio.run(t.read())


def test_dtype_checks(dev):
    with pytest.raises(ValueError, match="unknown dtype"):
        dev.empty((2,), dtype="f64")
    with pytest.raises(ValueError, match="do not fill shape"):
        dev.tensor(np.zeros(5, np.float32), shape=(2, 3))


def test_readbacks_issued_now_and_awaited_later(dev, kdir):
    """dev.start_read: each readback is the tensor as it was at its issue, however many
    are in flight and whatever ran after (later uploads and dispatches queue after its
    copy); results are the same as dev.read's. Staging buffers come from a pool: once
    warm, no GPU buffer is made per readback and the live count stays flat."""
    t = dev.tensor(np.zeros(1000, np.float32))
    y = dev.empty((1000,))
    k = dev.kernel("t_scale")

    async def rounds(n):
        pending = []
        for i in range(n):
            dev.write(t, np.full(1000, i, np.float32).tobytes())
            dev.run(k, 16, x=t, y=y, n=1000, scale=2.0, offset=1)
            pending.append((i, dev.start_read(y), dev.start_read(t)))
        for i, py, pt in pending:
            np.testing.assert_array_equal(await py, np.full(1000, 2 * i + 1, np.float32))
            np.testing.assert_array_equal(await pt, np.full(1000, i, np.float32))
        np.testing.assert_array_equal(await dev.read(y), await dev.start_read(y))

    asyncio.run(rounds(4))                      # warm: the pool holds a staging buffer per read in flight
    live, created = dev.live_buffers, dict(dev.counts)
    asyncio.run(rounds(4))
    assert dev.live_buffers == live and dev.counts["buffers_created"] == created["buffers_created"]
    assert dev.counts["readbacks"] - created["readbacks"] == 4 * 2 + 2


def test_readback_errors_surface_at_the_await(kdir):
    """A lost device found while readbacks are in flight raises at each await with the
    usual message; one issued on a device already known lost raises at its await too."""
    from pycore.gpu.native import NativeDevice

    d = NativeDevice()
    t = d.tensor(np.ones(4, np.float32))
    pending = [d.start_read(t) for _ in range(3)]
    d.lost_reason = "simulated driver reset"
    late = d.start_read(t)                      # issued on a lost device: nothing raised yet

    async def await_all():
        for p in pending + [late]:
            with pytest.raises(DeviceLostError, match="simulated driver reset.*restart"):
                await p

    asyncio.run(await_all())
