"""The counted pass: the same step once more on meta, its operators' MACs and bytes attributed to the rows."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...core.enums import Mode
from ...training.setup import BenchSetup
from ..prepared import Prepared
from .join import Counted


@dataclass
class Counts:
    """Per row (its calls summed), per unattributed piece, and per call (path, index) for the timeline."""

    rows: dict[str, Counted] = field(default_factory=dict)
    pieces: dict[str, Counted] = field(default_factory=dict)
    calls: dict[tuple[str, int], Counted] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def count_rows(prepared: Prepared, setup: BenchSetup, mode: Mode, frozen: bool, depth: int) -> Counts:
    return Counts()
