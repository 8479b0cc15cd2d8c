"""`memory`: a training step's peak memory, predicted before it runs, freezing included.

The prediction runs the one definition of a step (`training.steps`) on fake tensors (torch's
FakeTensorMode): every operator's outputs with their shapes and dtypes, and no
memory behind them, so vit_h_14 at batch 256 is predicted in seconds on a
laptop. The same storage-by-storage count as bench's measurement
(`memory.count`) is taken over the second step, when gradients and optimizer
state are where a training loop leaves them. What freezing saves shows twice:
in gradients and optimizer state, and in the activations autograd no longer
saves (a frozen prefix saves nothing).

For CUDA the fake step stands in for the device: the optimizer runs its
multi-tensor (foreach) implementation, as torch chooses on CUDA, and every
storage is rounded up to the caching allocator's 512 bytes. Autocast follows
the CPU's op lists, and what no tensor shows (cuDNN and cuBLAS workspaces, the
CUDA context, the allocator's cached free blocks) is left out and said so.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import re
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Unpack

import torch
from torch import nn
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException, FakeTensorMode

from ..core.enums import Device, DType, Mode, Optimizer, Source
from ..core.errors import CnnprobeError, UsageError
from ..core.formatting import nbytes
from ..core.search import search_batch
from ..models.build import Built, check_batch, check_depth
from ..models.freezing import freeze_batchnorm
from ..models.meta import paused_gc
from ..models.quantized import quantized_name
from ..models.request import FreezePlan, ModelRequest, RequestOptions, requested
from ..trace.failures import explain_failure
from ..training.config import BenchConfig
from ..training.setup import BenchSetup
from ..training.steps import STEPS, plan, walk
from ..training.targets import make_targets
from .count import count_step
from .tracker import MemoryPeak, OpRecord
from .valued import Answering
from .workspace import TIME_LIMIT_S, calibrate, with_workspace

CUDA_ROUND = 512
CUDA_UNSEEN = ("cuDNN and cuBLAS workspaces, the CUDA context and the caching allocator's cached free blocks are "
               "not in the prediction")
MAX_BATCH_SEARCH = 1 << 20
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


@dataclass
class ModePrediction:
    """One mode's predicted steady-state peak, and what it is made of."""

    mode: str
    frozen: bool
    predicted_peak_bytes: int
    breakdown: dict[str, int]  # category -> bytes at the peak: parameters, buffers, gradients, optimizer_state,
    # inputs, activations (saved for backward, or live in a forward pass), temporaries
    saved_by_module: dict[str, int] = field(default_factory=dict)  # activations saved for backward, by maker
    tensor_peak_bytes: int | None = None  # the most tensor memory live at once, without operators' workspaces


@dataclass
class BudgetAnswer:
    """The largest batch whose predicted peak fits a budget."""

    budget_bytes: int
    mode: str  # the heaviest mode asked for
    batch: int  # 0: not even batch 1 fits
    peak_bytes: int  # predicted at `batch`
    next_peak_bytes: int  # predicted at `batch + 1`
    predictions: int  # how many batch sizes were predicted to find it


@dataclass
class MemoryReport:
    """What `cnnprobe memory` reports."""

    model: str
    source: str
    device: str  # what is predicted, not where it ran
    dtype: str
    optimizer: str
    batch: int
    input_size: list[int]
    inputs: list[dict[str, Any]]
    total_params: int
    trainable_params: int  # with the plan
    plan: dict[str, Any]
    results: list[ModePrediction] = field(default_factory=list)
    budget: BudgetAnswer | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def freezing(self) -> bool:
        return any(r.frozen for r in self.results)

    def result(self, mode: str, frozen: bool | None = None) -> ModePrediction | None:
        for r in self.results:
            if r.mode == mode and (frozen is None or r.frozen == frozen):
                return r
        return None

    def planned(self) -> list[ModePrediction]:
        """One result per mode: with the freezing plan where there is one."""
        out = {}
        for r in self.results:
            if r.mode not in out or r.frozen:
                out[r.mode] = r
        return list(out.values())

    @property
    def predicted_peak_bytes(self) -> dict[str, int]:
        return {r.mode: r.predicted_peak_bytes for r in self.planned()}

    def freezing_saves(self, mode: str) -> dict[str, int] | None:
        """Bytes the plan saves in one mode: in all, in gradients and optimizer state, in saved activations."""
        frozen, full = self.result(mode, True), self.result(mode, False)
        if frozen is None or full is None:
            return None
        state = ("gradients", "optimizer_state")
        return {
            "total": full.predicted_peak_bytes - frozen.predicted_peak_bytes,
            "gradients_and_optimizer_state": sum(full.breakdown[k] - frozen.breakdown[k] for k in state),
            "activations": full.breakdown["activations"] - frozen.breakdown["activations"],
            "saved_for_backward": sum(full.saved_by_module.values()) - sum(frozen.saved_by_module.values()),
        }

    def top_modules(self, depth: int, top: int) -> list[tuple[str, int, float]]:
        """The modules (down to `depth`) whose activations autograd saves most in the heaviest training mode:
        (name, bytes, share of all it saves)."""
        training = [r for r in self.planned() if r.mode != Mode.FORWARD.value]
        if not training:
            return []
        saved: dict[str, int] = {}
        for name, size in max(training, key=lambda r: r.predicted_peak_bytes).saved_by_module.items():
            key = ".".join(name.split(".")[:depth]) if name else "(the model's own forward)"
            saved[key] = saved.get(key, 0) + size
        total = sum(saved.values()) or 1
        return [(name, size, size / total) for name, size in sorted(saved.items(), key=lambda kv: -kv[1])[:top]]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["predicted_peak_bytes"] = self.predicted_peak_bytes
        data["breakdown"] = {r.mode: r.breakdown for r in self.planned()}
        data["freezing_saves"] = {m: s for m in (x.value for x in Mode.expand(Mode.ALL))
                                  if (s := self.freezing_saves(m)) is not None}
        return data


