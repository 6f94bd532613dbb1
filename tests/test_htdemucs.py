"""HTDemucs (pycore/models/htdemucs.py) against the reference demucs==4.1.0 module.

The reference network is built by demucs itself with random float32 weights; its
state_dict becomes the safetensors Entries our model is built from, exactly as
`stemtone weights convert` names them. Each test compares one segment layer by layer
(encoder, time encoder, cross transformer, decoder, time decoder outputs, captured with
forward hooks) and the full output.

CI uses a reduced configuration of the same architecture (few channels, nfft 512, a
short segment) that still takes every code path of the official one plus the merged
time/frequency layer (empty time encoder, injected into the last frequency layer):
dconv in encoder and decoder (dconv_mode 3), bottom channels, self and cross attention
layers, the frequency embedding.
"""

import asyncio

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("einops")
htd = pytest.importorskip("demucs.htdemucs")

from pycore.weights import safetensors  # noqa: E402
from pycore.models.htdemucs import HTDemucs  # noqa: E402
from pycore.audio.testdata import real_music_clip  # noqa: E402

SOURCES = ["drums", "bass", "other", "vocals"]
SMALL = dict(channels=8, depth=3, nfft=512, t_layers=2, t_heads=2, bottom_channels=32, dconv_mode=3,
             segment=0.5)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """On the 2 shared CI cores torch's own threads slow the reference down ~5x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def reference(seed=0, sources=SOURCES, **kwargs):
    torch.manual_seed(seed)
    from pycore.cli.bench.random_weights import make_scales_matter

    return make_scales_matter(htd.HTDemucs(sources=list(sources), **kwargs).eval())


def entries(model):
    return {k: safetensors.Entry("f32", tuple(v.shape), v.detach().float().numpy().tobytes())
            for k, v in model.state_dict().items()}


def sdr(ref, est):
    ref, est = np.asarray(ref, np.float64), np.asarray(est, np.float64)
    return 10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - est) ** 2), 1e-30))


def capture(model):
    """Forward hooks storing the outputs of the layers HTDemucs.forward(trace=) names."""
    out = {}

    def hook(name):
        def f(_m, _inp, o):
            if name == "crosstransformer":
                out["crosstransformer"], out["crosstransformer_t"] = o
            else:
                out[name] = o[0] if isinstance(o, tuple) else o
        return f

    for group in ("encoder", "tencoder", "decoder", "tdecoder"):
        for i, m in enumerate(getattr(model, group)):
            m.register_forward_hook(hook(f"{group}.{i}"))
    model.crosstransformer.register_forward_hook(hook("crosstransformer"))
    return out


def test_segment_layer_by_layer(dev):
    kwargs = dict(SMALL)
    model = reference(**kwargs)
    ref = capture(model)
    mix = real_music_clip(0.5)[None]
    with torch.no_grad():
        want = model(torch.from_numpy(mix)).numpy()
    # the frequency embedding is added after encoder 0's hook in the reference
    with torch.no_grad():
        e = model.freq_emb(torch.arange(ref["encoder.0"].shape[-2])).t()[None, :, :, None]
        ref["encoder.0"] = ref["encoder.0"] + model.freq_emb_scale * e
    ours = HTDemucs(dev, entries(model), kwargs, sources=SOURCES)
    trace = {}
    got = ours.forward(dev.tensor(mix.ravel().tolist(), mix.shape), trace=trace).numpy()
    # the channel up/down-samplers wrap the transformer in ours; compare after them
    with torch.no_grad():
        x, xt = ref["crosstransformer"], ref["crosstransformer_t"]
        b, c, f, t = x.shape
        ref["crosstransformer"] = model.channel_downsampler(x.reshape(b, c, f * t)).reshape(b, -1, f, t)
        ref["crosstransformer_t"] = model.channel_downsampler_t(xt)
    report = {}
    for name, t in trace.items():
        r = ref[name].numpy()
        assert t.shape == r.shape, (name, t.shape, r.shape)
        report[name] = sdr(r, t.numpy())
    print(report)
    for name, v in report.items():
        assert v > 80, (name, v, report)
    assert got.shape == want.shape
    for s in range(len(SOURCES)):
        assert sdr(want[0, s], got[0, s]) > 80


def _apply_model():
    """demucs.apply.apply_model (tqdm stubbed where missing; see pycore.cli.bench.random_weights)."""
    from pycore.cli.bench.random_weights import demucs_apply_model

    return demucs_apply_model()


def _stream_all(stream, mix, block):
    async def go():
        parts = []
        for i in range(0, mix.shape[-1], block):
            parts.append(await stream.push([ch[i:i + block] for ch in mix]))
        parts.append(await stream.finish())
        return parts

    parts = asyncio.run(go())
    return {s: [np.concatenate([p[s][c] for p in parts]) for c in range(mix.shape[0])] for s in parts[0]}


def test_group_norm_of_a_long_item(dev, rng):
    """GroupNorm(1, C) of one item longer than the norm op's rows (the official model's
    time-branch DConv) goes through the reduce ops; same result as torch's GroupNorm."""
    from pycore.models.htdemucs import Param, group_norm

    x = (rng.standard_normal((1, 24, 60001)) * 2 + 0.5).astype(np.float32)
    gn = torch.nn.GroupNorm(1, 24)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-0.5, 0.5)
        want = gn(torch.from_numpy(x)).numpy()
    params = {f"gn.{k}": e for k, e in entries(gn).items()}
    got = group_norm(dev.tensor(x.tobytes(), x.shape), Param(dev, params, "gn", "f32"), 1).numpy()
    # float32 statistics over 1.4 M values: relative error ~1e-6 on O(1) outputs
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def _save_package(folder, sig, model):
    """model saved in demucs' package format (weights stored as float16), named
    <sig>-<sha256 prefix>.th like the published checkpoints."""
    from demucs import states

    args, kwargs = model._init_args_kwargs
    package = {"klass": model.__class__, "args": args, "kwargs": kwargs,
               "state": states.get_state(model, None, half=True), "training_args": {}}
    states.save_with_checksum(package, folder / f"{sig}.th")
    (path,) = folder.glob(f"{sig}-*.th")
    return path


