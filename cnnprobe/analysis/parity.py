"""Where our MACs and torchvision's published `_ops` part, and why: the one place that says so.

torchvision's figures come from one real forward pass per model (the script of PR pytorch/vision#6936)
on one random image with the pretrained weights loaded. Where a model selects by value after part of its
work (a detection model's score thresholds, NMS), that one image decided how many candidates the later
heads ran on. cnnprobe counts on meta, where every selection keeps every candidate up to the model's own
caps (`trace/datadependent`): the most work the model can do on any image. For most detection models the
two agree, because nothing after a selection multiplies (RetinaNet, FCOS, SSD) or because the pretrained
weights kept the caps full on that image (Faster R-CNN, Mask R-CNN v2). Where they do not, the entry
below names the operators that differ and the builder options (the model's own caps) under which our
count gives the published figure exactly: `tests/test_task_flops.py` checks each, and
`reports/torchvision-parity.md` prints them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ParityException:
    """A model whose count at the caps differs from torchvision's figure, and why."""

    reason: str
    operators: tuple[str, ...]  # the operators whose MACs differ
    reproduce: dict[str, Any] = field(default_factory=dict)  # builder options giving the published figure

    def describe(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in self.reproduce.items())
        return (f"{self.reason} Operators that differ: {', '.join(self.operators)}. Reproduced exactly with "
                f"{options}.")


_NO_PROPOSALS = ("torchvision's figure is of one real image on which no RPN proposal survived (these models set "
                 "rpn_score_thresh=0.05), so the box head's two linear layers and predictor ran on none; at the "
                 "model's caps they run on every proposal it keeps (rpn_post_nms_top_n_test: {}).")

EXCEPTIONS: dict[str, ParityException] = {
    "fasterrcnn_mobilenet_v3_large_fpn": ParityException(
        _NO_PROPOSALS.format(1000), ("addmm",), {"rpn_post_nms_top_n_test": 0}),
    "fasterrcnn_mobilenet_v3_large_320_fpn": ParityException(
        _NO_PROPOSALS.format(150), ("addmm",), {"rpn_post_nms_top_n_test": 0}),
    "maskrcnn_resnet50_fpn": ParityException(
        "torchvision's figure is of one real image on which no detection passed box_score_thresh=0.05, so the "
        "mask head ran on none; at the model's caps it runs on box_detections_per_img=100 detections.",
        ("convolution",), {"box_detections_per_img": 0}),
    "keypointrcnn_resnet50_fpn": ParityException(
        "torchvision's figure is of one real image on which one detection passed box_score_thresh=0.05, so the "
        "keypoint head ran once; at the model's caps it runs on box_detections_per_img=100 detections.",
        ("convolution",), {"box_detections_per_img": 1}),
}


def exception(name: str) -> ParityException | None:
    """Why `name`'s count at its default input is not torchvision's figure; None where it is."""
    return EXCEPTIONS.get(name)
