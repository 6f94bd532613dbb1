"""DDSP training tools (pycore/train/data.py, train_ddsp.py, evaluate.py): the MIDI
writer, the melody generator, the loss, the training step, and the path from saved
weights to the GPU model. Fast (tiny models, fractions of a second of audio); only the
fluidsynth render needs the program (apt-get install -y fluidsynth fluid-soundfont-gm,
not installed by `make test`) and is skipped without it.
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pycore.models.ddsp import Config, load  # noqa: E402
from pycore.ops.loudness import loudness_db  # noqa: E402
from pycore.reference import ddsp_numpy as ref  # noqa: E402
from pycore.weights.safetensors import load_metadata  # noqa: E402
from pycore.train import data as D  # noqa: E402
from pycore.train import evaluate as E  # noqa: E402
from pycore.train import train_ddsp as T  # noqa: E402
from pycore.train.ddsp_torch import DDSP  # noqa: E402

TINY = Config(ch=16, gru=16, n_harmonics=8, n_noise=9, reverb_length=300)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: torch's worker threads only wait for each other (seconds per test on
    a busy machine); one thread here, the previous count restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def sdr(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return 10 * np.log10(np.sum(want ** 2) / max(np.sum((got - want) ** 2), 1e-300))


# --------------------------------------------------------------------------- MIDI


def test_vlq_examples_from_the_smf_spec():
    # Standard MIDI File 1.0, "Variable Length Quantity" examples
    for n, want in [(0, "00"), (0x40, "40"), (0x7F, "7F"), (0x80, "81 00"), (0x2000, "C0 00"),
                    (0x3FFF, "FF 7F"), (0x4000, "81 80 00"), (0x1FFFFF, "FF FF 7F"), (0x200000, "81 80 80 00"),
                    (0x0FFFFFFF, "FF FF FF 7F")]:
        assert D._vlq(n) == bytes.fromhex(want), hex(n)


def test_midi_file_bytes_and_round_trip():
    m = D.melody("violin", 3, seconds=4.0)
    events = D.midi_events(m)
    data = D.midi_bytes(events)
    # header chunk: length 6, format 0, one track, 480 ticks per quarter note
    assert data[:14] == b"MThd" + bytes.fromhex("00000006 0000 0001 01E0")
    assert data[14:18] == b"MTrk" and int.from_bytes(data[18:22], "big") == len(data) - 22
    assert data[22:29] == bytes.fromhex("00 FF5103 07A120")         # tempo 500000 us / quarter
    assert data[-4:] == bytes.fromhex("00 FF2F00")                   # end of track
    division, tempo, back = D.read_midi(data)
    assert (division, tempo) == (480, 500_000)
    assert back == events
    # the messages say what the melody says
    ons = [(t, msg[1], msg[2]) for t, msg in back if msg[0] == 0x90]
    assert ons == [(round(n.start * 960), n.pitch, n.velocity) for n in m.notes]
    assert back[0] == (0, bytes([0xC0, 40]))                         # program: violin
    bends = [(msg[2] << 7 | msg[1]) - 8192 for _, msg in back if msg[0] == 0xE0]
    assert bends and max(abs(b) for b in bends) <= 8192 * 0.3 * 1.3 / 2 + 1


def test_read_midi_running_status():
    # two note-ons under one status byte, then a note-off
    track = bytes.fromhex("00 90 3C 40  60 3E 40  81 00 80 3C 00  00 FF 2F 00")
    data = b"MThd" + bytes.fromhex("00000006 0000 0001 0060") + b"MTrk" + len(track).to_bytes(4, "big") + track
    assert D.read_midi(data) == (96, 500_000, [(0, bytes.fromhex("903C40")), (96, bytes.fromhex("903E40")),
                                              (224, bytes.fromhex("803C00"))])


# --------------------------------------------------------------------------- melodies


@pytest.mark.parametrize("name", sorted(D.INSTRUMENTS))
def test_melodies_stay_in_range_and_vary(name):
    inst = D.INSTRUMENTS[name]
    for i in range(4):
        m = D.melody(name, i, seconds=15.0)
        pitches = [n.pitch for n in m.notes]
        assert inst.low <= min(pitches) and max(pitches) <= inst.high
        assert m.program in inst.programs and m.program == inst.programs[i % len(inst.programs)]
        for a, b in zip(m.notes, m.notes[1:]):                       # monophonic, in order
            assert a.start < a.end <= b.start + 1e-9
        lengths = np.array([n.end - n.start for n in m.notes])
        assert lengths.min() >= 0.06 - 1e-9 and lengths.max() < 4.0
        assert len(set(np.round(lengths, 2))) > 3                    # varied durations
        assert 20 <= min(n.velocity for n in m.notes) and max(n.velocity for n in m.notes) <= 127
        # the generator stops once a phrase plus its rest (< 1 s) reaches 15 s; the phrase's last
        # note can end 0.7 of a 3-beat note (<= 3 s) before the phrase does (staccato): > 15 - 3.1 s.
        # The last phrase (<= 12 notes of <= 3 s) may run over.
        assert 15.0 - 3.1 < m.duration < 15.0 + 12 * 3.0
        if inst.vibrato:
            assert m.bends and max(abs(s) for _, s in m.bends) <= inst.vibrato * 1.3 + 1e-9
        else:
            assert not m.bends
    assert D.melody(name, 1).notes == D.melody(name, 1).notes      # a pure function of the index
    assert D.melody(name, 1).notes != D.melody(name, 2).notes


@pytest.mark.parametrize("name", sorted(D.INSTRUMENTS))
def test_sung_melodies_glide_swell_and_stay_in_range(name):
    """The sung part of the data set (indices SUNG_FROM..SUNG_TO): in range and monophonic
    like the played melodies, but its notes start soft and swell (expression rises within
    a note), are scooped into from the previous note (a bend that starts towards it and
    ends at 0), and vibrato only on the sustained instruments."""
    inst = D.INSTRUMENTS[name]
    swells = scoops = transitions = 0
    for i in (D.SUNG_FROM, D.SUNG_FROM + 1, D.SUNG_FROM + 9):
        m = D.sung_melody(name, i, seconds=15.0)
        pitches = [n.pitch for n in m.notes]
        assert inst.low <= min(pitches) and max(pitches) <= inst.high
        assert m.program == inst.programs[i % len(inst.programs)]
        for a, b in zip(m.notes, m.notes[1:]):
            assert a.start < a.end <= b.start + 1e-9
        assert all(20 <= n.velocity <= 115 for n in m.notes)
        assert all(0 <= v <= 127 for _, v in m.expression)
        assert max(abs(s) for _, s in m.bends) <= D.BEND_RANGE + 1e-9
        f0 = np.array(D.true_f0(m, int(m.duration * 250) + 1))
        transitions += len(m.notes) - 1
        for a, b in zip(m.notes, m.notes[1:]):
            e = [v for t, v in m.expression if b.start <= t < b.end]
            swells += e[0] < max(e)
            held = f0[int(np.ceil(b.start * 250)):int(b.end * 250)]
            held = 12 * np.log2(held[held > 0] / 440.0) + 69 - b.pitch      # semitones off the note
            if a.pitch != b.pitch and abs(held[0]) > 0.5:                  # arrives from the previous note's side
                scoops += np.sign(held[0]) == np.sign(a.pitch - b.pitch)
        vibrato = any(abs(s) > 0 for t, s in m.bends if not any(n.start <= t < n.start + 0.25 for n in m.notes))
        assert vibrato == bool(inst.vibrato)
    # every note swells; about 0.7 x (1 - phrase starts ~ 1/5.5) x (1 - repeats 0.1) ~ 0.5 are scooped into
    assert swells >= 0.9 * transitions and scoops >= 0.3 * transitions, (swells, scoops, transitions)
    assert D.sung_melody(name, 21).notes == D.sung_melody(name, 21).notes
    assert D.sung_melody(name, 21).notes != D.melody(name, 21).notes


def test_true_f0_follows_notes_and_bends():
    m = D.Melody(40, [D.Note(0.1, 0.5, 69, 100), D.Note(0.6, 1.0, 57, 80)], bends=[(0.3, 0.5), (0.5, 0.0)])
    f0 = np.array(D.true_f0(m, 250))                                 # 1 s at 250 frames per second
    t = np.arange(250) / 250
    assert np.all(f0[t < 0.1] == 0) and np.all(f0[(t >= 0.5) & (t < 0.6)] == 0) and np.all(f0[t >= 1.0] == 0)
    np.testing.assert_allclose(f0[(t >= 0.1) & (t < 0.3)], 440.0)
    np.testing.assert_allclose(f0[(t >= 0.3) & (t < 0.5)], 440.0 * 2 ** (0.5 / 12))
    np.testing.assert_allclose(f0[(t >= 0.6) & (t < 1.0)], 220.0)


def test_holdout_split_is_one_in_ten():
    assert [i for i in range(30) if D.is_holdout(i)] == [9, 19, 29]


@pytest.mark.skipif(not D.fluidsynth_available(), reason="needs fluidsynth and fluid-soundfont-gm "
                    "(apt-get install -y fluidsynth fluid-soundfont-gm; not part of make test)")
def test_fluidsynth_render_has_the_notes_pitch():
    m = D.Melody(73, [D.Note(0.05, 0.8, 69, 100)])                   # flute, A4 = 440 Hz
    audio = D.render(D.midi_bytes(D.midi_events(m)), gain=1.0)
    assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) >= 0.8 * D.SAMPLE_RATE
    seg = audio[int(0.3 * D.SAMPLE_RATE):int(0.7 * D.SAMPLE_RATE)].astype(np.float64)
    assert np.sqrt(np.mean(seg ** 2)) > 1e-3
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), 16 * len(seg)))
    peak = np.argmax(spec) * D.SAMPLE_RATE / (16 * len(seg))
    assert abs(1200 * np.log2(peak / 440.0)) < 20, peak


@pytest.mark.skipif(not D.fluidsynth_available(), reason="needs fluidsynth and fluid-soundfont-gm "
                    "(apt-get install -y fluidsynth fluid-soundfont-gm)")
def test_a_cached_melody_is_made_once_then_read(dev, tmp_path, monkeypatch):
    """cached_melody renders and analyses a missing melody once (make_melody, saved as
    mNNN.npz in the cache), then reads it back unchanged."""
    monkeypatch.setenv("STEMTONE_CACHE", str(tmp_path))
    made = []
    first = D.cached_melody(dev, "flute", 9, seconds=2.0, made=made.append)
    again = D.cached_melody(dev, "flute", 9, seconds=2.0, made=made.append)
    assert len(made) == 1 and sorted(p.name for p in D.cache_dir("flute").iterdir()) == ["m009.npz"]
    assert set(first) == {"audio", "f0_hz", "confidence", "loudness_db", "f0_true", "program"}
    assert all(np.array_equal(first[k], again[k]) and np.array_equal(first[k], made[0][k]) for k in first)
    assert len(first["f0_hz"]) == 1 + len(first["audio"]) // D.HOP


# --------------------------------------------------------------------------- loss, synthesis


def test_spectral_loss_matches_numpy(rng):
    # float64 in both: the same framing, window and logs, to rounding
    a, b = rng.standard_normal((2, 3000)) * [[0.5], [0.1]]
    b[:500] = 0.0                                                    # log floor exercised
    got = T.spectral_loss(torch.tensor(a)[None], torch.tensor(b)[None]).item()
    want = E.spectral_loss(a, b)
    assert abs(got - want) < 1e-9 * want
    assert E.spectral_loss(a, a) == 0.0
    # batched: the mean over items of equal length
    x, y = torch.tensor(np.stack([a, b])), torch.tensor(np.stack([b, b[::-1].copy()]))
    assert abs(T.spectral_loss(x, y).item() - (E.spectral_loss(a, b) + E.spectral_loss(b, b[::-1])) / 2) < 1e-9 * want


def test_stft_framing_is_tf_pad_end(rng):
    x = torch.tensor(rng.standard_normal((1, 1000)))
    s = T.stft_magnitude(x, 256)                                     # hop 64: ceil(1000 / 64) = 16 frames
    assert s.shape == (1, 16, 129)
    frame = np.pad(x[0].numpy(), (0, 15 * 64 + 256 - 1000))[15 * 64:]
    np.testing.assert_allclose(s[0, 15].numpy(), np.abs(np.fft.rfft(frame * (0.5 - 0.5 * np.cos(
        2 * np.pi * np.arange(256) / 256)))), rtol=1e-10, atol=1e-12)


def test_fast_harmonic_is_ddsp_torch_harmonic(rng):
    from pycore.train.ddsp_torch import harmonic

    F, K = 80, 60
    f0 = torch.tensor(np.concatenate([np.linspace(90, 2600, 60), np.full(20, 300.0)]), dtype=torch.float32)[None]
    amp = torch.tensor(rng.uniform(0, 1, (1, F)), dtype=torch.float32)
    dist = torch.tensor(rng.uniform(0, 1, (1, F, K)), dtype=torch.float32)
    want = harmonic(f0, amp, dist, 16000, 64)[0].numpy()
    got = T.harmonic(f0, amp, dist, 16000, 64)[0].numpy()
    assert sdr(got, want) > 100, sdr(got, want)


def test_training_synth_is_the_model_synth(rng):
    torch.manual_seed(0)
    model = DDSP(TINY).eval()
    f0 = torch.tensor(np.linspace(200, 800, 40), dtype=torch.float32)[None]
    ld = torch.tensor(rng.uniform(-60, -10, (1, 40)), dtype=torch.float32)
    noise = torch.rand(1, 40 * 64) * 2 - 1
    with torch.no_grad():
        controls, _ = model(f0, ld)
        want = model.synthesize(controls, noise)[0].numpy()
        got = T.synthesize(model, controls, noise)[0].numpy()
    assert sdr(got, want) > 100


# --------------------------------------------------------------------------- training


def _items(rng, n=3, frames=120):
    """Fake melodies: a harmonic tone per melody with a loudness ramp."""
    items = []
    for i in range(n):
        f0 = np.full(frames, 220.0 * (i + 1), np.float32)
        t = np.arange(frames * 64) / 16000
        audio = (0.05 * np.sin(2 * np.pi * f0[0] * t) + 0.02 * np.sin(4 * np.pi * f0[0] * t)).astype(np.float32)
        items.append({"f0_hz": f0, "loudness_db": np.linspace(-40, -20, frames).astype(np.float32),
                      "audio": audio[:frames * 64 - 10]})                # shorter than F * hop: padded
    return items


def test_crops_are_aligned_and_seeded(rng):
    items = _items(rng)
    for d in items:
        d["f0_hz"] = np.arange(len(d["f0_hz"]), dtype=np.float32)      # f0 = frame index
        d["audio"] = (np.arange(len(d["audio"])) // 64).astype(np.float32)  # audio = its frame index
    a = T.Crops(items, 50, 64, seed=3)
    f0, ld, audio = a.batch(5)
    assert f0.shape == (5, 50) and ld.shape == (5, 50) and audio.shape == (5, 50 * 64)
    for i in range(5):
        start = int(f0[i, 0])
        np.testing.assert_array_equal(f0[i].numpy(), np.arange(start, start + 50))
        n = 120 * 64 - 10 - start * 64
        m = min(n, 3200)
        np.testing.assert_array_equal(audio[i, :m].numpy(), np.repeat(np.arange(start, start + 50), 64)[:m])
        assert np.all(audio[i, n:].numpy() == 0)                       # padding past the end
    b = T.Crops(items, 50, 64, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(b.batch(5), (f0, ld, audio)))


def test_one_training_step_reduces_the_loss(rng):
    torch.manual_seed(0)
    model = DDSP(TINY)
    batch = T.Crops(_items(rng), 60, 64, seed=0).batch(2)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    before = T.loss_on(model, batch)
    first = T.train_step(model, opt, batch)
    after = T.loss_on(model, batch)
    assert np.isfinite(first) and after < before - 0.05 * before, (before, after)


def test_saved_weights_load_into_the_gpu_decoder(dev, rng, tmp_path):
    # the file is float16: the GPU model must equal the torch model on f16-rounded weights
    torch.manual_seed(1)
    model = DDSP(TINY)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    T.train_step(model, opt, T.Crops(_items(rng), 60, 64, seed=0).batch(2))
    path = tmp_path / "tiny.safetensors"
    T.save_weights(model, path, {"instrument": "test", "steps": 1})
    assert load_metadata(str(path))["stemtone_training"] == '{"instrument": "test", "steps": 1}'
    config, decoder, synth = load(dev, str(path))
    assert config == TINY
    rounded = DDSP(TINY).eval()
    rounded.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    F = 40
    f0 = np.linspace(150, 900, F).astype(np.float32)
    ld = rng.uniform(-70, -10, F).astype(np.float32)
    with torch.no_grad():
        want, _ = rounded(torch.tensor(f0)[None], torch.tensor(ld)[None])
    got, _ = decoder(dev.tensor(f0), dev.tensor(ld))
    # float32 dot products of <= 48 terms, layer norms, exp_sigmoid on controls in [0, 2]
    np.testing.assert_allclose(got.numpy(), want[0].numpy(), rtol=1e-4, atol=1e-5)

    # evaluate.resynthesize: the GPU path with its hop of latency removed. The GPU renders
    # torch's offline synthesis of [zero frame, controls..., last controls again] (its
    # noise: none in the zero frame, then the hash sequence); resynthesize drops the zero
    # frame's hop, leaving frames 0 .. F - 1 where they belong
    audio = E.resynthesize(dev, (config, decoder, synth), f0, ld)
    with torch.no_grad():
        ctrl, _ = rounded(torch.tensor(np.append(f0, f0[-1]))[None], torch.tensor(np.append(ld, ld[-1]))[None])
        ctrl = torch.cat([torch.zeros_like(ctrl[:, :1]), ctrl], 1)
        noise = torch.tensor(np.concatenate([np.zeros(64), ref.white_noise(0, (F + 1) * 64)]), dtype=torch.float32)
        offline = rounded.synthesize(ctrl, noise[None])[0, 64:64 + F * 64].numpy()
    assert audio.shape == (F * 64,)
    assert sdr(audio, offline) > 80, sdr(audio, offline)


# --------------------------------------------------------------------------- evaluation


def test_sine_baseline_has_the_loudness_it_was_given(dev):
    # the GPU loudness of a sine, mapped back through the baseline's calibration, gives
    # the sine's amplitude (to float32 loudness rounding)
    t = np.arange(8000) / 16000
    for f, a in ((70.0, 0.5), (330.0, 0.1), (2500.0, 0.02)):
        x = (a * np.sin(2 * np.pi * f * t + 0.3)).astype(np.float32)
        ld = loudness_db(dev.tensor(x)).numpy()[10:-10]
        np.testing.assert_allclose(E.sine_amplitude(np.full(len(ld), f), ld), a, rtol=1e-3)
    y = E.sine_baseline(np.full(50, 500.0), np.full(50, float(ld.mean())))
    assert y.shape == (3200,)
    spec = np.abs(np.fft.rfft(y))
    assert np.argmax(spec) == 100 and abs(y.max() - E.sine_amplitude([500.0], [ld.mean()])[0]) < 1e-3


def test_manifest_entry_added_then_replaced_other_text_untouched():
    text = ('{\n  "format": 1,\n  "models": [\n    {"name": "a", "files": [{"path": "a.bin"}]},\n'
            '    {\n      "name": "b"\n    }\n  ]\n}\n')
    added = T.set_manifest_entry(text, {"name": "ddsp-x", "params": 1})
    assert added.startswith(text[:text.index("\n  ]")])             # the old entries byte for byte
    assert [m["name"] for m in json.loads(added)["models"]] == ["a", "b", "ddsp-x"]
    replaced = T.set_manifest_entry(added, {"name": "ddsp-x", "params": 2, "files": ["x", "y"]})
    assert replaced.replace('"params": 2,\n      "files": ["x", "y"]', '"params": 1') == added


# ---- the shipped instruments sound like their instruments (issue 14)

TONE_RATIO_BAR = 0.35  # reached 0.175-0.221 (model / sine, the 4000-step models); shuffled weights: 0.467-1.738


def _holdout_phrase(dev, instrument):
    """A hold-out melody (index 9: never trained on) rendered by fluidsynth, its score's
    f0 (held through rests) and the audio's loudness: controls independent of CREPE."""
    m = D.melody(instrument, 9, seconds=4.0)
    audio = D.render(D.midi_bytes(D.midi_events(m)), D.INSTRUMENTS[instrument].gain)
    audio = audio[:int(np.ceil(m.duration + 0.5) * D.SAMPLE_RATE)]
    ld = loudness_db(dev.tensor(audio)).numpy()
    f0 = np.asarray(D.true_f0(m, len(ld)), np.float32)
    held = f0[f0 > 0][0]
    for i in range(len(f0)):
        held = f0[i] = f0[i] if f0[i] > 0 else held
    return audio.astype(np.float64), f0, ld


