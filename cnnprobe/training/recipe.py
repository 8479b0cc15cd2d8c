"""What one training step is made of: the loss it takes and the optimizer it steps."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from ..core.enums import Optimizer, Task
from ..core.errors import ForwardError

IGNORE_INDEX = 255  # torchvision's segmentation references: the pixels no class is given
AUX_WEIGHT = 0.5  # their weight of the auxiliary classifier's loss
FLOW_GAMMA = 0.8  # RAFT's sequence loss: each earlier prediction weighs gamma times the next
MAX_FLOW = 400.0  # pixels: larger ground truth is left out of the sequence loss


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


def task_loss(task: Task, output: Any, target: Any) -> torch.Tensor:
    """The loss `task` trains with, as torchvision's reference scripts take it: the sum of the loss dict a
    detection model returns given its targets; cross-entropy on `out` plus 0.5 × on `aux` for segmentation;
    RAFT's sequence loss over its flow predictions; cross-entropy for a classifier or a video model."""
    if task is Task.DETECTION:
        if not isinstance(output, dict) or not output:
            raise ForwardError(f"a detection model in training returns its losses; got {type(output).__name__}")
        values = [v for v in output.values() if isinstance(v, torch.Tensor)]
        return sum(values[1:], values[0])
    if task is Task.SEGMENTATION and isinstance(output, dict) and "out" in output:
        return segmentation_loss(output, target)
    if task is Task.OPTICAL_FLOW and isinstance(output, list | tuple):
        return sequence_loss(list(output), target)
    return training_loss(output, target)


def segmentation_loss(output: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """torchvision's references/segmentation criterion: per-pixel cross-entropy (255 ignored) on `out`, plus
    half of it on `aux` where the model has an auxiliary classifier."""
    loss = F.cross_entropy(output["out"].float(), target, ignore_index=IGNORE_INDEX)
    if "aux" in output:
        loss = loss + AUX_WEIGHT * F.cross_entropy(output["aux"].float(), target, ignore_index=IGNORE_INDEX)
    return loss


def sequence_loss(predictions: list[torch.Tensor], flow: torch.Tensor, gamma: float = FLOW_GAMMA,
                  max_flow: float = MAX_FLOW) -> torch.Tensor:
    """torchvision's references/optical_flow sequence loss: the L1 distance of each of RAFT's predictions to
    the ground truth, averaged over valid pixels' components, the last weighing 1, each earlier gamma times
    the next. Every pixel is valid that moves less than `max_flow`."""
    valid = (flow.float().pow(2).sum(dim=1).sqrt() < max_flow)[:, None]
    stacked = torch.stack([p.float() for p in predictions])
    distance = ((stacked - flow).abs() * valid).mean(dim=(1, 2, 3, 4))
    n = len(predictions)
    weights = gamma ** torch.arange(n - 1, -1, -1, dtype=distance.dtype, device=distance.device)
    return (distance * weights).sum()


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
