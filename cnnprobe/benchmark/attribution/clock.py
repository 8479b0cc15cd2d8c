"""Timestamps at every module boundary and step phase, turned into one figure per row and step.

On the CPU a timestamp is a `perf_counter` reading (CPU work is synchronous). On CUDA it is an event recorded
on the current stream at the hook, so timing a module adds no synchronisation to the step; the events are
read once per block, after one synchronisation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ...trace.spans import BACKWARD, FORWARD, Span, frontier

OUTSIDE, LOSS, OPTIMIZER, HOOKS = "outside modules", "loss", "optimizer", "profiler hooks"
STEP_OUTSIDE = "outside the model"  # a forward step's LOSS: the step's own work around the model's call


@dataclass
class StepSample:
    """One step, partitioned at one depth, in seconds: each row's calls summed."""

    rows: dict[str, list[float | None]] = field(default_factory=dict)  # name -> [forward, backward or None]
    calls: dict[str, int] = field(default_factory=dict)
    pieces: dict[str, list[float | None]] = field(default_factory=dict)  # OUTSIDE, LOSS, OPTIMIZER
    step_s: float = 0.0


class StepClock:
    """A `spans.Listener` and a step's `marks` at once: it stamps both, and makes a StepSample of each step
    when its block is read. `roots()` gives the span trees of the steps so far (Spans.roots), to let go."""

    def __init__(self, device: str, depth: int, roots: Callable[[], list[Span]],
                 stamp: Callable[[], Any] | None = None,
                 hook_ns: Callable[[], tuple[int, int]] | None = None) -> None:
        self.cuda = device.startswith("cuda")
        self.depth = depth
        self.roots = roots
        # the spans' own running cost so far, ns (the CPU's time): inside the model's call, and around it
        self.hook_ns = hook_ns or (lambda: (0, 0))
        self._hooks_at = (0, 0)
        self._stamp = stamp or (self._event if self.cuda else time.perf_counter)
        self._open: dict[tuple[int, str], Any] = {}
        self._spans: dict[tuple[int, str], tuple[Any, Any]] = {}
        self._phases: list[tuple[str, Any]] = []
        self._steps: list[tuple[list[tuple[str, Any]], dict[tuple[int, str], tuple[Any, Any]], int,
                                tuple[float, float]]] = []
        self.samples: list[StepSample] = []
        self.last: list[Span] = []  # the call trees of the last step read: the rows' types and depths

    @staticmethod
    def _event() -> Any:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, start: Any, stop: Any) -> float:
        return start.elapsed_time(stop) / 1e3 if self.cuda else stop - start

    # ---- spans.Listener
    def begin(self, span: Span, direction: str) -> None:
        self._open[(id(span), direction)] = self._stamp()

    def end(self, span: Span, direction: str) -> None:
        start = self._open.pop((id(span), direction), None)
        if start is not None:
            self._spans[(id(span), direction)] = (start, self._stamp())

    # ---- the step's marks
    def phase(self, name: str) -> None:
        self._phases.append((name, self._stamp()))
        if name == "forward" and len(self._phases) == 1:
            self._hooks_at = self.hook_ns()
        if name == "end":
            now = self.hook_ns()
            hooks = ((now[0] - self._hooks_at[0]) / 1e9, (now[1] - self._hooks_at[1]) / 1e9)
            self._steps.append((self._phases, self._spans, len(self.roots()), hooks))
            self._phases, self._spans, self._open = [], {}, {}

    def close_block(self) -> None:
        """Read the block's stamps into samples (one synchronisation on CUDA) and let its spans go."""
        if self.cuda and self._steps:
            torch.cuda.synchronize()
        roots = self.roots()
        first = 0
        for phases, spans, count, hooks in self._steps:
            step_roots = roots[first:count]
            first = count
            self.samples.append(self._sample(phases, spans, step_roots, hooks))
            self.last = step_roots
        self._steps = []
        roots.clear()

    def _duration(self, spans: dict[tuple[int, str], tuple[Any, Any]], span: Span, direction: str) -> float | None:
        stamps = spans.get((id(span), direction))
        return self.seconds(*stamps) if stamps is not None else None

    def _sample(self, phases: list[tuple[str, Any]], spans: dict[tuple[int, str], tuple[Any, Any]],
                roots: list[Span], hooks: tuple[float, float] = (0.0, 0.0)) -> StepSample:
        """One step's rows and pieces. On the CPU the hooks' own time (finding each call's autograd nodes, in the
        gaps between a parent's children) is its own piece, not the parent's: on CUDA it is host time, which the
        device's timeline does not show."""
        sample = StepSample()
        phase_s: dict[str, float] = {}
        for (name, start), (_, stop) in zip(phases, phases[1:]):
            phase_s[name] = phase_s.get(name, 0.0) + self.seconds(start, stop)
        sample.step_s = self.seconds(phases[0][1], phases[-1][1]) if len(phases) > 1 else 0.0
        model = [0.0, 0.0]
        covered = [0.0, 0.0]
        for root in roots:
            model[0] += self._duration(spans, root, FORWARD) or 0.0
            model[1] += self._duration(spans, root, BACKWARD) or 0.0
            for span in frontier(root, self.depth):
                forward = self._duration(spans, span, FORWARD) or 0.0
                backward = self._duration(spans, span, BACKWARD)
                row = sample.rows.setdefault(span.name, [0.0, None])
                row[0] = (row[0] or 0.0) + forward
                if backward is not None:
                    row[1] = (row[1] or 0.0) + backward
                sample.calls[span.name] = sample.calls.get(span.name, 0) + 1
                covered[0] += forward
                covered[1] += backward or 0.0
        training = "backward" in phase_s
        around = phase_s.get("forward", 0.0) - model[0]
        inside, outside = (0.0, 0.0) if self.cuda else (min(hooks[0], max(0.0, model[0] - covered[0])),
                                                         min(hooks[1], max(0.0, around)))
        sample.pieces[OUTSIDE] = [model[0] - covered[0] - inside, model[1] - covered[1] if training else None]
        sample.pieces[LOSS if training else STEP_OUTSIDE] = [  # the loss (and zero_grad before the model's call)
            around - outside, phase_s["backward"] - model[1] if training else None]
        if inside + outside:
            sample.pieces[HOOKS] = [inside + outside, None]
        if "optimizer" in phase_s:
            sample.pieces[OPTIMIZER] = [phase_s["optimizer"], None]
        return sample
