"""Memory the machine has, and CUDA's own count of a step's peak."""

from __future__ import annotations

from collections.abc import Callable

import torch


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo: what can be allocated without swapping (None off Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):  # pragma: no cover
        pass
    return None


def allocator_peak(step: Callable[[], object], device: str) -> int:
    """`max_memory_allocated` over one step: what CUDA's caching allocator handed out at most, its
    512-byte rounding and cuDNN's workspaces included."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device))
