"""Efficiency curves fitted to the micro-benchmarks, and where a calibration is kept (a file, the cache).

The model fitted is the time model's own: a call of `k` kernels doing work `w` (FLOPs for a compute class,
bytes for the others) under the roof `R` (the dtype's peak FLOP/s, or the memory bandwidth) takes
`k·launch + Σ (w_j/R) / e(w_j)` with `e(w) = p·w/(w + h)` (records.Curve), which adds up to
`k·launch + (w + k·h)/(p·R)`: linear in `1/p` and `h/p`. Those two are found by least squares on the relative
error of the predicted time (every case weighs alike, small or large), scaled so that the median case is
predicted exactly, the worst case dropped while it is far off the rest (an outlier: a busy moment), then
clamped to a sane range. `fit_error` is the median
|predicted/measured − 1| over every case timed, the dropped ones included.

Compute curves are fitted for the compute classes (OpClass.compute_bound) against the peak FLOP/s, each
case against its own dtype's peak; memory curves for the others against the bandwidth. The roofs are the
caller's (the measured peak and bandwidth): this module only fits.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from ..core import cache
from ..core.errors import CnnprobeError
from ..core.jsonio import JsonRefused, read_json
from ..training.devices import device_name
from . import microbench
from .microbench import Measurement
from .records import MAX_PEAK_SHARE, Calibration, Curve, OpClass
from .timemodel import DEFAULT_CPU, DEFAULT_GPU

CACHE = "calibrations.json"
FILE_KIND = "cnnprobe calibration"  # the marker a calibration file carries
FILE_LIMIT = 2**20
PEAK_SHARE = (1e-4, MAX_PEAK_SHARE)  # a fitted share is clamped into this (what Calibration.from_dict takes)
HALF_WORK_MAX = 1e15
OUTLIER = 3.0  # a case this many times further off than the median case, and ...
OUTLIER_FLOOR = 0.25  # ... more than 25% off, is dropped from a class's fit
_CODE = hashlib.sha1(b"".join(Path(p).read_bytes() for p in (__file__, microbench.__file__))).hexdigest()[:12]


def roof(m: Measurement, peak_tflops: float, bandwidth_gbps: float,
         dtype_tflops: dict[str, float] | None = None) -> float | None:
    """The roof a case is judged against, FLOP/s or bytes/s; None for a dtype whose peak is not given."""
    if not m.op_class.compute_bound:
        return bandwidth_gbps * 1e9
    if dtype_tflops and m.dtype in dtype_tflops:
        return dtype_tflops[m.dtype] * 1e12
    return peak_tflops * 1e12 if m.dtype == "float32" else None


def predict_seconds(curve: Curve, m: Measurement, ceiling: float, launch_s: float) -> float:
    """The time model's seconds for a case: each of its kernels its launch plus its share of the work at
    the curve's efficiency for that share."""
    kernels = max(m.kernels, 1)
    per_kernel = m.work / kernels
    return kernels * launch_s + kernels * (per_kernel / ceiling) / curve.efficiency(per_kernel)


def efficiency(m: Measurement, ceiling: float, launch_s: float) -> float:
    """The share of the roof a case reached: (work / roof) / (time − launches)."""
    busy = max(m.seconds - max(m.kernels, 1) * launch_s, 0.1 * m.seconds)
    return (m.work / ceiling) / busy


def _solve(rows: list[tuple[float, float]]) -> tuple[float, float]:
    """(a, b) minimising Σ (a·x1 + b·x2 − 1)² (predicted over measured time, minus one) with 1/a, the peak
    share, in PEAK_SHARE and b ≥ 0: the free optimum where it is in range, else the best on the bounds."""
    a_lo, a_hi = 1 / PEAK_SHARE[1], 1 / PEAK_SHARE[0]
    s11 = sum(x1 * x1 for x1, _ in rows)
    s12 = sum(x1 * x2 for x1, x2 in rows)
    s22 = sum(x2 * x2 for _, x2 in rows)
    t1, t2 = sum(x1 for x1, _ in rows), sum(x2 for _, x2 in rows)

    def error(ab: tuple[float, float]) -> float:
        return sum((ab[0] * x1 + ab[1] * x2 - 1) ** 2 for x1, x2 in rows)

    candidates = []
    det = s11 * s22 - s12 * s12
    if len(rows) > 1 and det > 1e-9 * s11 * s22:
        a, b = (t1 * s22 - t2 * s12) / det, (t2 * s11 - t1 * s12) / det
        if a_lo <= a <= a_hi and b >= 0:
            return a, b
    for a in (a_lo, a_hi):  # a share on its bound, the best fixed part for it
        candidates.append((a, max((t2 - a * s12) / s22, 0.0) if s22 > 0 else 0.0))
    candidates.append((min(max(t1 / s11, a_lo), a_hi), 0.0))  # no fixed part
    return min(candidates, key=error)


