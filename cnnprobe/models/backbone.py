"""`--trainable-backbone-layers`: a detection builder's own argument, checked before it reaches the builder.

torchvision's detection builders freeze all but the last N stages of the backbone (`trainable_backbone_layers`,
counted from the final block: 0-5 for a ResNet or VGG backbone, 0-6 for MobileNetV3), and only they take it.
cnnprobe passes N to the builder as it is, so the freezing is torchvision's own; this module says which
models take it and turns the builder's range check into one line.
"""

from __future__ import annotations

import re
from typing import Any

from ..core.enums import Source, Task
from ..core.errors import UsageError
from .registry import ModelSpec

OPTION = "--trainable-backbone-layers"
KEY = "trainable_backbone_layers"
TAKERS = "detection models (fasterrcnn_*, maskrcnn_*, keypointrcnn_*, retinanet_*, fcos_*, ssd*)"
_RANGE = re.compile(r"range \[0, ?(\d+)\]")


def check(spec: ModelSpec, options: dict[str, Any]) -> None:
    """Refuse `trainable_backbone_layers` for a model whose builder does not take it, or a value no builder
    could (not an integer)."""
    layers = options.get(KEY)
    if layers is None:
        return
    if isinstance(layers, bool) or not isinstance(layers, int):
        raise UsageError(f"{OPTION} must be an integer, got {layers!r}")
    if spec.task is not Task.DETECTION or spec.source is not Source.TORCHVISION:
        what = "a " + spec.task.value.replace("_", " ") if spec.source is Source.TORCHVISION else "not a torchvision"
        raise UsageError(f"{OPTION} is taken only by torchvision's {TAKERS}; {spec.name} is {what} model")


def range_error(spec: ModelSpec, options: dict[str, Any], error: BaseException) -> UsageError | None:
    """The one line for a builder that refused `trainable_backbone_layers` as out of its range, or None where
    `error` is something else."""
    layers = options.get(KEY)
    found = _RANGE.search(str(error))
    if layers is None or not isinstance(error, (ValueError, AssertionError)) or found is None:
        return None
    return UsageError(f"{OPTION} must be 0-{found.group(1)} for {spec.name} (the stages of its backbone, counted "
                      f"from the last), got {layers}")
