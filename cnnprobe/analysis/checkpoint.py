"""`cnnprobe checkpoint`: what a weights or checkpoint file holds, read safely.

It tells a plain state_dict, a training checkpoint, a whole pickled model and
torchvision's published weights (a state_dict whose file name and hash match a
torchvision weights URL) apart, and with `model` checks that the weights fit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

import torch

from ..core.errors import WeightsError
from ..core.formatting import brief
from ..models.loading import torchvision_weights_of
from ..models.request import ModelOptions, ModelRequest
from ..weights.safeload import safe_load
from ..weights.statedict import (
    Compatibility,
    TensorStats,
    check_compatible,
    state_dict_of,
    tensor_bytes,
    tensor_numel,
    tensor_stats,
)

if TYPE_CHECKING:
    from torch import nn

TRAINING_KEYS = ("epoch", "optimizer_state_dict", "optimizer", "loss", "step", "global_step")


@dataclass
class OptimizerInfo:
    type: str  # inferred from the hyper-parameters its groups carry
    param_groups: int
    params: int  # parameters with state
    state_tensors: int
    state_bytes: int
    lr: list[float]


def optimizer_type(groups: Sequence[Mapping[str, Any]]) -> str:
    keys = set().union(*(g.keys() for g in groups)) if groups else set()
    if "betas" in keys:
        decoupled = any(g.get("decoupled_weight_decay") for g in groups)
        return "AdamW" if decoupled else ("Adam or AdamW" if "decoupled_weight_decay" not in keys else "Adam")
    if "nesterov" in keys or "dampening" in keys:
        return "SGD"
    if "alpha" in keys and "centered" in keys:
        return "RMSprop"
    if "lr_decay" in keys:
        return "Adagrad"
    return "unknown"


def optimizer_info(state: Any, path: str = "the file") -> OptimizerInfo | None:
    """The optimizer state a training checkpoint holds, or one clear error naming what is malformed in it."""
    if not isinstance(state, Mapping) or "param_groups" not in state:
        return None
    where = f"the optimizer state in '{path}'"
    groups = state.get("param_groups")
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, Mapping) for g in groups):
        raise WeightsError(f"{where} is malformed: param_groups is {brief(groups, 40)}, not a list of groups")
    for i, g in enumerate(groups):
        lr = g.get("lr", 0.0)
        if isinstance(lr, torch.Tensor) and tensor_numel(lr) == 1:
            lr = lr.item()
        if isinstance(lr, bool) or not isinstance(lr, (int, float)):
            shown = brief(repr(lr) if isinstance(lr, str) else lr, 40)
            raise WeightsError(f"{where} is malformed: param group {i} has lr {shown}, not a number")
    per_param = state.get("state") or {}
    if not isinstance(per_param, Mapping):
        raise WeightsError(f"{where} is malformed: state is {brief(per_param, 40)}, not a mapping")
    tensors = [v for s in per_param.values() if isinstance(s, Mapping)
               for v in s.values() if isinstance(v, torch.Tensor)]
    return OptimizerInfo(
        type=optimizer_type(groups),
        param_groups=len(groups),
        params=len(per_param),
        state_tensors=len(tensors),
        state_bytes=sum(tensor_bytes(t) for t in tensors),
        lr=[float(g["lr"].item() if isinstance(g["lr"], torch.Tensor) else g["lr"]) for g in groups if "lr" in g],
    )


@dataclass
class CheckpointInfo:
    """What `cnnprobe checkpoint` reports."""

    path: str
    format: str  # state_dict, training_checkpoint, pickled_model or torchvision_weights
    file_bytes: int
    weights: TensorStats
    saved_on: dict[str, int]  # storage location tag -> storages: where the tensors were saved from
    keys: list[str] = field(default_factory=list)  # top-level keys of a checkpoint dict
    epoch: Any = None
    loss: Any = None
    optimizer: OptimizerInfo | None = None
    torchvision: str | None = None  # the weights' name
    hash_ok: bool | None = None
    pickled_class: str | None = None
    trusted: bool = False
    compatibility: Compatibility | None = None
    model_notes: list[str] = field(default_factory=list)  # how --model was built: which input sized lazy layers

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _plain(value: Any) -> Any:
    """A field of a checkpoint (loss, epoch) as JSON can hold it: a number, a shape, or a bounded repr."""
    if isinstance(value, torch.Tensor):
        try:
            return value.item() if tensor_numel(value) == 1 else list(value.shape)
        except Exception:  # noqa: BLE001 - a tensor subclass from a trusted pickle that misbehaves
            return brief(value)
    if isinstance(value, str):
        return brief(value, 200)
    return value if isinstance(value, (int, float, bool, type(None))) else brief(value)


def inspect_checkpoint(path: str | Path, *, model: "str | nn.Module | ModelRequest | None" = None,
                       **options: Unpack[ModelOptions]) -> CheckpointInfo:
    """Detect a file's format and describe what it holds; with `model` (a name, a module or a ModelRequest,
    whose keywords these are), check it fits that model. `trust` opens the file too."""
    request = ModelRequest.of(model, **options)
    p = Path(path).expanduser()
    loaded = safe_load(p, trust=request.trust, mmap=True)
    state, kind = state_dict_of(loaded.obj)
    info = CheckpointInfo(
        path=str(p), format=kind, file_bytes=p.stat().st_size, weights=tensor_stats(state),
        saved_on=dict(loaded.saved_on.most_common()), trusted=loaded.trusted,
    )
    obj = loaded.obj
    if kind == "pickled_model":
        info.pickled_class = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if kind == "training_checkpoint":
        info.keys = [k if isinstance(k, str) else brief(k) for k in obj]
        info.epoch = _plain(obj.get("epoch", obj.get("step", obj.get("global_step"))))
        info.loss = _plain(obj.get("loss"))
        info.optimizer = optimizer_info(obj.get("optimizer_state_dict", obj.get("optimizer")), str(p))
    if kind == "state_dict":
        found = torchvision_weights_of(p)
        if found is not None:
            info.format = "torchvision_weights"
            info.torchvision, info.hash_ok = found
    if request.model is not None:
        built = request.build(weights=False)  # the file's weights are what is checked
        info.compatibility = check_compatible(built.module, state, built.name)[0]
        info.model_notes = [n for n in [built.materialized] if n]
    return info
