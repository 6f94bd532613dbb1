"""site/learn.html, learning a sound, in headless Chromium (SwiftShader WebGPU).

One page (shared by the tests, in order) is refused a clip too short, a silent one and one
too long, each with its own message; then trains the tiny model on a 3 s clip: pauses
after the first epoch (the partial epoch is dropped) and resumes, generates 2 s that it
plays and offers as a WAV of that length, offers the model, whose file the native code
loads: its first epoch's loss equals the native one on the same samples (lavapipe) within
float32 noise. The device is then destroyed mid-training as a driver reset would: the
training resumes from the last saved epoch and finishes. The downloaded model loads again.
A browser without WebGPU says so.

Timing (recorded, never asserted): seconds per epoch in the browser (the best epoch after
the first, which compiles the shaders; the per-epoch save is not counted) and natively
(best of NATIVE_EPOCHS after the first) for the same config and samples, in
e2e/artifacts/learn-timing.json; screenshots during training and after generation.
Natively twice: on lavapipe (this process's device) and, where Chromium's SwiftShader
Vulkan driver is installed (SWIFTSHADER_ICD), on SwiftShader in a child process
(VK_ICD_FILENAMES): the adapter the headless browser runs on, so that "ratio_same_adapter"
compares the browser with our native path on the same adapter class.
"""

import asyncio
import concurrent.futures
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(REPO, "e2e", "artifacts")   # as in e2e/conftest.py

SR = 22050                   # the page's rate: a 22.05 kHz WAV is decoded without resampling
CLIP_S = 3.0
SIZE = "tiny"
GEN_S = 2.0
EPOCHS = 40                  # asked for before pausing: more than can finish before the pause lands
READY_TIMEOUT_MS = 180_000
EPOCH_TIMEOUT_MS = 240_000
NATIVE_EPOCHS = 3            # timed after the first (best of), as the browser's epochs after its first
SWIFTSHADER_ICD = "/usr/lib/chromium/vk_swiftshader_icd.json"   # Debian's chromium package
LOSS_RTOL = 1e-5             # browser vs native first-epoch loss: float32 sums of ~1e5 terms (reached 2e-7)


def tone_clip(seconds, seed=0):
    """A sung-like tone: harmonics of a vibrato pitch with a tremolo, and a little noise."""
    t = np.arange(round(seconds * SR)) / SR
    f0 = 220 * 2 ** (0.3 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(0.5 / k * np.sin(k * phase) for k in range(1, 8)) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
    x = x + 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.8 * x / np.abs(x).max()).astype(np.float32)


def wav(path, x):
    sf.write(str(path), x, SR, subtype="PCM_16")
    return str(path)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("learn")
    good = wav(d / "tone.wav", tone_clip(CLIP_S))
    return {"good": good, "samples": sf.read(good, dtype="float32")[0],
            "short": wav(d / "short.wav", tone_clip(1.0)),
            "silent": wav(d / "silent.wav", np.zeros(round(CLIP_S * SR), np.float32)),
            "long": wav(d / "long.wav", tone_clip(61.0))}


@pytest.fixture(scope="module")
def session(open_module_browser, server):
    bp = open_module_browser()
    bp.page.goto(f"{server.url}/learn.html")
    bp.page.wait_for_selector("body[data-ready]", state="attached", timeout=READY_TIMEOUT_MS)
    assert bp.page.evaluate("document.body.dataset.ready") == "true", bp.console_report()
    return bp


def body(page, name):
    return page.evaluate(f"document.body.dataset.{name} || ''")


def wait_body(page, js_condition, timeout=EPOCH_TIMEOUT_MS):
    page.wait_for_function(f"(() => {{ const b = document.body.dataset; return {js_condition}; }})()",
                           timeout=timeout)


def drop_clip(page, path):
    page.evaluate("document.body.removeAttribute('data-error')")
    page.set_input_files("#file", path)


@pytest.mark.parametrize("which, words", [("short", "too short"), ("silent", "silent"), ("long", "too long")])
def test_bad_clips_are_refused_by_name(session, clips, which, words):
    page = session.page
    drop_clip(page, clips[which])
    wait_body(page, "b.error === 'clip'", 60_000)
    assert words in page.inner_text("#error-message")
    assert page.is_disabled("[data-action=train]")


