"""The device's memory bandwidth, the roof a module that moves more bytes than it computes sits under.

Measured like the FLOP/s peak (flops_peak): a large copy (2 bytes moved per byte of buffer: read, write) and
a triad `a = b + 3c` (3 bytes) in float32, each at several sizes beyond the last-level cache, so that the
figure is the memory's, not the cache's; the best kept, cached per (device, threads, torch release, this
file's code). A cached figure that one quick copy, timed at the start of every run, beats several times over
is implausible and measured again; a cached figure that a module beats is measured again, and if the module
still beats it (its data sat in cache) the module's figure is the roof, so a share is never above 100%.
For known GPUs the datasheet's figure (runtime.hardware's table) is given too, labelled as such.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..core import cache
from ..memory import host
from ..training.devices import device_name, synchronize, timer_module
from .flops_peak import IMPLAUSIBLE, cached_figure, fastest_call
from .hardware import matching

CPU_CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")
FALLBACK_LLC = 32 * 2**20  # where the kernel does not say: a large server's L3
FALLBACK_L2_CUDA = 64 * 2**20
CPU_MULTIPLES = (4, 8)  # buffer sizes, in last-level caches
CUDA_SIZES = (256 * 2**20, 512 * 2**20, 1024 * 2**20)  # per buffer; at least CUDA_MULTIPLE L2s
CUDA_MULTIPLE = 8
MEMORY_SHARE = 8  # the triad's three buffers stay under 1/8 of the free memory
MIN_BUFFER = 2**20
KERNELS = {  # statement, bytes moved per byte of one buffer
    "copy": ("a.copy_(b)", 2),
    "triad": ("torch.add(b, c, alpha=3.0, out=a)", 3),
}
QUICK_CALLS = 4
CACHE = "bandwidth.json"
_CODE = hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:12]  # a new method invalidates old figures


@dataclass
class Bandwidth:
    """A memory bandwidth and where it comes from."""

    gbps: float
    source: str  # "measured copy", "measured triad", "achieved by <what>" or "datasheet"
    detail: str  # what was measured, or which table row


def bytes_moved(kernel: str, buffer_bytes: int) -> int:
    """Bytes a kernel reads and writes over buffers of `buffer_bytes` each (STREAM's convention: no
    write-allocate traffic counted)."""
    return KERNELS[kernel][1] * buffer_bytes


def datasheet_bandwidth(name: str) -> Bandwidth | None:
    """The spec table's figure (runtime.hardware) for a GPU CUDA names so, e.g. 'NVIDIA A100-SXM4-80GB'."""
    spec = matching(name)
    return None if spec is None else Bandwidth(spec.bandwidth_gbps, "datasheet", f"{spec.key} memory bandwidth")


def _size_bytes(text: str) -> int | None:
    """sysfs's cache size, e.g. '32768K'."""
    text = text.strip().upper()
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in "KMG" else text
    return int(digits) * scale if digits.isdigit() and int(digits) > 0 else None


def llc_bytes(root: Path = CPU_CACHE_DIR) -> int:
    """The CPU's last-level cache: the largest of the highest level sysfs lists for cpu0."""
    found: list[tuple[int, int]] = []
    try:
        for index in root.glob("index*"):
            try:
                level = int((index / "level").read_text())
                size = _size_bytes((index / "size").read_text())
            except (OSError, ValueError):
                continue
            if size is not None:
                found.append((level, size))
    except OSError:
        pass
    return max(found)[1] if found else FALLBACK_LLC


