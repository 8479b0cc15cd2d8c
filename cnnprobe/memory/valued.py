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


class Answering(TorchDispatchMode):
    """Answers data-dependent operators on fake tensors; entered inside a FakeTensorMode (below the tracker, so
    the tracker counts what the answers return)."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: set[str] = set()  # the operators answered, as a reader knows them
        self._drawn: Any = WeakIdKeyDictionary()  # tensor filled by uniform_ -> the low end of its range

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
        out = datadependent.answer(func, args, kwargs, fake=True)
        if out is None:
            return func(*args, **kwargs)
        name = func.name().split("::")[-1].split(".")[0]
        self.answered.add(_LABELS.get(name, datadependent.LABELS.get(name, name)))
        return out

    def note(self) -> str | None:
        """What the prediction assumed, where any operator was answered."""
        return NOTE.format(ops=", ".join(sorted(self.answered))) if self.answered else None
