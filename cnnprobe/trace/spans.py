"""Module calls as spans, forward and backward, for whoever listens: the profiler's clock, the cost counter.

Forward: global module hooks open a span when a call starts and close it when it returns.

Backward: a module's backward runs from when the gradient of its output arrives to when the gradients of its
inputs are done. Full backward hooks cannot say that in general: they wrap inputs and outputs in an identity
Function, and a residual `out += identity` or an in-place ReLU on a wrapped output is an error. Autograd's own
nodes can. Every node carries a sequence number taken from one counter when it is created, so the nodes one
call created are exactly those numbered between the counter's value when the call started and when it returned.
The span begins when the first of its output nodes is about to run (a pre-hook) and ends when its
lowest-numbered node has run (a hook): the engine runs ready nodes highest number first and a node's
gradient only flows to lower numbers, so that node runs last of the call's nodes. A call whose outputs have
no node of its own (frozen with inputs that need no gradient, an identity) has no backward: autograd never
runs it. Hooks live on the nodes, so they go with the graph.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.modules import module as module_hooks

FORWARD, BACKWARD = "forward", "backward"


class Listener(Protocol):
    """Told when a span opens and closes; `direction` is FORWARD or BACKWARD."""

    def begin(self, span: "Span", direction: str) -> None: ...

    def end(self, span: "Span", direction: str) -> None: ...


@dataclass(eq=False)
class Span:
    """One call of one module."""

    name: str  # the module's path as its caller knows it (a module registered under two parents has two)
    type: str
    depth: int  # 0 for the model, 1 for what its forward calls, ...
    index: int  # this is the module's index-th call
    parent: "Span | None" = field(default=None, repr=False)
    module: nn.Module | None = field(default=None, repr=False)
    children: list["Span"] = field(default_factory=list, repr=False)
    first_node: int = -1  # the autograd counter when the call began
    has_backward: bool = False  # a node of this call was scheduled: its backward will run
    backward_open: bool = False
    backward_done: bool = False

    def walk(self) -> Iterator["Span"]:
        yield self
        for child in self.children:
            yield from child.walk()


def call_name(aliases: list[str], parent_name: str | None) -> str:
    """A module's path under the caller running it: a module registered twice takes the path under its parent."""
    if parent_name and len(aliases) > 1:
        return next((a for a in aliases if a.startswith(parent_name + ".")), aliases[0])
    return aliases[0]


_SEED = torch.empty(0, requires_grad=True)


def autograd_counter() -> int:
    """The sequence number the next autograd node will take, read off a node made for the purpose (an empty
    view: nothing is computed). -1 where no node is made (gradients off)."""
    node = _SEED.view_as(_SEED).grad_fn
    return node._sequence_nr() if node is not None else -1


def tensors_in(value: Any) -> list[torch.Tensor]:
    """The tensors of a module's output (a tensor, or dicts, lists and tuples of them), in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in tensors_in(item)]
    return []


def output_nodes(value: Any) -> list[Any]:
    """The autograd nodes that made the tensors of a module's output, in order, each once."""
    found: dict[int, Any] = {}
    for t in tensors_in(value):
        if t.grad_fn is not None:
            found.setdefault(id(t.grad_fn), t.grad_fn)
    return list(found.values())


