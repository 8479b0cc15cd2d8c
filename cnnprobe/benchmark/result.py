"""The records `bench` returns: one per mode, one per model and batch, one per sweep. Plain data."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

NOISY = 0.10  # IQR / median above this is flagged
MIN_BLOCKS = 10  # timed blocks: fewer cannot show a spread worth judging, and are flagged


def is_noisy(spread: float, median: float) -> bool:
    """The one rule for a spread too wide to trust: an IQR above NOISY × the median (in the same unit)."""
    return spread > NOISY * median


def share(tflops: float | None, of: float | None) -> float | None:
    """Achieved TFLOP/s as a share of a peak; None where either is unknown (or zero)."""
    return tflops / of if tflops and of else None


@dataclass
class Repeat:
    """One of several timed runs of the same mode (`--repeat`), kept to judge run-to-run drift."""

    median_ms: float
    iqr_ms: float
    runs: int
    samples_ms: list[float]
    reference_samples_ms: list[float] = field(default_factory=list)  # the reference kernel, block by block
    reference_n: int | None = None


@dataclass
class ModeResult:
    """One mode's timings. Times are per step of the whole batch."""

    mode: str
    median_ms: float  # whole step: the median over timed blocks of each block's mean step
    iqr_ms: float
    runs: int  # timed steps
    samples_per_s: float
    peak_memory_bytes: int  # the allocator's peak over a steady-state step, above nothing (CPU: profiler events)
    noisy: bool  # IQR above NOISY × median
    frozen: bool = False  # measured with the freezing plan applied
    flops: int | None = None  # counted FLOPs per step (forward, plus backward where there is one)
    tflops: float | None = None  # achieved
    peak_share: float | None = None  # of the device's peak; never above 1
    datasheet_share: float | None = None  # of the datasheet's dense peak (known GPUs only): MFU
    # phases, timed inside the same steps: the step's median split in the share of time each phase took over
    # the same blocks; IQRs over those blocks
    forward_ms: float | None = None
    forward_iqr_ms: float | None = None
    backward_ms: float | None = None
    backward_iqr_ms: float | None = None
    optimizer_ms: float | None = None  # optimizer.step and zero_grad
    optimizer_iqr_ms: float | None = None
    phase_steps: int = 0  # steps the phases were timed over
    memory_breakdown: dict[str, int] = field(default_factory=dict)  # category -> bytes at the tensors' peak, and
    # "workspace": what the allocator held above it (operators' internal allocations)
    memory_method: str = ""  # "allocator" (the CPU's profiler events, CUDA's max_memory_allocated), or "tensors"
    tensor_peak_bytes: int | None = None  # the most tensor memory live at once, counted storage by storage
    predicted_peak_bytes: int | None = None  # `cnnprobe memory`'s prediction of the same step, made on fake tensors
    predicted_ms: float | None = None  # `cnnprobe predict`'s time for the same step on this device, from that run
    samples_ms: list[float] = field(default_factory=list)  # torch.utils.benchmark's timed samples, per step
    repeats: list[Repeat] = field(default_factory=list)  # with --repeat, each run's own figures
    blocks: int = 0  # timed blocks the median and IQR rest on (samples_ms holds one per block)
    steps_per_block: int = 0
    few_blocks: bool = False  # fewer blocks than blocks.MIN_BLOCKS: too few to judge the spread
    reference_n: int | None = None  # side of the reference GEMM timed after each block
    reference_ms: float | None = None  # its median per call
    reference_samples_ms: list[float] = field(default_factory=list)  # per call, one per block
    step_per_reference: float | None = None  # median over blocks of step ÷ reference: what the gate judges

    @classmethod
    def measured(cls, mode: str, median_ms: float, iqr_ms: float, runs: int, batch: int, *,
                 peak_memory_bytes: int = 0, flops: int | None = None, samples_ms: Sequence[float] = (),
                 noisy: bool | None = None, like: "ModeResult | None" = None, **details: Any) -> "ModeResult":
        """The one construction of a mode's result: throughput and achieved TFLOP/s from the median, noisy by
        `is_noisy` unless the timing brings its own verdict (DDP's interleaved rounds). `like`: a result whose
        other fields carry over (several repeats merged into one)."""
        seconds = median_ms / 1e3
        base = {f.name: getattr(like, f.name) for f in fields(like)} if like is not None else {}
        return cls(**{**base, **details, "mode": mode, "median_ms": median_ms, "iqr_ms": iqr_ms, "runs": runs,
                      "samples_per_s": batch / seconds, "peak_memory_bytes": peak_memory_bytes, "flops": flops,
                      "tflops": flops / seconds / 1e12 if flops else None, "samples_ms": list(samples_ms),
                      "noisy": is_noisy(iqr_ms, median_ms) if noisy is None else noisy})

    @classmethod
    def timed(cls, mode: str, samples_s: Sequence[float], batch: int, *, runs: int, **details: Any) -> "ModeResult":
        """`measured` from the timed samples (seconds per step, one per block): their median and IQR."""
        from ..training.devices import iqr  # here: the records load without torch (`cnnprobe list` renders them)

        samples = list(samples_s)
        return cls.measured(mode, 1e3 * statistics.median(samples), 1e3 * iqr(samples), runs, batch,
                            samples_ms=[1e3 * s for s in samples], **details)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModeResult":
        """A result again from its dict (a rank's answer, a file written by `--json`)."""
        return cls(**{**data, "repeats": [Repeat(**r) for r in data.get("repeats", [])]})

    def set_shares(self, peak_tflops: float | None, datasheet_tflops: float | None) -> None:
        """The achieved TFLOP/s as shares of the device's peak and of the datasheet's."""
        self.peak_share = share(self.tflops, peak_tflops)
        self.datasheet_share = share(self.tflops, datasheet_tflops)

    @property
    def phases_ms(self) -> float | None:
        """The phases' medians added up: a check on the whole-step median."""
        parts = [p for p in (self.forward_ms, self.backward_ms, self.optimizer_ms) if p is not None]
        return sum(parts) if parts else None

    @property
    def time_ratio(self) -> float | None:
        """Predicted over measured step time."""
        if not self.predicted_ms or not self.median_ms:
            return None
        return self.predicted_ms / self.median_ms

    @property
    def prediction_ratio(self) -> float | None:
        """Predicted over measured peak memory."""
        if not self.predicted_peak_bytes or not self.peak_memory_bytes:
            return None
        return self.predicted_peak_bytes / self.peak_memory_bytes


