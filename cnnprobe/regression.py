"""Comparing a bench run with a saved one, mode by mode.

A mode has regressed when its new median is slower than the baseline's by
more than the threshold *and* by more than the measured noise: the larger of
the two runs' IQRs, or, for a baseline measured twice, how far its own median
moved between those runs. On a shared machine a 12% swing inside a 15% IQR
is not a verdict. Comparing different models, batches, devices or precisions is an
error, not a verdict.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CnnprobeError

DEFAULT_THRESHOLD = 10.0  # percent; README "Tracking regressions" says how it was chosen (cli.py repeats it)
IDENTITY = ("model", "batch", "device", "dtype")


@dataclass
class ModeChange:
    """One mode of one run, before and after."""

    model: str
    batch: int
    mode: str
    frozen: bool
    before_ms: float
    after_ms: float
    noise_ms: float  # the larger IQR of the two runs
    change: float  # after / before - 1
    regressed: bool
    improved: bool


@dataclass
class Comparison:
    """What `bench --compare` found."""

    threshold: float  # percent
    changes: list[ModeChange] = field(default_factory=list)

    @property
    def regressions(self) -> list[ModeChange]:
        return [c for c in self.changes if c.regressed]

    @property
    def ok(self) -> bool:
        return not self.regressions

    def regression_text(self) -> str:
        return "; ".join(
            f"{c.model} b{c.batch} {c.mode}{' frozen' if c.frozen else ''} {c.before_ms:.3f} → {c.after_ms:.3f} ms "
            f"({100 * c.change:+.1f}%, noise {c.noise_ms:.3f} ms)" for c in self.regressions)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"threshold_percent": self.threshold, "ok": self.ok,
                "regressions": [f"{c.model} b{c.batch} {c.mode}" + (" frozen" if c.frozen else "") for c in self.regressions],
                "changes": [asdict(c) for c in self.changes]}


def load_baseline(path: str | Path) -> list[dict[str, Any]]:
    """The runs in a file written by `bench --save` (or `--json`): one run, or a sweep's runs."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CnnprobeError(f"baseline '{path}' does not exist")
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CnnprobeError(f"baseline '{path}' is not a bench JSON file: {e}") from None
    runs = data.get("runs") if isinstance(data, dict) and "runs" in data else [data]
    if not isinstance(runs, list) or not all(isinstance(r, dict) and "results" in r and all(k in r for k in IDENTITY)
                                             for r in runs):
        raise CnnprobeError(f"baseline '{path}' is not a bench JSON file: it lacks runs with model, batch, device, "
                            "dtype and results")
    repeat = data.get("noise") if isinstance(data, dict) and isinstance(data.get("noise"), dict) else {}
    for run in runs:  # a baseline measured twice (benchmarks.report --repeat 2) knows its run-to-run noise
        for m in run["results"]:
            moved = repeat.get(f"{run['model']} b{run['batch']} {m['mode']}")
            if isinstance(moved, (int, float)):
                m.setdefault("repeat_change", abs(float(moved)))
    return runs


def check_comparable(baseline: list[dict[str, Any]], models: list[str], batches: list[int | str], device: str,
                     dtype: str, threshold: float) -> None:
    """Fail before timing when the baseline cannot judge the run that is about to start."""
    if threshold < 0:
        raise CnnprobeError(f"--threshold must be 0 or more percent, got {threshold}")
    if "auto" in batches:
        raise CnnprobeError("--compare needs the batch sizes of the baseline, not --batch auto")
    held = {(r["model"], r["batch"], r["device"], r["dtype"]) for r in baseline}
    wanted = [(m, b, device, dtype) for m in models for b in batches]
    missing = [w for w in wanted if w not in held]
    if missing:
        m, b, d, t = missing[0]
        raise CnnprobeError(f"cannot compare: the baseline holds {', '.join(_describe(r) for r in baseline)}; "
                            f"it has nothing for {m} batch {b} on {d} in {t}")


def _describe(run: dict[str, Any]) -> str:
    return f"{run['model']} batch {run['batch']} on {run['device']} in {run['dtype']}"


def compare(baseline: list[dict[str, Any]], current: list[dict[str, Any]], threshold: float = DEFAULT_THRESHOLD) -> Comparison:
    """Match runs by model and batch, check they are comparable, and judge each mode."""
    if threshold < 0:
        raise CnnprobeError(f"--threshold must be 0 or more percent, got {threshold}")
    before = {(r["model"], r["batch"]): r for r in baseline}
    after = {(r["model"], r["batch"]): r for r in current}
    missing = [after[k] for k in after if k not in before]
    if missing:
        raise CnnprobeError(
            "cannot compare: the baseline holds " + ", ".join(_describe(r) for r in baseline)
            + "; it has nothing for " + ", ".join(_describe(r) for r in missing)
        )
    out = Comparison(threshold)
    for key, new in after.items():
        old = before[key]
        different = [k for k in IDENTITY if old[k] != new[k]]
        if different:
            raise CnnprobeError(f"cannot compare: the baseline is {_describe(old)}, this run is {_describe(new)}")
        old_modes = {(m["mode"], m.get("frozen", False)): m for m in old["results"]}
        for m in new["results"]:
            o = old_modes.get((m["mode"], m.get("frozen", False)))
            if o is None:
                continue
            delta = m["median_ms"] - o["median_ms"]
            noise = max(o.get("iqr_ms", 0.0), m.get("iqr_ms", 0.0), o.get("repeat_change", 0.0) * o["median_ms"])
            change = delta / o["median_ms"] if o["median_ms"] else 0.0
            out.changes.append(ModeChange(
                model=new["model"], batch=new["batch"], mode=m["mode"], frozen=m.get("frozen", False),
                before_ms=o["median_ms"], after_ms=m["median_ms"], noise_ms=noise, change=change,
                regressed=change > threshold / 100 and delta > noise,
                improved=-change > threshold / 100 and -delta > noise,
            ))
    if not out.changes:
        raise CnnprobeError("cannot compare: the baseline and this run share no mode")
    return out
