"""Figures cnnprobe measured or computed once and keeps: `$CNNPROBE_CACHE`, else `~/.cache/cnnprobe`.

A cache file that is missing, unreadable, malformed, too large or too deeply nested is an empty cache (the
next store rewrites it), never an error; writes go through a temporary file, so a reader never sees half a
file; a read-only home only costs recomputing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .jsonio import JsonRefused, read_json

LIMIT = 4 * 2**20  # a cache file holds a few figures per device and model; a larger one is not ours: ignored


def cache_dir() -> Path:
    root = os.environ.get("CNNPROBE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "cnnprobe")
    return Path(root)


def load(name: str) -> dict[str, Any]:
    try:
        data = read_json(cache_dir() / name, LIMIT)
    except (OSError, JsonRefused):
        return {}
    return data if isinstance(data, dict) else {}


def store(name: str, entries: dict[str, Any]) -> None:
    """Merge `entries` into the cache file `name`."""
    data = {**load(name), **entries}
    path = cache_dir() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
    except OSError:
        pass
