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
import pickletools
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import WeightsError
from .formatting import first_few


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise WeightsError(f"{what} '{path}' does not exist")
    if path.is_dir():
        raise WeightsError(f"{what} '{path}' is a directory, not a file")
    if path.stat().st_size == 0:
        raise WeightsError(f"{what} '{path}' is empty")


def pickle_globals(path: str | Path) -> list[str]:
    """The classes and functions a torch.save file would import when unpickled, read without unpickling."""
    path = Path(path)
    streams: list[bytes] = []
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            streams = [archive.read(n) for n in archive.namelist() if n.endswith(".pkl")]
    else:
        streams = [path.read_bytes()]
    found: list[str] = []
    for data in streams:
        buffer = io.BytesIO(data)
        while buffer.tell() < len(data):  # legacy files hold several pickles back to back, then raw bytes
            memo: list[str] = []
            try:
                for op, arg, _ in pickletools.genops(buffer):
                    if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "SHORT_BINSTRING",
                                   "BINSTRING", "STRING"):
                        memo.append(str(arg))
                    elif op.name in ("GLOBAL", "INST"):
                        found.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL":
                        found.append(f"{memo[-2]}.{memo[-1]}" if len(memo) >= 2 else "(a global built at load time)")
                    if op.name == "STOP":
                        break
            except Exception:  # noqa: BLE001 - not a pickle any more: the tensor bytes of a legacy file
                break
    return list(dict.fromkeys(found))


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
    """torch.load with weights_only=True, tensors mapped to `device`, clear errors naming the file."""
    path = Path(path).expanduser()
    _check_file(path, what)
    saved_on: Counter[str] = Counter()

    def place(storage: Any, location: str) -> Any:
        saved_on[location] += 1
        return storage if device == "cpu" else storage.to(device=device)

    zip_format = zipfile.is_zipfile(path)
    try:
        obj = torch.load(path, map_location=place, weights_only=True, mmap=mmap and zip_format)
        return Loaded(obj, saved_on, False, zip_format)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower() and "weights_only" not in str(e).lower():
            raise _unreadable(path, what, e) from None
        with path.open("rb") as f:
            is_pickle = zip_format or f.read(1) == b"\x80"  # a legacy torch file starts with pickle's PROTO
        names = _foreign(path, pickle_globals(path)) if is_pickle else []
        if not names:  # not refused for what it imports: it is broken, or not a torch file at all
            raise _unreadable(path, what, e) from None
        names.sort(key=lambda n: n.startswith(("torch.", "collections.", "builtins.", "__builtin__.")))
        if not trust:
            shown = first_few(names)
            raise WeightsError(
                f"{what} '{path}' needs full unpickling, which can run code from the file"
                + (f" (it imports {shown})" if shown else "")
                + "; refusing. Pass --trust only if you trust where it came from, or save model.state_dict() instead"
            ) from None
    except Exception as e:  # noqa: BLE001 - corrupt, truncated, or not a torch file
        raise _unreadable(path, what, e) from None
    saved_on.clear()
    try:  # --trust: the user has accepted running the file's code
        obj = torch.load(path, map_location=place, weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise _unreadable(path, what, e) from None
    return Loaded(obj, saved_on, True, zip_format)


def _unreadable(path: Path, what: str, error: BaseException) -> WeightsError:
    text = " ".join(str(error).split())[:160] or type(error).__name__
    return WeightsError(f"cannot read {what} '{path}': truncated, corrupted or not a PyTorch file ({text})")
