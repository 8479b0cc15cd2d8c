"""Where steps run: device names, synchronisation, out-of-memory detection, and the clock that times phases.

Everything here that is device-specific stays here, so that runners and the
peak measurement read the same on the CPU and on CUDA.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from ..core.enums import Device
from ..core.errors import CnnprobeError

# torch.utils.benchmark and torch.compile import cpp_extension, which logs a note about a missing CUDA
# toolkit on machines without one; it is not ours to print.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def cpu_name() -> str:
    """The processor's model name (Linux's /proc/cpuinfo), or what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return cpu_name()


def check_device(device: Device | str) -> str:
    """A device that exists here, or one clear error."""
    device = Device(device)
    if device is Device.CUDA and not torch.cuda.is_available():
        raise CnnprobeError("--device cuda: no CUDA device is available here (torch.cuda.is_available() is False)")
    return device.value


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def runnable_elsewhere(readings: int = 5, pause: float = 0.01) -> int | None:
    """Runnable threads on the machine besides this one (Linux's /proc/stat procs_running), the median of a
    few readings; None where the kernel does not say."""
    seen = []
    for i in range(readings):
        try:
            with open("/proc/stat") as f:
                line = next(line for line in f if line.startswith("procs_running"))
        except (OSError, StopIteration):
            return None
        seen.append(int(line.split()[1]) - 1)  # this process, reading
        if i + 1 < readings:
            time.sleep(pause)
    return max(0, int(statistics.median(seen)))


def machine_load(threads: int | None) -> str | None:
    """One line when timing is about to start on a machine that is already busy (more runnable threads
    than cores) or with more threads than cores, as pyperf warns; None on a machine fit to time on."""
    threads = threads or torch.get_num_threads()
    n = cores()
    if threads > n:
        return (f"{threads} threads on {n} core{'s' if n != 1 else ''} oversubscribe the CPU: timings will be slow "
                f"and noisy; try --threads {n}")
    others = runnable_elsewhere()
    if others is not None and others + threads > n:
        return (f"the machine is busy: {others} other runnable thread{'s' if others != 1 else ''} on {n} "
                f"core{'s' if n != 1 else ''} before timing ({threads} more for this run); timings will be slower "
                "and noisier than on a quiet machine")
    return None


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def timer_module() -> Any:
    """torch.utils.benchmark (imported on first use: it is slow to import)."""
    import torch.utils.benchmark as benchmark

    return benchmark


def is_oom(error: BaseException) -> bool:
    """Whether an exception means an allocation failed (CUDA or CPU)."""
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t)
    if isinstance(error, (MemoryError, *oom_types)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class PhaseTime:
    """One phase of a step, over every step the clock saw."""

    median_ms: float
    iqr_ms: float
    steps: int


class PhaseClock:
    """Times the phases inside steps: the step calls `phase(name)` where each phase begins and
    `phase("end")` when it is done.

    On the CPU a phase boundary is a `perf_counter` reading (CPU work is synchronous); on CUDA it is an
    event recorded on the stream, so timing a phase adds no synchronisation to the step. Only the first
    `limit` steps are kept.
    """

    def __init__(self, device: str, limit: int = 5000) -> None:
        self.cuda = device.startswith("cuda")
        self.limit = limit
        self.steps: list[list[tuple[str, Any]]] = []
        self._current: list[tuple[str, Any]] = []

    def phase(self, name: str) -> None:
        if len(self.steps) >= self.limit:
            return
        if self.cuda:
            stamp: Any = torch.cuda.Event(enable_timing=True)
            stamp.record()
        else:
            stamp = time.perf_counter()
        self._current.append((name, stamp))
        if name == "end":
            self.steps.append(self._current)
            self._current = []

    def close_block(self) -> dict[str, float]:
        """Each phase's mean seconds per step over the steps seen since the last block, which are let go:
        one figure per phase and block, as the step itself gets."""
        if self.cuda and self.steps:
            torch.cuda.synchronize()
        sums: dict[str, list[float]] = {}
        for marks in self.steps:
            for (name, start), (_, stop) in itertools.pairwise(marks):
                total = sums.setdefault(name, [0.0, 0])
                total[0] += start.elapsed_time(stop) / 1e3 if self.cuda else stop - start
                total[1] += 1
        self.steps = []
        return {name: seconds / count for name, (seconds, count) in sums.items()}

    def stats(self) -> dict[str, PhaseTime]:
        """Median and IQR of each phase's duration, over the steps seen."""
        if self.cuda and self.steps:
            torch.cuda.synchronize()
        durations: dict[str, list[float]] = {}
        for marks in self.steps:
            for (name, start), (_, stop) in zip(marks, marks[1:]):
                seconds = start.elapsed_time(stop) / 1e3 if self.cuda else stop - start
                durations.setdefault(name, []).append(seconds)
        return {name: PhaseTime(1e3 * statistics.median(v), 1e3 * iqr(v), len(v)) for name, v in durations.items()}


class NoClock:
    """Phase marks that cost nothing: warm-up steps and a step measured for memory."""

    def phase(self, name: str) -> None:
        pass


def iqr(values: list[float]) -> float:
    """Interquartile range (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[2] - q[0]
