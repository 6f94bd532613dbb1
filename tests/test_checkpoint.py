"""pycore.weights.checkpoint against hostile files: each case is a finding of issue 14
(a file that did harm on the old readers) and must now be a one-line ValueError naming
the file, fast and without side effects. Files are assembled opcode by opcode
(tests/torch_zip_asm.py); real checkpoints are covered by test_convert_checkpoint.py."""

import fractions
import os
import struct
import sys
import zipfile
import io

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_zip_asm import (BUILD, EMPTY_TUPLE, NEWOBJ, NONE, REDUCE, pdict, pglobal, pint, program,  # noqa: E402
                           pstr, ptuple, tensor, torch_zip)

from pycore.weights import checkpoint  # noqa: E402

F32 = struct.pack("<4f", 1, 2, 3, 4)


def refused(data, match, name="evil.pth"):
    with pytest.raises(ValueError, match=match) as e:
        checkpoint.load_torch_zip(data, name)
    msg = str(e.value)
    assert msg.startswith(f"{name}: ") and "\n" not in msg
    return msg


def test_a_plain_tensor_and_its_transpose():
    got = checkpoint.load_torch_zip(torch_zip(program(pdict(a=tensor((2, 2), (2, 1)), b=tensor((2, 2), (1, 2)))),
                                              {"0": F32}), "ok.pth")
    assert got["a"].shape == (2, 2) and bytes(got["a"].data) == F32
    assert bytes(got["b"].data) == struct.pack("<4f", 1, 3, 2, 4)


def test_build_on_a_class_is_refused():
    # BUILD with (None, {attr: value}) did setattr(fractions.Fraction, ...) for the whole process
    body = pglobal("fractions", "Fraction") + ptuple(NONE, pdict(_stemtone_evil=pint(1))) + BUILD
    refused(torch_zip(program(body)), "refusing to set the state of a function")
    assert not hasattr(fractions.Fraction, "_stemtone_evil")


def test_build_on_an_allowed_function_result_is_refused():
    body = pglobal("fractions", "Fraction") + ptuple(pint(3), pint(2)) + REDUCE + pdict(x=pint(1)) + BUILD
    refused(torch_zip(program(body)), "refusing to set the state of a Fraction")


@pytest.mark.parametrize("cls", [("numpy.core.multiarray", "_reconstruct"), ("collections", "OrderedDict")])
def test_newobj_is_refused(cls):
    # NEWOBJ made a stand-in without running its __init__ (and its bounds check)
    refused(torch_zip(program(pglobal(*cls) + EMPTY_TUPLE + NEWOBJ)), "refusing a pickle opcode")


def test_a_declared_length_is_not_allocated():
    # found by atheris: BYTEARRAY8 with a length of 2^62 made the unpickler allocate it
    refused(torch_zip(b"\x80\x05\x96" + struct.pack("<Q", 1 << 62) + b"."), "allocates before reading")


def test_zero_stride_expansion_is_refused_before_allocating():
    # a 349-byte file made the old reader allocate 4 GiB: 2^30 floats viewed from one;
    # refused from the numbers alone, before any allocation
    data = torch_zip(program(tensor((1 << 30,), (0,), numel=1)), {"0": F32[:4]})
    refused(data, "exceeds its storage")
    refused(torch_zip(program(tensor((4, 4), (1, 0))), {"0": F32}), "exceeds its storage")


@pytest.mark.parametrize("size, stride, offset, match", [
    ((-2, 3), (3, 1), 0, "negative"),
    ((2,), (-1,), 1, "negative"),
    ((2,), (1,), -1, "negative"),
    ((3,), (1,), 2, "exceeds its storage"),
    ((2, 2), (1,), 0, "differ in length"),
    (tuple([1] * 9), tuple([1] * 9), 0, "at most 8"),
])
def test_bad_views(size, stride, offset, match):
    refused(torch_zip(program(tensor(size, stride, offset)), {"0": F32}), match)


def test_storage_shorter_than_it_claims():
    refused(torch_zip(program(tensor((4,), (1,), numel=8)), {"0": F32}), "has 16 bytes, needs 32")
    refused(torch_zip(program(tensor((4,), (1,))), {}), "has no archive/data/0")


def test_storage_keys_cannot_name_other_entries():
    refused(torch_zip(program(tensor((4,), (1,), key="../data.pkl")), {"0": F32}), "unsupported persistent id")


@pytest.mark.parametrize("args, match", [
    (pstr("1e30000000"), "Fraction"),             # took 41 s of CPU, then OverflowError
    (pstr("1/0"), "Fraction"),
    (pint(10 ** 50), "Fraction"),
    (pint(1) + pint(0), "Fraction"),
])
def test_fractions_are_bounded(args, match):
    refused(torch_zip(program(pglobal("fractions", "Fraction") + ptuple(args) + REDUCE)), match)


