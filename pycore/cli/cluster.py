"""`stemtone separate|tone --cluster ADDRESS|local[:N] IN...`: one Ray task per track.

    stemtone separate --cluster local:2 songs/*.flac -o /shared/separated
    stemtone separate --cluster ray://head:10001 /shared/music/*.mp3 -o /shared/separated

Each input becomes a task (`run_track`) on a worker that holds one GPU device (Ray's
`num_gpus=1` where the cluster has GPUs; one CPU slot on lavapipe otherwise). A worker
process opens its device and loads its model once, then runs track after track.
Outputs go to the output folder, which must be storage every worker sees (the same
path on every node: NFS, a shared volume); the driver only reads what exists there.

Resuming: before submitting anything the driver skips the inputs whose outputs all
exist already (and says how many), so an interrupted run started again does only what
is left. Stems are written atomically (pycore.audio.files.StemWriter), so a worker
killed mid-track leaves hidden `.part` files (and the stems it had already committed),
which the retry removes (clear_interrupted_attempt).

Failures: a task whose track fails (bad file, GPU error) or whose worker dies is
retried once (Ray's max_retries=1), then reported by the input's name with the last
error; the other tracks go on. One tqdm bar counts the finished tracks.

`local` starts a Ray instance on this machine with one worker per CPU core (`local:N`:
N workers); any other ADDRESS is passed to `ray.init` (`ray://host:10001` for Ray
Client, `auto` or `host:6379` on a node of the cluster). Needs `pip install
'stemtone[cluster]'` on the driver and on every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import sys
from pathlib import Path

from tqdm import tqdm

RETRIES = 1


class TrackFailed(Exception):
    """A track that failed inside its task (the message names the input)."""


def parse_cluster(value: str) -> tuple:
    """"local" -> (None, None): a local instance, one worker per core; "local:N" ->
    (None, N); anything else -> (address, None). ValueError for "local:0" and the like."""
    if value == "local" or value.startswith("local:"):
        n = value[len("local:"):] if ":" in value else None
        if n is not None and (not n.isdigit() or int(n) < 1):
            raise ValueError(f"--cluster {value!r}: use local, local:N with N >= 1 workers, or a Ray address")
        return None, int(n) if n else None
    if not value:
        raise ValueError("--cluster needs an address: local, local:N, ray://HOST:10001 or auto")
    return value, None


# --------------------------------------------------------------------------- jobs


class SeparateJob:
    """What a task does with one input for `stemtone separate` (picklable: names and
    options only; the worker loads the model). weights: a safetensors file to load
    instead of the model's installed one (a path every worker sees)."""

    kind = "separate"

    def __init__(self, model="spleeter-2stems", outdir="separated", format="wav", bits=16, overwrite=False,
                 stems=None, two_stems=None, shifts=0, seed=None, weights=None):
        from ..demix.base import MODELS, plan_outputs

        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; available: {', '.join(MODELS)}")
        plan_outputs(model, MODELS[model]["stems"], stems, two_stems)  # bad --stems before any task
        self.model, self.outdir, self.format, self.bits, self.overwrite = model, str(outdir), format, bits, overwrite
        self.stems, self.two_stems, self.shifts, self.seed, self.weights = stems, two_stems, shifts, seed, weights

    def targets(self, path) -> list:
        from ..demix.base import MODELS
        from ..demix.files import stem_targets

        return list(stem_targets(self.model, MODELS[self.model]["stems"], path, self.outdir, self.format,
                                 self.stems, self.two_stems)[2].values())

    async def load(self, dev):
        from ..demix import Demixer

        return await Demixer.load(dev, self.model, weights=self.weights)

    async def run(self, model, path):
        from ..demix.files import separate_file

        return await separate_file(model, path, self.outdir, self.format, self.bits, self.overwrite,
                                   progress=False, stems=self.stems, shifts=self.shifts, seed=self.seed,
                                   two_stems=self.two_stems)


class ToneJob:
    """What a task does with one input for `stemtone tone`: OUTDIR/<input name>.<instrument>.wav."""

    kind = "tone"

    def __init__(self, instrument="violin", outdir=".", octave=0, loudness_db=0.0, rate=None, bits=16,
                 overwrite=False):
        from ..tone import resolve

        self.model_name = resolve(instrument)["name"]
        self.instrument = resolve(instrument)["instrument"]
        self.outdir, self.octave, self.loudness_db = str(outdir), octave, loudness_db
        self.rate, self.bits, self.overwrite = rate, bits, overwrite

    def targets(self, path) -> list:
        from ..tone.files import default_output

        return [Path(self.outdir) / default_output(path, self.instrument)]

    async def load(self, dev):
        from ..tone import load_tone_model

        return load_tone_model(dev, self.model_name)

    async def run(self, model, path):
        from ..tone.files import tone_file

        os.makedirs(self.outdir, exist_ok=True)
        return await tone_file(model, path, self.targets(path)[0], self.octave, self.loudness_db, self.rate,
                               self.bits, self.overwrite, progress=False)


