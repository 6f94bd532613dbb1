"""pycore.tone.calibration (the input calibration stored with a tone model) and
pycore.train.data.calibration (where it comes from): the shipped models carry the
quantiles of their own training renders, and a weights file with a malformed
calibration is refused with a message naming the fault."""

import json

import numpy as np
import pytest

from pycore.ops.tone_controls import CAL_POINTS
from pycore.tone import calibration as C
from pycore.tone import load_tone_model
from pycore.train import data as D
from pycore.weights import weights_path
from pycore.weights.safetensors import Entry, dumps, load, load_metadata

INSTRUMENTS = ("violin", "flute", "trumpet", "saxophone", "guitar")


def entry(values, dtype="f32"):
    a = np.asarray(values, np.float32 if dtype == "f32" else np.float16)
    return Entry(dtype, a.shape, memoryview(a.tobytes()))


GOOD = np.linspace(-40.0, 10.0, CAL_POINTS)


@pytest.mark.parametrize("instrument", INSTRUMENTS)
def test_shipped_models_carry_a_calibration_the_engine_uses(dev, instrument):
    m = load_tone_model(dev, instrument)
    q = np.asarray(m.calibration["loudness_db"])
    midi = np.asarray(m.calibration["midi"])
    assert q.shape == midi.shape == (CAL_POINTS,) and np.all(np.diff(q) >= 0) and np.all(np.diff(midi) >= 0)
    lo, hi = D.INSTRUMENTS[instrument].low, D.INSTRUMENTS[instrument].high
    assert lo - 1 <= midi[0] and midi[-1] <= hi + 1            # the score's notes, give or take the vibrato
    assert q[0] > D.CALIBRATION_FLOOR_DB - 0.01


def test_data_calibration_is_the_quantiles_of_the_voiced_frames():
    """numpy's quantiles of the frames where the score holds a note above the floor;
    rests and quiet frames do not count."""
    r = np.random.default_rng(0)
    ld = r.normal(-20, 8, 5000).astype(np.float32)
    f0 = np.where(r.random(5000) < 0.7, r.uniform(200, 800, 5000), 0.0).astype(np.float32)
    cal = D.calibration([{"loudness_db": ld[:2000], "f0_true": f0[:2000]},
                         {"loudness_db": ld[2000:], "f0_true": f0[2000:]}])
    keep = (f0 > 0) & (ld > -50)
    assert cal["frames"] == keep.sum()
    np.testing.assert_allclose(cal["loudness_db"], np.quantile(ld[keep], np.linspace(0, 1, CAL_POINTS)), rtol=1e-6)
    np.testing.assert_allclose(cal["midi"], np.quantile(69 + 12 * np.log2(f0[keep] / 440.0),
                                                        np.linspace(0, 1, CAL_POINTS)), rtol=1e-6)
    with pytest.raises(ValueError, match="voiced frames"):
        D.calibration([{"loudness_db": ld, "f0_true": np.zeros_like(f0)}])


@pytest.mark.skipif(not D.fluidsynth_available(), reason="needs fluidsynth and FluidR3_GM (apt-get install -y "
                    "fluidsynth fluid-soundfont-gm)")
def test_the_violins_calibration_is_its_training_renders():
    """Re-rendered, the violin's 27 training melodies (30, less the hold-out's 3) give
    exactly the stored quantiles (renders and the loudness op are deterministic; float32
    storage)."""
    items = D.calibration_renders("violin", melodies=30, log=lambda *a: None)
    record = json.loads(load_metadata(weights_path("ddsp-violin"))["stemtone_training"])
    assert len(items) == 27 == record["train_melodies"]
    cal = D.calibration(items)
    stored = load(weights_path("ddsp-violin"))
    assert np.array_equal(np.frombuffer(stored[C.LOUDNESS].data, np.float32), cal["loudness_db"])
    assert np.array_equal(np.frombuffer(stored[C.MIDI].data, np.float32), cal["midi"])
    assert f'"frames": {cal["frames"]}' in load_metadata(weights_path("ddsp-violin"))["stemtone_calibration"]


def test_a_file_without_calibration_keeps_the_mean_shift():
    assert C.read({"x": entry([1.0])}) is None


@pytest.mark.parametrize("loudness, midi, words", [
    (entry(GOOD[:-1]), entry(np.linspace(50, 80, CAL_POINTS)), "calibration.loudness_db must be float32 [33]"),
    (entry(GOOD, "f16"), entry(np.linspace(50, 80, CAL_POINTS)), "must be float32"),
    (entry(np.r_[GOOD[:-1], np.nan]), entry(np.linspace(50, 80, CAL_POINTS)), "finite values in [-80, 40]"),
    (entry(GOOD + 100), entry(np.linspace(50, 80, CAL_POINTS)), "finite values in [-80, 40]"),
    (entry(GOOD[::-1]), entry(np.linspace(50, 80, CAL_POINTS)), "non-decreasing"),
    (entry(np.full(CAL_POINTS, -10.0)), entry(np.linspace(50, 80, CAL_POINTS)), "the last above the first"),
    (entry(GOOD), entry(np.linspace(50, 180, CAL_POINTS)), "calibration.midi must hold finite values in [0, 127]"),
    (entry(GOOD), None, "has calibration.loudness_db without calibration.midi"),
])
def test_a_malformed_calibration_is_named(loudness, midi, words):
    params = {C.LOUDNESS: loudness}
    if midi is not None:
        params[C.MIDI] = midi
    with pytest.raises(ValueError) as info:
        C.read(params, "ddsp-test")
    assert str(info.value).startswith("ddsp-test: ") and words in str(info.value), str(info.value)


def test_load_tone_model_refuses_a_file_with_a_malformed_calibration(dev):
    """Through the loader: a hostile weights file fails with the model's name and the fault."""
    params = dict(load(weights_path("ddsp-violin")))
    params[C.LOUDNESS] = entry(GOOD[::-1])
    meta = load_metadata(weights_path("ddsp-violin"))
    data = dumps({k: (e.dtype, e.shape, e.data) for k, e in params.items()}, meta)
    with pytest.raises(ValueError, match="ddsp-violin: not a usable DDSP weights file.*non-decreasing"):
        load_tone_model(dev, "violin", weights=data)