def _ratio(dev, weights, audio, f0, ld):
    """Multi-scale spectral loss of the model's rendering / that of the sine baseline."""
    n = len(audio)
    model = E.spectral_loss(E.resynthesize(dev, load(dev, weights), f0, ld)[:n], audio)
    return model / E.spectral_loss(E.sine_baseline(f0, ld)[:n], audio)


@pytest.mark.skipif(not D.fluidsynth_available(), reason="needs fluidsynth and fluid-soundfont-gm")
@pytest.mark.parametrize("instrument", ["violin", "flute", "trumpet", "saxophone", "guitar"])
def test_each_instrument_beats_the_sine_baseline_on_a_holdout_phrase(dev, instrument, tmp_path):
    """The shipped model's rendering of a hold-out phrase against the sine baseline
    driven by the same controls (the cards' figure: 0.165 for the violin, on CREPE
    controls over 56 s). Weights shuffled within each tensor reach 0.47-1.74 here, so
    this fails for a model that only keeps its weights' statistics (the violin is
    checked both ways below)."""
    from pycore.weights import safetensors

    audio, f0, ld = _holdout_phrase(dev, instrument)
    weights = str(E.WEIGHTS_DIR / f"ddsp-{instrument}.safetensors")
    ratio = _ratio(dev, weights, audio, f0, ld)
    print(f"\n{instrument}: hold-out spectral loss, model / sine = {ratio:.3f}")
    assert ratio <= TONE_RATIO_BAR, ratio
    if instrument == "violin":
        g = np.random.default_rng(0)
        shuffled = {k: g.permutation(v.ravel()).reshape(v.shape) for k, v in safetensors.load_numpy(weights).items()}
        path = tmp_path / "shuffled.safetensors"
        safetensors.save(path, shuffled, safetensors.load_metadata(weights))
        bad = _ratio(dev, str(path), audio, f0, ld)
        print(f"violin with shuffled weights: {bad:.3f}")
        assert bad > TONE_RATIO_BAR, bad


