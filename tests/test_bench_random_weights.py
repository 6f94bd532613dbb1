"""pycore.cli.bench.random_weights.random_htdemucs_file: the seeded random HTDemucs as a
converted demucs file, which pycore.demix.htdemucs.load_models builds (what `stemtone
bench runtime` runs natively and serves to the bench page)."""

from fractions import Fraction

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("einops")
htd = pytest.importorskip("demucs.htdemucs")

from pycore.cli.bench.common import BenchUnavailable  # noqa: E402
from pycore.cli.bench.random_weights import HTDEMUCS_REDUCED, make_scales_matter, random_htdemucs_file  # noqa: E402
from pycore.demix.htdemucs import load_models  # noqa: E402
from pycore.weights.safetensors import load_metadata, load_numpy  # noqa: E402

SOURCES = ["drums", "bass", "other", "vocals"]


def test_the_file_holds_the_seeded_reference_network_and_builds(dev):
    data = random_htdemucs_file("htdemucs", reduced=True, seed=3)
    torch.manual_seed(3)   # demucs builds the same network from the same seed
    cfg = dict(HTDEMUCS_REDUCED, segment=Fraction(39, 5))
    state = make_scales_matter(htd.HTDemucs(sources=SOURCES, **cfg)).state_dict()
    tensors = load_numpy(data)
    assert sorted(tensors) == sorted(state)
    for name, value in state.items():
        np.testing.assert_array_equal(tensors[name], value.numpy(), err_msg=name)
    assert load_metadata(data)["model"] == "htdemucs"
    models, stems, bag_weights = load_models(dev, data)
    assert (len(models), stems, bag_weights) == (1, SOURCES, None)
    assert models[0].training_length == 343980          # 7.8 s at 44.1 kHz
    assert models[0].kw["bottom_channels"] == HTDEMUCS_REDUCED["bottom_channels"]


def test_the_ft_bag_holds_four_seeded_specialists(dev):
    """htdemucs_ft: four networks seeded 3..6 under the prefixes `weights convert` gives a
    bag (model0. ...), one-hot bag weights (each specialist gives its own stem)."""
    data = random_htdemucs_file("htdemucs_ft", reduced=True, seed=3)
    tensors = load_numpy(data)
    cfg = dict(HTDEMUCS_REDUCED, segment=Fraction(39, 5))
    for i in range(4):
        torch.manual_seed(3 + i)
        state = make_scales_matter(htd.HTDemucs(sources=SOURCES, **cfg)).state_dict()
        for name, value in state.items():
            np.testing.assert_array_equal(tensors[f"model{i}.{name}"], value.numpy(), err_msg=name)
    assert len(tensors) == 4 * len(state)
    models, stems, bag_weights = load_models(dev, data)
    assert (len(models), stems) == (4, SOURCES)
    assert bag_weights == [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]


def test_other_models_are_refused_by_name():
    with pytest.raises(BenchUnavailable, match="umxl: random HTDemucs weights cover htdemucs, htdemucs_6s, htdemucs_ft"):
        random_htdemucs_file("umxl")
