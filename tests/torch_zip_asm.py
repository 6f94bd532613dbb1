"""Hand-assembled torch zip checkpoints: the pickle written opcode by opcode, so tests
can build files that torch.save never writes (hostile views, BUILD on classes, NEWOBJ).

    data = torch_zip(tensor_pickle(size=(4,), stride=(1,)), {"0": bytes(16)})

Only the opcodes the tests need: protocol 2, strings as BINUNICODE, ints as LONG1.
"""

import io
import struct
import zipfile

PROTO, STOP, MARK, TUPLE, REDUCE, BUILD, NONE = b"\x80\x02", b".", b"(", b"t", b"R", b"b", b"N"
EMPTY_DICT, SETITEM, BINPERSID, NEWOBJ, EMPTY_TUPLE = b"}", b"s", b"Q", b"\x81", b")"


def pint(n: int) -> bytes:
    """LONG1: any int, little-endian two's complement."""
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def pstr(s: str) -> bytes:
    raw = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(raw)) + raw


def pglobal(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def ptuple(*items: bytes) -> bytes:
    return MARK + b"".join(items) + TUPLE


def pdict(**items: bytes) -> bytes:
    return EMPTY_DICT + b"".join(pstr(k) + v + SETITEM for k, v in items.items())


def storage(key="0", kind="FloatStorage", numel=4) -> bytes:
    """A persistent reference to <top>/data/<key>."""
    return ptuple(pstr("storage"), pglobal("torch", kind), pstr(key), pstr("cpu"), pint(numel)) + BINPERSID


def tensor(size, stride, offset=0, key="0", kind="FloatStorage", numel=4) -> bytes:
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride) as pickle opcodes."""
    return (pglobal("torch._utils", "_rebuild_tensor_v2")
            + ptuple(storage(key, kind, numel), pint(offset), ptuple(*map(pint, size)), ptuple(*map(pint, stride)))
            + REDUCE)


def program(body: bytes) -> bytes:
    """A whole pickle: protocol header, body (one object), STOP."""
    return PROTO + body + STOP


def torch_zip(pickle_bytes: bytes, storages=None, top="archive") -> bytes:
    """A torch-style zip: top/data.pkl, top/data/<key> for each storage, top/version."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{top}/data.pkl", pickle_bytes)
        for key, raw in (storages or {}).items():
            zf.writestr(f"{top}/data/{key}", raw)
        zf.writestr(f"{top}/version", "3\n")
    return buf.getvalue()
