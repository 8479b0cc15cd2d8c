"""Comparing a bench run with a saved one, mode by mode, with an interval on the change.

A baseline written by `bench --save` keeps, for every mode, each repeat's
median and its timed samples, and beside each block of steps the time of a
fixed reference kernel (a matrix product). `--compare` runs as many repeats
and judges each mode by the ratio new / old of step ÷ reference, so that a
machine that changed speed between the two runs moves both sides, with a 95%
interval from a hierarchical bootstrap: the repeats are resampled (run-to-run
drift), and the blocks inside each repeat (within-run spread). A mode has
regressed when the whole interval lies above 1 + threshold. An interval too
wide to tell a change of the threshold from none is a refusal to judge, not a
pass. Comparing different models, batches, devices or precisions is an error,
not a verdict, and so is a baseline that cannot judge the run: both are found
before any timing.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import CnnprobeError
from ..core.formatting import count
from ..core.jsonio import JsonRefused, read_json

DEFAULT_THRESHOLD = 30.0  # percent; README "Tracking regressions" says how it was chosen
LEVEL = 0.95
DRAWS = 2000
IDENTITY = ("model", "batch", "device", "dtype")
MODES = ("forward", "forward_backward", "train_step")
BARE = "a file without timed samples is judged on its medians alone"
BASELINE_LIMIT = 64 * 2**20  # bytes: a baseline of every model and batch cnnprobe knows is far smaller
MAX_SAMPLES = 4096  # per repeat: the bootstrap holds DRAWS × samples indices, so more are thinned to this


class BaselineError(CnnprobeError):
    """A baseline that cannot judge the run about to start."""


class BlindError(CnnprobeError):
    """A comparison whose interval is too wide to tell a change of the threshold from none."""


@dataclass
class ModeChange:
    """One mode of one run, before and after."""

    model: str
    batch: int
    mode: str
    frozen: bool
    before_ms: float  # median of the baseline's repeat medians
    after_ms: float
    noise_ms: float  # the larger IQR of the two runs
    change: float  # ratio - 1
    ratio: float  # after / before
    ratio_low: float  # the interval on the ratio (LEVEL)
    ratio_high: float
    repeats_before: int
    repeats_after: int
    regressed: bool
    improved: bool
    # judged on step ÷ reference ("normalized") where both sides timed the same reference kernel, else on the
    # step alone ("raw"); ratio, ratio_low and ratio_high are the judged figures, raw_* the step's own
    judged_on: str = "raw"
    raw_ratio: float = 1.0
    raw_ratio_low: float = 1.0
    raw_ratio_high: float = 1.0
    machine_ratio: float | None = None  # the reference kernel's time, new / old: how the machine's speed moved
    blind: bool = False  # the interval is too wide to tell a change of the threshold from none


@dataclass
class Comparison:
    """What `bench --compare` found."""

    threshold: float  # percent
    changes: list[ModeChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[ModeChange]:
        return [c for c in self.changes if c.regressed]

    @property
    def blind(self) -> list[ModeChange]:
        return [c for c in self.changes if c.blind]

    @property
    def ok(self) -> bool:
        return not self.regressions

    def blind_text(self) -> str:
        return "; ".join(
            f"{c.model} b{c.batch} {c.mode}{' frozen' if c.frozen else ''} ×{c.ratio:.2f} "
            f"({100 * LEVEL:.0f}% interval ×{c.ratio_low:.2f} to ×{c.ratio_high:.2f})" for c in self.blind)

    def regression_text(self) -> str:
        return "; ".join(
            f"{c.model} b{c.batch} {c.mode}{' frozen' if c.frozen else ''} {c.before_ms:.3f} → {c.after_ms:.3f} ms "
            f"(×{c.ratio:.2f}, {100 * LEVEL:.0f}% interval ×{c.ratio_low:.2f} to ×{c.ratio_high:.2f})"
            for c in self.regressions)

    def to_dict(self) -> dict[str, Any]:
        return {"threshold_percent": self.threshold, "ok": self.ok, "level": LEVEL,
                "regressions": [f"{c.model} b{c.batch} {c.mode}" + (" frozen" if c.frozen else "")
                                for c in self.regressions],
                "blind": [f"{c.model} b{c.batch} {c.mode}" + (" frozen" if c.frozen else "") for c in self.blind],
                "changes": [asdict(c) for c in self.changes], "notes": self.notes}


# --------------------------------------------------------------------------- the statistic


def repeat_samples(result: dict[str, Any]) -> list[list[float]]:
    """Each repeat's timed samples (ms), or its median alone where a file has no samples."""
    repeats = result.get("repeats") or [result]
    return [list(r.get("samples_ms") or [r["median_ms"]]) for r in repeats]


