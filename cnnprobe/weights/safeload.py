"""Reading `.pth` files without running their code.

Unpickling a `.pth` file can run any code the file names. Everything here
loads with `weights_only=True`; a file that needs full unpickling (a whole
pickled model) is refused, after listing the classes it would import (read
from the pickle's opcodes, never executed), unless the caller passes
`trust=True`. Tensors are mapped to the CPU (or the device asked for) while
the device each was saved from is recorded.
"""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

from ..core.errors import WeightsError
from ..core.formatting import count, first_few, nbytes
from .pickles import PICKLE_BUDGET, Budget, TooDeep, TooLarge, as_protocol_2, audit, file_budget, globals_in, protocol

BOMB_SIZE = 16 * 2**20
BOMB_RATIO = 100
LEGACY_PICKLES = 5  # magic number, protocol version, system info, the object, its storage keys
MEMBER_COST = 4096  # bytes one zip member may cost the readers' indexes (zipfile's ZipInfo, torch's, ours)
LOCAL_HEADER = 30  # bytes of a zip member's local header before its name


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise WeightsError(f"{what} '{path}' does not exist")
    if path.is_dir():
        raise WeightsError(f"{what} '{path}' is a directory, not a file")
    if path.stat().st_size == 0:
        raise WeightsError(f"{what} '{path}' is empty")


def file_bytes(path: Path) -> int:
    """A file's own size for its reading budget: what it holds on disk, where that is less than its length (a
    sparse file claims gigabytes of zeros it does not hold)."""
    st = path.stat()
    on_disk = getattr(st, "st_blocks", 0) * 512
    return min(st.st_size, on_disk) if on_disk else st.st_size


def check_archive(path: Path, what: str = "checkpoint", budget: Budget | None = None) -> list[zipfile.ZipInfo]:
    """Refuse a zip whose members declare sizes no checkpoint has, before anything inflates them: torch.save
    stores members uncompressed, so a member that would inflate a hundredfold to many megabytes is a zip bomb;
    members that overlap, or more of them or more bytes in all than the file's budget, are refused too."""
    budget = budget or file_budget(file_bytes(path))
    declared = _declared_members(path)
    if declared * MEMBER_COST > budget.left:
        raise WeightsError(f"{what} '{path}' declares {count(declared)} zip members, more than reading a "
                           f"{nbytes(budget.file_bytes)} file may index: refusing to read it")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise WeightsError(f"cannot read {what} '{path}': a damaged zip archive ({e})") from None
    _check_overlap(path, what, members, path.stat().st_size)
    try:
        budget.spend(len(members) * MEMBER_COST, f"{count(len(members))} zip members")
        for info in members:
            inflated, packed = info.file_size, max(info.compress_size, 1)
            if info.compress_type != zipfile.ZIP_STORED and inflated > BOMB_SIZE and inflated > BOMB_RATIO * packed:
                raise WeightsError(f"{what} '{path}' holds {info.filename}, which would inflate from {nbytes(packed)} "
                                   f"to {nbytes(inflated)}: refusing what looks like a zip bomb")
            if info.filename.endswith(".pkl") and inflated > PICKLE_BUDGET:
                raise WeightsError(f"{what} '{path}' holds a {nbytes(inflated)} pickle ({info.filename}); a "
                                   "checkpoint's is far smaller: refusing to read it")
            budget.spend(inflated, lambda: f"zip members inflating to more than {nbytes(budget.limit)} in all")
    except TooLarge as e:
        raise _too_large(path, what, e, budget) from None
    return members


def _declared_members(path: Path) -> int:
    """The member count a zip's end record declares, read before zipfile indexes every member."""
    try:
        with path.open("rb") as f:
            end = zipfile._EndRecData(f)  # type: ignore[attr-defined] # private, but in every Python 3
        return int(end[zipfile._ECD_ENTRIES_TOTAL]) if end else 0  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - zipfile's own reading below says what is wrong
        return 0


