"""pycore.tone (the streaming tone-transfer engine) and pycore.tone.files / `stemtone tone`
(files in, files out), on the shipped instrument models and real singing.

References are independent of the engine: f0 of the output measured by CREPE
(pycore.tone.features, itself tested against torchcrepe in test_crepe.py), loudness by
DDSP's A-weighted loudness (test_loudness.py), analytic test signals (sines, noise,
silence), and the engine against itself cut into different blocks (the output must
not depend on the block size).
"""

import asyncio
import collections
import math

import numpy as np
import pytest
import soundfile as sf

from pycore import tone as T
from pycore.gpu.runtime import DeviceLostError
from pycore.tone.features import features
from pycore.tone import HOP, LOOKAHEAD, SAMPLE_RATE, ToneStream, fold_f0, load_tone_model

from singing import vocadito


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def models(dev):
    cache = {}

    def get(instrument):
        if instrument not in cache:
            cache[instrument] = load_tone_model(dev, instrument)
        return cache[instrument]
    return get


async def _render(model, x, blocks=None, **kw):
    """The whole output of a take, and the stream (for its latency)."""
    s = ToneStream(model, **kw)
    parts = []
    if blocks is None:
        parts.append((await s.push(x))["audio"])
    else:
        i, k = 0, 0
        while i < len(x):
            n = blocks[k % len(blocks)]
            parts.append((await s.push(x[i:i + n]))["audio"])
            i, k = i + n, k + 1
    parts.append((await s.flush())["audio"])
    return np.concatenate([np.frombuffer(p, np.float32) for p in parts]), s


def aligned(model, x, **kw):
    """Output aligned with the input (latency dropped), the input's length."""
    y, s = run(_render(model, x, **kw))
    return y[s.delay_samples:s.delay_samples + len(x)]


def sdr(ref, est):
    return 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - est).astype(np.float64) ** 2))


def cents(a, b):
    return 1200 * np.abs(np.log2(a / b))


def sine(freq, seconds, amp=0.3):
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ------------------------------------------------------------------ pure host logic


@pytest.mark.parametrize("f0,lo,hi,want", [
    (440.0, 60, 90, 440.0),            # inside: unchanged
    (80.0, 60, 93, 320.0),             # MIDI 39.5 -> two octaves up (63.5)
    (1500.0, 49, 80, 750.0),           # MIDI 90.2 -> one octave down (78.2)
    (0.0, 60, 90, 0.0),                # unvoiced stays 0
])
def test_fold_f0_moves_by_whole_octaves_into_the_range(f0, lo, hi, want):
    got = fold_f0(f0, lo, hi)
    assert got == pytest.approx(want, rel=1e-12)
    if f0 > 0:
        midi = 69 + 12 * math.log2(got / 440)
        assert lo <= midi <= hi


def test_latency_is_lookahead_plus_one_hop(models):
    s = ToneStream(models("violin"))
    assert s.delay_samples == HOP                                              # output index - input index
    assert LOOKAHEAD == 384 and s.latency_samples == LOOKAHEAD + HOP == 448   # 28 ms at 16 kHz (issue 12: <= 30)


def test_pitch_is_crepe_every_second_frame_interpolated_in_cents_three_frames_late(dev, models):
    """The engine's pitch track at frame f is CREPE-tiny's at frame f - 3 where f - 3 is
    even, else halfway (in cents) between its even neighbours: checked against CREPE at
    every frame (pycore.tone.features, an independent path: whole-signal frames) on real
    singing, pushed in 128-sample blocks and in uneven ones. Float32 rounding only: the
    bars are 0.05 cents and 1e-4 of confidence."""
    x = vocadito(14, seconds=1.5, offset=1.5)
    f0, conf, _ = run(features(dev, x))                    # full rate: frame k centered on 64 k
    f0, conf = np.asarray(f0, np.float64), np.asarray(conf, np.float64)
    even = np.arange(0, len(f0) - 1, 2)
    for blocks in ([128], [1, 333, 4000, 77]):
        s = ToneStream(models("violin"))
        got_f0, got_conf, i, k = [], [], 0, 0
        while i < len(x):
            out = run(s.push(x[i:i + blocks[k % len(blocks)]]))
            got_f0 += list(out["f0_hz"])
            got_conf += list(out["confidence"])
            i, k = i + blocks[k % len(blocks)], k + 1
        got_f0, got_conf = np.asarray(got_f0[3:even[-1] + 3]), np.asarray(got_conf[3:even[-1] + 3])
        frames = np.arange(len(got_f0))
        want_f0 = 2 ** np.interp(frames, even, np.log2(f0[even]))
        want_conf = np.interp(frames, even, conf[even])
        cents = 1200 * np.abs(np.log2(got_f0 / want_f0))
        print(f"\nblocks {blocks}: {len(frames)} frames, worst {cents.max():.4f} cents, "
              f"confidence {np.abs(got_conf - want_conf).max():.2e}")
        assert cents.max() < 0.05 and np.abs(got_conf - want_conf).max() < 1e-4