def parse_budget(text: str | int) -> int:
    """`24GiB`, `24 GB`, `512MiB`, `1.5e9` (bytes) -> bytes."""
    value: float
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
        unit = match.group(2).lower() if match else ""
        if not match or unit not in _UNITS and unit != "":
            raise UsageError(f"malformed --budget '{text}': write a size such as 24GiB, 80GB or 512MiB")
        value = float(match.group(1)) * _UNITS[unit or "b"]  # unit is checked to be one of _UNITS above
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"--budget must be a positive size, got '{text}'")
    return int(value)


def reads_values(error: Exception) -> str:
    """The operator that needed values and the model's line that ran it (`aten._local_scalar_dense, a value
    read in Python, at torchvision/models/detection/transform.py:176`)."""
    func = getattr(error, "func", None)
    name = str(func).removesuffix(".default") if func is not None else type(error).__name__
    what = {"aten._local_scalar_dense": "a value read in Python (.item(), int(), a comparison)",
            "aten.nonzero": "an output sized by the values"}.get(name, "an output sized by the values")
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if "/torch/" not in f.filename and "/cnnprobe/" not in f.filename]
    where = ""
    if frames:
        parts = frames[-1].filename.replace("\\", "/").split("/")
        where = f", at {'/'.join(parts[-4:])}:{frames[-1].lineno}"
    return f"{name}, {what}{where}"


def _empty_like(t: torch.Tensor, device: str) -> torch.Tensor:
    return torch.empty(t.shape, dtype=t.dtype, device=device)


def _to_fake(module: nn.Module, device: str) -> nn.Module:
    """Every parameter and buffer as a fake tensor on `device` (inside a FakeTensorMode)."""
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                m._parameters[name] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device=device),
                                                   requires_grad=p.requires_grad)
        for name, b in list(m._buffers.items()):
            if b is not None:
                m._buffers[name] = torch.empty(b.shape, dtype=b.dtype, device=device)
        for name, t in list(vars(m).items()):  # plain tensor attributes (SSD's default box sizes)
            if isinstance(t, torch.Tensor):
                setattr(m, name, _empty_like(t, device))
            elif isinstance(t, (list, tuple)) and t and all(isinstance(x, torch.Tensor) for x in t):
                setattr(m, name, type(t)(_empty_like(x, device) for x in t))
    return module


