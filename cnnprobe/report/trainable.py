"""`cnnprobe trainable`: what a freezing plan and a new head leave trainable, and what that saves."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from ..core.formatting import count, nbytes, origin, share
from .tables import Col, Fitted, note_lines

if TYPE_CHECKING:
    from ..analysis.trainable import TrainableReport


def trainable_lines(r: TrainableReport) -> list[Any]:
    pieces: list[Any] = [_header(r), _blocks(r), _totals(r),
                         Text(f"freezing saves {nbytes(r.saved_bytes)} of gradient and {r.optimizer} state memory")]
    if r.weights:
        pieces.append(Text(f"weights: {r.weights}", style="dim"))
    bn = r.batchnorm
    if bn.frozen:
        pieces.append(Text(f"--freeze-bn: {bn.layers} BatchNorm layers in eval mode; {bn.buffers} buffers "
                           "(running_mean, running_var, num_batches_tracked) stop updating"))
    if r.groups:
        groups = Fitted([Col("modules", "left", text=True, key=True), Col("lr"), Col("tensors"),
                         Col("trainable params"), Col("frozen params")], title="optimizer parameter groups")
        for g in r.groups:
            groups.add_row(g.modules, f"{g.lr:g}", str(g.tensors), count(g.params), count(g.frozen_params))
        pieces.append(groups)
    return pieces + note_lines(r.notes)


def _header(r: TrainableReport) -> Text:
    header = Text.assemble((r.model, "bold"), f" ({origin(r.source, r.task)})")
    plan = []
    if r.plan["freeze_all"]:
        plan.append("freeze all")
    if r.plan["freeze_except"]:
        plan.append("freeze all except " + ",".join(r.plan["freeze_except"]))
    if r.plan["freeze"]:
        plan.append("freeze " + ",".join(r.plan["freeze"]))
    built = "frozen by the builder" if r.after.trainable_params < r.after.total_params else "nothing frozen"
    header.append(" · " + ("; ".join(plan) if plan else built))
    if r.head:
        header.append(f"\nnew head {r.head.name}: {r.head.new}")
    return header


def _blocks(r: TrainableReport) -> Fitted:
    changed = any(b.params_before != b.params_after for b in r.blocks)
    table = Fitted([Col("block", "left", key=True), Col("params"),
                    *([Col("params after")] if changed else []), Col("trainable before"), Col("trainable after")])
    for b in r.blocks:
        if not (b.params_before or b.params_after):
            continue
        cells = [b.name, count(b.params_before)]
        if changed:
            cells.append(count(b.params_after))
        cells += [count(b.trainable_before), count(b.trainable_after)]
        table.add_row(*cells)
    return table


def _totals(r: TrainableReport) -> Table:
    totals = Table.grid(padding=(0, 2))
    totals.add_column(overflow="fold")
    totals.add_column(justify="right", no_wrap=True)
    totals.add_column(justify="right", no_wrap=True)
    totals.add_row("", "before", "after")
    totals.add_row("total params", count(r.before.total_params), count(r.after.total_params))
    totals.add_row("trainable", count(r.before.trainable_params), count(r.after.trainable_params))
    totals.add_row("trainable share", share(r.before.trainable_share), share(r.after.trainable_share))
    totals.add_row("gradients", nbytes(r.before.grad_bytes), nbytes(r.after.grad_bytes))
    totals.add_row(f"{r.optimizer} state", nbytes(r.before.optimizer_state_bytes),
                   nbytes(r.after.optimizer_state_bytes))
    return totals
