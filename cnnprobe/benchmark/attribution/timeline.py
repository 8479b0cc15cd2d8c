"""One more step after the timed ones, traced: every module call's span forward and backward, the step's phases,
torch.profiler's operators and the allocator's live bytes, on one clock.

The step runs under torch.profiler (its operators and the allocator's events) after a first step in the same
session, so that what the traced step frees was allocated under the profiler's eye. The profiler's clock and
`perf_counter` are tied at one marker around the step. On CUDA every boundary synchronises first, so the
host's timeline is the device's: this step is slower than the timed ones, which never synchronise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from ...memory.allocator import live_bytes, session
from ...trace.spans import FORWARD, Span, Spans
from ...training.devices import NoClock
from ...training.steps import Step
from .join import Counted
from .record import Timeline, TraceEvent

MARK = "cnnprobe.profile.step"
MODULES, PHASES, OPERATORS = "modules", "phases", "operators"


class _Recorder:
    """Spans and phases stamped in ns on `perf_counter`, after a synchronisation on CUDA."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.open: dict[tuple[int, str], int] = {}
        self.spans: list[tuple[Span, str, int, int]] = []
        self.phases: list[tuple[str, int]] = []

    def now(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter_ns()

    def begin(self, span: Span, direction: str) -> None:
        self.open[(id(span), direction)] = self.now()

    def end(self, span: Span, direction: str) -> None:
        start = self.open.pop((id(span), direction), None)
        if start is not None:
            self.spans.append((span, direction, start, self.now()))

    def phase(self, name: str) -> None:
        self.phases.append((name, self.now()))


def trace_step(step: Step, fn: Callable[[], None], max_depth: int | None,
               counted: dict[tuple[str, int], Counted]) -> Timeline:
    """The timeline of one step; `counted` holds each call's counts, by (path, call index)."""
    setup = step.setup
    assert setup.raw is not None
    recorder = _Recorder(setup.device.startswith("cuda"))
    spans = Spans(setup.raw, recorder, max_depth=max_depth)
    with session() as prof:
        fn()
        held = live_bytes(t for ts in step.held().values() for t in ts)
        step.marks = recorder
        try:
            with spans:
                before = time.perf_counter_ns()
                with torch.profiler.record_function(MARK):
                    after = time.perf_counter_ns()
                    fn()
        finally:
            step.marks = NoClock()
    origin = before  # the step's start: every stamp and every profiler event inside the marker comes after
    timeline = Timeline(device=setup.device, note=(
        "one step after the timed ones, under torch.profiler" + (", synchronised at every module boundary"
                                                                 if recorder.cuda else "")))
    timeline.events.extend(_phase_events(recorder.phases, origin))
    timeline.events.extend(_span_events(recorder.spans, origin, counted))
    ops, memory = _profiler_events(prof, (before + after) // 2, origin, held, setup.device)
    timeline.events.extend(ops)
    timeline.memory = memory
    return timeline


def _us(ns: int, origin: int) -> float:
    return (ns - origin) / 1e3


def _phase_events(phases: list[tuple[str, int]], origin: int) -> list[TraceEvent]:
    return [TraceEvent(name, "phase", PHASES, _us(start, origin), (stop - start) / 1e3)
            for (name, start), (_, stop) in zip(phases, phases[1:])]


def _span_events(spans: list[tuple[Span, str, int, int]], origin: int,
                 counted: dict[tuple[str, int], Counted]) -> list[TraceEvent]:
    out = []
    for span, direction, start, stop in spans:
        c = counted.get((span.name, span.index))
        args: dict[str, Any] = {"module": span.type, "depth": span.depth, "call": span.index}
        if c is not None:
            forward = direction == FORWARD
            args["macs"] = c.forward_macs if forward else (c.backward_macs or 0)
            args["bytes"] = c.forward_bytes if forward else c.backward_bytes
        label = span.name or "(model)"
        out.append(TraceEvent(label if span.index == 1 else f"{label} (call {span.index})", direction, MODULES,
                              _us(start, origin), (stop - start) / 1e3, args))
    return sorted(out, key=lambda e: (e.start_us, -e.duration_us))


def _profiler_events(prof: Any, mark_ns: int, origin: int, held: int,
                     device: str) -> tuple[list[TraceEvent], list[tuple[float, int]]]:
    """The outermost operators inside the marker, and the live bytes at every allocation and free, on
    `perf_counter`'s clock (the marker's start is `mark_ns` there)."""
    from torch._C._profiler import _EventType

    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    marker = None
    while stack and marker is None:
        event = stack.pop()
        if event.name == MARK:
            marker = event
        stack.extend(event.children)
    if marker is None:
        return [], []
    shift = mark_ns - marker.start_time_ns
    ops: list[TraceEvent] = []
    allocations: list[tuple[int, int, int]] = []
    _walk(list(prof.profiler.kineto_results.experimental_event_tree()), ops, allocations, shift, origin, device,
          _EventType, inside_op=False)
    ops.sort(key=lambda e: (e.start_us, -e.duration_us))
    allocations.sort()
    start, stop = marker.start_time_ns + shift, marker.end_time_ns + shift
    ops = [e for e in ops if start <= e.start_us * 1e3 + origin <= stop]
    before = [a for a in allocations if a[0] < start]
    inside = [a for a in allocations if start <= a[0] <= stop]
    if not inside:
        return ops, []
    base = before[-1][2] if before else inside[0][2] - inside[0][1]
    memory = [(_us(start, origin), held)] + [(_us(t, origin), held + total - base) for t, _, total in inside]
    return ops, memory


def _walk(events: list[Any], ops: list[TraceEvent], allocations: list[tuple[int, int, int]], shift: int,
          origin: int, device: str, kinds: Any, *, inside_op: bool) -> None:
    for event in events:
        if event.tag == kinds.Allocation:
            fields = event.typed[1]
            if fields.device.type == device.split(":")[0]:
                allocations.append((event.start_time_ns + shift, int(fields.alloc_size),
                                    int(fields.total_allocated)))
            continue
        is_op = event.tag == kinds.TorchOp and event.name != MARK
        if is_op and not inside_op:
            ops.append(TraceEvent(event.name, "operator", OPERATORS, _us(event.start_time_ns + shift, origin),
                                  max(0, event.end_time_ns - event.start_time_ns) / 1e3))
        _walk(event.children, ops, allocations, shift, origin, device, kinds, inside_op=inside_op or is_op)
