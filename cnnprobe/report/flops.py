"""`cnnprobe flops`: the totals, by module, by operator, and the backward pass."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text

from ..core.formatting import count, inputs, macs, origin, share
from .tables import Col, Fitted, note_lines

if TYPE_CHECKING:
    from ..analysis.flops import FlopReport


def flops_lines(r: FlopReport) -> list[Any]:
    header = Text.assemble((r.model, "bold"), f" ({origin(r.source, r.task)}) · input "
                                              f"{inputs(r.input_size, r.inputs)} · counter {r.counter} on {r.device}")
    total = Text.assemble("MACs ", (macs(r.macs), "bold"), " · FLOPs ", (macs(r.flops), "bold"),
                          "  (FLOPs = 2 × MACs)")
    pieces: list[Any] = [header, total]
    if r.published_gmacs is not None:
        pieces.append(Text(f"torchvision publishes {r.published_gmacs:.3f} G for this model under \"GFLOPS\": "
                           f"those are MACs; difference {100 * (r.published_difference or 0.0):+.2f}%"))
    if r.by_module:
        pieces.append(module_table(r))
    pieces.append(operator_table("by operator", r.by_operator))
    if r.uncounted_ops:
        listed = ", ".join(f"{op}×{n}" for op, n in r.uncounted_ops.items())
        pieces.append(Text(f"not counted (no MACs by convention, or no formula), with calls: {listed}"))
    if r.backward_macs is not None:
        pieces += _backward(r)
    return pieces + note_lines(r.notes)


def module_table(r: FlopReport) -> Fitted:
    table = Fitted([Col("module", "left", key=True), Col("type", "left", text=True), Col("MACs"),
                    Col("share")], title=f"by module (depth {r.depth})")
    for m in r.by_module:
        table.add_row("  " * (m.depth - 1) + m.name, m.type, macs(m.macs), share(m.macs / r.macs) if m.macs else "-")
    return table


def operator_table(title: str, ops: list[Any]) -> Fitted:
    table = Fitted([Col("operator", "left", key=True), Col("MACs"), Col("FLOPs"), Col("share")],
                   title=title)
    for o in ops:
        table.add_row(o.op, macs(o.macs), macs(2 * o.macs), share(o.share))
    return table


def _backward(r: FlopReport) -> list[Any]:
    assert r.backward_macs is not None
    train_macs = macs(r.train_forward_macs or 0)
    train = "" if r.train_forward_macs == r.macs else f", its forward in train mode {train_macs} MACs"
    ratio = f"{r.backward_ratio:.2f}" if r.backward_ratio is not None else "-"
    params = count(r.trainable_params or 0)
    return [Text.assemble("backward MACs ", (macs(r.backward_macs), "bold"), " · FLOPs ",
                          (macs(2 * r.backward_macs), "bold"), f"  ({params} trainable params)"),
            Text(f"forward + backward FLOPs {macs(r.training_flops or 0)} (backward/forward {ratio}{train})"),
            operator_table("backward by operator", r.backward_by_operator)]
