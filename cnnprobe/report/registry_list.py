"""`cnnprobe list`: the models it can build."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.formatting import count, shape
from .tables import Col, Fitted

if TYPE_CHECKING:
    from ..models.registry import ModelSpec


def list_table(specs: list[ModelSpec], params: dict[str, int]) -> Fitted:
    table = Fitted([Col("source", "left", text=True), Col("name", "left", key=True), Col("params"),
                    Col("input")], title=f"{len(specs)} models")
    for s in specs:
        table.add_row(s.source.value, s.name, count(params[s.qualified]), shape(list(s.input_shape or [])))
    return table
