"""What each module call costs in one step, forward and backward: MACs and bytes moved, operator by operator.

`CostCounter` runs around any callable step (on meta, where nothing is computed, or on the device the step runs
on, as `profile` counts it) and
adds every aten operator's MACs and bytes to the innermost module span open when it ran (`trace/spans`),
forward or backward; an operator outside every span goes to the step's phase ("forward", "backward",
"optimizer", as the step reports them through `marks.phase`). It reads the operators through the Tracer's own
dispatch (its formulas, decompositions and answers on meta), so each operator that really ran is counted once
and a decomposed composite never twice.

- MACs: the Tracer's formulas (FLOPs = 2 × MACs), the convolutions, matrix products and attention that `flops`
  counts, and nothing else; operators `flops` counts apart (RoIAlign, interpolation: `formulas.SEPARATE`) are
  left out, so that the totals are `flops`' totals. Backward MACs are those of the operators autograd really
  runs: a frozen layer has no weight gradient, a layer before the first trainable one no backward at all.
- Bytes: an unfused count, what each operator's kernel would read from and write to memory if nothing stayed
  in cache between kernels (see `operator_bytes`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .spans import BACKWARD, FORWARD, Span, Spans
from .tracer import Tracer, _OpInfo

UNMARKED = "unmarked"  # the phase of operators run before the step reports one

# Operators that move no data: views and metadata (a new shape, strides or offset over the same storage), and
# allocations that write nothing. Their kernels read and write no element. Copies (clone, copy_, _to_copy,
# contiguous, cat, ...) and in-place operators do move data and are counted.
ZERO_BYTES = frozenset({
    "view", "_unsafe_view", "view_as", "reshape", "_reshape_alias", "reshape_as", "permute", "transpose",
    "transpose_", "t", "t_", "expand", "expand_as", "squeeze", "squeeze_", "unsqueeze", "unsqueeze_", "select",
    "slice", "narrow", "as_strided", "as_strided_", "alias", "detach", "detach_", "split", "split_with_sizes",
    "unbind", "chunk", "tensor_split", "unfold", "diagonal", "movedim", "swapaxes", "view_as_real",
    "view_as_complex", "_conj", "_neg_view", "real", "imag", "lift_fresh", "empty", "empty_like",
    "empty_strided", "new_empty", "new_empty_strided", "resize_", "set_", "_local_scalar_dense",
    "_assert_tensor_metadata", "sym_size", "sym_numel", "sym_stride", "sym_storage_offset", "device",
    "_has_compatible_shallow_copy_type", "is_same_size", "_has_same_storage_numel",
})
# In-place operators that only write their first argument: it is not read.
WRITE_ONLY = frozenset({"copy_", "fill_", "zero_", "normal_", "uniform_", "random_", "bernoulli_", "exponential_"})


def tensor_bytes(t: torch.Tensor) -> int:
    """The bytes a kernel reads or writes of `t`: its elements, but a storage at most once (an expanded or
    broadcast tensor repeats elements of a smaller storage; a slice touches only its own elements)."""
    size = t.numel() * t.element_size()
    try:
        return min(size, t.untyped_storage().nbytes())
    except (RuntimeError, NotImplementedError):  # no storage (sparse, nested): its elements
        return size


def _flat(value: Any, found: dict[int, torch.Tensor]) -> None:
    if isinstance(value, torch.Tensor):
        found.setdefault(id(value), value)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _flat(item, found)
    elif isinstance(value, dict):
        for item in value.values():
            _flat(item, found)


def operator_bytes(func: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    """Bytes one operator moves, unfused: each distinct tensor it reads (tensor arguments, those in lists,
    keywords) plus each distinct tensor it writes (its outputs and the arguments its schema says it mutates),
    each `tensor_bytes` (a tensor passed twice is read once; two views of one storage are two reads). An in-place
    operator (`relu_`, `add_`) reads and writes its argument: both count. A destination that is only written (`out=`,
    `copy_`'s, `fill_`'s, `zero_`'s first argument) is not read. Views and metadata (`ZERO_BYTES`) move 0."""
    if name in ZERO_BYTES:
        return 0
    reads: dict[int, torch.Tensor] = {}
    writes: dict[int, torch.Tensor] = {}
    schema = getattr(func, "_schema", None)
    arguments = schema.arguments if schema is not None else []
    by_name = dict(kwargs)
    for i, value in enumerate(args):
        key = arguments[i].name if i < len(arguments) else f"#{i}"
        by_name[key] = value
    written = {a.name for a in arguments if a.alias_info is not None and a.alias_info.is_write}
    only_written = {a.name for a in arguments if a.is_out}
    if name in WRITE_ONLY and arguments:
        only_written.add(arguments[0].name)
    for key, value in by_name.items():
        _flat(value, writes if key in written else {})
        if key not in only_written:
            _flat(value, reads)
    _flat(out, writes)
    return sum(tensor_bytes(t) for t in reads.values()) + sum(tensor_bytes(t) for t in writes.values())


@dataclass
class Cost:
    """MACs and bytes, forward and backward (FLOPs = 2 × MACs)."""

    forward_macs: int = 0
    backward_macs: int = 0
    forward_bytes: int = 0
    backward_bytes: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.forward_macs + other.forward_macs, self.backward_macs + other.backward_macs,
                    self.forward_bytes + other.forward_bytes, self.backward_bytes + other.backward_bytes)

    @property
    def macs(self) -> int:
        return self.forward_macs + self.backward_macs

    @property
    def bytes(self) -> int:
        return self.forward_bytes + self.backward_bytes


