"""What a `bench` command decides besides timing: the run it plans from its options (the sweep, the
baseline, how many repeats), and how it ends (files that could not be written, Ctrl-C, out of memory, a
regression, an interval too wide to judge), in that order. The command line only parses and prints."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.enums import Device, DType
from ..core.errors import CnnprobeError, RunError
from ..training.config import BenchConfig
from . import regression
from .int8 import checked_config
from .result import Sweep
from .sweep import parse_batches

Writer = tuple[str | None, Callable[[str], object]]  # a file asked for, and what writes it


@dataclass
class BenchPlan:
    """A sweep as asked for, checked before anything is timed."""

    models: list[str]
    batches: list[int | str]
    config: BenchConfig  # with the repeat count settled
    baseline: list[dict[str, Any]] | None = None  # --compare's runs
    compare: str | None = None
    threshold: float = regression.DEFAULT_THRESHOLD

    @property
    def steps(self) -> int:
        """Timed modes in all, for a progress bar."""
        return len(self.models) * len(self.batches) * len(self.config.planned()) * self.config.repeat


def split_models(text: str) -> list[str]:
    """`resnet18, resnet50` -> the names; none is an error."""
    models = [m.strip() for m in text.split(",") if m.strip()]
    if not models:
        raise CnnprobeError("no model given")
    return models


def default_repeat(repeat: int | None, baseline: list[dict[str, Any]] | None, save: str | None) -> int:
    """--repeat as given; else the baseline's own count with --compare (so that both sides hold as many
    repeats), 2 with --save (a baseline needs run-to-run drift), 1 otherwise."""
    if repeat is not None:
        return repeat
    if baseline is not None:
        return max(len(m.get("repeats") or [m]) for run in baseline for m in run["results"])
    return 2 if save else 1


def plan_bench(models: list[str], batch: str, config: BenchConfig, *, compare: str | None, save: str | None,
               threshold: float, repeat: int | None) -> BenchPlan:
    """The sweep, the baseline it is judged against, and the repeat count; every check that can fail
    before timing fails here."""
    from ..models.registry import resolve
    from ..training.devices import check_device

    if compare is not None and not compare.strip():
        raise CnnprobeError("--compare is empty: give a baseline file saved with --save")
    batches = parse_batches(batch)
    baseline = None
    if compare is not None:
        baseline = regression.load_baseline(compare)
        regression.check_threshold(threshold)
    config = checked_config(models, config.replace(repeat=default_repeat(repeat, baseline, save)))
    check_device(config.device)
    names = [resolve(m).name for m in models]  # an unknown name fails here, before timing
    if baseline is not None:
        regression.check_comparable(baseline, names, batches, Device(config.device).value,
                                    DType(config.dtype).value, threshold, config.planned())
    return BenchPlan(models, batches, config, baseline, compare, threshold)


def verdict_of(plan: BenchPlan, result: Sweep) -> regression.Comparison | None:
    """The comparison with the baseline, where there is one and the sweep ran to its end."""
    if plan.baseline is None or not result.runs or result.interrupted:
        return None
    verdict = regression.compare(plan.baseline, [r.to_dict() for r in result.runs], plan.threshold)
    verdict.notes += regression.thinning_notes(plan.baseline)
    return verdict


def report_data(result: Sweep, verdict: regression.Comparison | None) -> dict[str, Any]:
    """What --json prints and --save writes: the sweep, and the comparison where there is one."""
    data = result.report()
    if verdict is not None:
        data["comparison"] = verdict.to_dict()
    return data


def write_outputs(writers: Sequence[Writer], result: Sweep, failure: type[Exception]) -> list[str]:
    """Write each file asked for, when anything was measured; a file that fails with `failure` is noted
    and the others are still written, since the measured results are printed all the same."""
    unwritten: list[str] = []
    for path, write in writers:
        if path and result.runs:
            try:
                write(path)
            except failure as e:
                unwritten.append(str(e))
    return unwritten


def ending(plan: BenchPlan, result: Sweep, verdict: regression.Comparison | None,
           unwritten: list[str], unwritten_error: Callable[[str], CnnprobeError]) -> BaseException | None:
    """The one error a printed sweep ends with, the first that holds of: a file not written, Ctrl-C
    (a KeyboardInterrupt), out of memory, a regression, a comparison too wide to judge. None: exit 0."""
    if unwritten:
        return unwritten_error("; ".join(unwritten) + " (the results are printed above)")
    if result.interrupted:
        return KeyboardInterrupt("the results above are what was measured so far")
    if result.failures:
        return RunError(result.failure_text(Device(plan.config.device).value))
    if verdict is not None and not verdict.ok:
        return RunError(f"regressed against {plan.compare}: {verdict.regression_text()}")
    if verdict is not None and verdict.blind:
        return regression.BlindError(
            f"cannot judge against {plan.compare}: the interval is too wide to tell a {plan.threshold:g}% slowdown "
            f"from none for {verdict.blind_text()}; save the baseline again with more --repeat or --min-time, or "
            "on a quieter machine")
    return None


def check_distributed(models: list[str], batch: str, *, nproc: int | None, ddp: bool, files: Sequence[str | None],
                      timeout: float, bucket_mb: float | None) -> int:
    """The options of a distributed bench, checked; returns the per-rank batch."""
    if nproc is not None and ddp:
        raise CnnprobeError("--nproc starts the ranks itself; --ddp joins ranks torchrun started: give one")
    if len(models) > 1 or "," in batch or batch.strip().lower() == "auto":
        raise CnnprobeError("a distributed bench takes one model and one batch size (per rank)")
    if any(f is not None for f in files):
        raise CnnprobeError("--csv, --plot, --save and --compare are not available with --nproc or --ddp; use --json")
    if not (math.isfinite(timeout) and timeout > 0):
        raise CnnprobeError(f"--timeout must be a positive number of seconds, got {timeout}")
    if bucket_mb is not None and not (math.isfinite(bucket_mb) and bucket_mb > 0):
        raise CnnprobeError(f"--bucket-mb must be a positive number, got {bucket_mb}")
    return int(parse_batches(batch)[0])


def gradients_error(differ: list[str]) -> RunError | None:
    """Ranks whose gradients differ after a synchronised step: DDP did not keep them in step."""
    if not differ:
        return None
    more = f" and {len(differ) - 8} more" if len(differ) > 8 else ""
    return RunError("gradients differ between ranks after a synchronised step, in " + ", ".join(differ[:8]) + more
                    + " (the results are printed above)")