def fit_curve(points: list[tuple[Measurement, float]], launch_s: float = 0.0) -> tuple[Curve, list[Measurement]]:
    """The curve of one class from (case, roof) pairs, and the cases dropped as outliers."""
    kept = list(points)
    dropped: list[Measurement] = []
    while True:
        rows = []
        for m, ceiling in kept:
            busy = max(m.seconds - max(m.kernels, 1) * launch_s, 0.1 * m.seconds)
            rows.append((m.work / (ceiling * busy), max(m.kernels, 1) / (ceiling * busy)))
        a, b = _solve(rows)
        # least squares on predicted/measured − 1 leans to predicting low (a low prediction is off by at most
        # 100%, a high one by any amount): both terms scaled so that the median case is predicted exactly
        scale = 1 / statistics.median(a * x1 + b * x2 for x1, x2 in rows)
        curve = _clamped(a * scale, b * scale)
        if len(kept) <= 3:
            return curve, dropped
        errors = [abs(predict_seconds(curve, m, c, launch_s) / m.seconds - 1) for m, c in kept]
        worst = max(range(len(kept)), key=errors.__getitem__)
        typical = statistics.median(errors)
        if errors[worst] <= max(OUTLIER * typical, OUTLIER_FLOOR) or len(dropped) >= len(points) // 4:
            return curve, dropped
        dropped.append(kept.pop(worst)[0])


def weight_seconds(m: Measurement, rate_gbps: float | None) -> float:
    """A case's time preparing its weights at the fitted rate (0 without one)."""
    return m.weight_bytes / (rate_gbps * 1e9) if rate_gbps else 0.0


def _weight_rate(curve: Curve, heavy: list[tuple[Measurement, float]], launch_s: float,
                 memory_s: Callable[[Measurement], float]) -> float | None:
    """The weights' bytes per second (/1e9) that account for the heavy cases' time beyond what the time model
    gives them without it (the larger of the curve's time and their bytes' time, `memory_s`); None where that
    accounts for all of it."""
    extra = sum(max(m.seconds - max(predict_seconds(curve, m, c, launch_s), memory_s(m)), 0.0) for m, c in heavy)
    weights = sum(m.weight_bytes for m, _ in heavy)
    return weights / extra / 1e9 if extra > 0 and weights > 0 else None


def fit_with_weights(points: list[tuple[Measurement, float]], launch_s: float = 0.0,
                     memory_s: Callable[[Measurement], float] = lambda m: 0.0,
                     ) -> tuple[Curve, list[Measurement], float | None]:
    """A class's curve, its dropped cases, and its weight rate: the curve from the cases whose FLOPs (or bytes)
    rule their time, the rate from the heavy ones' time beyond it (`Measurement.heavy`), then the curve again
    from the others' time less their own weights' share, and the rate once more."""
    light = [p for p in points if not p[0].heavy]
    heavy = [p for p in points if p[0].heavy]
    if not light or not heavy:
        curve, dropped = fit_curve(points, launch_s)
        return curve, dropped, None
    curve, dropped = fit_curve(light, launch_s)
    rate = _weight_rate(curve, heavy, launch_s, memory_s)
    if rate is None:
        return curve, dropped, None
    less = [(replace(m, seconds=max(m.seconds - weight_seconds(m, rate), 0.1 * m.seconds)), c) for m, c in light]
    curve, dropped = fit_curve(less, launch_s)
    return curve, dropped, _weight_rate(curve, heavy, launch_s, memory_s)


def _clamped(a: float, b: float) -> Curve:
    return Curve(min(max(1.0 / a, PEAK_SHARE[0]), PEAK_SHARE[1]), min(max(b / a, 0.0), HALF_WORK_MAX))


