"""Replacing a model's final classifier layer, as transfer learning does.

A head is written on the command line as a comma-separated list of layers,
for example the tutorial's `dropout(0.3),linear(256),relu,dropout(0.3),linear(10)`.
Linear layers take their input width from the layer before, so only output
widths need writing; `linear(512,256)` states both and is checked.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn

from ..core.errors import HeadError

_ACTIVATIONS = {"relu": "ReLU", "gelu": "GELU", "silu": "SiLU", "tanh": "Tanh", "sigmoid": "Sigmoid",
                "hardswish": "Hardswish", "identity": "Identity", "flatten": "Flatten"}
_ALIASES = {"bn": "batchnorm", "batchnorm1d": "batchnorm", "fc": "linear", "drop": "dropout"}
MAX_WIDTH = 1 << 24  # as --num-classes: a wider layer is a typo, and one past int64 overflows torch's sizes
_ITEM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$")


@dataclass(frozen=True)
class HeadLayer:
    """One layer of a head: its kind and its numeric arguments."""

    kind: str  # "linear", "dropout", "batchnorm" or an activation name
    args: tuple[float, ...] = ()


@dataclass(frozen=True)
class HeadSpec:
    """A parsed head; the last linear layer sets the number of classes."""

    layers: tuple[HeadLayer, ...] = field(default_factory=tuple)

    @classmethod
    def linear(cls, num_classes: int) -> "HeadSpec":
        return cls((HeadLayer("linear", (float(num_classes),)),))

    @property
    def num_classes(self) -> int:
        return int(self.layers[-1].args[-1])


def _split_top_level(text: str) -> list[str]:
    items: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "," and depth == 0:
            items.append("".join(current))
            current = []
            continue
        depth += {"(": 1, ")": -1}.get(ch, 0)
        current.append(ch)
    items.append("".join(current))
    return items


def parse_head(text: str) -> HeadSpec:
    """Parse `dropout(0.3),linear(256),relu,linear(10)` into a HeadSpec."""
    layers: list[HeadLayer] = []
    usage = "write layers like dropout(0.3),linear(256),relu,linear(10)"
    for item in _split_top_level(text):
        match = _ITEM.match(item)
        if not match:
            raise HeadError(f"cannot parse head layer '{item.strip()}' in --head '{text}': {usage}")
        kind = match.group(1).lower()
        kind = _ALIASES.get(kind, kind)
        try:
            args = tuple(float(a) for a in (match.group(2) or "").split(",") if a.strip())
        except ValueError:
            raise HeadError(f"head layer '{item.strip()}' takes numbers only: {usage}") from None
        if not all(math.isfinite(a) for a in args):
            raise HeadError(f"head layer '{item.strip()}' takes finite numbers only: {usage}")
        if kind == "linear" and (len(args) not in (1, 2) or any(a <= 0 or a != int(a) for a in args)):
            raise HeadError(f"'{item.strip()}' needs a positive output width: linear(OUT) or linear(IN,OUT)")
        if kind == "linear" and any(a > MAX_WIDTH for a in args):
            raise HeadError(f"'{item.strip()}' in --head: a width above {MAX_WIDTH:,} is too wide for any layer")
        if kind == "dropout" and (len(args) > 1 or any(not 0 <= a < 1 for a in args)):
            raise HeadError(f"'{item.strip()}' needs a probability in [0, 1): dropout(0.3)")
        if kind not in ("linear", "dropout", "batchnorm") and kind not in _ACTIVATIONS:
            known = ", ".join(["linear", "dropout", "batchnorm", *_ACTIVATIONS])
            raise HeadError(f"unknown head layer '{match.group(1)}'; known: {known}")
        if kind in _ACTIVATIONS and args:
            raise HeadError(f"'{item.strip()}' takes no arguments")
        layers.append(HeadLayer(kind, args))
    if not layers or layers[-1].kind != "linear":
        raise HeadError(f"--head '{text}' must end with a linear layer, which sets the number of classes")
    return HeadSpec(tuple(layers))


def find_head(model: "nn.Module", num_classes: int | None = None) -> tuple[str, "nn.Module"]:
    """The final classifier layer: the last Linear (a 1×1 Conv2d for SqueezeNet-style heads)."""
    def pick(kind: type[nn.Module], width: str) -> tuple[str, nn.Module] | None:
        found: list[tuple[str, nn.Module]] = [(n, m) for n, m in model.named_modules() if isinstance(m, kind) and n]
        if num_classes is not None:
            found = [(n, m) for n, m in found if getattr(m, width) == num_classes] or found
        return found[-1] if found else None

    head = pick(nn.Linear, "out_features") or pick(nn.Conv2d, "out_channels")
    if head is None:
        raise HeadError(f"{type(model).__name__} has no final Linear or Conv2d layer to replace")
    return head


def _make(spec: HeadSpec, in_width: int, conv: bool) -> "nn.Module":
    if conv:
        if len(spec.layers) != 1:
            raise HeadError("this model's classifier is a 1×1 convolution; only --num-classes can replace it")
        return nn.Conv2d(in_width, spec.num_classes, kernel_size=1)
    layers: list[nn.Module] = []
    width = in_width
    for layer in spec.layers:
        if layer.kind == "linear":
            out = int(layer.args[-1])
            if len(layer.args) == 2 and int(layer.args[0]) != width:
                raise HeadError(f"linear({int(layer.args[0])},{out}) follows a layer of width {width}")
            layers.append(nn.Linear(width, out))
            width = out
        elif layer.kind == "dropout":
            layers.append(nn.Dropout(layer.args[0] if layer.args else 0.5))
        elif layer.kind == "batchnorm":
            layers.append(nn.BatchNorm1d(width))
        else:
            layers.append(getattr(nn, _ACTIVATIONS[layer.kind])())
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


NEW_HEAD = "_cnnprobe_new_head"  # marks a head cnnprobe made: freezing leaves it trainable (see freezing.py)


def mark_new(head: "nn.Module") -> "nn.Module":
    """Mark `head` as the model's new classifier; the mark travels with deep copies and `.to()`."""
    setattr(head, NEW_HEAD, True)
    return head


