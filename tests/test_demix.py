"""The streaming demix pipeline (pycore/demix/spleeter.py) against the PyTorch reference
(tests/reference/spleeter_ref.py, which runs the STFT of the whole track, 512-frame
segments, the U-Nets and torch.istft with length=L).

One test runs the real Spleeter weights on real music; the others use a reduced-width
U-Net with random weights (pycore.models.spleeter.random_weights), compared with the
reference running the same weights, so that many lengths, streaming, mono, memory and
cancellation stay cheap on lavapipe. SDR = 10 log10(sum ref^2 / sum (ref - ours)^2).
A float32 pipeline lands at 115-150 dB here (measured); the issue's floor is 40 dB, the
tests ask for 80 dB so that a misplaced sample or a wrong envelope at the track's ends
(which costs far less than 40 dB of the whole track's SDR) still fails.
"""

import array
import asyncio

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from audio_fixtures import real_music_clip  # noqa: E402
from pycore import demix  # noqa: E402
from pycore.demix import Cancelled, Demixer  # noqa: E402
from pycore.demix.spleeter import CHUNK, SEGMENT, segment_count  # noqa: E402
from pycore.models.spleeter import random_weights  # noqa: E402
from reference import spleeter_ref as ref  # noqa: E402

MIN_SDR = 80.0


def sdr(want, got):
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    assert want.shape == got.shape
    err = np.sum((want - got) ** 2)
    return float("inf") if err == 0 else 10 * np.log10(np.sum(want ** 2) / err)


def run(coro):
    return asyncio.run(coro)


def torch_weights(entries):
    """{stem: {key: torch tensor}} for spleeter_ref from safetensors-style Entries."""
    out = {stem: {} for stem in ref.STEMS}
    for key, e in entries.items():
        stem, name = key.split(".", 1)
        out[stem][name] = torch.from_numpy(np.frombuffer(e.data, np.float32).reshape(e.shape).copy())
    return out


@pytest.fixture(scope="module")
def small_weights():
    return random_weights(widths=(4, 4, 8, 8, 16, 16), seed=1)


@pytest.fixture(scope="module")
def small(dev, small_weights):
    return run(Demixer.load(dev, weights=small_weights))


@pytest.fixture(scope="module")
def small_ref(small_weights):
    return torch_weights(small_weights)


@pytest.fixture(scope="module")
def music():
    return real_music_clip(14.0, offset=40.0)


def assert_matches(got, want, stems, channels):
    for stem in stems:
        assert len(got[stem]) == channels
        g = np.stack(got[stem])
        assert g.dtype == np.float32 and g.shape == want[stem].shape
        assert sdr(want[stem], g) >= MIN_SDR, (stem, sdr(want[stem], g))


# ----------------------------------------------------------------- the real model


def test_real_weights_on_real_music(dev):
    """15.3 s of real music with the Spleeter weights: 659 frames = two segments (the
    second partly padding), a length that is not a multiple of 1024."""
    from pycore.weights import convert_spleeter as spleeter

    try:
        path = spleeter.ensure_spleeter()
    except RuntimeError as e:  # offline: the weights cannot be fetched
        pytest.skip(str(e))
    demixer = run(Demixer.load(dev, weights=str(path)))
    wav = real_music_clip(15.3, offset=40.0)
    assert wav.shape[1] % 1024 and segment_count(wav.shape[1]) == 2
    want = ref.separate(wav, ref.load_weights(path), length=wav.shape[1])
    got = run(demixer.separate([wav[0], wav[1]]))
    assert_matches(got, want, demixer.stems, 2)
    # the ratio masks sum to 1: the stems add up to the input low-passed at bin 1024
    spec = ref.stft(torch.from_numpy(wav))
    spec[:, ref.BINS:] = 0
    lowpassed = ref.istft(spec, length=wav.shape[1]).numpy()
    assert sdr(lowpassed, np.stack(got["vocals"]) + np.stack(got["accompaniment"])) >= MIN_SDR


# ----------------------------------------------------------------- lengths, mono, level


@pytest.mark.parametrize("length", [
    1,                       # one frame, almost all padding
    777,                     # shorter than a hop
    3 * 44100 + 5,           # not a multiple of 1024
    SEGMENT,                 # 513 frames: a second segment holding one frame
    CHUNK,                   # segment 0 runs during push(), segment 1 in finish()
])
def test_lengths_match_reference(small, small_ref, music, length):
    wav = np.ascontiguousarray(music[:, :length])
    want = ref.separate(wav, small_ref, length=length)
    got = run(small.separate([wav[0], wav[1]]))
    assert_matches(got, want, small.stems, 2)


