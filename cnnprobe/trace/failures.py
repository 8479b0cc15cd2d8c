"""Turning an exception from a forward pass into a message that names the layer, what it got and
what it needed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..core.errors import ForwardError, InputTooSmallError
from ..core.formatting import shape

if TYPE_CHECKING:
    from .tracer import Tracer


def shapes_of(args: tuple[Any, ...]) -> list[list[int]]:
    """The shapes of the tensors among `args`."""
    found: list[list[int]] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            found.append(list(a.shape))
        elif isinstance(a, (list, tuple)):
            found.extend(shapes_of(tuple(a)))
    return found


_TOO_SMALL = (
    "output size is too small", "kernel size can't be greater", "smaller than kernel", "input image",
    "padding size should be less", "negative dimension", "is too small",
)


def _expectation(module: nn.Module) -> str | None:
    """What a layer needs from its input, in words."""
    if isinstance(module, nn.Linear):
        return f"last dimension {module.in_features} (in_features={module.in_features})"
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = "×".join(str(k) for k in module.kernel_size)
        return f"{module.in_channels} input channels and a padded input of at least {kernel}"
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        k = module.kernel_size
        kernel = "×".join(str(v) for v in k) if isinstance(k, tuple) else f"{k}×{k}"
        return f"a spatial size of at least {kernel} (kernel_size)"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return f"{module.num_features} channels (num_features)"
    if isinstance(module, nn.LayerNorm):
        return f"trailing dimensions {list(module.normalized_shape)} (normalized_shape)"
    if isinstance(module, nn.GroupNorm):
        return f"{module.num_channels} channels (num_channels)"
    return None


def explain_failure(tracer: Tracer | None, error: BaseException, *, model: str, input_shape: list[int]) -> "Exception":
    """Turn an exception from a forward pass into a ForwardError naming the layer."""
    cause = error
    while cause.__cause__ is not None and "torchinfo" in str(cause):  # torchinfo wraps the real error
        cause = cause.__cause__
    reason = " ".join(str(cause).split()) or type(cause).__name__
    if len(reason) > 240:
        reason = reason[:237] + "..."
    call = tracer.failed_call() if tracer is not None else None
    layer = call.name if call is not None and call.name else None
    got = shapes_of(call.args) if call is not None else []
    expected = _expectation(call.module) if call is not None else None
    where = f"layer '{layer}' ({call.type})" if call is not None and layer else f"{model}'s own forward"
    got_text = f"got input {', '.join(shape(s) for s in got)}" if got else ""
    if "more than 1 value per channel" in reason:
        return InputTooSmallError(
            f"{model} in train mode: {where} {got_text or 'got its input'}, and BatchNorm needs more than one value "
            "per channel to compute batch statistics; use a batch of 2 or more", layer=layer,
            layer_type=call.type if call else None, input_shapes=got, expected=expected)
    too_small = any(marker in reason.lower() for marker in _TOO_SMALL)
    if too_small:
        message = f"input {shape(input_shape[1:])} is too small for {model}: {where} {got_text or 'failed'}"
        message += f", which needs {expected}" if expected else ""
        message += f" ({reason})"
        return InputTooSmallError(message, layer=layer, layer_type=call.type if call else None,
                                  input_shapes=got, expected=expected)
    message = f"forward pass of {model} failed in {where}"
    message += f": {got_text}" if got_text else ""
    message += f", expected {expected}" if expected else ""
    message += f" ({type(cause).__name__}: {reason})"
    return ForwardError(message, layer=layer, layer_type=call.type if call else None, input_shapes=got,
                        expected=expected)
