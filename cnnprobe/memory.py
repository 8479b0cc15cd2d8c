"""Peak memory of one step: CUDA's allocator statistics, or the CPU's resident set sampled in a thread."""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Callable, Iterable

_PAGE = resource.getpagesize()


def rss_bytes() -> int:
    """Resident memory of this process now (Linux; 0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):  # pragma: no cover - not Linux
        return 0


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo: what can be allocated without swapping."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover
        pass
    return None


class RssSampler:
    """Samples resident memory every `interval` seconds while active; `peak` is the highest seen."""

    def __init__(self, interval: float = 0.0005) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> "RssSampler":
        self.peak = rss_bytes()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim), so resident memory shows what a step
    allocates rather than what earlier steps left cached."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def cpu_peak(step: Callable[[], object], persistent: int) -> int:
    """Peak memory of one CPU step: the growth of resident memory during the step, sampled in a thread
    after releasing freed heap pages, plus `persistent`, the bytes held across steps (weights,
    gradients, optimizer state, inputs)."""
    release_free_heap()
    with RssSampler() as sampler:
        before = sampler.peak
        step()
    return persistent + max(0, sampler.peak - before)


def storage_bytes(tensors: Iterable[object]) -> int:
    """Bytes of distinct storages among `tensors` (views and shared weights counted once)."""
    import torch

    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def cuda_peak(step: Callable[[], object], device: object) -> int:
    """`max_memory_allocated` over one step: weights, inputs, activations, gradients and optimizer state."""
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device))
