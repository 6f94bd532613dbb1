"""Diagnostics page, run by PyScript in a worker.

Creates the WebGPU device through pycore.gpu.browser, shows the adapter, then runs
a few probes of the browser backend itself ("webgpu.*") and every registered kernel
self-check (pycore.gpu.selfcheck), one table row each, live.

Stable hooks for end-to-end tests, set when everything has run:
    body[data-status]      "pass" | "fail"  (plus data-error="no-webgpu" without WebGPU)
    tr[data-check=NAME]    data-ok="true" | "false"
"""

import array
import time
import traceback

from pyscript import document, window

KEY_FEATURES = ("shader-f16", "timestamp-query", "subgroups")
KEY_LIMITS = (
    "max-buffer-size",
    "max-storage-buffer-binding-size",
    "max-storage-buffers-per-shader-stage",
    "max-compute-workgroup-storage-size",
    "max-compute-invocations-per-workgroup",
    "max-compute-workgroups-per-dimension",
)


# ------------------------------------------------------------------ DOM helpers
# Each DOM access is a synchronous round trip to the main thread: keep them few.


def by_id(name):
    return document.getElementById(name)


def element(tag, text="", cls=""):
    el = document.createElement(tag)
    if cls:
        el.className = cls
    if text:
        el.textContent = text
    return el


def set_status(state, text):
    """state: running | pass | fail (badge colour)."""
    badge = by_id("status-badge")
    badge.className = f"badge {state}"
    badge.textContent = {"running": "Running", "pass": "Pass", "fail": "Fail"}[state]
    by_id("status-text").textContent = text


def show_error(title, message, detail=""):
    by_id("error-title").textContent = title
    by_id("error-message").textContent = message
    pre = by_id("error-detail")
    pre.textContent = detail
    pre.hidden = not detail
    by_id("error").hidden = False


def finish(ok, text, error=""):
    set_status("pass" if ok else "fail", text)
    if error:
        document.body.dataset.error = error
    document.body.dataset.status = "pass" if ok else "fail"


def fmt_limit(name, v):
    if name.endswith("-size") and v >= 1 << 20:
        return f"{v / (1 << 20):,.0f} MiB"
    if name.endswith("-size") and v >= 1 << 10:
        return f"{v / (1 << 10):,.0f} KiB"
    return f"{v:,}"


def fmt_ms(seconds):
    return f"{seconds * 1000:,.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def show_adapter(dev, offered):
    info = dev.adapter_info
    dl = by_id("adapter")
    rows = [(k.capitalize(), info.get(k) or "—") for k in ("vendor", "architecture", "device", "description")]
    rows.append(("Backend", "WebGPU (navigator.gpu) in a worker"))
    rows.append(("f16 weights", "shader-f16" if dev.has_f16 else "stored as f32 (no shader-f16)"))
    for key, value in rows:
        dl.append(element("dt", key))
        dl.append(element("dd", value))
    chips = by_id("features")
    for f in KEY_FEATURES:
        chips.append(element("li", f, "key" if f in offered else "missing"))
    by_id("features-more").textContent = f"All {len(offered)} features"
    every = by_id("features-all")
    for f in sorted(offered):
        every.append(element("li", f))
    limits = by_id("limits")
    for name in KEY_LIMITS:
        if name in dev.limits:
            tr = element("tr")
            tr.append(element("td", name, "name"))
            tr.append(element("td", fmt_limit(name, dev.limits[name]), "num"))
            limits.append(tr)
    by_id("adapter-card").hidden = False


# ------------------------------------------------------------------ the check table


class CheckTable:
    def __init__(self, names):
        self.rows = {}  # name -> (row, badge, detail cell, time cell)
        self.names = list(names)
        self.done, self.failed = 0, 0
        body = by_id("checks")
        for name in self.names:
            tr, badge = element("tr"), element("span", "Queued", "badge")
            detail, ms = element("td", "", "detail"), element("td", "", "num")
            tr.dataset.check = name
            tr.append(element("td", name, "name"))
            cell = element("td")
            cell.append(badge)
            tr.append(cell)
            tr.append(detail)
            tr.append(ms)
            body.append(tr)
            self.rows[name] = (tr, badge, detail, ms)
        by_id("checks-card").hidden = False

    def running(self, name):
        badge = self.rows[name][1]
        badge.className, badge.textContent = "badge running", "Running"

    def result(self, name, ok, detail, seconds):
        tr, badge, detail_td, ms_td = self.rows[name]
        badge.className, badge.textContent = ("badge pass", "Pass") if ok else ("badge fail", "Fail")
        detail_td.textContent = detail
        ms_td.textContent = fmt_ms(seconds)
        tr.dataset.ok = "true" if ok else "false"
        self.done += 1
        self.failed += not ok
        by_id("progress").style.width = f"{100 * self.done / max(len(self.names), 1):.1f}%"
        by_id("summary").textContent = f"{self.done} of {len(self.names)} run, {self.failed} failed"
        if self.done < len(self.names):
            self.running(self.names[self.done])


# ------------------------------------------------------------------ probes of the browser backend
# Small WGSL programs that exercise every backend primitive: upload, readback, pipeline
# with explicit layout, override constants, uniforms, folded 1-D grids, error capture.

PROBE_WGSL = """
override WG: u32 = 64;
struct Params { n: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = wg_linear(wid, nwg) * WG + li;
    if (i < p.n) { y[i] = x[i] * p.scale + 1.0; }
}
"""


