"""What a loaded file's weights are, and whether they fit a model, key by key.

Formats: a plain state_dict, a training checkpoint (`{'epoch',
'model_state_dict', 'optimizer_state_dict', 'loss'}` and the common variants)
and a whole pickled model all hold one state_dict; `state_dict_of` finds it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

import torch
from torch import nn

from ..core.errors import WeightsError
from ..core.formatting import brief, first_few, shape

SHOWN = 3  # mismatched keys shown by name; the rest are counted
STATE_KEYS = ("model_state_dict", "state_dict", "model", "net", "weights")


def is_state_dict(obj: Any) -> TypeGuard[Mapping[str, torch.Tensor]]:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) for k in obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def state_dict_of(obj: Any) -> tuple[dict[str, "torch.Tensor"], str]:
    """The model weights in a loaded object, and the format they came in."""
    if isinstance(obj, nn.Module):
        return obj.state_dict(), "pickled_model"
    if is_state_dict(obj):
        return dict(obj), "state_dict"
    if isinstance(obj, Mapping):
        for key in STATE_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return inner.state_dict(), "training_checkpoint"
            if is_state_dict(inner):
                return dict(inner), "training_checkpoint"
    raise WeightsError("the file holds no state_dict: expected a mapping of names to tensors, or a checkpoint with "
                       f"one of {', '.join(STATE_KEYS)}")


@dataclass
class TensorStats:
    tensors: int
    params: int  # elements
    bytes: int
    dtypes: dict[str, int]
    meta: int = 0  # tensors with shapes but no values (saved from the meta device)


def tensor_numel(t: "torch.Tensor") -> int:
    """A tensor's element count from torch itself, not from a method a trusted pickle's subclass overrides."""
    try:
        n = torch.Tensor.numel(t)
    except Exception:  # noqa: BLE001 - a subclass whose dispatch fails
        n = None
    if isinstance(n, bool) or not isinstance(n, int):
        raise WeightsError(f"the file holds a {type(t).__name__} whose element count is {brief(n, 40)}, not a "
                           "tensor's")
    return n


def tensor_bytes(t: "torch.Tensor") -> int:
    """A tensor's bytes: its element count times its dtype's size (not a method a subclass overrides)."""
    return tensor_numel(t) * t.dtype.itemsize if isinstance(t.dtype, torch.dtype) else 0


def tensor_stats(state: Mapping[str, Any]) -> TensorStats:
    tensors = [v for v in state.values() if isinstance(v, torch.Tensor)]
    return TensorStats(
        tensors=len(tensors),
        params=sum(tensor_numel(t) for t in tensors),
        bytes=sum(tensor_bytes(t) for t in tensors),
        dtypes=dict(Counter(str(t.dtype).replace("torch.", "") for t in tensors).most_common()),
        meta=sum(1 for t in tensors if t.is_meta),
    )


@dataclass
class Compatibility:
    """Whether a state_dict fits a model, key by key."""

    model: str
    compatible: bool
    matched: int
    missing: list[str]  # in the model, not in the file
    unexpected: list[str]  # in the file, not in the model
    mismatched: list[tuple[str, list[int], list[int]]]  # key, file shape, model shape
    stripped_prefix: str | None = None

    def describe(self, left: str = "file", right: str = "model") -> str:
        parts = []
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                parts.append(f"{len(items)} {label} ({first_few(items)})")
        if self.mismatched:
            shown = ", ".join(f"{k}: {left} {shape(a, 'scalar')}, {right} {shape(b, 'scalar')}"
                              for k, a, b in self.mismatched[:SHOWN])
            more = f" and {len(self.mismatched) - SHOWN} more" if len(self.mismatched) > SHOWN else ""
            parts.append(f"{len(self.mismatched)} shape-mismatched ({shown}{more})")
        return "; ".join(parts) or "every key matches"


def _strip_prefix(state: Mapping[str, Any], expected: set[str]) -> tuple[dict[str, Any], str | None]:
    """Keys saved from DataParallel or torch.compile carry a prefix; drop it when that makes them fit."""
    for prefix in ("module.", "_orig_mod.", "model."):
        if state and all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in expected):
            return {k[len(prefix):]: v for k, v in state.items()}, prefix
    return dict(state), None


def check_compatible(model: "nn.Module", state: Mapping[str, Any], name: str) -> tuple[Compatibility, dict[str, Any]]:
    """Compare a state_dict with a model's, key by key and shape by shape."""
    own = model.state_dict()
    state, prefix = _strip_prefix(state, set(own))
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [(k, list(state[k].shape), list(own[k].shape)) for k in own
                  if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    matched = len(own) - len(missing) - len(mismatched)
    ok = not (missing or unexpected or mismatched)
    return Compatibility(name, ok, matched, missing, unexpected, mismatched, prefix), state
