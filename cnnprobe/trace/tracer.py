"""One pass over the model: every module call, its output shape and its FLOPs.

A TorchDispatchMode sees every aten operator. Operators with a formula in
`formulas.FORMULAS` (convolutions, matrix products, attention: torch's
formulas, corrected where they are wrong) are counted with that formula and attributed to the innermost module running;
every other operator with arithmetic is recorded as *not counted*, never
silently dropped. Global module hooks keep the stack of running modules, so a
failing forward pass names the layer it failed in. Operators whose output
size depends on tensor values (nonzero, nms, unique, item) are answered on
meta by `datadependent`, so a detection model runs there too, to its caps.

On meta tensors some shape-trivial operators (BatchNorm, activations,
same-shape elementwise arithmetic) are answered by `shaperules` directly:
torch runs their meta kernels through Python reference implementations that
cost milliseconds each, and their outputs are plainly shaped like their inputs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as module_hooks
from torch.utils._python_dispatch import TorchDispatchMode

from ..core.formatting import macs
from . import datadependent
from .formulas import FORMULAS, SEPARATE
from .shaperules import RULES
from .spans import call_name, tensors_in

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
    "where", "split_copy", "unbind_copy", "slice_copy", "select_copy", "_reshape_copy",
    "native_dropout", "bernoulli", "bernoulli_", "copy", "_assert_tensor_metadata", "sym_size", "sym_numel",
    "sym_stride", "sym_storage_offset", "_has_compatible_shallow_copy_type",
    # selections and scatters (see `datadependent` for their answers on meta), and nearest-neighbour resizing
    "nonzero", "nonzero_numpy", "argwhere", "masked_select", "index_put", "index_put_", "_unique2", "_unique",
    "unique_dim", "unique_consecutive", "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d",
    "_upsample_nearest_exact1d", "_upsample_nearest_exact2d", "_upsample_nearest_exact3d",
}
_METADATA = {
    aten.is_contiguous.default, aten.is_contiguous.memory_format, aten.is_strides_like_format.default,
    aten.is_non_overlapping_and_dense.default, aten.size.default, aten.sym_size.default, aten.stride.default,
    aten.sym_stride.default, aten.storage_offset.default, aten.sym_storage_offset.default, aten.numel.default,
    aten.sym_numel.default, aten.dim.default, torch.ops.prim.layout.default,
}


@dataclass(frozen=True)
class _OpInfo:
    """What the tracer needs to know about one operator overload, computed once."""

    name: str
    formula: Any
    decomposable: bool
    arithmetic: bool
    metadata: bool
    rule: Any
    bounded: bool  # data-dependent: on meta, `datadependent` answers it
    separate: bool  # its formula's MACs are kept apart from the total (torchvision's `_ops` leaves them out)


_INFO: dict[Any, _OpInfo] = {}


def _info(func: Any) -> _OpInfo:
    info = _INFO.get(func)
    if info is None:
        packet = getattr(func, "_overloadpacket", None)
        name = packet.__name__ if packet is not None else str(func)
        separate = packet is not None and packet in SEPARATE
        formula = (SEPARATE.get(packet) or FORMULAS.get(packet)) if packet is not None else None
        key = torch._C.DispatchKey.CompositeImplicitAutograd
        bounded = func in datadependent.ANSWERS
        decomposable = formula is None and not bounded and func is not torch.ops.prim.device.default and (
            key in getattr(func, "py_kernels", {})
            or (hasattr(func, "name") and torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), key))
        )
        info = _OpInfo(name, formula, decomposable, name not in _NO_ARITHMETIC, func in _METADATA,
                       RULES.get(func), bounded, separate)
        _INFO[func] = info
    return info


@dataclass
class Call:
    """One call of one module during the pass."""

    name: str  # the module's path, as the caller knows it (a module shared by two parents has two)
    type: str
    depth: int  # how deeply calls nest: 1 for a module the model's forward calls, 0 for the model
    module: nn.Module = field(repr=False)
    args: tuple[Any, ...] = field(default=(), repr=False)
    parent: "Call | None" = field(default=None, repr=False)
    index: int = 1  # this is the module's index-th call in the pass
    own_flops: int = 0
    flops: int = 0  # inclusive of the modules it calls
    output_shape: list[int] | None = None
    output_bytes: int = 0  # of every tensor it returned
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

    def __init__(self, model: nn.Module, *, fast_meta: bool = True, data_dependent: bool = True) -> None:
        self.fast_meta = fast_meta
        self.data_dependent = data_dependent  # answer value-dependent operators on meta (`datadependent`)
        self.aliases: dict[int, list[str]] = {}  # every path a module is registered under, first first
        for name, m in model.named_modules(remove_duplicate=False):
            self.aliases.setdefault(id(m), []).append(name)
        self.names = {key: paths[0] for key, paths in self.aliases.items()}
        self.times_called: dict[int, int] = {}
        self.calls: list[Call] = []
        self.stack: list[Call] = []
        self.flops_by_op: Counter[str] = Counter()
        self.separate_flops_by_op: Counter[str] = Counter()  # formulas kept out of the total: see formulas.SEPARATE
        self.uncounted: Counter[str] = Counter()
        self.bounded: Counter[str] = Counter()  # data-dependent operators answered on meta, with calls
        self.backward = False
        self.backward_flops_by_op: Counter[str] = Counter()
        self.separate_backward_flops_by_op: Counter[str] = Counter()
        self._handles: list[Any] = []
        self._mode = _Dispatch(self)

    # ---- module stack
    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        aliases = self.aliases.get(id(module))
        if aliases is None:
            return
        parent = self.stack[-1] if self.stack else None
        name = call_name(aliases, parent.name if parent is not None else None)  # shared: the path under its caller
        self.times_called[id(module)] = self.times_called.get(id(module), 0) + 1
        call = Call(name, type(module).__name__, parent.depth + 1 if parent is not None else 0, module, args,
                    parent, self.times_called[id(module)])
        self.calls.append(call)
        self.stack.append(call)

    def _post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if id(module) not in self.aliases or not any(c.module is module for c in self.stack):
            return
        while self.stack[-1].module is not module:  # callees whose exception the caller caught
            self.stack.pop()
        call = self.stack.pop()
        call.flops += call.own_flops
        call.args = ()
        call.done = True
        tensors = tensors_in(output)
        call.output_shape = list(tensors[0].shape) if tensors else None
        call.output_bytes = sum(t.numel() * t.element_size() for t in tensors)
        if self.stack:
            self.stack[-1].flops += call.flops

    def __enter__(self) -> "Tracer":
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
        if info.bounded and self.data_dependent:
            out = datadependent.answer(func, args, kwargs)
            if out is not None:
                self.bounded[info.name] += 1
        if out is None and info.rule is not None and self.fast_meta and not self.backward:
            out = info.rule(args, kwargs)
        if out is None:
            if info.decomposable:
                with mode:
                    decomposed = func.decompose(*args, **kwargs)
                if decomposed is not NotImplemented:
                    return decomposed
            out = func(*args, **kwargs)
        flops = 0
        if info.formula is not None:
            flops = int(info.formula(*args, **kwargs, out_val=out))
            if info.separate:
                (self.separate_backward_flops_by_op if self.backward else self.separate_flops_by_op)[info.name] += flops
            else:
                self._count(info.name, flops)
        elif info.arithmetic:
            self.uncounted[info.name] += 1
        self.ran(func, info, args, kwargs, out, flops)
        return out

    def ran(self, func: Any, info: _OpInfo, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any,
            flops: int) -> None:
        """Told once for each operator that ran (a kernel, a shape rule or a data-dependent answer), with its
        FLOPs by formula (0 without one); never for a composite that was decomposed, whose parts are told
        instead. A hook for counters that read every operator (`trace/costs`); the Tracer itself ignores it."""

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

    def notes(self) -> list[str]:
        """What a reader of this pass's figures must know: selections answered on meta, and the MACs counted
        apart from the total."""
        notes = []
        if self.bounded:
            answered = sorted({datadependent.LABELS.get(op, op) for op in self.bounded})
            notes.append(f"{datadependent.NOTE} (answered on meta: {', '.join(answered)})")
        if self.separate_flops_by_op:
            listed = ", ".join(f"{op} {macs(f // 2)}" for op, f in self.separate_flops_by_op.most_common())
            notes.append(f"MACs counted apart from the total, as torchvision's `_ops` leaves them out: {listed}")
        return notes

    def failed_call(self) -> Call | None:
        """The innermost module that started but did not finish."""
        return self.stack[-1] if self.stack else None
