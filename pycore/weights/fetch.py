"""`stemtone weights fetch | convert | list`: official Demucs v4 and Open-Unmix checkpoints.

Native only. The checkpoints are not bundled: `fetch NAME` downloads them from the
addresses their own packages use (recorded in weights/manifest.json under "fetch"),
`convert FILE...` converts files the user already has, and both write
<weights dir>/<NAME>.safetensors. Neither needs torch: checkpoints are read by the
restricted reader of pycore.weights.checkpoint (the one the page uses too).

Where the addresses come from (the reference packages, read, not imported):
  demucs==4.1.0    demucs/pretrained.py ROOT_URL + demucs/remote/files.txt; a model name
                   is a bag (demucs/remote/<name>.yaml) of signatures. A file is
                   <sig>-<first 8 hex digits of its sha256>.th, checked by demucs itself.
  openunmix==1.3.0 openunmix/__init__.py umxl_spec(): one <target>-<sha256 prefix>.pth
                   per target on Zenodo record 5069601 (torch.hub naming; openunmix
                   itself does not check the hash, we do).

Checkpoint formats (both torch zips):
  demucs     torch.save of demucs.states.serialize_model(): {"klass": the model class,
             "args": [], "kwargs": {constructor arguments}, "state": {name: tensor}
             (float16: saved with half=True), "training_args": {...}}.
  openunmix  torch.save of a plain state dict of openunmix.model.OpenUnmix.

The safetensors file keeps the reference state-dict names and PyTorch layouts, with a
prefix where one file holds several networks: "model{i}." for the i-th model of a
demucs bag (htdemucs_ft), "<target>." for Open-Unmix (vocals., drums., ...). Tensors
keep their stored dtype (demucs float16, openunmix float32); BatchNorm's int64
num_batches_tracked counters are left out. Metadata (all strings; JSON where noted):
  model, format ("demucs" | "openunmix"), license, source (JSON: [{file, sha256}]),
  architecture (JSON)
    demucs:    {"klass": "demucs.htdemucs.HTDemucs", "sources": [...],
                "models": [{"prefix", "sig", "args", "kwargs"}], "weights": [[...]] | null}
               kwargs are exactly the constructor arguments the package recorded, so
               the network can be rebuilt from them (Fractions become floats).
    openunmix: {"targets": [...], "nb_bins", "nb_channels", "hidden_size", "nb_layers",
                "unidirectional", "max_bin"}: OpenUnmix(...) arguments, read from the
                tensor shapes (the .pth files record none).

Downloads go to ~/.cache/stemtone/downloads as <file>.part (resumed with an HTTP Range
request, retried with back-off), are checked, then renamed; the output is written to a
temporary file and renamed (pycore.weights.safetensors.save), so no half-written file is ever
left under its final name.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from . import MANIFEST, install_dir, weights_dirs
from .convert import cache_dir, sha256_file


class WeightsError(RuntimeError):
    """A fetch or conversion failed; the message is meant for the user, on one line."""


# ---------------------------------------------------------------- manifest

def _manifest_models() -> list:
    from .manifest import check_models

    with open(MANIFEST, encoding="utf-8") as f:
        return check_models(json.load(f), str(MANIFEST))


def fetchable() -> dict:
    """{name: manifest entry} of the models with a "fetch" record."""
    return {m["name"]: m for m in _manifest_models() if "fetch" in m}


# ---------------------------------------------------------------- download

def _verify(path: Path, entry: dict):
    """None if path has the entry's exact "size" (when recorded) and its full "sha256"
    (else its "sha256_prefix"), else an error message."""
    size = path.stat().st_size
    if "size" in entry and size != entry["size"]:
        return f"{path.name}: {size} bytes, the published file has {entry['size']}"
    got = sha256_file(path)
    want = entry.get("sha256") or entry["sha256_prefix"]
    if got == want or ("sha256" not in entry and got.startswith(want)):
        return None
    return f"{path.name}: sha256 {got[:len(want)]} does not match the published {want}"


class _HttpsStaysHttps(urllib.request.HTTPRedirectHandler):
    """Follow redirects, except one from https to anything else (a downgrade anyone
    on the path could then answer)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(req.full_url).scheme == "https" and urllib.parse.urlsplit(newurl).scheme != "https":
            raise WeightsError(f"{req.full_url}: redirected to {newurl}, which leaves https; refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpsStaysHttps)


def _unreachable(e) -> bool:
    """True for a failure to reach the host at all (name lookup failed)."""
    return isinstance(e, urllib.error.URLError) and isinstance(e.reason, socket.gaierror)


def download(url: str, dest: Path, entry: dict, retries: int = 4, backoff: float = 1.0,
             timeout: float = 30.0, progress=None) -> Path:
    """Download url to dest, verified against entry's exact "size" and full "sha256"
    (or, for files published with only a prefix, its "sha256_prefix").

    Bytes go to dest + ".part"; an existing .part is resumed with a Range request (a
    server that answers 200 instead of 206 restarts it from 0). A dropped connection
    or short body is retried, waiting backoff * 2^k seconds; it gives up after
    `retries` + 1 tries in a row that received nothing.
    A size or checksum mismatch deletes the .part and raises: the .part becomes dest
    only when both match. A redirect from https to http is refused. progress(done, total) is called
    as bytes arrive (total None when the server does not say).
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    host = urllib.parse.urlsplit(url).hostname or url
    failures = 0
    while True:
        have = before = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "stemtone"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with _OPENER.open(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
                if have and r.status == 206:
                    start = re.match(r"bytes (\d+)-", r.headers.get("Content-Range", ""))
                    if not start or int(start.group(1)) != have:
                        part.unlink()  # a range we did not ask for: start again from 0
                        continue
                else:
                    have = 0  # 200: the server ignored Range and sends the whole file
                length = r.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                with open(part, "ab" if have else "wb") as f:
                    while True:
                        block = r.read(1 << 16)
                        if not block:
                            break
                        f.write(block)
                        have += len(block)
                        if have > entry.get("size", have):
                            break  # longer than the published file: _verify below refuses it
                        if progress:
                            progress(have, total)
                if total is not None and have < total and have <= entry.get("size", have):
                    raise http.client.IncompleteRead(b"", total - have)
            break
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # nothing left to send: the .part may be whole
                break
            raise WeightsError(f"{url}: the server answered {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", None) or e
            if _unreachable(e):
                raise WeightsError(f"cannot reach {host}: {reason}; download {url} elsewhere and use "
                                   f"`stemtone weights convert FILE`") from None
            kept = part.stat().st_size if part.exists() else 0
            failures = 1 if kept > before else failures + 1  # count tries that got nowhere
            if failures > retries:
                if isinstance(e, urllib.error.URLError):  # never connected
                    raise WeightsError(f"cannot reach {host}: {reason}; download {url} elsewhere and "
                                       f"use `stemtone weights convert FILE`") from None
                resume = f"; {part} is kept, run the command again to resume" if kept else ""
                raise WeightsError(f"download of {url} failed {failures} times (last: {reason!r}){resume}") from None
            time.sleep(backoff * 2 ** (failures - 1))
    problem = _verify(part, entry)
    if problem:
        part.unlink()
        raise WeightsError(f"{problem} (download deleted; run the command again)")
    os.replace(part, dest)
    return dest


def _progress_printer(label):
    last = [0.0]

    def show(done, total):
        now = time.monotonic()
        if now - last[0] < 0.25 and done != total:
            return
        last[0] = now
        text = f"{done / 1e6:.1f} of {total / 1e6:.1f} MB ({100 * done // total}%)" if total else f"{done / 1e6:.1f} MB"
        print(f"\r{label}: {text}", end="", file=sys.stderr, flush=True)

    return show


def fetch(name: str, weights_dir=None, progress: bool = True, **download_args) -> Path:
    """Download the official checkpoint(s) of `name` (cached, checked) and convert them
    to <weights_dir>/<name>.safetensors. Returns its path."""
    models = fetchable()
    if name not in models:
        raise WeightsError(f"no fetchable model {name!r}; one of {', '.join(models)}")
    entry = models[name]
    paths = []
    for f in entry["fetch"]["files"]:
        dest = cache_dir("downloads") / f["file"]
        if dest.exists() and _verify(dest, f) is None:
            paths.append(dest)
            continue
        show = _progress_printer(f"downloading {f['file']}") if progress else None
        paths.append(download(f["url"], dest, f, progress=show, **download_args))
        if show:
            print(file=sys.stderr)
    return convert(paths, name=name, weights_dir=weights_dir)


# ---------------------------------------------------------------- conversion

def convert(files, name: str | None = None, weights_dir=None) -> Path:
    """Convert checkpoint file(s) to <weights_dir>/<name>.safetensors and return its path.

    One demucs .th (a single model), several demucs .th (a bag, in the manifest's
    order when `name` is a known bag such as htdemucs_ft), or one Open-Unmix .pth per
    target (named <target>[-hash].pth). `name` defaults to the manifest model whose
    published files these are, else (one file only) to the file's stem. The reading
    and conversion are pycore.weights.checkpoint's, the same code the page runs.
    """
    from . import checkpoint, safetensors

    paths = [Path(f) for f in files]
    for p in paths:
        if not p.is_file():
            raise WeightsError(f"{p}: no such file")
    try:
        name, data = checkpoint.convert_files([(p.name, p.read_bytes()) for p in paths], fetchable(), name)
    except ValueError as e:
        raise WeightsError(str(e)) from None
    out = Path(weights_dir or install_dir()) / f"{name}.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    safetensors.write_atomic(out, [data])
    return out


# ---------------------------------------------------------------- list

def installed(weights_dir=None) -> list:
    """[(file name, size, status)] of the .safetensors files in weights_dir (default:
    every folder of weights_dirs(), the first copy of a name only); status is
    "sha256 ok" / "sha256 MISMATCH" for files the manifest records a sha256 for, else
    "converted here" (header checked) or "INVALID: ..."."""
    from . import safetensors

    recorded = {f["path"]: f.get("sha256") for m in _manifest_models() for f in m.get("files", [])}
    rows = []
    found = {}
    for d in [weights_dir] if weights_dir else weights_dirs():
        for p in Path(d).glob("*.safetensors"):
            found.setdefault(p.name, p)
    for p in sorted(found.values(), key=lambda p: p.name):
        want = recorded.get(p.name)
        if want:
            status = "sha256 ok" if sha256_file(p) == want else "sha256 MISMATCH"
        else:
            try:
                safetensors.read_header(p)
                status = "converted here (no recorded sha256; header valid)"
            except ValueError as e:
                status = f"INVALID: {e}"
        rows.append((p.name, p.stat().st_size, status))
    return rows


def list_text(weights_dir=None) -> str:
    where = weights_dir or " then ".join(map(str, weights_dirs()))
    lines = [f"installed in {where}:"]
    rows = installed(weights_dir)
    lines += [f"  {n:32s} {s / 1e6:9.1f} MB  {st}" for n, s, st in rows] or ["  (none)"]
    lines.append("fetchable (stemtone weights fetch NAME):")
    for name, m in fetchable().items():
        size = sum(f.get("size", 0) for f in m["fetch"]["files"])
        size_text = f"{size / 1e6:.0f} MB" if size else "size unknown"
        lines.append(f"  {name:14s} {'/'.join(m['stems']):38s} {m['fetch']['source']}; "
                     f"{m['license']}; {size_text}")
    return "\n".join(lines)


# ---------------------------------------------------------------- command line

def add_parser(sub):
    """Add `weights fetch | convert | list` to the stemtone argument parser."""
    w = sub.add_parser("weights", help="fetch, convert and list model weights")
    wsub = w.add_subparsers(dest="action", required=True)
    f = wsub.add_parser("fetch", help="download an official checkpoint and convert it")
    f.add_argument("name")
    c = wsub.add_parser("convert", help="convert checkpoint file(s) you already have (no torch needed)")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--name", help="model name (default: recognised from the files, else the file name)")
    lst = wsub.add_parser("list", help="installed weights and what can be fetched")
    for p in (f, c, lst):
        p.add_argument("--dir", default=None,
                       help=f"weights folder (default: $STEMTONE_WEIGHTS, else {install_dir()}); "
                            "the same as `stemtone --weights-dir DIR`")
    w.set_defaults(fn=main)


def main(args) -> int:
    try:
        if args.action == "list":
            print(list_text(args.dir))
            return 0
        if args.action == "fetch":
            out = fetch(args.name, args.dir)
        else:
            out = convert(args.files, args.name, args.dir)
    except WeightsError as e:
        print(f"stemtone: error: {e}", file=sys.stderr)
        return 1
    print(f"weights: {out}")
    return 0
