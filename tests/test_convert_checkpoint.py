"""pycore.weights.checkpoint (the demix page's numpy-free converter) against
`stemtone weights convert` (pycore.weights.fetch.convert): the same checkpoints in the
official formats (made by demucs==4.1.0 and openunmix==1.3.0 with random weights, see
tests/test_weights_fetch.py) must give byte-identical safetensors files; damaged and
foreign files must give one-line errors naming the file.
"""

import io
import os
import pickle
import sys
import zipfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
wf = pytest.importorskip("test_weights_fetch")  # skips without torch / demucs / openunmix

from pycore.weights import safetensors  # noqa: E402
from pycore.demix.base import model_for_file  # noqa: E402
from pycore.weights import checkpoint, fetch  # noqa: E402

ckpts = wf.ckpts  # the module fixture: {model name: [checkpoint paths]}


def browser_convert(paths, name=None):
    return checkpoint.convert_files([(p.name, p.read_bytes()) for p in paths], fetch.fetchable(), name)


@pytest.mark.parametrize("name", ["htdemucs", "htdemucs_6s", "htdemucs_ft", "umxl"])
def test_same_bytes_as_weights_convert(ckpts, tmp_path, name):
    native = fetch.convert(ckpts[name], name=name, weights_dir=tmp_path)
    got_name, data = browser_convert(ckpts[name], name)
    assert got_name == name
    assert data == native.read_bytes()
    meta = safetensors.load_metadata(data)
    assert model_for_file(meta) == name


def test_user_named_files_run_as_the_matching_model(ckpts, tmp_path):
    six = tmp_path / "my-six.th"
    six.write_bytes(ckpts["htdemucs_6s"][0].read_bytes())
    name, data = browser_convert([six])
    assert name == "my-six"
    assert model_for_file(safetensors.load_metadata(data)) == "htdemucs_6s"
    umx = []
    for p in ckpts["umxl"]:  # <target>.pth, no hash in the name
        umx.append(tmp_path / (p.name.split("-")[0] + ".pth"))
        umx[-1].write_bytes(p.read_bytes())
    with pytest.raises(ValueError, match="not the published files of one model"):
        browser_convert(umx)
    one = browser_convert(umx[:1])[1]
    with pytest.raises(ValueError, match="none of the page's models"):
        model_for_file(safetensors.load_metadata(one))  # vocals only


def test_spleeter_file_keeps_its_name():
    assert model_for_file({"model": "spleeter-2stems", "stems": "vocals,accompaniment"}) == "spleeter-2stems"


def test_strided_tensor_is_gathered():
    storage = checkpoint._Storage("FloatStorage", memoryview(bytes(range(24))))  # 6 floats
    t = checkpoint._rebuild_tensor(storage, 0, (3, 2), (1, 3))  # the transpose of a [2, 3]
    words = [bytes(range(24))[4 * i:4 * i + 4] for i in range(6)]
    assert t.shape == (3, 2) and t.data == b"".join(words[i] for i in (0, 3, 1, 4, 2, 5))
    with pytest.raises(pickle.UnpicklingError, match="exceeds its storage"):
        checkpoint._rebuild_tensor(storage, 4, (3,), (1,))


def test_damaged_and_foreign_files(ckpts, tmp_path):
    good = ckpts["htdemucs"][0].read_bytes()
    cases = {
        "song.mp3": (b"ID3" + bytes(500), "not a PyTorch checkpoint"),
        "cut.th": (good[: len(good) // 2], "not a PyTorch checkpoint|damaged"),
        ckpts["htdemucs"][0].name: (good[:-10] + bytes(10), "does not match the .* in its name"),
    }
    buf = io.BytesIO()  # a torch-zip-shaped file whose pickle calls os.system
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", b"cos\nsystem\n(S'echo hi'\ntR.")
    cases["evil.pth"] = (buf.getvalue(), "refusing to load global os.system")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"weight": 1.0}, protocol=2))
    cases["plain.pth"] = (buf.getvalue(), "neither a demucs model package nor an Open-Unmix state dict")
    for fname, (data, message) in cases.items():
        with pytest.raises(ValueError, match=message) as e:
            checkpoint.convert_files([(fname, data)], fetch.fetchable())
        assert fname in str(e.value) and "\n" not in str(e.value)


def test_imports_without_numpy():
    code = ("import sys; sys.modules['numpy'] = None; import pycore.weights.checkpoint as c; "
            "import pycore.weights.safetensors; print('ok')")
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert r.stdout.strip() == "ok", r.stderr


def test_published_files_in_any_order_take_the_manifest_name(ckpts, tmp_path, monkeypatch):
    ft = ckpts["htdemucs_ft"]
    weights = [[1.0 if i == j else 0.0 for j in range(4)] for i in range(4)]
    fake = {"htdemucs_ft": {"fetch": {"files": [{"file": p.name} for p in ft], "weights": weights},
                            "license": "MIT"}}
    monkeypatch.setattr(fetch, "fetchable", lambda: fake)
    native = fetch.convert(list(reversed(ft)), weights_dir=tmp_path)
    name, data = checkpoint.convert_files([(p.name, p.read_bytes()) for p in reversed(ft)], fake)
    assert name == "htdemucs_ft" and data == native.read_bytes()
    meta = safetensors.load_metadata(data)
    assert '"prefix": "model3."' in meta["architecture"] and model_for_file(meta) == "htdemucs_ft"
