"""The separation interface: what every model family (Spleeter, HTDemucs, Open-Unmix)
implements, and the registry that maps a model name to its family.

A family is a subclass of `Demixer` in its own module of this package, decorated with
`@register`; its class attribute `models` names the models it runs:

    @register
    class SpleeterDemixer(Demixer):
        family = "spleeter"
        models = {"spleeter-2stems": {"stems": ["vocals", "accompaniment"], "sample_rate": 44100}}

        @classmethod
        async def open(cls, dev, name, weights, dtype): ...   # build the network
        def open_stream(self, channels, **options): ...        # a push/finish stream

Everything above this layer (the file job in pycore.demix.files, the CLI, the pages) asks
the Demixer, never the family's name:
  - `stream(channels, stems=None, **options)`: a stream with `push(block)` and `finish()`,
    each returning {stem: [channel arrays]} of the output that became final;
  - `stream_options`: the extra options its streams take (HTDemucs: shifts, seed, stats);
  - `stats()`: an accumulator for a first pass over the track (HTDemucs' normalization
    statistics: `add(channels)` per block, then `.value`), or None when no pass is needed;
  - `host_bytes(frames, channels)`: host memory a track of that many frames at the
    model's rate needs beyond the constant part (Open-Unmix holds the whole track);
  - `progress_steps(length)`: how many progress reports a track of `length` samples
    gives (one per segment), 0 when the family reports fractions of the track.

Browser-safe: no numpy.
"""

from __future__ import annotations

import array
import json

from ..audio.buffers import concat, is_numpy

FAMILIES = {}       # family name -> Demixer subclass
MODELS = {}         # model name -> {"stems": [...], "sample_rate": int, "family": str,
                    #                "custom": True for a converted file's (register_file)}


def register(cls):
    """Class decorator: add a family and its models to the registry."""
    FAMILIES[cls.family] = cls
    for name, info in cls.models.items():
        MODELS[name] = dict(info, family=cls.family)
    return cls


def file_format(metadata: dict):
    """The "format" of a converted weights file (which family reads it): its metadata's;
    for a file written before that key existed (spleeter-2stems.safetensors), the format
    of the family of the model it names; else None."""
    kind = metadata.get("format")
    if kind is None and metadata.get("model") in MODELS:
        kind = FAMILIES[MODELS[metadata["model"]]["family"]].file_format
    return kind


def model_for_file(metadata: dict) -> str:
    """The MODELS name a converted weights file runs as, from its safetensors metadata:
    its own name when that is a known model with these stems, else the model of the
    family that reads its format whose stems match (a demucs file with 6 sources runs as
    htdemucs_6s). ValueError naming the stems when no model fits."""
    kind = file_format(metadata)
    for family in FAMILIES.values():
        if family.file_format == kind:
            stems, name = family.match_file(metadata)
            if name is not None:
                return name
            break
    else:
        stems = None
    what = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} model" if kind else "a model file"
    raise ValueError(f"{what} with stems {', '.join(stems or ()) or 'unknown'}: none of the page's models "
                     f"({', '.join(sorted(MODELS))}) has these stems")


def register_file(name: str, metadata: dict) -> str:
    """The model name a converted weights file runs as, registering it when needed (a
    fine-tuned or custom checkpoint, as Demucs' --repo allows): model_for_file's when a
    model has the file's stems; else `name` is added to the family that reads the
    file's format, with the file's own stems. ValueError naming the problem otherwise."""
    try:
        return model_for_file(metadata)
    except ValueError:
        pass
    kind = file_format(metadata)
    family = next((f for f in FAMILIES.values() if f.file_format and f.file_format == kind), None)
    if family is None:
        raise ValueError(f"{name}: not a converted Spleeter, Demucs or Open-Unmix file (format {kind!r}); "
                         "convert the checkpoint with `stemtone weights convert FILE --name NAME`")
    stems, _ = family.match_file(metadata)
    if not stems or len(set(stems)) != len(stems):
        raise ValueError(f"{name}: the file names no stems (or repeats one): {stems}")
    if name in MODELS and MODELS[name]["stems"] != list(stems):
        raise ValueError(f"{name} is a built-in model with stems {', '.join(MODELS[name]['stems'])}; this file "
                         f"has {', '.join(stems)}: convert it again under another name (--name)")
    info = {"stems": list(stems), "sample_rate": next(iter(family.models.values()))["sample_rate"]}
    family.models[name] = info
    MODELS[name] = dict(info, family=family.family, custom=True)   # its weights: only that file
    return name


