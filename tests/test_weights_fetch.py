"""`stemtone weights fetch | convert | list` on checkpoints in the official formats.

The checkpoints are made by the reference packages with random weights: demucs==4.1.0
(an HTDemucs saved the way demucs.states.serialize_model + save_with_checksum save
it, so the file is named <sig>-<sha256 prefix>.th) and openunmix==1.3.0 (an OpenUnmix
state dict per target, named <target>-<sha256 prefix>.pth). Small configurations keep
the files a few tens of kB; the format is the official one. A local HTTP server plays
the download host: a good download, a redirect, a cut connection (resumed with Range),
a server that ignores Range (restarted from 0), a bad checksum, an unreachable host.
"""

import functools
import hashlib
import http.server
import importlib
import importlib.util
import io
import json
import re
import subprocess
import sys
import threading
import types
import urllib.request
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("demucs")
pytest.importorskip("einops")  # demucs.htdemucs imports it
if importlib.util.find_spec("openunmix") is None:  # found, not imported (see _umx_module)
    pytest.skip("openunmix==1.3.0 is not installed", allow_module_level=True)

from pycore.weights import safetensors  # noqa: E402
from pycore.cli.main import main as cli_main  # noqa: E402
from pycore.weights import fetch  # noqa: E402

SOURCES = ["drums", "bass", "other", "vocals"]
TARGETS = ["vocals", "drums", "bass", "other"]


# ---------------------------------------------------------------- checkpoints

def save_demucs(folder: Path, sig: str, seed: int, sources=SOURCES, segment=4) -> Path:
    """A small HTDemucs saved in demucs' own package format. serialize_model needs
    omegaconf only to turn the training config into a dict; we pass a dict directly."""
    from demucs import states
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(seed)
    model = HTDemucs(sources=list(sources), channels=8, depth=2, t_layers=1, nfft=512,
                     dconv_depth=1, bottom_channels=0, segment=segment)
    args, kwargs = model._init_args_kwargs
    package = {"klass": model.__class__, "args": args, "kwargs": kwargs,
               "state": states.get_state(model, None, half=True),
               "training_args": {"seed": seed, "dset": {"segment": 11}}}
    states.save_with_checksum(package, folder / f"{sig}.th")
    (path,) = folder.glob(f"{sig}-*.th")
    return path


@functools.lru_cache(maxsize=None)
def _umx_module():
    """openunmix/model.py, imported as _openunmix_ref.model without openunmix/__init__
    (which needs torchaudio, not installed here) and without claiming the name
    "openunmix". Its sibling transforms.py imports torchaudio at the top but uses it only
    inside functions, so an empty stand-in module is enough for the import."""
    folder = importlib.util.find_spec("openunmix").submodule_search_locations[0]
    pkg = types.ModuleType("_openunmix_ref")
    pkg.__path__ = [folder]
    sys.modules["_openunmix_ref"] = pkg
    stub = "torchaudio" not in sys.modules
    if stub:
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    try:
        return importlib.import_module("_openunmix_ref.model")
    finally:
        if stub:
            del sys.modules["torchaudio"]


UMX_ARGS = {"nb_bins": 257, "nb_channels": 2, "hidden_size": 16, "nb_layers": 3,
            "unidirectional": False, "max_bin": 100}


def save_umx(folder: Path, target: str, seed: int) -> Path:
    """An OpenUnmix state dict saved as <target>-<sha256 prefix>.pth (torch.hub naming)."""
    model_cls = _umx_module().OpenUnmix
    torch.manual_seed(seed)
    net = model_cls(**UMX_ARGS)
    with torch.no_grad():  # random statistics too, so that every tensor is checked
        net.input_mean.normal_()
        net.output_scale.uniform_(0.5, 2)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    digest = hashlib.sha256(buf.getvalue()).hexdigest()[:8]
    path = folder / f"{target}-{digest}.pth"
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpts")
    return {
        "htdemucs": [save_demucs(folder, "955717e8", 0)],
        # segment as a Fraction: allowed in packages (fractions.Fraction), recorded as a float
        "htdemucs_6s": [save_demucs(folder, "5c90dfd2", 1, SOURCES + ["guitar", "piano"], Fraction(39, 5))],
        "htdemucs_ft": [save_demucs(folder, sig, 2 + i) for i, sig in
                        enumerate(["f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d"])],
        "umxl": [save_umx(folder, t, 10 + i) for i, t in enumerate(TARGETS)],
    }


