"""What every mode of one model at one batch shares: the model on its device, the input, precision, memory
format, compile and the freezing plan. bench, the memory prediction and each DDP rank set up the same way."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import torch
from torch import nn

from ..core.enums import DType
from ..core.errors import CnnprobeError
from ..models.build import Built
from .config import BenchConfig
from .devices import check_device
from .targets import make_targets


class BenchSetup:
    """What every mode of one model at one batch shares, on one device. `close()` lets it go."""

    def __init__(self, model: "str | nn.Module", batch: int, config: BenchConfig) -> None:
        self.model_ref = model
        self.batch = batch
        self.config = config
        self.device = check_device(config.device)
        self.built: Built | None = None
        self.raw: nn.Module | None = None  # the module as built: what is frozen and measured
        self.module: Any = None  # what runs: `raw`, or torch.compile of it
        self.inputs: tuple[torch.Tensor, ...] = ()
        self.target: Any = None  # the batch's targets, as the task's loss takes them (detection: a list of dicts)
        self.as_built: list[bool] = []  # each parameter's requires_grad as built: what "all trainable" restores
        self.foreach: bool | None = None  # the optimizer's implementation; None: torch's choice for the device
        self.round_to = 1  # bytes a storage is rounded up to when memory is counted (CUDA's allocator: 512)

    @classmethod
    def assembled(cls, built: Built, module: nn.Module, inputs: tuple[torch.Tensor, ...], target: Any,
                  config: BenchConfig, batch: int, *, device: str, foreach: bool | None = None,
                  round_to: int = 1) -> "BenchSetup":
        """A setup from parts made elsewhere (fake tensors that stand for `config.device`), for running the
        same steps without the device."""
        setup = cls.__new__(cls)
        setup.model_ref, setup.batch, setup.config, setup.device = built.module, batch, config, device
        setup.built, setup.raw, setup.module, setup.inputs, setup.target = built, module, module, inputs, target
        setup.foreach, setup.round_to = foreach, round_to
        setup.as_built = [p.requires_grad for p in module.parameters()]
        return setup

    def build(self) -> "BenchSetup":
        """Model, input, precision, memory format, compile. The caller restores the global switches after."""
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        if self.device == "cuda":
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(0)
        model = self.model_ref
        if isinstance(model, nn.Module):  # never change the caller's module: time a copy on the device
            model = copy.deepcopy(model).to(self.device)
        config = self.config
        self.built = config.request.build(model, device=self.device)
        module = self.built.module
        self.inputs = self.built.example_inputs(self.batch, random=True)
        self.target = make_targets(self.built, self.inputs)
        if config.channels_last:
            module = module.to(memory_format=torch.channels_last)
            self.inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
                                for x in self.inputs)
        self.raw = module
        self.as_built = [p.requires_grad for p in module.parameters()]
        self.module = torch.compile(module) if self.config.compile else module
        return self

    def arguments(self, targets: Any = None) -> tuple[Any, ...]:
        """The model's call on the inputs, as its task takes them (a detection model: a list of images)."""
        assert self.built is not None
        return self.built.arguments(self.inputs, targets)

    def training_arguments(self) -> tuple[Any, ...]:
        """The model's call in a training step: with the targets where the model takes them (detection)."""
        return self.arguments(self.target)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if DType(self.config.dtype) is DType.FLOAT32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=getattr(torch, DType(self.config.dtype).value))

    def set_frozen(self, frozen: bool) -> None:
        """The freezing plan, or the model trainable as built (for comparison): a detection model's backbone
        stages torchvision freezes (trainable_backbone_layers) stay frozen, as they train."""
        assert self.raw is not None
        params = list(self.raw.parameters())
        as_built = self.as_built if len(self.as_built) == len(params) else [True] * len(params)
        for p, trainable in zip(params, as_built, strict=True):
            p.requires_grad_(trainable)
        if frozen:
            self.config.plan.apply(self.raw)
        if self.config.training and not any(p.requires_grad for p in self.raw.parameters()):
            if not any(True for _ in self.raw.parameters()):
                raise CnnprobeError(f"{self.built.name if self.built else 'the model'} has no parameters: there is "
                                    "nothing to train; use --mode forward")
            raise CnnprobeError("nothing is trainable after freezing: give the model a new head (--num-classes "
                                "or --head) or freeze less")

    def trainable(self) -> list[nn.Parameter]:
        assert self.raw is not None
        return [p for p in self.raw.parameters() if p.requires_grad]

    def close(self) -> None:
        self.module = self.raw = self.target = None
        self.inputs = ()
        self.built = None