def probe_kernel(dev, label, source, consts=None):
    """Compile WGSL given as a string (ops use dev.kernel, which reads kernels/*.wgsl)."""
    from pycore.gpu import runtime

    source = runtime.kernel_source("common") + "\n" + source
    bindings, params = runtime.parse_kernel(source)
    pipeline, layout = dev._create_pipeline(label, source, "main", bindings, bool(params), consts or {})
    return runtime.Kernel(label, source, "main", bindings, params, pipeline, layout)


async def probe_readback(dev):
    from pycore.gpu import selfcheck

    data = array.array("f", selfcheck.rand(selfcheck.rng(1), 100_000))
    t = dev.tensor(data)
    for _ in range(2):  # the second read reuses the staging buffer
        got = await t.read()
        if got.tobytes() != data.tobytes():
            raise AssertionError("uploaded and read-back bytes differ")
    t.release()
    return f"{len(data):,} floats bit-exact, twice"


async def scale_probe(dev, n, wg):
    from pycore.gpu import selfcheck

    k = probe_kernel(dev, f"probe:scale_wg{wg}", PROBE_WGSL, {"WG": wg})
    xs = selfcheck.rand(selfcheck.rng(n), n)
    x, y = dev.tensor(xs), dev.empty((n,))
    groups = -(-n // wg)
    dev.run(k, groups, x=x, y=y, n=n, scale=0.5)
    got = await y.read()
    # x * 0.5 + 1 is exact in float32 for |x| <= 1 apart from the final rounding
    detail = selfcheck.assert_close(k.label, got, [v * 0.5 + 1.0 for v in array.array("f", xs)], rtol=1e-7, atol=0)
    return f"{groups:,} workgroups as {dev.fold_grid(k, groups)}; {detail}"


async def probe_dispatch(dev):
    return await scale_probe(dev, 1000, 64)


async def probe_grid_fold(dev):
    return await scale_probe(dev, dev.max_groups + 1000, 1)


async def probe_errors(dev):
    from pycore.gpu.runtime import GPUError

    probe_kernel(dev, "probe:broken", "@compute @workgroup_size(1) fn main() { let a = undefined_name; }")
    try:
        await dev.sync_errors()
    except GPUError as e:
        if "probe:broken" not in str(e):
            raise AssertionError(f"the error does not name the kernel: {e}") from None
        message = str(e).splitlines()[0]
    else:
        raise AssertionError("an invalid shader raised no error")
    await probe_readback(dev)  # the device is still usable afterwards
    return f"raised GPUError: {message[:100]}…" if len(message) > 100 else f"raised GPUError: {message}"


async def probe_device_lost(dev):
    from pycore.gpu.browser import create_device
    from pycore.gpu.runtime import DeviceLostError

    other = await create_device()  # a second device, so that this one stays usable
    t = other.tensor([1.0, 2.0, 3.0])
    other.device.destroy()
    await other.device.lost
    try:
        await t.read()
    except DeviceLostError as e:
        return f"raised DeviceLostError: {str(e)[:100]}"
    raise AssertionError("reading from a destroyed device raised no DeviceLostError")


PROBES = {
    "webgpu.readback": probe_readback,
    "webgpu.dispatch": probe_dispatch,
    "webgpu.grid-fold": probe_grid_fold,
    "webgpu.errors": probe_errors,
    "webgpu.device-lost": probe_device_lost,
}


# ------------------------------------------------------------------ main


async def main():
    t0 = time.perf_counter()
    ready_ms = float(window.performance.now())  # page clock: time since navigation began
    document.body.dataset.pythonReadyMs = f"{ready_ms:.0f}"
    set_status("running", "Requesting a WebGPU device…")
    from pycore.gpu import selfcheck
    from pycore.gpu.browser import create_device
    from pycore.gpu.runtime import NoGPUError

    try:
        dev = await create_device()
    except NoGPUError as e:
        show_error("WebGPU is not available", str(e))
        finish(False, "No WebGPU: the checks cannot run in this browser.", error="no-webgpu")
        return
    import js

    offered = set(js.Array.from_(dev.adapter.features).to_py())
    show_adapter(dev, offered)

    names = list(PROBES) + list(selfcheck.load_all())
    table = CheckTable(names)
    set_status("running", f"Running {len(names)} checks on {dev.describe()}…")
    table.running(names[0])
    results = []
    for name, fn in PROBES.items():
        t = time.perf_counter()
        try:
            detail, ok = await fn(dev), True
        except Exception as e:  # a failing probe must not stop the others
            detail, ok = f"{type(e).__name__}: {e}", False
        results.append((name, ok, str(detail), time.perf_counter() - t))
        table.result(*results[-1])
    results += await selfcheck.run_all(dev, on_result=table.result)

    failed = [r[0] for r in results if not r[1]]
    took = time.perf_counter() - t0
    if failed:
        text = f"{len(failed)} of {len(results)} checks failed: {', '.join(failed)}"
    else:
        text = f"All {len(results)} checks passed in {took:.1f} s on {dev.describe()}"
    text += f" · Python ready {ready_ms / 1000:.1f} s after page load"
    by_id("summary").textContent = f"{len(results) - len(failed)} of {len(results)} passed · {took:.1f} s"
    finish(not failed, text)


try:
    await main()  # noqa: F704 - PyScript runs scripts with top-level await
except Exception as e:
    show_error("The diagnostics crashed", f"{type(e).__name__}: {e}", traceback.format_exc())
    finish(False, "The diagnostics crashed (details below).")
