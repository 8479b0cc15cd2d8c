"""Timing a step in blocks, each followed by a block of a fixed reference kernel.

A shared machine changes speed under a benchmark: another job starts, a core
is taken, the clock is throttled. A step's time alone cannot tell that from a
slower model. So every block of timed steps is followed by a block of a fixed
matrix product (`Reference`, its size derived from the step's counted FLOPs,
so that the same model and batch always get the same one), and each block
yields two figures: seconds per step and seconds per reference call (the mean
of the reference blocks on either side). Their ratio, block by block, is what
the regression gate judges.

The phase clock runs inside the same timed steps; each phase, like the step,
gets one figure per block (its mean over the block's steps), and the medians
over blocks of both are the figures reported: one statistic on both sides.
The calibration call that sizes the blocks is not timed.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ..training.devices import NoClock, PhaseClock, iqr, synchronize
from .result import MIN_BLOCKS, is_noisy

BLOCK_SHARE = 20  # a block lasts about --min-time / BLOCK_SHARE ...
MIN_BLOCK_S = 0.01  # ... and at least this long
REFERENCE_SHARE = 0.5  # a reference block lasts about this share of a step block
CPU_SIZES = (64, 1024)  # smallest and largest reference GEMM
CUDA_SIZES = (256, 4096)
DEFAULT_SIZE = 256  # when the step's FLOPs are not counted


def reference_size(flops: int | None, device: str) -> int:
    """The side of the reference GEMM: one product of about the step's FLOPs, a multiple of 32, clamped."""
    low, high = CUDA_SIZES if device.startswith("cuda") else CPU_SIZES
    if not flops:
        return max(low, min(high, DEFAULT_SIZE))
    n = 32 * round((flops / 2) ** (1 / 3) / 32)
    return max(low, min(high, n))


class Reference:
    """A square float32 matrix product on the device, always the same for one size: the machine's speed,
    compute and allocation both."""

    def __init__(self, device: str, n: int) -> None:
        generator = torch.Generator().manual_seed(n)
        self.n = n
        self.a = torch.randn(n, n, generator=generator).to(device)
        self.b = torch.randn(n, n, generator=generator).to(device)

    def __call__(self) -> None:
        torch.mm(self.a, self.b)  # allocating its output, as a step allocates its activations

    @property
    def flops(self) -> int:
        return 2 * self.n**3


@dataclass
class Timed:
    """What `time_blocks` measured: one figure per block."""

    samples: list[float]  # seconds per step, one per block
    reference: list[float]  # seconds per reference call, the block after each step block
    number: int  # steps per block
    reference_n: int
    phases: dict[str, list[float]] = field(default_factory=dict)  # seconds per step of each phase, per block

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def iqr(self) -> float:
        return iqr(self.samples)

    @property
    def steps(self) -> int:
        return self.number * len(self.samples)

    @property
    def reference_median(self) -> float:
        return statistics.median(self.reference)

    @property
    def ratios(self) -> list[float]:
        """Step ÷ reference, block by block."""
        return [s / r for s, r in zip(self.samples, self.reference)]


def _block(fn: Callable[[], None], number: int, device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(number):
        fn()
    synchronize(device)
    return time.perf_counter() - start


def _per_block(seconds: float, target: float) -> int:
    return max(1, math.ceil(target / max(seconds, 1e-9))) if seconds < target else 1


def _fastest(fn: Callable[[], None], device: str, target: float) -> float:
    """Seconds per call, the fastest seen over doubling runs of calls until a run lasts a quarter of
    `target`: the fastest, because a preempted call is only ever slower, and a block sized from it stays
    the intended length when the machine is busy at calibration."""
    n, best = 1, math.inf
    while True:
        seconds = _block(fn, n, device)
        best = min(best, seconds / n)
        if seconds >= target / 4 or n >= 2**20:
            return best
        n *= 2


class Kernel(Protocol):
    """What a block alternates with: a callable of fixed work (`Reference`), or the step itself unprofiled."""

    n: int

    def __call__(self) -> None: ...


def time_blocks(fn: Callable[[], None], reference: Kernel, arm: Callable[[Any], None], device: str,
                min_time: float, max_time: float, *, reference_share: float = REFERENCE_SHARE) -> Timed:
    """Blocks of steps with a block of the reference before, between and after them, until `min_time`
    seconds of steps and MIN_BLOCKS blocks whose spread is not noisy (`result.is_noisy`), or `max_time`
    seconds of steps. A step block's reference figure is the mean of the reference blocks on either side
    of it. `arm(marks)` sets where the step reports its phases: a PhaseClock inside the timed blocks only."""
    target = max(MIN_BLOCK_S, min_time / BLOCK_SHARE)
    once = _fastest(fn, device, target)  # calibration: not timed, not clocked
    number = _per_block(once, target)
    # a reference block lasts about half a step block, however long the step, so that a preemption moves
    # it no more than it moves the steps
    ref_number = _per_block(_fastest(reference, device, target), reference_share * max(target, number * once))
    clock = PhaseClock(device)
    timed = Timed([], [], number, reference.n)
    before = _block(reference, ref_number, device) / ref_number
    spent = 0.0
    while True:
        arm(clock)
        try:
            seconds = _block(fn, number, device)
        finally:
            arm(NoClock())
        after = _block(reference, ref_number, device) / ref_number
        for name, mean in clock.close_block().items():
            timed.phases.setdefault(name, []).append(mean)
        timed.samples.append(seconds / number)
        timed.reference.append((before + after) / 2)
        before = after
        spent += seconds
        if spent >= max_time:
            return timed
        if spent >= min_time and len(timed.samples) >= MIN_BLOCKS and not is_noisy(timed.iqr, timed.median):
            return timed