def test_apply_model_parity(dev, tmp_path):
    """A 6-stem checkpoint in demucs' own format -> `weights convert` -> load_models with
    f16 weights on the GPU -> the streamed separation of a 0.9 s clip (3 segments of
    0.5 s, the last shorter than a segment and padded from its neighbours), pushed in
    blocks that do not line up with the segments; against apply_model(split=True,
    overlap=0.25, shifts=0) on the model demucs loads from the same file (so both use
    the float16-rounded weights; the arithmetic is float32 in both)."""
    from demucs.states import load_model

    from pycore.weights.fetch import convert
    from pycore.demix import Demixer
    from pycore.demix.htdemucs import HTDemucsStream, load_models

    sources = SOURCES + ["guitar", "piano"]
    path = _save_package(tmp_path, "5c90dfd2", reference(seed=2, sources=sources, **SMALL))
    out = convert([path], name="six", weights_dir=tmp_path)
    ref = load_model(path).eval()
    mix = real_music_clip(0.9)
    with torch.no_grad():
        want = _apply_model()(ref, torch.from_numpy(mix)[None], shifts=0, split=True, overlap=0.25)[0].numpy()
    models, stems, weights = load_models(dev, str(out), dtype="f16")
    assert stems == sources and weights is None and len(models) == 1
    got = _stream_all(HTDemucsStream(models, stems, 2, weights), mix, 10007)
    for k, s in enumerate(sources):
        g = np.stack(got[s])
        assert g.shape == want[k].shape
        assert sdr(want[k], g) > 80, (s, sdr(want[k], g))
    # the same file through the product's entry point (pycore.demix.Demixer), which
    # normalizes the track as demucs.api.Separator.separate_tensor does
    demixer = asyncio.run(Demixer.load(dev, "htdemucs_6s", weights=str(out), dtype="f16"))
    assert demixer.stems == sources
    whole = asyncio.run(demixer.separate([mix[0], mix[1]]))
    want = separate_tensor(ref, mix)
    for k, s in enumerate(sources):
        assert sdr(want[k], np.stack(whole[s])) > 80