def test_unknown_instrument_lists_the_choices(dev):
    with pytest.raises(ValueError, match="unknown instrument 'tuba'; available: ") as e:
        load_tone_model(dev, "tuba")
    assert all(name in str(e.value) for name in ("violin", "flute", "trumpet", "saxophone", "guitar"))


def test_manifest_lists_five_instruments_with_ranges():
    names = T.instrument_names()
    assert sorted(names) == ["flute", "guitar", "saxophone", "trumpet", "violin"]
    for m in T.tone_models(T.read_manifest()):
        lo, hi = m["midi_range"]
        assert hi - lo >= 12


# ------------------------------------------------------------------ the engine on the GPU


def test_streaming_equals_offline_for_any_block_size(models):
    """The page pushes 128-sample blocks, the CLI seconds at a time: same output. Only
    float32 rounding differs (FFT partitions and GPU reductions over different block
    lengths), far below audibility: >= 90 dB (issue 12; reached 95.7 dB for 128-sample blocks)."""
    x = vocadito(14, seconds=2.0, offset=1.5)
    m = models("flute")
    assert m.calibration is not None                # the input calibration runs (its map rebuilt every 8 frames)
    whole, _ = run(_render(m, x))
    small, _ = run(_render(m, x, blocks=[128]))
    odd, _ = run(_render(m, x, blocks=[1, 333, 4000, 77]))
    assert len(whole) == len(small) == len(odd)
    print(f"\nstreaming vs offline SDR: 128-sample blocks {sdr(whole, small):.1f} dB, "
          f"uneven blocks {sdr(whole, odd):.1f} dB")
    assert sdr(whole, small) >= 90 and sdr(whole, odd) >= 90, (sdr(whole, small), sdr(whole, odd))


def test_push_returns_whole_frames_as_soon_as_their_windows_are_complete(models):
    s = ToneStream(models("violin"))
    out = run(s.push(np.zeros(LOOKAHEAD - 1, np.float32)))
    assert len(out["audio"]) == 0                       # frame 0 needs sample 383
    out = run(s.push(np.zeros(1, np.float32)))
    assert len(out["audio"]) == HOP and len(out["f0_hz"]) == 1
    out = run(s.push(np.zeros(10 * HOP, np.float32)))
    assert len(out["audio"]) == 10 * HOP and len(out["loudness_db"]) == 10


# vocadito 14 is a voice around 240 Hz (MIDI ~58), vocadito 10 a low voice around 125 Hz
# (MIDI ~47): the register shift moves them towards where each instrument plays (its
# training pitch median) by whole octaves, the octave knob adds to it, and the fold
# guards the range (tests/test_tone_controls.py checks the octaves chosen). The flute on
# vocadito 14 plays at octave 0 now: the register shift takes it up two octaves (MIDI ~83);
# the knob's +1 on top (needed before the shift) drove it to the range's top, where the
# loudness correlation fell to 0.899. The violin on vocadito 10 keeps +1 (the knob as an offset).
FOLLOW = [("violin", 14, 0), ("violin", 10, 1), ("flute", 14, 0), ("trumpet", 14, 0), ("saxophone", 14, 0),
          ("guitar", 10, 0)]


@pytest.mark.parametrize("instrument,clip,octave", FOLLOW)
def test_output_follows_real_singing(dev, models, instrument, clip, octave):
    """Issue 5's figure on real singing: the output's f0 is the input's moved by whole
    octaves (the octave knob, the register shift and the fold) within 50 cents (median
    over voiced frames: CREPE confidence > 0.5, loudness > -50 dB, the distance to the
    nearest whole octave), and the loudness tracks (A-weighted, 250 frames per second)
    correlate >= 0.9."""
    x = vocadito(clip, seconds=6.0, offset=1.0)
    y = aligned(models(instrument), x, octave=octave)
    fi, ci, li = run(features(dev, x))
    fo, co, lo = run(features(dev, y))
    voiced = (ci > 0.5) & (li > -50)
    assert voiced.mean() > 0.5
    c = cents(fo[voiced], fi[voiced] * 2 ** octave)
    err = np.median(np.abs(c - 1200 * np.round(c / 1200)))
    corr = np.corrcoef(li, lo)[0, 1]
    print(f"\n{instrument} vocadito_{clip} octave {octave}: median |f0 error| {err:.1f} cents, "
          f"loudness correlation {corr:.3f}")
    assert err <= 50, err
    assert corr >= 0.9, corr
    assert np.isfinite(y).all() and np.abs(y).max() < 1.0


