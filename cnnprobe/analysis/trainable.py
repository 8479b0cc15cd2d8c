"""`trainable`: parameters before and after freezing, as the transfer-learning recipes do."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Unpack

from ..core.enums import Optimizer
from ..core.errors import HeadError
from ..core.formatting import first_few
from ..models.build import head_of, new_head
from ..models.freezing import FreezePlan, ParamGroup, batchnorm_layers, freeze_batchnorm, param_groups, parse_lr
from ..models.quantized import QuantizedParams, packed_by_module
from ..models.request import ModelRequest, RequestOptions, requested
from ..models.taskheads import describe

if TYPE_CHECKING:
    from torch import nn

ROOT = "(root)"  # parameters that belong to the model itself, not to a child module


@dataclass
class Snapshot:
    """Parameter counts and the training memory they imply."""

    total_params: int
    trainable_params: int
    grad_bytes: int  # one gradient per trainable parameter
    optimizer_state_bytes: int  # the optimizer's per-parameter state

    @property
    def trainable_share(self) -> float:
        return self.trainable_params / self.total_params if self.total_params else 0.0


@dataclass
class BlockRow:
    """One top-level block of the model."""

    name: str
    params_before: int
    params_after: int
    trainable_before: int
    trainable_after: int


@dataclass
class HeadChange:
    """The final classifier layer that was replaced."""

    name: str
    old: str
    new: str
    params_old: int
    params_new: int


@dataclass
class BatchNormReport:
    """BatchNorm layers, and whether their running statistics keep updating."""

    layers: int
    buffers: int
    frozen: bool  # put in eval mode by --freeze-bn
    layers_with_frozen_params: int


@dataclass
class TrainableReport:
    """What `cnnprobe trainable` reports."""

    model: str
    source: str
    optimizer: str
    plan: dict[str, Any]
    before: Snapshot
    after: Snapshot
    blocks: list[BlockRow]
    head: HeadChange | None
    batchnorm: BatchNormReport
    groups: list[ParamGroup] = field(default_factory=list)
    ungrouped: list[str] = field(default_factory=list)  # trainable parameters in no --lr group
    warnings: list[str] = field(default_factory=list)
    weights: str | None = None  # what was loaded, when --weights was given
    inputs: list[dict[str, Any]] = field(default_factory=list)  # what lazy layers were sized with, if any
    notes: list[str] = field(default_factory=list)
    task: str = "classification"  # core.enums.Task
    packed_params: int | None = None  # a quantized model's packed int8 values, which its block rows show

    @property
    def total_params(self) -> int:
        return self.after.total_params

    @property
    def saved_bytes(self) -> int:
        """Gradient and optimizer memory that freezing saves."""
        b, a = self.before, self.after
        return (b.grad_bytes + b.optimizer_state_bytes) - (a.grad_bytes + a.optimizer_state_bytes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["total_params"] = self.total_params
        data["saved_bytes"] = self.saved_bytes
        for key in ("before", "after"):
            data[key]["trainable_share"] = getattr(self, key).trainable_share
        return data


def _snapshot(model: "nn.Module", optimizer: Optimizer, quantized: QuantizedParams | None = None) -> Snapshot:
    """Counts now; a quantized model's total is its float twin's (models.quantized), none of it trainable."""
    params = list(model.parameters())
    grads = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    return Snapshot(
        total_params=quantized.total if quantized is not None else sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        grad_bytes=grads,
        optimizer_state_bytes=grads * optimizer.state_per_param,
    )


def _blocks(model: "nn.Module", packed: dict[int, int]) -> dict[str, tuple[int, int]]:
    """(params, trainable) per top-level child, and for the model's own parameters; a quantized model's
    children count their packed int8 values, which no gradient reaches."""
    out: dict[str, tuple[int, int]] = {}
    own = list(model.parameters(recurse=False))
    if own:
        out[ROOT] = (sum(p.numel() for p in own), sum(p.numel() for p in own if p.requires_grad))
    for name, child in model.named_children():
        ps = list(child.parameters())
        trainable = sum(p.numel() for p in ps if p.requires_grad)
        out[name] = (sum(p.numel() for p in ps) + packed.get(id(child), 0), trainable)
    return out


def trainable(
    model: "str | nn.Module | ModelRequest",
    *,
    plan: FreezePlan | None = None,
    lr: Sequence[str] | dict[str, float] | None = None,
    freeze_bn: bool = False,
    optimizer: Optimizer | str = Optimizer.ADAM,
    **options: Unpack[RequestOptions],
) -> TrainableReport:
    """Total and trainable parameters before and after freezing (and a new head).

    The model is built on meta: counting needs no weights. `head` is a layer
    list such as `dropout(0.3),linear(256),relu,dropout(0.3),linear(10)`;
    `lr` maps module patterns to learning rates (`["layer4=1e-4", "fc=1e-3"]`).
    The other keywords are a ModelRequest's and a FreezePlan's.
    """
    optimizer = Optimizer(optimizer)
    request, plan = requested(model, plan, **options)
    if request.num_classes is not None and request.num_classes <= 0:
        raise HeadError(f"--num-classes must be positive, got {request.num_classes}")
    head_spec = head_of(request.head, request.num_classes)
    lrs = lr if isinstance(lr, dict) else parse_lr(lr or [])

    built = request.build(head=False)  # the head is replaced below, to report what it replaced
    module = built.module
    quantized = built.quantized_params()
    packed = packed_by_module(module) if quantized is not None else {}
    # "before" is the model as shipped: a detection model's builder already freezes its first stages
    shipped = module if request.trainable_backbone_layers is None else \
        replace(request, trainable_backbone_layers=None).build(head=False).module
    before = _snapshot(shipped, optimizer, quantized)
    blocks_before = _blocks(shipped, packed)

    change = None
    if head_spec is not None:  # the head first, then the plan: as every command does (build.new_head)
        change = _change(new_head(built, head_spec))
    plan.apply(module)
    after = _snapshot(module, optimizer, quantized)
    blocks_after = _blocks(module, packed)
    rows = [
        BlockRow(n, blocks_before.get(n, (0, 0))[0], blocks_after.get(n, (0, 0))[0],
                 blocks_before.get(n, (0, 0))[1], blocks_after.get(n, (0, 0))[1])
        for n in dict.fromkeys([*blocks_before, *blocks_after])
    ]
    layers, buffers, frozen_bn, warnings = _batchnorm(module, freeze_bn)
    groups, summary, orphans = param_groups(module, lrs) if lrs else ([], [], [])
    warnings += _group_warnings(module, summary, orphans if lrs else [])

    return TrainableReport(
        model=built.name,
        source=built.spec.source.value,
        task=built.spec.task.value,
        optimizer=optimizer.value,
        plan={**plan.as_parsed(), "freeze_bn": freeze_bn},
        before=before,
        after=after,
        blocks=rows,
        head=change,
        batchnorm=BatchNormReport(layers, buffers, freeze_bn, frozen_bn),
        groups=summary,
        ungrouped=orphans if lrs else [],
        warnings=warnings,
        weights=built.weights.describe() if built.weights else None,
        inputs=[s.to_dict() for s in built.inputs],
        notes=[n for n in [built.materialized, *built.head_notes, _backbone_note(request),
                           quantized and quantized.note("block rows")] if n],
        packed_params=quantized.packed if quantized is not None else None,
    )


def _backbone_note(request: ModelRequest) -> str | None:
    layers = request.trainable_backbone_layers
    if layers is None:
        return None
    return (f"--trainable-backbone-layers {layers}: torchvision's builder trains the last {layers} backbone stages and "
            "freezes the rest; before is the model as shipped")


def _change(replaced: list[tuple[str, "nn.Module", "nn.Module"]]) -> HeadChange:
    """One report of the heads replaced (a task model may have two: Mask R-CNN's box and mask predictors)."""
    def params(module: "nn.Module") -> int:
        return sum(p.numel() for p in module.parameters())

    return HeadChange(", ".join(n for n, _, _ in replaced), ", ".join(describe(old) for _, old, _ in replaced),
                      ", ".join(describe(new) for _, _, new in replaced),
                      sum(params(old) for _, old, _ in replaced), sum(params(new) for _, _, new in replaced))


def _batchnorm(module: "nn.Module", freeze_bn: bool) -> tuple[int, int, int, list[str]]:
    """(layers, buffers, layers with frozen parameters, warnings): with `freeze_bn`, put in eval mode."""
    warnings: list[str] = []
    bn = batchnorm_layers(module)
    frozen_bn = sum(1 for _, m in bn if any(not p.requires_grad for p in m.parameters(recurse=False)))
    unfrozen = (len(bn), sum(len(list(m.buffers(recurse=False))) for _, m in bn))
    layers, buffers = freeze_batchnorm(module) if freeze_bn else unfrozen
    if frozen_bn and not freeze_bn:
        warnings.append(
            f"{frozen_bn} BatchNorm layers have frozen parameters but still update their running statistics "
            "in train mode; pass --freeze-bn to keep them fixed"
        )
    return layers, buffers, frozen_bn, warnings


def _group_warnings(module: "nn.Module", summary: list[ParamGroup], orphans: list[str]) -> list[str]:
    """What an --lr grouping leaves out: frozen parameters in a group, trainable ones in none."""
    warnings = []
    for g in summary:
        if g.frozen_params:
            warnings.append(f"--lr group '{g.modules}' holds {g.frozen_params:,} frozen parameters; they will not be "
                            "updated")
    if orphans:
        count = sum(p.numel() for n, p in module.named_parameters() if n in set(orphans))
        shown = first_few(orphans)
        warnings.append(f"{count:,} trainable parameters ({len(orphans)} tensors) belong to no --lr group: {shown}")
    return warnings