def test_training_resumed_from_checkpoints_equals_one_run(rng, tmp_path, monkeypatch):
    """Three slices (2 + 2 + 1 steps) through a checkpoint give the uninterrupted run's
    weights and curves exactly: every random state travels in the checkpoint."""
    items = _items(rng)
    monkeypatch.setattr(D, "load_split", lambda instrument, split: items)
    kw = dict(batch=2, seconds=60 * 64 / 16000, config=TINY, eval_every=2, log=lambda *a: None)
    whole, rec = T.fit("violin", 5, **kw)
    ck = tmp_path / "violin.ckpt"
    for _ in range(2):
        assert T.fit("violin", 5, checkpoint=ck, checkpoint_every=1, stop_after=2, **kw) == (None, None)
        assert ck.exists()
    sliced, rec2 = T.fit("violin", 5, checkpoint=ck, **kw)
    for (k, a), (k2, b) in zip(whole.state_dict().items(), sliced.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert rec["train_curve"] == rec2["train_curve"] and rec["holdout_curve"] == rec2["holdout_curve"]
    with pytest.raises(ValueError, match="for 5 steps; asked for violin with 6 steps"):
        T.fit("violin", 6, checkpoint=ck, **kw)


def test_a_finished_run_extends_on_the_same_learning_rate_decay(rng, tmp_path, monkeypatch):
    """--extend takes a finished 4-step run on to 7 steps: steps 5..7 run at the 4-step
    run's exponential decay continued (lr 1e-3 -> 1e-4 over steps 1..4, factor
    10^(-1/3) per step, so step 7 runs at 1e-5); the record and the new checkpoint say so
    (extended_from); without --extend, or to fewer steps than the checkpoint's, it is
    refused."""
    items = _items(rng)
    monkeypatch.setattr(D, "load_split", lambda instrument, split: items)
    kw = dict(batch=2, seconds=60 * 64 / 16000, config=TINY, eval_every=2, log=lambda *a: None)
    ck = tmp_path / "violin.ckpt"
    T.fit("violin", 4, checkpoint=ck, **kw)
    with pytest.raises(ValueError, match="with --extend"):
        T.fit("violin", 7, checkpoint=ck, **kw)
    lrs = []
    orig = T.train_step
    monkeypatch.setattr(T, "train_step",
                        lambda model, opt, b: lrs.append(opt.param_groups[0]["lr"]) or orig(model, opt, b))
    model, rec = T.fit("violin", 7, checkpoint=ck, extend=True, **kw)
    assert np.allclose(lrs, [1e-3 * 10 ** (-s / 3) for s in (4, 5, 6)], rtol=1e-9), lrs
    assert rec["steps"] == 7 and rec["extended_from"] == 4 and rec["final_lr"] == 1e-5
    assert [s for s, _ in rec["train_curve"]][-1] == 7
    assert torch.load(ck, weights_only=False)["extended_from"] == 4
    with pytest.raises(ValueError, match="for 7 steps; asked for violin with 5 steps"):
        T.fit("violin", 5, checkpoint=ck, extend=True, **kw)


def test_card_reproduces_an_extended_run_in_two_commands():
    """A card's training commands: one run, or the shorter run and its --extend through
    one checkpoint (a single --steps N run would decay the learning rate over N steps)."""
    rec = {"batch": 8, "seed": 0, "steps": 2500}
    cfg = {"gru": T.CONFIG.gru, "ch": 64}
    (one,) = T.train_commands("flute", rec, cfg, "ddsp-flute")
    assert one.endswith("--ch 64 --out weights/ddsp-flute.safetensors --steps 2500") and "--extend" not in one
    first, then = T.train_commands("flute", dict(rec, steps=4000, extended_from=2500), cfg, "ddsp-flute")
    assert first.endswith("--steps 2500 --checkpoint flute.ckpt")
    assert then.endswith("--steps 4000 --checkpoint flute.ckpt --extend")
    assert first.split(" --steps")[0] == then.split(" --steps")[0] == one.split(" --steps")[0]


def _card_ratio(instrument):
    import re
    from pycore.weights import BUNDLED_DIR

    text = (BUNDLED_DIR / "cards" / f"ddsp-{instrument}.md").read_text()
    return float(re.search(r"Model / sine baseline = ([0-9]+\.[0-9]+)", text).group(1))


@pytest.mark.skipif(not D.fluidsynth_available(), reason="needs fluidsynth and fluid-soundfont-gm "
                    "(apt-get install -y fluidsynth fluid-soundfont-gm; not part of make test)")
def test_shuffled_weights_fail_the_holdout_loss_check(dev, tmp_path):
    """On 4 s of a hold-out melody (m009, never trained on), the shipped violin's
    spectral loss relative to the sine baseline is within 1.5x its card figure (the
    card's is the mean over two whole melodies; a crop varies); the same weights
    shuffled tensor by tensor are not."""
    from pycore.weights import weights_path
    from pycore.weights.safetensors import load_numpy, save

    m = D.melody("violin", 9)
    audio = D.render(D.midi_bytes(D.midi_events(m)), D.INSTRUMENTS["violin"].gain)[16000:16000 + 4 * 16000]
    f0, _, ld = D.compute_features(dev, audio)
    f0, ld = f0[:len(audio) // 64], ld[:len(audio) // 64]
    target = audio.astype(np.float64)
    sine = E.spectral_loss(E.sine_baseline(f0, ld)[:len(target)], target)
    bar = 1.5 * _card_ratio("violin")
    path = weights_path("ddsp-violin")
    shipped = E.spectral_loss(E.resynthesize(dev, load(dev, path), f0, ld)[:len(target)], target) / sine
    rng = np.random.default_rng(0)
    tensors = {k: rng.permutation(v.ravel()).reshape(v.shape) for k, v in load_numpy(path).items()}
    save(tmp_path / "shuffled.safetensors", tensors, metadata=load_metadata(path))
    shuffled = E.spectral_loss(E.resynthesize(dev, load(dev, str(tmp_path / "shuffled.safetensors")), f0, ld)
                               [:len(target)], target) / sine
    assert shipped <= bar < shuffled, (shipped, bar, shuffled)
