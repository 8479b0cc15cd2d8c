"""What a benchmark run depends on, besides the model and the batch, and the switches stated with it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from ..core.enums import Device, DType, Mode, Optimizer
from ..core.errors import UsageError

MAX_REPEAT = 20


@dataclass
class BenchConfig:
    """Everything a benchmark run depends on, besides the model and batch."""

    device: Device | str = Device.CPU
    dtype: DType | str = DType.FLOAT32
    mode: Mode | str = Mode.ALL
    channels_last: bool = False
    compile: bool = False
    threads: int | None = None
    min_time: float = 1.0
    max_time: float | None = None  # default: 10 × min_time
    warmup: int = 3
    optimizer: Optimizer | str = Optimizer.SGD
    freeze_all: bool = False
    freeze_except: str | Sequence[str] | None = None
    freeze: str | Sequence[str] | None = None
    num_classes: int | None = None
    head: str | None = None  # a new classifier, as `trainable --head` writes it
    input_size: Any = None  # one size or several, as build_model takes them
    input_dtype: Any = None
    input_range: Any = None
    weights: str | None = None
    trust: bool = False
    count_flops: bool = True
    peak: bool = True
    memory: bool = True
    predict: bool = True  # predict each mode's peak memory beside the measurement
    repeat: int = 1  # whole sweeps, to see how far medians drift from run to run

    def __post_init__(self) -> None:
        self.device = Device(self.device)
        self.dtype = DType(self.dtype)
        self.mode = Mode(self.mode)
        self.optimizer = Optimizer(self.optimizer)
        if not (isinstance(self.min_time, (int, float)) and math.isfinite(self.min_time) and self.min_time > 0):
            raise UsageError(f"--min-time must be a positive number of seconds, got {self.min_time}")
        if self.max_time is not None and not (math.isfinite(self.max_time) and self.max_time >= self.min_time):
            raise UsageError(f"--max-time must be at least --min-time ({self.min_time} s), got {self.max_time}")
        if self.threads is not None and self.threads <= 0:
            raise UsageError(f"--threads must be positive, got {self.threads}")
        if self.warmup < 0:
            raise UsageError(f"--warmup must be 0 or more, got {self.warmup}")
        if not isinstance(self.repeat, int) or not 1 <= self.repeat <= MAX_REPEAT:
            raise UsageError(f"--repeat must be an integer from 1 to {MAX_REPEAT}, got {self.repeat}")

    @property
    def modes(self) -> list[Mode]:
        return Mode.expand(self.mode)

    @property
    def training(self) -> bool:
        """Whether any mode runs a backward pass."""
        return any(m is not Mode.FORWARD for m in self.modes)

    @property
    def freezing(self) -> bool:
        return bool(self.freeze_all or self.freeze_except or self.freeze)

    def planned(self) -> list[tuple[str, bool]]:
        """(mode, frozen) of every result a run will hold, in the order `timing.Bench` measures them: with
        freezing, the backward modes frozen, then again with everything trainable for comparison."""
        out = []
        for frozen in ([True, False] if self.freezing else [False]):
            for mode in self.modes:
                if mode is Mode.FORWARD and self.freezing and not frozen:
                    continue  # freezing does not change the forward pass
                out.append((mode.value, frozen and mode is not Mode.FORWARD))
        return out

    def replace(self, **changes: Any) -> "BenchConfig":
        return BenchConfig(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})


def settings(config: BenchConfig, threads: int) -> dict[str, Any]:
    """The switches that change timings, stated with every result."""
    out: dict[str, Any] = {
        "threads": threads,
        "autocast": None if config.dtype is DType.FLOAT32 else DType(config.dtype).value,
        "channels_last": config.channels_last,
        "compile": config.compile,
        "optimizer": Optimizer(config.optimizer).value,
        "torch": torch.__version__,
    }
    if Device(config.device) is Device.CUDA:
        out.update(
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
            float32_matmul_precision=torch.get_float32_matmul_precision(),
        )
    return out
