"""Fuzzing every reader of untrusted bytes: safetensors, the torch zip / pickle reader
(and the converter behind it), WAV, the manifest and the models list the page reads.

Each reader gets property-based inputs (hypothesis) of two kinds: mutations of a valid
file generated here (bit flips, overwritten integers such as 0, -1, 2^31 and 2^63 at
any offset, insertions, deletions, truncation, splices) and structure-aware documents
(JSON headers and manifests built from random values). The property: every outcome is
a result or a ValueError (never another exception, a hang or a crash), within a memory
cap (Python allocations at most MEMORY_CAP_BYTES per input, traced) and hypothesis'
per-input deadline (HANG_CAP_S, against hangs: not a speed test).

`make test` runs FUZZ_EXAMPLES inputs per reader (default 200); the benchmark mode is

    STEMTONE_FUZZ_EXAMPLES=10000 python -m pytest -q -s tests/test_fuzz.py

which prints the outcome counts per reader ("fuzz <reader>: N inputs, R results, V
ValueErrors"). tests/fuzz_atheris.py runs the same targets under atheris (coverage-
guided) where it is installed.
"""

import datetime
import io
import json
import os
import struct
import sys
import tracemalloc
import zipfile
from collections import Counter

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_zip_asm import pdict, program, tensor, torch_zip  # noqa: E402

from pycore.audio.wav import decode_wav, encode_wav  # noqa: E402
from pycore.weights import checkpoint, safetensors  # noqa: E402
from pycore.weights.manifest import check_models  # noqa: E402

FUZZ_EXAMPLES = int(os.environ.get("STEMTONE_FUZZ_EXAMPLES", "200"))
HANG_CAP_S = 5.0
MEMORY_CAP_BYTES = 64 << 20
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=datetime.timedelta(seconds=HANG_CAP_S), derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], database=None)
OUTCOMES = Counter()

INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1,
               2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1]


# ---------------------------------------------------------------- seeds (generated)

def seed_safetensors() -> bytes:
    return checkpoint.dumps({"a": checkpoint.RawTensor("FloatStorage", (2, 3), struct.pack("<6f", *range(6))),
                             "b": checkpoint.RawTensor("HalfStorage", (4,), bytes(8))}, {"model": "seed"})


def seed_torch_zip() -> bytes:
    return torch_zip(program(pdict(**{"fc1.weight": tensor((2, 2), (2, 1)), "fc3.weight": tensor((2, 2), (1, 2)),
                                      "input_mean": tensor((2,), (1,)), "output_mean": tensor((2,), (1,), 2)})),
                     {"0": struct.pack("<4f", 1, 2, 3, 4)})


def seed_wav() -> bytes:
    return encode_wav([[0.1 * (i % 7) for i in range(64)], [-0.2] * 64], 16000, 16)


def seed_manifest() -> bytes:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "weights", "manifest.json"), "rb") as f:
        return f.read()


# ---------------------------------------------------------------- mutations

@st.composite
def mutated(draw, seed: bytes):
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "int", "insert", "delete", "truncate", "splice"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "int":
            width, value = draw(st.sampled_from([(1, "<B"), (2, "<H"), (4, "<I"), (8, "<Q")])), draw(
                st.sampled_from(INTERESTING))
            raw = struct.pack(width[1], value & ((1 << (8 * width[0])) - 1))
            data[at:at + len(raw)] = raw
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "splice":
            n = draw(st.integers(1, 32))
            src = draw(st.integers(0, max(len(data) - n, 0)))
            data[at:at] = data[src:src + n]
    return bytes(data)


def inputs(seed: bytes):
    return st.one_of(mutated(seed), st.binary(max_size=512))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20)


# ---------------------------------------------------------------- the property

def outcome(reader: str, fn, data):
    """fn(data) must return or raise ValueError, allocating at most MEMORY_CAP_BYTES."""
    tracemalloc.start()
    try:
        fn(data)
        OUTCOMES[reader, "result"] += 1
    except ValueError:
        OUTCOMES[reader, "ValueError"] += 1
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= MEMORY_CAP_BYTES, f"{reader}: {peak} bytes allocated for a {len(data)}-byte input"


def read_safetensors(data):
    for e in safetensors.load(data).values():
        bytes(e.data[:16])


def read_checkpoint(data):
    checkpoint.load_torch_zip(data, "fuzz.pth")


def convert_checkpoint(data):
    checkpoint.convert_files([("vocals.pth", data)], {})


def read_manifest(data):
    check_models(json.loads(data), "fuzz.json")


@FUZZ
@given(inputs(seed_safetensors()))
def test_fuzz_safetensors(data):
    outcome("safetensors", read_safetensors, data)


@FUZZ
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=4), st.binary(max_size=64))
def test_fuzz_safetensors_headers(header, body):
    text = json.dumps(header).encode()
    outcome("safetensors header", read_safetensors, struct.pack("<Q", len(text)) + text + body)


@FUZZ
@given(inputs(seed_torch_zip()))
def test_fuzz_torch_zip(data):
    outcome("torch zip", read_checkpoint, data)


@FUZZ
@given(mutated(program(pdict(a=tensor((2, 2), (2, 1)), b=tensor((4,), (1,))))))
def test_fuzz_pickle(pkl):
    # mutate the pickle only, inside a well-formed zip: reaches the unpickler every time
    outcome("pickle", read_checkpoint, torch_zip(pkl, {"0": bytes(16)}))


@FUZZ
@given(inputs(seed_torch_zip()))
def test_fuzz_checkpoint_conversion(data):
    outcome("checkpoint conversion", convert_checkpoint, data)


@FUZZ
@given(inputs(seed_wav()))
def test_fuzz_wav(data):
    outcome("wav", decode_wav, data)


@FUZZ
@given(inputs(seed_manifest()))
def test_fuzz_manifest_bytes(data):
    outcome("manifest", read_manifest, data)


@FUZZ
@given(st.fixed_dictionaries({"models": st.lists(st.dictionaries(
    st.sampled_from(["name", "files", "fetch", "stems", "installed", "path", "file", "url", "size", "sha256"]),
    json_values, max_size=5), max_size=3)}))
def test_fuzz_models_list(doc):
    # the server's /weights/models.json (what the page reads) and the manifest share the shape
    outcome("models list", lambda d: check_models(json.loads(d), "models.json"), json.dumps(doc).encode())


def test_zz_report_outcomes():
    """Print the outcome counts (runs last in this file: pytest keeps file order)."""
    readers = sorted({r for r, _ in OUTCOMES})
    for r in readers:
        n = OUTCOMES[r, "result"] + OUTCOMES[r, "ValueError"]
        print(f"fuzz {r}: {n} inputs, {OUTCOMES[r, 'result']} results, {OUTCOMES[r, 'ValueError']} ValueErrors")
    assert readers or FUZZ_EXAMPLES == 0