@dataclass
class BenchResult:
    """What `cnnprobe bench` reports for one model at one batch size."""

    model: str
    source: str
    device: str
    device_name: str
    batch: int
    dtype: str
    input_size: list[int]
    threads: int
    settings: dict[str, Any]
    peak: dict[str, Any] | None
    results: list[ModeResult] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    notes: list[str] = field(default_factory=list)
    repeat: int = 1
    inputs: list[dict[str, Any]] = field(default_factory=list)  # every input: shape without batch, dtype
    int8: dict[str, Any] | None = None  # a quantized model's forward against its float twin's (benchmark.int8)

    def result(self, mode: str, frozen: bool | None = None) -> ModeResult | None:
        for r in self.results:
            if r.mode == mode and (frozen is None or r.frozen == frozen):
                return r
        return None

    def heaviest(self) -> ModeResult | None:
        """The result with the largest peak memory."""
        return max(self.results, key=lambda r: r.peak_memory_bytes, default=None)

    def frozen_saving(self, mode: str) -> float | None:
        """How much less time a step takes with the freezing plan than without, as a share."""
        frozen, full = self.result(mode, True), self.result(mode, False)
        if frozen is None or full is None or not full.median_ms:
            return None
        return 1 - frozen.median_ms / full.median_ms

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BenchResult":
        """A result again from `asdict` or `to_dict` (whose derived `frozen_saving` is left out)."""
        run = {k: v for k, v in data.items() if k != "frozen_saving"}
        return cls(**{**run, "results": [ModeResult.from_dict(m) for m in run.get("results", [])]})

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["frozen_saving"] = {m: s for m in ("forward_backward", "train_step")
                                 if (s := self.frozen_saving(m)) is not None}
        if self.int8 is None:
            data.pop("int8")  # a key only quantized models' runs have
        return data


