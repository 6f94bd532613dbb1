"""site/diagnostics.html in headless Chromium: every self-check passes on WebGPU."""

import time

# SwiftShader runs compute shaders on the CPU: the whole page can take minutes on 2 cores
DONE_TIMEOUT_MS = 600_000


def native_check_names():
    from pycore.gpu import selfcheck

    return set(selfcheck.load_all())


def rows(page):
    return page.eval_on_selector_all(
        "tr[data-check]",
        "rows => rows.map(r => ({name: r.dataset.check, ok: r.dataset.ok,"
        " detail: r.cells[2].textContent, ms: r.cells[3].textContent}))",
    )


def test_diagnostics_pass_on_webgpu(server, open_browser):
    bp = open_browser(webgpu=True)
    page = bp.page
    t0 = time.perf_counter()
    page.goto(server.url + "/diagnostics.html")
    page.wait_for_selector("body[data-status]", state="attached", timeout=DONE_TIMEOUT_MS)
    total_s = time.perf_counter() - t0
    status = page.get_attribute("body", "data-status")
    results = rows(page)
    shot = bp.screenshot("diagnostics.png")

    failed = [f"{r['name']}: {r['detail']}" for r in results if r["ok"] != "true"]
    summary = page.inner_text("#status-text")
    assert status == "pass" and not failed, (
        f"diagnostics {status}: {summary}\nfailed checks:\n  " + "\n  ".join(failed)
        + f"\nconsole:\n{bp.console_report()}\nscreenshot: {shot}"
    )
    names = {r["name"] for r in results}
    missing = native_check_names() - names
    assert not missing, f"checks registered natively but not run in the browser: {sorted(missing)}"
    assert {"webgpu.readback", "webgpu.dispatch", "webgpu.grid-fold", "webgpu.errors", "webgpu.device-lost"} <= names
    assert page.is_visible("#adapter-card") and page.inner_text("#adapter").strip()
    assert not bp.errors, bp.console_report()

    timing = {
        "python_ready_s": int(page.get_attribute("body", "data-python-ready-ms")) / 1000,
        "page_done_s": round(total_s, 1),
        "checks": {r["name"]: r["ms"] for r in results},
    }
    bp.save_json("diagnostics-timing.json", timing)
    print(f"\ncold start to Python ready: {timing['python_ready_s']:.1f} s; all checks done: {total_s:.1f} s")


def test_diagnostics_explain_missing_webgpu(server, open_browser):
    bp = open_browser(webgpu=False)
    page = bp.page
    page.goto(server.url + "/diagnostics.html")
    page.wait_for_selector("body[data-status]", state="attached", timeout=120_000)
    bp.screenshot("no-webgpu.png")
    assert page.get_attribute("body", "data-status") == "fail"
    assert page.get_attribute("body", "data-error") == "no-webgpu", bp.console_report()
    assert page.is_visible("#error")
    assert "WebGPU is not available" in page.inner_text("#error")
    assert not page.is_visible("#checks-card")
