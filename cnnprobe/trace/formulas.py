"""FLOP formulas, one pure function per operator: shapes in, FLOPs out.

cnnprobe counts with the formulas of `torch.utils.flop_counter`, except
where they are wrong. Its `convolution_backward` loses the group division in
the weight-gradient term, so the backward pass of a depthwise convolution
counts `groups` times too much (65× forward for a 64-channel depthwise 3×3,
where the truth is 2×). Ours replaces it on every torch release: each gradient
a convolution's backward computes (input, weight) costs exactly the
multiply-accumulates of its forward pass; the bias gradient is a sum.

A formula takes the operator's arguments as the dispatcher passes them and
`out_val`, its result, and returns FLOPs (2 × MACs).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any

import torch
from torch.utils.flop_counter import flop_registry

aten = torch.ops.aten


def _shape(value: Any) -> list[int]:
    return list(value.shape) if isinstance(value, torch.Tensor) else list(value)


def conv_macs(x_shape: Sequence[int], w_shape: Sequence[int], out_shape: Sequence[int], transposed: bool) -> int:
    """Multiply-accumulates of one convolution, 1-D to 3-D, any stride, padding, dilation and groups.

    The weight holds one kernel per (output, input-in-group) channel pair:
    `[C_out, C_in/groups, *k]`, or `[C_in, C_out/groups, *k]` when transposed.
    Each kernel element multiplies once per output position (per input position
    when transposed), for every sample of the batch.
    """
    positions = (x_shape if transposed else out_shape)[2:]
    return int(x_shape[0]) * prod(int(d) for d in w_shape) * prod(int(d) for d in positions)


def convolution_backward(grad_out: Any, x: Any, w: Any, bias_sizes: Any, stride: Any, padding: Any, dilation: Any,
                         transposed: bool, output_padding: Any, groups: int, output_mask: Sequence[bool],
                         *, out_val: Any = None, **kwargs: Any) -> int:
    """FLOPs of `aten.convolution_backward`: the forward's MACs for each of the input and weight gradients
    autograd asked for (`output_mask`), times two. A convolution's forward output has grad_out's shape."""
    forward = conv_macs(_shape(x), _shape(w), _shape(grad_out), bool(transposed))
    return 2 * forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


# Keyed by overload packet, as torch's registry is.
FORMULAS: dict[Any, Any] = {**flop_registry, aten.convolution_backward: convolution_backward}

from .quantized import QUANTIZED_FORMULAS  # noqa: E402 - int8 convolutions and linears (trace/quantized.py)

FORMULAS.update(QUANTIZED_FORMULAS)
