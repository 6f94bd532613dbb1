"""`python -m pycore.weights [NAME... | all]`: run the converters of the default models
(or the named ones) idempotently; see pycore.weights.convert."""

from __future__ import annotations

import json

from . import MANIFEST
from . import convert_crepe as crepe, convert_spleeter as spleeter


def converters() -> dict:
    """{model name: ensure function(weights_dir) -> Path}, in manifest order."""
    return {
        "spleeter-2stems": spleeter.ensure_spleeter,
        "crepe-tiny": crepe.ensure_crepe_tiny,
        "crepe-full": crepe.ensure_crepe_full,
    }


def default_models() -> list:
    """Names of the models `setup_weights()` converts by default (manifest "default",
    true when absent). Models without a "converter" (trained by this project, their
    files committed) are not converted."""
    with open(MANIFEST) as f:
        models = json.load(f)["models"]
    return [m["name"] for m in models if m.get("default", True) and "converter" in m]


def setup_weights(weights_dir=None, names=None) -> list:
    """Run the converters of `names` (default: the default models; "all": every model),
    idempotently; returns the paths of the weight files."""
    table = converters()
    if names is None:
        names = default_models()
    elif names == "all" or list(names) == ["all"]:
        names = list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"no converter for {', '.join(unknown)}; known models: {', '.join(table)}")
    paths = []
    for name in names:
        p = table[name](weights_dir)
        print(f"weights: {p}")
        paths.append(p)
    return paths