def file_architecture(metadata: dict) -> dict:
    """The "architecture" JSON of a converted file's metadata ({} when absent or bad)."""
    try:
        arch = json.loads(metadata.get("architecture") or "{}")
    except ValueError:
        return {}
    return arch if isinstance(arch, dict) else {}


class Cancelled(Exception):
    """should_cancel() returned True: the separation stopped between two segments."""


def pick_stems(name, model_stems, stems=None) -> list:
    """stems (names, or None / empty = all) validated against a model's, in the model's
    order; ValueError naming the valid ones."""
    if not stems:
        return list(model_stems)
    unknown = [s for s in stems if s not in model_stems]
    if unknown:
        raise ValueError(f"{name} has no stem {', '.join(map(repr, unknown))}; "
                         f"its stems are {', '.join(model_stems)}")
    return [s for s in model_stems if s in stems]


def plan_outputs(name, model_stems, stems=None, two_stems=None) -> tuple:
    """What to compute and what to write: (stems the model computes, {output name:
    [model stems summed into it]}). two_stems=X is Demucs' --two-stems: X and "no_X",
    everything but X (the sum of the other stems: with vocals, the karaoke
    instrumental); every stem is computed for it. Otherwise each chosen stem is its own
    output (pick_stems). ValueError naming the valid stems."""
    if two_stems:
        if stems:
            raise ValueError("give either the stems to write or two_stems, not both")
        pick_stems(name, model_stems, [two_stems])
        rest = [s for s in model_stems if s != two_stems]
        return list(model_stems), {two_stems: [two_stems], f"no_{two_stems}": rest}
    chosen = pick_stems(name, model_stems, stems)
    return chosen, {s: [s] for s in chosen}


def everything_but(name, stems, mix, stem) -> dict:
    """The page's "everything but X" (Demucs' --two-stems in the browser): {X: its
    channels, "no_X": the mix minus X, channel by channel, rounded to float32}. The
    page subtracts rather than summing the other stems (plan_outputs, the CLI) so that
    the two always add up to the mix: Spleeter's stems hold nothing above 11 kHz and
    Demucs' leave a residual. stems: {stem: [channels]}; mix: the input's channels
    (sequences of floats, no numpy needed). ValueError naming the valid stems."""
    (stem,) = pick_stems(name, list(stems), [stem])
    part = stems[stem]
    if len(part) != len(mix) or any(len(a) != len(b) for a, b in zip(part, mix)):
        raise ValueError(f"{name}: the {stem} stem ({len(part)} channels of {len(part[0])} samples) "
                         f"does not match the mix ({len(mix)} channels of {len(mix[0])} samples)")
    rest = [array.array("f", [m - x for m, x in zip(mc, xc)]) for mc, xc in zip(mix, part)]
    return {stem: part, f"no_{stem}": rest}


def checked_block(block, channels: int, done: bool) -> list:
    """A stream's push() argument as a list of `channels` channel arrays of one length;
    RuntimeError after finish(), ValueError naming the problem otherwise."""
    if done:
        raise RuntimeError("demix: push() after finish()")
    block = list(block)
    if len(block) != channels:
        raise ValueError(f"demix: expected {channels} channel arrays, got {len(block)}")
    if len({len(ch) for ch in block}) > 1:
        raise ValueError(f"demix: channels differ in length ({', '.join(str(len(ch)) for ch in block)})")
    return block


def check_channels(channels: int) -> None:
    if channels not in (1, 2):
        raise ValueError(f"demix: audio must have 1 or 2 channels, got {channels}")


