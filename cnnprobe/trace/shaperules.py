"""Output shapes on meta for shape-trivial operators, without running their kernels.

torch runs many meta kernels through Python reference implementations that
cost milliseconds each; for BatchNorm, activations, same-shape elementwise
arithmetic, matrix products and convolutions the result's shape is plain from
the inputs'. Each rule returns the operator's result, or None to run the real
meta kernel (which then gives torch's own error where shapes do not fit).
Rules only fire on contiguous meta tensors, where the output layout is plainly
the input's; `tests/test_summary.py` checks them against the real kernels for
every registered model.
"""

from __future__ import annotations

from typing import Any

import torch

aten = torch.ops.aten

RULES: dict[Any, Any] = {}  # operator overload -> rule


def _rule(*names: str, plain: bool = True) -> Any:
    """Register a shape rule; `plain` rules only see a contiguous meta tensor as their first argument."""

    def register(fn: Any) -> Any:
        def guarded(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return fn(args, kwargs) if args and _plain(args[0]) else None

        for name in names:
            packet = getattr(aten, name, None)
            if packet is not None:
                for overload in packet.overloads():
                    RULES[getattr(packet, overload)] = guarded if plain else fn
        return fn

    return register


def _plain(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.is_meta and x.is_contiguous()


@_rule("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training")
def _batch_norm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x = args[0]
    return torch.empty_like(x), x.new_empty((0,)), x.new_empty((0,))


@_rule("relu", "gelu", "silu", "sigmoid", "hardswish", "hardsigmoid", "tanh", "hardtanh", "leaky_relu", "elu",
       "mish", "softplus", "clamp", "clamp_min", "clamp_max", "_softmax", "_safe_softmax")
def _like_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) > 2 and args[2] is True and args[0].dtype != torch.float32:  # softmax's half_to_float
        return None
    return torch.empty_like(args[0])


@_rule("relu_", "gelu_", "silu_", "sigmoid_", "hardswish_", "hardsigmoid_", "tanh_", "hardtanh_", "leaky_relu_",
       "elu_", "mish_", "clamp_", "clamp_min_")
def _in_place(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[0]


def _broadcast(a: torch.Size, b: torch.Size) -> list[int] | None:
    """The broadcast shape of `a` and `b`, or None where they do not broadcast."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and 1 not in (x, y):
            return None
        out.append(y if x == 1 else x)  # a 1 broadcasts to the other size, 0 included
    return out[::-1]


def _keeps_dtype(x: torch.Tensor, scalar: Any) -> bool:
    """Whether `x op scalar` keeps x's dtype (for add, sub, mul; true division only sees float tensors): a
    float tensor with any number; an integer tensor (not bool or uint8) with an integer."""
    if isinstance(scalar, bool) or not isinstance(scalar, (int, float)):
        return False
    if x.is_floating_point():
        return True
    return isinstance(scalar, int) and x.dtype not in (torch.bool, torch.uint8) and not x.is_complex()


@_rule("gt", "lt", "ge", "le", "eq", "ne")
def _comparison(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A truth value per element of the broadcast shape. torch's meta kernels for these run through Python
    references: a mask pasted per detection costs dozens of them."""
    x, y = args[0], args[1]
    if isinstance(y, (int, float)) and not isinstance(y, bool):
        return torch.empty_like(x, dtype=torch.bool)
    if not _plain(y) or y.dtype != x.dtype:
        return None
    shape = _broadcast(x.shape, y.shape)
    return None if shape is None else x.new_empty(shape, dtype=torch.bool)


@_rule("add", "mul", "sub")
def _elementwise(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x, y = args[0], args[1]
    if kwargs.get("rounding_mode"):
        return None
    if not isinstance(y, torch.Tensor):
        return torch.empty_like(x) if _keeps_dtype(x, y) else None
    if not _plain(y) or y.dtype != x.dtype:
        return None
    shape = _broadcast(x.shape, y.shape)
    if shape is None:
        return None  # the real kernel raises torch's own message
    if list(x.shape) == shape:
        return torch.empty_like(x)
    return torch.empty_like(y) if list(y.shape) == shape else x.new_empty(shape)


@_rule("div")
def _true_division(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if kwargs.get("rounding_mode") or not args[0].is_floating_point():
        return None
    return _elementwise(args, kwargs)


@_rule("add_", "mul_", "sub_", "div_")
def _elementwise_in_place(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    y = args[1]
    if not isinstance(y, torch.Tensor):
        return args[0] if args[0].is_floating_point() else None
    small, big = y.shape, args[0].shape
    fits = len(small) <= len(big) and all(a in (1, b) for a, b in zip(reversed(small), reversed(big)))
    return args[0] if fits and y.dtype == args[0].dtype and y.is_meta else None


def _matmul_shape(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int] | None:
    if a.dim() != 2 or b.dim() != 2 or a.dtype != b.dtype:
        return None
    if a.shape[1] != b.shape[0]:  # the message torch gives, so failures read the same
        raise RuntimeError(
            f"mat1 and mat2 shapes cannot be multiplied ({a.shape[0]}x{a.shape[1]} and {b.shape[0]}x{b.shape[1]})"
        )
    return a.shape[0], b.shape[1]


@_rule("addmm")
def _addmm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    bias, a, b = args[0], args[1], args[2]
    shape = _matmul_shape(a, b)
    if shape is None or not isinstance(bias, torch.Tensor) or bias.dim() > 2 or bias.dtype != a.dtype:
        return None
    if any(s not in (1, t) for s, t in zip(reversed(bias.shape), reversed(shape))):
        return None
    return a.new_empty(shape)


@_rule("mm")
def _mm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    shape = _matmul_shape(args[0], args[1])
    return None if shape is None else args[0].new_empty(shape)


@_rule("native_layer_norm", plain=False)
def _layer_norm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The CPU and CUDA kernels make their input contiguous and return a contiguous result."""
    x, normalized = args[0], list(args[1])
    if not isinstance(x, torch.Tensor) or not x.is_meta or list(x.shape[x.dim() - len(normalized):]) != normalized:
        return None
    stats = (*x.shape[: x.dim() - len(normalized)], *([1] * len(normalized)))
    return x.new_empty(x.shape), x.new_empty(stats), x.new_empty(stats)


@_rule("cat", plain=False)
def _cat(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    tensors = [t for t in args[0] if not (t.dim() == 1 and t.shape[0] == 0)] if args else []
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    first = tensors[0] if tensors else None
    if first is None or not all(_plain(t) and t.dim() == first.dim() and t.dtype == first.dtype for t in tensors):
        return None
    dim %= tensors[0].dim()
    first = tensors[0].shape
    if any(t.shape[:dim] != first[:dim] or t.shape[dim + 1:] != first[dim + 1:] for t in tensors):
        return None
    shape = list(first)
    shape[dim] = sum(t.shape[dim] for t in tensors)
    return tensors[0].new_empty(shape)


@_rule("convolution")
def _convolution(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x, w, bias, stride, padding, dilation, transposed, _, groups = args[:9]
    if transposed or not _plain(w) or w.dtype != x.dtype or x.dim() != w.dim() or x.dim() < 3:
        return None
    spatial = x.dim() - 2
    if x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
        return None
    stride, padding, dilation = (list(v) * (spatial if len(v) == 1 else 1) for v in (stride, padding, dilation))
    out = [x.shape[0], w.shape[0]]
    for i in range(spatial):
        size = (x.shape[2 + i] + 2 * padding[i] - dilation[i] * (w.shape[2 + i] - 1) - 1) // stride[i] + 1
        if size <= 0:
            return None  # the real kernel says why
        out.append(size)
    return x.new_empty(out)


@_rule("mean")
def _mean(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x = args[0]
    dims = args[1] if len(args) > 1 else kwargs.get("dim")
    keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    if kwargs.get("dtype") is not None or (len(args) > 3 and args[3] is not None) or not x.is_floating_point():
        return None
    dims = list(range(x.dim())) if not dims else [d % x.dim() for d in dims]
    shape = [1 if i in dims else s for i, s in enumerate(x.shape)] if keep else [
        s for i, s in enumerate(x.shape) if i not in dims
    ]
    return x.new_empty(shape)


@_rule("upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
       "_upsample_nearest_exact2d", "_upsample_nearest_exact3d", "upsample_linear1d", "upsample_bilinear2d",
       "upsample_bicubic2d", "upsample_trilinear3d", "_upsample_bilinear2d_aa", "_upsample_bicubic2d_aa")
def _upsample(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The default overloads state the output size (the `.vec` ones, which may give scales instead, decompose
    into them). torch's bicubic meta kernel is a Python decomposition: a quarter of a second per call."""
    x, size = args[0], args[1] if len(args) > 1 else kwargs.get("output_size")
    if not isinstance(size, (list, tuple)) or len(size) != x.dim() - 2 or any(int(s) <= 0 for s in size):
        return None
    if len(args) > 2 and isinstance(args[2], (list, tuple)):  # a .vec overload: scale factors, not sizes
        return None
    return x.new_empty((*x.shape[:2], *(int(s) for s in size)))


@_rule("grid_sampler_2d", "grid_sampler_3d")
def _grid_sampler(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x, grid = args[0], args[1]
    if not _plain(grid) or grid.dtype != x.dtype or grid.dim() != x.dim() or grid.shape[0] != x.shape[0]:
        return None
    if grid.shape[-1] != x.dim() - 2:
        return None
    return x.new_empty((x.shape[0], x.shape[1], *grid.shape[1:-1]))
