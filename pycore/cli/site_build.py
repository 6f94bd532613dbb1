"""The web app, assembled: what `stemtone build-site OUT/` writes and `stemtone serve`
serves, from one table of URL -> content (`Site.entries()`), so there is one way the app
is put together.

    stemtone build-site OUT/ [--models spleeter-2stems,ddsp-violin,...]

URL layout (the same in a build and behind `stemtone serve`):

    /...                    site/: the pages, their PyScript configs, scripts, styles, the
                            web app manifest and icons
    /sw.js                  site/sw.js with this build's version and app shell (each
                            file's sha256): the service worker gives cross-origin
                            isolation on any static server and caches the app for
                            offline use
    /build.json             {"version": ...}: the build each page says it runs
    /vendor/pyodide/        the Pyodide files the pages load (pycore.paths ASSETS)
    /vendor/pyscript/       PyScript's modules and styles
    /pkg/stemtone.zip       pycore/ + kernels/, unpacked by PyScript's [files] config
    /weights/manifest.json  the model manifest
    /weights/models.json    the manifest's models with "installed" and their files' sizes
                            and sha256 (what the demix page lists)
    /weights/<file>         the weights of the chosen models (a build) or of every
                            installed model (serve)

The version is the sha256 of the app shell's contents (every URL above except the
weights, /sw.js and /build.json), so any change to a page, the runtime or pycore makes a
new service worker, which caches the new shell completely (each file checked against
its sha256, so a server that holds part of another build cannot be cached) before it
replaces the old one. A build writes /sw.js last. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import threading
import zipfile

from ..paths import asset, asset_files
from ..weights import MANIFEST, find_weights
from ..weights.manifest import check_models

PACKAGE_SOURCES = ("pycore", "kernels")  # what /pkg/stemtone.zip holds
SW_PLACEHOLDER = "self.BUILD = {}"  # the line of site/sw.js that a build fills in


class Entry:
    """One URL's content: a file on disk (path) or bytes made on request (make())."""

    def __init__(self, path=None, make=None):
        self.path, self.make = path, make

    def data(self) -> bytes:
        if self.make is not None:
            return self.make()
        with open(self.path, "rb") as f:
            return f.read()


class Hashes:
    """sha256 of files, computed once per file version (path, size, mtime); thread-safe."""

    def __init__(self):
        self._known = {}
        self._lock = threading.Lock()

    def __call__(self, path: str) -> str:
        st = os.stat(path)
        key = (path, st.st_size, st.st_mtime_ns)
        with self._lock:
            if key not in self._known:
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                self._known[key] = h.hexdigest()
            return self._known[key]


class PackageZip:
    """A zip of files(): [(name in the zip, path)], rebuilt only when one changes. Entries
    carry a fixed date, so the same sources give the same bytes (and the same version)."""

    def __init__(self, files):
        self.files = files
        self._key, self._data = None, b""
        self._lock = threading.Lock()

    def data(self) -> bytes:
        files = self.files()
        key = tuple((rel, os.stat(p).st_mtime_ns, os.stat(p).st_size) for rel, p in files)
        with self._lock:
            if key != self._key:
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                    for rel, path in files:
                        with open(path, "rb") as f:
                            z.writestr(zipfile.ZipInfo(rel, (2020, 1, 1, 0, 0, 0)), f.read(), zipfile.ZIP_DEFLATED)
                self._key, self._data = key, buf.getvalue()
            return self._data


def package_files() -> list:
    """[(name in the zip, path)] of pycore's modules (and the JavaScript the browser backend
    loads: pycore/gpu/encode.js) and kernels/*.wgsl, as the browser needs them (pycore/
    beside kernels/), from a checkout or an installed wheel."""
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # pycore/
    out = []
    for folder, dirs, names in os.walk(pkg):
        dirs[:] = sorted(d for d in dirs if os.path.isfile(os.path.join(folder, d, "__init__.py")))
        out += [(os.path.relpath(os.path.join(folder, n), os.path.dirname(pkg)).replace(os.sep, "/"),
                 os.path.join(folder, n)) for n in sorted(names) if n.endswith((".py", ".js"))]
    return out + [(f"kernels/{rel}", path) for rel, path in asset_files("kernels")]


