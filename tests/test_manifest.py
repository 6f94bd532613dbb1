"""pycore.weights.manifest.check_models: the checks every reader of the manifest and of the
server's models list makes (the CLI, the server, and the demix and tone pages' main
threads). Each fault is a ValueError naming the document, the model and the fault; the
fuzz tests (tests/test_fuzz.py) check that nothing else ever escapes."""

import json

import pytest

from pycore.weights import MANIFEST
from pycore.weights.manifest import check_models

GOOD_FILE = {"path": "m.safetensors", "size": 10, "sha256": "ab" * 32}


def doc(**model):
    return {"models": [{"name": "m", **model}]}


def test_the_shipped_manifest_passes():
    with open(MANIFEST, encoding="utf-8") as f:
        models = check_models(json.load(f), "manifest.json")
    assert {"spleeter-2stems", "htdemucs", "ddsp-violin"} <= {m["name"] for m in models}


@pytest.mark.parametrize("bad, words", [
    ({"models": {}}, 'no "models" list'),
    ([], 'no "models" list'),
    ({"models": [{"title": "no name"}]}, 'a model without a valid "name"'),
    (doc(files=[dict(GOOD_FILE, path="../index.html")]), "model m: a file record without a plain file name"),
    (doc(files=[dict(GOOD_FILE, size=-1)]), "model m: m.safetensors: size must be an integer >= 0"),
    (doc(files=[dict(GOOD_FILE, sha256="ab" * 4)]), "model m: m.safetensors: sha256 must have 64 hex digits"),
    (doc(stems="vocals"), 'model m: "stems" must be a non-empty list of distinct names'),
    (doc(stems=[]), 'model m: "stems" must be a non-empty list of distinct names'),
    (doc(stems=["vocals", "vocals"]), 'model m: "stems" must be a non-empty list of distinct names'),
    (doc(stems=["<b>vocals</b>"]), 'model m: "stems" must be a non-empty list of distinct names'),
    (doc(fetch={"files": [{"file": "a.th", "url": "http://example.com/a.th", "sha256": "ab" * 32}]}),
     "model m: a.th: url must be https"),
])
def test_faults_are_named(bad, words):
    with pytest.raises(ValueError) as info:
        check_models(bad, "/weights/models.json")
    assert str(info.value).startswith("/weights/models.json: ") and words in str(info.value), str(info.value)


def test_a_good_list_is_returned_as_is():
    good = doc(files=[GOOD_FILE], stems=["vocals", "accompaniment"], installed=True, title="M (two stems)")
    assert check_models(good, "models.json") == good["models"]
