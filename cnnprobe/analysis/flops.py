"""`flops`: multiply-accumulates and FLOPs, labelled, by module and by operator.

Conventions, stated everywhere a number is shown:

- a MAC is one multiply-accumulate; FLOPs = 2 × MACs;
- torchvision's tables (`_ops`, their "GFLOPS"), fvcore and most counters
  report MACs under the name FLOPs;
- counted: convolutions, matrix products and attention, with the formulas of
  `torch.utils.flop_counter`. Normalisation, activations, pooling and
  elementwise arithmetic are listed as not counted, as torchvision's figures
  leave them out too;
- counted apart (`separate_by_operator`, and a note): RoIAlign, interpolation
  and `grid_sampler`, which multiply-accumulate but which torchvision's `_ops`
  leaves out, so that `macs` stays comparable with it;
- on meta, data-dependent selections (a detection model's thresholds, NMS)
  keep every candidate up to the model's caps (`trace/datadependent`).

The default engine counts on the meta device: no weights, no arithmetic, the
same for a LeNet and a 1-TFLOP ViT-H. `counter="fvcore"` runs fvcore instead,
which traces real tensors with torch.jit.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Unpack

import torch

from ..core.enums import Counter, Source
from ..core.errors import CnnprobeError, ForwardError, InputSizeError, PatternError, UsageError
from ..core.formatting import shape
from ..models.build import Built, check_batch, check_depth, rebuild
from ..models.freezing import FreezePlan
from ..models.inputs import InputSpec
from ..models.meta import is_meta_error, paused_gc
from ..models.quantized import is_quantized
from ..models.request import ModelRequest, RequestOptions, requested
from ..trace.failures import explain_failure
from ..trace.tracer import Tracer
from ..training.devices import is_oom
from ..training.recipe import task_loss
from ..training.targets import make_targets
from . import parity
from .probe import check_real_run_fits, no_mha_fastpath, probe, root_cause
from .summary import FLOPS_CONVENTION

if TYPE_CHECKING:
    from torch import nn

PARITY_TOLERANCE = 0.01  # relative, against torchvision's published `_ops`
PUBLISHED_ROUNDING = 0.0005  # GMACs: `_ops` is published to three decimals


@dataclass
class ModuleFlops:
    name: str
    type: str
    depth: int
    macs: int


@dataclass
class OperatorFlops:
    op: str
    macs: int
    share: float  # of the total


@dataclass
class FlopReport:
    """What `cnnprobe flops` reports. `macs` and `flops` are for one forward pass of the whole batch."""

    model: str
    source: str
    counter: str
    input_size: list[int]  # the first input's, batch first
    macs: int
    by_module: list[ModuleFlops]
    by_operator: list[OperatorFlops]
    uncounted_ops: dict[str, int]
    depth: int
    backward_macs: int | None = None
    train_forward_macs: int | None = None  # the forward pass in train mode, which the backward belongs to
    backward_by_operator: list[OperatorFlops] = field(default_factory=list)
    trainable_params: int | None = None
    published_gmacs: float | None = None
    device: str = "meta"
    notes: list[str] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)  # every input: shape without batch, dtype
    task: str = "classification"  # core.enums.Task
    # operators with a formula whose MACs are not in `macs`, as torchvision's `_ops` leaves them out
    # (roi_align, interpolation, grid_sampler); their shares are of their own sum
    separate_by_operator: list[OperatorFlops] = field(default_factory=list)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def backward_flops(self) -> int | None:
        return None if self.backward_macs is None else 2 * self.backward_macs

    @property
    def published_difference(self) -> float | None:
        """Our MACs against torchvision's published `_ops`, as a share; None where nothing is published."""
        if not self.published_gmacs:
            return None
        return (self.macs / 1e9 - self.published_gmacs) / self.published_gmacs

    @property
    def backward_ratio(self) -> float | None:
        """Backward MACs over the train-mode forward's: between 1 and 2 with everything trainable (each
        layer's weight gradient costs its forward, its input gradient the same again, except the first's)."""
        if self.backward_macs is None or not self.train_forward_macs:
            return None
        return self.backward_macs / self.train_forward_macs

    @property
    def training_flops(self) -> int | None:
        """FLOPs of one training step's forward and backward passes."""
        if self.backward_macs is None or self.train_forward_macs is None:
            return None
        return 2 * (self.train_forward_macs + self.backward_macs)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(flops=self.flops, backward_flops=self.backward_flops, convention=FLOPS_CONVENTION,
                    gmacs=self.macs / 1e9, backward_ratio=self.backward_ratio, training_flops=self.training_flops)
        if self.backward_macs is None:
            for key in ("backward_macs", "backward_flops", "backward_by_operator", "train_forward_macs",
                        "backward_ratio", "training_flops"):
                data.pop(key)
        return data


