"""Each recorded operator's class and cost: what the time model needs to know of one kernel.

The memory tracker records every operator of a step with its tensors as `TensorSpec`s (shape, stride, dtype),
not the tensors. `classify` rebuilds them on meta, runs the operator once there for its outputs (nothing is
computed), and reads:
- FLOPs: cnnprobe's formulas (`trace.formulas.FORMULAS`, and `SEPARATE` too: interpolation and RoIAlign take
  time though torchvision's totals leave them out), plus the CPU's attention kernels, which have no formula
  there (`_ATTENTION_FALLBACK`);
- bytes: `trace.costs.operator_bytes`, unfused, each distinct tensor once. A tensor passed twice is recorded
  twice (specs carry no identity), so `add(x, x)` counts x twice;
- the class, from the operator and, for convolutions, its groups and kernel; every operator of the optimizer's
  phase is the optimizer's;
- for GEMM-like operators, the (m, n, k) of the GEMM they are, for wave quantization;
- for a CPU: the storages it allocates (`OpCost.fresh`) and, for convolutions, which kernel torch would pick
  and the weights' bytes (`ConvShape`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from ..memory.tracker import OpRecord, TensorSpec
from ..trace.costs import ZERO_BYTES, operator_bytes
from ..trace.formulas import FORMULAS, SEPARATE
from .records import ANY_THREADS, ConvShape, OpClass, OpCost

CONVOLUTIONS = frozenset({"convolution", "_convolution", "convolution_overrideable", "cudnn_convolution",
                          "mkldnn_convolution", "_slow_conv2d_forward", "cudnn_convolution_transpose",
                          "convolution_backward", "convolution_backward_overrideable"})
GEMMS = frozenset({"mm", "addmm", "bmm", "baddbmm", "linear", "mkldnn_linear", "_addmm_activation", "addbmm",
                   "mv", "addmv", "dot", "_scaled_mm", "_int_mm"})
_ATTENTION = re.compile(r"scaled_dot_product|flash_attention|efficient_attention|flex_attention")
_NORMALIZATION = re.compile(r"(batch|layer|group|instance|rms)_norm")
_POOLING = re.compile(r"pool")
_REDUCTION = re.compile(r"softmax|^nll_loss|^(sum|mean|amax|amin|max|min|prod|var|std|var_mean|std_mean|"
                        r"argmax|argmin|logsumexp|linalg_vector_norm|norm|any|all|cumsum|cumprod|mse_loss|"
                        r"binary_cross_entropy|binary_cross_entropy_with_logits|smooth_l1_loss|l1_loss|huber_loss|"
                        r"cross_entropy_loss|mse_loss_backward|mean_backward)$")
COPIES = frozenset({"copy_", "_to_copy", "clone", "cat", "stack", "constant_pad_nd", "contiguous", "index",
                    "_unsafe_index", "index_put", "index_put_", "_index_put_impl_", "_unsafe_index_put",
                    "index_select", "index_add", "index_add_", "index_copy", "index_copy_", "gather", "scatter",
                    "scatter_", "scatter_add", "scatter_add_", "scatter_reduce", "slice_scatter", "select_scatter",
                    "as_strided_scatter", "diagonal_scatter", "embedding", "embedding_dense_backward", "flip",
                    "roll", "repeat", "narrow_copy", "lift_fresh_copy", "fill_", "zero_", "fill", "zeros",
                    "zeros_like", "ones", "ones_like", "full", "full_like", "new_zeros", "new_ones", "new_full",
                    "arange", "scalar_tensor", "masked_fill", "masked_fill_", "masked_scatter", "masked_select",
                    "_reshape_copy", "view_copy", "permute_copy", "expand_copy", "t_copy", "transpose_copy",
                    "unsqueeze_copy", "squeeze_copy", "reflection_pad1d", "reflection_pad2d",
                    "reflection_pad3d", "replication_pad1d", "replication_pad2d", "replication_pad3d",
                    "reflection_pad2d_backward", "replication_pad2d_backward", "pixel_shuffle", "pixel_unshuffle",
                    "channel_shuffle", "tril", "triu", "col2im", "im2col", "select_backward",
                    "slice_backward", "index_select_backward", "unfold_backward", "diagonal_backward",
                    "as_strided_copy", "alias_copy"})
ELEMENTWISE_EXTRA = frozenset({"native_dropout", "hardswish", "hardswish_", "bernoulli", "bernoulli_",
                               "hardtanh_backward",
                               "hardswish_backward", "hardsigmoid_backward", "leaky_relu_backward",
                               "elu_backward", "softplus_backward", "mish_backward", "rrelu_with_noise",
                               "normal_", "uniform_", "random_", "exponential_"})


def _name(func: Any) -> str:
    packet = getattr(func, "_overloadpacket", None)
    return packet.__name__ if packet is not None else str(func)


def _meta(value: Any) -> Any:
    if isinstance(value, TensorSpec):
        return torch.empty_strided(value.shape, value.stride, dtype=value.dtype, device="meta")
    if isinstance(value, torch.device):
        return torch.device("meta")
    return value


def _bound(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by their schema's names."""
    schema = getattr(func, "_schema", None)
    names = [a.name for a in schema.arguments] if schema is not None else []
    found = {names[i] if i < len(names) else f"#{i}": v for i, v in enumerate(args)}
    found.update(kwargs)
    return found


