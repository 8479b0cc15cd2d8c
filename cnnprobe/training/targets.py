"""Synthetic training targets for each task: what a training step's loss is taken against.

Drawn from a fixed seed, on the device of the inputs (fake tensors too: nothing here reads a value), and
valid for the model they are drawn for: class ids below the model's own class count (read from its head,
so that a new head counts), boxes inside their image, masks and keypoints where the model predicts them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.enums import Task
from ..models.build import Built

BOXES_PER_IMAGE = 3
MAX_FLOW = 8.0  # pixels: synthetic flow well inside the sequence loss's max_flow (400)
FALLBACK_CLASSES = 1000


def _attr(module: Any, path: str) -> Any:
    for name in path.split("."):
        module = getattr(module, name, None)
        if module is None:
            return None
    return module


def _last(module: nn.Module | None, kind: type[nn.Module]) -> nn.Module | None:
    found = None
    for m in module.modules() if module is not None else ():
        if isinstance(m, kind):
            found = m
    return found


def class_count(built: Built) -> int:
    """How many classes the model predicts, read from the module where its task says where (a new head
    included), else what the registry or the build says."""
    module, task = built.module, built.spec.task
    if task is Task.DETECTION:
        linear = _attr(module, "roi_heads.box_predictor.cls_score")
        if isinstance(linear, nn.Linear):
            return int(linear.out_features)
        head = _attr(module, "head.classification_head")
        for key in ("num_classes", "num_columns"):
            if isinstance(getattr(head, key, None), int):
                return int(getattr(head, key))
    if task is Task.SEGMENTATION:
        conv = _last(_attr(module, "classifier"), nn.Conv2d)
        if isinstance(conv, nn.Conv2d):
            return int(conv.out_channels)
    if built.head is not None:
        return built.head.num_classes
    return built.num_classes or built.spec.num_classes or FALLBACK_CLASSES


def keypoint_count(module: nn.Module) -> int | None:
    """Keypoints per instance of a Keypoint R-CNN (its predictor's output channels); None for other models."""
    conv = _attr(module, "roi_heads.keypoint_predictor.kps_score_lowres")
    return int(conv.out_channels) if isinstance(conv, nn.ConvTranspose2d | nn.Conv2d) else None


def predicts_masks(module: nn.Module) -> bool:
    return _attr(module, "roi_heads.mask_predictor") is not None


def make_targets(built: Built, inputs: tuple[torch.Tensor, ...], *, seed: int = 0) -> Any:
    """The targets of one batch of `inputs` for `built`'s task, from `seed`, on the inputs' device: class ids
    (N) for a classifier or a video model, per-pixel class ids (N×H×W) for segmentation, a list of one dict per
    image (boxes, labels, and masks or keypoints where the model needs them) for detection, a ground-truth
    flow (N×2×H×W) for optical flow."""
    x = inputs[0]
    device, batch = x.device, x.shape[0]
    generator = torch.Generator(device="cpu").manual_seed(seed)
    task = built.spec.task
    if task is Task.DETECTION:
        return [_image_targets(built, x.shape[-2], x.shape[-1], generator, device) for _ in range(batch)]
    if task is Task.SEGMENTATION:
        return _randint(class_count(built), (batch, *x.shape[-2:]), generator, device)
    if task is Task.OPTICAL_FLOW:
        flow = (torch.rand((batch, 2, *x.shape[-2:]), generator=generator) * 2 - 1) * MAX_FLOW
        return flow.to(device)
    return _randint(class_count(built), (batch,), generator, device)


def _randint(high: int, size: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randint(0, high, size, generator=generator).to(device)


def _image_targets(built: Built, height: int, width: int, generator: torch.Generator,
                   device: torch.device) -> dict[str, torch.Tensor]:
    """One image's boxes (x1, y1, x2, y2 inside the image, each at least a tenth of it), labels (1 up to the
    class count: 0 is background), and the masks (the box filled) or keypoints (inside the box, visible) the
    model is trained on."""
    n = BOXES_PER_IMAGE
    size = torch.tensor([width, height, width, height], dtype=torch.float32)
    corner = torch.rand((n, 2), generator=generator) * 0.5
    extent = 0.1 + torch.rand((n, 2), generator=generator) * 0.4
    boxes = torch.cat([corner, corner + extent], dim=1) * size
    classes = class_count(built)
    labels = torch.randint(1, max(classes, 2), (n,), generator=generator)
    target = {"boxes": boxes, "labels": labels}
    if predicts_masks(built.module):
        ys = torch.arange(height, dtype=torch.float32)[None, :, None]
        xs = torch.arange(width, dtype=torch.float32)[None, None, :]
        b = boxes[:, :, None, None]
        target["masks"] = ((xs >= b[:, 0]) & (xs < b[:, 2]) & (ys >= b[:, 1]) & (ys < b[:, 3])).to(torch.uint8)
    keypoints = keypoint_count(built.module)
    if keypoints is not None:
        where = torch.rand((n, keypoints, 2), generator=generator)
        xy = boxes[:, None, :2] + where * (boxes[:, None, 2:] - boxes[:, None, :2])
        target["keypoints"] = torch.cat([xy, torch.full((n, keypoints, 1), 2.0)], dim=2)
    return {k: v.to(device) for k, v in target.items()}


def tensors(targets: Any) -> list[torch.Tensor]:
    """Every tensor in a batch's targets (a tensor, or detection's list of dicts): what a step holds."""
    if isinstance(targets, torch.Tensor):
        return [targets]
    if isinstance(targets, list | tuple):
        return [t for item in targets for t in tensors(item)]
    if isinstance(targets, dict):
        return [t for v in targets.values() for t in tensors(v)]
    return []
