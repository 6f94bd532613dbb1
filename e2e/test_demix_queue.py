"""The demix page's queue (site/index.html, demix-main.py) in headless Chromium.

Three files are dropped at once: a real-music clip, a text file renamed to .wav and a
copy of the clip under another name. They become three rows separated one after
another: the undecodable one fails in its own row with the browser's reason, the two
clips finish. The stems kept are "vocals + everything but vocals": no_vocals must be
the mix minus the vocals within float32 error (one rounding of each difference, see
the bar below). The download format is switched from 32-bit float WAV to Opus (the
browser's WebCodecs encoder, in an Ogg file written by pycore/audio/oggopus.py) while
the first song runs: the copy, which starts later, must come out as Ogg Opus (each
song takes the settings shown when it starts) that libsndfile decodes natively, in
time with and close to the first song's float stems of the same audio. The zip holds
every stem of both finished songs, each in its song's format, byte for byte the
per-stem downloads. Screenshots of the queue during and after:
e2e/artifacts/demix-queue-*.png.

Each clip is one Spleeter segment (about 20 s on SwiftShader with 2 cores).
"""

import os
import shutil
import sys
import zipfile

import numpy as np
import pytest
import soundfile as sf
import soxr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
import audio_fixtures  # noqa: E402

READY_TIMEOUT_MS = 180_000
QUEUE_TIMEOUT_MS = 900_000
EPS32 = float(np.finfo(np.float32).eps)
# Opus at 160 kbps (stereo) against the float stem, waveform SNR after resampling the
# stem to 48 kHz (a perceptual codec: it does not keep the waveform closely): measured
# 22.5 dB (vocals) and 16.1 dB (no_vocals, denser) with Chromium 156; the bar is the
# lower less 3 dB for other libopus builds. A lag or a broken decode falls far below.
OPUS_MIN_SNR_DB = 13.0
MAX_LAG = 400  # samples at 48 kHz searched for a misalignment (Chromium's resampler alone adds 35)


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
    second = folder / "the-same-song.wav"  # the same audio: the first song's float stems are its reference
    shutil.copy(first, second)
    return [first, str(bad), str(second)]


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
    opus = page.get_attribute('#format option[value="opus"]', "title")
    assert page.is_enabled('#format option[value="opus"]'), f"Opus is not offered: {opus}"
    page.set_input_files("input[type=file]", files)
    page.wait_for_function("[...document.querySelectorAll('#jobs .job-stage')].some("
                           "s => s.textContent.startsWith('Separating'))", timeout=READY_TIMEOUT_MS)
    statuses = page.eval_on_selector_all("#jobs > .job", "rs => rs.map(r => [r.dataset.file, r.dataset.status])")
    assert statuses == [[os.path.basename(f), s] for f, s in zip(files, ("running", "waiting", "waiting"))], statuses
    page.select_option("#format", "opus")  # for the songs that start from now on
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


def lag_of(ref, got, most=MAX_LAG):
    """The shift (samples) by which `got` lags `ref`, by cross-correlation over +-most."""
    n = len(ref) + len(got)
    c = np.fft.irfft(np.fft.rfft(got, n) * np.conj(np.fft.rfft(ref, n)), n)
    lags = np.r_[np.arange(0, most + 1), np.arange(-most, 0)]
    return int(lags[np.argmax(c[lags])])


def test_the_format_chosen_later_applies_to_the_songs_that_start_later(queue, files, tmp_path):
    """The copy started after Opus was chosen: its stems are Ogg Opus files; decoded by
    libsndfile (48 kHz) they match the first song's float stems resampled to 48 kHz:
    the same length (the last granule trims the encoder's padding), no lag (the
    pre-skip the page measured) and an SNR that Opus at 160 kbps reaches."""
    if "OPUS" not in sf.available_subtypes("OGG"):
        pytest.skip("this libsndfile cannot decode Ogg Opus")
    page = queue.page
    first, _, second = files
    figures = {}
    for stem in ("vocals", "no_vocals"):
        want, sr, _ = read_wav(download(page, row(first) + f' [data-stem="{stem}"] a[download]', tmp_path))
        path = download(page, row(second) + f' [data-stem="{stem}"] a[download]', tmp_path)
        info = sf.info(str(path))
        assert path.name == f"the-same-song - {stem}.opus" and (info.format, info.subtype) == ("OGG", "OPUS"), info
        got, rate, _ = read_wav(path)
        ref = soxr.resample(want.T.astype(np.float64), sr, 48000, "VHQ").T
        assert rate == 48000 and got.shape == ref.shape, (rate, got.shape, ref.shape)
        lags = [lag_of(r, g) for r, g in zip(ref, got)]
        assert lags == [0, 0], f"{stem}: the Opus file lags the stem by {lags} samples at 48 kHz"
        figures[stem] = 10 * np.log10(np.sum(ref ** 2) / np.sum((got - ref) ** 2))
    print("\nOpus 160 kbps vs the float stems: " + ", ".join(f"{s} SNR {v:.1f} dB" for s, v in figures.items()))
    for stem, snr in figures.items():
        assert snr >= OPUS_MIN_SNR_DB, f"{stem}: SNR {snr:.1f} dB < {OPUS_MIN_SNR_DB} dB"


def test_the_zip_holds_every_stem_of_every_finished_song(queue, files, tmp_path):
    page = queue.page
    path = download(page, "#zip", tmp_path)
    songs = [(files[0], "wav"), (files[2], "opus")]  # each song in the format it was made in
    tracks = [(os.path.splitext(os.path.basename(f))[0], ext) for f, ext in songs]
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == sorted(f"{t}/{s}.{ext}" for t, ext in tracks for s in ("vocals", "no_vocals"))
        for (f, _), (t, ext) in zip(songs, tracks):
            single = download(page, row(f) + ' [data-stem="vocals"] a[download]', tmp_path)
            assert z.read(f"{t}/vocals.{ext}") == single.read_bytes()


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
