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