def _operators(flops_by_op: dict[str, int]) -> list[OperatorFlops]:
    total = sum(flops_by_op.values()) or 1
    ordered = sorted(flops_by_op.items(), key=lambda kv: -kv[1])
    return [OperatorFlops(op, f // 2, f / total) for op, f in ordered]


# the total, the rows by module, the operators, what was not counted, the build, the operators counted apart
# from the total (torchvision's `_ops` leaves them out) and the pass's notes
_Forward = tuple[int, list["ModuleFlops"], list["OperatorFlops"], dict[str, int], Built, list["OperatorFlops"],
                 list[str]]


def _torch_forward(built: Built, batch: int, depth: int) -> _Forward:
    p = probe(built, batch)
    t = p.tracer
    rows = [ModuleFlops(c.name, c.type, c.depth, c.flops // 2) for c in t.calls if 0 < c.depth <= depth and c.done]
    return (t.total_flops // 2, rows, _operators(dict(t.flops_by_op)), dict(t.uncounted.most_common()), p.built,
            _operators(dict(t.separate_flops_by_op)), t.notes())


def _torch_backward(built: Built, batch: int) -> tuple[int, int, list[OperatorFlops]]:
    """Count the operators the backward pass really runs, in train mode, honouring requires_grad.

    Returns the train-mode forward's MACs too: the pass this backward belongs to, which is larger than
    the eval-mode count where a model computes more while training (Inception's auxiliary head)."""
    module = built.module
    was_training = module.training
    module.train()
    xs = built.example_inputs(batch, random=True)
    targets = make_targets(built, xs)
    tracer = Tracer(module, fast_meta=False)
    try:
        with tracer, torch.enable_grad():
            loss = task_loss(built.spec.task, module(*built.arguments(xs, targets)), targets)
            tracer.backward = True
            if loss.requires_grad:
                loss.backward()
    except CnnprobeError:
        raise
    except SystemExit as e:
        raise ForwardError(f"{built.name} called sys.exit({e.code}) in its forward pass") from None
    except Exception as e:  # noqa: BLE001 - the model failed in train mode: name the layer
        if built.device == "meta" and is_meta_error(root_cause(e)) and built.spec.source is not Source.MODULE:
            return _torch_backward(_real_copy(built, batch), batch)  # it reads tensor values (detection's sampling)
        raise explain_failure(tracer, e, model=built.name, input_shape=list(xs[0].shape)) from None
    finally:
        module.train(was_training)
    return tracer.total_flops // 2, tracer.backward_flops // 2, _operators(dict(tracer.backward_flops_by_op))


def _real_copy(built: Built, batch: int) -> Built:
    """`built` again on the CPU, for a training step that reads tensor values, trainable as `built` is."""
    rebuilt = rebuild(built, "cpu")
    trainable = {n: p.requires_grad for n, p in built.module.named_parameters()}
    for name, p in rebuilt.module.named_parameters():
        p.requires_grad_(trainable.get(name, p.requires_grad))
    if batch > 1:
        check_real_run_fits(rebuilt, batch)
    return rebuilt


def _quiet_fvcore() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis
    return FlopCountAnalysis


def _fvcore_forward(built: Built, batch: int, depth: int) -> _Forward:
    """fvcore on real tensors: it traces with torch.jit, which meta tensors cannot feed."""
    if built.device == "meta":
        built = rebuild(built, "cpu")
    analysis_cls = _quiet_fvcore()
    module = built.module.eval()
    try:
        try:
            xs = built.example_inputs(batch)
        except InputSizeError as e:
            raise UsageError(f"--counter fvcore runs {built.name} on the CPU: {e}; or use --counter torch (on meta: "
                             "nothing is allocated)") from None
        with warnings.catch_warnings(), torch.no_grad(), no_mha_fastpath():
            warnings.simplefilter("ignore")
            analysis = analysis_cls(module, xs).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            total = int(analysis.total())
            by_module = analysis.by_module()
            by_op = analysis.by_operator()
            unsupported = dict(analysis.unsupported_ops())
    except RuntimeError as e:
        if not is_oom(e):
            raise
        sizes = ", ".join(shape((batch, *s.shape)) for s in built.inputs)
        raise UsageError(f"--counter fvcore runs {built.name} on the CPU, which cannot hold it at input {sizes}: "
                         "use --counter torch (on meta: nothing is allocated), or a smaller --input-size or --batch") \
            from None
    types = {n: type(m).__name__ for n, m in module.named_modules()}
    rows = [ModuleFlops(n, types.get(n, "?"), n.count(".") + 1, int(v)) for n, v in by_module.items()
            if n and n.count(".") + 1 <= depth]
    ops = _operators({k: 2 * int(v) for k, v in by_op.items()})  # fvcore counts one per MAC
    return total, rows, ops, unsupported, built, [], []


def flops(
    model: "str | nn.Module | ModelRequest",
    *,
    plan: FreezePlan | None = None,
    inputs: tuple[InputSpec, ...] | None = None,
    depth: int = 2,
    backward: bool = False,
    counter: Counter | str = Counter.TORCH,
    **options: Unpack[RequestOptions],
) -> FlopReport:
    """MACs (and FLOPs = 2 × MACs) of one forward pass, by module and operator; optionally the backward pass.

    The backward pass is counted from the operators autograd really runs, so
    freezing (`freeze_except="layer4,fc"`, or a FreezePlan) removes weight gradients of frozen
    layers and input gradients before the first trainable one. The keywords are a ModelRequest's and a
    FreezePlan's; `inputs` states the inputs outright (another build's).
    """
    counter = Counter(counter)
    request, plan = requested(model, plan, **options)
    batch = check_batch(request.batch)
    check_depth(depth)
    if not plan.empty and not backward:
        raise PatternError("freezing changes only the backward pass: add --backward")
    with paused_gc():
        built = request.build(inputs=inputs)
        if counter is Counter.FVCORE and is_quantized(built.module):
            raise UsageError(f"--counter fvcore cannot trace {built.name}'s int8 operators (their weights are packed "
                             "C++ objects): use --counter torch")
        if backward and is_quantized(built.module):
            raise UsageError(f"{built.name} is quantized, and forward-only: its int8 weights take no gradients, so "
                             "there is no backward pass to count; drop --backward")
        plan.apply(built.module)  # a pattern that matches nothing fails here, before any counting
        engine = _fvcore_forward if counter is Counter.FVCORE else _torch_forward
        macs, rows, ops, uncounted, built, separate, pass_notes = engine(built, batch, depth)
        plan.apply(built.module)  # the engine may have rebuilt the model (fvcore, or the CPU fallback)
        train_macs, backward_macs, backward_ops = _torch_backward(built, batch) if backward else (None, None, [])
    notes = [*built.notes, *pass_notes]
    why = parity.exception(built.name) if built.spec.source is Source.TORCHVISION else None
    if why is not None:
        notes.append(f"torchvision's `_ops` at the default input differs: {why.describe()}")
    if counter is Counter.FVCORE:
        notes.append("fvcore counts one per multiply-accumulate, adds normalisation, pooling and upsampling "
                     "(one per element), and skips operators it has no handle for, listed as not counted")
    return FlopReport(
        model=built.name,
        source=built.spec.source.value,
        task=built.spec.task.value,
        counter=counter.value,
        input_size=[batch, *built.input_shape],
        inputs=[s.to_dict() for s in built.inputs],
        macs=macs,
        by_module=rows,
        by_operator=ops,
        uncounted_ops=uncounted,
        depth=depth,
        backward_macs=backward_macs,
        train_forward_macs=train_macs,
        backward_by_operator=backward_ops,
        trainable_params=sum(p.numel() for p in built.module.parameters() if p.requires_grad),
        published_gmacs=built.spec.published_gmacs,
        device=built.device,
        notes=notes,
        separate_by_operator=separate,
    )


def within_published(gmacs: float, published: float) -> bool:
    """torchvision's `_ops` agreement: 1%, or the rounding of its three decimals for the tiniest models."""
    return abs(gmacs - published) <= max(PARITY_TOLERANCE * published, PUBLISHED_ROUNDING)


def step_flops(built: Built, batch: int, plan: FreezePlan, *, training: bool) -> dict[str, int | None]:
    """FLOPs of one step of each kind, as bench times them, from one build: the eval forward (traced once),
    and the train-mode forward with its backward, all trainable and, with a plan, frozen. The build's
    module is frozen here: give a copy."""
    with paused_gc():
        counted = _torch_forward(built, batch, 0)
        macs, built = counted[0], counted[4]
        if not training:
            return {"forward": 2 * macs}
        out: dict[str, int | None] = {"forward": 2 * macs, "train": _train_flops(built, batch), "train_frozen": None}
        if not plan.empty:
            plan.apply(built.module)
            out["train_frozen"] = _train_flops(built, batch)
    return out


def _train_flops(built: Built, batch: int) -> int:
    for p in built.module.parameters():
        p.grad = None  # a pass before left gradients: this backward starts as a training step's does
    train, backward, _ = _torch_backward(built, batch)
    return 2 * (train + backward)