def repeat_ratios(result: dict[str, Any]) -> list[list[float]] | None:
    """Each repeat's step ÷ reference, block by block; None where a repeat lacks the reference's samples."""
    repeats = result.get("repeats") or [result]
    out = []
    for r in repeats:
        steps, refs = r.get("samples_ms") or [], r.get("reference_samples_ms") or []
        if not steps or len(steps) != len(refs):
            return None
        out.append([s / ref for s, ref in zip(steps, refs)])
    return out


def reference_sizes(result: dict[str, Any]) -> set[Any]:
    repeats = result.get("repeats") or [result]
    return {r.get("reference_n", result.get("reference_n")) for r in repeats}


def repeat_references(result: dict[str, Any]) -> list[list[float]]:
    repeats = result.get("repeats") or [result]
    return [list(r.get("reference_samples_ms") or []) for r in repeats]


def center(repeats: list[list[float]]) -> float:
    """The mean over repeats of each repeat's median: what the bootstrap resamples."""
    return statistics.fmean(statistics.median(r) for r in repeats)


def ratio_interval(before: list[list[float]], after: list[list[float]], level: float = LEVEL, draws: int = DRAWS,
                   seed: int = 0) -> tuple[float, float, float]:
    """(ratio, low, high): center(after) / center(before) and a `level` interval on it.

    Hierarchical bootstrap: each draw picks as many repeats as there are, with replacement, and within
    each picked repeat resamples its samples, taking the median. With one repeat a side the interval
    holds only the within-run spread. Seeded, so that a verdict can be reproduced."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def draw(repeats: list[list[float]]) -> Any:
        medians = []
        for samples in repeats:
            a = np.asarray(samples, dtype=float)
            medians.append(np.median(a[rng.integers(0, len(a), size=(draws, len(a)))], axis=1))
        m = np.stack(medians)  # repeats × draws
        pick = rng.integers(0, len(repeats), size=(draws, len(repeats)))
        return m[pick, np.arange(draws)[:, None]].mean(axis=1)

    ratios = draw(after) / draw(before)
    tail = (1 - level) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return center(after) / center(before), float(low), float(high)


# --------------------------------------------------------------------------- baselines


def _number(value: Any, *, positive: bool) -> bool:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return ok and (value > 0 if positive else value >= 0)


def _check_result(m: Any, where: str) -> None:
    if not isinstance(m, dict):
        raise BaselineError(f"{where} is not an object")
    if m.get("mode") not in MODES:
        raise BaselineError(f"{where} has mode {m.get('mode')!r}; expected one of {', '.join(MODES)}")
    if not _number(m.get("median_ms"), positive=True):
        raise BaselineError(f"{where} ({m['mode']}) has median_ms {m.get('median_ms')!r}; expected a positive number")
    if "iqr_ms" in m and not _number(m["iqr_ms"], positive=False):
        raise BaselineError(f"{where} ({m['mode']}) has iqr_ms {m['iqr_ms']!r}; expected a number of 0 or more")
    if not isinstance(m.get("frozen", False), bool):
        raise BaselineError(f"{where} ({m['mode']}) has frozen {m['frozen']!r}; expected true or false")
    repeats = m.get("repeats", [])
    if not isinstance(repeats, list) or not all(isinstance(r, dict) for r in repeats):
        raise BaselineError(f"{where} ({m['mode']}) has repeats that are not a list of objects")
    for r in [m, *repeats]:
        if not _number(r.get("median_ms"), positive=True):
            raise BaselineError(f"{where} ({m['mode']}) has a repeat with median_ms {r.get('median_ms')!r}")
        for key in ("samples_ms", "reference_samples_ms"):
            samples = r.get(key, [])
            if not isinstance(samples, list) or not all(_number(s, positive=True) for s in samples):
                raise BaselineError(f"{where} ({m['mode']}) has {key} that are not a list of positive numbers")


def load_baseline(path: str | Path) -> list[dict[str, Any]]:
    """The runs in a file written by `bench --save` (or `--json`), checked field by field."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise BaselineError(f"baseline '{path}' does not exist" + (" as a file" if p.exists() else ""))
    try:
        data = read_json(p, BASELINE_LIMIT)
    except JsonRefused as e:
        raise BaselineError(f"baseline '{path}' is not a bench JSON file: {e}") from None
    except OSError as e:
        raise BaselineError(f"cannot read baseline '{path}': {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise BaselineError(f"baseline '{path}' is not a bench JSON file: it holds a {type(data).__name__}, "
                            "not an object")
    runs = data.get("runs", [data])
    if not isinstance(runs, list) or not runs:
        raise BaselineError(f"baseline '{path}': 'runs' is not a non-empty list")
    for i, run in enumerate(runs, 1):
        where = f"baseline '{path}', run {i}"
        if not isinstance(run, dict):
            raise BaselineError(f"{where} is not an object")
        missing = [k for k in (*IDENTITY, "results") if k not in run]
        if missing:
            raise BaselineError(f"{where} lacks {', '.join(missing)}: not a bench JSON file")
        for key in ("model", "device", "dtype"):
            if not isinstance(run[key], str):
                raise BaselineError(f"{where} has {key} {run[key]!r}; expected a string")
        if isinstance(run["batch"], bool) or not isinstance(run["batch"], int) or run["batch"] <= 0:
            raise BaselineError(f"{where} has batch {run['batch']!r}; expected a positive integer")
        if not isinstance(run["results"], list) or not run["results"]:
            raise BaselineError(f"{where} has results that are not a non-empty list")
        for j, m in enumerate(run["results"], 1):
            _check_result(m, f"{where}, result {j}")
            for r in [m, *m.get("repeats", [])]:
                _thin(r)
    return runs


