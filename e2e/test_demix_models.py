"""The demix page with Demucs v4 and Open-Unmix models, in headless Chromium (SwiftShader).

Models of the official architectures in reduced configurations (SwiftShader runs the
shaders on 2 shared CPU cores), with random weights made by the reference packages and
saved in the official checkpoint formats (as tests/test_htdemucs.py and
tests/test_weights_fetch.py make them):

  htdemucs     demucs==4.1.0 HTDemucs in tests/test_htdemucs.py's SMALL configuration
               (channels=8, depth=3, nfft=512, t_layers=2, t_heads=2, bottom_channels=32,
               dconv_mode=3, segment=0.5 s: every code path of the official one), 4
               sources, saved as a demucs package (.th); converted by `stemtone weights
               convert` into the user's weights directory, which the server is given
               (`--weights-dir`): the page lists it as installed.
  htdemucs_6s  the same configuration with 6 sources, as a demucs .th file picked in
               the page: converted in the browser (pycore.weights.checkpoint), 6 stems.
  umxl         openunmix==1.3.0 OpenUnmix(nb_bins=2049, max_bin=1487, hidden_size=32,
               nb_layers=3), one .pth per target, the four files picked in the page.

Each model separates the same 1.5 s real-music clip through the UI; every stem's WAV
(downloaded through its link) is compared with pycore's native output for the same
file (Demixer on lavapipe, the file converted natively): SDR >= 100 dB per stem. The
figures and times go to e2e/artifacts/demix-models.json, screenshots to
e2e/artifacts/demix-models-*.png.
"""

import concurrent.futures
import hashlib
import io
import json
import os
import sys
import time
import zipfile

import numpy as np
import pytest
import soundfile as sf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
import audio_fixtures  # noqa: E402

torch = pytest.importorskip("torch")
htd = pytest.importorskip("test_htdemucs")  # the demucs model maker; skips without demucs

from pycore.cli import serve  # noqa: E402

CLIP_S = 1.5              # HTDemucs: 4 segments of 0.5 s (stride 0.375 s)
UMX_HIDDEN = 32
SIX = ["drums", "bass", "other", "vocals", "guitar", "piano"]
FOUR = ["drums", "bass", "other", "vocals"]
UMX_TARGETS = ["vocals", "drums", "bass", "other"]
READY_TIMEOUT_MS = 180_000
JOB_TIMEOUT_MS = 300_000
LAST = "#jobs > .job:last-child"  # the row of the song dropped last
# browser (SwiftShader) vs native (lavapipe), the same code: reached 118.9-127.6 dB
# (htdemucs, htdemucs_6s, umxl); the bar leaves about 19 dB for drivers' summation order
MIN_SDR_DB = 100.0


def sdr_db(ref, est):
    ref, est = np.asarray(ref, np.float64), np.asarray(est, np.float64)
    return 10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - est) ** 2), 1e-30))


def read_wav(path):
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return x.T, sr


