"""`cnnprobe memory`: the predicted peak of each step, what its tensors hold, what freezing saves, the modules
whose activations backward keeps, and the batch a budget allows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text

from ..core.enums import MemoryCategory
from ..core.formatting import inputs, nbytes, share
from .tables import Col, Fitted, mode_label, note_lines, weights_cell

if TYPE_CHECKING:
    from ..memory.predict import MemoryReport

# the prediction table's columns: the buffers are too small to earn one, the workspaces have their own line
COLUMNS = tuple(c for c in MemoryCategory if c not in (MemoryCategory.BUFFERS, MemoryCategory.WORKSPACE))


def category_label(key: str) -> str:
    """A breakdown's key as prose says it: `optimizer state`; a key cnnprobe does not know, as it is."""
    try:
        return MemoryCategory(key).label
    except ValueError:
        return key


def memory_lines(r: MemoryReport, depth: int, top: int) -> list[Any]:
    header = Text.assemble((r.model, "bold"), f" ({r.source}) · batch {r.batch} · input "
                                              f"{inputs(r.input_size, r.inputs)}")
    plan = r.plan
    what = ("freeze all" if plan["freeze_all"] else f"freeze all except {plan['freeze_except']}"
            if plan["freeze_except"] else f"freeze {plan['freeze']}" if plan["freeze"] else "nothing frozen")
    pieces: list[Any] = [header, Text(f"predicted for {r.device} · {r.dtype}" + (" (autocast)" if r.dtype != "float32"
                                      else "") + f" · optimizer {r.optimizer} · {what}"
                                      + (" · BatchNorm frozen" if plan["freeze_bn"] else "")),
                         Text("steady-state peak (the second step onward), and what its tensors hold at their own "
                              "peak"),
                         prediction_table(r)]
    workspace = MemoryCategory.WORKSPACE.value
    above = [f"{mode_label(m.mode, m.frozen)} {nbytes(m.breakdown[workspace])}" for m in r.results
             if m.breakdown.get(workspace)]
    if above:
        pieces.append(Text(f"{MemoryCategory.WORKSPACE.label} (their own allocations, calibrated on this machine) in "
                           "the peak, above the tensors: " + ", ".join(above)))
    pieces += _savings(r)
    pieces += saved_lines(r, depth, top)
    if r.budget is not None:
        b = r.budget
        pieces.append(Text.assemble(
            f"--budget {nbytes(b.budget_bytes, 3)}: the largest batch whose {b.mode} fits is ", (str(b.batch), "bold"),
            f" (predicted {nbytes(b.peak_bytes, 3)}); batch {b.batch + 1} needs {nbytes(b.next_peak_bytes, 3)}"))
    return pieces + note_lines(r.notes)


def prediction_table(r: MemoryReport) -> Fitted:
    """One row per mode: the predicted peak, and its tensors by category."""
    columns = [Col("mode", "left", key=True), *([Col("weights", "left", key=True)] if r.freezing else []),
               Col("peak"), *(Col(c.heading) for c in COLUMNS)]
    table = Fitted(columns, collapse_padding=True)
    for m in r.results:
        cells = [mode_label(m.mode), *([weights_cell(m.mode, m.frozen)] if r.freezing else []),
                 nbytes(m.predicted_peak_bytes)]
        cells += [nbytes(m.breakdown[c.value]) if m.breakdown.get(c.value) else "-" for c in COLUMNS]
        table.add_row(*cells)
    return table


def _savings(r: MemoryReport) -> list[Text]:
    pieces = []
    for mode in ("forward_backward", "train_step"):
        saving = r.freezing_saves(mode)
        if saving is not None:
            pieces.append(Text(f"freezing saves {nbytes(saving['total'])} of a {mode}'s peak: "
                               f"{nbytes(saving['gradients_and_optimizer_state'])} of gradients and optimizer state, "
                               f"{nbytes(saving['saved_for_backward'])} of activations saved for backward"))
    return pieces


def saved_lines(r: MemoryReport, depth: int, top: int) -> list[Any]:
    """The modules whose activations backward keeps, largest first."""
    modules = r.top_modules(depth, top)
    if not modules:
        return []
    saved = Fitted([Col("module", "left", key=True), Col("saved"), Col("share")])
    for name, size, part in modules:
        saved.add_row(name, nbytes(size), share(part))
    return [Text(f"activations saved for backward, by module (depth {depth}, top {top})"), saved]
