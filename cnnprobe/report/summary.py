"""`cnnprobe summary`: the layer table, the totals and the shape flow."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from ..core.formatting import ARROW, count, inputs, macs, nbytes, origin, shape
from .tables import Col, Fitted, note_lines

if TYPE_CHECKING:
    from ..analysis.summary import Summary


def summary_lines(s: Summary) -> list[Any]:
    """The summary as printable pieces: header, layer table, totals, shape flow."""
    header = Text.assemble(
        (f"{s.model}", "bold"), f" ({origin(s.source, s.task)}) · input {inputs(s.input_size, s.inputs)}",
        f" ({s.input_source}) · built on {s.device}",
    )
    flow = Text("shape flow: " + ARROW.join(shape(f) for f in s.shape_flow))
    return [header, _layers(s), _totals(s), flow, *note_lines(s.notes)]


def _layers(s: Summary) -> Fitted:
    table = Fitted([Col("layer", "left", key=True), Col("type", "left", text=True), Col("output shape"),
                    Col("params"), Col("trainable", "left"), Col("MACs")])
    for r in s.rows():
        trainable = "-" if r.params == 0 else ("yes" if r.trainable else ("partial" if r.trainable_params else "no"))
        params = f"call {r.call}/{r.calls}" if r.repeated else (count(r.params) if r.params else "-")
        table.add_row("  " * (r.depth - 1) + r.name, r.type, shape(r.output_shape), params, trainable, macs(r.macs))
    return table


def _totals(s: Summary) -> Table:
    totals = Table.grid(padding=(0, 2))
    totals.add_column(overflow="fold")
    totals.add_column(justify="right", no_wrap=True)
    totals.add_column(style="dim", overflow="fold")
    totals.add_row("total params", count(s.total_params), "")
    totals.add_row("trainable params", count(s.trainable_params), "")
    totals.add_row("non-trainable params", count(s.non_trainable_params), "")
    if s.packed_params is not None:
        totals.add_row("packed int8 values", count(s.packed_params), "quantized weights and biases, BatchNorm folded")
    totals.add_row("param memory", nbytes(s.param_bytes), ("int8 weights, float biases; " if s.packed_params is not None
                                                           else "")
                   + (f"+ {nbytes(s.buffer_bytes)} of buffers" if s.buffer_bytes else ""))
    totals.add_row("activations (est.)", nbytes(s.activation_bytes), "leaf-layer outputs of one forward pass")
    totals.add_row("MACs", macs(s.macs), f"FLOPs = 2 × MACs = {macs(s.flops)}")
    return totals