def test_silence_in_silence_out(models):
    y = aligned(models("violin"), np.zeros(SAMPLE_RATE, np.float32))
    assert np.abs(y).max() == 0.0


def test_noise_in_gives_unpitched_noise_out(dev, models):
    """White noise: CREPE finds no pitch, so the harmonic part stays gated off and only
    the instrument's filtered noise remains: finite, not silent, no louder than the
    input (+6 dB at most: no blast), and not pitched (CREPE is not confident on it)."""
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32)
    y = aligned(models("trumpet"), x)
    assert np.isfinite(y).all() and np.abs(y).max() < 1.0
    rms_in, rms_out = np.sqrt(np.mean(x ** 2)), np.sqrt(np.mean(y ** 2))
    assert 1e-4 < rms_out < 2 * rms_in, (rms_out, rms_in)
    _, conf, _ = run(features(dev, y))
    assert np.median(conf) < 0.5


@pytest.mark.parametrize("register", [False, True])
@pytest.mark.parametrize("instrument,freq,folded", [("flute", 80.0, 320.0), ("saxophone", 1500.0, 750.0)])
def test_out_of_range_pitch_is_moved_by_octaves(dev, models, instrument, freq, folded, register):
    """A held sine outside the model's range. Without the register shift (a model with no
    calibration) the fold moves it the fewest octaves into the range: flute 80 Hz (MIDI
    39.5, range 60..93) two up to 320 Hz, saxophone 1500 Hz (90.5, range 49..80) one down
    to 750 Hz. With it, the one note first moves by R octaves, the smallest shift that
    brings its pitch (the running mean at its first frame) into the model's central
    training register (pycore.tone.calibration.pitch_band), then the fold: e.g. the
    flute (band 65.1 .. 89.0) R = +3, 640 Hz; the saxophone (53.8 .. 73.1) R = -2, 375 Hz."""
    from pycore.ops.tone_controls import register_shift
    from pycore.tone.calibration import pitch_band

    model = models(instrument)
    if register:
        midi = 69 + 12 * np.log2(freq / 440)
        R = register_shift(midi, 0.0, False, pitch_band(model.calibration), 0.0)
        assert R == {"flute": 3.0, "saxophone": -2.0}[instrument]
        want = fold_f0(freq * 2.0 ** R, *model.midi_range)
    else:
        model = load_tone_model(dev, instrument)
        model.calibration, want = None, folded
    x = sine(freq, 1.5)
    y = aligned(model, x)
    f0, conf, _ = run(features(dev, y))
    mid = slice(len(f0) // 4, 3 * len(f0) // 4)     # away from onset and release
    assert np.median(cents(f0[mid], want)) < 50
    assert np.isfinite(y).all() and np.abs(y).max() < 1.0


def test_nan_samples_are_treated_as_silence(models):
    x = sine(440.0, 0.5)
    x[1000:1100] = np.nan
    y = aligned(models("violin"), x)
    assert np.isfinite(y).all()


def test_octave_and_trim_are_live_attributes(models):
    s = ToneStream(models("violin"), octave=0, loudness_db=0.0)
    s.octave, s.loudness_db = 1, -6.0
    out = run(s.push(sine(330.0, 0.2)))
    assert np.isfinite(np.frombuffer(out["audio"], np.float32)).all()


def test_flush_ends_in_silence_and_lets_the_reverb_ring_out(models):
    m = models("violin")
    x = sine(440.0, 0.5)
    y, s = run(_render(m, x))
    frames = len(x) // HOP + 1 + s.tail_frames
    assert len(y) == frames * HOP
    assert np.abs(y[-HOP:]).max() < 1e-3 * np.abs(y).max()
    with pytest.raises(RuntimeError, match="flushed"):
        run(s.push(x))


# ------------------------------------------------------------------ files: pycore.tone / stemtone tone


def _wav(path, x, rate, channels=1):
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    sf.write(str(path), data, rate, subtype="PCM_16")
    return str(path)


def test_tone_file_keeps_length_and_rate_and_follows_the_melody(dev, tmp_path):
    """A 44.1 kHz stereo file in -> a mono 44.1 kHz file of the same length whose pitch
    is the input's moved by whole octaves (octave knob +1 on top of the register shift;
    resampling both ways around the 16 kHz engine)."""
    import pycore
    from pycore.audio.resample import resample

    x16 = vocadito(14, seconds=3.0, offset=1.0)
    x = resample(x16, SAMPLE_RATE, 44100)
    src = _wav(tmp_path / "song.wav", x, 44100, channels=2)
    out = tmp_path / "song.flute.wav"
    r = pycore.tone(src, "flute", output=str(out), octave=1, progress=False, dev=dev)
    assert r.ok, r.error
    y, rate = sf.read(str(out), dtype="float32")
    assert rate == 44100 and y.ndim == 1 and len(y) == len(x)
    fi, ci, li = run(features(dev, x16))
    fo, _, _ = run(features(dev, y, sample_rate=44100))
    n = min(len(fi), len(fo))
    voiced = ((ci > 0.5) & (li > -50))[:n]
    c = cents(fo[:n][voiced], fi[:n][voiced])
    assert np.median(np.abs(c - 1200 * np.round(c / 1200))) <= 50     # whole octaves apart, on the flute


def test_cli_tone_errors_name_the_problem(tmp_path, capsys):
    from pycore.cli.main import main

    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert main(["tone", str(empty), "-q"]) == 1
    assert "empty file" in capsys.readouterr().err
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF????WAVEjunkjunkjunk" * 10)
    assert main(["tone", str(junk), "-q"]) == 1
    assert "not an audio file" in capsys.readouterr().err
    assert main(["tone", str(junk), "-i", "tuba"]) == 2
    assert "unknown instrument 'tuba'" in capsys.readouterr().err
    nan = tmp_path / "nan.wav"
    x = sine(440.0, 0.3)
    x[100] = np.nan
    sf.write(str(nan), x, SAMPLE_RATE, subtype="FLOAT")
    assert main(["tone", str(nan), "-q", "-o", str(tmp_path / "o.wav")]) == 1
    assert "NaN sample" in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists()


def test_cli_tone_writes_output_and_refuses_to_overwrite(tmp_path, capsys):
    from pycore.cli.main import main

    src = _wav(tmp_path / "a.wav", sine(300.0, 0.6), 22050)
    out = tmp_path / "a.violin.wav"
    assert main(["tone", src, "-q", "-o", str(out), "--octave", "1", "--loudness-db", "-3"]) == 0
    assert f"-> {out}" in capsys.readouterr().out
    y, rate = sf.read(str(out))
    assert rate == 22050 and len(y) == sf.info(src).frames == 9600
    assert main(["tone", src, "-q", "-o", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["tone", src, "-q", "-o", str(out), "--overwrite", "--rate", "48000"]) == 0
    assert sf.info(str(out)).samplerate == 48000


def test_bench_tone_quick_reports_every_stage(capsys):
    """`stemtone bench tone --quick`: a row per stage with a real-time factor, the FLOPs
    per second of audio, the PyTorch reference ratio, and the oscillator drift within
    the 1e-3 cycle target (60 s here; the full run is an hour)."""
    import json

    from pycore.cli.main import main

    assert main(["bench", "tone", "--quick", "--seconds", "1", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    for stage in ("features", "decoder, offline", "synth", "engine"):
        row = next(r for n, r in rows.items() if n.startswith(stage))
        assert row["unit"] == "RTF" and row["ours"] > 0
    assert "GFLOP per s of audio" in rows["features (CREPE-tiny + loudness), offline"]["note"]
    drift = rows["oscillator phase, 60 s at 48 kHz"]
    assert drift["ours"] <= 1e-3 and drift["ours"] < drift["ref"] / 100   # float32 increments alone drift
    ref = rows["decoder + synth, offline vs PyTorch CPU"]
    assert ref["ratio"] == pytest.approx(ref["ref"] / ref["ours"])


def test_a_block_is_one_replayed_plan_with_one_readback(models):
    """Issue 12: per 128-sample block of the live page, after warm-up: one upload (the
    input; the live settings only when they change), one readback, the same replayed
    dispatches every block, no fresh dispatch, and no GPU object created over 1,000
    blocks (the plan owns its buffers and bind groups)."""
    m = models("violin")
    dev = m.dev
    s = ToneStream(m)
    x = sine(330.0, 0.1)
    run(s.push(np.zeros(LOOKAHEAD, np.float32)))          # warm-up: records the 2-frame plans,
    run(s.push(x[:128]))                                   # one per side of the carried state
    run(s.push(x[128:256]))
    assert {side for F, _, side in s.plans if F == 2} == {0, 1}
    counts0 = dict(dev.counts)
    blocks = 1000
    for k in range(blocks):
        i = (128 * k) % (len(x) - 128)
        run(s.push(x[i:i + 128]))
    d = {k: dev.counts[k] - counts0[k] for k in counts0}
    per = d["replayed"] / blocks
    print(f"\nper 128-sample block: {per:.0f} replayed dispatches, {d['uploads'] / blocks} uploads, "
          f"{d['readbacks'] / blocks} readbacks")
    assert d["readbacks"] == blocks and d["uploads"] == blocks
    assert d["dispatches"] == 0 and per == int(per) and per > 0
    assert d["buffers_created"] == 0 and d["bind_groups_created"] == 0
    s.octave = 1                                           # a live setting: one more upload
    run(s.push(x[:128]))
    assert dev.counts["uploads"] - counts0["uploads"] == blocks + 2


async def _pipelined(stream, blocks, depth):
    """Each block's output, with up to `depth` submits in flight (as the tone page runs)."""
    in_flight, outs = collections.deque(), []
    for b in blocks:
        if len(in_flight) == depth:
            outs.append(await in_flight.popleft())
        in_flight.append(stream.submit(b))
    while in_flight:
        outs.append(await in_flight.popleft())
    return outs


def test_pipelined_submits_equal_sequential_pushes_bit_for_bit(models):
    """Issue 12: with 3 blocks in flight (block n + 1 issued before block n's readback
    resolves) the output arrays are exactly those of sequential pushes, including a
    change of the live octave mid-take and the flush; one readback per block, and once
    warm no GPU buffer or bind group is made per block and the live counts stay flat."""
    m = models("violin")
    dev = m.dev
    x = vocadito(14, seconds=0.6, offset=1.5)
    blocks = [x[i:i + 128] for i in range(0, len(x), 128)]
    half = len(blocks) // 2

    async def take(pipelined):
        s = ToneStream(m)
        outs = []
        for part, octave in ((blocks[:half], 0), (blocks[half:], 1)):
            s.octave = octave
            outs += await _pipelined(s, part, 3) if pipelined else [await s.push(b) for b in part]
        return outs + [await s.flush()]

    want = run(take(False))
    got = run(take(True))
    assert len(got) == len(want) == len(blocks) + 1
    for k, (a, b) in enumerate(zip(want, got)):
        for key in a:
            assert bytes(a[key]) == bytes(b[key]), (k, key)
    assert sum(len(o["audio"]) for o in got) > 0.9 * len(x)

    s = ToneStream(m)
    run(_pipelined(s, blocks[:8], 3))                   # warm: plans of both sides, 3 staging buffers
    before, live, groups = dict(dev.counts), dev.live_buffers, dev.live_bind_groups
    rest = blocks[8:]
    run(_pipelined(s, rest, 3))
    d = {k: dev.counts[k] - before[k] for k in before}
    assert d["readbacks"] == len(rest) and d["dispatches"] == 0, d
    assert d["buffers_created"] == 0 and d["bind_groups_created"] == 0, d
    assert dev.live_buffers == live and dev.live_bind_groups == groups


def test_device_lost_at_an_await_is_clear_and_a_new_device_runs_a_new_take(models):
    """A device lost while blocks are in flight: each pending block raises DeviceLostError
    naming the cause and what to do, so does the next submit; a new ToneStream on a new
    device then renders the take as a stream on a healthy device does."""
    from pycore.gpu.native import NativeDevice

    x = sine(330.0, 0.2)
    d = NativeDevice()
    s = ToneStream(load_tone_model(d, "violin"))
    run(s.push(x[:LOOKAHEAD]))

    async def lose():
        pending = [s.submit(x[i:i + 128]) for i in range(LOOKAHEAD, LOOKAHEAD + 3 * 128, 128)]
        d.lost_reason = "simulated driver reset"
        for p in pending:
            with pytest.raises(DeviceLostError, match="simulated driver reset.*restart"):
                await p

    run(lose())
    with pytest.raises(DeviceLostError, match="simulated driver reset"):
        s.submit(x[:128])
    fresh = ToneStream(load_tone_model(NativeDevice(), "violin"))
    healthy = ToneStream(models("violin"))
    got, want = run(fresh.push(x)), run(healthy.push(x))
    assert len(got["audio"]) > 0
    np.testing.assert_array_equal(np.frombuffer(got["audio"], np.float32), np.frombuffer(want["audio"], np.float32))
