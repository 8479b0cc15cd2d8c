"""Freezing by module patterns, BatchNorm freezing, and per-group learning rates.

A pattern names a module path by whole components: `layer4` matches
`layer4.0.conv1.weight` but not `layer40.weight`. Components may use globs
(`layer[34]`, `features.1*`), and a `**` component matches any number of
components, so `**.bn1` finds every `bn1` at any depth.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..core.errors import PatternError
from .head import new_head_parameters

_COMPONENT_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_*?[]!-")


def split_patterns(text: str | Sequence[str] | None) -> list[str]:
    """`"layer4,fc"` or `["layer4", "fc"]` -> `["layer4", "fc"]`; validates each pattern."""
    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else [p for t in text for p in t.split(",")]
    patterns = [p.strip() for p in items if p.strip()]
    for p in patterns:
        parts = p.split(".")
        if any(not part or not set(part) <= _COMPONENT_CHARS for part in parts):
            raise PatternError(f"malformed pattern '{p}': use dotted module paths like layer4 or features.1*")
    if isinstance(text, str) and not patterns:
        raise PatternError("empty pattern list")
    return patterns


def _match(pattern: list[str], path: list[str]) -> bool:
    """Whether `pattern` matches a prefix of `path`, component by component."""
    if not pattern:
        return True
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(rest, path[i:]) for i in range(len(path) + 1))
    return bool(path) and fnmatch.fnmatchcase(path[0], head) and _match(rest, path[1:])


def matches(pattern: str, name: str) -> bool:
    """Whether a parameter or module `name` lies under `pattern`."""
    return _match(pattern.split("."), name.split("."))


def select(model: "nn.Module", patterns: Iterable[str], what: str = "pattern") -> dict[str, list[str]]:
    """Parameter names under each pattern; a pattern that matches nothing is an error."""
    names = [n for n, _ in model.named_parameters()]
    found: dict[str, list[str]] = {}
    for p in patterns:
        hits = [n for n in names if matches(p, n)]
        if not hits:
            top = ", ".join(n for n, _ in model.named_children()) or "none"
            raise PatternError(
                f"{what} '{p}' matches no parameter of {type(model).__name__}; its top-level modules are {top}"
            )
        found[p] = hits
    return found


@dataclass(frozen=True)
class FreezePlan:
    """What to freeze: everything, everything except some modules, or only some modules; parsed once
    (`from_options`) and applied as often as a run needs (`apply`)."""

    freeze_all: bool = False
    freeze_except: tuple[str, ...] = ()
    freeze: tuple[str, ...] = ()
    # the patterns as the caller wrote them ("layer4,fc", a list, or None), for reports that echo them
    written: tuple[Any, Any] = field(default=(None, None), compare=False, repr=False)

    @classmethod
    def from_options(
        cls,
        freeze_all: bool = False,
        freeze_except: str | Sequence[str] | None = None,
        freeze: str | Sequence[str] | None = None,
    ) -> "FreezePlan":
        plan = cls(freeze_all, tuple(split_patterns(freeze_except)), tuple(split_patterns(freeze)),
                   (freeze_except, freeze))
        if plan.freeze_all and plan.freeze_except:
            raise PatternError("--freeze-all and --freeze-except contradict each other; use one")
        return plan

    def as_written(self) -> dict[str, Any]:
        """freeze_all, freeze_except and freeze as the caller gave them."""
        return {"freeze_all": self.freeze_all, "freeze_except": self.written[0], "freeze": self.written[1]}

    def as_parsed(self) -> dict[str, Any]:
        """freeze_all, and the pattern lists."""
        return {"freeze_all": self.freeze_all, "freeze_except": list(self.freeze_except), "freeze": list(self.freeze)}

    @property
    def empty(self) -> bool:
        return not (self.freeze_all or self.freeze_except or self.freeze)

    def apply(self, model: "nn.Module") -> int:
        """Set requires_grad accordingly; returns the number of parameter tensors frozen.

        Every command freezes through this one method, after the new head (if any) is in place, so that
        patterns are matched against the model as it trains. A new head (`--head`, `--num-classes`) stays
        trainable under --freeze-all and --freeze-except, as the fine-tuning recipes train it; only a
        --freeze pattern that names it freezes it.
        """
        keep = {n for hits in select(model, self.freeze_except, "--freeze-except pattern").values() for n in hits}
        keep |= new_head_parameters(model)
        drop = {n for hits in select(model, self.freeze, "--freeze pattern").values() for n in hits}
        frozen = 0
        for name, param in model.named_parameters():
            trainable = param.requires_grad
            if self.freeze_all or self.freeze_except:
                trainable = name in keep
            if name in drop:
                trainable = False
            if param.requires_grad and not trainable:
                frozen += 1
            param.requires_grad_(trainable)
        return frozen


def freeze(
    model: "nn.Module",
    *,
    freeze_all: bool = False,
    freeze_except: str | Sequence[str] | None = None,
    freeze: str | Sequence[str] | None = None,
) -> "nn.Module":
    """Freeze parameters in place, as the transfer-learning recipes do; returns the model."""
    FreezePlan.from_options(freeze_all, freeze_except, freeze).apply(model)
    return model


def batchnorm_layers(model: "nn.Module") -> list[tuple[str, "nn.Module"]]:
    """BatchNorm layers whose running statistics update in train mode."""
    return [
        (n, m) for n, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def freeze_batchnorm(model: "nn.Module") -> tuple[int, int]:
    """Put every BatchNorm layer in eval mode; returns (layers, buffers) touched.

    Freezing parameters does not stop a BatchNorm layer in train mode from
    updating running_mean and running_var. Note that `model.train()` switches
    them back: call this again after it.
    """
    layers = batchnorm_layers(model)
    buffers = 0
    for _, m in layers:
        m.eval()
        buffers += sum(1 for _ in m.buffers(recurse=False))
    return len(layers), buffers


def parse_lr(items: Sequence[str]) -> dict[str, float]:
    """`["layer4=1e-4", "fc=1e-3"]` -> {"layer4": 1e-4, "fc": 1e-3}."""
    groups: dict[str, float] = {}
    for item in items:
        modules, sep, value = item.partition("=")
        try:
            lr = float(value)
        except ValueError:
            lr = -1.0
        if not sep or not modules.strip() or not (0 < lr < float("inf")):
            raise PatternError(f"malformed --lr '{item}': expected MODULES=LR such as layer4=1e-4 or "
                               "layer3,layer4=1e-4")
        split_patterns(modules)
        if modules.strip() in groups:
            raise PatternError(f"--lr names '{modules.strip()}' twice ({groups[modules.strip()]:g} and {lr:g}); "
                               "give each group once")
        groups[modules.strip()] = lr
    return groups


@dataclass
class ParamGroup:
    """One optimizer parameter group of the "different learning rates" recipe."""

    modules: str
    lr: float
    tensors: int
    params: int
    frozen_params: int  # in the group but not trainable: they will never be updated


def param_groups(model: "nn.Module",
                 lrs: dict[str, float]) -> tuple[list[dict[str, object]], list[ParamGroup], list[str]]:
    """Optimizer groups for `lrs` (modules -> lr), their summary, and trainable parameters in no group.

    The first returned value can be passed straight to `torch.optim.SGD` or
    `Adam`. A parameter claimed by two groups is an error, as torch's
    optimizers make it.
    """
    params = dict(model.named_parameters())
    owner: dict[str, str] = {}
    groups: list[dict[str, object]] = []
    summary: list[ParamGroup] = []
    for modules, lr in lrs.items():
        names: list[str] = []
        for hits in select(model, split_patterns(modules), "--lr pattern").values():
            names += [n for n in hits if n not in names]
        for n in names:
            if n in owner:
                raise PatternError(f"parameter '{n}' is in two --lr groups, '{owner[n]}' and '{modules}'")
            owner[n] = modules
        groups.append({"params": [params[n] for n in names], "lr": lr})
        summary.append(ParamGroup(
            modules=modules,
            lr=lr,
            tensors=len(names),
            params=sum(params[n].numel() for n in names if params[n].requires_grad),
            frozen_params=sum(params[n].numel() for n in names if not params[n].requires_grad),
        ))
    orphans = [n for n, p in params.items() if p.requires_grad and n not in owner]
    return groups, summary, orphans
