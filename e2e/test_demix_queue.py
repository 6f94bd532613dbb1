"""The demix page's queue (site/index.html, demix-main.py) in headless Chromium.

Three files are dropped at once: a real-music clip, a text file renamed to .wav and a
second clip. They become three rows separated one after another: the undecodable one
fails in its own row with the browser's reason, the two clips finish. The stems kept
are "vocals + everything but vocals": no_vocals must be the mix minus the vocals
within float32 error (one rounding of each difference, see the bar below), per song.
The download format is switched to 16-bit WAV while the first song runs: the second
song, which starts later, must come out as 16-bit PCM (each song takes the settings
shown when it starts). The zip holds every stem of both finished songs, byte for
byte the per-stem downloads. Screenshots of the queue during and after:
e2e/artifacts/demix-queue-*.png.

Each clip is one Spleeter segment (about 20 s on SwiftShader with 2 cores).
"""

import os
import sys
import zipfile

import numpy as np
import pytest
import soundfile as sf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
import audio_fixtures  # noqa: E402

READY_TIMEOUT_MS = 180_000
QUEUE_TIMEOUT_MS = 900_000
EPS32 = float(np.finfo(np.float32).eps)


def read_wav(path):
    """[channels, samples] float32, the sample rate and the subtype."""
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return x.T, sr, sf.info(str(path)).subtype


def failure(bp, what):
    page = bp.page
    rows = page.eval_on_selector_all("#jobs > .job", "rs => rs.map(r => r.innerText.replace(/\\s+/g, ' '))")
    return f"{what}\nrows: {rows}\nconsole:\n{bp.console_report()}"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("queue")
    bad = folder / "not-audio.wav"
    bad.write_text("This is a text file renamed to .wav; no browser can decode it.\n" * 20)
    first = str(audio_fixtures.real_music_wav(3.0, offset=30.0))
    second = str(audio_fixtures.real_music_wav(2.0, offset=60.0))
    return [first, str(bad), second]


@pytest.fixture(scope="module")
def queue(server, open_module_browser, files):
    """The page after the three files went through the queue."""
    bp = open_module_browser(webgpu=True)
    page = bp.page
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready]", state="attached", timeout=READY_TIMEOUT_MS)
    assert page.get_attribute("body", "data-ready") == "true", failure(bp, "the page did not become ready")
    page.select_option("#two-stems", "vocals")
    page.select_option("#format", "wav32")
    page.set_input_files("input[type=file]", files)
    page.wait_for_function("[...document.querySelectorAll('#jobs .job-stage')].some("
                           "s => s.textContent.startsWith('Separating'))", timeout=READY_TIMEOUT_MS)
    statuses = page.eval_on_selector_all("#jobs > .job", "rs => rs.map(r => [r.dataset.file, r.dataset.status])")
    assert statuses == [[os.path.basename(f), s] for f, s in zip(files, ("running", "waiting", "waiting"))], statuses
    page.select_option("#format", "wav16")  # for the songs that start from now on
    bp.screenshot("demix-queue-during.png")
    assert "of 3 done" in page.inner_text("#queue-status"), page.inner_text("#queue-status")
    page.wait_for_function("document.body.dataset.state === 'idle'", timeout=QUEUE_TIMEOUT_MS)
    bp.screenshot("demix-queue-done.png")
    return bp


def row(name):
    return f'#jobs > .job[data-file="{os.path.basename(name)}"]'


def download(page, selector, folder):
    with page.expect_download() as info:
        page.click(selector)
    path = folder / info.value.suggested_filename
    info.value.save_as(path)
    return path


def test_the_undecodable_file_fails_in_its_row_and_the_others_finish(queue, files):
    page = queue.page
    first, bad, second = files
    assert page.get_attribute(row(bad), "data-status") == "failed", failure(queue, "the bad file did not fail")
    assert page.get_attribute(row(bad), "data-error") == "decode"
    message = page.inner_text(row(bad) + " .job-error")
    assert "cannot decode" in message, message
    for f in (first, second):
        assert page.get_attribute(row(f), "data-status") == "done", failure(queue, f"{f} did not finish")
        stems = page.eval_on_selector_all(row(f) + " [data-stem]", "rs => rs.map(r => r.dataset.stem)")
        assert stems == ["vocals", "no_vocals"], stems
    assert page.get_attribute("body", "data-results") == "2"
    assert "2 done" in page.inner_text("#queue-status") and "1 not separated" in page.inner_text("#queue-status")
    assert page.is_disabled("#cancel-all") and page.is_enabled("#zip")
    assert not queue.errors, queue.console_report()


