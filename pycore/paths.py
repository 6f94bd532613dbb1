"""Where Stemtone's files are: the same names in a repository checkout and in an
installed wheel (standard library only; the browser imports pycore too).

    asset(kind)         the folder (or file) of one kind of shipped file
    asset_files(kind)   [(name inside it, absolute path)] of the files of that kind that ship
    in_checkout()       True when running from a repository checkout

A checkout keeps each kind where developers edit it (kernels/, site/, weights/,
node_modules/); a wheel carries copies inside the package, put there by setup.py from
the same table (ASSETS), so that a `pip install` has everything the CLI and the pages
need. The checkout wins where both exist (an editable install).
"""

from __future__ import annotations

import fnmatch
import os

PACKAGE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(PACKAGE)

# kind -> (path in a checkout, path in the installed package (relative to pycore/),
#          the files of it that ship: glob patterns relative to it)
ASSETS = {
    # WGSL shaders; pycore/gpu/runtime.py also looks in pycore/kernels
    "kernels": ("kernels", "kernels", ["*.wgsl"]),
    # the pages, their PyScript configs, scripts, styles and icons
    "site": ("site", "site", ["*.html", "*.py", "*.js", "*.css", "*.toml", "*.svg", "*.png",
                              "*.webmanifest"]),
    # the model manifest, the model cards and the weights this project trained (committed)
    "weights": ("weights", "weights/bundled", ["manifest.json", "cards/*.md", "cards/*.json", "ddsp-*.safetensors",
                                              "timbre-check.safetensors"]),
    # the Pyodide files the pages load (no packages: the pages use only the standard library)
    "pyodide": ("node_modules/pyodide", "vendor/pyodide",
                ["pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip",
                 "pyodide-lock.json"]),
    # PyScript's modules (core.js loads its chunks by name) and styles, without source maps
    "pyscript": ("node_modules/@pyscript/core/dist", "vendor/pyscript", ["*.js", "*.css"]),
}

MISSING = {
    "pyodide": "run `npm ci` in the repository root (or `make demo`): the pinned Pyodide is not installed",
    "pyscript": "run `npm ci` in the repository root (or `make demo`): the pinned PyScript is not installed",
}


def in_checkout() -> bool:
    return os.path.isfile(os.path.join(CHECKOUT, "pyproject.toml")) and os.path.isdir(
        os.path.join(CHECKOUT, "kernels"))


def asset(kind: str) -> str:
    """The folder of `kind`: the checkout's when running from one, else the package's copy."""
    checkout, packaged, _ = ASSETS[kind]
    if in_checkout():
        return os.path.join(CHECKOUT, checkout)
    return os.path.join(PACKAGE, packaged)


def asset_files(kind: str, root: str | None = None) -> list:
    """[(relative name with "/", absolute path)] of the shipped files of `kind`, sorted;
    root: the folder to read (default asset(kind)). FileNotFoundError naming the fix when
    the folder is missing."""
    root = root or asset(kind)
    if not os.path.isdir(root):
        hint = MISSING.get(kind, "the installation is incomplete; reinstall stemtone")
        raise FileNotFoundError(f"{root} is missing: {hint}")
    patterns = ASSETS[kind][2]
    out = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for n in sorted(names):
            rel = os.path.relpath(os.path.join(folder, n), root).replace(os.sep, "/")
            if any(fnmatch.fnmatchcase(rel, p) for p in patterns):
                out.append((rel, os.path.join(folder, n)))
    return out