class InstalledModels:
    """The manifest with what is installed: every model gets "installed" (find() has its
    weights file); an installed model's files get their "size" and "sha256" (the
    manifest's when it records them and the size matches, else computed once per file
    version); a model that is not installed gets "install", the command that installs it.
    find(model name, file name) -> path or None."""

    def __init__(self, manifest: str, find):
        self.manifest, self.find = manifest, find
        self.sha256 = Hashes()

    def listing(self) -> dict:
        with open(self.manifest, encoding="utf-8") as f:
            manifest = json.load(f)  # a JSON error is a ValueError too
        models = []
        for m in check_models(manifest, str(self.manifest)):
            m, files, installed = dict(m), [], bool(m.get("files"))
            for entry in m.get("files", []):
                entry = dict(entry)
                path = self.find(m["name"], entry["path"])
                if path is None:
                    installed = False
                else:
                    size = os.path.getsize(path)
                    if entry.get("size") != size or "sha256" not in entry:
                        entry.update(size=size, sha256=self.sha256(path))
                files.append(entry)
            m["files"], m["installed"] = files, installed
            if not installed:
                m["install"] = (f"stemtone weights fetch {m['name']}" if "fetch" in m
                                else f"python -m pycore.weights {m['name']}" if "converter" in m else "make weights")
            models.append(m)
        return {**manifest, "models": models}


