"""Local development server for the Stemtone pages (standard library only).

    python -m pycore.cli.serve [--port 8000] [--host 127.0.0.1]

What it serves is the app exactly as `stemtone build-site` writes it: the URL table of
pycore/cli/site_build.py (pages, /sw.js, /build.json, /vendor/pyodide/, /vendor/pyscript/,
/pkg/stemtone.zip, /weights/manifest.json, /weights/models.json and the weights of every
installed model, from --weights-dir first, then the folders of pycore.weights), read anew
on each request so that edits show at once. Given a `root` (the server's own tests), it
serves a tree laid out as a checkout through MOUNTS instead. `extra` adds files at URLs of
the caller's choosing (`stemtone bench runtime --browser` serves its random-weights
HTDemucs file to the bench page this way).

Every response carries the cross-origin isolation headers (COOP/COEP/CORP): PyScript
workers need SharedArrayBuffer to reach the page's DOM. WebGPU needs a secure context,
which http://127.0.0.1 is (a LAN address is not).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import posixpath
import shutil
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..paths import asset
from .site_build import InstalledModels, PackageZip, Site

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# URL prefix -> directory (relative to the repository root). Longest prefix wins.
MOUNTS = {
    "/vendor/pyodide/": "node_modules/pyodide",
    "/vendor/pyscript/": "node_modules/@pyscript/core/dist",
    "/weights/": "weights",
    "/": "site",
}
ZIP_URL = "/pkg/stemtone.zip"
MODELS_URL = "/weights/models.json"
ZIP_SOURCES = ("pycore", "kernels")  # directories shipped to the browser
ZIP_SUFFIXES = (".py", ".wgsl")

MIME = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".map": "application/json",
    ".toml": "text/plain; charset=utf-8",
    ".py": "text/plain; charset=utf-8",
    ".wgsl": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".zip": "application/zip",
    ".svg": "image/svg+xml",
    ".webmanifest": "application/manifest+json",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".wav": "audio/wav",
    ".ogg": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".safetensors": "application/octet-stream",
}

ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",  # a .py or .json is never sniffed into a script
}
REQUEST_TIMEOUT_S = 30  # a client that sends nothing for this long is dropped
LOOPBACK_WARNING = (
    "warning: serving on {host}, beyond this machine's loopback: anyone who can reach it "
    "can read every page and weight file (and WebGPU needs http://127.0.0.1 or localhost)"
)

MISSING_VENDOR = (
    "node_modules is missing: the pinned Pyodide and PyScript are not installed. "
    "Run `make demo` (or `npm ci`) in the repository root."
)


def mime_type(path: str) -> str:
    return MIME.get(os.path.splitext(path)[1].lower(), "application/octet-stream")


def vendor_installed(root: str | None = None) -> bool:
    """Pyodide is there: in the app's assets (root None: the checkout's node_modules or an
    installed wheel's copy), or in the tree at root."""
    folder = asset("pyodide") if root is None else os.path.join(root, "node_modules", "pyodide")
    return os.path.exists(os.path.join(folder, "pyodide.mjs"))


# ------------------------------------------------------------------ the package zip


def tree_package_files(root: str) -> list:
    """[(path relative to root, absolute path)] of every shipped file of a tree laid
    out as a checkout (pycore/ and kernels/), sorted."""
    out = []
    for top in ZIP_SOURCES:
        for d, dirs, names in os.walk(os.path.join(root, top)):
            dirs[:] = sorted(x for x in dirs if x != "__pycache__" and not x.startswith("."))
            for n in sorted(names):
                if n.endswith(ZIP_SUFFIXES):
                    full = os.path.join(d, n)
                    out.append((os.path.relpath(full, root).replace(os.sep, "/"), full))
    return out


# ------------------------------------------------------------------ request handler


def host_allowed(host_header, port: int, bound: str) -> bool:
    """True when a request's Host header names this server with our port: 127.0.0.1,
    localhost, [::1] or the --host name (bound to every interface: any IP address).
    A DNS-rebinding page sends its own domain name as Host and is refused."""
    if not host_header:
        return False
    text = host_header.strip().lower()
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        given = rest[1:] if rest.startswith(":") else rest
    elif text.count(":") == 1:
        host, given = text.split(":")
    else:
        host, given = text, ""
    if given != str(port) and not (given == "" and port == 80):
        return False
    if host in ("127.0.0.1", "localhost", "::1", bound.lower()):
        return True
    if bound in ("0.0.0.0", "::", ""):  # every interface: any of this machine's IP addresses
        try:
            ipaddress.ip_address(host)
            return True
        except ValueError:
            pass
    return False


