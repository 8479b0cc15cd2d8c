"""What each task's model is fed and how it is called: the one place that knows a detection model takes a
list of images (and targets while training) where every other model takes its input tensors as arguments.

Every pass cnnprobe runs (the tracer's, torchinfo's, a timed step, a fake-tensor step) calls a model through
`arguments`, so that a detection model sees the same call everywhere.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.enums import Task
from ..core.errors import InputSizeError
from .inputs import InputSpec, given_sizes

# The inputs of each task's published figures (torchvision's `_ops`, computed by the script of PR
# pytorch/vision#6936 on one square image passed through the weights' own transforms): a detection model's
# transform resizes a square image to 800×800 (SSD: 300, SSDlite: 320); segmentation weights resize it to
# 520; video clips are 16 frames at the weights' crop; optical flow takes two 512×512 images, untouched
# by its transform (both RAFTs' `_ops` are reproduced to the last published digit there, not at the
# weights' 520×960 evaluation size, which counts twice as much).
DETECTION_SIDES = {"ssd300_vgg16": 300, "ssdlite320_mobilenet_v3_large": 320}
DETECTION_SIDE = 800
SEGMENTATION_SIDE = 520
VIDEO_FRAMES = 16
FLOW_SIZE = (512, 512)


def default_inputs(task: Task, name: str, crop: int) -> tuple[InputSpec, ...]:
    """The inputs a task's model is measured at by default, without the batch. `crop` is the side its
    weights were evaluated at, where they say."""
    if task is Task.DETECTION:
        side = DETECTION_SIDES.get(name, DETECTION_SIDE)
        return (InputSpec((3, side, side)),)
    if task is Task.SEGMENTATION:
        return (InputSpec((3, SEGMENTATION_SIDE, SEGMENTATION_SIDE)),)
    if task is Task.VIDEO:
        return (InputSpec((3, VIDEO_FRAMES, crop, crop)),)
    if task is Task.OPTICAL_FLOW:
        return (InputSpec((3, *FLOW_SIZE)), InputSpec((3, *FLOW_SIZE)))
    return (InputSpec((3, crop, crop)),)


def arguments(task: Task, xs: tuple[torch.Tensor, ...], targets: Any = None) -> tuple[Any, ...]:
    """The positional arguments of one call of a `task` model on the batch `xs`: a detection model takes the
    batch as a list of images, and while training the targets beside them; every other model takes its
    inputs as they are (the targets go to the loss, not to the model)."""
    if task is Task.DETECTION:
        images = list(xs[0].unbind(0))
        return (images,) if targets is None else (images, targets)
    return tuple(xs)


def task_sizes(task: Task, name: str, defaults: tuple[InputSpec, ...], input_size: Any) -> Any:
    """`--input-size` as a `task` model takes it, or one line saying why not. A video clip is C,T,H,W, and
    one side or H,W keep its frames; three sizes could mean C,H,W or T,H,W, so they are refused. A detection,
    segmentation or flow model takes C,H,W images (RAFT one size for both, or one each)."""
    sizes = given_sizes(input_size)
    if not sizes or task in (Task.CLASSIFICATION, Task.QUANTIZED):
        return input_size
    default = "×".join(str(d) for d in defaults[0].shape)
    for size in sizes:
        text = ",".join(str(d) for d in size)
        if task is Task.VIDEO and len(size) == 3:
            raise InputSizeError(f"--input-size {text} is ambiguous for {name}, a video model that takes clips of "
                                 f"C,T,H,W ({default} by default): give all four, such as 3,8,112,112, or H,W")
        if task is Task.VIDEO and len(size) > 4 or task is not Task.VIDEO and len(size) > 3:
            kind = "video clips of C,T,H,W" if task is Task.VIDEO else "images of C,H,W"
            raise InputSizeError(f"--input-size {text} has {len(size)} sizes, but {name} ({task.value}) takes {kind} "
                                 f"({default} by default)")
    if task is Task.VIDEO:
        return [(s[0], s[0]) if len(s) == 1 else s for s in sizes]  # one side: the frame's, not the clip's length
    if len(sizes) > len(defaults):
        raise InputSizeError(f"{len(sizes)} --input-size for {name}, which takes {len(defaults)} input"
                             f"{'s' if len(defaults) > 1 else ''}")
    return sizes
