"""The catalogue the hand-written builders register into: a name, a builder and what `list` says of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Entry:
    """A hand-written builder and what `cnnprobe list` says about it."""

    name: str
    builder: Callable[..., "nn.Module"]
    input_shape: tuple[int, int, int]
    num_classes: int
    doc: str


BUILDERS: dict[str, Entry] = {}


def register(
    name: str, *, input_shape: tuple[int, int, int] = (3, 224, 224), num_classes: int = 1000
) -> Callable[[Callable[..., "nn.Module"]], Callable[..., "nn.Module"]]:
    """Register a keyword-only builder `fn(*, num_classes) -> nn.Module` under `name`."""

    def wrap(fn: Callable[..., "nn.Module"]) -> Callable[..., "nn.Module"]:
        if name in BUILDERS:
            raise ValueError(f"hand-written model '{name}' is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        BUILDERS[name] = Entry(name, fn, input_shape, num_classes, doc)
        return fn

    return wrap