def _dtype(args: Any, out: Any) -> str:
    tensors = [t for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor) and t.is_floating_point()]
    tensors = tensors or [t for t in tree_flatten((args, out))[0] if isinstance(t, torch.Tensor)]
    return str(tensors[0].dtype).removeprefix("torch.") if tensors else "float32"


def _attention_fallback(name: str, args: tuple[Any, ...], out: Any) -> int:
    """FLOPs of the CPU's fused attention (`_scaled_dot_product_flash_attention_for_cpu` and its backward),
    which torch's flop counter has no formula for: Q·Kᵀ and P·V, `4·B·H·L·S·E` forward; the backward's four
    products twice that. q: [B, H, L, E], k: [B, H, S, E]."""
    if not name.endswith("_for_cpu") and not name.endswith("_for_cpu_backward"):
        return 0
    backward = name.endswith("_backward")
    q, k = (args[1], args[2]) if backward else (args[0], args[1])
    *batch, length, embed = q.shape
    flops = 4 * math.prod(batch) * length * int(k.shape[-2]) * embed
    return 2 * flops if backward else flops


def conv_kind(x_shape: tuple[int, ...], w_shape: tuple[int, ...], groups: int) -> OpClass:
    """Depthwise when every input channel is its own group; grouped for any other groups > 1; 1×1 when
    the kernel is all ones (and groups == 1); dense otherwise."""
    if groups > 1:
        return OpClass.CONV_DEPTHWISE if groups == int(x_shape[1]) else OpClass.CONV_GROUPED
    return OpClass.CONV_1X1 if all(int(d) == 1 for d in w_shape[2:]) else OpClass.CONV_DENSE


NATIVE_BATCH = 16  # torch's CPU convolution: below this batch a 1×1 convolution on one thread is its own kernel's
NATIVE_TINY = 20480  # ... and at batch 1, an input of at most this many elements (kernel at most 3 on a side)


