"""DDP's timing: collective, interleaved rounds, and the paired figures with their bootstrap intervals.

In each round the ranks time one block of the synchronised step, one of the
same step under `no_sync()`, and rank 0 one block of the plain step alone while
the others wait (the one-process baseline), so all three see the same load;
after each block the ranks agree (an all-reduce of the maximum) on the slowest
rank's time, so every rank takes the same decisions and stops together.
Efficiency and exposed communication are paired per round, with a bootstrap
interval; a figure the noise could have made (efficiency above 100%, negative
exposed communication) is flagged, never reported as a result.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ...training.config import BenchConfig
from ...training.devices import iqr, timer_module
from ..result import is_noisy
from .failures import Progress, inject_fault
from .group import all_max

BLOCK_SECONDS = 0.05  # a timed block: long enough to time, short enough for many samples
MIN_ROUNDS = 5  # interleaved rounds at least: fewer cannot give an interval
LEVEL = 0.95  # of the bootstrap intervals


@dataclass
class Interleaved:
    """Per-round block times (seconds per step) of the three series, timed in turn in each round."""

    ddp: list[float] = field(default_factory=list)  # the slowest rank's
    no_sync: list[float] = field(default_factory=list)  # the slowest rank's
    single: list[float] = field(default_factory=list)  # rank 0 alone, the plain model
    own: list[float] = field(default_factory=list)  # this rank's own synchronised step


def interleaved_time(fns: dict[str, Callable[[], None]], config: BenchConfig, device: torch.device, rank: int,
                     sync: Callable[[], None], progress: Progress, label: str) -> Interleaved:
    """Warm-up, then rounds of one block each of the synchronised step, the no_sync step and (rank 0 alone)
    the plain step, until every series' median is stable (at least MIN_ROUNDS rounds and --min-time), or
    --max-time. Every decision is made from all-reduced numbers, so every rank takes it alike."""
    timers, number = {}, {}
    for name, fn in fns.items():
        here = name != "single" or rank == 0
        progress.at(f"warming up {label}{'' if name == 'ddp' else ' (' + name + ')'}")
        if here:
            for _ in range(config.warmup):
                fn()
        timers[name] = timer_module().Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
        sync()
        once = all_max(timers[name].timeit(1).median if here else 0.0, device)
        number[name] = max(1, int(BLOCK_SECONDS / max(once, 1e-6)))
    out = Interleaved()
    max_time = config.max_time or 10 * config.min_time
    spent = 0.0
    while True:
        progress.at(f"timing {label} (round {len(out.ddp) + 1})")
        inject_fault("timing", rank)
        for name, series in (("ddp", out.ddp), ("no_sync", out.no_sync), ("single", out.single)):
            sync()
            mine = timers[name].timeit(number[name]).median if name != "single" or rank == 0 else 0.0
            block = all_max(mine, device)
            if name == "ddp":
                out.own.append(mine)
            series.append(block)
            spent += block * number[name]
        rounds = len(out.ddp)
        stable = rounds >= MIN_ROUNDS and not any_noisy(out)
        if (spent >= config.min_time and stable) or (spent >= max_time and rounds >= 2):
            return out


def interval(values: list[float], level: float = LEVEL, draws: int = 2000) -> tuple[float, float]:
    """A percentile-bootstrap interval of the median of `values` (seeded: the same numbers, the same interval)."""
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    tail = (1 - level) / 2
    return medians[int(tail * (draws - 1))], medians[int((1 - tail) * (draws - 1))]


def job_figures(t: Interleaved, world: int, batch: int) -> dict[str, Any]:
    """The job's figures from paired rounds: efficiency = the plain step over the synchronised one in the same
    round; exposed communication = the synchronised step less the no_sync step in the same round."""
    median = statistics.median(t.ddp)
    efficiency = [s / d for s, d in zip(t.single, t.ddp, strict=True)]
    exposed = [d - q for d, q in zip(t.ddp, t.no_sync, strict=True)]
    eff, eff_lo_hi = statistics.median(efficiency), interval(efficiency)
    exp, exp_lo_hi = statistics.median(exposed), interval(exposed)
    eff_noise = eff > 1.0
    return {
        "median_ms": 1e3 * median, "no_sync_ms": 1e3 * statistics.median(t.no_sync),
        "single_process_ms": 1e3 * statistics.median(t.single), "aggregate_samples_per_s": world * batch / median,
        "scaling_efficiency": None if eff_noise else eff,
        "scaling_efficiency_measured": eff,
        "scaling_efficiency_interval": list(eff_lo_hi),
        "scaling_efficiency_noise": eff_noise,
        "comm_exposed_ms": 1e3 * exp, "comm_exposed_interval_ms": [1e3 * exp_lo_hi[0], 1e3 * exp_lo_hi[1]],
        "comm_exposed_noise": exp < 0,
        "comm_exposed_share": exp / median, "rounds": len(t.ddp),
        "iqr_ms": {"ddp": 1e3 * iqr(t.ddp), "no_sync": 1e3 * iqr(t.no_sync), "single_process": 1e3 * iqr(t.single)},
    }


def any_noisy(t: Interleaved) -> bool:
    """Whether any of the three series is noisy (`result.is_noisy`): the rounds go on while one is."""
    return any(is_noisy(iqr(s), statistics.median(s)) for s in (t.ddp, t.no_sync, t.single))


def interleaved_noisy(t: Interleaved, figures: dict[str, Any]) -> bool:
    """DDP's own rule for `ModeResult.noisy`: noisy if any timing a figure is made of is (the synchronised step,
    the no_sync step, the one-process step), if too few rounds back the interval, or if a figure is one noise
    alone could have made."""
    noise = figures["scaling_efficiency_noise"] or figures["comm_exposed_noise"]
    return any_noisy(t) or len(t.ddp) < MIN_ROUNDS or noise
