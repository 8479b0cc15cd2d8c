"""The heads `--num-classes` replaces on a detection, segmentation or video model, as torchvision's
fine-tuning recipes replace them.

A classifier has one final layer; these models have a head per task: Faster R-CNN's box predictor
(and Mask R-CNN's mask predictor beside it), RetinaNet's, FCOS's and SSD's classification heads, a
segmentation model's classifier and auxiliary classifier, a video model's final layer. Each recipe is
keyed by the model's type (the first of its classes, in method order, that has one), builds the new heads
with torchvision's own classes at the widths the old ones read, and leaves everything else as it was:
the box regression heads, Keypoint R-CNN's keypoint predictor, the anchors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn
from torchvision.models import optical_flow, segmentation, video
from torchvision.models.detection import FCOS, FasterRCNN, KeypointRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.fcos import FCOSClassificationHead
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.retinanet import RetinaNetClassificationHead
from torchvision.models.detection.ssd import SSD, SSDClassificationHead
from torchvision.models.detection.ssdlite import SSDLiteClassificationHead

from ..core.errors import HeadError
from .head import describe as describe_layer
from .head import mark_new


@dataclass
class TaskHeads:
    """The new heads of one model: module path -> new module, and what a report says about them."""

    heads: dict[str, nn.Module]
    notes: list[str] = field(default_factory=list)


Recipe = Callable[[Any, int], TaskHeads]  # a model's own attributes, as torchvision's recipes read them


def _box(model: Any, k: int) -> dict[str, nn.Module]:
    old = model.roi_heads.box_predictor
    return {"roi_heads.box_predictor": FastRCNNPredictor(old.cls_score.in_features, k)}


def _faster_rcnn(model: Any, k: int) -> TaskHeads:
    return TaskHeads(_box(model, k))


def _mask_rcnn(model: Any, k: int) -> TaskHeads:
    old = model.roi_heads.mask_predictor
    mask = MaskRCNNPredictor(old.conv5_mask.in_channels, old.conv5_mask.out_channels, k)
    return TaskHeads({**_box(model, k), "roi_heads.mask_predictor": mask})


def _keypoint_rcnn(model: Any, k: int) -> TaskHeads:
    keypoints = model.roi_heads.keypoint_predictor.kps_score_lowres.out_channels
    return TaskHeads(_box(model, k), [
        f"--num-classes sets the box classes; the keypoint predictor keeps its {keypoints} keypoints (a keypoint "
        "count is torchvision's num_keypoints, not a class count)"])


def _group_norm(conv: Any) -> Callable[..., nn.Module] | None:
    """The norm layer a head's conv tower was built with: RetinaNet v2's and FCOS's GroupNorm, or none."""
    norm = next((m for m in conv.modules() if isinstance(m, nn.GroupNorm)), None)
    return None if norm is None else partial(nn.GroupNorm, norm.num_groups)


def _retinanet(model: Any, k: int) -> TaskHeads:
    old = model.head.classification_head
    new = RetinaNetClassificationHead(old.cls_logits.in_channels, old.num_anchors, k, norm_layer=_group_norm(old.conv))
    return TaskHeads({"head.classification_head": new})


def _fcos(model: Any, k: int) -> TaskHeads:
    old = model.head.classification_head
    convs = sum(1 for m in old.conv if isinstance(m, nn.Conv2d))
    new = FCOSClassificationHead(old.cls_logits.in_channels, old.num_anchors, k, num_convs=convs,
                                 norm_layer=_group_norm(old.conv))
    return TaskHeads({"head.classification_head": new})


def _ssd(model: Any, k: int) -> TaskHeads:
    old = model.head.classification_head
    anchors = list(model.anchor_generator.num_anchors_per_location())
    if isinstance(old, SSDLiteClassificationHead):  # a depthwise block, then a 1×1 projection, per feature map
        depthwise = [block[0] for block in old.module_list]
        bn = next(m for m in depthwise[0].modules() if isinstance(m, nn.BatchNorm2d))
        norm = partial(nn.BatchNorm2d, eps=bn.eps, momentum=bn.momentum)
        new: nn.Module = SSDLiteClassificationHead([b[0].in_channels for b in depthwise], anchors, k, norm)
    else:
        new = SSDClassificationHead([conv.in_channels for conv in old.module_list], anchors, k)
    return TaskHeads({"head.classification_head": new})