def test_trains_pauses_resumes_and_generates(session, clips, tmp_path):
    page = session.page
    drop_clip(page, clips["good"])
    page.wait_for_function("!document.querySelector('[data-action=train]').disabled", timeout=60_000)
    page.select_option("#size", SIZE)
    page.fill("#epochs", str(EPOCHS))
    page.click("[data-action=train]")
    wait_body(page, "b.epoch === '1'")
    session.screenshot("learn-training.png")
    page.click("[data-action=pause]")
    wait_body(page, "b.state === 'paused'")
    paused = int(body(page, "epoch"))
    assert 1 <= paused < EPOCHS
    assert page.inner_text("#train-eta") == ""
    page.fill("#epochs", str(paused + 1))
    page.click("[data-action=resume]")
    wait_body(page, f"b.state === 'trained' && b.epoch === '{paused + 1}'")
    losses = [float(v) for v in body(page, "losses").split(",")]
    assert len(losses) == paused + 1 and all(np.isfinite(losses))
    assert "left" in page.inner_text("#train-eta") or page.inner_text("#train-text").startswith("Trained")

    page.fill("#seconds", str(GEN_S))
    page.click("[data-action=generate]")
    wait_body(page, "b.generated !== undefined")
    session.screenshot("learn-generated.png")
    with page.expect_download() as dl:
        page.click("#gen-link")
    y, rate = sf.read(dl.value.path(), dtype="float32")
    assert rate == SR and len(y) == round(GEN_S * SR)
    assert np.isfinite(y).all() and 0.001 < np.abs(y).max() <= 1.0

    with page.expect_download() as dl:
        page.click("[data-action=save]")
    model_path = tmp_path / dl.value.suggested_filename
    dl.value.save_as(model_path)
    session.model_path = str(model_path)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's loop
        native = pool.submit(native_run, clips["samples"]).result()
    same = native_swiftshader_run(clips["good"])
    from pycore.weights import safetensors
    meta = safetensors.load_metadata(str(model_path))
    assert meta["epochs"] == str(paused + 1) and meta["hidden"] == "32"
    np.testing.assert_allclose(losses[0], native["first_loss"], rtol=LOSS_RTOL)
    seconds = [float(v) for v in body(page, "epochSeconds").split(",")]
    best = min(seconds[1:])  # the first epoch compiles the shaders
    timing = {"browser_epoch_s": best, "native_epoch_s": native["epoch_s"], "ratio": best / native["epoch_s"], "size": SIZE, "clip_s": CLIP_S,
              "steps": native["steps"], "browser_epochs_s": seconds, "gpu": page.inner_text("#gpu-name"),
              "native_gpu": native["gpu"], "first_loss": {"browser": losses[0], "native": native["first_loss"]}, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    if same:
        timing.update({"native_swiftshader_epoch_s": same["epoch_s"], "ratio_same_adapter": best / same["epoch_s"],
                       "native_swiftshader_gpu": same["gpu"], "native_swiftshader_first_loss": same["first_loss"]})
    session.save_json("learn-timing.json", timing)


def test_lost_device_resumes_from_the_saved_epoch(session):
    page = session.page
    done = int(body(page, "epoch"))
    page.fill("#epochs", str(done + 2))
    page.click("[data-action=resume]")
    wait_body(page, f"b.epoch === '{done + 1}'")
    page.evaluate("document.dispatchEvent(new Event('stemtone-lose-device'))")
    wait_body(page, f"b.state === 'trained' && b.epoch === '{done + 2}'")
    assert body(page, "recovered") == "1", session.console_report()
    assert "resumed from the saved epoch" in page.inner_text("#error-message")


def test_downloaded_model_loads_again(session):
    page = session.page
    page.set_input_files("#model-file", session.model_path)
    page.wait_for_function("document.querySelector('#model-info').textContent.includes('.safetensors')",
                           timeout=60_000)
    assert body(page, "state") == "trained"
    assert not page.is_disabled("[data-action=generate]")


def test_no_webgpu_is_said(open_browser, server):
    bp = open_browser(webgpu=False)
    bp.page.goto(f"{server.url}/learn.html")
    bp.page.wait_for_selector("body[data-ready]", state="attached", timeout=READY_TIMEOUT_MS)
    assert bp.page.evaluate("document.body.dataset.error") == "no-webgpu"
    assert bp.page.is_disabled("[data-action=train]")


def native_run(samples):
    """The same tiny model on the same samples natively: first-epoch loss, seconds per warm epoch."""
    from pycore.gpu.native import get_device
    from pycore.learn.clip import clip_frames
    from pycore.learn.train import Trainer
    from pycore.models.magnet import SIZES, MagNet

    dev = get_device()
    model = MagNet.create(dev, SIZES[SIZE], seed=0)
    z, model.mean, model.std = asyncio.run(clip_frames(dev, samples, model.config))
    trainer = Trainer(model, z.numpy().ravel())
    first = asyncio.run(trainer.epoch())
    times = []
    for _ in range(NATIVE_EPOCHS):
        t0 = time.perf_counter()
        asyncio.run(trainer.epoch())
        times.append(time.perf_counter() - t0)
    return {"first_loss": first, "epoch_s": min(times), "steps": trainer.steps(),
            "gpu": dev.describe()}


def native_swiftshader_run(clip_path):
    """native_run on SwiftShader in a child process (its own Vulkan driver); None where
    SwiftShader's Vulkan driver is not installed."""
    if not os.path.exists(SWIFTSHADER_ICD):
        return None
    env = {**os.environ, "VK_ICD_FILENAMES": SWIFTSHADER_ICD, "PYTHONPATH": REPO}
    out = subprocess.run([sys.executable, __file__, clip_path], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=600, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":  # native_swiftshader_run's child
    print(json.dumps(native_run(sf.read(sys.argv[1], dtype="float32")[0])))