class Demixer:
    """A loaded separation model. `stems` names its outputs, in order.

    `await Demixer.load(dev, name)` returns the family's subclass for that model."""

    family = ""
    models: dict = {}
    stream_options: tuple = ()
    file_format = None            # the "format" metadata of the converted files it reads (None: none)
    segment = 1 << 19             # samples pushed at a time by separate()

    def __init__(self, dev, model, name, stems, sample_rate):
        self.dev = dev
        self.model = model
        self.name = name
        self.stems = list(stems)
        self.sample_rate = sample_rate

    @classmethod
    async def load(cls, dev, name="spleeter-2stems", weights=None, dtype="f32") -> "Demixer":
        """weights: None (natively: the model's file under weights/), a path, the
        safetensors file's bytes, or (Spleeter, Open-Unmix) a dict of tensors from
        pycore.weights.safetensors.load. dtype "f16" stores the convolution weights as
        half floats where the GPU has shader-f16 (arithmetic stays float32)."""
        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
        family = FAMILIES[MODELS[name]["family"]]
        if cls is not Demixer and cls is not family:
            raise ValueError(f"{name} is a {family.family} model, not {cls.family}")
        return await family.open(dev, name, weights, dtype)

    @classmethod
    async def open(cls, dev, name, weights, dtype) -> "Demixer":  # the family's
        raise NotImplementedError

    def open_stream(self, channels: int, **options):  # the family's: every stem
        raise NotImplementedError

    @classmethod
    def match_file(cls, metadata: dict) -> tuple:
        """(the file's stems, the model it runs as or None): its own name when that is
        one of this family's models with the same stems."""
        stems = (metadata.get("stems") or "").split(",")
        named = metadata.get("model")
        return stems, named if named in cls.models and stems == cls.models[named]["stems"] else None

    # ---- what the file layer asks (defaults: a streaming model that needs nothing)

    def stats(self):
        return None

    def host_bytes(self, frames: int, channels: int) -> int:
        return 0

    def progress_steps(self, length: int) -> int:
        return 0

    def release_plans(self):
        """Give back the GPU memory of plans the model keeps between tracks (none by default)."""

    # ---- shared

    def check_stems(self, stems) -> list:
        return pick_stems(self.name, self.stems, stems)

    def stream(self, channels: int, stems=None, **options):
        """A push/finish stream for audio of 1 (mono) or 2 channels. stems: the stems to
        return (default all). options: the family's `stream_options` only."""
        check_channels(channels)
        wanted = self.check_stems(stems)
        extra = [k for k, v in options.items() if k not in self.stream_options and v not in (None, 0)]
        if extra:
            raise ValueError(f"{self.name}: {', '.join(extra)} "
                             f"{'is' if len(extra) == 1 else 'are'} not an option of {self.family} models")
        options = {k: v for k, v in options.items() if k in self.stream_options}
        stream = self.open_stream(channels, wanted=wanted, **options)
        return stream if list(stream.stems) == wanted else Only(stream, wanted)

    async def separate(self, audio, progress=None, should_cancel=None, stems=None, **options) -> dict:
        """Separate a whole track: audio is a list of 1 or 2 channel arrays of equal
        length. Returns {stem: [channel arrays of the input's length and type]}. A family
        that needs a first pass (HTDemucs' normalization) gets it here."""
        audio = list(audio)
        n = len(audio[0]) if audio else 0
        stats = self.stats()
        if stats is not None and n:
            for i in range(0, n, 1 << 20):
                stats.add([ch[i:i + (1 << 20)] for ch in audio])
            options["stats"] = stats.value
        stream = self.stream(len(audio), stems, **options)
        steps = self.progress_steps(n)

        def report(fraction, message):  # as a fraction of the whole track
            if progress is not None:
                progress(min(1.0, stream.segments_done / steps) if steps else fraction, message)

        parts = {stem: [[] for _ in audio] for stem in self.check_stems(stems)}

        def collect(out):
            for stem, chans in out.items():
                for c, x in enumerate(chans):
                    if len(x):
                        parts[stem][c].append(x)

        for start in range(0, n, self.segment):
            collect(await stream.push([ch[start:start + self.segment] for ch in audio], report, should_cancel))
        if n == 0:
            await stream.push(audio)  # validates the channels and records their type
        collect(await stream.finish(report, should_cancel))
        kind = stream.numpy_kind or (n > 0 and is_numpy(audio[0]))
        return {stem: [concat(p, kind) for p in chans] for stem, chans in parts.items()}


class Only:
    """A stream's outputs restricted to some stems (models that compute all of them)."""

    def __init__(self, stream, stems):
        self.stream, self.stems = stream, list(stems)

    def __getattr__(self, name):
        return getattr(self.stream, name)

    async def push(self, block, progress=None, should_cancel=None) -> dict:
        out = await self.stream.push(block, progress, should_cancel)
        return {s: out[s] for s in self.stems}

    async def finish(self, progress=None, should_cancel=None) -> dict:
        out = await self.stream.finish(progress, should_cancel)
        return {s: out[s] for s in self.stems}
