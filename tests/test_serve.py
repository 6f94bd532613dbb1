"""The development server: isolation headers, MIME types, path traversal, package zip."""

import http.client
import io
import os
import time
import zipfile

import pytest

from pycore.cli import serve
from pycore.cli.serve import make_server

FILES = {
    "site/index.html": b"<!doctype html><title>home</title>",
    "site/style.css": b"body {}",
    "site/page.py": b"print('hi')",
    "site/pyscript.toml": b'interpreter = "/vendor/pyodide/pyodide.mjs"',
    "site/sub/data.json": b"{}",
    "node_modules/pyodide/pyodide.mjs": b"export {}",
    "node_modules/pyodide/pyodide.asm.wasm": b"\0asm\1\0\0\0",
    "node_modules/@pyscript/core/dist/core.js": b"export {}",
    "weights/manifest.json": b"[]",
    "pycore/__init__.py": b"",
    "pycore/runtime.py": b"X = 1\n",
    "pycore/ops/conv.py": b"Y = 2\n",
    "pycore/__pycache__/runtime.cpython-311.pyc": b"junk",
    "kernels/common.wgsl": b"fn f() {}",
    "kernels/README.txt": b"not shipped",
    "secret.txt": b"outside every mount",
}


def make_tree(root):
    for rel, data in FILES.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


@pytest.fixture
def tree(tmp_path):
    make_tree(tmp_path)
    return tmp_path


@pytest.fixture
def server(tree):
    srv = make_server(root=str(tree))
    yield srv
    srv.stop()


def request(srv, path, method="GET"):
    """Send the path exactly as given (no client-side normalisation)."""
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def test_port_zero_picks_a_free_port(server):
    assert server.server_address[1] != 0
    assert server.url == f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize("path", ["/index.html", "/missing.html", "/pkg/stemtone.zip", "/../secret.txt"])
def test_every_response_is_cross_origin_isolated(server, path):
    _, headers, _ = request(server, path)
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert headers["cross-origin-embedder-policy"] == "require-corp"
    assert headers["cross-origin-resource-policy"] == "same-origin"
    assert headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    "path, mime, body",
    [
        ("/index.html", "text/html", FILES["site/index.html"]),
        ("/style.css", "text/css", FILES["site/style.css"]),
        ("/page.py", "text/plain", FILES["site/page.py"]),
        ("/pyscript.toml", "text/plain", FILES["site/pyscript.toml"]),
        ("/sub/data.json", "application/json", FILES["site/sub/data.json"]),
        ("/vendor/pyodide/pyodide.mjs", "text/javascript", FILES["node_modules/pyodide/pyodide.mjs"]),
        ("/vendor/pyodide/pyodide.asm.wasm", "application/wasm", FILES["node_modules/pyodide/pyodide.asm.wasm"]),
        ("/vendor/pyscript/core.js", "text/javascript", FILES["node_modules/@pyscript/core/dist/core.js"]),
        ("/weights/manifest.json", "application/json", FILES["weights/manifest.json"]),
    ],
)
def test_mounts_and_mime_types(server, path, mime, body):
    status, headers, data = request(server, path)
    assert status == 200
    assert headers["content-type"].split(";")[0] == mime
    assert data == body
    assert int(headers["content-length"]) == len(body)


def test_wgsl_mime_type():
    assert serve.mime_type("kernels/conv.wgsl").startswith("text/plain")
    assert serve.mime_type("x.zip") == "application/zip"
    assert serve.mime_type("x.unknown") == "application/octet-stream"


def test_head_sends_headers_without_body(server):
    status, headers, data = request(server, "/style.css", "HEAD")
    assert status == 200 and data == b"" and int(headers["content-length"]) == len(FILES["site/style.css"])


def test_directory_serves_its_index(server):
    status, _, data = request(server, "/")
    assert status == 200 and data == FILES["site/index.html"]


def test_directory_without_index_is_not_listed(server):
    status, _, data = request(server, "/sub/")
    assert status == 404 and b"data.json" not in data


def test_real_repository_root_is_the_demix_page():
    with make_server() as srv:
        status, headers, data = request(srv, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'data-page="demix"' in data and b'type="file"' in data


@pytest.mark.parametrize("root", [None, "tree"])  # the app as built, and a checkout tree
def test_extra_files_are_served_at_their_urls_only(tmp_path, tree, root):
    blob = tmp_path / "random.safetensors"
    blob.write_bytes(b"0123456789")
    with make_server(root=str(tree) if root else None, extra={"/bench/random.safetensors": str(blob)}) as srv:
        status, headers, data = request(srv, "/bench/random.safetensors")
        assert (status, data, headers["content-length"]) == (200, b"0123456789", "10")
        assert headers["content-type"] == "application/octet-stream"
        assert headers["cross-origin-embedder-policy"] == "require-corp"
        assert request(srv, "/bench/other.safetensors")[0] == 404


def test_missing_file_is_404(server):
    status, _, _ = request(server, "/nope.html")
    assert status == 404


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/../../secret.txt",
        "/vendor/pyodide/../../../secret.txt",
        "/weights/%2E%2E/secret.txt",
        "/..%5csecret.txt",
        "/style.css%00.html",
    ],
)
def test_path_traversal_is_refused(server, path):
    status, _, data = request(server, path)
    assert status in (403, 404)
    assert FILES["secret.txt"] not in data