def own_nodes(roots: list[Any], low: int, high: int) -> list[Any]:
    """The nodes numbered in (low, high) that the roots reach: those the call created and its outputs use."""
    seen: set[int] = set()
    out = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        number = node._sequence_nr()
        if not low < number < high:
            continue
        out.append(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return out


class Spans:
    """Every module call of the model, forward and (where it runs) backward, told to `listener` as it happens.

    `max_depth`: calls deeper than this are not followed (None: all). Use as a context manager around one
    or more steps; `roots` holds each model call's span tree."""

    def __init__(self, model: nn.Module, listener: Listener, *, max_depth: int | None = None) -> None:
        self.listener = listener
        self.max_depth = max_depth
        self.aliases: dict[int, list[str]] = {}
        for name, m in model.named_modules(remove_duplicate=False):
            self.aliases.setdefault(id(m), []).append(name)
        self.model = model
        self.calls: dict[int, int] = {}
        self.stack: list[Span] = []
        self.roots: list[Span] = []
        # node id -> (the node, held so that its id is not reused within the step; the spans it opens or closes,
        # innermost first)
        self._begins: dict[int, tuple[Any, list[Span]]] = {}
        self._ends: dict[int, tuple[Any, list[Span]]] = {}
        # time the hooks spent finding each call's nodes, the profiler's own: inside the model's call, and around it
        # (the model's own hooks, which walk its whole graph)
        self.hook_ns = 0
        self.root_hook_ns = 0
        self._handles: list[Any] = []

    def __enter__(self) -> "Spans":
        """Hooks on the modules down to `max_depth` only (a global hook would send every module's call down
        torch's slow path, which costs a small model's step several percent); on every module for the leaves."""
        if self.max_depth is None:
            self._handles = [module_hooks.register_module_forward_pre_hook(self._pre),
                             module_hooks.register_module_forward_hook(self._post)]
            return self
        seen: set[int] = set()
        for name, module in self.model.named_modules(remove_duplicate=False):
            if id(module) in seen or (name.count(".") + 1 if name else 0) > self.max_depth:
                continue
            seen.add(id(module))
            self._handles += [module.register_forward_pre_hook(self._pre),
                              module.register_forward_hook(self._post)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._begins, self._ends, self.stack = {}, {}, []

    def _followed(self, module: nn.Module) -> bool:
        if id(module) not in self.aliases:
            return False
        if module is self.model:
            return True
        return bool(self.stack) and (self.max_depth is None or self.stack[-1].depth < self.max_depth)

    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not self._followed(module):
            return
        parent = self.stack[-1] if self.stack else None
        if parent is None:  # a new call of the model: a new graph, whose node ids are new
            self._begins, self._ends, self.calls = {}, {}, {}
        self.calls[id(module)] = self.calls.get(id(module), 0) + 1
        span = Span(call_name(self.aliases[id(module)], parent.name if parent else None), type(module).__name__,
                    parent.depth + 1 if parent else 0, self.calls[id(module)], parent, module)
        (parent.children if parent else self.roots).append(span)
        self.stack.append(span)
        start = time.perf_counter_ns()
        span.first_node = autograd_counter() if torch.is_grad_enabled() else -1
        self._spent(span, start)
        self.listener.begin(span, FORWARD)

    def _post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not any(s.module is module for s in self.stack):
            return
        while self.stack[-1].module is not module:  # callees whose exception the caller caught
            self.stack.pop()
        span = self.stack.pop()
        self.listener.end(span, FORWARD)
        if span.first_node >= 0 and torch.is_grad_enabled():
            start = time.perf_counter_ns()
            self._watch(span, output, autograd_counter())
            self._spent(span, start)

    def _spent(self, span: Span, start: int) -> None:
        elapsed = time.perf_counter_ns() - start
        if span.depth == 0:
            self.root_hook_ns += elapsed
        else:
            self.hook_ns += elapsed

    def _watch(self, span: Span, output: Any, high: int) -> None:
        roots = [n for n in output_nodes(output) if span.first_node < n._sequence_nr() < high]
        nodes = own_nodes(roots, span.first_node, high)
        if not nodes:
            return
        span.has_backward = True
        for node in roots:
            self._add(node, self._begins, span, pre=True)
        self._add(min(nodes, key=lambda n: n._sequence_nr()), self._ends, span, pre=False)

    def _add(self, node: Any, table: dict[int, tuple[Any, list[Span]]], span: Span, *, pre: bool) -> None:
        entry = table.get(id(node))
        if entry is None:
            entry = table[id(node)] = (node, [])
            spans = entry[1]
            if pre:
                node.register_prehook(lambda grad_outputs: self._open(spans))
            else:
                node.register_hook(lambda grad_inputs, grad_outputs: self._close(spans))
        entry[1].append(span)

    def _open(self, spans: list[Span]) -> None:
        for span in reversed(spans):  # the outermost call's backward begins first
            if not span.backward_open:
                span.backward_open = True
                self.listener.begin(span, BACKWARD)

    def _close(self, spans: list[Span]) -> None:
        for span in spans:  # the innermost call's backward ends first
            if span.backward_open and not span.backward_done:
                span.backward_done = True
                self.listener.end(span, BACKWARD)


def frontier(root: Span, depth: int) -> list[Span]:
    """The calls that partition `root` at `depth`: those at that depth, and shallower ones that call nothing
    (a model's top-level conv1 at depth 2); `depth` -1 is the leaves. Every module call of the model lies inside
    one of them or in what they leave between them (a residual add in the parent's forward)."""
    out: list[Span] = []
    stack = [root]
    while stack:
        span = stack.pop()
        if span is not root and (span.depth == depth or not span.children):
            out.append(span)
        else:
            stack.extend(reversed(span.children))
    return out
