"""Answers on fake tensors for the operators whose output size depends on tensor values.

A fake tensor, like a meta one, has no values, so a detection model's step
stops at its first `nonzero`, `nms` or `.item()`. Entered inside the
FakeTensorMode, this mode gives those operators the tracer's answers
(`trace.datadependent`): every candidate is kept up to the model's caps (RPN
`pre/post_nms_top_n`, the RoI sampler's `batch_size_per_image`,
`detections_per_img`), so the step runs and its peak is the most the model
can hold at that input. A real step on random weights keeps fewer candidates,
so the prediction is an upper bound.

Only what fake tensors cannot answer is stood in for: `.item()` of a tensor
made from Python numbers still has its value (the fake mode keeps constants:
the transform's resize scale), and the one random draw torchvision reads in
Python, the transform's `torch_choice` of a training size (`uniform_(0, n)`
then `int(...)`), answers the low end of its range: the first of `min_size`,
which for every torchvision model is its only one.

A mask the step builds itself is followed, so that a selection of it keeps
what was set rather than every element: zeros set at k indices (the RoI and
anchor samplers' `mask[sampled] = 1`) have at most k nonzero elements, and
their `|` and concatenation add up. Their `nonzero`/`where` then return at most
that many, the sampler's own batch (RPN's 256 anchors, the box head's 512
RoIs), as a real step does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary

from ..trace import datadependent

aten = torch.ops.aten

NOTE = ("fake tensors hold no values: data-dependent selections keep every candidate up to the model's caps "
        "(answered: {ops}), so this is an upper bound on a real step's peak")

_LABELS = {"index": "boolean masks", "index_put": "boolean masks", "index_put_": "boolean masks"}


_OR = {aten.bitwise_or.Tensor, aten.logical_or.default}
_MAKES = {aten.zeros_like.default, aten.zeros.default, aten.new_zeros.default, aten.index_put_.default,
          aten.index_put.default, aten.cat.default, aten.bitwise_and.Tensor, aten.logical_and.default, *_OR}
_SELECTIONS = {  # where `x` has at most n nonzero elements
    aten.nonzero.default: lambda x, n: x.new_empty((n, x.dim()), dtype=torch.long),
    aten.where.default: lambda x, n: [x.new_empty((n,), dtype=torch.long) for _ in range(max(1, x.dim()))],
}


class Answering(TorchDispatchMode):
    """Answers data-dependent operators on fake tensors; entered inside a FakeTensorMode (below the tracker, so
    the tracker counts what the answers return)."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: set[str] = set()  # the operators answered, as a reader knows them
        self._drawn: Any = WeakIdKeyDictionary()  # tensor filled by uniform_ -> the low end of its range
        self._set: Any = WeakIdKeyDictionary()  # a mask the step built -> at most how many elements are nonzero

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is aten.uniform_.default:
            out = func(*args, **kwargs)
            self._drawn[out] = float(args[1] if len(args) > 1 else kwargs.get("from", 0.0))
            return out
        if func is aten._local_scalar_dense.default:
            if args[0] in self._drawn:
                return self._drawn[args[0]]
            try:
                return func(*args, **kwargs)  # a constant: the fake mode knows its value
            except (DataDependentOutputException, DynamicOutputShapeException):
                pass
        if func in _SELECTIONS and args and args[0] in self._set:
            self.answered.add("nonzero")
            return _SELECTIONS[func](args[0], min(args[0].numel(), self._set[args[0]]))
        if func in _MAKES:
            out = func(*args, **kwargs)
            self._follow(func, args, out)
            return out
        out = datadependent.answer(func, args, kwargs, fake=True)
        if out is None:
            return func(*args, **kwargs)
        name = func.name().split("::")[-1].split(".")[0]
        self.answered.add(_LABELS.get(name, datadependent.LABELS.get(name, name)))
        return out

    def _follow(self, func: Any, args: tuple[Any, ...], out: Any) -> None:
        """How many elements of `out` can be nonzero, where the step built it from zeros."""
        bound: int | None = None
        if func in (aten.zeros_like.default, aten.zeros.default, aten.new_zeros.default):
            bound = 0
        elif func in (aten.index_put_.default, aten.index_put.default):
            indices = [i for i in args[1] if isinstance(i, torch.Tensor)]
            if args[0] in self._set and len(indices) == 1 and indices[0].dtype is torch.long:
                per_row = args[0].numel() // max(1, args[0].shape[0]) if args[0].dim() else 1
                bound = self._set[args[0]] + indices[0].numel() * per_row
        elif func is aten.cat.default:
            if all(t in self._set for t in args[0]):
                bound = sum(self._set[t] for t in args[0])
        elif all(isinstance(t, torch.Tensor) and t in self._set for t in args[:2]):  # | and &
            a, b = self._set[args[0]], self._set[args[1]]
            bound = a + b if func in _OR else min(a, b)
        if bound is not None and isinstance(out, torch.Tensor):
            self._set[out] = min(bound, out.numel())

    def note(self) -> str | None:
        """What the prediction assumed, where any operator was answered."""
        return NOTE.format(ops=", ".join(sorted(self.answered))) if self.answered else None