def test_mono_in_mono_out(small, small_ref, music):
    """Mono is duplicated for the stereo model; each stem is the mean of its two
    channels. 6 s: one segment."""
    x = np.ascontiguousarray(music[0, :6 * 44100])
    want = ref.separate(np.stack([x, x]), small_ref, length=len(x))
    got = run(small.separate([x]))
    for stem in small.stems:
        assert len(got[stem]) == 1 and got[stem][0].shape == x.shape
        assert sdr(want[stem].mean(axis=0), got[stem][0]) >= MIN_SDR


def test_quiet_input(small, small_ref, music):
    """At gain 1e-6 the squared U-Net outputs come near the mask formula's 1e-10, which
    then matters (simplified sigmoid^2 ratios would fail here)."""
    wav = music[:, :5 * 44100] * np.float32(1e-6)
    want = ref.separate(wav, small_ref, length=wav.shape[1])
    got = run(small.separate([wav[0], wav[1]]))
    assert_matches(got, want, small.stems, 2)


def test_array_in_array_out(small, small_ref, music):
    """The browser passes array('f') channels and gets array('f') back."""
    wav = music[:, :44100]
    want = ref.separate(wav, small_ref, length=wav.shape[1])
    got = run(small.separate([array.array("f", wav[0].tobytes()), array.array("f", wav[1].tobytes())]))
    for stem in small.stems:
        assert all(isinstance(g, array.array) and g.typecode == "f" for g in got[stem])
        assert sdr(want[stem], np.stack([np.frombuffer(g, np.float32) for g in got[stem]])) >= MIN_SDR


def test_empty_input(small):
    got = run(small.separate([np.zeros(0, np.float32), np.zeros(0, np.float32)]))
    assert all(len(ch) == 0 for chans in got.values() for ch in chans)


# ----------------------------------------------------------------- streaming


def test_streaming_random_blocks_equal_one_shot(small, rng, music):
    """2.3 segments pushed in random blocks (empty ones, tiny ones, more than a segment)
    give exactly the one-shot result, and every push returns only final samples."""
    n = 2 * SEGMENT + 300_000
    wav = np.concatenate([music, music[:, ::-1], music], axis=1)[:, :n]
    one_shot = run(small.separate([wav[0], wav[1]]))
    stream = small.stream(2)
    outs, pos, sizes = [], 0, []
    while pos < n:
        size = int(rng.choice([0, 1, 1000, 65536, 700_000, int(rng.integers(1, 300_000))]))
        sizes.append(size)
        out = run(stream.push([wav[0, pos:pos + size], wav[1, pos:pos + size]]))
        pos += size
        emitted = sum(len(o["vocals"][0]) for o in outs) + len(out["vocals"][0])
        # segment s is final once its whole chunk is in: max(0, 524288 k - 2048) samples
        k = max(0, (min(pos, n) + 2048 - CHUNK) // SEGMENT + 1)
        assert emitted == (max(0, k * SEGMENT - 2048) if k else 0), (sizes, emitted)
        outs.append(out)
    outs.append(run(stream.finish()))
    for stem in small.stems:
        for c in range(2):
            got = np.concatenate([o[stem][c] for o in outs])
            np.testing.assert_array_equal(got, one_shot[stem][c])


def test_middle_segments_replay_one_plan(dev, small, small_ref, music):
    """4 segments pushed a segment at a time: the first runs eagerly, the middle ones
    (1, 2) replay one plan recorded at segment 1, the last (in finish()) runs
    eagerly. A replayed segment makes no fresh dispatch and no GPU object: two uploads
    (its chunk and position), one readback. The result matches the reference."""
    n = 3 * SEGMENT + 200_000
    wav = np.concatenate([music, music[:, ::-1], music], axis=1)[:, :n]
    assert segment_count(n) == 4
    stream = small.stream(2)
    outs, deltas = [], []
    for pos in range(0, n, SEGMENT):
        dev.flush()
        before = dict(dev.counts)
        outs.append(run(stream.push([wav[0, pos:pos + SEGMENT], wav[1, pos:pos + SEGMENT]])))
        dev.flush()
        deltas.append({k: dev.counts[k] - before[k] for k in before})
    outs.append(run(stream.finish()))
    assert stream.segments_done == 4
    # pushes 1..3 ran segments 0..2, push 0 none
    eager, first_replay, replays = deltas[1], deltas[2], deltas[3:]
    assert eager["replayed"] == 0 and eager["dispatches"] > 0
    assert first_replay["replayed"] > 0  # recorded there (its dispatches count once), then replayed
    for d in replays:
        assert d["replayed"] == first_replay["replayed"]
        assert d["dispatches"] == d["buffers_created"] == d["bind_groups_created"] == 0, d
        assert d["uploads"] == 2 and d["readbacks"] == 1, d
    want = ref.separate(wav, small_ref, length=n)
    got = {stem: [np.concatenate([o[stem][c] for o in outs]) for c in range(2)] for stem in small.stems}
    assert_matches(got, want, small.stems, 2)


def test_memory_is_flat_and_progress(dev):
    """Peak GPU memory for 3 minutes equals that for 30 s: one segment at a time. A
    model of width 1 keeps this quick (the STFTs dominate); progress is reported after
    each segment."""
    tiny = run(Demixer.load(dev, weights=random_weights(widths=(1, 1, 1, 1, 1, 1), seed=2)))
    noise = np.random.default_rng(7).standard_normal((2, 180 * 44100)).astype(np.float32) * 0.1
    run(tiny.separate([noise[0, :44100], noise[1, :44100]]))  # warm up: packed weights, tables
    peaks, seen = [], []
    for seconds in (30, 180):
        dev.flush()
        before = dev.mem_in_use
        dev.reset_peak()
        run(tiny.separate([noise[0, :seconds * 44100], noise[1, :seconds * 44100]],
                          progress=lambda f, msg: seen.append((f, msg))))
        dev.flush()
        peaks.append(dev.mem_peak - before)
        assert dev.mem_in_use == before  # nothing left behind
    assert segment_count(30 * 44100) == 3 and segment_count(180 * 44100) == 16 and peaks[0] > 0
    assert abs(peaks[1] - peaks[0]) <= 0.03 * peaks[0], peaks
    assert [f for f, _ in seen[:3]] == pytest.approx([1 / 3, 2 / 3, 1.0]) and "segment 1" in seen[0][1]


# ----------------------------------------------------------------- cancel, errors


def test_cancel(small, music):
    wav = np.concatenate([music, music], axis=1)[:, :SEGMENT + 100_000]  # two segments
    calls = []

    def cancel_after_first():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Cancelled):
        run(small.separate([wav[0], wav[1]], should_cancel=cancel_after_first))
    assert len(calls) == 2


