"""Where every byte goes out: the console commands print on, their pieces, one-line warnings, and the one JSON
serialisation that --json prints and --save writes."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

from rich.console import Console

from ..core.formatting import brief


def console(stderr: bool = False) -> Console:
    """A console that keeps its width when piped, so saved output reads like the terminal's. Markup and emoji
    codes are off: text from a file or a model (`[/bold]`, `[red]`, `:warning:`) prints literally, never
    restyling or hiding what cnnprobe prints; styles come from Text objects alone."""
    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not stream.isatty():
        columns = os.environ.get("COLUMNS", "")
        width = int(columns) if columns.isdigit() and int(columns) >= 40 else 120
    return Console(file=stream, width=width, highlight=False, soft_wrap=False, markup=False, emoji=False)


def print_pieces(pieces: list[Any]) -> None:
    out = console()
    for p in pieces:
        out.print(p)


def warn(message: str) -> None:
    """One line on stderr."""
    sys.stderr.write(f"warning: {message}\n")


def json_text(data: Any) -> str:
    """The one JSON serialisation: what --json prints is what --save writes. Standard JSON only: a value JSON
    cannot hold (NaN, infinities, complex numbers) is written as a string, never as a bare `NaN`."""
    return json.dumps(_standard(data), default=_jsonable, allow_nan=False) + "\n"


def emit_json(data: Any) -> None:
    """One JSON object on stdout, and nothing else."""
    sys.stdout.write(json_text(data))
    sys.stdout.flush()


def _standard(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, complex):
        return str(value)
    if isinstance(value, dict):  # keys a file chose (tuples, numbers) are written as text
        return {k if isinstance(k, str) else brief(k): _standard(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_standard(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "value"):  # enums
        return value.value
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
