"""What one training step is made of: the loss it takes and the optimizer it steps."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from ..core.enums import Optimizer
from ..core.errors import ForwardError


def training_loss(output: Any, target: torch.Tensor | None = None) -> torch.Tensor:
    """A scalar over every tensor output, as training takes (inception's auxiliary logits train too):
    cross-entropy on 2-D logits when targets are given, the mean otherwise."""
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, torch.Tensor):
        outputs = [output]
    else:
        outputs = [o for o in output if isinstance(o, torch.Tensor)] if isinstance(output, (list, tuple)) else []
    if not outputs:
        raise ForwardError(f"the model returned {type(output).__name__}, with no tensor to take a loss of")
    loss: torch.Tensor | None = None
    for out in outputs:
        out = out.float()
        if target is not None and out.dim() == 2 and out.shape[0] == target.shape[0]:
            term = F.cross_entropy(out, target % out.shape[1])
        else:
            term = out.mean()
        loss = term if loss is None else loss + term
    assert loss is not None
    return loss


def make_optimizer(params: Iterable[torch.nn.Parameter], kind: Optimizer,
                   foreach: bool | None = None) -> torch.optim.Optimizer:
    """The optimizer `--optimizer` names, with customary learning rates (they change no timing). `foreach`
    chooses the implementation (None: torch's default for the device: multi-tensor on CUDA)."""
    params = list(params)
    if kind is Optimizer.ADAM:
        return torch.optim.Adam(params, lr=1e-4, foreach=foreach)
    if kind is Optimizer.ADAMW:
        return torch.optim.AdamW(params, lr=1e-4, foreach=foreach)
    return torch.optim.SGD(params, lr=1e-3, momentum=0.9 if kind is Optimizer.MOMENTUM else 0.0, foreach=foreach)