def separate_tensor(model, wav, **kwargs):
    """demucs.api.Separator.separate_tensor (demucs 4.1.0, api.py lines 269-284) around
    apply_model, written out (demucs.api imports torchaudio): the track is normalized by
    its mono mix's mean and unbiased std (+ 1e-8), and every stem gets them back."""
    wav = torch.from_numpy(np.ascontiguousarray(wav))
    if wav.shape[0] == 1:  # convert_audio to the model's 2 channels
        wav = wav.expand(2, -1)
    ref = wav.mean(0)
    mean = ref.mean()
    std = ref.std() + 1e-8
    kwargs = dict(dict(shifts=0, split=True, overlap=0.25), **kwargs)
    with torch.no_grad():
        out = _apply_model()(model, ((wav - mean) / std)[None], **kwargs)
    return (out * std + mean)[0].numpy()


@pytest.mark.parametrize("channels", [1, 2])
def test_mix_stats(rng, monkeypatch, channels):
    """MixStats over blocks of any size (numpy and pure-Python paths) = torch's
    wav.mean(0).mean() and .std() + 1e-8 on the whole track."""
    import sys

    from pycore.demix.htdemucs import MixStats, mix_stats

    x = (rng.standard_normal((channels, 30011)) * 0.3 + 0.05).astype(np.float32)
    ref = torch.from_numpy(x).mean(0)
    want = (float(ref.mean()), float(ref.std()) + 1e-8)
    np.testing.assert_allclose(mix_stats(list(x)), want, rtol=1e-6)
    s = MixStats()
    for a, b in [(0, 1), (1, 7000), (7000, 7000), (7000, 30011)]:
        s.add([ch[a:b] for ch in x])
    np.testing.assert_allclose((s.mean, s.std), want, rtol=1e-6)
    monkeypatch.setitem(sys.modules, "numpy", None)  # the browser: no numpy
    s = MixStats().add([ch[:20000].tolist() for ch in x]).add([ch[20000:].tolist() for ch in x])
    monkeypatch.undo()
    np.testing.assert_allclose((s.mean, s.std), want, rtol=1e-6)


def test_shifts_and_normalization(dev, monkeypatch):
    """shifts=2 on a bag of two models with overlapping weights, a mono clip, the track
    normalized: against demucs itself with random.randint drawing from the same seeded
    generator (per model, as apply_model draws them). The offsets matter: another seed
    gives a clearly different result."""
    import random
    import sys

    from pycore.demix.htdemucs import Bag, ShiftedStream, mix_stats

    _apply_model()  # imports demucs.apply (with tqdm stubbed where missing)
    from demucs.apply import BagOfModels

    demucs_apply = sys.modules["demucs.apply"]

    weights = [[1.0, 1.0, 0.0, 0.0], [0.0, 2.0, 1.0, 1.0]]
    nets = [reference(seed=20 + i, **SMALL) for i in range(2)]
    mix = (real_music_clip(0.7)[:1] * 3 + 0.02).astype(np.float32)  # a mean and std that matter
    monkeypatch.setattr(demucs_apply, "random", random.Random(5))
    want = separate_tensor(BagOfModels(nets, weights), mix, shifts=2).mean(axis=1)
    bag = Bag([HTDemucs(dev, entries(m), SMALL, sources=SOURCES) for m in nets], SOURCES, weights)
    stream = bag.stream(1, shifts=2, seed=5, stats=mix_stats(mix))
    assert isinstance(stream.stream, ShiftedStream) and len(stream.stream.parts) == 4
    got = _stream_all(stream, mix, 9000)
    for k, s in enumerate(SOURCES):
        assert got[s][0].shape == want[k].shape
        assert sdr(want[k], got[s][0]) > 70, (s, sdr(want[k], got[s][0]))
    # drums come from model 0 alone: its two passes run, with the same offsets
    only = bag.stream(1, ["drums"], shifts=2, seed=5, stats=mix_stats(mix))
    assert len(only.stream.parts) == 2
    assert sdr(want[0], _stream_all(only, mix, 50000)["drums"][0]) > 70
    other = _stream_all(bag.stream(1, ["drums"], shifts=2, seed=6, stats=mix_stats(mix)), mix, 50000)
    assert sdr(want[0], other["drums"][0]) < 40