def same_origin_location(location: str) -> str:
    """A redirect target that stays on this origin: "//evil/" would be another host."""
    return "/" + location.lstrip("/\\")


class Handler(BaseHTTPRequestHandler):
    server: "StemtoneServer"
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT_S

    def do_GET(self):
        self._serve(body=True)

    def do_HEAD(self):
        self._serve(body=False)

    def _serve(self, body: bool):
        if not host_allowed(self.headers.get("Host"), self.server.server_address[1], self.server.bound_host):
            return self._send_error(403, "this server answers only requests for its own address "
                                         "(Host: 127.0.0.1:PORT, localhost:PORT or the --host name)")
        url_path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if url_path in self.server.extra:
            return self._send_file(self.server.extra[url_path], body)
        if self.server.site is not None:
            return self._serve_site(url_path, body)
        if url_path == ZIP_URL:
            return self._send_bytes(self.server.package.data(), "application/zip", body)
        if url_path == MODELS_URL:
            try:
                listing = self.server.models.listing()
            except (OSError, ValueError) as e:
                return self._send_error(500, f"the model list could not be made: {e}")
            return self._send_bytes(json.dumps(listing, indent=1).encode(), "application/json", body)
        path = self.server.resolve(url_path)
        if path is None:
            return self._send_error(403, "forbidden path")
        if os.path.isdir(path):
            if not url_path.endswith("/"):
                return self._redirect(url_path + "/")
            index = os.path.join(path, "index.html")  # "/" is the demix page, site/index.html
            if not os.path.isfile(index):
                return self._send_error(404, "no directory listings")
            path = index
        if not os.path.isfile(path):
            if url_path.startswith("/vendor/") and not vendor_installed(self.server.root):
                return self._send_error(404, MISSING_VENDOR)
            return self._send_error(404, f"not found: {url_path}")
        self._send_file(path, body)

    def _serve_site(self, url_path: str, body: bool):
        """The app as `stemtone build-site` writes it (pycore/cli/site_build.py): an exact
        URL of its table, or 404; "/" and "/dir/" are their index.html."""
        try:
            entries = self.server.site.entries()
        except (OSError, ValueError) as e:
            return self._send_error(500, f"the site (or its model list) could not be made: {e}")
        entry = entries.get(url_path + "index.html" if url_path.endswith("/") else url_path)
        if entry is None:
            if url_path.startswith("/vendor/") and not vendor_installed():
                return self._send_error(404, MISSING_VENDOR)
            return self._send_error(404, f"not found: {url_path}")
        if entry.path is None:
            return self._send_bytes(entry.data(), mime_type(url_path), body)
        self._send_file(entry.path, body)

    def _send_file(self, path: str, body: bool):
        self.send_response(200)
        self._headers(mime_type(path), os.path.getsize(path))
        if body:
            with open(path, "rb") as f:
                shutil.copyfileobj(f, self.wfile)

    def _headers(self, content_type: str, length: int):
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for k, v in ISOLATION_HEADERS.items():
            self.send_header(k, v)
        self.end_headers()

    def _send_bytes(self, data: bytes, content_type: str, body: bool, status: int = 200):
        self.send_response(status)
        self._headers(content_type, len(data))
        if body:
            self.wfile.write(data)

    def _send_error(self, status: int, message: str):
        self._send_bytes((message + "\n").encode(), "text/plain; charset=utf-8", self.command != "HEAD", status)

    def _redirect(self, location: str):
        self.send_response(302)
        self.send_header("Location", same_origin_location(location))
        self._headers("text/plain; charset=utf-8", 0)

    def log_message(self, format, *args):
        if not self.server.quiet:
            super().log_message(format, *args)


# ------------------------------------------------------------------ server


class StemtoneServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 8000, host: str = "127.0.0.1", root: str | None = None, quiet: bool = False,
                 weights_dir: str | None = None, extra: dict | None = None):
        """root None: serve the app as `stemtone build-site` assembles it (Site), from the
        weights folders of pycore.weights (weights_dir first); root DIR: serve a tree laid
        out as a checkout through MOUNTS (tests of the server itself). extra: {URL path:
        file path} served before anything else."""
        super().__init__((host, port), Handler)
        self.extra = dict(extra or {})
        self.bound_host = host
        self.root = os.path.realpath(root or REPO)
        self.quiet = quiet
        if root is None:
            from ..weights import weights_dirs

            dirs = [os.path.realpath(weights_dir)] if weights_dir else []
            dirs += [str(d) for d in weights_dirs() if str(d) not in dirs]
            self.site = Site(dirs=dirs)
            self.models = self.site.installed
        else:
            self.site = None
            # weight files: the user's weights directory first, then the tree's weights/
            repo_weights = os.path.join(self.root, MOUNTS["/weights/"])
            dirs = [os.path.realpath(weights_dir)] if weights_dir else []
            dirs += [d for d in [os.path.realpath(repo_weights)] if d not in dirs]
            self.package = PackageZip(lambda: tree_package_files(self.root))
            self.models = InstalledModels(os.path.join(repo_weights, "manifest.json"), self.find_weights)
        self.weights_dirs = dirs
        self._thread = None

    def find_weights(self, _model: str, filename: str):
        """The path of a weights file in the first weights folder that has it, or None."""
        for d in self.weights_dirs:
            path = os.path.join(d, filename)
            if os.path.basename(filename) == filename and os.path.isfile(path):
                return path
        return None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def resolve(self, url_path: str):
        """Map a URL path to a file under one of MOUNTS, or None if it escapes its mount."""
        if not url_path.startswith("/") or "\0" in url_path or "\\" in url_path:
            return None
        if ".." in url_path.split("/"):
            return None
        prefix = max((p for p in MOUNTS if url_path.startswith(p) or url_path + "/" == p), key=len)
        rel = posixpath.normpath("/" + url_path[len(prefix):]).lstrip("/")
        bases = [os.path.realpath(os.path.join(self.root, MOUNTS[prefix]))]
        if prefix == "/weights/" and rel.endswith(".safetensors"):  # the user's weights directory first
            bases = self.weights_dirs
        for base in bases:
            path = os.path.realpath(os.path.join(base, rel))
            if path != base and not path.startswith(base + os.sep):
                return None
            if base is bases[-1] or os.path.exists(path):
                return path

    def start(self) -> "StemtoneServer":
        """Serve from a daemon thread (tests); returns self. Does nothing if already started."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="stemtone-serve", daemon=True
            )
            self._thread.start()
        return self

    def stop(self):
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def make_server(port: int = 0, host: str = "127.0.0.1", root: str | None = None, quiet: bool = True,
                weights_dir: str | None = None, extra: dict | None = None) -> StemtoneServer:
    """A started server in a background thread; port 0 picks a free port (see .url)."""
    return StemtoneServer(port, host, root, quiet, weights_dir, extra).start()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(port: int = 8000, host: str = "127.0.0.1", weights_dir: str | None = None) -> None:
    """Serve until Ctrl-C, printing the URL."""
    if not vendor_installed():
        print(f"warning: {MISSING_VENDOR}", file=sys.stderr)
    server = StemtoneServer(port, host, quiet=False, weights_dir=weights_dir)
    if not is_loopback(host):
        print(LOOPBACK_WARNING.format(host=host), file=sys.stderr, flush=True)
    print(f"Stemtone is served at {server.url}/  (Ctrl-C to stop)", flush=True)
    print(f"  demix:       {server.url}/", flush=True)
    print(f"  tone:        {server.url}/tone.html", flush=True)
    print(f"  learn:       {server.url}/learn.html", flush=True)
    print(f"  diagnostics: {server.url}/diagnostics.html", flush=True)
    try:
        installed = [m["name"] for m in server.models.listing()["models"]
                     if m["installed"] and (m.get("task") == "separate" or "fetch" in m)]
        print(f"  separation models installed: {', '.join(installed) or 'none'} "
              f"(weights from {' then '.join(server.weights_dirs)})", flush=True)
    except (OSError, ValueError) as e:
        print(f"warning: the model list cannot be made: {e}", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m pycore.cli.serve", description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--weights-dir", help="where `stemtone weights fetch --dir` put models (default: weights/)")
    args = ap.parse_args(argv)
    serve(args.port, args.host, args.weights_dir)


if __name__ == "__main__":
    main()
