"""Counting one step's tensor memory storage by storage, for bench's breakdown and the prediction alike."""

from __future__ import annotations

from collections.abc import Callable

from ..training.devices import NoClock
from ..training.steps import Step
from .tracker import MemoryPeak, MemoryTracker


def count_step(step: Step, fn: Callable[[], None], *, by_module: bool = False, record_ops: bool = False) -> MemoryPeak:
    """One more step, its tensor memory counted storage by storage (and, `by_module`, the activations it saves
    for backward credited to the modules that made them; `record_ops`, every operator call)."""
    setup = step.setup
    tracker = MemoryTracker(step.held(), params=setup.trainable(), optimizer=step.optimizer, round_to=setup.round_to,
                            model=setup.raw if by_module else None, record_ops=record_ops)
    step.marks = tracker
    try:
        with tracker:
            fn()
    finally:
        step.marks = NoClock()
        tracker.close()
    return tracker.result()