@dataclass
class PhaseCost:
    """MACs and bytes of operators outside every module span, in one phase of the step."""

    macs: int = 0
    bytes: int = 0

    def __add__(self, other: "PhaseCost") -> "PhaseCost":
        return PhaseCost(self.macs + other.macs, self.bytes + other.bytes)


@dataclass(eq=False)
class SpanCost:
    """One module call: `own` is what ran while it was the innermost open span, `total` adds its callees'."""

    span: Span
    own: Cost
    total: Cost
    children: list["SpanCost"] = field(default_factory=list, repr=False)

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def depth(self) -> int:
        return self.span.depth

    def walk(self) -> Iterator["SpanCost"]:
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass
class StepCosts:
    """The costs of the steps counted: each model call's span tree, what ran outside them by phase, and every
    operator the counter saw (`seen`), which the spans and the phases add up to."""

    roots: list[SpanCost]
    phases: dict[str, PhaseCost]
    seen: PhaseCost
    bytes_by_op: dict[str, int] = field(default_factory=dict)

    def walk(self) -> Iterator[SpanCost]:
        for root in self.roots:
            yield from root.walk()

    def by_name(self, depth: int | None = None) -> dict[str, Cost]:
        """Inclusive costs by module path (calls of one module added up), at `depth` only if given, in the
        order the modules were first called."""
        out: dict[str, Cost] = {}
        for s in self.walk():
            if depth is None or s.depth == depth:
                out[s.name] = out.get(s.name, Cost()) + s.total
        return out

    def uncovered(self, depth: int) -> dict[str, Cost]:
        """What the modules shallower than `depth` ran themselves, by path (a residual add in a block's forward):
        with `by_name(depth)` and the phases it partitions the step."""
        out: dict[str, Cost] = {}
        for s in self.walk():
            if s.depth < depth:
                out[s.name] = out.get(s.name, Cost()) + s.own
        return out

    def spans_total(self) -> Cost:
        total = Cost()
        for root in self.roots:
            total = total + root.total
        return total

    def total(self) -> PhaseCost:
        """MACs and bytes of the spans and the phases together: `seen`, as nothing is dropped."""
        spans = self.spans_total()
        out = PhaseCost(spans.macs, spans.bytes)
        for phase in self.phases.values():
            out = out + phase
        return out


class _Counting(Tracer):
    """The Tracer's dispatch, telling the counter each operator that ran."""

    def __init__(self, model: nn.Module, counter: "CostCounter", **options: Any) -> None:
        super().__init__(model, **options)
        self.counter = counter

    def ran(self, func: Any, info: _OpInfo, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any,
            flops: int) -> None:
        macs = 0 if info.separate else flops // 2
        self.counter.add(info.name, macs, operator_bytes(func, info.name, args, kwargs, out))


class CostCounter:
    """Counts MACs and bytes by module call, forward and backward, around any step; use it as the step's
    `marks` (it takes `phase(name)`) so that what runs outside the model is bucketed by phase. `max_depth`:
    calls deeper are not followed, their operators count in the deepest followed caller's own.

    The Tracer's shape rules are off (as `flops` counts the backward): they answer BatchNorm with empty saved
    statistics, which would change its bytes; the real meta kernels give the outputs that really run."""

    def __init__(self, model: nn.Module, *, max_depth: int | None = None, data_dependent: bool = True) -> None:
        self.tracer = _Counting(model, self, fast_meta=False, data_dependent=data_dependent)
        self.spans = Spans(model, self, max_depth=max_depth)
        self.current = UNMARKED
        self._open: list[tuple[Span, str]] = []
        self._own: dict[int, tuple[Span, Cost]] = {}
        self._phases: dict[str, PhaseCost] = {}
        self._seen = PhaseCost()
        self._bytes_by_op: Counter[str] = Counter()

    def __enter__(self) -> "CostCounter":
        self.spans.__enter__()
        try:
            self.tracer.__enter__()
        except BaseException:
            self.spans.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.tracer.__exit__(*exc)
        finally:
            self.spans.__exit__(*exc)
            self._open = []

    # ---- what the step and the spans tell
    def phase(self, name: str) -> None:
        self.current = name
        self.tracer.backward = name == "backward"  # the Tracer's own FLOP tallies, forward and backward

    def begin(self, span: Span, direction: str) -> None:
        self._open.append((span, direction))

    def end(self, span: Span, direction: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] is span and self._open[i][1] == direction:
                del self._open[i]
                return

    def add(self, op: str, macs: int, nbytes: int) -> None:
        """One operator's MACs and bytes, to the innermost open span, or else to the current phase."""
        self._seen = self._seen + PhaseCost(macs, nbytes)
        self._bytes_by_op[op] += nbytes
        if not self._open:
            self._phases[self.current] = self._phases.get(self.current, PhaseCost()) + PhaseCost(macs, nbytes)
            return
        span, direction = self._open[-1]
        cost = self._own.setdefault(id(span), (span, Cost()))[1]
        if direction == FORWARD:
            cost.forward_macs += macs
            cost.forward_bytes += nbytes
        elif direction == BACKWARD:
            cost.backward_macs += macs
            cost.backward_bytes += nbytes

    # ---- the result
    def costs(self) -> StepCosts:
        """Every span counted so far with its own and inclusive costs, and the phases' buckets."""
        return StepCosts([self._tree(root) for root in self.spans.roots], dict(self._phases), self._seen,
                         dict(self._bytes_by_op.most_common()))

    def _tree(self, span: Span) -> SpanCost:
        entry = self._own.get(id(span))
        own = Cost() if entry is None else Cost(**vars(entry[1]))
        children = [self._tree(child) for child in span.children]
        total = own
        for child in children:
            total = total + child.total
        return SpanCost(span, own, total, children)
