"""Every number, unit and shape as cnnprobe prints it, in one place. Records hold raw integers and floats;
renderers and messages format them here."""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from typing import Any

ARROW = " → "


def count(n: int) -> str:
    """Thousands separated: 11,689,512."""
    return f"{n:,}"


def nbytes(n: float, digits: int = 1) -> str:
    """Binary units: 44.6 MiB (more `digits` where neighbours must be told apart)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.{digits}f} {unit}"
        n /= 1024
    return f"{n:.{digits}f} TiB"  # pragma: no cover


def shape(dims: Iterable[int] | None, empty: str = "-") -> str:
    """`1×3×224×224`; `empty` for no shape (a scalar, or a layer that did not run)."""
    text = "×".join(str(d) for d in dims) if dims is not None else ""
    return text or empty


def macs(n: int) -> str:
    """MACs (or FLOPs) with a unit: 1.814 G, 416.5 K."""
    if n == 0:
        return "-"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3f} {unit}" if unit in "TG" else f"{n / scale:.1f} {unit}"
    return str(n)


def share(x: float) -> str:
    """A fraction as a percentage: 76.2%."""
    return f"{100 * x:.1f}%"


def ms(value: float | None) -> str:
    """Milliseconds: three decimals below 10, one above; `-` for nothing measured."""
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlist, _BRIEF.maxdict = 3, 60, 60, 4, 4


def brief(value: Any, width: int = 80) -> str:
    """A value from a file, shown within `width` characters whatever it is: nested a million deep, a repr that
    raises, or one that would print a gigabyte."""
    try:
        text = value if isinstance(value, str) else _BRIEF.repr(value)
    except Exception:  # noqa: BLE001 - a repr from a trusted pickle that fails
        text = f"<{type(value).__name__}>"
    return text if len(text) <= width else text[: width - 1] + "…"


def first_few(items: list[str], shown: int = 3) -> str:
    """`a, b, c and 4 more`."""
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def inputs(input_size: list[int], specs: list[dict] | None) -> str:
    """The input as a header says it: `1×3×224×224`, or every input with its dtype (`1×128 int64 in [0, 1000)`)
    when there are several or one that is not float32."""
    if not specs or (len(specs) == 1 and specs[0].get("dtype") == "float32"):
        return shape(input_size)
    batch = input_size[0] if input_size else 1
    parts = []
    for s in specs:
        text = f"{shape([batch, *s['shape']])} {s['dtype']}"
        if "range" in s:
            text += f" in [{s['range'][0]}, {s['range'][1]})"
        parts.append(text)
    return ", ".join(parts)


def origin(source: str, task: str) -> str:
    """What a header says in brackets after a model's name: its source, and its task where it is not a
    classifier's (`torchvision, detection`), so that a classifier's header reads as it always has."""
    return source if task == "classification" else f"{source}, {task}"