def native_threads(x_shape: tuple[int, ...], w_shape: tuple[int, ...], stride: Any, dilation: Any, groups: int,
                   dtype: str) -> int:
    """The most threads at which torch runs this float32 CPU convolution with its own kernel rather than
    oneDNN's (`ConvParams::use_mkldnn` in ATen's Convolution.cpp): any, for a tiny input at batch 1 with a
    kernel of at most 3 on some side; one, for an unstrided, undilated 1×1 convolution at a batch under 16;
    else none (0)."""
    if dtype != "float32" or len(x_shape) < 3 or len(w_shape) < 3:
        return 0
    n = int(x_shape[0])
    kh, kw = int(w_shape[-2]) if len(w_shape) > 3 else 1, int(w_shape[-1])
    elements = math.prod(int(d) for d in x_shape[:4])
    if groups == 1 and not (kh > 3 and kw > 3) and n <= 1 and elements <= NATIVE_TINY:
        return ANY_THREADS
    unit = all(int(v) == 1 for v in (stride if isinstance(stride, (list, tuple)) else [stride]))
    undilated = all(int(v) == 1 for v in (dilation if isinstance(dilation, (list, tuple)) else [dilation]))
    if kh == 1 and kw == 1 and unit and undilated and n < NATIVE_BATCH:
        return 1
    return 0


def _conv_shape(name: str, bound: dict[str, Any], dtype: str) -> ConvShape:
    x, w = bound["input"], bound["weight"]
    mask = bound.get("output_mask", [True, True, True])
    transposed = bool(bound.get("transposed", False))
    native = 0 if transposed else native_threads(tuple(x.shape), tuple(w.shape), bound.get("stride", 1),
                                                 bound.get("dilation", 1), int(bound.get("groups", 1)), dtype)
    return ConvShape(samples=int(x.shape[0]), weight_bytes=w.numel() * w.element_size(),
                     weight_grad=name.startswith("convolution_backward") and bool(mask[1]), native_threads=native)


def _fresh(func: Any, name: str, out: Any) -> tuple[int, ...]:
    """The bytes of each storage the operator allocates: its outputs, unless it works in place or returns a
    view (its schema says so)."""
    schema = getattr(func, "_schema", None)
    if name.endswith("_") or schema is None or any(r.alias_info is not None for r in schema.returns):
        return ()
    return tuple(t.numel() * t.element_size() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))