def check_demucs_output(out: Path, files, name):
    """The safetensors file holds each package's state (same dtype, bit-exact) under its
    prefix, and metadata from which the network can be rebuilt."""
    got = safetensors.load_numpy(out)
    meta = safetensors.load_metadata(out)
    arch = json.loads(meta["architecture"])
    assert meta["model"] == name and meta["format"] == "demucs"
    assert arch["klass"] == "demucs.htdemucs.HTDemucs" and len(arch["models"]) == len(files)
    want_keys = set()
    for i, path in enumerate(files):
        pkg = torch.load(path, map_location="cpu", weights_only=False)
        prefix = f"model{i}." if len(files) > 1 else ""
        m = arch["models"][i]
        assert m["prefix"] == prefix and m["sig"] == path.name.split("-")[0]
        want = {k: float(v) if isinstance(v, Fraction) else v for k, v in pkg["kwargs"].items()}
        assert m["args"] == list(pkg["args"]) and m["kwargs"] == want
        assert arch["sources"] == pkg["kwargs"]["sources"]
        for k, t in pkg["state"].items():
            assert t.dtype == torch.float16
            a = got[prefix + k]
            assert a.dtype == np.float16 and a.shape == tuple(t.shape)
            assert np.array_equal(a.view(np.uint16), t.numpy().view(np.uint16)), k
            want_keys.add(prefix + k)
    assert set(got) == want_keys
    sources = json.loads(meta["source"])
    assert [s["file"] for s in sources] == [p.name for p in files]
    assert all(s["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest() for s, p in zip(sources, files))
    return arch


def check_umx_output(out: Path, files):
    got = safetensors.load_numpy(out)
    meta = safetensors.load_metadata(out)
    arch = json.loads(meta["architecture"])
    assert meta["format"] == "openunmix"
    assert arch == {"targets": [p.name.split("-")[0] for p in files], **UMX_ARGS}
    want_keys = set()
    for path in files:
        target = path.name.split("-")[0]
        state = torch.load(path, map_location="cpu", weights_only=True)
        for k, t in state.items():
            if k.endswith("num_batches_tracked"):
                assert f"{target}.{k}" not in got
                continue
            assert np.array_equal(got[f"{target}.{k}"], t.numpy()), k
            want_keys.add(f"{target}.{k}")
    assert set(got) == want_keys


# ---------------------------------------------------------------- convert

@pytest.mark.parametrize("name", ["htdemucs", "htdemucs_6s", "htdemucs_ft"])
def test_convert_demucs(ckpts, tmp_path, name):
    files = ckpts[name]
    out = fetch.convert(list(reversed(files)) if name == "htdemucs_ft" else files, name=name, weights_dir=tmp_path)
    assert out == tmp_path / f"{name}.safetensors"
    arch = check_demucs_output(out, files if name != "htdemucs_ft" else list(reversed(files)), name)
    if name == "htdemucs_ft":
        assert arch["weights"] == np.eye(4).tolist()  # each stem from its specialist
    else:
        assert arch["weights"] is None
    assert safetensors.load_metadata(out)["license"] == "MIT"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary left


def test_convert_umx(ckpts, tmp_path):
    out = fetch.convert(ckpts["umxl"], name="umxl", weights_dir=tmp_path)
    check_umx_output(out, ckpts["umxl"])
    assert "CC BY-NC-SA 4.0" in safetensors.load_metadata(out)["license"]


def test_convert_cli_without_torch(ckpts, tmp_path):
    """The product path never imports torch: run `stemtone weights convert` with torch
    made unimportable, then `weights list` shows the result."""
    code = ("import sys; sys.modules['torch'] = None; from pycore.cli.main import main; "
            "sys.exit(main(sys.argv[1:]))")
    files = [str(p) for p in ckpts["htdemucs"]]
    r = subprocess.run([sys.executable, "-c", code, "weights", "convert", *files, "--name", "mine",
                        "--dir", str(tmp_path)], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert r.returncode == 0, r.stderr
    assert "mine.safetensors" in r.stdout
    check_demucs_output(tmp_path / "mine.safetensors", ckpts["htdemucs"], "mine")


def test_list(ckpts, tmp_path, capsys):
    fetch.convert(ckpts["htdemucs"], name="htdemucs", weights_dir=tmp_path)
    (tmp_path / "broken.safetensors").write_bytes(b"\x01\x00")
    assert cli_main(["weights", "list", "--dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    assert "header valid" in lines["htdemucs.safetensors"]
    assert "INVALID" in lines["broken.safetensors"]
    for name, stems in [("htdemucs", "drums/bass/other/vocals"), ("htdemucs_6s", "guitar/piano"),
                        ("htdemucs_ft", "vocals"), ("umxl", "vocals")]:
        assert name in lines and stems in lines[name]
    assert "CC BY-NC-SA 4.0" in lines["umxl"] and "MIT" in lines["htdemucs"]


def test_convert_refuses(ckpts, tmp_path):
    # a name whose checksum does not match its contents (like demucs' own check)
    bad = tmp_path / "955717e8-00000000.th"
    bad.write_bytes(ckpts["htdemucs"][0].read_bytes())
    with pytest.raises(fetch.WeightsError, match="does not match the 00000000 in its name"):
        fetch.convert([bad], weights_dir=tmp_path)
    # an older demucs class: its global is not on the allowed list
    from demucs.hdemucs import HDemucs

    pkg = {"klass": HDemucs, "args": [], "kwargs": {"sources": SOURCES}, "state": {}}
    path = tmp_path / "old.th"
    torch.save(pkg, path)
    with pytest.raises(fetch.WeightsError, match="refusing to load global demucs.hdemucs.HDemucs"):
        fetch.convert([path], weights_dir=tmp_path)
    # several unknown files need a name
    with pytest.raises(fetch.WeightsError, match="--name"):
        fetch.convert(ckpts["umxl"], weights_dir=tmp_path)
    # mixing formats
    with pytest.raises(fetch.WeightsError, match="cannot mix"):
        fetch.convert([ckpts["htdemucs"][0], ckpts["umxl"][0]], name="x", weights_dir=tmp_path)
    assert not list(tmp_path.glob("*.safetensors"))


# ---------------------------------------------------------------- fetch over HTTP

class Host(http.server.BaseHTTPRequestHandler):
    """GET /<mode>/<file> serves files[file]. Modes: ok (honours Range), redirect (302 to
    ok), cut (the first answer stops after 1000 bytes, then like ok), cut-norange (the
    first answer is cut, later ones ignore Range and send everything with 200)."""

    files: dict = {}
    log: list = []

    def do_GET(self):
        mode, name = self.path.strip("/").split("/", 1)
        self.log.append((mode, name, self.headers.get("Range")))
        if mode == "redirect":
            self.send_response(302)
            self.send_header("Location", f"/ok/{name}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = self.files[name]
        first = sum(1 for m, n, _ in self.log if (m, n) == (mode, name)) == 1
        start = 0
        rng = self.headers.get("Range")
        if rng and mode != "cut-norange":
            start = int(rng.split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if mode.startswith("cut") and first:
            self.wfile.write(body[:1000])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def host(ckpts):
    Host.files = {p.name: p.read_bytes() for files in ckpts.values() for p in files}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Host)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def use_manifest(monkeypatch, tmp_path, name, files, base, mode, prefix=None):
    """Point `name`'s fetch record at the local host and the download cache at tmp_path."""
    entry = dict(fetch.fetchable()[name])
    entry["fetch"] = dict(entry["fetch"], files=[
        {"file": p.name, "url": f"{base}/{mode}/{p.name}",
         "sha256_prefix": prefix or p.name.split("-")[1].split(".")[0]} for p in files])
    monkeypatch.setattr(fetch, "fetchable", lambda: {name: entry})
    monkeypatch.setenv("STEMTONE_CACHE", str(tmp_path / "cache"))
    Host.log.clear()
    return tmp_path / "cache" / "downloads"


@pytest.mark.parametrize("name, mode", [("htdemucs", "ok"), ("htdemucs_ft", "redirect"),
                                        ("htdemucs_6s", "cut"), ("umxl", "cut-norange")])
def test_fetch(ckpts, host, tmp_path, monkeypatch, capsys, name, mode):
    files = ckpts[name]
    cache = use_manifest(monkeypatch, tmp_path, name, files, host, mode)
    out = fetch.fetch(name, tmp_path / "w", backoff=0)
    if name == "umxl":
        check_umx_output(out, files)
    else:
        check_demucs_output(out, files, name)
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in files)  # no .part
    assert all((cache / p.name).read_bytes() == p.read_bytes() for p in files)
    assert "downloading" in capsys.readouterr().err  # progress
    first = files[0].name
    ranges = [r for m, n, r in Host.log if n == first]
    if mode == "cut":  # resumed where the cut left it
        assert ranges == [None, "bytes=1000-"]
    elif mode == "cut-norange":  # asked to resume, got the whole file, started again
        assert ranges == [None, "bytes=1000-"]
    elif mode == "redirect":
        assert [m for m, n, _ in Host.log if n == first] == ["redirect", "ok"]
    # a second fetch uses the verified cache: no request
    Host.log.clear()
    fetch.fetch(name, tmp_path / "w", progress=False)
    assert Host.log == []


def test_fetch_bad_checksum(ckpts, host, tmp_path, monkeypatch):
    cache = use_manifest(monkeypatch, tmp_path, "htdemucs", ckpts["htdemucs"], host, "ok", prefix="deadbeef")
    with pytest.raises(fetch.WeightsError, match="does not match the published deadbeef.*deleted"):
        fetch.fetch("htdemucs", tmp_path / "w", progress=False)
    assert list(cache.iterdir()) == [] and not (tmp_path / "w").exists()


def test_fetch_gives_up_after_bounded_retries(ckpts, host, tmp_path, monkeypatch):
    """A host that keeps dropping the connection: a bounded number of tries, then one error."""
    monkeypatch.setattr(Host, "do_GET", lambda self: self.connection.close())
    cache = use_manifest(monkeypatch, tmp_path, "htdemucs", ckpts["htdemucs"], host, "ok")
    with pytest.raises(fetch.WeightsError, match="failed 3 times"):
        fetch.fetch("htdemucs", tmp_path / "w", progress=False, retries=2, backoff=0)
    assert not (tmp_path / "w").exists()


def test_fetch_unreachable_is_one_clear_line(tmp_path, monkeypatch, capsys):
    entry = dict(fetch.fetchable()["htdemucs"])
    entry["fetch"] = dict(entry["fetch"], files=[dict(entry["fetch"]["files"][0],
                                                      url="http://weights.invalid/demucs/955717e8-8726e21a.th")])
    monkeypatch.setattr(fetch, "fetchable", lambda: {"htdemucs": entry})
    monkeypatch.setenv("STEMTONE_CACHE", str(tmp_path / "cache"))
    assert cli_main(["weights", "fetch", "htdemucs", "--dir", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("stemtone: error: cannot reach weights.invalid: ")
    assert "stemtone weights convert FILE" in err


def test_size_and_full_sha256_are_both_required(ckpts, host, tmp_path, monkeypatch):
    files = ckpts["htdemucs"]
    data = files[0].read_bytes()
    full = hashlib.sha256(data).hexdigest()
    for record, message in [({"size": len(data) - 1, "sha256": full}, "bytes, the published file has"),
                            ({"size": len(data), "sha256": full[:-1] + "0"}, "does not match the published"),
                            ({"size": len(data), "sha256": full[:8]}, "does not match the published")]:
        cache = use_manifest(monkeypatch, tmp_path, "htdemucs", files, host, "ok")
        entry = fetch.fetchable()["htdemucs"]
        entry["fetch"]["files"][0].update(record)
        with pytest.raises(fetch.WeightsError, match=message):
            fetch.fetch("htdemucs", tmp_path / "w", progress=False)
        assert list(cache.iterdir()) == [] and not (tmp_path / "w").exists()  # no .part became the file
    cache = use_manifest(monkeypatch, tmp_path, "htdemucs", files, host, "ok")
    fetch.fetchable()["htdemucs"]["fetch"]["files"][0].update(size=len(data), sha256=full)
    fetch.fetch("htdemucs", tmp_path / "w", progress=False)
    assert (cache / files[0].name).read_bytes() == data


def test_a_redirect_that_leaves_https_is_refused():
    handler = fetch._HttpsStaysHttps()
    req = urllib.request.Request("https://dl.example/a.th")
    with pytest.raises(fetch.WeightsError, match="leaves https; refused"):
        handler.redirect_request(req, None, 302, "Found", {}, "http://dl.example/a.th")
    assert handler.redirect_request(req, None, 302, "Found", {}, "https://mirror.example/a.th").full_url \
        == "https://mirror.example/a.th"


def test_manifest_records():
    """The fetch records carry what the reference packages publish."""
    models = fetch.fetchable()
    assert set(models) >= {"htdemucs", "htdemucs_6s", "htdemucs_ft", "umxl"}
    for name, m in models.items():
        assert m["default"] is False and m["files"] == [{"path": f"{name}.safetensors"}]
        for f in m["fetch"]["files"]:
            assert f["url"].endswith("/" + f["file"]) and f["url"].startswith("https://")
            assert f["file"].split("-")[1].split(".")[0] == f["sha256_prefix"]
            if "sha256" in f:  # full records: 64 hex digits, the prefix, and the exact size
                assert re.fullmatch(r"[0-9a-f]{64}", f["sha256"]) and f["sha256"].startswith(f["sha256_prefix"])
                assert isinstance(f["size"], int) and f["size"] > 0
    assert [f["sig"] for f in models["htdemucs_ft"]["fetch"]["files"]] == \
        ["f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d"]
    assert [f["target"] for f in models["umxl"]["fetch"]["files"]] == TARGETS
