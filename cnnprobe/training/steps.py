"""The one definition of a training step: forward (eval, inference_mode), forward_backward (train mode, the
loss, its backward) and train_step (and the optimizer's step and zero_grad), as a training loop runs them.
bench times these, the memory prediction runs them on fake tensors, and each DDP rank runs them wrapped."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..core.enums import Mode, Optimizer
from .config import BenchConfig
from .devices import NoClock
from .recipe import make_optimizer, task_loss
from .setup import BenchSetup
from .targets import tensors


class Step:
    """One kind of step over a setup: `step()` gives the callable a training loop (or inference) runs, marking
    its phases on `marks`; `held()` is what is live when it starts. Timing and memory counting wrap it."""

    mode: ClassVar[Mode]

    def __init__(self, setup: BenchSetup, frozen: bool = False) -> None:
        self.setup = setup
        self.config = setup.config
        self.frozen = frozen
        self.marks: Any = NoClock()  # where the step reports its phases
        self.optimizer: torch.optim.Optimizer | None = None

    def step(self, module: Any = None) -> Callable[[], None]:
        """The callable one step executes; `module` defaults to what the setup runs."""
        raise NotImplementedError

    def held(self) -> dict[str, Iterable[Any]]:
        """What is live when a step starts, by category. Generators, so that nothing here keeps a
        tensor alive that the step would free (last step's gradients, freed by zero_grad)."""
        raw, setup, optimizer = self.setup.raw, self.setup, self.optimizer
        assert raw is not None
        state = optimizer.state.values() if optimizer is not None else []
        return {
            "parameters": raw.parameters(),
            "buffers": raw.buffers(),
            "gradients": (p.grad for p in raw.parameters() if p.grad is not None),
            "optimizer_state": (v for s in state for v in s.values() if isinstance(v, torch.Tensor)),
            "inputs": (t for t in (*setup.inputs, *tensors(setup.target))),
        }


def _loss_backward(module: Any, setup: BenchSetup, marks: Any, zero: torch.nn.Module | None = None) -> torch.Tensor:
    """The forward pass and the task's loss, then the backward (marked as phases): what forward_backward and
    train_step share. `zero`: a module whose last gradients are freed first, inside the forward phase."""
    assert setup.built is not None
    args, target, task = setup.training_arguments(), setup.target, setup.built.spec.task
    marks.phase("forward")
    if zero is not None:
        zero.zero_grad(set_to_none=True)
    with setup.autocast():
        loss = task_loss(task, module(*args), target)
    marks.phase("backward")
    loss.backward()
    return loss


class ForwardStep(Step):
    """Inference: eval mode under inference_mode."""

    mode = Mode.FORWARD

    def step(self, module: Any = None) -> Callable[[], None]:
        module = module or self.setup.module
        args, autocast = self.setup.arguments(), self.setup.autocast
        module.eval()

        def forward() -> None:
            marks = self.marks
            marks.phase("forward")
            with torch.inference_mode(), autocast():
                module(*args)
            marks.phase("end")

        return forward


class ForwardBackwardStep(Step):
    """Train mode, a loss and its backward pass; the gradients of the last step are freed first."""

    mode = Mode.FORWARD_BACKWARD

    def step(self, module: Any = None) -> Callable[[], None]:
        module = module or self.setup.module
        raw, setup = self.setup.raw, self.setup
        assert raw is not None
        module.train()

        def forward_backward() -> None:
            marks = self.marks
            _loss_backward(module, setup, marks, zero=raw)
            marks.phase("end")

        return forward_backward


class TrainStep(Step):
    """forward_backward plus the optimizer's step and zero_grad, as a training loop runs them."""

    mode = Mode.TRAIN_STEP

    def step(self, module: Any = None) -> Callable[[], None]:
        module = module or self.setup.module
        setup = self.setup
        if self.optimizer is None:
            kind = Optimizer(self.config.optimizer)
            self.optimizer = make_optimizer(self.setup.trainable(), kind, self.setup.foreach)
        optimizer = self.optimizer
        module.train()

        def train_step() -> None:
            marks = self.marks
            loss = _loss_backward(module, setup, marks)  # noqa: F841 - held through the optimizer's
            # step, as a training loop holds it (its storage counts in the peak)
            marks.phase("optimizer")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            marks.phase("end")

        return train_step


STEPS: dict[Mode, type[Step]] = {s.mode: s for s in (ForwardStep, ForwardBackwardStep, TrainStep)}


@dataclass(frozen=True)
class PlannedStep:
    """One entry of a run's plan: a mode, frozen or not."""

    mode: Mode
    frozen: bool  # run and reported with the freezing plan (the backward modes under a plan; never the forward)
    comparison: bool  # everything trainable, beside a freezing plan, for comparison


def plan(config: BenchConfig, modes: Collection[Mode] | None = None, *, compare: bool = True) -> list[PlannedStep]:
    """`BenchConfig.planned()` as steps, in its order: only `modes` (default: all the config's), and without
    `compare` none of the all-trainable comparisons."""
    steps = []
    for name, frozen in config.planned():
        mode = Mode(name)
        comparison = config.freezing and not frozen and mode is not Mode.FORWARD
        if (modes is None or mode in modes) and (compare or not comparison):
            steps.append(PlannedStep(mode, frozen, comparison))
    return steps


def walk(setup: BenchSetup, steps: Iterable[PlannedStep]) -> Iterator[PlannedStep]:
    """Each step with the setup's parameters as it needs them: the freezing plan applied (the forward pass too,
    which freezing does not change), or everything trainable for a comparison; set only where that changes."""
    applied: bool | None = None
    for step in steps:
        frozen = setup.config.freezing and not step.comparison
        if frozen is not applied:
            setup.set_frozen(frozen)
            applied = frozen
        yield step
