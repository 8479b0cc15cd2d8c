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

`FORMULAS` make the total, which stays comparable to torchvision's published
`_ops`: PR pytorch/vision#6936 counted with a torch_dispatch counter mapping
only convolutions, matrix products (mm, addmm, bmm) and, for the quantized
models, quantized convolutions and linears. `SEPARATE` are formulas for the
operators those figures leave out though they do multiply-accumulate:
RoIAlign's bilinear samples, interpolation, `grid_sampler`. They are counted
apart (the reports list them beside the total, never inside it).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any

import torch
import torchvision  # noqa: F401 - registers torchvision::roi_align, whose formula is below
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


def _numel(value: Any) -> int:
    return prod(int(d) for d in _shape(value))


def roi_align_macs(out_shape: Sequence[int], sampling_ratio: int) -> int:
    """RoIAlign: each output element `[K, C, PH, PW]` averages `sampling_ratio²` bilinear samples, each a
    weighted sum of 4 neighbours (4 MACs). An adaptive ratio (≤ 0) depends on each box's size, which meta
    tensors do not have: one sample per bin is counted then, the least it can take."""
    samples = int(sampling_ratio) ** 2 if int(sampling_ratio) > 0 else 1
    return prod(int(d) for d in out_shape) * samples * 4


def roi_align(x: Any, rois: Any, spatial_scale: float, pooled_height: int, pooled_width: int,
              sampling_ratio: int, aligned: bool, *, out_val: Any = None, **kwargs: Any) -> int:
    return 2 * roi_align_macs(_shape(out_val), sampling_ratio)


def roi_align_backward(grad: Any, rois: Any, spatial_scale: float, pooled_height: int, pooled_width: int,
                       batch_size: int, channels: int, height: int, width: int, sampling_ratio: int,
                       aligned: bool, *, out_val: Any = None, **kwargs: Any) -> int:
    """Each sample scatters its gradient to its 4 neighbours: the forward's MACs again."""
    return 2 * roi_align_macs(_shape(grad), sampling_ratio)


def _taps(n: int) -> Any:
    """An interpolation that weighs `n` input elements into each output element: `n` MACs per output
    element (per channel); its backward scatters the same `n` weighted adds from each output gradient."""

    def formula(x: Any, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
        return 2 * n * _numel(out_val)

    def backward(grad_output: Any, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
        return 2 * n * _numel(grad_output)

    return formula, backward


# grid_sampler's interpolation_mode: 0 bilinear, 1 nearest, 2 bicubic
_GRID_TAPS = {2: (4, 0, 16), 3: (8, 0, 0)}  # spatial dims -> taps by mode


def grid_sampler(x: Any, grid: Any, interpolation_mode: int, padding_mode: int, align_corners: bool,
                 *, out_val: Any = None, **kwargs: Any) -> int:
    """Each output element `[N, C, *grid]` weighs 4 input elements (bilinear; 8 in 3-D, 16 bicubic, 0
    nearest)."""
    taps = _GRID_TAPS[len(_shape(x)) - 2][int(interpolation_mode)]
    return 2 * taps * _numel(out_val[0] if isinstance(out_val, (list, tuple)) else out_val)


def grid_sampler_backward(grad_output: Any, x: Any, grid: Any, interpolation_mode: int, padding_mode: int,
                          align_corners: bool, output_mask: Sequence[bool], *, out_val: Any = None,
                          **kwargs: Any) -> int:
    """The input gradient scatters the forward's taps from each output gradient; the grid gradient
    differentiates the weights along each coordinate: a forward's taps per coordinate."""
    taps = _GRID_TAPS[len(_shape(x)) - 2][int(interpolation_mode)]
    per_output = taps * (int(bool(output_mask[0])) + (len(_shape(x)) - 2) * int(bool(output_mask[1])))
    return 2 * per_output * _numel(grad_output)


def _separate() -> dict[Any, Any]:
    found: dict[Any, Any] = {}
    for names, taps in ((("upsample_linear1d",), 2), (("upsample_bilinear2d", "_upsample_bilinear2d_aa"), 4),
                        (("upsample_trilinear3d",), 8), (("upsample_bicubic2d", "_upsample_bicubic2d_aa"), 16)):
        forward, backward = _taps(taps)
        for name in names:
            for op, formula in ((name, forward), (name + "_backward", backward)):
                if hasattr(aten, op):
                    found[getattr(aten, op)] = formula
    for name in ("grid_sampler_2d", "grid_sampler_3d"):
        found[getattr(aten, name)] = grid_sampler
        found[getattr(aten, name + "_backward")] = grid_sampler_backward
    vision = torch.ops.torchvision
    if hasattr(vision, "roi_align"):  # registered when torchvision is imported
        found[vision.roi_align] = roi_align
        found[vision._roi_align_backward] = roi_align_backward
    return found


# Formulas whose MACs are reported apart from the total: torchvision's `_ops` leaves these operators out.
SEPARATE: dict[Any, Any] = _separate()

from .quantized import QUANTIZED_FORMULAS  # noqa: E402 - int8 convolutions and linears (trace/quantized.py)

FORMULAS.update(QUANTIZED_FORMULAS)