class Predictor:
    """Predicts one model's steady-state peaks under one configuration, at any batch size."""

    def __init__(self, model: "str | nn.Module", config: BenchConfig, *, freeze_bn: bool = False,
                 calibration_s: float = TIME_LIMIT_S, built: Built | None = None) -> None:
        """`built`: the model already built on meta from `config.request` (bench builds it once for all)."""
        self.config = config
        self.calibration_s = calibration_s
        self.freeze_bn = freeze_bn
        self.cuda = Device(config.device) is Device.CUDA
        self.answering = Answering()  # detection's nonzero, nms and .item() on fake tensors
        self.ops: dict[tuple[str, bool], list[OpRecord]] = {}  # with at(keep_ops=True): each step's operators
        if built is not None:
            self.built: Built = built
            return
        with paused_gc():
            if isinstance(model, nn.Module):  # predict on a meta copy: the caller's module stays as it is
                model = copy.deepcopy(model).to("meta")
            self.built = config.request.build(model, weights=False)  # shapes do not depend on the weights

    @property
    def registered(self) -> bool:
        """Whether the model is registered (torchvision's or cnnprobe's), whose value reads are known well enough
        to answer on fake tensors; a user's model that reads values is named instead, as the tracer does."""
        return self.built.spec.source in (Source.TORCHVISION, Source.CNNPROBE)

    def at(self, batch: int, modes: list[Mode] | None = None, *, compare_freezing: bool = True,
           workspaces: bool = True, keep_ops: bool = False) -> MemoryReport:
        """Every mode's peak at `batch`; `workspaces` (the CPU only) calibrates each operator's own allocations
        and adds them, else the tensors' peak alone. `keep_ops`: every operator each step ran, as
        `self.ops[(mode, frozen)]`, for the time model."""
        check_batch(batch)
        config, built = self.config, self.built
        report = MemoryReport(
            model=built.name, source=built.spec.source.value, device=Device(config.device).value,
            dtype=DType(config.dtype).value, optimizer=Optimizer(config.optimizer).value, batch=batch,
            input_size=[batch, *built.input_shape], inputs=[s.to_dict() for s in built.inputs],
            total_params=sum(p.numel() for p in built.module.parameters()), trainable_params=0,
            plan={**config.plan.as_written(), "freeze_bn": self.freeze_bn},
            notes=[n for n in [built.materialized] if n],
        )
        wanted = modes or config.modes
        run_config = config.replace(mode=wanted[0] if len(wanted) == 1 else Mode.ALL)
        module = copy.deepcopy(built.module)  # on meta, before the fake mode: it would refuse meta tensors
        counted: list[tuple[Mode, bool, MemoryPeak]] = []
        with paused_gc(), FakeTensorMode(allow_non_fake_inputs=False):
            module = _to_fake(module, "cpu")
            inputs = tuple(spec.make(batch, "cpu", random=True) for spec in built.inputs)
            target = make_targets(built, inputs)
            setup = BenchSetup.assembled(built, module, inputs, target, run_config, batch, device="cpu",
                                         foreach=True if self.cuda else None, round_to=CUDA_ROUND if self.cuda else 1)
            for step in walk(setup, plan(run_config, wanted, compare=compare_freezing)):
                if not step.comparison:
                    report.trainable_params = sum(p.numel() for p in setup.trainable())
                record = keep_ops or (workspaces and not self.cuda)
                counted.append((step.mode, step.frozen, self._count(setup, step.mode, step.frozen, record)))
        if keep_ops:
            self.ops = {(mode.value, frozen): c.ops for mode, frozen, c in counted}
        if (note := self.answering.note()) is not None:
            report.notes.append(note)
        if self.cuda:
            report.notes.append(CUDA_UNSEEN + "; autocast follows the CPU's op lists" * (config.dtype != "float32"))
        elif workspaces:
            calibration = calibrate((op for *_, c in counted for op in c.ops), batch, threads=config.threads,
                                    time_limit=self.calibration_s)
            counted = [(mode, frozen, with_workspace(c, calibration.workspace)) for mode, frozen, c in counted]
            report.notes.extend(calibration.notes())
        for mode, frozen, c in counted:
            breakdown = c.breakdown if "workspace" in c.breakdown else {**c.breakdown, "workspace": 0}  # CUDA: unseen
            report.results.append(ModePrediction(mode.value, frozen, c.peak_bytes, breakdown, c.saved_by_module,
                                                 tensor_peak_bytes=c.tensor_peak_bytes or c.peak_bytes))
        return report

    def _count(self, setup: BenchSetup, mode: Mode, frozen: bool, record_ops: bool) -> MemoryPeak:
        runner = STEPS[mode](setup, frozen)
        fn = runner.step()
        if self.freeze_bn:
            assert setup.raw is not None  # set by the setup that built the step
            freeze_batchnorm(setup.raw)  # after the step's train(): running statistics stay fixed
        fake_log = logging.getLogger("torch._subclasses.fake_tensor")  # logs each failure with a traceback
        level = fake_log.level
        fake_log.setLevel(logging.CRITICAL)
        try:
            with self.answering if self.registered else contextlib.nullcontext():
                if mode is not Mode.FORWARD:
                    fn()  # the first step makes the gradients and optimizer state the measured one starts with
                return count_step(runner, fn, by_module=True, record_ops=record_ops)
        except (DataDependentOutputException, DynamicOutputShapeException) as e:
            raise CnnprobeError(f"cannot predict {self.built.name} on fake tensors: its {mode.value} reads tensor "
                                f"values ({reads_values(e)}); measure it with `cnnprobe bench` instead") from None
        except CnnprobeError:
            raise
        except Exception as e:  # noqa: BLE001 - the model fails on this input: one line saying why
            raise explain_failure(None, e, model=self.built.name, input_shape=list(self.built.input_shape)) from None
        finally:
            fake_log.setLevel(level)

    def peak(self, batch: int, mode: Mode, *, workspaces: bool = True) -> int:
        """One mode's predicted peak; without `workspaces`, the tensors' alone (no calibration: fast)."""
        return self.at(batch, [mode], compare_freezing=False, workspaces=workspaces).results[0].predicted_peak_bytes

    def largest_batch(self, budget: int, mode: Mode | None = None, limit: int = MAX_BATCH_SEARCH) -> BudgetAnswer:
        """The largest batch whose predicted peak, operators' workspaces included, fits `budget`. The search
        runs on the tensors' peak (a line through two predictions, since memory grows by the same activations
        per sample, then predictions around it), less the workspace the last full prediction found; only the
        answer and its neighbour are calibrated."""
        mode = mode or self.config.modes[-1]
        tensors: dict[int, int] = {}
        full: dict[int, int] = {}

        def tensor_peak(b: int) -> int:
            if b not in tensors:
                tensors[b] = self.peak(b, mode, workspaces=False)
            return tensors[b]

        def peak(b: int) -> int:
            if b not in full:
                full[b] = self.peak(b, mode)
            return full[b]

        def search(target: int) -> int:
            if tensor_peak(1) > target:
                return 1
            guess, known = 1, 2
            for _ in range(3):  # secants through batch 1: small batches carry fixed temporaries a line misses
                slope = max((tensor_peak(known) - tensor_peak(1)) / (known - 1), 1.0)
                guess, known = max(1, min(limit, 1 + int((target - tensor_peak(1)) // slope))), guess
                if guess in tensors or guess == known:
                    break
                known = guess
            return max(1, search_batch(lambda b: tensor_peak(b) <= target, guess, limit, step=max(1, guess // 256)))

        if tensor_peak(1) > budget or peak(1) > budget:
            first = peak(1)
            return BudgetAnswer(budget, mode.value, 0, first, first, len(tensors) + len(full))
        best = search(budget)
        known = sorted(tensors)
        slope = max(1.0, (tensors[known[-1]] - tensors[known[0]]) / max(1, known[-1] - known[0]))  # bytes per sample
        for _ in range(4):  # the workspace at the answer, taken off the budget along the line
            over = peak(best) - budget
            if over <= 0:
                break
            best = max(1, best - max(1, math.ceil(over / slope)))
        while best > 1 and peak(best) > budget:
            best -= 1
        for _ in range(4):  # a smaller batch may need less workspace: a few steps up
            if best >= limit or peak(best + 1) > budget:
                break
            best += 1
        return BudgetAnswer(budget, mode.value, best, peak(best), peak(best + 1) if best < limit else peak(best),
                            len(tensors) + len(full))


def memory(model: "str | nn.Module | ModelRequest", *, plan: FreezePlan | None = None, mode: Mode | str = Mode.ALL,
           optimizer: Optimizer | str = Optimizer.SGD, dtype: DType | str = DType.FLOAT32,
           device: Device | str = Device.CPU, freeze_bn: bool = False, budget: str | int | None = None,
           depth: int = 2, **options: Unpack[RequestOptions]) -> MemoryReport:
    """Predict the steady-state peak memory of each mode, with and without freezing; with `budget`, the
    largest batch whose heaviest mode fits. Nothing is allocated for the model, on any device. The keywords
    are a ModelRequest's (its weights are not loaded: they change no shape) and a FreezePlan's."""
    check_depth(depth)
    request, plan = requested(model, plan, **options)
    if request.head is not None and not request.head.strip():
        raise UsageError("--head is empty: write layers like dropout(0.3),linear(256),relu,linear(10)")
    config = BenchConfig(device=device, dtype=dtype, mode=mode, optimizer=optimizer, request=request, plan=plan)
    limit = parse_budget(budget) if budget is not None else None
    if request.model is None:
        raise TypeError("memory() needs a model")
    if (quantized := quantized_name(request.model)) is not None:
        raise UsageError(f"cannot predict {quantized}'s memory: its int8 kernels run on packed weights, which fake "
                         f"tensors cannot hold; measure its forward pass with `cnnprobe bench {quantized}`")
    predictor = Predictor(request.model, config, freeze_bn=freeze_bn)
    report = predictor.at(request.batch)
    if limit is not None:
        answer = predictor.largest_batch(limit)
        if answer.batch == 0:
            raise CnnprobeError(f"--budget {nbytes(limit)} is too small: even batch 1 needs "
                                f"{nbytes(answer.peak_bytes)} "
                                f"in {answer.mode} ({predictor.built.name})")
        report.budget = answer
    return report
