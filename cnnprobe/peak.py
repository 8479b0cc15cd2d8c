"""The device's peak FLOP/s, against which achieved throughput is a share.

Measured: a large matrix product in the benchmark's precision, timed once per
(device, dtype, threads, torch release) and cached. For known GPUs the
datasheet's dense figure is given too, labelled as such.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Dense (no sparsity) datasheet peaks, TFLOP/s. float32 here means IEEE fp32, not TF32.
DATASHEET: dict[str, dict[str, float]] = {
    "H200": {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4},
    "H100 SXM": {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4},
    "H100 PCIe": {"float32": 51.2, "tf32": 378.0, "bfloat16": 756.0, "float16": 756.0},
    "A100": {"float32": 19.5, "tf32": 156.0, "bfloat16": 312.0, "float16": 312.0},
    "L40S": {"float32": 91.6, "tf32": 183.0, "bfloat16": 362.0, "float16": 362.0},
    "L4": {"float32": 30.3, "tf32": 60.0, "bfloat16": 121.0, "float16": 121.0},
    "A10": {"float32": 31.2, "tf32": 62.5, "bfloat16": 125.0, "float16": 125.0},
    "V100": {"float32": 15.7, "float16": 125.0},
    "T4": {"float32": 8.1, "float16": 65.0},
    "RTX 4090": {"float32": 82.6, "tf32": 82.6, "bfloat16": 165.2, "float16": 165.2},
}


@dataclass
class Peak:
    """A peak throughput and where it comes from."""

    tflops: float
    source: str  # "measured matmul" or "datasheet"
    detail: str  # what was measured, or which table row


def datasheet(device_name: str, dtype: str, tf32: bool = False) -> Peak | None:
    """The table's figure for a GPU whose name contains a known model, e.g. 'NVIDIA H200'."""
    name = device_name.upper()
    for model in sorted(DATASHEET, key=len, reverse=True):
        if model.upper() in name or (model == "H100 SXM" and "H100" in name and "PCIE" not in name):
            key = "tf32" if dtype == "float32" and tf32 and "tf32" in DATASHEET[model] else dtype
            if key in DATASHEET[model]:
                return Peak(DATASHEET[model][key], "datasheet", f"{model} dense {key}")
    return None


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _cache_path() -> Path:
    root = os.environ.get("CNNPROBE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "cnnprobe")
    return Path(root) / "peaks.json"


def _load() -> dict[str, Any]:
    try:
        return json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _save(cache: dict[str, Any]) -> None:
    path = _cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        tmp.replace(path)  # never a half-written cache
    except OSError:
        pass  # a read-only home only costs a re-measurement


def measured(device: str, dtype: str, threads: int) -> Peak:
    """A matrix product's FLOP/s on `device` in `dtype`, measured once and cached."""
    import torch

    from .timing import timer_module

    name = device_name(device)
    tf32 = bool(device.startswith("cuda") and torch.backends.cuda.matmul.allow_tf32)
    key = f"{name}|{dtype}|{threads}|tf32={tf32}|{torch.__version__}|v2"
    cache = _load()
    if key in cache:
        return Peak(**cache[key])
    benchmark = timer_module()
    torch_dtype = getattr(torch, dtype)
    n, largest = 256, (8192 if device.startswith("cuda") else 2048)
    while True:  # grow the product until one takes long enough to time, so slow dtypes stay quick
        a = torch.randn(n, n, device=device).to(torch_dtype)
        b = torch.randn(n, n, device=device).to(torch_dtype)
        timer = benchmark.Timer("torch.mm(a, b)", globals={"torch": torch, "a": a, "b": b}, num_threads=threads)
        once = timer.timeit(2).median
        if once > 0.05 or n >= largest:
            break
        n *= 2
    seconds = timer.blocked_autorange(min_run_time=0.3).median
    peak = Peak(2 * n**3 / seconds / 1e12, "measured matmul", f"{n}×{n}×{n} {dtype}, {threads} thread{'s' if threads != 1 else ''}")
    cache[key] = asdict(peak)
    _save(cache)
    return peak
