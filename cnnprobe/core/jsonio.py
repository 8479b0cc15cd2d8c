"""Reading JSON files cnnprobe did not necessarily write (baselines, cache files), within bounds.

A file larger than the caller's limit is refused before a byte is read, and one nested deeper than
MAX_DEPTH before it is parsed (Python's parser recurses once per level), so that neither a huge file nor a
deep one can exhaust memory or the stack: each is one clear `JsonRefused`.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from pathlib import Path
from typing import Any

from .formatting import count, nbytes

MAX_DEPTH = 64  # no file cnnprobe writes nests beyond a handful of levels
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class JsonRefused(ValueError):
    """A JSON file too large, too deep or malformed; the message says which."""


def depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest, counted without parsing it (strings skipped)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(_STEP[c] for c in brackets), default=0)


def read_json(path: str | Path, limit: int) -> Any:
    """The value in a JSON file of at most `limit` bytes nested at most MAX_DEPTH deep, or JsonRefused."""
    p = Path(path)
    size = p.stat().st_size
    if size > limit:
        raise JsonRefused(f"it is {nbytes(size)}, above the {nbytes(limit)} such a file ever needs")
    with p.open("rb") as f:
        raw = f.read(limit + 1)  # a file that grew since stat() is still read only up to the limit
    if len(raw) > limit:
        raise JsonRefused(f"it is above the {nbytes(limit)} such a file ever needs")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JsonRefused(f"it is not UTF-8 text ({e.reason} at byte {count(e.start)})") from None
    nesting = depth(text)
    if nesting > MAX_DEPTH:
        raise JsonRefused(f"it nests {count(nesting)} levels deep, beyond the {MAX_DEPTH} any cnnprobe file uses")
    try:
        return json.loads(text)
    except RecursionError:  # pragma: no cover - depth() refused it above
        raise JsonRefused("it nests too deep to parse") from None
    except ValueError as e:
        raise JsonRefused(f"it is not valid JSON ({e})") from None
