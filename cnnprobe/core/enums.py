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


class Task(str, Enum):
    """What a model does, as torchvision groups its models: each task has its own inputs, outputs and loss."""

    CLASSIFICATION = "classification"
    DETECTION = "detection"
    SEGMENTATION = "segmentation"
    VIDEO = "video"
    OPTICAL_FLOW = "optical_flow"
    QUANTIZED = "quantized"


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


class MemoryCategory(str, Enum):
    """What the bytes of a step's peak hold: the keys of every memory breakdown, in the JSON as these strings."""

    PARAMETERS = "parameters"
    BUFFERS = "buffers"
    GRADIENTS = "gradients"
    OPTIMIZER_STATE = "optimizer_state"
    INPUTS = "inputs"
    ACTIVATIONS = "activations"
    TEMPORARIES = "temporaries"
    WORKSPACE = "workspace"  # what the allocator held above the tensors: operators' own allocations

    @property
    def label(self) -> str:
        """As prose names it."""
        return {"optimizer_state": "optimizer state", "workspace": "operators' workspaces"}.get(self.value, self.value)

    @property
    def heading(self) -> str:
        """As a table's column is headed, where width is short."""
        return {"optimizer_state": "optimizer", "workspace": "workspace"}.get(self.value, self.label)

    @classmethod
    def tensors(cls) -> tuple[str, ...]:
        """The categories a tensor falls in, counted tensor by tensor (all but the operators' workspaces)."""
        return tuple(c.value for c in cls if c is not cls.WORKSPACE)
