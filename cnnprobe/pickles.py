"""Reading pickles opcode by opcode, never executing them.

Two uses: naming what a pickle would import (`globals_in`), and rewriting a
protocol 3/4/5 pickle into the protocol-2 opcodes torch's weights-only
unpickler knows (`as_protocol_2`): `torch.save(..., pickle_protocol=4)` makes
ordinary files that `torch.load(weights_only=True)` refuses only for their
framing, short strings and memo opcodes. Reading is bounded: a pickle is
streamed, and one that runs past `budget` bytes is not read further.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
from collections.abc import Iterator
from typing import IO, Any

STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "SHORT_BINSTRING", "BINSTRING", "STRING"}
PICKLE_BUDGET = 256 * 2**20  # a pickle (not tensor data) larger than this is not a checkpoint's


class TooLarge(Exception):
    """A pickle that runs past the reading budget."""


class _Bounded(io.RawIOBase):
    """A reader that fails past `budget` bytes, so a crafted stream cannot make us read without end."""

    def __init__(self, stream: IO[bytes], budget: int) -> None:
        self.stream, self.left, self.used = stream, budget, 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:  # pickletools asks where each opcode lies
        return self.used

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > self.left:
            size = self.left + 1
        data = self.stream.read(size)
        self.left -= len(data)
        self.used += len(data)
        if self.left < 0:
            raise TooLarge()
        return data

    def readline(self, size: int | None = -1) -> bytes:  # protocol 0 reads lines
        data = self.stream.readline(self.left + 1)
        self.left -= len(data)
        self.used += len(data)
        if self.left < 0:
            raise TooLarge()
        return data


def ops(stream: IO[bytes], budget: int = PICKLE_BUDGET) -> Iterator[tuple[Any, Any, int | None]]:
    """The opcodes of one pickle, up to and including STOP."""
    return pickletools.genops(_Bounded(stream, budget))


def globals_in(stream: IO[bytes], budget: int = PICKLE_BUDGET) -> list[str]:
    """`module.name` of every global one pickle would import (GLOBAL, INST and protocol 4's STACK_GLOBAL,
    whose strings may come from the memo)."""
    found: list[str] = []
    memo: dict[int, Any] = {}
    pushed: list[Any] = []  # what the last opcodes pushed, for STACK_GLOBAL
    for op, arg, _ in ops(stream, budget):
        name = op.name
        if name in STRING_OPS:
            pushed.append(str(arg))
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            pushed.append(memo.get(int(arg)))
        elif name in ("MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"):
            memo[len(memo) if name == "MEMOIZE" else int(arg)] = pushed[-1] if pushed else None
            continue
        elif name in ("GLOBAL", "INST"):
            found.append(str(arg).replace(" ", "."))
            pushed.clear()
        elif name == "STACK_GLOBAL":
            module, attr = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
            found.append(f"{module}.{attr}" if isinstance(module, str) and isinstance(attr, str)
                         else "(a global named at load time)")
            pushed.clear()
        elif name not in ("FRAME", "PROTO"):
            pushed.clear()
        if name == "STOP":
            break
    return found


def protocol(data: bytes) -> int:
    """A pickle's protocol: its PROTO opcode's argument, 0 to 1 without one."""
    return data[1] if len(data) > 1 and data[0] == pickle.PROTO[0] else 0


def as_protocol_2(stream: IO[bytes], budget: int = PICKLE_BUDGET) -> bytes:
    """One pickle rewritten with the opcodes of protocol 2 that torch's weights-only unpickler reads: no
    FRAME, BINUNICODE for short strings, explicit memo indices, GLOBAL for STACK_GLOBAL (whose two strings
    are taken back off the output, and spelled out again where the memo is read for them later). The
    objects it builds are the same; nothing is executed."""
    out: list[tuple[bytes, Any, int | None]] = []  # (bytes, the string it pushes or None, its memo slot)
    memo: dict[int, Any] = {}
    unwritten: set[int] = set()  # memo slots whose string went into a GLOBAL instead

    def string(value: str, slot: int | None = None) -> bytes:
        raw = value.encode("utf-8", "surrogatepass")
        return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw + (b"" if slot is None else _put(slot))

    for op, arg, _ in ops(stream, budget):
        name = op.name
        if name == "PROTO":
            out.append((pickle.PROTO + bytes([2]), None, None))
        elif name == "FRAME":
            continue
        elif name in ("SHORT_BINUNICODE", "BINUNICODE8", "BINUNICODE"):
            out.append((string(str(arg)), str(arg), None))
        elif name in ("MEMOIZE", "BINPUT", "LONG_BINPUT"):
            slot = len(memo) if name == "MEMOIZE" else int(arg)
            data, value, _slot = out[-1] if out else (b"", None, None)
            memo[slot] = value
            unwritten.discard(slot)
            if value is not None and _slot is None:  # a string and its slot travel together
                out[-1] = (data + _put(slot), value, slot)
            else:
                out.append((_put(slot), None, None))
        elif name in ("BINGET", "LONG_BINGET"):
            slot = int(arg)
            value = memo.get(slot)
            if slot in unwritten:  # its string went into a GLOBAL: spell it out here, and keep the slot
                unwritten.discard(slot)
                out.append((string(value, slot), value, slot))
            else:
                out.append((_encode(op, arg), value if isinstance(value, str) else None, None))
        elif name == "STACK_GLOBAL":
            if len(out) < 2 or not all(isinstance(e[1], str) for e in out[-2:]):
                raise ValueError("a STACK_GLOBAL whose names are built at load time")
            (_, attr, attr_slot), (_, module, module_slot) = out.pop(), out.pop()
            unwritten.update(s for s in (attr_slot, module_slot) if s is not None)
            out.append((pickle.GLOBAL + f"{module}\n{attr}\n".encode(), None, None))
        elif name in ("SHORT_BINBYTES", "BINBYTES", "BINBYTES8"):  # protocol 2 spells bytes as _codecs.encode
            out.append((pickle.GLOBAL + b"_codecs\nencode\n" + string(bytes(arg).decode("latin-1"))
                        + string("latin1") + pickle.TUPLE2 + pickle.REDUCE, None, None))
        else:
            out.append((_encode(op, arg), None, None))
        if name == "STOP":
            break
    return b"".join(data for data, _, _ in out)


def _put(slot: int) -> bytes:
    return pickle.BINPUT + bytes([slot]) if slot < 256 else pickle.LONG_BINPUT + struct.pack("<I", slot)


def _encode(op: Any, arg: Any) -> bytes:
    """An opcode as bytes again: its code and its argument in the form pickletools read it."""
    code = op.code.encode("latin-1")
    if op.arg is None:
        return code
    reader = op.arg.name
    if reader in ("uint1",):
        return code + bytes([arg])
    if reader == "uint2":
        return code + struct.pack("<H", arg)
    if reader in ("uint4", "int4"):
        return code + struct.pack("<i" if reader == "int4" else "<I", arg)
    if reader == "uint8":
        return code + struct.pack("<Q", arg)
    if reader == "float8":
        return code + struct.pack(">d", arg)
    if reader == "long1":
        raw = pickle.encode_long(arg)
        return code + bytes([len(raw)]) + raw
    if reader == "long4":
        raw = pickle.encode_long(arg)
        return code + struct.pack("<i", len(raw)) + raw
    if reader in ("bytes1", "bytes4", "bytes8", "bytearray8"):
        size = {"bytes1": "<B", "bytes4": "<I", "bytes8": "<Q", "bytearray8": "<Q"}[reader]
        return code + struct.pack(size, len(arg)) + bytes(arg)
    if reader in ("string1", "string4"):
        raw = arg.encode("latin-1") if isinstance(arg, str) else arg
        return code + struct.pack("<B" if reader == "string1" else "<i", len(raw)) + raw
    if reader in ("stringnl", "stringnl_noescape", "decimalnl_short", "decimalnl_long", "floatnl", "unicodestringnl"):
        return code + (repr(arg) if reader == "stringnl" else str(arg)).encode("raw_unicode_escape") + b"\n"
    if reader == "stringnl_noescape_pair":
        return code + str(arg).replace(" ", "\n", 1).encode() + b"\n"
    raise ValueError(f"cannot rewrite opcode {op.name}")
