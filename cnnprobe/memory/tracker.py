"""Tensor memory of one step, counted storage by storage.

Peak memory means one thing everywhere in cnnprobe: the most tensor memory
live at once during a step, counting the storages the step can reach when it
starts (parameters, buffers, gradients, optimizer state, inputs) and every
storage an operator creates while it runs, until it is freed. A
TorchDispatchMode sees every operator's outputs, forward and backward; a
finalizer on each storage sees it freed. Views and in-place results share a
storage and count once.

Each storage carries a category: what it held when the step started, or what
the step was doing when it was made (forward: activations; backward and the
optimizer: temporaries), corrected for the gradients autograd leaves on the
parameters and the state the optimizer keeps. The breakdown is taken at the
moment of the peak, so it sums to the peak.

Unlike `torch.distributed._tools.mem_tracker.MemTracker` it needs no hook on
every parameter's gradient, so frozen parameters are fine, and it can be
entered for any step, so it sees the steady state (the second step onward).
It sees tensors, not allocators: a caching allocator's rounding and kernels'
private workspaces are not in it. With `record_ops`, it notes each operator
call (its shapes, strides and dtypes, and the tensor memory live after it), so
that `workspace` can add what each operator allocates inside itself at the
moment it runs.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn.modules import module as module_hooks
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from ..core.enums import MemoryCategory

CATEGORIES = MemoryCategory.tensors()  # the tensors' kinds: every breakdown's keys but "workspace"
_MADE_IN = {"forward": "activations", "backward": "temporaries", "optimizer": "temporaries", "end": "temporaries"}


@dataclass
class MemoryPeak:
    """The most tensor memory live at once, and what it was."""

    peak_bytes: int
    breakdown: dict[str, int]  # category -> bytes at the peak; sums to peak_bytes
    start_bytes: int  # live when the step started
    end_bytes: int  # live when it ended
    saved_by_module: dict[str, int] = field(default_factory=dict)  # activations live when backward began, by maker
    ops: list["OpRecord"] = field(default_factory=list, repr=False)  # with record_ops: every operator call, in order
    tensor_peak_bytes: int | None = None  # set where peak_bytes is more than tensors (operators' workspaces)


@dataclass(frozen=True)
class TensorSpec:
    """What an operator needs to know of a tensor argument to run again on a real one."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype

    @classmethod
    def of(cls, t: torch.Tensor) -> "TensorSpec":
        return cls(tuple(t.shape), tuple(t.stride()), t.dtype)

    @property
    def nbytes(self) -> int:
        if any(n == 0 for n in self.shape):
            return 0
        return (1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride))) * self.dtype.itemsize


@dataclass(frozen=True)
class OpRecord:
    """One operator call of the step: what it was called with, and where in the count it returned."""

    func: Any  # the OpOverload
    args: Any  # its (args, kwargs), every tensor a TensorSpec
    live_bytes: int  # tensor memory live just after it returned
    made_bytes: int = 0  # what its outputs added (new storages)
    phase: str = "unmarked"  # the step's phase when it ran: "forward", "backward", "optimizer", "end"

    @property
    def key(self) -> str:
        return f"{self.func}{self.args!r}"


