"""What `cnnprobe profile` returns: where one step's time goes, module by module, against the roofline. Plain data.

One row per module at the depth asked, forward and backward, measured; beside it what the module's operators
count (MACs from cnnprobe's counter, bytes each operator reads and writes) and what the roofline makes of the
two. The rows and the unattributed pieces (what no module at that depth covers) partition the step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

COMPUTE, MEMORY = "compute", "memory"


@dataclass
class Roof:
    """The device's two roofs, measured: the best GEMM (bench's peak) and the best large copy or triad."""

    peak_tflops: float
    bandwidth_gbps: float
    peak_source: str = ""  # "measured matmul", "achieved by the model", ...
    peak_detail: str = ""
    bandwidth_source: str = ""  # "measured copy", "measured triad", "achieved by a module"
    bandwidth_detail: str = ""

    @property
    def ridge(self) -> float:
        """FLOPs per byte where the two roofs meet: above it a kernel can only be bound by compute."""
        return self.peak_tflops * 1e12 / (self.bandwidth_gbps * 1e9)

    def allowed_ms(self, flops: float, nbytes: float) -> float:
        """The least time the roofline allows for this much work: the slower of the two roofs."""
        return 1e3 * max(flops / (self.peak_tflops * 1e12), nbytes / (self.bandwidth_gbps * 1e9))

    def bound(self, flops: float, nbytes: float) -> str:
        return COMPUTE if flops / (self.peak_tflops * 1e12) >= nbytes / (self.bandwidth_gbps * 1e9) else MEMORY


@dataclass
class Point:
    """One direction of one row on the roofline: what it counted and how fast it ran."""

    ms: float
    macs: int
    bytes: int

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def intensity(self) -> float | None:
        """FLOPs per byte moved; None where nothing is moved."""
        return self.flops / self.bytes if self.bytes else None

    @property
    def achieved_tflops(self) -> float | None:
        return self.flops / (self.ms * 1e-3) / 1e12 if self.ms > 0 else None

    @property
    def achieved_gbps(self) -> float | None:
        return self.bytes / (self.ms * 1e-3) / 1e9 if self.ms > 0 else None


@dataclass
class ModuleProfile:
    """One row: a module at the depth asked (its calls in one step summed), or an unattributed piece."""

    name: str
    type: str
    depth: int
    calls: int  # per step
    forward_ms: float  # median over the timed steps
    forward_iqr_ms: float
    backward_ms: float | None  # None where no backward runs for it (frozen, forward mode): autograd never runs it
    backward_iqr_ms: float | None
    forward_macs: int
    backward_macs: int | None  # freeze-aware: only the gradients autograd computes
    forward_bytes: int
    backward_bytes: int
    frozen: bool  # has parameters, none of them trainable
    # from the roofline, over forward and backward together
    intensity: float | None = None
    achieved_tflops: float | None = None
    achieved_gbps: float | None = None
    bound: str | None = None  # COMPUTE or MEMORY
    roofline_share: float | None = None  # the time the roofline allows ÷ the time measured; never above 1
    share_of_step: float | None = None  # of the step's median

    @property
    def total_ms(self) -> float:
        return self.forward_ms + (self.backward_ms or 0.0)

    @property
    def total_macs(self) -> int:
        return self.forward_macs + (self.backward_macs or 0)

    @property
    def bytes(self) -> int:
        return self.forward_bytes + self.backward_bytes

    def points(self) -> dict[str, Point]:
        """The forward and (where it ran) backward pass as roofline points."""
        out = {"forward": Point(self.forward_ms, self.forward_macs, self.forward_bytes)}
        if self.backward_ms is not None:
            out["backward"] = Point(self.backward_ms, self.backward_macs or 0, self.backward_bytes)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bytes": self.bytes}


@dataclass
class TraceEvent:
    """One span on the timeline of the traced step, in µs from the step's start."""

    name: str
    category: str  # "forward", "backward", "phase" or "operator"
    track: str  # the timeline it sits on: "modules", "phases", "operators"
    start_us: float
    duration_us: float
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Timeline:
    """One more step, traced after the timed ones: its spans and the live tensor memory over it."""

    events: list[TraceEvent] = field(default_factory=list)
    memory: list[tuple[float, int]] = field(default_factory=list)  # (µs from the step's start, live bytes)
    device: str = "cpu"
    note: str = ""  # how the timeline was taken (synchronised per module on CUDA, under the profiler)


@dataclass
class ProfileReport:
    """Where one step of one model at one batch goes, measured."""

    model: str
    task: str
    batch: int
    device: str
    device_name: str
    dtype: str
    mode: str
    frozen: bool  # the freezing plan applied
    threads: int
    depth: int  # -1: leaves
    input_size: list[int]
    step_ms: float  # the profiled step's median (hooks on)
    step_iqr_ms: float
    unprofiled_step_ms: float  # the same step without hooks, timed in the same run, interleaved
    unprofiled_iqr_ms: float
    overhead: float  # step_ms / unprofiled_step_ms - 1
    steps: int  # profiled steps timed
    roof: Roof
    modules: list[ModuleProfile]
    unattributed: dict[str, ModuleProfile]  # "outside modules", "loss", "optimizer": what no row covers
    timeline: Timeline | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def attributed_ms(self) -> float:
        """The rows and the unattributed pieces together: the step as the profile partitions it."""
        return sum(r.total_ms for r in (*self.modules, *self.unattributed.values()))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("timeline")
        data["modules"] = [p.to_dict() for p in self.modules]
        data["unattributed"] = {name: p.to_dict() for name, p in self.unattributed.items()}
        data["roof"]["ridge_flops_per_byte"] = self.roof.ridge
        data["attributed_ms"] = self.attributed_ms
        return data
