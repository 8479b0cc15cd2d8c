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
from collections.abc import Callable, Iterator
from typing import IO, Any

from ..core.formatting import count, nbytes

STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "SHORT_BINSTRING", "BINSTRING", "STRING"}
PICKLE_BUDGET = 256 * 2**20  # a pickle (not tensor data) larger than this is not a checkpoint's
BUDGET_BASE = 64 * 2**20  # what reading any file may cost, plus BUDGET_MULTIPLE times its size
BUDGET_MULTIPLE = 8
MEMO_COST = 64  # bytes one memo entry costs an unpickler (its dict slot and key), beyond the object itself
OBJECT_COST = {"EMPTY_DICT": 64, "DICT": 64, "EMPTY_LIST": 56, "LIST": 56, "EMPTY_SET": 216, "FROZENSET": 216}
OP_COST = 32  # bytes at least of what any other opcode pushes (an int, a float, a reference)
MAX_NESTING = 1000  # a checkpoint nests a dozen levels; hashing a tuple nested 100,000 deep overflows the C stack
ELEMENT_BYTES = {"Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1,
                 "Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16, "Untyped": 1}
_CODES = {op.code: op for op in pickletools.opcodes}


class TooLarge(Exception):
    """A pickle that runs past the reading budget; its message names what was too large."""


class TooDeep(TooLarge):
    """A pickle whose values nest deeper than MAX_NESTING."""


class Budget:
    """The bytes reading one file may cost: memo entries, objects, declared lengths, storages and members alike,
    each charged before it is read or allocated, so that a crafted file is refused before it can grow."""

    def __init__(self, limit: int, file_bytes: int = 0) -> None:
        self.limit, self.left, self.file_bytes = limit, limit, file_bytes

    def spend(self, amount: int, what: str | Callable[[], str]) -> None:
        if amount > self.left:
            raise TooLarge(what() if callable(what) else what)
        self.left -= amount


def file_budget(file_bytes: int) -> Budget:
    """What reading a file of `file_bytes` may cost: BUDGET_BASE plus BUDGET_MULTIPLE times its size."""
    return Budget(BUDGET_BASE + BUDGET_MULTIPLE * file_bytes, file_bytes)


class _Bounded(io.RawIOBase):
    """A reader that refuses a read past `budget` bytes before making it, naming the opcode that asked, so a
    declared length cannot make us allocate or read without end."""

    def __init__(self, stream: IO[bytes], budget: int | Budget) -> None:
        self.stream, self.used = stream, 0
        self.budget = budget if isinstance(budget, Budget) else Budget(budget)
        self.op, self.at = "pickle", 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:  # pickletools asks where each opcode lies
        return self.used

    def _spend(self, size: int) -> None:
        self.budget.spend(size, lambda: f"a {self.op} at byte {self.at} declaring {nbytes(size)}"
                          if size > 1 else f"a pickle that builds more than {nbytes(self.budget.limit)}")

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self.budget.left + 1
        self._spend(size)
        data = self.stream.read(size)
        self.budget.left += size - len(data)  # what the stream did not hold was not spent
        self.used += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:  # protocol 0 reads lines
        data = self.stream.readline(self.budget.left + 1)
        self._spend(len(data))
        self.used += len(data)
        return data


def ops(stream: IO[bytes], budget: int | Budget = PICKLE_BUDGET) -> Iterator[tuple[Any, Any, int | None]]:
    """The opcodes of one pickle, up to and including STOP, each argument's declared length checked against
    `budget` before it is read."""
    reader = _Bounded(stream, budget)
    while True:
        at = reader.used
        code = reader.read(1)
        if not code:
            raise ValueError("pickle exhausted before seeing STOP")
        op = _CODES.get(code.decode("latin-1"))
        if op is None:
            raise ValueError(f"at position {at}, opcode {code!r} unknown")
        reader.op, reader.at = op.name, at
        arg = None if op.arg is None else op.arg.reader(reader)  # type: ignore[arg-type]
        yield op, arg, at
        if op.name == "STOP":
            return


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


class _Global(str):
    """A global's name on the modelled stack."""


_UNKNOWN = object()  # a value the model does not follow (anything built at load time)
_MARK = pickletools.markobject


def audit(stream: IO[bytes], budget: Budget, storages: dict[Any, int]) -> None:
    """Walk one pickle as an unpickler would, without building anything, charging `budget` for every byte read,
    object pushed and memo entry made, and recording in `storages` the bytes each persistent storage declares
    (key -> bytes), which torch allocates before reading a byte of it. Raises TooLarge naming the excess, also
    for a value nested deeper than MAX_NESTING (hashing or printing one recurses in C, past the stack)."""
    walk = _Walk()
    puts = 0

    def too_many() -> str:
        return f"a pickle that memoizes more than {count(puts)} objects"

    for op, arg, _ in ops(stream, budget):
        name = op.name
        if name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
            puts += 1
            budget.spend(MEMO_COST if name == "MEMOIZE" else 2 * MEMO_COST, too_many)  # a PUT's slot: a dict entry
            walk.put(puts - 1 if name == "MEMOIZE" else int(arg))
            continue
        budget.spend(OBJECT_COST.get(name, OP_COST), "the objects a pickle builds")
        if name in ("BINPERSID", "PERSID"):
            saved = walk.pop(1)[0][0] if name == "BINPERSID" else arg
            _charge_storage(saved, budget, storages)
            walk.push(_UNKNOWN, 0)
        else:
            walk.step(op, arg)
        if walk.deepest > MAX_NESTING:
            raise TooDeep(f"a value nested more than {count(MAX_NESTING)} deep")
        if name == "STOP":
            return


class _Walk:
    """The unpickler's stack, modelled: literal values where they matter (the strings and numbers of globals
    and persistent ids), and how deep each item nests."""

    INPLACE = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"})  # keep their first item

    def __init__(self) -> None:
        self.stack: list[Any] = []
        self.depths: list[int] = []
        self.frames: list[tuple[list[Any], list[int]]] = []
        self.values: list[Any] = []  # memo slots 0, 1, 2... as MEMOIZE fills them: 16 bytes a slot in all
        self.nesting: list[int] = []
        self.memo: dict[int, tuple[Any, int]] = {}  # slots an explicit PUT names out of order
        self.deepest = 0

    def push(self, value: Any, depth: int) -> None:
        self.stack.append(value)
        self.depths.append(depth)
        if depth > self.deepest:
            self.deepest = depth

    def pop(self, n: int) -> tuple[list[Any], list[int]]:
        n = min(n, len(self.stack))
        cut = len(self.stack) - n
        values, depths = self.stack[cut:], self.depths[cut:]
        del self.stack[cut:], self.depths[cut:]
        return values or [_UNKNOWN], depths

    def to_mark(self) -> tuple[list[Any], list[int]]:
        values, depths = self.stack, self.depths
        self.stack, self.depths = self.frames.pop() if self.frames else ([], [])
        return values, depths

    def put(self, slot: int) -> None:
        value = self.stack[-1] if self.stack and isinstance(self.stack[-1], (str, int, tuple)) else _UNKNOWN
        depth = self.depths[-1] if self.depths else 0
        if slot == len(self.values):
            self.values.append(value)
            self.nesting.append(depth)
        elif slot < len(self.values):
            self.values[slot], self.nesting[slot] = value, depth
        elif depth or value is not _UNKNOWN:
            self.memo[slot] = (value, depth)

    def get(self, slot: int) -> tuple[Any, int]:
        if 0 <= slot < len(self.values):
            return self.values[slot], self.nesting[slot]
        return self.memo.get(slot, (_UNKNOWN, 0))

    def step(self, op: Any, arg: Any) -> None:
        name = op.name
        if name in ("GET", "BINGET", "LONG_BINGET"):
            self.push(*self.get(int(arg)))
        elif name == "GLOBAL":
            self.push(_Global(str(arg).replace(" ", ".")), 0)
        elif name == "STACK_GLOBAL":
            (module, attr), _ = self.pop(2) if len(self.stack) >= 2 else ([_UNKNOWN, _UNKNOWN], [])
            self.push(_Global(f"{module}.{attr}") if isinstance(module, str) and isinstance(attr, str)
                      else _UNKNOWN, 0)
        elif name == "MARK":
            self.frames.append((self.stack, self.depths))
            self.stack, self.depths = [], []
        elif name in ("TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE"):
            n = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3, "EMPTY_TUPLE": 0}.get(name)
            values, depths = self.to_mark() if n is None else self.pop(n) if n else ([], [])
            self.push(tuple(values), max(depths, default=0) + 1)
        elif name == "DUP":
            self.push(self.stack[-1] if self.stack else _UNKNOWN, self.depths[-1] if self.depths else 0)
        elif name in ("STOP", "PROTO", "FRAME"):
            pass
        elif op.arg is not None and not op.stack_before and len(op.stack_after) == 1:  # a literal
            self.push(arg if isinstance(arg, (str, int)) and not isinstance(arg, bool) else _UNKNOWN, 0)
        else:
            self._generic(op)

    def _generic(self, op: Any) -> None:
        """Any other opcode: take what it consumes, push what it makes, nested one deeper than its parts."""
        marked: list[int] = []
        before = list(op.stack_before)
        if _MARK in before:
            _, marked = self.to_mark()
            before = before[: before.index(_MARK)]
        _, fixed = self.pop(len(before)) if before else ([], [])
        if not op.stack_after:
            return
        parts = fixed + marked
        if op.name in self.INPLACE and fixed:
            depth = max([fixed[0], *(d + 1 for d in parts[1:])])
        else:
            depth = max(parts) + 1 if parts else 0
        for _ in op.stack_after:
            self.push(_UNKNOWN, depth)


