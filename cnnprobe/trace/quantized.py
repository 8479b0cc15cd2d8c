"""FLOP formulas of quantized convolutions and linears (`quantized::conv2d`, `quantized::linear_relu`, ...).

A quantized model's convolutions run as `quantized` operators, not aten's, and
their weights come packed in a C++ object (`Conv2dPackedParamsBase`,
`LinearPackedParamsBase`) whose `unpack()` gives the int8 weight back. Their
multiply-accumulates are those of the float operator they replace: one per
kernel element per output position, as for `aten.convolution`; a
fused ReLU or residual add (`conv2d_add_relu`) is elementwise and, as for float
models, not counted. torchvision's `_ops` for a quantized model is counted the
same way, so it equals its float model's.
"""

from __future__ import annotations

from math import prod
from typing import Any

import torch


def _shape(value: Any) -> list[int]:
    return [int(d) for d in (value.shape if isinstance(value, torch.Tensor) else value)]


def conv_macs(x_shape: list[int], w_shape: list[int], out_shape: list[int], transposed: bool) -> int:
    """A convolution's multiply-accumulates, as `formulas.conv_macs` counts aten's (which imports this module,
    so it is not imported here): every kernel element once per output position (per input position when
    transposed), for every sample."""
    positions = (x_shape if transposed else out_shape)[2:]
    return x_shape[0] * prod(w_shape) * prod(positions)


def _weight_shape(packed: Any) -> list[int]:
    weight, _ = packed.unpack()
    return _shape(weight)


def quantized_conv(x: Any, packed: Any, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    """FLOPs of a quantized convolution (any rank, groups, stride; transposed where the packed weight says)."""
    out = out_val[0] if isinstance(out_val, (tuple, list)) else out_val
    transposed = bool(packed.transpose()) if hasattr(packed, "transpose") else False
    return 2 * conv_macs(_shape(x), _weight_shape(packed), _shape(out), transposed)


def quantized_linear(x: Any, packed: Any, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    """FLOPs of a quantized linear: each output feature multiplies every input feature, per row."""
    out_features, in_features = _weight_shape(packed)[:2]
    rows = prod(int(d) for d in _shape(x)[:-1])
    return 2 * rows * int(out_features) * int(in_features)


_CONV = ("conv1d", "conv2d", "conv3d", "conv1d_relu", "conv2d_relu", "conv3d_relu", "conv2d_add", "conv2d_add_relu",
         "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
_LINEAR = ("linear", "linear_relu", "linear_dynamic", "linear_relu_dynamic", "linear_dynamic_fp16",
           "linear_relu_dynamic_fp16")


def _packets(names: tuple[str, ...]) -> list[Any]:
    """The operators of this torch release among `names` (a build without quantized kernels has none)."""
    found = []
    for name in names:
        try:
            found.append(getattr(torch.ops.quantized, name))
        except (AttributeError, RuntimeError):
            continue
    return found


QUANTIZED_FORMULAS: dict[Any, Any] = {
    **dict.fromkeys(_packets(_CONV), quantized_conv),
    **dict.fromkeys(_packets(_LINEAR), quantized_linear),
}
