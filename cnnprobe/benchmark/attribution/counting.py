"""The counted pass: one more step of the run under cnnprobe's counter, its operators' MACs and bytes
attributed to the rows.

The step is the one timed, on the same model and device, frozen as it was and in its steady state: backward
MACs are those autograd really computes, a detection model's operators run on the candidates this input
really leaves (on meta they would run to the model's caps), and autocast's lower-precision copies are bytes
as they move. Counting costs one step under a dispatch mode; nothing is built again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ...core.enums import Mode
from ...trace.costs import Cost, CostCounter, StepCosts
from ...trace.spans import frontier
from ...training.devices import NoClock
from ...training.steps import Step
from .clock import LOSS, OPTIMIZER, OUTSIDE, STEP_OUTSIDE
from .join import Counted


@dataclass
class Counts:
    """Per row (its calls summed), per unattributed piece, and per call (path, index) for the timeline."""

    rows: dict[str, Counted] = field(default_factory=dict)
    pieces: dict[str, Counted] = field(default_factory=dict)
    calls: dict[tuple[str, int], Counted] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _counted(cost: Cost, backward: bool) -> Counted:
    return Counted(cost.forward_macs, cost.backward_macs if backward else None, cost.forward_bytes,
                   cost.backward_bytes)


def count_rows(step: Step, fn: Callable[[], None], depth: int) -> Counts:
    """One more step of the run, counted: the rows at `depth` (-1: the leaves), the pieces between them, and
    every call."""
    assert step.setup.raw is not None
    counter = CostCounter(step.setup.raw)  # every call, for the timeline; the rows are cut at `depth` from it
    step.marks = counter
    try:
        with counter:
            fn()
    finally:
        step.marks = NoClock()
    counts = _split(counter.costs(), depth, training=step.mode is not Mode.FORWARD,
                    optimizer=step.mode is Mode.TRAIN_STEP)
    counts.notes = counter.tracer.notes()  # MACs counted apart (interpolation, RoIAlign), as `flops` says
    return counts


def _split(costs: StepCosts, depth: int, *, training: bool, optimizer: bool) -> Counts:
    out = Counts()
    by_span = {id(s.span): s for s in costs.walk()}
    model, covered = Cost(), Cost()
    for root in costs.roots:
        model = model + root.total
        for span in frontier(root.span, depth):
            cost = by_span[id(span)].total
            covered = covered + cost
            row = out.rows.get(span.name)
            counted = _counted(cost, span.has_backward)
            out.rows[span.name] = counted if row is None else _sum(row, counted)
        for s in root.walk():
            out.calls[(s.name, s.span.index)] = _counted(s.total, s.span.has_backward)
    outside = Cost(model.forward_macs - covered.forward_macs, model.backward_macs - covered.backward_macs,
                   model.forward_bytes - covered.forward_bytes, model.backward_bytes - covered.backward_bytes)
    out.pieces[OUTSIDE] = _counted(outside, training)
    phases = costs.phases
    forward = [p for name, p in phases.items() if name not in ("backward", "optimizer")]
    loss = Cost(sum(p.macs for p in forward), phases["backward"].macs if "backward" in phases else 0,
                sum(p.bytes for p in forward), phases["backward"].bytes if "backward" in phases else 0)
    out.pieces[LOSS if training else STEP_OUTSIDE] = _counted(loss, training)
    if optimizer:
        step = phases.get("optimizer")
        out.pieces[OPTIMIZER] = Counted(step.macs if step else 0, None, step.bytes if step else 0, 0)
    return out


def _sum(a: Counted, b: Counted) -> Counted:
    backward = None if a.backward_macs is None and b.backward_macs is None else \
        (a.backward_macs or 0) + (b.backward_macs or 0)
    return Counted(a.forward_macs + b.forward_macs, backward, a.forward_bytes + b.forward_bytes,
                   a.backward_bytes + b.backward_bytes)



