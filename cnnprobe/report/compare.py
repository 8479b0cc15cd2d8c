"""`cnnprobe compare`: two models side by side, layer by layer, and whether one's weights fit the other."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text

from ..core.formatting import count, macs, origin, shape
from .tables import Col, Fitted, note_lines

if TYPE_CHECKING:
    from ..analysis.compare import ModelComparison
    from ..weights.statedict import Compatibility


def compatibility_line(c: Compatibility, what: str, left: str = "file", right: str = "model") -> Text:
    verdict = "fit" if c.compatible else "do not fit"
    prefix = f" (after dropping the '{c.stripped_prefix}' prefix)" if c.stripped_prefix else ""
    return Text(f"{what} {verdict} {c.model}{prefix}: {c.matched} keys match; {c.describe(left, right)}",
                style="" if c.compatible else "bold")


def comparison_model_lines(c: ModelComparison, depth: int) -> list[Any]:
    header = Text.assemble(("A ", "dim"), (c.a.model, "bold"), f" ({origin(c.a.source, c.a.task)}) · ", ("B ", "dim"),
                           (c.b.model, "bold"), f" ({origin(c.b.source, c.b.task)}) · input {shape(c.a.input_size)} · ",
                           ("identical" if c.identical else "different", "bold"))
    pieces: list[Any] = [header, totals_table(c)]
    shown = [d for d in c.layers if d.depth <= depth]
    if c.layers:
        table = Fitted([Col("layer", "left", key=True), Col("", "left"), Col("A", "left", text=True),
                        Col("B", "left", text=True), Col("A params"), Col("B params")],
                       title=f"layers that differ ({len(c.layers)}; {len(shown)} down to depth {depth})")
        for d in shown:
            a = f"{d.a_type} {shape(d.a_shape)}" if d.a_type else "-"
            b = f"{d.b_type} {shape(d.b_shape)}" if d.b_type else "-"
            table.add_row("  " * (d.depth - 1) + d.name, d.status, a, b,
                          count(d.a_params) if d.a_params is not None else "-",
                          count(d.b_params) if d.b_params is not None else "-")
        pieces.append(table)
    else:
        pieces.append(Text("every layer matches: same names, types, output shapes and parameters"))
    pieces.append(compatibility_line(c.state_dict, "A's weights", "A", "B"))
    return pieces + note_lines(c.notes)


def totals_table(c: ModelComparison) -> Fitted:
    totals = Fitted([Col("", "left", key=True), Col("A"), Col("B"), Col("B − A")])
    totals.add_row("params", count(c.a.params), count(c.b.params), f"{c.params_change:+,}")
    totals.add_row("trainable", count(c.a.trainable_params), count(c.b.trainable_params), f"{c.trainable_change:+,}")
    totals.add_row("MACs", macs(c.a.macs), macs(c.b.macs),
                   f"{100 * c.macs_change:+.1f}%" if c.macs_change is not None else "-")
    return totals
