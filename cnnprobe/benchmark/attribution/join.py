"""Rows from the timed steps and the counted pass: medians and IQRs of each row's time, its counts beside them,
and the roofline's reading of both; a roof that a row beats is measured again, then raised to what the row
reached, so that a share of the roofline is never above 100%."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from ...training.devices import iqr
from .clock import StepSample
from .record import ModuleProfile, Point, Roof


@dataclass
class Counted:
    """What the counter saw of one row, per step (its calls summed): MACs and bytes, forward and backward."""

    forward_macs: int = 0
    backward_macs: int | None = None
    forward_bytes: int = 0
    backward_bytes: int = 0


@dataclass
class RowInfo:
    """What the model says of a row: its type, depth, and whether its parameters are all frozen."""

    type: str
    depth: int
    frozen: bool


def _stats(values: list[float]) -> tuple[float, float]:
    return 1e3 * statistics.median(values), 1e3 * iqr(values)


def rows(samples: list[StepSample], counted: dict[str, Counted], info: dict[str, RowInfo],
         pieces: dict[str, Counted]) -> tuple[list[ModuleProfile], dict[str, ModuleProfile]]:
    """The rows, in the order the step first ran them, and the unattributed pieces, with the times measured
    over `samples` and the counts of the counted pass (a row it did not see counts nothing)."""
    order: dict[str, None] = {}
    for sample in samples:
        order.update(dict.fromkeys(sample.rows))
    modules = [_row(name, [s.rows.get(name) for s in samples], counted.get(name, Counted()),
                    info.get(name, RowInfo("", 0, False)), max((s.calls.get(name, 0) for s in samples), default=0))
               for name in order]
    named = {}
    for name in dict.fromkeys(k for s in samples for k in s.pieces):
        named[name] = _row(name, [s.pieces.get(name) for s in samples], pieces.get(name, Counted()),
                           RowInfo("", 0, False), 1)
    return modules, named


def _row(name: str, timed: list[list[float | None] | None], counted: Counted, info: RowInfo,
         calls: int) -> ModuleProfile:
    forward = [t[0] or 0.0 if t is not None else 0.0 for t in timed]
    backward = [t[1] for t in timed if t is not None and t[1] is not None]
    forward_ms, forward_iqr = _stats(forward)
    backward_ms, backward_iqr = _stats(backward) if backward else (None, None)
    return ModuleProfile(
        name=name, type=info.type, depth=info.depth, calls=calls, forward_ms=forward_ms, forward_iqr_ms=forward_iqr,
        backward_ms=backward_ms, backward_iqr_ms=backward_iqr, forward_macs=counted.forward_macs,
        backward_macs=counted.backward_macs if counted.backward_macs is not None else
        (None if backward_ms is None else 0),
        forward_bytes=counted.forward_bytes, backward_bytes=counted.backward_bytes, frozen=info.frozen)


def points(profiles: list[ModuleProfile]) -> list[tuple[str, Point]]:
    """Every row's whole and each of its directions, as the roofline reads them."""
    out = []
    for p in profiles:
        out.append((p.name, Point(p.total_ms, p.total_macs, p.bytes)))
        out.extend((f"{p.name} {direction}", point) for direction, point in p.points().items())
    return out


def raise_roof(roof: Roof, profiles: list[ModuleProfile], *, compute: Callable[[float, str], tuple[float, str, str]],
               bandwidth: Callable[[float, str], tuple[float, str, str]]) -> Roof:
    """A roof no row's point beats: `compute(achieved, what)` and `bandwidth(achieved, what)` answer the roof
    (value, source, detail) that holds `achieved` (bench's `at_least`: measured again, then the figure itself)."""
    found = [(name, p) for name, p in points(profiles) if p.ms > 0]
    best_flops = max(found, key=lambda item: item[1].achieved_tflops or 0.0, default=None)
    if best_flops is not None and (best_flops[1].achieved_tflops or 0.0) > roof.peak_tflops:
        roof.peak_tflops, roof.peak_source, roof.peak_detail = compute(best_flops[1].achieved_tflops or 0.0,
                                                                       best_flops[0])
    best_bytes = max(found, key=lambda item: item[1].achieved_gbps or 0.0, default=None)
    if best_bytes is not None and (best_bytes[1].achieved_gbps or 0.0) > roof.bandwidth_gbps:
        roof.bandwidth_gbps, roof.bandwidth_source, roof.bandwidth_detail = bandwidth(
            best_bytes[1].achieved_gbps or 0.0, best_bytes[0])
    return roof


def read_roofline(profiles: list[ModuleProfile], roof: Roof, step_ms: float) -> None:
    """Each row's intensity, achieved rates, bound and share of its roofline bound, over both directions."""
    for p in profiles:
        point = Point(p.total_ms, p.total_macs, p.bytes)
        p.intensity = point.intensity
        p.achieved_tflops = point.achieved_tflops
        p.achieved_gbps = point.achieved_gbps
        p.share_of_step = p.total_ms / step_ms if step_ms > 0 else None
        if p.total_ms > 0 and (point.flops or point.bytes):
            p.bound = roof.bound(point.flops, point.bytes)
            p.roofline_share = min(1.0, roof.allowed_ms(point.flops, point.bytes) / p.total_ms)