def _convolution(name: str, bound: dict[str, Any], out: Any) -> tuple[OpClass, tuple[int, int, int]]:
    """The class and the implicit GEMM per group: m = N·(output positions), n = C_out/groups,
    k = C_in/groups·(kernel elements); transposed, the input positions stand for the output's. The backward
    is given its forward's GEMM: each of its gradients (input, weight) does the forward's MACs as a GEMM over
    the same three sizes, permuted."""
    backward = name.startswith("convolution_backward")
    x, w = bound["input"], bound["weight"]
    groups = int(bound.get("groups", 1))
    transposed = bool(bound.get("transposed", False))
    y = bound["grad_output"] if backward else (out[0] if isinstance(out, (list, tuple)) else out)
    x_shape, w_shape = tuple(x.shape), tuple(w.shape)
    positions = math.prod(int(d) for d in (x_shape if transposed else tuple(y.shape))[2:])
    c_in, c_out = int(x_shape[1]), int(y.shape[1])
    kernel = math.prod(int(d) for d in w_shape[2:])
    return conv_kind(x_shape, w_shape, groups), (int(x_shape[0]) * positions, c_out // groups,
                                                 c_in // groups * kernel)


def _gemm_dims(name: str, bound: dict[str, Any]) -> tuple[int, int, int] | None:
    """(m, n, k) of a matrix product, batch dimensions folded into m (linear) or left to the FLOPs
    (bmm: the time model reads the batch count as FLOPs / 2mnk)."""
    if name in ("mm", "addmm", "_addmm_activation", "_scaled_mm", "_int_mm"):
        a, b = (bound.get("self"), bound.get("mat2")) if "mat1" not in bound else (bound["mat1"], bound["mat2"])
        if a is None or b is None:
            return None
        return int(a.shape[0]), int(b.shape[1]), int(a.shape[1])
    if name in ("bmm", "baddbmm", "addbmm"):
        a, b = (bound["self"], bound["mat2"]) if name == "bmm" else (bound["batch1"], bound["batch2"])
        return int(a.shape[-2]), int(b.shape[-1]), int(a.shape[-1])
    if name in ("linear", "mkldnn_linear"):
        x, w = bound["input"] if "input" in bound else bound["self"], bound["weight"]
        rows = 1
        for d in tuple(x.shape)[:-1]:
            rows *= int(d)
        return rows, int(w.shape[0]), int(w.shape[1])
    return None


def _attention_dims(name: str, args: tuple[Any, ...]) -> tuple[int, int, int] | None:
    """(L, S, E) of Q·Kᵀ: the batch and heads are left to the FLOPs, as bmm's batch is."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    backward = "backward" in name
    if len(tensors) < 3:
        return None
    q, k = (tensors[1], tensors[2]) if backward else (tensors[0], tensors[1])
    if q.dim() < 2 or k.dim() < 2:
        return None
    return int(q.shape[-2]), int(k.shape[-2]), int(q.shape[-1])


def _pointwise(func: Any, name: str) -> bool:
    """Tagged pointwise, or the in-place form (`hardswish_`) of an operator that is (not every one carries
    the tag itself)."""
    if torch.Tag.pointwise in getattr(func, "tags", ()) or name in ELEMENTWISE_EXTRA:
        return True
    functional = getattr(torch.ops.aten, name[:-1], None) if name.endswith("_") else None
    default = getattr(functional, "default", None)
    return default is not None and torch.Tag.pointwise in default.tags


def _class(name: str, func: Any, bound: dict[str, Any], args: tuple[Any, ...],
           out: Any) -> tuple[OpClass, tuple[int, int, int] | None]:
    if name in CONVOLUTIONS and "weight" in bound and "input" in bound:
        return _convolution(name, bound, out)
    if name in GEMMS:
        return OpClass.GEMM, _gemm_dims(name, bound)
    if _ATTENTION.search(name):
        return OpClass.ATTENTION, _attention_dims(name, args)
    if name.startswith(("_foreach_", "_fused_")):
        return OpClass.OPTIMIZER, None
    if _NORMALIZATION.search(name):
        return OpClass.NORMALIZATION, None
    if _POOLING.search(name):
        return OpClass.POOLING, None
    if _REDUCTION.search(name):
        return OpClass.REDUCTION, None
    if name in COPIES:
        return OpClass.COPY_LAYOUT, None
    if _pointwise(func, name):
        return OpClass.ELEMENTWISE, None
    return OpClass.OTHER, None


# (func, specs) -> its cost in the forward phase, or None for an operator that costs nothing
_CACHE: dict[str, OpCost | None] = {}


def _measure(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> OpCost | None:
    name = _name(func)
    packet = getattr(func, "_overloadpacket", None)
    formula = (SEPARATE.get(packet) or FORMULAS.get(packet)) if packet is not None else None
    if name in ZERO_BYTES and formula is None:
        return None
    margs, mkwargs = tree_map(_meta, (tuple(args), dict(kwargs)))
    try:
        out = func(*margs, **mkwargs)
    except Exception:  # noqa: BLE001 - an operator meta cannot run (it reads values): its inputs still count
        out = None
    flops = int(formula(*margs, **mkwargs, out_val=out)) if formula is not None and out is not None else 0
    if formula is None and out is not None and _ATTENTION.search(name):
        flops = _attention_fallback(name, margs, out)
    moved = operator_bytes(func, name, margs, mkwargs, out)
    if moved == 0 and flops == 0:
        return None
    bound = _bound(func, margs, mkwargs)
    op_class, dims = _class(name, func, bound, margs, out)
    dtype = _dtype(margs, out)
    conv = _conv_shape(name, bound, dtype) if _is_convolution(name, bound) else None
    return OpCost(name, op_class, flops, moved, dtype, "forward", dims, _fresh(func, name, out), conv,
                  _weight_bytes(name, bound, dims, margs))


def _is_convolution(name: str, bound: dict[str, Any]) -> bool:
    return name in CONVOLUTIONS and "weight" in bound and "input" in bound


def _weight_bytes(name: str, bound: dict[str, Any], dims: tuple[int, int, int] | None, args: tuple[Any, ...]) -> int:
    """The operand a layer's weights are: a convolution's weights; a 2-D matrix product's larger input, m×k or
    k×n (a batched one's operands are activations); 0 for anything else."""
    if _is_convolution(name, bound):
        w = bound["weight"]
        return int(w.numel() * w.element_size())
    if dims is None or name not in ("mm", "addmm", "linear", "mkldnn_linear", "_addmm_activation"):
        return 0
    m, n, k = dims
    size = next((t.element_size() for t in args if isinstance(t, torch.Tensor)), 4)
    return max(m * k, k * n) * size


def weight_bytes(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """`OpCost.weight_bytes` of one call on real or meta tensors, by the rule `classify` applies (what the
    calibration's grid counts, so that a fitted rate is judged on a prediction's own count)."""
    name = _name(func)
    bound = _bound(func, args, kwargs)
    dims = _gemm_dims(name, bound) if name in GEMMS else None
    return _weight_bytes(name, bound, dims, args)


def classify(func: Any, args: Any, kwargs: Any, phase: str) -> OpCost | None:
    """One recorded operator's cost (args and kwargs with every tensor a `TensorSpec`); None for one that
    moves and computes nothing (views, metadata, empty tensors). Every operator of the "optimizer" phase
    is the optimizer's class, whatever it is."""
    key = f"{func}{args!r}{kwargs!r}"
    if key not in _CACHE:
        _CACHE[key] = _measure(func, tuple(args), dict(kwargs or {}))
    found = _CACHE[key]
    if found is None:
        return None
    if phase == "optimizer":
        return replace(found, op_class=OpClass.OPTIMIZER, dims=None, phase=phase)
    return replace(found, phase=phase)


def _composite(func: Any) -> bool:
    """Whether an operator is a composite of others (conv2d, linear, batch_norm, to): under inference_mode
    these reach a dispatch mode whole, and their kernels are the operators they are made of."""
    key = torch._C.DispatchKey.CompositeImplicitAutograd
    try:
        return hasattr(func, "name") and torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), key)
    except RuntimeError:  # prim:: operators are not in the dispatcher's table
        return False


class _Pieces(TorchDispatchMode):
    """Records the operators a composite is made of (composites inside it taken apart too)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if _composite(func):
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        self.calls.append((func, args, kwargs))
        return func(*args, **kwargs)


_PIECES: dict[str, list[tuple[Any, tuple[Any, ...], dict[str, Any]]]] = {}


def _kernels(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[Any, Any, Any]]:
    """The operators that run for one recorded call: itself, or a composite's pieces, on meta."""
    packet = getattr(func, "_overloadpacket", None)
    if packet in FORMULAS or packet in SEPARATE or not _composite(func):
        return [(func, args, kwargs)]
    key = f"{func}{args!r}{kwargs!r}"
    if key not in _PIECES:
        margs, mkwargs = tree_map(_meta, (tuple(args), dict(kwargs)))
        recorder = _Pieces()
        try:
            with recorder:
                out = func.decompose(*margs, **mkwargs)
            _PIECES[key] = recorder.calls if out is not NotImplemented else [(func, args, kwargs)]
        except Exception:  # noqa: BLE001 - a composite meta cannot take apart: counted whole
            _PIECES[key] = [(func, args, kwargs)]
    return _PIECES[key]


def classify_all(ops: Iterable[OpRecord]) -> list[OpCost]:
    """The costs of a step's recorded operators, in order, those that cost nothing left out; a composite
    (recorded whole under inference_mode) by the operators it is made of."""
    costs = []
    for op in ops:
        args, kwargs = op.args
        for func, a, k in _kernels(op.func, tuple(args), dict(kwargs or {})):
            cost = classify(func, a, k, getattr(op, "phase", "unmarked"))
            if cost is not None:
                costs.append(cost)
    return costs
