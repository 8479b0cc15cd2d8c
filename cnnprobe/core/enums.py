"""Closed vocabularies shared by the API and the CLI.

Kept free of torch so that `cnnprobe --help` stays fast: Typer turns these
straight into choices.
"""

from __future__ import annotations

from enum import Enum


class Source(str, Enum):
    """Where a model's builder comes from."""

    CNNPROBE = "cnnprobe"
    TORCHVISION = "torchvision"
    FILE = "file"
    MODULE = "module"


class Optimizer(str, Enum):
    """Optimizers whose per-parameter state size we know."""

    SGD = "sgd"
    MOMENTUM = "momentum"
    ADAM = "adam"
    ADAMW = "adamw"

    @property
    def state_per_param(self) -> int:
        """Extra tensors the optimizer keeps per trainable parameter."""
        return {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}[self.value]


class Counter(str, Enum):
    """FLOP counting engines."""

    TORCH = "torch"
    FVCORE = "fvcore"


class Device(str, Enum):
    """Where timings run."""

    CPU = "cpu"
    CUDA = "cuda"


class DType(str, Enum):
    """Compute precision; anything below float32 runs under autocast."""

    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


class Mode(str, Enum):
    """What one timed step does."""

    FORWARD = "forward"
    FORWARD_BACKWARD = "forward_backward"
    TRAIN_STEP = "train_step"
    ALL = "all"

    @classmethod
    def expand(cls, mode: "Mode | str") -> list["Mode"]:
        mode = cls(mode)
        return [cls.FORWARD, cls.FORWARD_BACKWARD, cls.TRAIN_STEP] if mode is cls.ALL else [mode]