def test_bag_of_models(dev):
    """A BagOfModels (htdemucs_ft is one: four specialists with one-hot weights) with
    overlapping per-stem weights: stem k = sum_i w_ik out_ik / sum_i w_ik, on a mono
    clip (duplicated for the model; each stem comes back as the mean of its channels)."""
    from pycore.demix.htdemucs import HTDemucsStream

    apply_model = _apply_model()
    from demucs.apply import BagOfModels  # imported by _apply_model

    weights = [[1.0, 1.0, 0.0, 0.0], [0.0, 2.0, 1.0, 1.0]]
    nets = [reference(seed=10 + i, **SMALL) for i in range(2)]
    bag = BagOfModels(nets, weights)
    mix = real_music_clip(0.6)[:1]
    with torch.no_grad():
        want = apply_model(bag, torch.from_numpy(np.concatenate([mix, mix]))[None], shifts=0, split=True,
                              overlap=0.25)[0].numpy().mean(axis=1)
    ours = [HTDemucs(dev, entries(m), SMALL, sources=SOURCES) for m in nets]
    got = _stream_all(HTDemucsStream(ours, SOURCES, 1, weights), mix, 20000)
    for k, s in enumerate(SOURCES):
        assert got[s][0].shape == want[k].shape
        assert sdr(want[k], got[s][0]) > 80, (s, sdr(want[k], got[s][0]))
    # only the stems asked for: "drums" needs model 0 alone, which runs once per segment
    stream = HTDemucsStream(ours, SOURCES, 1, weights, wanted=["drums"])
    only = _stream_all(stream, mix, 20000)
    assert list(only) == ["drums"] and stream.models_run == stream.segments_done == 2
    assert sdr(want[0], only["drums"][0]) > 80


def test_reflect_pad_and_standardize(dev, rng):
    """The two kernels of kernels/htdemucs.wgsl against numpy, on sizes that are not
    multiples of the workgroup size."""
    from pycore.models.htdemucs import destandardize, reflect_pad, standardize
    from pycore.ops import reduce as R

    x = rng.standard_normal((3, 1001)).astype(np.float32)
    t = dev.tensor(x.tobytes(), x.shape)
    np.testing.assert_array_equal(reflect_pad(t, 517, 999).numpy(), np.pad(x, ((0, 0), (517, 999)), mode="reflect"))
    with pytest.raises(ValueError, match="reflect_pad"):
        reflect_pad(t, 1001, 0)
    m, s = R.mean(t), R.std(t)
    want = (x.astype(np.float64) - x.mean()) / (1e-5 + x.std(ddof=1))
    got = standardize(t, m, s)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(destandardize(got, m, s).numpy(), x, rtol=1e-5, atol=1e-5)


def test_gpu_memory_does_not_grow_with_the_track(dev):
    """Segment by segment: the GPU memory the separation holds at its peak (the segment
    plan, recorded afresh, plus everything else allocated; the pool emptied first) for 3 s
    (9 segments of 0.5 s) is that for 1 s (3 segments), and it is more than the plan's
    inputs alone (so the measure sees the intermediates)."""
    from pycore.demix.htdemucs import Bag, release_segment_plans

    bag = Bag([HTDemucs(dev, entries(reference(seed=4, **SMALL)), SMALL, sources=SOURCES)], SOURCES, None)
    rng = np.random.default_rng(0)

    def peak(seconds):
        x = (rng.standard_normal((2, int(seconds * 44100))) * 0.1).astype(np.float32)
        release_segment_plans(bag.models)
        dev.trim()
        base = dev.mem_reserved
        dev.reset_peak()
        _stream_all(bag.stream(2, stats=(0.0, 0.1)), x, 30000)
        return dev.mem_reserved_peak - base

    peak(0.6)  # warm-up
    short, long = peak(1.0), peak(3.0)
    net = bag.models[0]
    assert short > 8 * net.audio_channels * net.training_length * len(SOURCES), short
    assert long - short < 256 * 1024, (short, long)
