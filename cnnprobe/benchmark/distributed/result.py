"""What `bench --nproc/--ddp` reports: each rank's own view and the job's figures, and the dict a rank's
answer travels in through the launcher."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from ...core.enums import Mode
from ...training.devices import iqr
from ..result import BenchResult


@dataclass
class RankResult:
    """One rank's own view of each mode."""

    rank: int
    local_rank: int
    host: str
    device: str
    threads: int
    modes: dict[str, dict[str, float]] = field(default_factory=dict)  # mode -> median_ms, iqr_ms, samples/s, memory

    @staticmethod
    def figures(samples_s: list[float], batch: int, peak_memory_bytes: int) -> dict[str, float]:
        """One mode as this rank timed it: its own synchronised steps (seconds per step, a round each)."""
        median = statistics.median(samples_s)
        return {"median_ms": 1e3 * median, "iqr_ms": 1e3 * iqr(samples_s), "samples_per_s": batch / median,
                "peak_memory_bytes": peak_memory_bytes}


@dataclass
class DistResult:
    """What `bench --nproc/--ddp` reports: rank 0's result with the job's figures beside it."""

    run: BenchResult
    world_size: int
    backend: str
    per_rank: list[RankResult]
    global_batch: int
    allreduce_bytes: int  # gradient bytes DDP all-reduces per step (the parameters DDP reduces only)
    allreduce_ms: float  # one all-reduce of that many bytes, median
    bucket_mb: float | None
    gradients_match: bool  # after one synchronised step, every rank holds the same gradients
    modes: dict[str, dict[str, Any]] = field(default_factory=dict)  # mode -> the job's figures
    gradients_differ: list[str] = field(default_factory=list)  # parameters whose gradients differ between ranks
    unused_parameters: list[str] = field(default_factory=list)  # trainable, but no gradient (find_unused_parameters)
    # DDP leaves them out (_ddp_params_and_buffers_to_ignore)
    ignored_parameters: list[str] = field(default_factory=list)

    @property
    def headline(self) -> dict[str, Any]:
        """The train_step's figures where there is one (the JSON's top-level keys)."""
        return self.modes.get(Mode.TRAIN_STEP.value) or next(iter(self.modes.values()), {})

    @property
    def allreduce_gbps(self) -> float | None:
        return self.allreduce_bytes / (self.allreduce_ms / 1e3) / 1e9 if self.allreduce_ms else None

    def to_dict(self) -> dict[str, Any]:
        data = self.run.to_dict()
        head = self.headline
        data.update(
            world_size=self.world_size, backend=self.backend, per_rank=[asdict(r) for r in self.per_rank],
            global_batch=self.global_batch, aggregate_samples_per_s=head.get("aggregate_samples_per_s"),
            scaling_efficiency=head.get("scaling_efficiency"),
            scaling_efficiency_interval=head.get("scaling_efficiency_interval"),
            scaling_efficiency_noise=head.get("scaling_efficiency_noise"), comm_exposed_ms=head.get("comm_exposed_ms"),
            comm_exposed_interval_ms=head.get("comm_exposed_interval_ms"),
            comm_exposed_noise=head.get("comm_exposed_noise"),
            comm_exposed_share=head.get("comm_exposed_share"), allreduce_bytes=self.allreduce_bytes,
            allreduce_ms=self.allreduce_ms, allreduce_gbps=self.allreduce_gbps, bucket_mb=self.bucket_mb,
            gradients_match=self.gradients_match, gradients_differ=self.gradients_differ,
            unused_parameters=self.unused_parameters, ignored_parameters=self.ignored_parameters, modes=self.modes,
        )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DistResult":
        """A DistResult again from the dict a worker returned through the launcher."""
        return cls(**{**data, "run": BenchResult.from_dict(data["run"]),
                      "per_rank": [RankResult(**r) for r in data["per_rank"]]})


def from_dict(data: dict[str, Any]) -> DistResult:
    """`DistResult.from_dict`, as the launcher and the CLI call it."""
    return DistResult.from_dict(data)