def save_umx_files(folder, seed=1):
    """umxl's four targets (reduced hidden size), each an OpenUnmix state dict saved by
    torch.save as <target>-<sha256 prefix>.pth (the published files' naming)."""
    from pycore.reference import umx_torch

    try:
        umx_torch.modules()
    except ImportError as e:
        pytest.skip(str(e))
    weights = umx_torch.random_weights(seed=seed, config=dict(umx_torch.CONFIG, hidden_size=UMX_HIDDEN))
    paths = []
    for target in UMX_TARGETS:
        state = {k.split(".", 1)[1]: torch.from_numpy(np.array(v)) for k, v in weights.items()
                 if k.startswith(target + ".")}
        buf = io.BytesIO()
        torch.save(state, buf)
        path = folder / f"{target}-{hashlib.sha256(buf.getvalue()).hexdigest()[:8]}.pth"
        path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Checkpoints, the user's weights directory, the clip and pycore's native stems."""
    import asyncio

    from pycore.gpu.native import get_device
    from pycore.weights.fetch import convert
    from pycore.demix import Demixer

    root = tmp_path_factory.mktemp("models")
    ckpt, user, native_dir = root / "checkpoints", root / "user-weights", root / "native"
    for d in (ckpt, user, native_dir):
        d.mkdir()
    torch.set_num_threads(1)
    four = htd._save_package(ckpt, "955717e8", htd.reference(seed=0, sources=FOUR, **htd.SMALL))
    six = htd._save_package(ckpt, "5c90dfd2", htd.reference(seed=1, sources=SIX, **htd.SMALL))
    umx = save_umx_files(ckpt)
    files = {
        "htdemucs": convert([four], name="htdemucs", weights_dir=user),  # installed on the server
        "htdemucs_6s": convert([six], name="htdemucs_6s", weights_dir=native_dir),
        "umxl": convert(umx, name="umxl", weights_dir=native_dir),
    }
    clip = str(audio_fixtures.real_music_wav(CLIP_S))
    x, _ = read_wav(clip)

    async def separate(name, path):
        demixer = await Demixer.load(get_device(), name, weights=str(path))
        stems = await demixer.separate([x[0], x[1]])
        return {s: np.stack(chans) for s, chans in stems.items()}

    # in a thread of its own: Playwright's sync API keeps an event loop running in this one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        native = {name: pool.submit(asyncio.run, separate(name, path)).result() for name, path in files.items()}
    return {"user": user, "six": six, "umx": umx, "clip": clip, "x": x, "native": native, "files": files}


@pytest.fixture(scope="module")
def models_server(setup):
    srv = serve.make_server(weights_dir=str(setup["user"]))
    yield srv
    srv.stop()


class Page:
    def __init__(self, bp):
        self.bp, self.page = bp, bp.page
        self.report = {"clip_s": CLIP_S, "umx_hidden": UMX_HIDDEN, "models": {}}

    def failure(self, what):
        error = self.page.inner_text("#error") if self.page.is_visible("#error") else "(no error shown)"
        return f"{what}\nerror on the page: {error}\nconsole:\n{self.bp.console_report()}"

    def wait_idle(self, timeout=JOB_TIMEOUT_MS):
        self.page.wait_for_function("document.body.dataset.state === 'idle'", timeout=timeout)

    def count(self, attr):
        return int(self.page.get_attribute("body", f"data-{attr}") or 0)

    def load_checkpoint(self, paths):
        before = self.count("checkpoints")
        if self.page.get_attribute("body", "data-error"):
            self.page.click("#error-close")  # so that the wait below sees only a new error
        self.page.set_input_files("#checkpoint", [str(p) for p in paths])
        self.page.wait_for_function(f"(document.body.dataset.checkpoints|0) > {before} || "
                                    "document.body.dataset.error", timeout=JOB_TIMEOUT_MS)
        assert self.count("checkpoints") == before + 1, self.failure("the checkpoint was not loaded")
        self.wait_idle()

    def separate(self, name, setup, tmp_path, shot):
        """Separate the clip with the selected model; SDR of every downloaded stem."""
        page, before = self.page, self.count("results")
        t0 = time.perf_counter()
        page.set_input_files("input#file", setup["clip"])
        page.wait_for_function(f"(document.body.dataset.results|0) > {before} || document.body.dataset.error",
                               timeout=JOB_TIMEOUT_MS)
        assert self.count("results") == before + 1, self.failure(f"{name}: the separation did not finish")
        self.wait_idle()
        wall = time.perf_counter() - t0
        self.bp.screenshot(shot)
        want = setup["native"][name]
        links = page.eval_on_selector_all(f"{LAST} [data-stem] a[download]",
                                          "ls => ls.map(a => a.closest('[data-stem]').dataset.stem)")
        assert links == list(want), (links, list(want))
        figures = {}
        for stem in want:
            with page.expect_download() as info:
                page.click(f'{LAST} [data-stem="{stem}"] a[download]')
            path = tmp_path / f"{name}-{stem}.wav"
            info.value.save_as(path)
            got, sr = read_wav(path)
            assert sr == 44100 and got.shape == want[stem].shape == setup["x"].shape, (got.shape, want[stem].shape)
            figures[stem] = round(float(sdr_db(want[stem], got)), 1)
        self.report["models"][name] = {"sdr_vs_native_db": figures, "seconds_from_file_to_stems": round(wall, 1),
                                       "seconds_separate": float(page.get_attribute("body", "data-separate-seconds"))}
        self.bp.save_json("demix-models.json", self.report)
        print(f"\n{name}: SDR browser vs native " + ", ".join(f"{s} {v} dB" for s, v in figures.items())
              + f"; {wall:.1f} s from file to stems")
        for stem, value in figures.items():
            assert value >= MIN_SDR_DB, f"{name} {stem}: SDR {value} dB < {MIN_SDR_DB} dB against native pycore"


@pytest.fixture(scope="module")
def demix(models_server, open_module_browser):
    bp = open_module_browser(webgpu=True)
    p = Page(bp)
    bp.page.goto(models_server.url + "/")
    bp.page.wait_for_selector("body[data-ready]", state="attached", timeout=READY_TIMEOUT_MS)
    assert bp.page.get_attribute("body", "data-ready") == "true", p.failure("the page did not become ready")
    return p


# ------------------------------------------------------------------ tests (in order, one page)


def test_installed_models_are_listed_with_their_stems(demix):
    page = demix.page
    options = page.eval_on_selector_all("#model option", "os => os.map(o => [o.value, o.dataset.installed])")
    installed = [v for v, i in options if i == "true"]
    missing = [v for v, i in options if i == "false"]
    assert installed[:2] == ["spleeter-2stems", "htdemucs"] and "htdemucs" not in missing, options
    assert {"htdemucs_6s", "htdemucs_ft", "umxl"} <= set(missing), options
    page.select_option("#model", "htdemucs")
    page.wait_for_function("document.querySelectorAll('#model-stems li').length === 4")
    assert page.inner_text("#model-stems").split() == ["Drums", "Bass", "Other", "Vocals"]
    assert page.is_enabled("input#file") and page.is_hidden("#model-missing")
    page.select_option("#model", "htdemucs_6s")
    page.wait_for_function("document.querySelectorAll('#model-stems li').length === 6")
    assert page.inner_text("#model-stems").split() == [s.capitalize() for s in SIX]
    assert "stemtone weights fetch htdemucs_6s" in page.inner_text("#model-missing")
    assert page.is_disabled("input#file") and page.is_enabled("#checkpoint")
    demix.bp.screenshot("demix-models-not-installed.png")


def test_installed_htdemucs_matches_native(demix, setup, tmp_path):
    demix.page.select_option("#model", "htdemucs")
    demix.separate("htdemucs", setup, tmp_path, "demix-models-htdemucs-4stems.png")


def test_demucs_checkpoint_picked_in_the_page_gives_six_stems(demix, setup, tmp_path):
    page = demix.page
    demix.load_checkpoint([setup["six"]])
    assert page.eval_on_selector("#model", "s => s.value") == "file:1"
    assert page.inner_text("#model-stems").split() == [s.capitalize() for s in SIX]
    assert "htdemucs_6s" in page.inner_text("#checkpoint-status")
    demix.separate("htdemucs_6s", setup, tmp_path, "demix-models-6stems.png")
    # six rows: solo one, the other five fall silent; the zip holds six WAVs
    page.click(f'{LAST} [data-stem="guitar"] .solo')
    rows = page.eval_on_selector_all(f"{LAST} [data-stem].stem", "rs => rs.map(r => [r.dataset.stem, r.className])")
    assert {s for s, c in rows if "silent" in c} == set(SIX) - {"guitar"}, rows
    page.click(f'{LAST} [data-stem="guitar"] .solo')
    with page.expect_download() as info:
        page.click("#zip")
    path = tmp_path / "six.zip"
    info.value.save_as(path)
    track = os.path.splitext(os.path.basename(setup["clip"]))[0]
    # every finished song: the same clip separated by htdemucs before, then by this model
    assert sorted(zipfile.ZipFile(path).namelist()) == sorted(
        [f"{track}/{s}.wav" for s in setup["native"]["htdemucs"]] + [f"{track} (2)/{s}.wav" for s in SIX])


def test_open_unmix_checkpoints_picked_in_the_page(demix, setup, tmp_path):
    page = demix.page
    demix.load_checkpoint(setup["umx"])
    assert page.eval_on_selector("#model", "s => s.value") == "file:2"
    assert "umxl" in page.inner_text("#checkpoint-status")
    demix.separate("umxl", setup, tmp_path, "demix-models-umxl.png")
    assert not demix.bp.errors, demix.bp.console_report()


def test_live_gpu_buffers_stay_flat_across_ten_separations(demix, setup):
    """The worker's GPU buffers (created and not destroyed, the runtime's pool included)
    after each of ten more separations with the same model: the first job may fill the
    pool, later ones must reuse it (before the runtime's rewrite every dispatch leaked a
    uniform buffer, so the count grew with every job)."""
    page, live = demix.page, []
    for _ in range(10):
        before = demix.count("results")
        page.set_input_files("input#file", setup["clip"])
        page.wait_for_function(f"(document.body.dataset.results|0) > {before} || document.body.dataset.error",
                               timeout=JOB_TIMEOUT_MS)
        assert demix.count("results") == before + 1, demix.failure("a repeated separation did not finish")
        demix.wait_idle()
        live.append(demix.count("live-buffers"))
    demix.report["live_buffers_per_separation"] = live
    demix.bp.save_json("demix-models.json", demix.report)
    print(f"\nlive GPU buffers after each of ten separations: {live}")
    assert live[0] > 0 and max(live[1:]) <= live[0], live


def test_a_wrong_checkpoint_file_is_reported(demix, setup, tmp_path):
    page = demix.page
    bad = tmp_path / "model.th"
    bad.write_text("not a checkpoint\n" * 10)
    page.set_input_files("#checkpoint", str(bad))
    page.wait_for_selector("body[data-error]", state="attached", timeout=60_000)
    demix.wait_idle(60_000)
    assert page.get_attribute("body", "data-error") == "checkpoint"
    message = page.inner_text("#error")
    assert "model.th" in message and "not a PyTorch checkpoint" in message, message
    demix.bp.screenshot("demix-models-bad-checkpoint.png")
    assert page.locator(f"{LAST} [data-stem] a[download]").count() == len(UMX_TARGETS)  # the results stay
    assert page.is_enabled("#checkpoint") and page.is_enabled("input#file")
    print(json.dumps(demix.report, indent=1))


def test_a_converted_safetensors_file_is_taken_as_is(demix, setup, tmp_path):
    page = demix.page
    demix.load_checkpoint([setup["files"]["htdemucs_6s"]])  # made by `stemtone weights convert`
    value, label = page.eval_on_selector("#model", "s => [s.value, s.selectedOptions[0].textContent]")
    assert value.startswith("file:") and label.startswith("htdemucs_6s · htdemucs_6s.safetensors"), (value, label)
    assert page.inner_text("#model-stems").split() == [s.capitalize() for s in SIX]
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(setup["files"]["htdemucs_6s"].read_bytes()[:5000])
    page.set_input_files("#checkpoint", str(cut))
    page.wait_for_selector("body[data-error]", state="attached", timeout=60_000)
    demix.wait_idle(60_000)
    assert page.get_attribute("body", "data-error") == "checkpoint"
    assert "not a valid safetensors file" in page.inner_text("#error"), page.inner_text("#error")
    assert not demix.bp.errors, demix.bp.console_report()
