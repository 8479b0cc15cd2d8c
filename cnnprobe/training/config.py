"""What a benchmark run depends on, besides the model and the batch, and the switches stated with it."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Unpack

import torch

from ..core.enums import Device, DType, Mode, Optimizer
from ..core.errors import UsageError
from ..models.request import FREEZE_KEYS, MODEL_KEYS, FreezePlan, ModelRequest, RequestOptions, requested

MAX_REPEAT = 20


@dataclass(init=False)
class BenchConfig:
    """Everything a benchmark run depends on, besides the model and batch: how to time it, and the model's
    request (inputs, head, weights) and freezing plan, as records. The request's and the plan's keywords
    (`freeze_except="layer4,fc"`, `input_size=...`) are taken too, and go into those records."""

    device: Device
    dtype: DType
    mode: Mode
    channels_last: bool
    compile: bool
    threads: int | None
    min_time: float
    max_time: float | None  # default: 10 × min_time
    warmup: int
    optimizer: Optimizer
    count_flops: bool
    peak: bool
    memory: bool
    predict: bool  # predict each mode's peak memory beside the measurement
    repeat: int  # whole sweeps, to see how far medians drift from run to run
    request: ModelRequest  # inputs, head, weights; its `model` is unused (bench takes the model beside it)
    plan: FreezePlan

    def __init__(self, device: Device | str = Device.CPU, dtype: DType | str = DType.FLOAT32,
                 mode: Mode | str = Mode.ALL, channels_last: bool = False, compile: bool = False,
                 threads: int | None = None, min_time: float = 1.0, max_time: float | None = None, warmup: int = 3,
                 optimizer: Optimizer | str = Optimizer.SGD, *, count_flops: bool = True, peak: bool = True,
                 memory: bool = True, predict: bool = True, repeat: int = 1, request: ModelRequest | None = None,
                 plan: FreezePlan | None = None, **options: Unpack[RequestOptions]) -> None:
        self.device, self.dtype, self.mode = Device(device), DType(dtype), Mode(mode)
        self.channels_last, self.compile, self.threads = channels_last, compile, threads
        self.min_time, self.max_time, self.warmup = min_time, max_time, warmup
        self.optimizer = Optimizer(optimizer)
        self.count_flops, self.peak, self.memory, self.predict, self.repeat = count_flops, peak, memory, predict, repeat
        self.request, self.plan = requested(request, plan, **options)
        self._check()

    def __getattr__(self, name: str) -> Any:
        """The request's and the plan's keywords read as the fields they were (`config.head`)."""
        if name in MODEL_KEYS:
            return getattr(self.request, name)
        if name in FREEZE_KEYS:
            return self.plan.as_written()[name]
        raise AttributeError(f"'BenchConfig' object has no attribute '{name}'")

    def _check(self) -> None:
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
        return not self.plan.empty

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
        """A copy with `changes`: fields, or the request's and plan's keywords (which go into them)."""
        freezing = {k: changes.pop(k) for k in FREEZE_KEYS if k in changes}
        modelling = {k: changes.pop(k) for k in MODEL_KEYS if k in changes}
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        if freezing:
            current["plan"] = FreezePlan.from_options(**{**self.plan.as_written(), **freezing})
        current["request"] = ModelRequest.of(changes.pop("request", self.request), **modelling)
        return BenchConfig(**{**current, **changes})


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
