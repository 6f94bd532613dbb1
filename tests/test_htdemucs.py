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
import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("einops")
htd = pytest.importorskip("demucs.htdemucs")

from pycore import safetensors  # noqa: E402
from pycore.models.htdemucs import HTDemucs  # noqa: E402
from pycore.testdata import real_music_clip  # noqa: E402

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
    model = htd.HTDemucs(sources=list(sources), **kwargs).eval()
    with torch.no_grad():  # make the layer scales and norms matter (they start near 1e-4 / 1)
        for name, p in model.named_parameters():
            if name.endswith(".scale"):
                p.uniform_(0.05, 0.3)
            elif "norm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            elif "norm" in name and name.endswith("bias"):
                p.uniform_(-0.2, 0.2)
    return model


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
    """demucs.apply.apply_model. demucs.apply imports tqdm at the top but uses it only
    with progress=True; where tqdm is not installed an empty stand-in module is enough."""
    import sys
    import types

    stub = "tqdm" not in sys.modules and importlib.util.find_spec("tqdm") is None
    if stub:
        sys.modules["tqdm"] = types.ModuleType("tqdm")
    try:
        from demucs.apply import apply_model
    finally:
        if stub:
            del sys.modules["tqdm"]
    return apply_model


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

    from pycore.convert.fetch import convert
    from pycore.demix import Demixer
    from pycore.demix_htdemucs import HTDemucsStream, load_models

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
    # the same file through the product's entry point (pycore.demix.Demixer)
    demixer = asyncio.run(Demixer.load(dev, "htdemucs_6s", weights=str(out), dtype="f16"))
    assert demixer.stems == sources
    whole = asyncio.run(demixer.separate([mix[0], mix[1]]))
    for k, s in enumerate(sources):
        assert sdr(want[k], np.stack(whole[s])) > 80


def test_bag_of_models(dev):
    """A BagOfModels (htdemucs_ft is one: four specialists with one-hot weights) with
    overlapping per-stem weights: stem k = sum_i w_ik out_ik / sum_i w_ik, on a mono
    clip (duplicated for the model; each stem comes back as the mean of its channels)."""
    from pycore.demix_htdemucs import HTDemucsStream

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
