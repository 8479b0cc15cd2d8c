"""`bench`'s runners, as in timm's benchmark.py: a setup step, then one runner per mode.

`BenchSetup` builds what every mode shares (the model on its device, the
input, precision, memory format, compile, the freezing plan). Each runner
builds its step, warms it up, times it in blocks interleaved with a reference
kernel until the median is stable (`blocks`) while a phase clock times forward,
backward and optimizer inside the same steps, counts one more steady-state step's tensor memory, and
returns a `ModeResult`. Device specifics stay in the setup and `devices`.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from .benchconfig import BenchConfig
from .benchresult import MIN_BLOCKS, NOISY, ModeResult
from .blocks import Reference, Timed, reference_size, time_blocks
from .build import Built, build_model
from .devices import NoClock, PhaseTime, check_device, iqr
from .enums import DType, Mode, Optimizer
from .errors import CnnprobeError
from .freezing import FreezePlan
from .allocator import live_bytes, step_peak
from .memory import allocator_peak
from .memtrack import MemoryPeak, MemoryTracker
from .steps import make_optimizer, training_loss


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
        self.target: torch.Tensor | None = None
        self.foreach: bool | None = None  # the optimizer's implementation; None: torch's choice for the device
        self.round_to = 1  # bytes a storage is rounded up to when memory is counted (CUDA's allocator: 512)

    @classmethod
    def assembled(cls, built: Built, module: nn.Module, inputs: tuple[torch.Tensor, ...], target: torch.Tensor,
                  config: BenchConfig, batch: int, *, device: str, foreach: bool | None = None,
                  round_to: int = 1) -> "BenchSetup":
        """A setup from parts made elsewhere (fake tensors that stand for `config.device`), for running the
        same steps without the device."""
        setup = cls.__new__(cls)
        setup.model_ref, setup.batch, setup.config, setup.device = built.module, batch, config, device
        setup.built, setup.raw, setup.module, setup.inputs, setup.target = built, module, module, inputs, target
        setup.foreach, setup.round_to = foreach, round_to
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
        self.built = build_model(model, num_classes=config.num_classes, input_size=config.input_size,
                                 input_dtype=config.input_dtype, input_range=config.input_range, device=self.device,
                                 weights=config.weights, trust=config.trust, head=config.head)
        module = self.built.module
        self.inputs = self.built.example_inputs(self.batch, random=True)
        self.target = torch.randint(0, 1000, (self.batch,), device=self.device)
        if config.channels_last:
            module = module.to(memory_format=torch.channels_last)
            self.inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
                                for x in self.inputs)
        self.raw = module
        self.module = torch.compile(module) if self.config.compile else module
        return self

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if DType(self.config.dtype) is DType.FLOAT32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=getattr(torch, DType(self.config.dtype).value))

    def set_frozen(self, frozen: bool) -> None:
        """The freezing plan, or everything trainable (for comparison)."""
        assert self.raw is not None
        for p in self.raw.parameters():
            p.requires_grad_(True)
        if frozen:
            config = self.config
            FreezePlan.from_options(config.freeze_all, config.freeze_except, config.freeze).apply(self.raw)
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


class ModeRunner:
    """Times one mode. Subclasses build the step; the phases, statistics and memory are the same for all."""

    mode: ClassVar[Mode]

    def __init__(self, setup: BenchSetup, frozen: bool = False, flops: int | None = None) -> None:
        self.setup = setup
        self.config = setup.config
        self.frozen = frozen
        self.flops = flops  # counted FLOPs of one step
        self.marks: Any = NoClock()  # where the step reports its phases
        self.optimizer: torch.optim.Optimizer | None = None

    def step(self, module: Any = None) -> Callable[[], None]:
        """The callable one timed step executes; `module` defaults to what the setup runs."""
        raise NotImplementedError

    def run(self) -> ModeResult:
        fn = self.step()
        for _ in range(self.config.warmup):
            fn()
        timed = self.time_blocks(fn)
        median, iqr_s = timed.median, timed.iqr
        peak_bytes, breakdown, method, tensor_peak = self.memory(fn) if self.config.memory else (0, {}, "", None)
        result = ModeResult(
            mode=self.mode.value, median_ms=1e3 * median, iqr_ms=1e3 * iqr_s, runs=timed.steps,
            samples_per_s=self.setup.batch / median, peak_memory_bytes=peak_bytes, noisy=iqr_s > NOISY * median,
            frozen=self.frozen, flops=self.flops, tflops=self.flops / median / 1e12 if self.flops else None,
            memory_breakdown=breakdown, memory_method=method, samples_ms=[1e3 * s for s in timed.samples],
            tensor_peak_bytes=tensor_peak,
            blocks=len(timed.samples), steps_per_block=timed.number, few_blocks=len(timed.samples) < MIN_BLOCKS,
            reference_n=timed.reference_n, reference_ms=1e3 * timed.reference_median,
            reference_samples_ms=[1e3 * s for s in timed.reference],
            step_per_reference=statistics.median(timed.ratios),
        )
        total = sum(timed.samples)
        for name in ("forward", "backward", "optimizer"):
            if name in timed.phases:
                # one statistic with the step: its median, split in the shares of time each phase took over
                # the same blocks (a median per phase would drop each phase's preemptions, which the step's
                # blocks keep, and the phases would no longer add up to the step under load)
                setattr(result, f"{name}_ms", 1e3 * median * sum(timed.phases[name]) / total)
                setattr(result, f"{name}_iqr_ms", 1e3 * iqr(timed.phases[name]))
                result.phase_steps = timed.steps
        return result

    def time_blocks(self, fn: Callable[[], None]) -> Timed:
        """Blocks of timed steps, each followed by a block of the reference kernel (see `blocks`)."""
        device = self.setup.device
        reference = Reference(device, reference_size(self.flops, device))

        def arm(marks: Any) -> None:
            self.marks = marks

        max_time = self.config.max_time or 10 * self.config.min_time
        return time_blocks(fn, reference, arm, device, self.config.min_time, max_time)

    def time(self, fn: Callable[[], None]) -> tuple[float, float, int, list[float], dict[str, PhaseTime]]:
        """Timed steps until the median is stable, the phases clocked inside them:
        (median s, IQR s, steps, per-block samples s, phases)."""
        timed = self.time_blocks(fn)
        phases = {name: PhaseTime(1e3 * statistics.median(v), 1e3 * iqr(v), timed.steps)
                  for name, v in timed.phases.items()}
        return timed.median, timed.iqr, timed.steps, list(timed.samples), phases

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
            "inputs": (t for t in (*setup.inputs, setup.target) if t is not None),
        }

    def count_memory(self, fn: Callable[[], None], *, by_module: bool = False, record_ops: bool = False) -> MemoryPeak:
        """One more step, its tensor memory counted storage by storage (and, `by_module`, the activations
        it saves for backward credited to the modules that made them; `record_ops`, every operator call)."""
        tracker = MemoryTracker(self.held(), params=self.setup.trainable(), optimizer=self.optimizer,
                                round_to=self.setup.round_to, model=self.setup.raw if by_module else None,
                                record_ops=record_ops)
        self.marks = tracker
        try:
            with tracker:
                fn()
        finally:
            self.marks = NoClock()
            tracker.close()
        return tracker.result()

    def memory(self, fn: Callable[[], None]) -> tuple[int, dict[str, int], str, int]:
        """The allocator's peak over one more steady-state step, run as it is timed (no dispatch mode):
        on CUDA `max_memory_allocated`, on the CPU the profiler's allocation events above what is live
        when the step starts. A storage-by-storage count of another step gives the breakdown, and what
        the allocator held above it is `workspace` (operators' internal allocations; below zero where the
        counting mode changed the program: autograd cannot steal a gradient under one): (peak, breakdown,
        method, tensor peak). A compiled
        model is counted on its eager step (the tracker cannot see into compiled kernels)."""
        counted = self.count_memory(self.step(self.setup.raw) if self.config.compile else fn)
        if self.setup.device == "cuda":
            peak = allocator_peak(fn, self.setup.device)
        else:
            peak = live_bytes(t for ts in self.held().values() for t in ts) + step_peak(fn).peak_bytes
        return peak, {**counted.breakdown, "workspace": peak - counted.peak_bytes}, "allocator", \
            counted.peak_bytes


class ForwardRunner(ModeRunner):
    """Inference: eval mode under inference_mode."""

    mode = Mode.FORWARD

    def step(self, module: Any = None) -> Callable[[], None]:
        module = module or self.setup.module
        xs, autocast = self.setup.inputs, self.setup.autocast
        module.eval()

        def forward() -> None:
            marks = self.marks
            marks.phase("forward")
            with torch.inference_mode(), autocast():
                module(*xs)
            marks.phase("end")

        return forward


class ForwardBackwardRunner(ModeRunner):
    """Train mode, a loss and its backward pass; the gradients of the last step are freed first."""

    mode = Mode.FORWARD_BACKWARD

    def step(self, module: Any = None) -> Callable[[], None]:
        module = module or self.setup.module
        raw, xs, target, autocast = self.setup.raw, self.setup.inputs, self.setup.target, self.setup.autocast
        module.train()

        def forward_backward() -> None:
            marks = self.marks
            marks.phase("forward")
            raw.zero_grad(set_to_none=True)
            with autocast():
                loss = training_loss(module(*xs), target)
            marks.phase("backward")
            loss.backward()
            marks.phase("end")

        return forward_backward


class TrainStepRunner(ModeRunner):
    """forward_backward plus the optimizer's step and zero_grad, as a training loop runs them."""

    mode = Mode.TRAIN_STEP

    def step(self, module: Any = None) -> Callable[[], None]:
        module = module or self.setup.module
        xs, target, autocast = self.setup.inputs, self.setup.target, self.setup.autocast
        if self.optimizer is None:
            self.optimizer = make_optimizer(self.setup.trainable(), Optimizer(self.config.optimizer), self.setup.foreach)
        optimizer = self.optimizer
        module.train()

        def train_step() -> None:
            marks = self.marks
            marks.phase("forward")
            with autocast():
                loss = training_loss(module(*xs), target)
            marks.phase("backward")
            loss.backward()
            marks.phase("optimizer")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            marks.phase("end")

        return train_step


RUNNERS: dict[Mode, type[ModeRunner]] = {r.mode: r for r in (ForwardRunner, ForwardBackwardRunner, TrainStepRunner)}
