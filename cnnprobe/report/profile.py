"""`cnnprobe profile`: the rows of one step, forward and backward, beside their counts and the roofline; the
unattributed pieces; the overhead; the roofs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text

from ..core.formatting import count, macs, ms, nbytes, share
from .tables import Col, Fitted, note_lines

if TYPE_CHECKING:
    from ..benchmark.attribution.record import ModuleProfile, ProfileReport


def _timed(value: float | None, spread: float | None) -> str:
    if value is None:
        return "-"
    return f"{ms(value)} ±{ms(spread)}" if spread else ms(value)


def _rate(value: float | None, digits: int = 3) -> str:
    return "-" if not value else f"{value:.{digits}g}"


def _cells(p: ModuleProfile, label: str, kind: str) -> list[str | Text]:
    return [label, kind, count(p.calls) if p.calls else "", _timed(p.forward_ms, p.forward_iqr_ms),
            _timed(p.backward_ms, p.backward_iqr_ms), share(p.share_of_step) if p.share_of_step is not None else "-",
            macs(p.forward_macs), "-" if p.backward_macs is None else macs(p.backward_macs),
            nbytes(p.bytes) if p.bytes else "-", _rate(p.intensity), _rate(p.achieved_tflops), _rate(p.achieved_gbps),
            p.bound or "-", share(p.roofline_share) if p.roofline_share is not None else "-"]


COLUMNS = [Col("module", "left", text=True, key=True), Col("type", "left", text=True), Col("calls"),
           Col("forward ms"), Col("backward ms"), Col("of step"), Col("fwd MACs"), Col("bwd MACs"), Col("moved"),
           Col("FLOP/B"), Col("TFLOP/s"), Col("GB/s"), Col("bound", "left"), Col("of roof")]


def shown_rows(r: ProfileReport, top: int | None) -> tuple[list[ModuleProfile], list[ModuleProfile]]:
    """The rows shown (in the order the step runs them) and those folded into one line: the `top` slowest."""
    if top is None or len(r.modules) <= top:
        return list(r.modules), []
    slowest = {id(p) for p in sorted(r.modules, key=lambda p: -p.total_ms)[:top]}
    return [p for p in r.modules if id(p) in slowest], [p for p in r.modules if id(p) not in slowest]


def profile_table(r: ProfileReport, top: int | None = None) -> Fitted:
    table = Fitted(COLUMNS, collapse_padding=True)
    shown, folded = shown_rows(r, top)
    for p in shown:
        table.add_row(*_cells(p, p.name, p.type + (" (frozen)" if p.frozen else "")))
    if folded:
        forward = sum(p.forward_ms for p in folded)
        backward = sum(p.backward_ms or 0.0 for p in folded)
        table.add_row(f"({len(folded)} more rows)", "", "", ms(forward), ms(backward) if backward else "-",
                      share((forward + backward) / r.step_ms) if r.step_ms else "-", *[""] * 8)
    for name, p in r.unattributed.items():
        table.add_row(*_cells(p, f"[{name}]", "unattributed"))
    return table


def profile_lines(r: ProfileReport, top: int | None = None) -> list[Any]:
    depth = "the leaves" if r.depth < 0 else f"depth {r.depth}"
    plan = " · freezing plan applied" if r.frozen else ""
    pieces: list[Any] = [
        Text.assemble((r.model, "bold"), f" · batch {r.batch} · input {'×'.join(map(str, r.input_size))} · "
                                         f"{r.mode}{plan}"),
        Text(f"{r.device_name} ({r.device}) · {r.dtype} · {r.threads} thread{'s' if r.threads != 1 else ''} · rows at "
             f"{depth}, each the median (± IQR) over {r.steps} profiled steps"),
        profile_table(r, top),
        Text(f"rows and unattributed pieces add up to {ms(r.attributed_ms)} ms; the profiled step takes "
             f"{ms(r.step_ms)} ms ±{ms(r.step_iqr_ms)}, the same step without hooks {ms(r.unprofiled_step_ms)} ms "
             f"±{ms(r.unprofiled_iqr_ms)}"),
        Text(f"hooks cost {100 * r.overhead:+.1f}% (profiled against unprofiled blocks, interleaved in this run)"),
        Text(f"roofs: compute {r.roof.peak_tflops:.3g} TFLOP/s ({r.roof.peak_source}: {r.roof.peak_detail}); "
             f"bandwidth {r.roof.bandwidth_gbps:.3g} GB/s ({r.roof.bandwidth_source}: {r.roof.bandwidth_detail}); "
             f"ridge {r.roof.ridge:.3g} FLOP/B"),
        Text("of roof: the time the roofline allows for the row's FLOPs and bytes ÷ the time measured; bytes are "
             "each operator's inputs, weights and outputs (nothing assumed to stay in cache)"),
    ]
    idle = [p.name for p in r.modules if p.backward_ms is None and r.mode != "forward"]
    if idle:
        pieces.append(Text(f"no backward runs for {', '.join(idle)}: autograd has no node of theirs to run "
                           "(frozen with inputs that need no gradient, or returning their input unchanged)"))
    return pieces + note_lines(r.notes)