# --------------------------------------------------------------------------- the task


_WORKER = {}  # per worker process: the device and the loaded models, kept between tasks


def remove_partial_files(target) -> int:
    """Remove the hidden `.part` files an earlier attempt at `target` left (a worker
    killed mid-write); returns how many."""
    target = Path(target)
    parts = glob.glob(str(target.parent / f".{glob.escape(target.name)}.*.part"))
    for p in parts:
        os.remove(p)
    return len(parts)


def clear_interrupted_attempt(targets) -> int:
    """Before a (re)try of one track: remove the hidden `.part` files an earlier attempt
    left and, when there were any, the outputs that attempt had already moved into place
    (its stems are committed one after another, so a worker killed between two commits
    leaves some stems final and the others partial). That attempt started only after
    checking that none of the track's outputs existed, so whatever exists now is its own,
    never the user's. Returns how many partial files were removed."""
    removed = sum(remove_partial_files(t) for t in targets)
    if removed:
        for t in targets:
            with contextlib.suppress(FileNotFoundError):
                os.remove(t)
    return removed


def run_track(job, path):
    """The task body: one input, on this worker's device; returns the result, raises
    TrackFailed (so that Ray retries it once) when the track failed."""
    from ..gpu.native import get_device

    if "dev" not in _WORKER:
        _WORKER["dev"] = get_device()
    key = (job.kind, getattr(job, "model", None) or job.model_name, getattr(job, "weights", None))
    if key not in _WORKER:
        _WORKER[key] = asyncio.run(job.load(_WORKER["dev"]))
    removed = clear_interrupted_attempt(job.targets(path))
    result = asyncio.run(job.run(_WORKER[key], path))
    if not result.ok:
        raise TrackFailed(result.error)
    if removed:
        result.notes.append(f"redone after an interrupted attempt ({removed} partial file(s) removed)")
    return result


# --------------------------------------------------------------------------- the driver


def _import_ray():
    try:
        import ray
    except ImportError:
        raise SystemExit("stemtone: error: --cluster needs Ray: pip install 'stemtone[cluster]' "
                         "(on this machine and on every node of the cluster)") from None
    return ray


def _failure(ray, path, e) -> str:
    if isinstance(e, ray.exceptions.RayTaskError) and isinstance(e.cause, TrackFailed):
        return str(e.cause)
    if isinstance(e, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)):
        return f"{path}: its worker was lost {RETRIES + 1} times ({type(e).__name__})"
    return f"{path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def run_on_cluster(job, inputs, cluster: str, progress=True, on_result=None, say=None) -> list:
    """Run job on every input as Ray tasks; returns [(input, result or None, error or
    None)] in input order, skipped inputs as (input, None, None). on_result(input,
    result, error) as each finishes; say(message) for the run's remarks (default stderr)."""
    say = say or (lambda m: print(f"stemtone: {m}", file=sys.stderr, flush=True))
    address, workers = parse_cluster(cluster)
    inputs = [str(p) for p in inputs]
    names = {}
    for p in inputs:  # same output for two inputs: refuse before any work
        for t in job.targets(p):
            if str(t) in names:
                raise ValueError(f"{p} and {names[str(t)]} would both write {t} (rename one)")
            names[str(t)] = p
    done = [p for p in inputs if not job.overwrite and all(t.exists() for t in job.targets(p))]
    todo = [p for p in inputs if p not in done]
    if done:
        say(f"skipping {len(done)} of {len(inputs)} inputs whose outputs already exist in {job.outdir} "
            f"(resuming; --overwrite redoes them)")
    outcome = {p: (None, None) for p in done}
    if todo:
        ray = _import_ray()
        if address is None:
            ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False, configure_logging=False,
                     log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
        try:
            gpus = ray.cluster_resources().get("GPU", 0)
            task = ray.remote(run_track).options(max_retries=RETRIES, retry_exceptions=[TrackFailed],
                                                 **({"num_gpus": 1} if gpus else {"num_cpus": 1}))
            say(f"{len(todo)} tracks on {'a local Ray instance' if address is None else address}: "
                f"{int(gpus)} GPUs, {int(ray.cluster_resources().get('CPU', 0))} CPUs")
            refs = {task.remote(job, p): p for p in todo}
            with tqdm(total=len(todo), unit="track", desc=job.kind, disable=not progress, file=sys.stderr) as bar:
                pending = list(refs)
                while pending:
                    ready, pending = ray.wait(pending, num_returns=1)
                    p = refs[ready[0]]
                    try:
                        result, error = ray.get(ready[0]), None
                    except Exception as e:  # the task failed twice: reported by name
                        result, error = None, _failure(ray, p, e)
                    outcome[p] = (result, error)
                    bar.update(1)
                    if on_result is not None:
                        on_result(p, result, error)
        finally:
            ray.shutdown()
    return [(p, *outcome[p]) for p in inputs]