def test_fraction_as_demucs_records_it():
    got = checkpoint.load_torch_zip(torch_zip(program(pdict(
        a=pglobal("fractions", "Fraction") + ptuple(pint(39), pint(5)) + REDUCE,
        b=pglobal("fractions", "Fraction") + ptuple(pstr("39/5")) + REDUCE))), "ok.th")
    assert got["a"] == got["b"] == fractions.Fraction(39, 5)


@pytest.mark.parametrize("order", ["", "<>", "x"])
def test_numpy_byte_order_is_one_character_of_four(order):
    # the old test `order in "<>|="` let "" and "<>" through
    dtype = pglobal("numpy", "dtype") + ptuple(pstr("f4"), pint(0), pint(1)) + REDUCE
    body = dtype + ptuple(pint(3), pstr(order), NONE, NONE, NONE, pint(-1), pint(-1), pint(0)) + BUILD
    refused(torch_zip(program(body)), "byte order")


def test_numpy_array_shape_must_match_its_bytes():
    dtype = (pglobal("numpy", "dtype") + ptuple(pstr("f4"), pint(0), pint(1)) + REDUCE
             + ptuple(pint(3), pstr("<"), NONE, NONE, NONE, pint(-1), pint(-1), pint(0)) + BUILD)
    array = (pglobal("numpy.core.multiarray", "_reconstruct")
             + ptuple(pglobal("numpy", "ndarray"), ptuple(pint(0)), b"C\x01b") + REDUCE)
    raw = b"B" + struct.pack("<I", 16) + F32
    body = array + ptuple(pint(1), ptuple(pint(1 << 40)), dtype, b"\x89", raw) + BUILD
    refused(torch_zip(program(body)), "has 16 bytes, needs")
    body = array + ptuple(pint(1), ptuple(pint(2), pint(2)), dtype, b"\x88", raw) + BUILD  # Fortran order
    got = checkpoint.load_torch_zip(torch_zip(program(body)), "ok.ckpt")
    assert got.shape == (2, 2) and bytes(got.data) == struct.pack("<4f", 1, 3, 2, 4)


def test_entries_are_capped_before_reading(monkeypatch):
    monkeypatch.setattr(checkpoint, "MAX_ENTRY_BYTES", 8)
    refused(torch_zip(program(tensor((4,), (1,))), {"0": F32}), "over the 8 bytes")
    monkeypatch.setattr(checkpoint, "MAX_PICKLE_BYTES", 8)
    refused(torch_zip(program(tensor((4,), (1,))), {"0": F32}), "data.pkl is .* bytes, over the 8")
    monkeypatch.setattr(checkpoint, "MAX_ENTRIES", 1)
    refused(torch_zip(program(NONE)), "a zip of 2 files; a checkpoint has at most 1")


def test_a_compressed_entry_within_the_caps_is_read():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", program(tensor((1 << 20,), (1,), numel=1 << 20)))
        zf.writestr("archive/data/0", bytes(1 << 22))  # 4 MB of zeros, a few kB compressed
    got = checkpoint.load_torch_zip(buf.getvalue(), "zeros.pth")
    assert got.shape == (1 << 20,) and bytes(got.data) == bytes(1 << 22)


def test_deep_nesting_is_refused():
    # a list in a list ... 100 deep: EMPTY_LIST, then (MARK EMPTY_LIST) x 100, APPENDS x 100
    refused(torch_zip(program(b"]" + b"(]" * 100 + b"e" * 100)), "nested more than 64")


def test_every_escape_is_a_value_error():
    # TypeError and OverflowError used to escape the page's converter
    cases = [
        program(pglobal("torch._utils", "_rebuild_tensor_v2") + ptuple(pint(1)) + REDUCE),  # TypeError
        program(tensor((4,), (1,), numel=1 << 70)),                                           # OverflowError
        program(pglobal("collections", "OrderedDict") + ptuple(pint(5)) + REDUCE),          # TypeError
        program(b"\xff"),                                                                    # unknown opcode
        b"\x80\x02",                                                                          # truncated
    ]
    for body in cases:
        refused(torch_zip(body, {"0": F32}), "^evil.pth: ")


def test_a_large_strided_view_is_gathered_in_c_order():
    # the page gathered element by element (2^24 elements took 14.8 s); now one strided
    # slice per row: a 4096 x 4096 transpose checked against its own definition
    n = 1 << 12
    raw = struct.pack(f"<{n * n}I", *range(n * n))
    got = checkpoint.load_torch_zip(torch_zip(program(tensor((n, n), (1, n), numel=n * n)), {"0": raw}), "t.pth")
    out = memoryview(got.data).cast("I")
    assert got.shape == (n, n)
    for i, j in [(0, 1), (1, 0), (n - 1, 2), (17, n - 1), (n - 1, n - 1)]:
        assert out[i * n + j] == j * n + i