def _thin(repeat: dict[str, Any]) -> None:
    """At most MAX_SAMPLES of a repeat's samples, evenly spaced in the order they were timed (so drift within
    the run is kept), with the count they were thinned from: a million samples would ask the bootstrap for
    gigabytes."""
    samples = repeat.get("samples_ms") or []
    if len(samples) > MAX_SAMPLES:
        repeat["samples_thinned_from"] = len(samples)
        repeat["samples_ms"] = [samples[i * len(samples) // MAX_SAMPLES] for i in range(MAX_SAMPLES)]


def thinning_notes(baseline: list[dict[str, Any]]) -> list[str]:
    """What `_thin` did to a baseline, said once."""
    most = max((r.get("samples_thinned_from", 0) for run in baseline for m in run["results"]
                for r in [m, *m.get("repeats", [])]), default=0)
    if not most:
        return []
    return [(f"the baseline holds up to {count(most)} samples in a repeat; {count(MAX_SAMPLES)} of them, evenly "
             "spaced, are judged")]


def _describe(run: dict[str, Any]) -> str:
    return f"{run['model']} batch {run['batch']} on {run['device']} in {run['dtype']}"


def check_threshold(threshold: float) -> float:
    if not _number(threshold, positive=True):
        raise BaselineError(f"--threshold must be a positive, finite number of percent, got {threshold}")
    return float(threshold)


def check_comparable(baseline: list[dict[str, Any]], models: list[str], batches: list[int | str], device: str,
                     dtype: str, threshold: float, planned: list[tuple[str, bool]] | None = None) -> None:
    """Fail before timing when the baseline cannot judge the run that is about to start."""
    check_threshold(threshold)
    if "auto" in batches:
        raise BaselineError("--compare needs the batch sizes of the baseline, not --batch auto")
    held = {(r["model"], r["batch"], r["device"], r["dtype"]): r for r in baseline}
    for model in models:
        for batch in batches:
            run = held.get((model, batch, device, dtype))
            if run is None:
                raise BaselineError(f"cannot compare: the baseline holds {', '.join(_describe(r) for r in baseline)}; "
                                    f"it has nothing for {model} batch {batch} on {device} in {dtype}")
            if planned is None:
                continue
            unmeasured = [(m["mode"], bool(m.get("frozen", False))) for m in run["results"]
                          if (m["mode"], bool(m.get("frozen", False))) not in planned]
            if unmeasured:
                mode, frozen = unmeasured[0]
                raise BaselineError(f"cannot compare: the baseline has {mode}{' (frozen)' if frozen else ''} for "
                                    f"{model} batch {batch}, which this run does not measure; give the --mode and "
                                    "freezing options the baseline was saved with")


def compare(baseline: list[dict[str, Any]], current: list[dict[str, Any]],
            threshold: float = DEFAULT_THRESHOLD) -> Comparison:
    """Match runs by model and batch, check they are comparable, and judge each mode."""
    threshold = check_threshold(threshold)
    before = {(r["model"], r["batch"]): r for r in baseline}
    after = {(r["model"], r["batch"]): r for r in current}
    missing = [after[k] for k in after if k not in before]
    if missing:
        raise BaselineError(
            "cannot compare: the baseline holds " + ", ".join(_describe(r) for r in baseline)
            + "; it has nothing for " + ", ".join(_describe(r) for r in missing)
        )
    out = Comparison(threshold)
    for key, new in after.items():
        old = before[key]
        different = [k for k in IDENTITY if old[k] != new[k]]
        if different:
            raise BaselineError(f"cannot compare: the baseline is {_describe(old)}, this run is {_describe(new)}")
        _note_setup(out, old, new)
        old_modes = {(m["mode"], m.get("frozen", False)): m for m in old["results"]}
        for m in new["results"]:
            o = old_modes.get((m["mode"], m.get("frozen", False)))
            if o is not None:
                out.changes.append(judge(o, m, new, threshold, out.notes))
    if not out.changes:
        raise BaselineError("cannot compare: the baseline and this run share no mode")
    if any(c.repeats_before < 2 or c.repeats_after < 2 for c in out.changes):
        out.notes.append("one repeat on a side: the interval holds the within-run spread only, not run-to-run "
                         "drift; save and compare with --repeat 2 or more")
    _note_machine(out)
    return out


def judge(o: dict[str, Any], m: dict[str, Any], run: dict[str, Any], threshold: float, notes: list[str]) -> ModeChange:
    """One mode, old `o` against new `m`: on step ÷ reference where both timed the same reference kernel."""
    limit = threshold / 100
    a, b = repeat_samples(o), repeat_samples(m)
    if any(len(s) < 2 for s in a + b) and BARE not in notes:
        notes.append(BARE)
    raw, raw_low, raw_high = ratio_interval(a, b)
    ratio, low, high, judged_on, machine = raw, raw_low, raw_high, "raw", None
    ra, rb = repeat_ratios(o), repeat_ratios(m)
    sizes = reference_sizes(o) | reference_sizes(m)
    if ra is not None and rb is not None and len(sizes) == 1 and None not in sizes:
        ratio, low, high = ratio_interval(ra, rb)
        judged_on = "normalized"
        machine = center(repeat_references(m)) / center(repeat_references(o))
    elif ra is None and rb is not None and UNREFERENCED not in notes:
        notes.append(UNREFERENCED)
    regressed = low > 1 + limit
    # a slowdown of the threshold moves the interval's low end by as much: when the interval already reaches
    # further than that below its own point, such a slowdown (or more) could pass unseen
    blind = not regressed and max(ratio / low, high / ratio) > 1 + limit
    return ModeChange(
        model=run["model"], batch=run["batch"], mode=m["mode"], frozen=m.get("frozen", False),
        before_ms=o["median_ms"], after_ms=m["median_ms"],
        noise_ms=max(o.get("iqr_ms", 0.0), m.get("iqr_ms", 0.0)), change=ratio - 1, ratio=ratio,
        ratio_low=low, ratio_high=high, repeats_before=len(a), repeats_after=len(b),
        regressed=regressed, improved=high < 1 - limit, judged_on=judged_on, raw_ratio=raw, raw_ratio_low=raw_low,
        raw_ratio_high=raw_high, machine_ratio=machine, blind=blind,
    )


UNREFERENCED = ("the baseline has no reference-kernel timings (saved by an older cnnprobe): judged on the step "
                "alone, which a change of the machine's speed moves too; save it again")
MACHINE_MOVED = 0.10  # the reference kernel's time moving more than this is said


def _note_setup(out: Comparison, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Say when the thread count or the machine is not the baseline's: a verdict across them means less."""
    for key, what in (("threads", "thread count"), ("device_name", "machine")):
        if key in old and key in new and old[key] != new[key]:
            note = f"the {what} differs from the baseline's: {old[key]} then, {new[key]} now"
            if note not in out.notes:
                out.notes.append(note)


def _note_machine(out: Comparison) -> None:
    moved = [c.machine_ratio for c in out.changes if c.machine_ratio is not None]
    if not moved:
        return
    slowest, fastest = max(moved), min(moved)
    if slowest > 1 + MACHINE_MOVED or fastest < 1 / (1 + MACHINE_MOVED):
        span = f"×{fastest:.2f}" if abs(slowest - fastest) < 0.005 else f"×{fastest:.2f} to ×{slowest:.2f}"
        out.notes.append(f"the machine itself changed speed: the reference kernel took {span} its time in the "
                         "baseline; each mode is judged on its step ÷ the reference, timed beside it")
