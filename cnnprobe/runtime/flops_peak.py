"""The device's peak FLOP/s, against which achieved throughput is a share.

Measured: dense matrix products in the benchmark's precision at several
sizes, the best kept, cached per (device, dtype, threads, TF32, torch release,
this file's code). A cached figure that one small product, timed at the start
of every run, beats several times over is implausible and measured again. A cached figure that a
model's own step beats was measured at a busy moment: the run measures again, and if the model still beats the
matrix product the model's figure is the peak, so a share is never above 100%.
For known GPUs the datasheet's dense figure (runtime.hardware's table) is given too, labelled as such.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..core import cache
from ..training.devices import device_name, synchronize, timer_module
from .hardware import matching

CPU_SIZES = (512, 1024, 2048)
CUDA_SIZES = (2048, 4096, 8192)
QUICK_SIZE_CPU = 256  # the quick check against a cached figure
QUICK_SIZE_CUDA = 2048
IMPLAUSIBLE = 3.0  # a cached peak the quick check beats this many times over is measured again (the check
# takes the fastest of its calls, the measurement a median: on a loaded machine the check runs ahead by 2×)
SLOW_PRODUCT_S = 0.5  # a product this slow (a dtype the CPU emulates) ends the search at its size
CACHE = "peaks.json"
_CODE = hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:12]  # a new method invalidates old figures


@dataclass
class Peak:
    """A peak throughput and where it comes from."""

    tflops: float
    source: str  # "measured matmul", "achieved by the model" or "datasheet"
    detail: str  # what was measured, or which table row


def datasheet(name: str, dtype: str, tf32: bool = False) -> Peak | None:
    """The spec table's dense figure (runtime.hardware) for a GPU CUDA names so, e.g. 'NVIDIA H200'; None for a
    device the table lacks or a dtype it has no figure for."""
    spec = matching(name)
    if spec is None:
        return None
    key = "tf32" if dtype == "float32" and tf32 and "tf32" in spec.tflops else dtype
    if key not in spec.tflops:
        return None
    return Peak(spec.tflops[key], "datasheet", f"{spec.key} dense {key}")


def cached_figure(entry: Any, key: str) -> tuple[float, str, str] | None:
    """A cached roof's (figure under `key`, source, detail) where the entry is plausible (a positive finite
    number and two strings), else None: a damaged cache is measured again, never believed."""
    if not isinstance(entry, dict):
        return None
    value, source, detail = entry.get(key), entry.get("source"), entry.get("detail")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return None
    if not isinstance(source, str) or not isinstance(detail, str):
        return None
    return float(value), source, detail


def _valid(entry: Any) -> Peak | None:
    """A cached entry that is a plausible peak, or None."""
    found = cached_figure(entry, "tflops")
    return Peak(*found) if found is not None else None


def cache_key(device: str, dtype: str, threads: int) -> str:
    tf32 = bool(device.startswith("cuda") and torch.backends.cuda.matmul.allow_tf32)
    return f"{device_name(device)}|{dtype}|{threads}|tf32={tf32}|{torch.__version__}|{_CODE}"


def measure_matmul(device: str, dtype: str, threads: int) -> Peak:
    """The best FLOP/s of square matrix products at several sizes, each timed until stable."""
    benchmark = timer_module()
    torch_dtype = getattr(torch, dtype)
    best: tuple[float, int] = (0.0, 0)
    tried = []
    for n in CUDA_SIZES if device.startswith("cuda") else CPU_SIZES:
        tried.append(n)
        a = torch.randn(n, n, device=device).to(torch_dtype)
        b = torch.randn(n, n, device=device).to(torch_dtype)
        timer = benchmark.Timer("torch.mm(a, b)", globals={"torch": torch, "a": a, "b": b}, num_threads=threads)
        once = timer.timeit(1).median  # also a warm-up
        seconds = timer.blocked_autorange(min_run_time=0.2).median
        best = max(best, (2 * n**3 / seconds / 1e12, n))
        del a, b
        synchronize(device)
        if once > SLOW_PRODUCT_S:
            break
    tflops, n = best
    sizes = "/".join(map(str, tried))
    return Peak(tflops, "measured "
                        "matmul", f"{n}³ {dtype} (best of {sizes}), {threads} thread{'s' if threads != 1 else ''}")


def fastest_call(call: Callable[[], object], device: str, threads: int, calls: int,
                 give_up_s: float = math.inf) -> float:
    """The fastest of `calls` timed calls after one to warm up, on `threads` threads, each synchronised;
    inf as soon as one takes longer than `give_up_s`. What the quick checks of a cached roof time."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    best = math.inf
    try:
        for _ in range(calls + 1):
            synchronize(device)
            start = time.perf_counter()
            call()
            synchronize(device)
            best = min(best, time.perf_counter() - start)
            if best > give_up_s:
                return math.inf
    finally:
        torch.set_num_threads(before)
    return best


def quick_tflops(device: str, dtype: str, threads: int, calls: int = 10) -> float:
    """TFLOP/s of one small square product on `threads` threads, the fastest of a few calls after one to
    warm up: a figure the device's true peak cannot lie below, taken in a fraction of a second; 0 for a dtype
    the CPU emulates (no quick figure)."""
    n = QUICK_SIZE_CUDA if device.startswith("cuda") else QUICK_SIZE_CPU
    torch_dtype = getattr(torch, dtype)
    a = torch.randn(n, n, device=device).to(torch_dtype)
    b = torch.randn(n, n, device=device).to(torch_dtype)
    best = fastest_call(lambda: torch.mm(a, b), device, threads, calls, give_up_s=SLOW_PRODUCT_S)
    return 0.0 if math.isinf(best) else 2 * n**3 / best / 1e12


def measured(device: str, dtype: str, threads: int, *, refresh: bool = False) -> Peak:
    """The device's measured peak, from the cache unless `refresh` (a result has beaten it) or the cached
    figure is implausible: far below what one small product reaches now (a figure measured at a busy moment,
    or a damaged cache, would otherwise stay wrong for ever when no model beats it)."""
    key = cache_key(device, dtype, threads)
    quick = 0.0
    if not refresh:
        cached = _valid(cache.load(CACHE).get(key))
        if cached is not None:
            quick = quick_tflops(device, dtype, threads)
            if quick <= IMPLAUSIBLE * cached.tflops:
                return cached
            refresh = True
    peak = measure_matmul(device, dtype, threads)
    if quick > peak.tflops:  # never below the check that found the cache implausible, or it would be again
        n = QUICK_SIZE_CUDA if device.startswith("cuda") else QUICK_SIZE_CPU
        peak = Peak(quick, "measured matmul", f"{n}³ {dtype} (the quick check), {threads} thread"
                    + ("s" if threads != 1 else ""))
    if refresh:  # keep the better of the old and the new: a figure measured once is achievable
        old = _valid(cache.load(CACHE).get(key))
        if old is not None and old.tflops > peak.tflops:
            peak = old
    cache.store(CACHE, {key: asdict(peak)})
    return peak


def at_least(peak: Peak, achieved: float, what: str, device: str, dtype: str, threads: int) -> Peak:
    """A peak no achieved figure exceeds: measured again when `achieved` beats it, then the achieved
    figure itself if the model still beats every matrix product."""
    if achieved <= peak.tflops:
        return peak
    again = measured(device, dtype, threads, refresh=True)
    if achieved <= again.tflops:
        return again
    return Peak(achieved, "achieved by the model", f"{what} beat the best matrix product ({again.tflops:.3g} TFLOP/s)")
