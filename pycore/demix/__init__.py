"""Demixing: a song in, stems out, streamed on the GPU with flat memory.

    demixer = await Demixer.load(dev, "htdemucs")          # any model of MODELS
    stems = await demixer.separate([left, right])           # {"drums": [l, r], ...}
    stream = demixer.stream(channels=2)                     # or block by block:
    out = await stream.push([left_block, right_block])      # the output final so far
    out = await stream.finish()                             # the rest

The interface every model family implements, and the registry, are in `base`; each
family is one module here (`spleeter`, `htdemucs`, `umx`) that registers itself when
imported: every module of this package except `base` and `files` is a family and is
imported here. `files` is the file-level job (native: files in, stem files out). Adding
a family is a new module with a registered Demixer subclass, and its models in
weights/manifest.json; nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import FAMILIES, MODELS, Cancelled, Demixer, checked_block, model_for_file, pick_stems  # noqa: F401

NOT_FAMILIES = ("base", "files")   # the interface, and the file-level job (native only)
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in NOT_FAMILIES:
        importlib.import_module(f"{__name__}.{_module.name}")