class MemoryTracker(TorchDispatchMode):
    """Counts the storages of one step. `held` names what is live before it starts, by category.

    The step tells the tracker where it is with `phase("forward" | "backward" | "optimizer" | "end")`.
    When the backward pass is over, the gradients of `params` are marked as such, and at the end the
    state of `optimizer`.
    """

    def __init__(self, held: Mapping[str, Iterable[Any]], *, params: Iterable[torch.nn.Parameter] = (),
                 optimizer: torch.optim.Optimizer | None = None, round_to: int = 1,
                 model: torch.nn.Module | None = None, record_ops: bool = False) -> None:
        """`round_to` counts each storage as its allocator would hand it out (CUDA's caching allocator: 512
        bytes); with `model`, each storage made in the forward pass is credited to the module running;
        with `record_ops`, every operator call is noted (see `OpRecord`)."""
        super().__init__()
        self._ops: list[OpRecord] | None = [] if record_ops else None
        self._params = list(params)
        self._optimizer = optimizer
        self._round = round_to
        self._modules = ModuleStack(model) if model is not None else None
        self._owner: dict[int, str] = {}  # serial -> the module that made it
        self._saved: dict[str, int] = {}
        self._serial: dict[int, int] = {}  # id() of a live storage -> its serial number (ids are reused)
        self._size: dict[int, int] = {}  # serial -> bytes, for live storages
        self._kind: dict[int, str] = {}  # serial -> category, kept after the storage dies
        self._finalizers: dict[int, weakref.finalize] = {}
        self._events: list[tuple[int, int]] = []  # (serial, +bytes or -bytes), in order
        self._live = 0
        self._peak = 0
        self._peak_at = 0  # number of events when the peak was reached
        self._phase = "forward"
        for category, tensors in held.items():
            for t in tensors:
                self._add(t, category)
        self._start = self._live
        self._peak_at = len(self._events)
        self._peak = self._live

    # ---- what the step tells us
    def phase(self, name: str) -> None:
        if name == "backward" and self._phase != "backward":  # what autograd saved is what is live now
            for serial, size in self._size.items():
                if self._kind[serial] == "activations":
                    owner = self._owner.get(serial, "")
                    self._saved[owner] = self._saved.get(owner, 0) + size
        if self._phase == "backward" and name != "backward":
            self.gradients(self._params)
        if name == "end":
            self.optimizer_state(self._optimizer)
        self._phase = name

    def mark(self, category: str, tensors: Iterable[Any]) -> None:
        """Re-label live storages (a gradient is made in the backward pass, but it is a gradient)."""
        for t in tensors:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                serial = self._serial.get(id(t.untyped_storage()))
                if serial is not None:
                    self._kind[serial] = category

    def gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        self.mark("gradients", (p.grad for p in params if p.grad is not None))

    def optimizer_state(self, optimizer: torch.optim.Optimizer | None) -> None:
        if optimizer is not None:
            self.mark("optimizer_state", (v for s in optimizer.state.values() for v in s.values()
                                          if isinstance(v, torch.Tensor)))

    # ---- counting
    def _add(self, t: Any, category: str) -> None:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta" or t.is_sparse:
            return
        storage = t.untyped_storage()
        size = storage.nbytes()
        if self._round > 1 and size:
            size = self._round * math.ceil(size / self._round)
        serial = self._serial.get(id(storage))
        if serial is not None:
            if size != self._size[serial]:  # resized in place
                self._record(serial, size - self._size[serial])
                self._size[serial] = size
            return
        serial = len(self._kind)
        self._serial[id(storage)] = serial
        self._size[serial] = size
        self._kind[serial] = category
        if self._modules is not None and self._modules.stack:
            self._owner[serial] = self._modules.stack[-1]
        self._finalizers[serial] = weakref.finalize(storage, self._freed, id(storage), serial)
        self._record(serial, size)

    def _freed(self, ident: int, serial: int) -> None:
        if self._serial.get(ident) == serial:
            del self._serial[ident]
        self._finalizers.pop(serial, None)
        size = self._size.pop(serial, None)
        if size is not None:
            self._record(serial, -size)

    def _record(self, key: int, delta: int) -> None:
        self._events.append((key, delta))
        self._live += delta
        if self._live > self._peak:
            self._peak = self._live
            self._peak_at = len(self._events)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        before = self._live
        out = func(*args, **(kwargs or {}))
        category = _MADE_IN.get(self._phase, "temporaries")
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._add(t, category)
        if self._ops is not None:  # specs, not the tensors: holding them would keep storages alive
            spec = tree_map(lambda a: TensorSpec.of(a) if isinstance(a, torch.Tensor) else a, (args, kwargs or {}))
            self._ops.append(OpRecord(func, spec, self._live, self._live - before, self._phase))
        return out

    def close(self) -> None:
        """Stop watching the storages that outlive the step."""
        for f in list(self._finalizers.values()):
            f.detach()
        self._finalizers.clear()

    # ---- the answer
    def result(self) -> MemoryPeak:
        sizes: dict[int, int] = {}
        for serial, delta in self._events[: self._peak_at]:
            sizes[serial] = sizes.get(serial, 0) + delta
        breakdown = dict.fromkeys(CATEGORIES, 0)
        for serial, size in sizes.items():
            breakdown[self._kind[serial]] += size
        return MemoryPeak(self._peak, breakdown, self._start, self._live, dict(self._saved), list(self._ops or []))

    def __enter__(self) -> "MemoryTracker":
        if self._modules is not None:
            self._modules.__enter__()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            if self._modules is not None:
                self._modules.__exit__()


class ModuleStack:
    """The names of the modules running now, innermost last, from global forward hooks."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.names = {id(m): n for n, m in model.named_modules()}
        self.stack: list[str] = []
        self._handles: list[Any] = []

    def _pre(self, module: torch.nn.Module, args: Any) -> None:
        name = self.names.get(id(module))
        if name is not None:
            self.stack.append(name)

    def _post(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        name = self.names.get(id(module))
        if name is not None and name in self.stack:
            while self.stack.pop() != name:
                pass

    def __enter__(self) -> "ModuleStack":
        self._handles = [module_hooks.register_module_forward_pre_hook(self._pre),
                         module_hooks.register_module_forward_hook(self._post)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