def test_errors(dev, small, small_weights):
    with pytest.raises(ValueError, match="1 or 2 channels"):
        small.stream(3)
    stream = small.stream(2)
    with pytest.raises(ValueError, match="expected 2 channel arrays"):
        run(stream.push([np.zeros(10, np.float32)]))
    with pytest.raises(ValueError, match="differ in length"):
        run(stream.push([np.zeros(10, np.float32), np.zeros(11, np.float32)]))
    run(stream.finish())
    with pytest.raises(RuntimeError, match="after finish"):
        run(stream.push([np.zeros(10, np.float32)] * 2))
    with pytest.raises(ValueError, match="unknown model"):
        run(Demixer.load(dev, name="spleeter-9stems", weights=small_weights))
    one_stem = {k: e for k, e in small_weights.items() if k.startswith("vocals.")}
    with pytest.raises(ValueError, match="stems"):
        run(Demixer.load(dev, weights=one_stem))
    assert demix.MODELS["spleeter-2stems"]["sample_rate"] == small.sample_rate == 44100


def test_everything_but_adds_up_to_the_mix():
    """The page's "everything but X": X as separated, no_X = mix - X in float32 (one
    rounding of the difference: within eps32 of |mix| + |X|), so X + no_X is the mix."""
    from pycore.demix.base import everything_but

    rng = np.random.default_rng(5)
    mix = rng.uniform(-1, 1, (2, 1000)).astype(np.float32)
    vocals = (0.5 * mix + 0.01 * rng.standard_normal((2, 1000))).astype(np.float32)
    stems = {"vocals": [array.array("f", c) for c in vocals], "accompaniment": [array.array("f", c) for c in mix]}
    out = everything_but("spleeter-2stems", stems, [array.array("f", c) for c in mix], "vocals")
    assert list(out) == ["vocals", "no_vocals"]
    assert out["vocals"] is stems["vocals"]
    got = np.array([np.frombuffer(c, np.float32) for c in out["no_vocals"]])
    bar = np.finfo(np.float32).eps * (np.abs(mix) + np.abs(vocals))
    assert np.all(np.abs(got - (mix.astype(np.float64) - vocals)) <= bar)
    with pytest.raises(ValueError, match="no stem 'drums'.*vocals, accompaniment"):
        everything_but("spleeter-2stems", stems, list(mix), "drums")
    with pytest.raises(ValueError, match="does not match the mix"):
        everything_but("spleeter-2stems", stems, [mix[0]], "vocals")
