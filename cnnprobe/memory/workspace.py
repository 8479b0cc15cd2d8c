"""What each operator allocates inside itself beyond its outputs, measured once per call shape, cached.

A kernel's private allocations (oneDNN's weight reorders and scratchpads, a
backward kernel's temporaries) are never a tensor, so no count of tensors sees
them, yet the allocator holds them while the operator runs: the step's peak is
at some operator's transient, live tensors + its outputs + its workspace.

Each distinct call of a predicted step (operator, argument shapes, strides,
dtypes and values) runs once for real on the CPU, on uninitialised inputs of
its own (integers are zeros, so indices are in range), inside one profiler
session: its workspace is the allocator's peak during the call minus what the
call still holds when it returns (its outputs). Figures are cached per machine,
thread count, torch release and this file's code, like the FLOP/s peak. A call
too large to run here is measured at a smaller batch, twice, and the line
through them extrapolated; calibration stops at a time limit, and what it
did not measure counts as none, said in a note.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils._pytree import tree_leaves, tree_map

from ..core import cache
from ..training.devices import device_name
from . import allocator
from .tracker import MemoryPeak, OpRecord, TensorSpec

CACHE = "workspaces.json"
CALL_LIMIT = 32 * 2**20  # inputs a call is measured with; larger ones at two smaller batches (half of this)
WEIGHT_LIMIT = 128 * 2**20  # a call large by its weights, not its batch, is measured as it is up to this
TIME_LIMIT_S = 120.0  # calibration time per prediction
_CODE = hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:12]
# Calls that only make views or metadata: nothing allocated to measure.
_NO_ALLOCATION = {"aten.view", "aten._unsafe_view", "aten.t", "aten.transpose", "aten.permute", "aten.expand",
                  "aten.unsqueeze", "aten.squeeze", "aten.select", "aten.slice", "aten.alias", "aten.detach",
                  "aten.as_strided", "aten.split", "aten.split_with_sizes", "aten.unbind", "aten.chunk",
                  "aten.is_same_size", "aten.sym_size", "aten.sym_stride", "aten.sym_numel"}


@dataclass
class Calibration:
    """Workspace bytes by call key, and what could not be measured."""

    workspace: dict[str, int] = field(default_factory=dict)
    measured: int = 0  # calls measured now (the rest came from the cache)
    extrapolated: int = 0  # calls measured at a smaller batch
    unmeasured: int = 0  # calls that failed, were too large or past the time limit: counted as no workspace
    seconds: float = 0.0

    def notes(self) -> list[str]:
        if not self.unmeasured:
            return []
        return [f"{self.unmeasured} operator call{'s' if self.unmeasured != 1 else ''} could not be calibrated "
                "(they failed on uninitialised inputs, were too large to run here, or time ran out): their workspace "
                "is not in the prediction"]


def _allocates_inside(func: Any) -> bool:
    """False for calls known to allocate nothing beyond their outputs: views, and pointwise kernels
    (TensorIterator computes them in place, element by element)."""
    if str(func).rsplit(".", 1)[0] in _NO_ALLOCATION:
        return False
    return torch.Tag.pointwise not in getattr(func, "tags", ())


def _real(spec: TensorSpec, zeros: bool = False) -> torch.Tensor:
    """A tensor of the spec's layout: uninitialised floats, zero integers (in range as indices); `zeros`: floats
    too (coordinates torchvision's kernels index with: garbage boxes read out of bounds in roi_align)."""
    if (spec.dtype.is_floating_point or spec.dtype.is_complex) and not zeros:
        return torch.empty_strided(spec.shape, spec.stride, dtype=spec.dtype)
    return torch.zeros(spec.nbytes // spec.dtype.itemsize, dtype=spec.dtype).as_strided(spec.shape, spec.stride)


def _input_bytes(args: Any) -> int:
    return sum(x.nbytes for x in tree_leaves(args) if isinstance(x, TensorSpec))


def _rebatched(args: Any, batch: int, small: int) -> Any:
    """The same call with every tensor whose leading size is `batch` cut to `small`, its dimensions' order
    (by stride) kept."""
    def cut(x: Any) -> Any:
        if not isinstance(x, TensorSpec) or not x.shape or x.shape[0] != batch:
            return x
        shape = (small, *x.shape[1:])
        order = sorted(range(len(shape)), key=lambda d: -x.stride[d])
        stride = [0] * len(shape)
        step = 1
        for d in reversed(order):
            stride[d] = step
            step *= max(shape[d], 1)
        return TensorSpec(shape, tuple(stride), x.dtype)

    def sizes(x: Any) -> Any:  # a size argument led by the batch (select_backward's, new_zeros'): cut too
        if isinstance(x, list) and x and all(type(n) is int for n in x) and x[0] == batch:
            return [small, *x[1:]]
        return x

    def is_sizes(x: Any) -> bool:
        return isinstance(x, list) and bool(x) and all(type(n) is int for n in x)

    return tree_map(cut, tree_map(sizes, args, is_leaf=is_sizes))


def cache_key(call_key: str, threads: int) -> str:
    text = f"{device_name('cpu')}|{threads}|{torch.__version__}|{_CODE}|{call_key}"
    return hashlib.sha1(text.encode()).hexdigest()[:24]


def _plan(op: OpRecord, batch: int, call_limit: int) -> tuple[list[tuple[str, Any]], int]:
    """The calls to measure for `op`: itself, or, when its inputs and outputs are over `call_limit`, the same
    call at two small batches (powers of two, so that every large batch shares them): ([(key, args)], small
    batch or 0). None when it is large by what is not batch (weights, a factory's sizes) beyond WEIGHT_LIMIT."""
    size = _input_bytes(op.args) + op.made_bytes
    if size <= call_limit or batch <= 2:
        return [(op.key, op.args)], 0

    def at(b: int) -> float:  # the call's size at batch b: in proportion, if anything in it is the batch
        return size if _rebatched(op.args, batch, b) == op.args else size * b / batch

    small = 2
    while small * 2 < batch and at(small * 2) <= call_limit // 2:
        small *= 2
    if at(small) > call_limit:  # not the batch that is large: weights, or a factory's sizes
        return ([(op.key, op.args)], 0) if size <= WEIGHT_LIMIT else ([], 0)
    calls = [_rebatched(op.args, batch, b) for b in (small // 2, small)]
    return [(f"{op.func}{args!r}", args) for args in calls], small


def _measure(todo: dict[str, tuple[Any, Any]], deadline: float) -> dict[str, int]:
    """Each call twice, inside one profiler session, on inputs of its own, until `deadline`. The first call may
    fill a kernel's caches (oneDNN's primitives), which a steady-state step finds filled: the lesser of the two
    is what a warm step allocates."""
    owners: list[str | None] = []  # the call each window belongs to; None: a call that failed in it
    with torch.no_grad(), allocator.session() as prof:
        for key, (func, args) in todo.items():
            if time.perf_counter() > deadline:
                break
            zeros = str(func).startswith("torchvision.")
            real_args, real_kwargs = tree_map(lambda x, z=zeros: _real(x, z) if isinstance(x, TensorSpec) else x, args)
            for _ in range(2):
                try:
                    with allocator.window():
                        out = func(*real_args, **real_kwargs)
                except Exception:  # noqa: BLE001 - a call that needs real values, or cannot run here: no figure
                    owners.append(None)
                    break
                del out
                owners.append(key)
            del real_args, real_kwargs
    figures: dict[str, list[int]] = {}
    for owner, w in zip(owners, allocator.windows(prof)):
        if owner is not None:
            figures.setdefault(owner, []).append(max(0, w.peak_bytes - w.net_bytes))
    return {key: min(values) for key, values in figures.items() if len(values) == 2}  # both calls ran


def calibrate(ops: Iterable[OpRecord], batch: int, *, threads: int | None = None,
              time_limit: float = TIME_LIMIT_S, call_limit: int = CALL_LIMIT) -> Calibration:
    """Every distinct call's workspace: cached figures first, the rest measured in one profiler session."""
    threads = threads or torch.get_num_threads()
    start = time.perf_counter()
    plans: dict[str, tuple[Any, list[tuple[str, Any]], int]] = {}
    for op in ops:
        if op.key not in plans and _allocates_inside(op.func):
            plans[op.key] = (op.func, *_plan(op, batch, call_limit))
    cached = cache.load(CACHE)
    figures: dict[str, int] = {}
    todo: dict[str, tuple[Any, Any]] = {}
    for func, calls, _ in plans.values():
        for key, args in calls:
            value = cached.get(cache_key(key, threads))
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                figures[key] = value
            else:
                todo[key] = (func, args)
    result = Calibration()
    if todo:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)  # some kernels' scratchpads are per thread
        try:
            fresh = _measure(todo, start + time_limit)
        finally:
            torch.set_num_threads(before)
        figures.update(fresh)
        result.measured = len(fresh)
        cache.store(CACHE, {cache_key(key, threads): value for key, value in fresh.items()})
    for key, (_, calls, small) in plans.items():
        if not calls or any(k not in figures for k, _ in calls):
            result.unmeasured += 1
        elif not small:
            result.workspace[key] = figures[calls[0][0]]
        else:  # the line through the two small batches, at `batch`
            lo, hi = figures[calls[0][0]], figures[calls[1][0]]
            result.workspace[key] = max(0, round(hi + (hi - lo) / (small - small // 2) * (batch - small)))
            result.extrapolated += 1
    result.seconds = time.perf_counter() - start
    return result


def with_workspace(counted: MemoryPeak, workspace: dict[str, int]) -> MemoryPeak:
    """The allocator's peak of a counted step: the largest of the tensor peak and every call's transient
    (tensors live just after it + its workspace). The breakdown stays the tensors' at their own peak, as
    bench measures it, and `workspace` is what the allocator's peak adds above it."""
    best = counted.peak_bytes
    for op in counted.ops:
        w = workspace.get(op.key, 0)
        if w and op.live_bytes + w > best:
            best = op.live_bytes + w
    return replace(counted, peak_bytes=best, breakdown={**counted.breakdown, "workspace": best - counted.peak_bytes},
                   tensor_peak_bytes=counted.peak_bytes)
