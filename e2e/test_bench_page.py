"""site/bench.html, the page `stemtone bench runtime --browser` drives, in headless
Chromium (SwiftShader WebGPU): over 1,000 live tone blocks in the page's worker, no GPU
object is created or destroyed (the runtime's pool, bind group cache and the block's
recorded plans hold everything), and each block is one upload and one readback. Counts
only; the bench itself reports the times."""

import json

BLOCKS = 1000


def test_a_thousand_tone_blocks_create_no_gpu_objects(server, open_browser):
    bp = open_browser(webgpu=True)
    page = bp.page
    page.goto(f"{server.url}/bench.html?blocks={BLOCKS}&htdemucs=0")
    page.wait_for_function("document.body.dataset.status", timeout=900_000)
    assert page.evaluate("document.body.dataset.status") == "done", bp.console_report()
    per = json.loads(page.eval_on_selector("#results", "e => e.textContent"))["counts"]
    print(f"\nper tone block over {BLOCKS} blocks: {per}")
    assert per["buffers_created"] == 0 and per["buffers_destroyed"] == 0, per
    assert per["bind_groups_created"] == 0, per
    assert per["uploads"] == 1 and per["readbacks"] == 1 and per["dispatches"] == 0, per
    assert per["replayed"] == int(per["replayed"]) > 0, per
    bp.screenshot("bench-page.png")