class Site:
    """The app's URL -> content table. models: the names whose weights it carries (None:
    every installed model); dirs: the weights folders (default: pycore.weights'). Read
    anew on each entries() call (the server picks up edits); the zip and the hashes are
    memoized by file versions."""

    def __init__(self, models=None, dirs=None):
        self.models = None if models is None else list(models)
        self.dirs = None if dirs is None else [str(d) for d in dirs]
        self.package = PackageZip(package_files)
        self.installed = InstalledModels(str(MANIFEST), self.weights_file)
        self.sha256 = self.installed.sha256

    def weights_file(self, model: str, filename: str):
        """The path of a chosen model's weights file, or None (not chosen, not installed)."""
        if (self.models is not None and model not in self.models) or os.path.basename(filename) != filename:
            return None
        if self.dirs is None:
            return find_weights(filename)
        return next((os.path.join(d, filename) for d in self.dirs if os.path.isfile(os.path.join(d, filename))), None)

    def check_models(self):
        """ValueError naming the chosen models that are unknown or not installed."""
        listing = {m["name"]: m for m in self.installed.listing()["models"]}
        unknown = [n for n in self.models or () if n not in listing]
        if unknown:
            raise ValueError(f"unknown model(s) {', '.join(unknown)}; the manifest has {', '.join(listing)}")
        missing = [f"{n} (`{listing[n]['install']}`)" for n in self.models or () if not listing[n]["installed"]]
        if missing:
            raise ValueError(f"not installed: {', '.join(missing)}; install them first, or leave them out")

    def shell(self) -> dict:
        """{url: Entry} of the app shell: pages, runtime, pycore, manifests (no weights)."""
        out = {"/" + rel: Entry(path) for rel, path in asset_files("site") if rel != "sw.js"}
        out.update({f"/vendor/pyodide/{rel}": Entry(p) for rel, p in asset_files("pyodide")})
        out.update({f"/vendor/pyscript/{rel}": Entry(p) for rel, p in asset_files("pyscript")})
        out["/pkg/stemtone.zip"] = Entry(make=self.package.data)
        out["/weights/manifest.json"] = Entry(str(MANIFEST))
        out["/weights/models.json"] = Entry(make=lambda: json.dumps(self.installed.listing(), indent=1).encode())
        return out

    def digests(self, shell: dict) -> dict:
        """{url: sha256 of its content} of the shell."""
        return {url: self.sha256(e.path) if e.path else hashlib.sha256(e.data()).hexdigest()
                for url, e in sorted(shell.items())}

    @staticmethod
    def version(digests: dict) -> str:
        """sha256 (12 hex digits) of the shell's URLs and contents."""
        h = hashlib.sha256()
        for url, digest in sorted(digests.items()):
            h.update(f"{url}\0{digest}\0".encode())
        return h.hexdigest()[:12]

    def entries(self) -> dict:
        """{url: Entry} of the whole app."""
        shell = self.shell()
        digests = self.digests(shell)
        version = self.version(digests)
        out = dict(shell)
        for m in self.installed.listing()["models"]:
            if m["installed"]:
                for f in m["files"]:
                    out["/weights/" + f["path"]] = Entry(self.weights_file(m["name"], f["path"]))
        build_json = json.dumps({"version": version}).encode()
        out["/build.json"] = Entry(make=lambda: build_json)
        # the service worker checks every shell file against its sha256 before it takes over
        build = {"version": version, "shell": {url.lstrip("/"): digest for url, digest in {
            **digests, "/build.json": hashlib.sha256(build_json).hexdigest()}.items()}}
        sw = os.path.join(asset("site"), "sw.js")
        out["/sw.js"] = Entry(make=lambda: service_worker(sw, build))
        return out

    def build(self, out_dir: str) -> dict:
        """Write the site into out_dir (files a previous build wrote are replaced one by
        one, each atomically, /sw.js last); returns {"version", "files", "bytes"}."""
        if self.models is not None:
            self.check_models()
        entries = self.entries()
        out_dir = os.path.abspath(out_dir)
        total = 0
        # /sw.js last: a browser that sees the new service worker finds every file it lists
        for url, e in sorted(entries.items(), key=lambda item: (item[0] == "/sw.js", item[0])):
            dest = os.path.join(out_dir, *url.lstrip("/").split("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            tmp = dest + ".part"
            if e.path is not None:
                shutil.copyfile(e.path, tmp)
            else:
                with open(tmp, "wb") as f:
                    f.write(e.data())
            os.replace(tmp, dest)  # a server reading OUT/ never sees a half-written file
            total += os.path.getsize(dest)
        version = json.loads(entries["/build.json"].data())["version"]
        return {"version": version, "files": len(entries), "bytes": total}


def service_worker(template: str, build: dict) -> bytes:
    with open(template, encoding="utf-8") as f:
        text = f.read()
    if SW_PLACEHOLDER not in text:
        raise ValueError(f"{template}: the line {SW_PLACEHOLDER!r} is missing")
    return text.replace(SW_PLACEHOLDER, "self.BUILD = " + json.dumps(build), 1).encode()


# ------------------------------------------------------------------ command line


def add_parser(sub):
    b = sub.add_parser("build-site", help="write the web app as a static site (any static server hosts it)",
                       description="Write a self-contained static site: the pages, PyScript and the Pyodide files "
                                   "they load, pycore + kernels, the chosen models' weights, the web app manifest "
                                   "and a service worker (cross-origin isolation and offline use on any server).")
    b.add_argument("out", metavar="OUT", help="output folder")
    b.add_argument("--models", default=None, metavar="NAME,...",
                   help="the models whose weights the site carries (default: every installed model)")
    b.set_defaults(fn=main)


def main(args) -> int:
    models = None if args.models is None else [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        info = Site(models).build(args.out)
    except (OSError, ValueError) as e:
        print(f"stemtone: error: {e}", file=sys.stderr)
        return 1
    print(f"site {info['version']}: {info['files']} files, {info['bytes'] / 1e6:.1f} MB in {args.out}")
    print(f"  host it with any static server, e.g. `python -m http.server -d {args.out}`, "
          "then open http://127.0.0.1:8000/")
    return 0