def test_karaoke_is_the_mix_minus_the_vocals(queue, files, tmp_path):
    """no_vocals = fl32(mix - vocals): |error| <= eps32 / 2 * |mix - vocals| <= eps32 (|mix| + |vocals|),
    with the 32-bit float WAV of the first song (written without rounding)."""
    page = queue.page
    first = files[0]
    mix, _, _ = read_wav(first)
    vocals, sr, subtype = read_wav(download(page, row(first) + ' [data-stem="vocals"] a[download]', tmp_path))
    karaoke, _, _ = read_wav(download(page, row(first) + ' [data-stem="no_vocals"] a[download]', tmp_path))
    assert subtype == "FLOAT" and sr == 44100 and vocals.shape == karaoke.shape == mix.shape
    want = mix.astype(np.float64) - vocals
    error = np.abs(karaoke - want)
    bar = EPS32 * (np.abs(mix) + np.abs(vocals))
    print(f"\nkaraoke vs mix - vocals: max error {error.max():.2e}, vocals rms {np.sqrt(np.mean(vocals ** 2)):.3f}")
    assert np.all(error <= bar), f"{np.sum(error > bar)} samples off; max error {error.max():.3e}"
    assert np.sqrt(np.mean(vocals ** 2)) > 1e-3  # the vocals are not silence: the test can fail


def test_the_format_chosen_later_applies_to_the_songs_that_start_later(queue, files, tmp_path):
    page = queue.page
    second = files[2]
    mix, _, _ = read_wav(second)
    vocals, sr, subtype = read_wav(download(page, row(second) + ' [data-stem="vocals"] a[download]', tmp_path))
    karaoke, _, subtype2 = read_wav(download(page, row(second) + ' [data-stem="no_vocals"] a[download]', tmp_path))
    assert subtype == subtype2 == "PCM_16" and vocals.shape == mix.shape
    # each stem rounded to 16 bits, half a step each, where neither was clipped to full scale
    # (loud music: mix - vocals can pass 1)
    unclipped = (np.abs(karaoke) < 1 - 2 ** -14) & (np.abs(vocals) < 1 - 2 ** -14)
    assert unclipped.mean() > 0.9, unclipped.mean()
    error = np.abs(karaoke - (mix.astype(np.float64) - vocals))[unclipped]
    assert error.max() <= 2 ** -15 + EPS32, error.max()


def test_the_zip_holds_every_stem_of_every_finished_song(queue, files, tmp_path):
    page = queue.page
    path = download(page, "#zip", tmp_path)
    tracks = [os.path.splitext(os.path.basename(f))[0] for f in (files[0], files[2])]
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == sorted(f"{t}/{s}.wav" for t in tracks for s in ("vocals", "no_vocals"))
        for f, t in zip((files[0], files[2]), tracks):
            single = download(page, row(f) + ' [data-stem="vocals"] a[download]', tmp_path)
            assert z.read(f"{t}/vocals.wav") == single.read_bytes()


def test_cancel_all_and_clear(queue, files):
    """Two more songs, then Cancel all: the running one stops (at the latest between its
    two segments), the waiting one never starts; Clear empties the list."""
    page = queue.page
    long_clip = str(audio_fixtures.real_music_wav(14.0))  # two Spleeter segments
    page.set_input_files("input[type=file]", [long_clip, files[0]])
    page.wait_for_function("document.querySelectorAll('#jobs > .job').length === 5")
    page.click("#cancel-all")
    page.wait_for_function("document.body.dataset.state === 'idle'", timeout=QUEUE_TIMEOUT_MS)
    statuses = page.eval_on_selector_all("#jobs > .job", "rs => rs.map(r => r.dataset.status)")
    assert statuses[3:] == ["cancelled", "cancelled"], statuses
    assert page.get_attribute("body", "data-results") == "2"
    page.click("#clear")
    assert page.locator("#jobs > .job").count() == 0 and page.is_hidden("#queue")