def test_symlink_out_of_a_mount_is_refused(server, tree):
    os.symlink(tree / "secret.txt", tree / "site" / "link.txt")
    status, _, data = request(server, "/link.txt")
    assert status == 403 and FILES["secret.txt"] not in data


def test_missing_node_modules_says_make_demo(tmp_path):
    (tmp_path / "site").mkdir()
    with make_server(root=str(tmp_path)) as srv:  # __enter__ is idempotent on a started server
        status, _, data = request(srv, "/vendor/pyodide/pyodide.mjs")
    assert status == 404 and b"make demo" in data


def test_package_zip_holds_pycore_and_kernels_only(server):
    status, headers, data = request(server, "/pkg/stemtone.zip")
    assert status == 200 and headers["content-type"] == "application/zip"
    names = sorted(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert names == ["kernels/common.wgsl", "pycore/__init__.py", "pycore/ops/conv.py", "pycore/runtime.py"]
    assert zipfile.ZipFile(io.BytesIO(data)).read("pycore/runtime.py") == FILES["pycore/runtime.py"]


def test_package_zip_is_rebuilt_when_a_source_changes(server, tree):
    first = request(server, "/pkg/stemtone.zip")[2]
    assert request(server, "/pkg/stemtone.zip")[2] == first  # cached: identical bytes
    path = tree / "pycore" / "runtime.py"
    path.write_bytes(b"X = 42\n")
    os.utime(path, ns=(time.time_ns() + 10**9,) * 2)
    again = request(server, "/pkg/stemtone.zip")[2]
    assert zipfile.ZipFile(io.BytesIO(again)).read("pycore/runtime.py") == b"X = 42\n"


def test_real_repository_zip_has_the_browser_files():
    with make_server() as srv:
        status, _, data = request(srv, "/pkg/stemtone.zip")
    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert status == 200
    assert {"pycore/gpu/runtime.py", "pycore/gpu/browser.py", "pycore/gpu/selfcheck.py", "kernels/common.wgsl"} <= names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


# ------------------------------------------------------------------ installed models


def weights_tree(tmp_path):
    """A repository whose manifest lists a bundled model (recorded sha256), two fetchable
    ones (one fetched into the user's weights directory) and one made by a converter."""
    import hashlib
    import json

    make_tree(tmp_path)
    bundled, fetched = b"bundled weights", b"fetched weights!"
    manifest = {"format": 1, "models": [
        {"name": "small", "task": "separate", "stems": ["a", "b"],
         "files": [{"path": "small.safetensors", "sha256": hashlib.sha256(bundled).hexdigest(), "size": 15}]},
        {"name": "big", "stems": ["a", "b", "c", "d", "e", "f"], "default": False,
         "files": [{"path": "big.safetensors"}], "fetch": {"files": []}},
        {"name": "other", "stems": ["a"], "default": False, "files": [{"path": "other.safetensors"}],
         "fetch": {"files": []}},
        {"name": "pitch", "task": "pitch", "default": False, "converter": "x",
         "files": [{"path": "pitch.safetensors", "sha256": "0" * 64, "size": 3}]},
    ]}
    (tmp_path / "weights" / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "weights" / "small.safetensors").write_bytes(bundled)
    user = tmp_path / "user-weights"
    user.mkdir()
    (user / "big.safetensors").write_bytes(fetched)
    (user / "manifest.json").write_text("not the manifest")  # only weight files come from here
    return user, bundled, fetched


def test_models_json_says_what_is_installed(tmp_path):
    import hashlib
    import json

    user, bundled, fetched = weights_tree(tmp_path)
    with make_server(root=str(tmp_path), weights_dir=str(user)) as srv:
        status, headers, data = request(srv, "/weights/models.json")
        assert status == 200 and headers["content-type"] == "application/json"
        models = {m["name"]: m for m in json.loads(data)["models"]}
        assert models["small"]["installed"] and "install" not in models["small"]
        assert models["small"]["files"] == [{"path": "small.safetensors", "size": 15,
                                             "sha256": hashlib.sha256(bundled).hexdigest()}]
        assert models["big"]["installed"] and models["big"]["stems"] == ["a", "b", "c", "d", "e", "f"]
        assert models["big"]["files"] == [{"path": "big.safetensors", "size": len(fetched),
                                           "sha256": hashlib.sha256(fetched).hexdigest()}]
        assert not models["other"]["installed"]
        assert models["other"]["install"] == "stemtone weights fetch other"
        assert not models["pitch"]["installed"] and models["pitch"]["install"] == "python -m pycore.weights pitch"
        # the files themselves: fetched ones from the user's directory, the rest from weights/
        assert request(srv, "/weights/big.safetensors")[2] == fetched
        assert request(srv, "/weights/small.safetensors")[2] == bundled
        assert request(srv, "/weights/manifest.json")[2] != b"not the manifest"
        assert request(srv, "/weights/other.safetensors")[0] == 404
        # a new version of a file gets a new sha256 (cached per size and mtime)
        (user / "big.safetensors").write_bytes(b"refetched")
        os.utime(user / "big.safetensors", ns=(time.time_ns() + 10**9,) * 2)
        again = {m["name"]: m for m in json.loads(request(srv, "/weights/models.json")[2])["models"]}
        assert again["big"]["files"][0]["sha256"] == hashlib.sha256(b"refetched").hexdigest()


def test_models_json_without_a_user_directory(tmp_path):
    import json

    weights_tree(tmp_path)
    with make_server(root=str(tmp_path)) as srv:
        models = {m["name"]: m for m in json.loads(request(srv, "/weights/models.json")[2])["models"]}
    assert models["small"]["installed"] and not models["big"]["installed"]


def test_models_json_with_a_broken_manifest_is_a_clear_500(server):
    status, _, data = request(server, "/weights/models.json")  # FILES' manifest is a bare list
    assert status == 500 and b"model list" in data


@pytest.mark.parametrize("path", ["/weights/../secret.txt", "/weights/%2e%2e/secret.txt",
                                  "/weights/../user-weights/big.safetensors"])
def test_user_weights_directory_does_not_open_other_paths(tmp_path, path):
    user, _, _ = weights_tree(tmp_path)
    os.symlink(tmp_path / "secret.txt", user / "leak.safetensors")
    with make_server(root=str(tmp_path), weights_dir=str(user)) as srv:
        status, _, data = request(srv, path)
        assert status in (403, 404) and FILES["secret.txt"] not in data
        status, _, data = request(srv, "/weights/leak.safetensors")
        assert status == 403 and FILES["secret.txt"] not in data


def test_package_holds_the_browser_backends_javascript():
    """pycore/gpu/browser.py reads encode.js beside it: without it no page starts."""
    from pycore.cli.site_build import package_files
    assert "pycore/gpu/encode.js" in [name for name, _ in package_files()]


# ---- answers only its own origin (issue 14)

def raw_request(srv, head: bytes) -> bytes:
    """Send raw request bytes (any Host header) and return the whole answer."""
    import socket

    with socket.create_connection(srv.server_address[:2], timeout=10) as s:
        s.sendall(head)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                return b"".join(chunks)
            chunks.append(b)


@pytest.mark.parametrize("host", ["evil.example:{port}", "127.0.0.1.nip.io:{port}", "localhost:1",
                                  "127.0.0.1", "10.0.0.1:{port}", "", None])
def test_a_foreign_host_gets_403(server, host):
    port = server.server_address[1]
    line = b"" if host is None else f"Host: {host.format(port=port)}\r\n".encode()
    answer = raw_request(server, b"GET / HTTP/1.1\r\n" + line + b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 403") and b"home" not in answer
    assert b"answers only requests for its own address" in answer


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}", "[::1]:{port}"])
def test_own_host_names_are_served(server, host):
    port = server.server_address[1]
    answer = raw_request(server, f"GET / HTTP/1.1\r\nHost: {host.format(port=port)}\r\nConnection: close\r\n\r\n"
                         .encode())
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(FILES["site/index.html"])


def test_host_check_follows_the_bound_address():
    assert serve.host_allowed("myhost.lan:8000", 8000, "myhost.lan")
    assert not serve.host_allowed("myhost.lan:8000", 8000, "127.0.0.1")
    assert serve.host_allowed("192.168.1.7:8000", 8000, "0.0.0.0")
    assert not serve.host_allowed("attacker.example:8000", 8000, "0.0.0.0")
    assert not serve.host_allowed("192.168.1.7:8001", 8000, "0.0.0.0")


def test_nosniff_on_every_answer(server):
    for path in ["/", "/page.py", "/missing"]:
        _, headers, _ = request(server, path)
        assert headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/%2Fsub", "//sub", "/%2F%2Fsub", "/%5Csub"])
def test_redirects_stay_on_this_origin(server, path):
    status, headers, _ = request(server, path)
    if status == 302:
        assert headers["location"].startswith("/") and not headers["location"].startswith(("//", "/\\"))
    else:
        assert status in (403, 404)


def test_a_silent_client_is_dropped(server, monkeypatch):
    import socket

    monkeypatch.setattr(serve.Handler, "timeout", 0.5)
    with socket.create_connection(server.server_address[:2], timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\n")  # and then nothing
        assert s.recv(100) == b""  # closed by the server, not by our 10 s timeout


@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                          ("0.0.0.0", True), ("192.168.1.7", True)])
def test_binding_beyond_loopback_is_warned(host, warned):
    assert serve.is_loopback(host) is not warned