def _check_overlap(path: Path, what: str, members: list[zipfile.ZipInfo], length: int) -> None:
    """Members whose data overlap (a few kilobytes inflated again and again) or run past the file's end."""
    spans = sorted((m.header_offset, m.header_offset + LOCAL_HEADER + m.compress_size, m.filename) for m in members)
    for (_start, stop, name), following in zip(spans, [*spans[1:], None]):
        if stop > length:
            raise WeightsError(f"{what} '{path}' holds zip member {name!r}, which runs past the end of the file: "
                               "refusing a damaged or crafted archive")
        if following is not None and following[0] < stop:
            raise WeightsError(f"{what} '{path}' holds zip members that overlap ({name!r} and {following[2]!r}): "
                               "refusing what looks like a zip bomb")


def preflight(path: Path, what: str = "checkpoint") -> None:
    """Refuse, before torch reads it, a file whose reading would cost more than its budget: walk every pickle
    it holds without building anything, charging memo entries, objects, declared lengths and storages."""
    budget = file_budget(file_bytes(path))
    storages: dict[Any, int] = {}
    try:
        if zipfile.is_zipfile(path):
            members = check_archive(path, what, budget)
            with zipfile.ZipFile(path) as archive:
                for info in members:
                    if info.filename.endswith(".pkl"):
                        with archive.open(info) as f:
                            _audit(f, budget, storages)
        else:
            with path.open("rb") as f:
                for _ in range(LEGACY_PICKLES):
                    if not _audit(f, budget, storages):
                        break
    except TooLarge as e:
        raise _too_large(path, what, e, budget) from None


def _audit(stream: IO[bytes], budget: Budget, storages: dict[Any, int]) -> bool:
    """Walk one pickle; False where the stream holds no (whole) pickle: torch's own reading says what is wrong."""
    try:
        audit(stream, budget, storages)
    except TooLarge:
        raise
    except Exception:  # noqa: BLE001 - not a pickle, or a broken one
        return False
    return True


def _too_large(path: Path, what: str, error: TooLarge, budget: Budget) -> WeightsError:
    if isinstance(error, TooDeep):
        return WeightsError(f"{what} '{path}' holds {error}; no checkpoint nests so: refusing to read it")
    return WeightsError(f"{what} '{path}' holds {error}, more than reading a {nbytes(budget.file_bytes)} file may "
                        f"take ({nbytes(budget.limit)}): refusing to read it")


def pickle_globals(path: str | Path) -> list[str]:
    """The classes and functions a torch.save file would import when unpickled, read without unpickling:
    streamed opcode by opcode within a budget, from every pickle of a zip, or the pickles a legacy file
    holds back to back before its raw tensor bytes."""
    path = Path(path)
    found: list[str] = []
    try:
        if zipfile.is_zipfile(path):
            check_archive(path)
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if info.filename.endswith(".pkl"):
                        with archive.open(info) as f:
                            found += _scan(f)
        else:
            with path.open("rb") as f:
                while f.read(1):
                    f.seek(-1, io.SEEK_CUR)
                    start = f.tell()
                    names = _scan(f)
                    found += names
                    if f.tell() == start or not names and f.tell() - start < 2:
                        break
    except TooLarge:
        raise WeightsError(f"'{path}' holds a pickle larger than {nbytes(PICKLE_BUDGET)}: refusing to read it") \
            from None
    return list(dict.fromkeys(found))


def _scan(stream: IO[bytes]) -> list[str]:
    """The globals of one pickle; nothing where the stream is not a pickle (a legacy file's tensor bytes)."""
    try:
        return globals_in(stream)
    except TooLarge:
        raise
    except Exception:  # noqa: BLE001 - the end of the pickles
        stream.seek(0, io.SEEK_END)
        return []