def fit(measurements: list[Measurement], peak_tflops: float, bandwidth_gbps: float, device_key: str,
        device_name: str, threads: int | None, *, launch_us: float = 0.0,
        dtype_tflops: dict[str, float] | None = None) -> Calibration:
    """A calibration from timed cases: a curve per class present, the launch cost, the fit's error.
    `peak_tflops` is float32's roof; `dtype_tflops` the others' (a case of a dtype without one is left out)."""
    if peak_tflops <= 0 or bandwidth_gbps <= 0:
        raise CnnprobeError("calibration needs a positive peak FLOP/s and memory bandwidth")
    launch_s = launch_us * 1e-6
    memory_curves = (DEFAULT_CPU if device_key == "cpu" else DEFAULT_GPU).memory

    def memory_s(m: Measurement) -> float:
        """A case's bytes under the bandwidth at its class's default memory curve, as the time model reads a
        compute class's memory time."""
        return m.bytes / (bandwidth_gbps * 1e9 * memory_curves[m.op_class].efficiency(float(m.bytes)))

    by_class: dict[tuple[OpClass, bool], list[tuple[Measurement, float]]] = {}
    for m in measurements:
        ceiling = roof(m, peak_tflops, bandwidth_gbps, dtype_tflops)
        if ceiling is not None and m.work > 0 and m.seconds > 0:
            by_class.setdefault((m.op_class, m.backward), []).append((m, ceiling))
    cal = Calibration(device_key=device_key, device_name=device_name, launch_us=launch_us, calibrated=True,
                      source=f"measured on {device_name} by cnnprobe calibrate", threads=threads,
                      torch=torch.__version__)
    errors: list[float] = []
    by_class_error = []
    for (op_class, backward), points in sorted(by_class.items(), key=lambda kv: (kv[0][0].value, kv[0][1])):
        if backward and (op_class, False) not in by_class:  # backward cases alone: the class's one curve
            backward = False
        curve, dropped, rate = fit_with_weights(points, launch_s, memory_s)
        (cal.backward if backward else cal.compute if op_class.compute_bound else cal.memory)[op_class] = curve
        if rate is not None:
            (cal.backward_weights_gbps if backward else cal.weights_gbps)[op_class] = rate
        mine = [abs((predict_seconds(curve, m, c, launch_s) + weight_seconds(m, rate)) / m.seconds - 1)
                for m, c in points]
        errors += mine
        label = f"{op_class.value}{' backward' if backward else ''}"
        by_class_error.append(f"{label} {statistics.median(mine):.0%} ({len(mine)})")
        if dropped:
            cal.notes.append(f"{label}: left out of the fit as outliers: "
                             + ", ".join(f"{m.name} {m.dtype}" for m in dropped))
    cal.fit_error = statistics.median(errors) if errors else None
    if by_class_error:
        cal.notes.append("median error by class (cases): " + ", ".join(by_class_error))
    dtypes = sorted({m.dtype for m in measurements})
    cal.notes.append(f"{len(measurements)} micro-benchmarks ({', '.join(dtypes)}); compute curves are shares of "
                     f"each dtype's peak (float32 {peak_tflops:.3g} TFLOP/s), memory curves of "
                     f"{bandwidth_gbps:.3g} GB/s")
    return cal


# ---- files
def file_record(cal: Calibration) -> dict[str, object]:
    """What a calibration file holds: the calibration, marked as one (what `load` checks first)."""
    return {"kind": FILE_KIND, **cal.to_dict()}


def save(cal: Calibration, path: str | Path) -> None:
    """Writes the calibration as JSON, through a temporary file (a reader never sees half of it)."""
    p = Path(path)
    text = json.dumps(file_record(cal), indent=1)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text + "\n")
        tmp.replace(p)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CnnprobeError(f"cannot write the calibration to {p}: {e.strerror or e}") from None


def load(path: str | Path) -> Calibration:
    """The calibration `save` wrote, or one CnnprobeError naming the file."""
    p = Path(path)
    try:
        data = read_json(p, FILE_LIMIT)
    except FileNotFoundError:
        raise CnnprobeError(f"calibration file {p} does not exist") from None
    except OSError as e:
        raise CnnprobeError(f"cannot read calibration file {p}: {e.strerror or e}") from None
    except JsonRefused as e:
        raise CnnprobeError(f"calibration file {p} is not usable: {e}") from None
    if not isinstance(data, dict) or data.get("kind") != FILE_KIND:
        raise CnnprobeError(f"{p} is not a cnnprobe calibration (written by `cnnprobe calibrate --out`)")
    try:
        return Calibration.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CnnprobeError(f"calibration file {p} is damaged: {e}") from None


# ---- the cache, per device
def _name(device: str) -> str:
    """A local device ("cpu", "cuda", "cuda:1") by its machine name; anything else (a spec table key, a
    machine name) as it is."""
    if device == "cpu" or (device.split(":")[0] == "cuda" and torch.cuda.is_available()):
        return device_name(device)
    return device