def _conv_like(old: Any, k: int) -> nn.Module:
    """A final 1×1 convolution (or linear layer) of the old one's kind and input, `k` wide."""
    if isinstance(old, nn.Linear):
        return nn.Linear(old.in_features, k)
    if isinstance(old, (nn.Conv2d, nn.Conv3d)):
        conv: Any = old  # a Conv2d's or a Conv3d's own sizes
        return type(old)(conv.in_channels, k, kernel_size=conv.kernel_size, stride=conv.stride,
                         bias=conv.bias is not None)
    raise HeadError(f"cannot replace a {type(old).__name__} with a {k}-class layer")


def _segmentation(model: Any, k: int) -> TaskHeads:
    heads = {"classifier.4": _conv_like(model.classifier[4], k)}
    if getattr(model, "aux_classifier", None) is not None:
        heads["aux_classifier.4"] = _conv_like(model.aux_classifier[4], k)
    return TaskHeads(heads)


def _lraspp(model: Any, k: int) -> TaskHeads:
    head = model.classifier
    return TaskHeads({"classifier.low_classifier": _conv_like(head.low_classifier, k),
                      "classifier.high_classifier": _conv_like(head.high_classifier, k)})


def _final(path: str) -> Recipe:
    """A video model whose classifier is one final layer at `path`."""
    def recipe(model: Any, k: int) -> TaskHeads:
        return TaskHeads({path: _conv_like(model.get_submodule(path), k)})
    return recipe


def _raft(model: Any, k: int) -> TaskHeads:
    raise HeadError(f"{type(model).__name__} predicts optical flow and has no classifier: --num-classes and --head "
                    "do not apply to it")


# by type, most specific first where one derives from another (MaskRCNN and KeypointRCNN are FasterRCNNs)
RECIPES: dict[type, Recipe] = {
    MaskRCNN: _mask_rcnn, KeypointRCNN: _keypoint_rcnn, FasterRCNN: _faster_rcnn,
    RetinaNet: _retinanet, FCOS: _fcos, SSD: _ssd,
    segmentation.DeepLabV3: _segmentation, segmentation.FCN: _segmentation, segmentation.LRASPP: _lraspp,
    video.VideoResNet: _final("fc"), video.S3D: _final("classifier.1"), video.MViT: _final("head.1"),
    video.SwinTransformer3d: _final("head"), optical_flow.RAFT: _raft,
}

# where a --head of layers can go instead: a video model's final Linear, on a flat feature vector
LAYER_HEADS = (video.VideoResNet, video.MViT, video.SwinTransformer3d)


def recipe_for(model: nn.Module) -> Recipe | None:
    """The recipe of `model`'s type, or None for a classifier (whose final layer `head.replace_head` finds)."""
    return next((RECIPES[c] for c in type(model).__mro__ if c in RECIPES), None)


def replace_task_heads(model: nn.Module,
                       num_classes: int) -> tuple[list[tuple[str, nn.Module, nn.Module]], list[str]]:
    """Replace `model`'s task heads by `num_classes`-wide ones, on the old heads' device and marked new (so
    freezing leaves them trainable); returns (path, old, new) for each, and the recipe's notes."""
    recipe = recipe_for(model)
    if recipe is None:
        raise HeadError(f"{type(model).__name__} has no task head cnnprobe knows how to replace")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.device(device):
        made = recipe(model, num_classes)
    replaced = []
    for path, new in made.heads.items():
        old = model.get_submodule(path)
        parent, _, child = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, mark_new(new))
        replaced.append((path, old, new))
    return replaced, made.notes


def describe(module: nn.Module) -> str:
    """One line for a task head: its class and widths (`FastRCNNPredictor(1024→91 classes)`)."""
    if isinstance(module, FastRCNNPredictor):
        return f"FastRCNNPredictor({module.cls_score.in_features}→{module.cls_score.out_features} classes)"
    if isinstance(module, MaskRCNNPredictor):
        logits = module.mask_fcn_logits
        return f"MaskRCNNPredictor({module.conv5_mask.in_channels}→{logits.out_channels} classes)"
    if isinstance(module, (RetinaNetClassificationHead, FCOSClassificationHead)):
        return (f"{type(module).__name__}({module.cls_logits.in_channels}, {module.num_anchors} anchors → "
                f"{module.num_classes} classes)")
    if isinstance(module, (SSDClassificationHead, SSDLiteClassificationHead)):
        return f"{type(module).__name__}({len(module.module_list)} feature maps → {module.num_columns} classes)"
    if isinstance(module, nn.Conv3d):
        return f"Conv3d({module.in_channels}→{module.out_channels}, {'×'.join(str(s) for s in module.kernel_size)})"
    return describe_layer(module)