def protocol_2_copy(path: Path) -> io.BytesIO | None:
    """The file in memory with every pickle rewritten in protocol 2 (which torch's weights-only unpickler
    reads); None when its pickles are protocol 2 already."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            pickles = [m for m in members if m.filename.endswith(".pkl")]
            if not any(protocol(archive.open(m).read(2)) > 2 for m in pickles):
                return None
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as copy:
                for m in members:
                    if m.filename.endswith(".pkl"):
                        with archive.open(m) as f:
                            copy.writestr(m.filename, as_protocol_2(f))
                    else:
                        copy.writestr(m.filename, archive.read(m))
    else:
        data = path.read_bytes()
        if protocol(data) <= 2:
            return None
        stream, parts = io.BytesIO(data), []
        for _ in range(LEGACY_PICKLES):
            parts.append(as_protocol_2(stream))
        parts.append(stream.read())  # the raw tensor bytes
        out = io.BytesIO(b"".join(parts))
    out.seek(0)
    return out


def _allowed_globals() -> set[str]:
    """What torch's weights_only unpickler accepts; everything else in a file is worth naming."""
    try:
        from torch import _weights_only_unpickler

        return set(_weights_only_unpickler._get_allowed_globals())
    except Exception:  # noqa: BLE001 - private API; fall back to the basics
        return {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter"}


def _foreign(path: Path, names: list[str]) -> list[str]:
    """The imports a file needs beyond plain tensors: what full unpickling would run."""
    if zipfile.is_zipfile(path) and hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        try:
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:  # noqa: BLE001 - fall back to our own scan
            pass
    allowed = _allowed_globals()
    return [n for n in names if n not in allowed]


@dataclass
class Loaded:
    """What a file held, and where its tensors were saved from."""

    obj: Any
    saved_on: Counter[str]
    trusted: bool  # unpickled fully
    zip_format: bool


def safe_load(path: str | Path, *, device: str = "cpu", trust: bool = False, mmap: bool = False,
              what: str = "checkpoint") -> Loaded:
    """torch.load with weights_only=True, tensors mapped to `device`, clear errors naming the file.

    A file in pickle protocol 3 to 5 is read through a protocol-2 copy of its pickles. A file that needs
    full unpickling is refused, naming what it would import, unless `trust`.
    """
    path = Path(path).expanduser()
    _check_file(path, what)
    saved_on: Counter[str] = Counter()

    def place(storage: Any, location: str) -> Any:
        saved_on[location] += 1
        return storage if device == "cpu" else storage.to(device=device)

    zip_format = zipfile.is_zipfile(path)
    preflight(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols; the errors below say more
            obj = torch.load(path, map_location=place, weights_only=True, mmap=mmap and zip_format)
        return Loaded(obj, saved_on, False, zip_format)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower() and "weights_only" not in str(e).lower():
            raise _unreadable(path, what, e) from None
        first = e
    except Exception as e:  # noqa: BLE001 - corrupt, truncated, or not a torch file
        raise _unreadable(path, what, e) from None
    try:
        copy = protocol_2_copy(path)
    except Exception:  # noqa: BLE001 - not rewritable: judged on what it imports below
        copy = None
    if copy is not None:
        saved_on.clear()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obj = torch.load(copy, map_location=place, weights_only=True)
            return Loaded(obj, saved_on, False, zip_format)
        except Exception:  # noqa: BLE001 - it also needs more than tensors: judged below
            pass
    names = _foreign(path, pickle_globals(path))
    if not names:  # not refused for what it imports: it is broken, or not a torch file at all
        raise _unreadable(path, what, first) from None
    names.sort(key=lambda n: n.startswith(("torch.", "collections.", "builtins.", "__builtin__.")))
    if not trust:
        raise WeightsError(
            f"{what} '{path}' needs full unpickling, which can run code from the file (it imports "
            f"{first_few(names)}); refusing. Pass --trust only if you trust where it came from, or save "
            "model.state_dict() instead"
        )
    saved_on.clear()
    try:  # --trust: the user has accepted running the file's code
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location=place, weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise _unreadable(path, what, e) from None
    return Loaded(obj, saved_on, True, zip_format)


def _unreadable(path: Path, what: str, error: BaseException) -> WeightsError:
    text = " ".join(str(error).split())[:160] or type(error).__name__
    return WeightsError(f"cannot read {what} '{path}': truncated, corrupted or not a PyTorch file ({text})")