def _charge_storage(saved: Any, budget: Budget, storages: dict[Any, int]) -> None:
    """A persistent id `('storage', torch.XStorage, key, location, numel, ...)`: charge its bytes once per key."""
    if not (isinstance(saved, tuple) and len(saved) >= 5 and saved[0] == "storage"):
        return
    kind, key, numel = saved[1], saved[2], saved[4]
    if not isinstance(numel, int) or numel <= 0 or not isinstance(key, (str, int)) or key in storages:
        return
    element = ELEMENT_BYTES.get(str(kind).rsplit(".", 1)[-1].removesuffix("Storage"), 8)
    size = numel * element
    budget.spend(size, f"a storage declaring {nbytes(size)} ({count(numel)} elements of {str(kind)[:40]})")
    storages[key] = size


def protocol(data: bytes) -> int:
    """A pickle's protocol: its PROTO opcode's argument, 0 to 1 without one."""
    return data[1] if len(data) > 1 and data[0] == pickle.PROTO[0] else 0


def as_protocol_2(stream: IO[bytes], budget: int = PICKLE_BUDGET) -> bytes:
    """One pickle rewritten with the opcodes of protocol 2 that torch's weights-only unpickler reads: no
    FRAME, BINUNICODE for short strings, explicit memo indices, GLOBAL for STACK_GLOBAL (whose two strings
    are taken back off the output, and spelled out again where the memo is read for them later). The
    objects it builds are the same; nothing is executed."""
    out: list[tuple[bytes, Any, int | None]] = []  # (bytes, the string it pushes or None, its memo slot)
    written = io.BytesIO()  # what no later opcode can reach back to: only the last two entries are rewritten
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
                assert isinstance(value, str)  # only a string's slot goes into `unwritten` (STACK_GLOBAL)
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
        while len(out) > 2:
            written.write(out.pop(0)[0])
        if name == "STOP":
            break
    for data, _, _ in out:
        written.write(data)
    return written.getvalue()


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