def cache_key(device: str, threads: int | None) -> str:
    return f"{_name(device)}|threads={threads}|{torch.__version__}|{_CODE}"


def cached(device: str, threads: int | None) -> Calibration | None:
    """The calibration `cnnprobe calibrate` measured here for `device` ("cpu", "cuda", the machine's name or
    the spec table's key it was stored under) at this thread count, torch release and code; else None (a
    damaged entry is none)."""
    entry = cache.load(CACHE).get(cache_key(device, threads))
    if not isinstance(entry, dict):
        return None
    try:
        return Calibration.from_dict(entry)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def store(cal: Calibration, device: str | None = None) -> None:
    """Keeps `cal` under its machine name and its spec table key (and `device`'s name, if given)."""
    names = {cal.device_name, cal.device_key, *([device] if device else [])}
    cache.store(CACHE, {cache_key(name, cal.threads): cal.to_dict() for name in names if name})


def calibrate(device: str, threads: int, peak_tflops: float, bandwidth_gbps: float, *, quick: bool = False,
              on_case: Callable[[Measurement], None] | None = None, time_limit: float | None = None,
              device_key: str | None = None, dtype_tflops: dict[str, float] | None = None) -> Calibration:
    """Times the grid on `device` ("cpu" or "cuda"), fits the curves and keeps the result in the cache (a
    partial grid's, quick or cut by `time_limit`, is not kept: it would stand in for a full one). On CUDA the
    bfloat16 and float16 cases run where `dtype_tflops` gives their peak (else they could not be fitted)."""
    dtypes = ("float32", *sorted(dtype_tflops or {}))
    launch = microbench.launch_us(device, threads)
    forward_us, backward_us = microbench.overhead_us(device, threads)
    skipped: list[str] = []
    measurements = microbench.run(device, threads, quick=quick, time_limit=time_limit, on_case=on_case,
                                  dtypes=dtypes, skipped=skipped)
    if not measurements:
        raise CnnprobeError("calibration timed no micro-benchmark (the time limit is too short)")
    name = _name(device)
    cal = fit(measurements, peak_tflops, bandwidth_gbps, device_key or device.split(":")[0], name, threads,
              launch_us=launch, dtype_tflops=dtype_tflops)
    if device == "cpu":  # in a CPU step an operator's fixed cost is a module call's and autograd's, not a launch
        cal.launch_us, cal.backward_launch_us = max(forward_us, launch), max(backward_us, launch)
        cal.page_in_gbps = microbench.page_in_gbps(threads)
        cal.notes.append(f"fresh memory (storages of 32 MiB or more) is faulted in at {cal.page_in_gbps:.2f} GB/s")
        cal.notes.append(f"an operator's fixed cost in a step: {cal.launch_us:.1f} µs forward, "
                         f"{cal.backward_launch_us:.1f} µs backward (a chain of one-element modules); a bare "
                         f"kernel's {launch:.1f} µs")
    if skipped:
        cal.notes.append("left out (no memory for them): " + ", ".join(skipped))
    if quick or len(measurements) + len(skipped) < len(microbench.planned(device, dtypes=dtypes)):
        cal.notes.append("a partial grid (quick or time-limited): not kept in the cache")
    else:
        store(cal, device)
    return cal


def run_calibration(device: str, *, threads: int | None = None, quick: bool = False,
                    on_case: Callable[[Measurement], None] | None = None) -> Calibration:
    """`cnnprobe calibrate`: this machine's device ("cpu" or "cuda"), its roofs measured as bench measures its
    peak, the grid timed and fitted, and the result cached. A GPU's calibration is kept under its spec table key
    (whatever the host's thread count), so that `predict --device <key>` on any machine of this session finds it."""
    from ..training.devices import check_device
    from .bandwidth import measured_bandwidth
    from .flops_peak import measured
    from .hardware import matching

    device = check_device(device)
    threads = threads or torch.get_num_threads()
    peak, bandwidth = measured(device, "float32", threads), measured_bandwidth(device, threads)
    if device == "cpu":
        return calibrate(device, threads, peak.tflops, bandwidth.gbps, quick=quick, on_case=on_case, device_key="cpu")
    spec = matching(device_name(device))
    lower = {d: measured(device, d, threads).tflops for d in ("bfloat16", "float16")}
    cal = calibrate(device, threads, peak.tflops, bandwidth.gbps, quick=quick, on_case=on_case,
                    device_key=spec.key if spec is not None else "cuda", dtype_tflops=lower)
    cal.threads = None
    if not quick:
        store(cal)
    return cal
