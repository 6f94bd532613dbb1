"""Tone transfer: a sung or played melody in, the same melody on a trained instrument out.

    features   pitch (CREPE) and A-weighted loudness at 250 frames per second (GPU)
    controls   the per-frame control constants and the octave fold (pure Python)
    stream     the streaming engine, ToneStream: features -> controls -> DDSP decoder ->
               harmonic-plus-noise synthesizer -> level; browser and native
    files      files in, instrument out (native): `stemtone tone`, pycore.tone(...)

`from pycore.tone import ToneStream, load_tone_model` works as before: the engine's names
are loaded from `stream` on first use, so importing `pycore.tone.controls` alone (the
page's main thread) does not load the GPU code. Calling the package,
`pycore.tone("singing.wav", "violin", ...)`, runs pycore.tone.files.tone.
"""

from __future__ import annotations

import importlib
import sys
import types


def __getattr__(name):
    """The engine's public names (ToneStream, load_tone_model, SAMPLE_RATE, ...), from
    pycore.tone.stream on first use."""
    if name.startswith("__"):
        raise AttributeError(name)
    stream = importlib.import_module(".stream", __name__)
    try:
        return getattr(stream, name)
    except AttributeError:
        raise AttributeError(f"module 'pycore.tone' has no attribute {name!r}") from None


class _CallableModule(types.ModuleType):
    """`pycore.tone(input, instrument="violin", ...)` (the file API, native) and
    `pycore.tone.ToneStream` (this package) under one name."""

    def __call__(self, *args, **kwargs):
        from .files import tone

        return tone(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
