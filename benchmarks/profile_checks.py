"""How far to trust `cnnprobe profile`: each figure against a measurement that shares none of its code.

- the rows and unattributed pieces against the step timed without hooks (in the same run);
- each top-level module's forward against the module timed alone by torch.utils.benchmark on its real input;
- the ranking of the rows against torch.profiler's attribution of operator time (a record_function range
  around each module's forward);
- the trace against the Chrome Trace Event Format's structural rules, and one span per module call, counted
  by hooks of the check's own.

The tests hold these on small cases; `benchmarks.profile_report` writes them for four models.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class Case:
    """One model as the checks run it: the same module instance is profiled and timed alone."""

    name: str
    input_size: str  # C,H,W
    batch: int
    rank_depth: int  # the depth whose rows are ranked against torch.profiler


class OneBigConv(nn.Module):
    """95% of the FLOPs in `big`."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.act = nn.ReLU()
        self.big = nn.Conv2d(16, 128, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.big(self.act(self.stem(x)))), 1))


def build(name: str, seed: int = 0) -> nn.Module:
    import torchvision

    torch.manual_seed(seed)
    return torchvision.models.get_model(name).train()


def example(case: Case) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(case.batch, *(int(v) for v in case.input_size.split(",")))


def inputs_of(model: nn.Module, x: torch.Tensor, paths: list[str]) -> dict[str, tuple[Any, ...]]:
    """What each module at `paths` receives in one forward pass."""
    modules = dict(model.named_modules())
    captured: dict[str, tuple[Any, ...]] = {}

    def keep(path: str) -> Any:
        return lambda module, args: captured.setdefault(path, tuple(
            a.detach() if torch.is_tensor(a) else a for a in args))

    handles = [modules[p].register_forward_pre_hook(keep(p)) for p in paths]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return captured


def alone_ms(module: nn.Module, args: tuple[Any, ...], threads: int, min_run_time: float = 0.3) -> float:
    """The module's forward timed alone by torch.utils.benchmark, in train mode with gradients on (its graph is
    built and dropped, as in a training step's forward)."""
    import torch.utils.benchmark as benchmark

    timer = benchmark.Timer("module(*args)", globals={"module": module, "args": args}, num_threads=threads)
    with torch.enable_grad():
        return 1e3 * timer.blocked_autorange(min_run_time=min_run_time).median


def profiler_ms(model: nn.Module, x: torch.Tensor, paths: list[str], steps: int = 5) -> dict[str, float]:
    """torch.profiler's CPU time inside a record_function range around each module's forward, over a forward
    and backward step, the median of `steps`."""
    from torch.profiler import ProfilerActivity, record_function

    modules = dict(model.named_modules())
    originals = {p: modules[p].forward for p in paths}

    def ranged(path: str) -> Any:
        def forward(*args: Any, **kwargs: Any) -> Any:
            with record_function(f"row::{path}"):
                return originals[path](*args, **kwargs)
        return forward

    for p in paths:
        modules[p].forward = ranged(p)  # type: ignore[method-assign]
    totals: dict[str, list[float]] = {p: [] for p in paths}
    try:
        for _ in range(steps):
            with torch.profiler.profile(activities=[ProfilerActivity.CPU]) as prof:
                out = model(x)
                (out if torch.is_tensor(out) else out[0]).sum().backward()
            seen = {e.key: e.cpu_time_total for e in prof.key_averages() if e.key.startswith("row::")}
            for p in paths:
                totals[p].append(seen.get(f"row::{p}", 0.0) / 1e3)
    finally:
        for p in paths:
            del modules[p].forward
    return {p: statistics.median(v) for p, v in totals.items()}


def spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation (no ties expected in measured times)."""
    def ranks(values: list[float]) -> list[int]:
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0] * len(values)
        for rank, i in enumerate(order):
            out[i] = rank
        return out

    ra, rb, n = ranks(a), ranks(b), len(a)
    return 1 - 6 * sum((x - y) ** 2 for x, y in zip(ra, rb)) / (n * (n * n - 1)) if n > 1 else 1.0


def pearson(a: list[float], b: list[float]) -> float:
    """Linear correlation: where rows of equal cost tie (a ViT's twelve identical blocks), ranks among them are
    noise, while their times still follow the other measurement's."""
    n = len(a)
    if n < 2:
        return 1.0
    ma, mb = sum(a) / n, sum(b) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    va, vb = sum((x - ma) ** 2 for x in a), sum((y - mb) ** 2 for y in b)
    return cov / (va * vb) ** 0.5 if va and vb else 1.0


def module_calls(model: nn.Module, x: torch.Tensor, max_depth: int | None) -> tuple[int, int]:
    """Module calls of one forward and backward step down to `max_depth`, counted by the check's own hooks: every
    forward call, and every call whose output carries a gradient function created inside it (those autograd
    runs a backward for)."""
    from torch.nn.modules import module as hooks

    depth_of = {id(m): (n.count(".") + 1 if n else 0) for n, m in model.named_modules()}
    counts = [0, 0]
    before: list[set[int]] = []  # the gradient functions of each running call's inputs, as it began

    def followed(module: nn.Module) -> bool:
        depth = depth_of.get(id(module))
        return depth is not None and (max_depth is None or depth <= max_depth)

    def pre(module: nn.Module, args: Any) -> None:
        if followed(module):
            before.append({id(a.grad_fn) for a in args if torch.is_tensor(a) and a.grad_fn is not None})

    def post(module: nn.Module, args: Any, output: Any) -> None:
        if not followed(module):
            return
        ins = before.pop()
        counts[0] += 1
        outs = output if isinstance(output, (tuple, list)) else [output]
        if any(torch.is_tensor(o) and o.grad_fn is not None and id(o.grad_fn) not in ins for o in outs):
            counts[1] += 1

    handles = [hooks.register_module_forward_pre_hook(pre), hooks.register_module_forward_hook(post)]
    try:
        out = model(x)
        (out if torch.is_tensor(out) else out[0]).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    return counts[0], counts[1]
