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
