"""Files that would exhaust memory if read naively, crafted byte by byte at run time (each in well under a second).

Each function writes one file into `folder` and returns its path. None of them holds more than a few
megabytes; read without bounds, each would grow a reader past several gigabytes.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import torch

MAGIC = 0x1950A86A20F9469CFC6C  # torch's legacy format: these three pickles come first
LEGACY_VERSION = 1001
GiB = 2**30


def _legacy_head() -> bytes:
    info = {"protocol_version": LEGACY_VERSION, "little_endian": sys.byteorder == "little",
            "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return b"".join(pickle.dumps(x, protocol=2) for x in (MAGIC, LEGACY_VERSION, info))


def _zip(path: Path, members: dict[str, bytes], deflated: bool = False) -> Path:
    method = zipfile.ZIP_DEFLATED if deflated else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _container(folder: Path, name: str, pickled: bytes, fmt: str) -> Path:
    """`pickled` as a torch file: a zip's data.pkl (stored or deflated), or a legacy file's object pickle."""
    path = folder / f"{name}_{fmt}.pth"
    if fmt == "legacy":
        path.write_bytes(_legacy_head() + pickled + pickle.dumps([], protocol=2))
        return path
    return _zip(path, {"archive/data.pkl": pickled, "archive/byteorder": b"little", "archive/version": b"3\n"},
                deflated=fmt == "deflated")


def memoize(folder: Path, fmt: str, entries: int = 20_000_000) -> Path:
    """A pickle that memoizes one string `entries` times (one byte each): tens of millions of memo entries."""
    pickled = b"\x80\x04" + b"\x8c\x01x" + b"\x94" * entries + b"."
    return _container(folder, "memoize", pickled, fmt)


def bytearray8(folder: Path, fmt: str, declared: int) -> Path:
    """A BYTEARRAY8 that declares `declared` bytes and holds a few."""
    pickled = b"\x80\x05\x96" + struct.pack("<Q", declared) + b"\0" * 64 + b"."
    return _container(folder, f"bytearray8_{declared >> 30}g", pickled, fmt)


class _Storage:
    def __init__(self, key: str, numel: int) -> None:
        self.key, self.numel = key, numel


class _Tensor:
    def __init__(self, storage: _Storage) -> None:
        self.storage = storage

    def __reduce__(self):
        n = self.storage.numel
        return (torch._utils._rebuild_tensor_v2, (self.storage, 0, (n,), (1,), False, collections.OrderedDict()))


def _storage_pickle(storages: list[_Storage], legacy: bool) -> bytes:
    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel, *((None,) if legacy else ()))
            return None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({f"w{i}": _Tensor(s) for i, s in enumerate(storages)})
    return buffer.getvalue()


def storages(folder: Path, fmt: str, declared: int = 3 * GiB, sparse: bool = True) -> Path:
    """Float storages declaring `declared` bytes in all, holding none of them. In the legacy format the file is
    also made sparse: its length claims the gigabytes, its disk blocks hold a few kilobytes."""
    parts = [_Storage(str(i), declared // 4 // 3) for i in range(3)]
    path = folder / f"storages_{fmt}.pth"
    if fmt == "legacy":
        path.write_bytes(_legacy_head() + _storage_pickle(parts, True) + pickle.dumps([p.key for p in parts],
                                                                                     protocol=2))
        if sparse:
            with path.open("r+b") as f:
                f.truncate(declared + path.stat().st_size)
        return path
    return _zip(path, {"archive/data.pkl": _storage_pickle(parts, False), "archive/byteorder": b"little",
                       "archive/version": b"3\n", **{f"archive/data/{p.key}": b"\0" * 16 for p in parts}},
                deflated=fmt == "deflated")


def _local(name: bytes, data: bytes) -> bytes:
    return struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, zlib.crc32(data), len(data), len(data),
                       len(name), 0) + name + data


def _central(name: bytes, data: bytes, offset: int) -> bytes:
    return struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0, zlib.crc32(data), len(data), len(data),
                       len(name), 0, 0, 0, 0, 0, offset) + name


def _end(entries: int, cd_size: int, cd_offset: int) -> bytes:
    """A zip64 end record and its locator, then the classic end record pointing at them."""
    zip64 = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, entries, entries, cd_size, cd_offset)
    locator = struct.pack("<IIQI", 0x07064B50, 0, cd_offset + cd_size, 1)
    classic = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return zip64 + locator + classic


def many_members(folder: Path, members: int = 150_000) -> Path:
    """A stored zip of `members` empty members (a torch file has a few per tensor), written byte by byte."""
    names = [b"archive/version"] + [b"a/%x" % i for i in range(members - 1)]
    locals_, centrals, offset = [], [], 0
    for name in names:
        data = b"3\n" if name == b"archive/version" else b""
        record = _local(name, data)
        locals_.append(record)
        centrals.append(_central(name, data, offset))
        offset += len(record)
    cd = b"".join(centrals)
    path = folder / "many_members.pth"
    path.write_bytes(b"".join(locals_) + cd + _end(len(names), len(cd), offset))
    return path


def overlapping(folder: Path, copies: int = 2000, size: int = 2**20) -> Path:
    """A stored zip whose `copies` central entries all point at one 1 MiB member: 2 GiB of members in 1 MiB."""
    data = b"\0" * size
    first = _local(b"archive/data/0", data)
    pickled = _storage_pickle([_Storage(str(i), size // 4) for i in range(copies)], False)
    pkl = _local(b"archive/data.pkl", pickled)
    version = _local(b"archive/version", b"3\n")
    centrals = [_central(b"archive/data.pkl", pickled, 0), _central(b"archive/version", b"3\n", len(pkl))]
    centrals += [_central(b"archive/data/%d" % i, data, len(pkl) + len(version)) for i in range(copies)]
    cd = b"".join(centrals)
    body = pkl + version + first
    path = folder / "overlapping.pth"
    path.write_bytes(body + cd + _end(len(centrals), len(cd), len(body)))
    return path


def _deep_list(depth: int) -> bytes:
    """Opcodes of a list nested `depth` deep: [[[...]]]."""
    return b"]" * depth + b"a" * (depth - 1)


def nested(folder: Path, field: str, depth: int = 100_000) -> Path:
    """A training checkpoint of LeNet whose `field` (loss, epoch, lr, param_groups or state) is a list nested
    `depth` deep: torch.save cannot write one (pickling recurses), so a marker string is swapped for it."""
    from .files import lenet_state

    marker = f"NESTED_{field.upper()}"
    groups = [{"lr": marker if field == "lr" else 0.1, "params": [0]}]
    optimizer = {"state": marker if field == "state" else {},
                 "param_groups": marker if field == "param_groups" else groups}
    data = {"epoch": marker if field == "epoch" else 1, "model_state_dict": lenet_state(),
            "loss": marker if field == "loss" else 0.5, "optimizer_state_dict": optimizer}
    saved = io.BytesIO()
    torch.save(data, saved, pickle_protocol=2)
    with zipfile.ZipFile(saved) as z:
        members = {info.filename: z.read(info) for info in z.infolist()}
    name = next(n for n in members if n.endswith("data.pkl"))
    encoded = b"X" + struct.pack("<I", len(marker)) + marker.encode()
    assert members[name].count(encoded) == 1
    members[name] = members[name].replace(encoded, _deep_list(depth))
    return _zip(folder / f"nested_{field}.pth", members)
