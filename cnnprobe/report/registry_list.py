"""`cnnprobe list`: the models it can build."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.formatting import count, shape
from .tables import Col, Fitted

if TYPE_CHECKING:
    from ..models.registry import ModelSpec


def list_table(specs: list[ModelSpec], params: dict[str, int]) -> Fitted:
    table = Fitted([Col("source", "left", text=True), Col("name", "left", key=True), Col("task", "left", text=True),
                    Col("params"), Col("input")], title=f"{len(specs)} models")
    for s in specs:
        table.add_row(s.source.value, s.name, s.task.value, count(params[s.qualified]), _inputs(s))
    return table


def _inputs(spec: ModelSpec) -> str:
    """The default input; every one, where the model takes several (RAFT's two images)."""
    if spec.inputs is not None and len(spec.inputs) > 1:
        return ", ".join(shape(list(i.shape)) for i in spec.inputs)
    return shape(list(spec.input_shape or []))