def new_head_parameters(model: "nn.Module") -> set[str]:
    """Names of the parameters that belong to a head cnnprobe made (`--head`, `--num-classes`)."""
    return {f"{name}.{p}" if name else p for name, m in model.named_modules() if getattr(m, NEW_HEAD, False)
            for p, _ in m.named_parameters()}


def replace_head(model: "nn.Module", spec: HeadSpec,
                 num_classes: int | None = None) -> tuple[str, "nn.Module", "nn.Module"]:
    """Swap the final classifier for `spec`, on the old head's device, marked new; returns (name, old, new)."""
    name, old = find_head(model, num_classes)
    conv = isinstance(old, nn.Conv2d)
    # find_head returns a Linear or a Conv2d; nn.Module's __getattr__ alone would type the width as a Tensor
    in_width = old.in_channels if isinstance(old, nn.Conv2d) else cast(nn.Linear, old).in_features
    device = next(old.parameters()).device
    with torch.device(device):
        new = mark_new(_make(spec, int(in_width), conv))
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return name, old, new


def describe(module: "nn.Module") -> str:
    """A one-line description such as `Linear(512→10)` or `Sequential(Dropout(0.3), Linear(512→256), ...)`."""
    if isinstance(module, nn.Sequential):
        return "Sequential(" + ", ".join(describe(m) for m in module) + ")"
    if isinstance(module, nn.Linear):
        return f"Linear({module.in_features}→{module.out_features})"
    if isinstance(module, nn.Conv2d):
        return f"Conv2d({module.in_channels}→{module.out_channels}, {module.kernel_size[0]}×{module.kernel_size[1]})"
    if isinstance(module, nn.Dropout):
        return f"Dropout({module.p:g})"
    if isinstance(module, nn.BatchNorm1d):
        return f"BatchNorm1d({module.num_features})"
    return type(module).__name__