@dataclass
class Failure:
    model: str
    batch: int
    reason: str
    largest_fit: int | None  # the largest batch of this model that ran, in this sweep


@dataclass
class Sweep:
    """Several models and batch sizes, as one table."""

    runs: list[BenchResult] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    interrupted: bool = False
    auto: dict[str, int] = field(default_factory=dict)  # model -> batch found by --batch auto

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [r.to_dict() for r in self.runs], "failures": [asdict(f) for f in self.failures],
                "interrupted": self.interrupted, "auto_batch": self.auto}

    def report(self) -> dict[str, Any]:
        """What --json prints: the run itself for one model at one batch, the whole sweep otherwise."""
        if len(self.runs) == 1 and not self.failures and not self.interrupted:
            single = self.runs[0].to_dict()
            if self.auto:
                single["auto_batch"] = self.auto
            return single
        return self.to_dict()

    def failure_text(self, device: str) -> str:
        return "; ".join(
            f"{f.model} at batch {f.batch} ran out of memory on {device} ({f.reason})"
            + (f"; the largest batch that fit was {f.largest_fit}" if f.largest_fit else "")
            for f in self.failures)


def merge_repeats(runs: list[BenchResult]) -> BenchResult:
    """Several runs of one model and batch as one result: each mode's median (and each phase's) is the
    median of the runs' medians, its IQR the median of their IQRs, and every run's figures are kept under
    `repeats`."""
    first = runs[0]
    if len(runs) == 1:
        return replace(first, results=[replace(r, repeats=[_repeat(r)]) for r in first.results])
    peaks = [run.peak for run in runs if run.peak]
    peak = max(peaks, key=lambda p: p["tflops"]) if peaks else None  # each run's figures lie below its own
    merged = []
    for r in first.results:
        same = [m for run in runs if (m := run.result(r.mode, r.frozen)) is not None]
        median = statistics.median(m.median_ms for m in same)
        phases: dict[str, Any] = {f"{p}{k}": _median_of(getattr(m, f"{p}{k}") for m in same)
                                  for p in ("forward", "backward", "optimizer") for k in ("_ms", "_iqr_ms")}
        merged_mode = ModeResult.measured(
            r.mode, median, statistics.median(m.iqr_ms for m in same), sum(m.runs for m in same), first.batch,
            peak_memory_bytes=r.peak_memory_bytes, flops=r.flops, samples_ms=[s for m in same for s in m.samples_ms],
            like=r, phase_steps=sum(m.phase_steps for m in same), repeats=[_repeat(m) for m in same],
            blocks=sum(m.blocks for m in same), few_blocks=any(m.few_blocks for m in same),
            reference_ms=_median_of(m.reference_ms for m in same),
            reference_samples_ms=[s for m in same for s in m.reference_samples_ms],
            step_per_reference=_median_of(m.step_per_reference for m in same), **phases,
        )
        merged_mode.set_shares((peak or {}).get("tflops"), ((peak or {}).get("datasheet") or {}).get("tflops"))
        merged.append(merged_mode)
    return replace(first, results=merged, repeat=len(runs), peak=peak,
                   notes=list(dict.fromkeys(n for run in runs for n in run.notes)))


def _median_of(values: Any) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _repeat(r: ModeResult) -> Repeat:
    return Repeat(r.median_ms, r.iqr_ms, r.runs, list(r.samples_ms), list(r.reference_samples_ms), r.reference_n)