def available_bytes(device: str) -> int:
    """Memory free for the buffers now."""
    if device.startswith("cuda"):
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    found = host.available_bytes()  # MemAvailable
    if found is not None:
        return found
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def buffer_sizes(device: str) -> list[int]:
    """Bytes per buffer to measure at: several times the last-level cache, each a whole number of float32
    elements, the triad's three buffers under a modest share of the free memory."""
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        floor = CUDA_MULTIPLE * int(getattr(props, "L2_cache_size", 0) or FALLBACK_L2_CUDA)
        wanted = [max(size, floor) for size in CUDA_SIZES]
    else:
        wanted = [m * llc_bytes() for m in CPU_MULTIPLES]
    cap = max(MIN_BUFFER, available_bytes(device) // (3 * MEMORY_SHARE))
    return sorted({min(size, cap) // 4 * 4 for size in wanted})


def _threads(threads: int) -> str:
    return f"{threads} thread{'s' if threads != 1 else ''}"


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


def measure_bandwidth(device: str, threads: int) -> Bandwidth:
    """The best GB/s of a copy and a triad at several sizes beyond the last-level cache, each timed
    until stable."""
    benchmark = timer_module()
    best: tuple[float, str, int] = (0.0, "copy", 0)
    sizes = buffer_sizes(device)
    for size in sizes:
        a = torch.empty(size // 4, dtype=torch.float32, device=device)
        b = torch.ones_like(a)
        c = torch.ones_like(a)
        for kernel, (statement, _) in KERNELS.items():
            timer = benchmark.Timer(statement, globals={"torch": torch, "a": a, "b": b, "c": c},
                                    num_threads=threads)
            timer.timeit(1)  # a warm-up: the first touch of a's pages
            seconds = timer.blocked_autorange(min_run_time=0.2).median
            best = max(best, (bytes_moved(kernel, size) / seconds / 1e9, kernel, size))
        del a, b, c
        synchronize(device)
    gbps, kernel, size = best
    tried = "/".join(_mib(s) for s in sizes)
    return Bandwidth(gbps, f"measured {kernel}", f"{kernel} of {_mib(size)} float32 buffers (best of copy and "
                                                 f"triad at {tried}), {_threads(threads)}")


def _quick_half(device: str) -> int:
    """The bytes of each half of the quick check's buffer: a quarter of the smallest measured size."""
    return max(buffer_sizes(device)[0] // 16 * 4, MIN_BUFFER)


def quick_gbps(device: str, threads: int) -> float:
    """GB/s of one copy between the halves of a buffer half the smallest measured size (a copy that moves twice
    the last-level cache, in a quarter of the memory of two full buffers: it runs inside every bench and
    predict), on `threads` threads, the fastest of a few calls after one to warm up: a figure the memory's
    true bandwidth cannot lie far below (IMPLAUSIBLE leaves room for what the cache serves), taken in a
    fraction of a second."""
    half = _quick_half(device)
    buffer = torch.ones(2 * half // 4, dtype=torch.float32, device=device)
    src, dst = buffer[: half // 4], buffer[half // 4:]
    return bytes_moved("copy", half) / fastest_call(lambda: dst.copy_(src), device, threads, QUICK_CALLS) / 1e9


def _valid(entry: Any) -> Bandwidth | None:
    """A cached entry that is a plausible bandwidth, or None."""
    found = cached_figure(entry, "gbps")
    return Bandwidth(*found) if found is not None else None


def cache_key(device: str, threads: int) -> str:
    return f"{device_name(device)}|float32|{threads}|{torch.__version__}|{_CODE}"


def measured_bandwidth(device: str, threads: int, *, refresh: bool = False) -> Bandwidth:
    """The device's measured bandwidth, from the cache unless `refresh` (a module has beaten it) or the cached
    figure is implausible: far below what one quick copy reaches now."""
    key = cache_key(device, threads)
    quick = 0.0
    if not refresh:
        cached = _valid(cache.load(CACHE).get(key))
        if cached is not None:
            quick = quick_gbps(device, threads)
            if quick <= IMPLAUSIBLE * cached.gbps:
                return cached
            refresh = True
    bandwidth = measure_bandwidth(device, threads)
    if quick > bandwidth.gbps:  # never below the check that found the cache implausible, or it would be again
        bandwidth = Bandwidth(quick, "measured copy", f"copy of {_mib(_quick_half(device))} float32 buffers "
                                                      f"(the quick check), {_threads(threads)}")
    if refresh:  # keep the better of the old and the new: a figure measured once is achievable
        old = _valid(cache.load(CACHE).get(key))
        if old is not None and old.gbps > bandwidth.gbps:
            bandwidth = old
    cache.store(CACHE, {key: asdict(bandwidth)})
    return bandwidth


def bandwidth_at_least(bw: Bandwidth, achieved_gbps: float, what: str, device: str, threads: int) -> Bandwidth:
    """A roof no achieved figure exceeds: measured again when `achieved_gbps` beats it, then the achieved
    figure itself if the module still beats every copy and triad (its data sat in cache)."""
    if achieved_gbps <= bw.gbps:
        return bw
    again = measured_bandwidth(device, threads, refresh=True)
    if achieved_gbps <= again.gbps:
        return again
    return Bandwidth(achieved_gbps, f"achieved by {what}",
                     f"{what} beat the best copy and triad ({again.gbps:.4g} GB/s): its data sat in cache")
