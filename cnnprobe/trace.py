"""One pass over the model: every module call, its output shape and its FLOPs.

A TorchDispatchMode sees every aten operator. Operators with a formula in
`formulas.FORMULAS` (convolutions, matrix products, attention: torch's
formulas, corrected where they are wrong) are counted with that formula and attributed to the innermost module running;
every other operator with arithmetic is recorded as *not counted*, never
silently dropped. Global module hooks keep the stack of running modules, so a
failing forward pass names the layer it failed in.

On meta tensors some shape-trivial operators (BatchNorm, activations,
same-shape elementwise arithmetic) are answered here directly: torch runs
their meta kernels through Python reference implementations that cost
milliseconds each, and their outputs are plainly shaped like their inputs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from .formulas import FORMULAS

aten = torch.ops.aten

# Operators that only move, view or create data: no arithmetic to count.
_NO_ARITHMETIC = {
    "view", "_unsafe_view", "reshape", "_reshape_alias", "permute", "transpose", "t", "expand", "squeeze",
    "unsqueeze", "select", "slice", "split", "split_with_sizes", "unbind", "as_strided", "alias", "detach",
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "new_zeros", "new_ones", "new_full",
    "zeros", "zeros_like", "ones", "ones_like", "full", "full_like", "fill", "fill_", "zero_", "clone", "copy_",
    "_to_copy", "contiguous", "cat", "stack", "lift_fresh", "lift_fresh_copy", "arange", "scalar_tensor",
    "index_select", "gather", "index", "_unsafe_index", "constant_pad_nd", "roll", "narrow", "unfold",
    "expand_copy", "view_copy", "permute_copy", "t_copy", "transpose_copy", "unsqueeze_copy", "squeeze_copy",
    "_local_scalar_dense", "detach_", "set_", "resize_", "flip", "repeat", "masked_fill", "masked_fill_",
    "where", "ones_like", "split_copy", "unbind_copy", "slice_copy", "select_copy", "_reshape_copy",
    "native_dropout", "bernoulli", "bernoulli_", "copy", "_assert_tensor_metadata", "sym_size", "sym_numel",
    "sym_stride", "sym_storage_offset", "_has_compatible_shallow_copy_type",
}
_METADATA = {
    aten.is_contiguous.default, aten.is_contiguous.memory_format, aten.is_strides_like_format.default,
    aten.is_non_overlapping_and_dense.default, aten.size.default, aten.sym_size.default, aten.stride.default,
    aten.sym_stride.default, aten.storage_offset.default, aten.sym_storage_offset.default, aten.numel.default,
    aten.sym_numel.default, aten.dim.default, torch.ops.prim.layout.default,
}


# --------------------------------------------------------------------------- shape rules on meta
# Each rule returns the operator's result from shapes alone, or None to run the
# real meta kernel. Rules only fire on contiguous meta tensors, where the
# output layout is plainly the input's.

_RULES: dict[Any, Any] = {}


def _rule(*names: str, plain: bool = True) -> Any:
    """Register a shape rule; `plain` rules only see a contiguous meta tensor as their first argument."""

    def register(fn: Any) -> Any:
        def guarded(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return fn(args, kwargs) if args and _plain(args[0]) else None

        for name in names:
            packet = getattr(aten, name, None)
            if packet is not None:
                for overload in packet.overloads():
                    _RULES[getattr(packet, overload)] = guarded if plain else fn
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
        out.append(max(x, y) if 1 in (x, y) else x)
    return out[::-1]


@_rule("add", "mul", "sub", "div")
def _elementwise(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x, y = args[0], args[1]
    if kwargs.get("rounding_mode"):
        return None
    if not isinstance(y, torch.Tensor):
        return torch.empty_like(x) if x.is_floating_point() and isinstance(y, (int, float)) else None
    if not _plain(y) or y.dtype != x.dtype:
        return None
    shape = _broadcast(x.shape, y.shape)
    if shape is None:
        return None  # the real kernel raises torch's own message
    if list(x.shape) == shape:
        return torch.empty_like(x)
    return torch.empty_like(y) if list(y.shape) == shape else x.new_empty(shape)


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
    if not tensors or not all(_plain(t) and t.dim() == tensors[0].dim() and t.dtype == tensors[0].dtype for t in tensors):
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


@dataclass(frozen=True)
class _OpInfo:
    """What the tracer needs to know about one operator overload, computed once."""

    name: str
    formula: Any
    decomposable: bool
    arithmetic: bool
    metadata: bool
    rule: Any


_INFO: dict[Any, _OpInfo] = {}


def _info(func: Any) -> _OpInfo:
    info = _INFO.get(func)
    if info is None:
        packet = getattr(func, "_overloadpacket", None)
        name = packet.__name__ if packet is not None else str(func)
        formula = FORMULAS.get(packet) if packet is not None else None
        key = torch._C.DispatchKey.CompositeImplicitAutograd
        decomposable = formula is None and func is not torch.ops.prim.device.default and (
            key in getattr(func, "py_kernels", {})
            or (hasattr(func, "name") and torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), key))
        )
        info = _OpInfo(name, formula, decomposable, name not in _NO_ARITHMETIC, func in _METADATA,
                       _RULES.get(func))
        _INFO[func] = info
    return info


@dataclass
class Call:
    """One call of one module during the pass."""

    name: str
    type: str
    depth: int
    module: nn.Module = field(repr=False)
    args: tuple[Any, ...] = field(default=(), repr=False)
    own_flops: int = 0
    flops: int = 0  # inclusive of the modules it calls
    output_shape: list[int] | None = None
    done: bool = False


class _Dispatch(TorchDispatchMode):
    """Forwards every operator to its tracer; kept apart so re-entering it costs nothing else."""

    def __init__(self, tracer: "Tracer") -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        return self.tracer.dispatch(self, func, args, kwargs or {})


class Tracer:
    """Counts FLOPs by module and operator, and keeps the stack of running modules.

    Use as a context manager around one or more forward (and backward) passes.
    """

    def __init__(self, model: nn.Module, *, fast_meta: bool = True) -> None:
        self.fast_meta = fast_meta
        self.names = {id(m): n for n, m in model.named_modules()}
        self.calls: list[Call] = []
        self.stack: list[Call] = []
        self.flops_by_op: Counter[str] = Counter()
        self.uncounted: Counter[str] = Counter()
        self.backward = False
        self.backward_flops_by_op: Counter[str] = Counter()
        self._handles: list[Any] = []
        self._mode = _Dispatch(self)

    # ---- module stack
    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        name = self.names.get(id(module))
        if name is None:
            return
        call = Call(name, type(module).__name__, name.count(".") + 1 if name else 0, module, args)
        self.calls.append(call)
        self.stack.append(call)

    def _post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if id(module) not in self.names or not any(c.module is module for c in self.stack):
            return
        while self.stack[-1].module is not module:  # callees whose exception the caller caught
            self.stack.pop()
        call = self.stack.pop()
        call.flops += call.own_flops
        call.args = ()
        call.done = True
        tensor = _first_tensor(output)
        call.output_shape = list(tensor.shape) if tensor is not None else None
        if self.stack:
            self.stack[-1].flops += call.flops

    def __enter__(self) -> "Tracer":
        from torch.nn.modules import module as module_hooks

        self._handles = [
            module_hooks.register_module_forward_pre_hook(self._pre),
            module_hooks.register_module_forward_hook(self._post),
        ]
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._mode.__exit__(*exc)
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles = []

    # ---- operators
    def dispatch(self, mode: _Dispatch, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        info = _info(func)
        if info.metadata:
            return NotImplemented
        out = None
        if info.rule is not None and self.fast_meta and not self.backward:
            out = info.rule(args, kwargs)
        if out is None:
            if info.decomposable:
                with mode:
                    decomposed = func.decompose(*args, **kwargs)
                if decomposed is not NotImplemented:
                    return decomposed
            out = func(*args, **kwargs)
        if info.formula is not None:
            self._count(info.name, int(info.formula(*args, **kwargs, out_val=out)))
        elif info.arithmetic:
            self.uncounted[info.name] += 1
        return out

    def _count(self, name: str, flops: int) -> None:
        if self.backward:
            self.backward_flops_by_op[name] += flops
            return
        self.flops_by_op[name] += flops
        if self.stack:
            self.stack[-1].own_flops += flops

    # ---- results
    @property
    def total_flops(self) -> int:
        return sum(self.flops_by_op.values())

    @property
    def backward_flops(self) -> int:
        return sum(self.backward_flops_by_op.values())

    def failed_call(self) -> Call | None:
        """The innermost module that started but did not finish."""
        return self.stack[-1] if self.stack else None


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def shapes_of(args: tuple[Any, ...]) -> list[list[int]]:
    """The shapes of the tensors among `args`."""
    found: list[list[int]] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            found.append(list(a.shape))
        elif isinstance(a, (list, tuple)):
            found.extend(shapes_of(tuple(a)))
    return found


# --------------------------------------------------------------------------- failures

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


def _fmt(shape: list[int]) -> str:
    return "×".join(str(s) for s in shape)


def explain_failure(tracer: Tracer | None, error: BaseException, *, model: str, input_shape: list[int]) -> "Exception":
    """Turn an exception from a forward pass into a ForwardError naming the layer."""
    from .errors import ForwardError, InputTooSmallError

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
    got_text = f"got input {', '.join(_fmt(s) for s in got)}" if got else ""
    if "more than 1 value per channel" in reason:
        return InputTooSmallError(
            f"{model} in train mode: {where} {got_text or 'got its input'}, and BatchNorm needs more than one value "
            "per channel to compute batch statistics; use a batch of 2 or more", layer=layer,
            layer_type=call.type if call else None, input_shapes=got, expected=expected)
    too_small = any(marker in reason.lower() for marker in _TOO_SMALL)
    if too_small:
        message = f"input {_fmt(input_shape[1:])} is too small for {model}: {where} {got_text or 'failed'}"
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
