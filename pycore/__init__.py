"""Stemtone core: GPU runtime, WGSL-backed ops, models and pipelines."""
__version__ = "0.1.0"


def separate(inputs, model="spleeter-2stems", outdir="separated", format="wav", bits=16,
             overwrite=False, progress=True, dev=None):
    """Separate audio files into stems (native): OUTDIR/<track name>/<stem>.<format> at
    each input's sample rate and channel count. Returns one TrackResult per input; see
    pycore.separation.separate. (Imported on call: `import pycore` stays numpy-free for
    the browser.)"""
    from .separation import separate as _separate

    return _separate(inputs, model=model, outdir=outdir, format=format, bits=bits,
                     overwrite=overwrite, progress=progress, dev=dev)



def __getattr__(name):
    """`pycore.tone` is the tone-transfer module (pycore/tone.py), imported on first use;
    calling it, `pycore.tone(input, instrument, ...)`, runs pycore.transfer.tone on a
    file (see pycore.tone's module docstring)."""
    if name == "tone":
        import importlib

        return importlib.import_module(".tone", __name__)
    raise AttributeError(f"module 'pycore' has no attribute {name!r}")
