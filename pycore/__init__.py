"""Stemtone core. The subpackages, in the order audio flows through them:

    audio/    host audio: files, WAV, resampling, channel buffers, test clips
    gpu/      the GPU runtime (Device, Tensor), its native and browser backends, self-checks
    ops/      tensor ops: validation, then WGSL dispatches (kernels/*.wgsl)
    weights/  safetensors, the manifest, checkpoint readers and converters
    models/   networks built from ops (Spleeter, HTDemucs, Open-Unmix, CREPE, DDSP)
    demix/    separation: one interface, one module per model family, the file job
    tone/     tone transfer: features, controls, the streaming engine, the file job
    cli/      the `stemtone` command, the dev server, the benchmarks
    reference/, train/   PyTorch references and DDSP training (developers only)
"""
__version__ = "0.1.0"


def separate(inputs, model="spleeter-2stems", outdir="separated", format="wav", bits=16,
             overwrite=False, progress=True, dev=None):
    """Separate audio files into stems (native): OUTDIR/<track name>/<stem>.<format> at
    each input's sample rate and channel count. Returns one TrackResult per input; see
    pycore.demix.files.separate. (Imported on call: `import pycore` stays numpy-free for
    the browser.)"""
    from .demix.files import separate as _separate

    return _separate(inputs, model=model, outdir=outdir, format=format, bits=bits,
                     overwrite=overwrite, progress=progress, dev=dev)



def __getattr__(name):
    """`pycore.tone` is the tone-transfer package (pycore/tone/), imported on first use;
    calling it, `pycore.tone(input, instrument, ...)`, runs pycore.tone.files.tone on a
    file (see pycore.tone's docstring)."""
    if name == "tone":
        import importlib

        return importlib.import_module(".tone", __name__)
    raise AttributeError(f"module 'pycore' has no attribute {name!r}")
