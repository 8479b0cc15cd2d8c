"""Quantized models in `bench`: int8 on the CPU, forward only, timed against their float twin.

torch's quantized kernels (fbgemm, qnnpack) run on the CPU only, and a
quantized model's packed int8 weights take no gradients, so a quantized model
has one mode to time: the forward pass. What is worth knowing about it is what
int8 saves, so each run of one also times its float twin (torchvision's float
model of the same architecture, `resnet18` for `quantized_resnet18`, float32,
at the same input and batch, in the same process right after) and states the
ratio of the two medians.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..core.enums import Device, DType, Mode
from ..core.errors import UsageError
from ..models.quantized import float_model_name, quantized_name
from ..training.config import BenchConfig

if TYPE_CHECKING:
    from torch import nn

    from .result import BenchResult

NOTE = ("quantized: int8 on the CPU, forward only (int8 weights take no gradients; --mode all times the forward "
        "pass); against {twin}, its float twin, timed in float32 at the same input and batch right after; TFLOP/s "
        "and % peak count its int8 multiply-accumulates against the float32 matmul peak")


@dataclass
class Int8Saving:
    """An int8 model's forward pass against its float twin's, timed at the same input and batch."""

    float_model: str
    int8_median_ms: float
    float_median_ms: float
    float_iqr_ms: float
    float_noisy: bool

    @property
    def speedup(self) -> float:
        """How many times faster int8 runs: the float twin's median over the int8 model's."""
        return self.float_median_ms / self.int8_median_ms

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": self.speedup}


def checked_config(models: Sequence["str | nn.Module"], config: BenchConfig) -> BenchConfig:
    """The configuration a sweep with quantized models runs under: refused in one line on CUDA, in a
    training mode, with freezing or autocast; `--mode all` becomes the forward pass (with a note)."""
    quantized = [q for m in models if (q := quantized_name(m)) is not None]
    if not quantized:
        return config
    name = quantized[0]
    if Device(config.device) is Device.CUDA:
        raise UsageError(f"{name} runs int8 on the CPU only (torch's quantized kernels have no CUDA version): "
                         "drop --device cuda")
    mode = Mode(config.mode)
    if mode in (Mode.FORWARD_BACKWARD, Mode.TRAIN_STEP):
        raise UsageError(f"{name} is forward-only (its int8 weights take no gradients): use --mode forward, "
                         f"not --mode {mode.value}")
    if config.freezing:
        raise UsageError(f"{name} is forward-only, so freezing changes nothing in it: drop the --freeze options")
    if DType(config.dtype) is not DType.FLOAT32:
        raise UsageError(f"{name} computes in int8: --dtype {DType(config.dtype).value} does not apply to it")
    if mode is Mode.ALL:
        if len(quantized) < len(models):
            raise UsageError(f"{name} is forward-only: bench it apart from float models, or give --mode forward")
        return config.replace(mode=Mode.FORWARD)
    return config


def twin_config(config: BenchConfig) -> BenchConfig:
    """The float twin's run: its forward pass, as the int8 model's is timed (no second peak or prediction)."""
    return config.replace(mode=Mode.FORWARD, predict=False, peak=False, repeat=1, weights=None, head=None,
                          num_classes=None)


def float_twin(name: str) -> str | None:
    """The float model to time beside a quantized one."""
    return float_model_name(name)


def saving(int8: "BenchResult", twin: "BenchResult") -> Int8Saving | None:
    """The two forward passes side by side; None where either has no forward result."""
    mine, theirs = int8.result(Mode.FORWARD.value), twin.result(Mode.FORWARD.value)
    if mine is None or theirs is None or not mine.median_ms:
        return None
    return Int8Saving(twin.model, mine.median_ms, theirs.median_ms, theirs.iqr_ms, theirs.noisy)
