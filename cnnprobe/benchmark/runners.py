"""`bench`'s runners, as in timm's benchmark.py: a setup step, then one runner per mode.

The setup (`training.setup`) builds what every mode shares and the step itself
is `training.steps`. Each runner warms its step up, times it in blocks interleaved with a reference
kernel until the median is stable (`blocks`) while a phase clock times forward,
backward and optimizer inside the same steps, counts one more steady-state step's tensor memory, and
returns a `ModeResult`. Device specifics stay in the setup and `devices`.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from ..core.enums import Mode
from ..memory.allocator import live_bytes, step_peak
from ..memory.count import count_step
from ..memory.host import allocator_peak
from ..memory.tracker import MemoryPeak
from ..training.devices import PhaseTime, iqr
from ..training.setup import BenchSetup
from ..training.steps import ForwardBackwardStep, ForwardStep, Step, TrainStep
from .blocks import Reference, Timed, reference_size, time_blocks
from .result import MIN_BLOCKS, ModeResult

__all__ = ["RUNNERS", "BenchSetup", "ModeRunner", "ForwardRunner", "ForwardBackwardRunner", "TrainStepRunner"]


def phase_figures(timed: Timed) -> dict[str, Any]:
    """Each clocked phase's share of the step's median, and its IQR over the same blocks (ModeResult's fields).

    One statistic with the step: its median, split in the shares of time each phase took over the same
    blocks (a median per phase would drop each phase's preemptions, which the step's blocks keep, and the
    phases would no longer add up to the step under load)."""
    out: dict[str, Any] = {}
    total = sum(timed.samples)
    for name in ("forward", "backward", "optimizer"):
        if name in timed.phases:
            out[f"{name}_ms"] = 1e3 * timed.median * sum(timed.phases[name]) / total
            out[f"{name}_iqr_ms"] = 1e3 * iqr(timed.phases[name])
            out["phase_steps"] = timed.steps
    return out


class ModeRunner(Step):
    """Times one mode's step; the phases, statistics and memory are the same for all modes."""

    def __init__(self, setup: BenchSetup, frozen: bool = False, flops: int | None = None) -> None:
        super().__init__(setup, frozen)
        self.flops = flops  # counted FLOPs of one step

    def run(self) -> ModeResult:
        fn = self.step()
        for _ in range(self.config.warmup):
            fn()
        timed = self.time_blocks(fn)
        peak_bytes, breakdown, method, tensor_peak = self.memory(fn) if self.config.memory else (0, {}, "", None)
        return ModeResult.timed(
            self.mode.value, timed.samples, self.setup.batch, runs=timed.steps, peak_memory_bytes=peak_bytes,
            flops=self.flops, frozen=self.frozen, memory_breakdown=breakdown, memory_method=method,
            tensor_peak_bytes=tensor_peak, blocks=len(timed.samples), steps_per_block=timed.number,
            few_blocks=len(timed.samples) < MIN_BLOCKS, reference_n=timed.reference_n,
            reference_ms=1e3 * timed.reference_median, reference_samples_ms=[1e3 * s for s in timed.reference],
            step_per_reference=statistics.median(timed.ratios), **phase_figures(timed),
        )

    def time_blocks(self, fn: Callable[[], None]) -> Timed:
        """Blocks of timed steps, each followed by a block of the reference kernel (see `blocks`)."""
        device = self.setup.device
        reference = Reference(device, reference_size(self.flops, device))

        def arm(marks: Any) -> None:
            self.marks = marks

        max_time = self.config.max_time or 10 * self.config.min_time
        return time_blocks(fn, reference, arm, device, self.config.min_time, max_time)

    def time(self, fn: Callable[[], None]) -> tuple[float, float, int, list[float], dict[str, PhaseTime]]:
        """Timed steps until the median is stable, the phases clocked inside them:
        (median s, IQR s, steps, per-block samples s, phases)."""
        timed = self.time_blocks(fn)
        phases = {name: PhaseTime(1e3 * statistics.median(v), 1e3 * iqr(v), timed.steps)
                  for name, v in timed.phases.items()}
        return timed.median, timed.iqr, timed.steps, list(timed.samples), phases

    def count_memory(self, fn: Callable[[], None], *, by_module: bool = False, record_ops: bool = False) -> MemoryPeak:
        return count_step(self, fn, by_module=by_module, record_ops=record_ops)

    def memory(self, fn: Callable[[], None]) -> tuple[int, dict[str, int], str, int]:
        """The allocator's peak over one more steady-state step, run as it is timed (no dispatch mode):
        on CUDA `max_memory_allocated`, on the CPU the profiler's allocation events above what is live
        when the step starts. A storage-by-storage count of another step gives the breakdown, and what
        the allocator held above it is `workspace` (operators' internal allocations; below zero where the
        counting mode changed the program: autograd cannot steal a gradient under one): (peak, breakdown,
        method, tensor peak). A compiled
        model is counted on its eager step (the tracker cannot see into compiled kernels)."""
        counted = self.count_memory(self.step(self.setup.raw) if self.config.compile else fn)
        if self.setup.device == "cuda":
            peak = allocator_peak(fn, self.setup.device)
        else:
            peak = live_bytes(t for ts in self.held().values() for t in ts) + step_peak(fn).peak_bytes
        return peak, {**counted.breakdown, "workspace": peak - counted.peak_bytes}, "allocator", \
            counted.peak_bytes


class ForwardRunner(ForwardStep, ModeRunner):
    """Times inference."""


class ForwardBackwardRunner(ForwardBackwardStep, ModeRunner):
    """Times a forward and backward pass."""


class TrainStepRunner(TrainStep, ModeRunner):
    """Times a whole training step."""


RUNNERS: dict[Mode, type[ModeRunner]] = {r.mode: r for r in (ForwardRunner, ForwardBackwardRunner, TrainStepRunner)}
