"""The model manifest (weights/manifest.json) and the server's models list, checked.

Browser-safe (no numpy). Both documents are {"models": [model, ...]}; the server's
list (/weights/models.json, pycore/cli/serve.py) adds "installed" and "install" to
each model. check_models() validates what every reader relies on and returns the
models; anything else is a ValueError naming the document and the model:

    model   "name": str (letters, digits, _ . -), optional "files": [{"path": a plain
            file name, optional "size": int >= 0, "sha256": 64 hex digits}], optional
            "fetch": {"files": [{"file": a plain file name, "url": https URL,
            "sha256_prefix": 8+ hex digits, optional "sha256", "size"}], ...}, optional
            "stems": a non-empty list of distinct names (as "name")
Other fields pass through unchecked (titles, licenses: shown as text).
"""

from __future__ import annotations

import re

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HEX = re.compile(r"^[0-9a-f]{8,64}$")


def _file_record(rec, where, name_key):
    if not isinstance(rec, dict) or not isinstance(rec.get(name_key), str) or not _FILE.match(rec[name_key]):
        raise ValueError(f"{where}: a file record without a plain file name in {name_key!r}")
    size = rec.get("size", 0)
    if type(size) is not int or size < 0:
        raise ValueError(f"{where}: {rec[name_key]}: size must be an integer >= 0")
    for key in ("sha256", "sha256_prefix"):
        if key in rec and not (isinstance(rec[key], str) and _HEX.match(rec[key])):
            raise ValueError(f"{where}: {rec[name_key]}: {key} must be hex digits")
    if "sha256" in rec and len(rec["sha256"]) != 64:
        raise ValueError(f"{where}: {rec[name_key]}: sha256 must have 64 hex digits")


def check_models(doc, name: str = "manifest") -> list:
    """The models of a manifest or models list `doc` (parsed JSON), validated."""
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
        raise ValueError(f"{name}: no \"models\" list")
    for m in doc["models"]:
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not _NAME.match(m["name"]):
            raise ValueError(f"{name}: a model without a valid \"name\"")
        where = f"{name}: model {m['name']}"
        stems = m.get("stems", ["-"])
        if (not isinstance(stems, list) or not stems or len(set(map(str, stems))) != len(stems)
                or not all(isinstance(s, str) and _NAME.match(s) for s in stems)):
            raise ValueError(f"{where}: \"stems\" must be a non-empty list of distinct names")
        if not isinstance(m.get("files", []), list):
            raise ValueError(f"{where}: \"files\" must be a list")
        for rec in m.get("files", []):
            _file_record(rec, where, "path")
        if "fetch" in m:
            fetch = m["fetch"]
            if not isinstance(fetch, dict) or not isinstance(fetch.get("files"), list):
                raise ValueError(f"{where}: \"fetch\" must hold a \"files\" list")
            for rec in fetch["files"]:
                _file_record(rec, where, "file")
                if not isinstance(rec.get("url"), str) or not rec["url"].startswith("https://"):
                    raise ValueError(f"{where}: {rec['file']}: url must be https")
                if not isinstance(rec.get("sha256_prefix", rec.get("sha256")), str):
                    raise ValueError(f"{where}: {rec['file']}: no sha256")
    return doc["models"]
