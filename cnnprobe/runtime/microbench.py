"""The fixed grid of micro-benchmarks `cnnprobe calibrate` times: single operators, never whole models.

Each case builds one operator (or an optimizer's few foreach kernels) on a device and times it with
torch.utils.benchmark. Its FLOPs and bytes are counted by the rules the predictor applies to a step's
operators: the same case is run once on meta tensors under a dispatch mode that gives every aten operator
its FLOPs from `trace.formulas.FORMULAS` (2 × MACs) and its bytes from `trace.costs.operator_bytes`
(unfused, each distinct tensor once). A fitted curve is thus judged on the very count a prediction uses.
The number of kernels a case runs is the number of its operators that move data (views cost no launch).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from ..trace.costs import ZERO_BYTES, operator_bytes
from ..trace.formulas import FORMULAS
from ..training.devices import free_memory, is_oom, synchronize, timer_module
from .opclass import native_threads, weight_bytes
from .records import OpClass

aten = torch.ops.aten
Thunk = Callable[[], Any]


@dataclass(frozen=True)
class Case:
    """One micro-benchmark: `make(device, dtype)` builds its inputs and returns the call to time."""

    name: str
    op_class: OpClass
    make: Callable[[str, torch.dtype], Thunk]
    dtypes: tuple[str, ...] = ("float32",)  # on CUDA; the CPU runs float32 only
    quick: bool = False  # part of the quick grid (tests, --quick)
    cuda_only: bool = False  # a size only a GPU reaches its plateau at (too slow for the CPU grid)
    native_threads: int = 0  # a convolution torch runs on the CPU with its own kernel at this many threads or fewer

    def op_class_on(self, device: str, threads: int) -> OpClass:
        """The class its kernel is of where it runs: a CPU convolution torch runs with its own kernel is
        CONV_NATIVE (`opclass.native_threads`), as the time model classes it in a step."""
        if device == "cpu" and threads <= self.native_threads:
            return OpClass.CONV_NATIVE
        return self.op_class


@dataclass(frozen=True)
class CaseCost:
    """What the predictor would count for one call of a case."""

    flops: int
    bytes: int
    kernels: int
    ops: tuple[str, ...]
    weight_bytes: int = 0  # `OpCost.weight_bytes` of its operators


@dataclass(frozen=True)
class Measurement:
    """One case timed on a device: its count and the median seconds of one call."""

    name: str
    op_class: OpClass
    dtype: str
    flops: int
    bytes: int
    kernels: int
    seconds: float
    weight_bytes: int = 0  # its convolutions' weights and its matrix products' larger inputs

    @property
    def heavy(self) -> bool:
        """A case whose weights outweigh its activations (the bytes it moves less the weights, and a backward's
        weight gradient): its time follows the weights' preparation (`Calibration.weights_gbps`), not its
        FLOPs."""
        copies = 2 if self.backward else 1
        return self.weight_bytes > 0 and self.weight_bytes > self.bytes - copies * self.weight_bytes

    @property
    def work(self) -> float:
        return float(self.flops if self.op_class.compute_bound else self.bytes)

    @property
    def backward(self) -> bool:
        """A backward kernel's case (convolution_backward, batch or layer norm through autograd)."""
        return "backward" in self.name


class _Count(TorchDispatchMode):
    """Every aten operator run inside it, counted as the predictor counts it."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0
        self.bytes = 0
        self.weight_bytes = 0
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func._overloadpacket.__name__
        formula = FORMULAS.get(func._overloadpacket)
        if formula is not None:
            self.flops += int(formula(*args, **kwargs, out_val=out))
        self.bytes += operator_bytes(func, name, args, kwargs, out)
        self.weight_bytes += weight_bytes(func, args, kwargs)
        if name not in ZERO_BYTES:
            self.ops.append(name)
        return out


def cost(case: Case, dtype: str = "float32") -> CaseCost:
    """The case's FLOPs, bytes and kernels, counted on meta tensors (nothing is computed)."""
    thunk = case.make("meta", getattr(torch, dtype))
    with _Count() as counter:
        thunk()
    return CaseCost(counter.flops, counter.bytes, len(counter.ops), tuple(counter.ops), counter.weight_bytes)


# ---- the cases
def _rand(device: str, dtype: torch.dtype, *shape: int, grad: bool = False) -> torch.Tensor:
    return torch.randn(*shape, device=device).to(dtype).requires_grad_(grad)


def _gemm(m: int, n: int, k: int, bias: bool = False) -> Callable[[str, torch.dtype], Thunk]:
    def make(device: str, dtype: torch.dtype) -> Thunk:
        a, b = _rand(device, dtype, m, k), _rand(device, dtype, k, n)
        if bias:
            c = _rand(device, dtype, n)
            return lambda: torch.addmm(c, a, b)
        return lambda: torch.mm(a, b)
    return make


def _conv(n: int, c: int, hw: int, out: int, k: int, groups: int, stride: int = 1,
          backward: bool = False, weight_grad: bool = True) -> Callable[[str, torch.dtype], Thunk]:
    """A 2-D convolution, forward (`aten.convolution`) or its backward (`aten.convolution_backward`: the input
    gradient and, with `weight_grad`, the weight's), the operators autograd runs in a step."""
    pad = k // 2

    def make(device: str, dtype: torch.dtype) -> Thunk:
        x = _rand(device, dtype, n, c, hw, hw)
        w = _rand(device, dtype, out, c // groups, k, k)
        if not backward:
            return lambda: aten.convolution(x, w, None, [stride] * 2, [pad] * 2, [1, 1], False, [0, 0], groups)
        side = (hw + 2 * pad - k) // stride + 1
        g = _rand(device, dtype, n, out, side, side)
        mask = [True, weight_grad, False]
        return lambda: aten.convolution_backward(g, x, w, None, [stride] * 2, [pad] * 2, [1, 1], False, [0, 0],
                                                 groups, mask)
    return make


def _batch_norm(n: int, c: int, hw: int, backward: bool) -> Callable[[str, torch.dtype], Thunk]:
    """Training-mode batch norm; its backward through autograd (input, weight and bias gradients)."""
    def make(device: str, dtype: torch.dtype) -> Thunk:
        x = _rand(device, dtype, n, c, hw, hw, grad=backward)
        w, b = _rand(device, dtype, c, grad=backward), _rand(device, dtype, c, grad=backward)
        mean, var = torch.zeros(c, device=device, dtype=dtype), torch.ones(c, device=device, dtype=dtype)
        if not backward:
            return lambda: F.batch_norm(x, mean, var, w, b, training=True)
        y = F.batch_norm(x, mean, var, w, b, training=True)
        g = torch.ones_like(y)
        return lambda: torch.autograd.grad(y, (x, w, b), g, retain_graph=True)
    return make


def _layer_norm(rows: int, c: int, backward: bool) -> Callable[[str, torch.dtype], Thunk]:
    def make(device: str, dtype: torch.dtype) -> Thunk:
        x = _rand(device, dtype, rows, c, grad=backward)
        w, b = _rand(device, dtype, c, grad=backward), _rand(device, dtype, c, grad=backward)
        if not backward:
            return lambda: F.layer_norm(x, (c,), w, b)
        y = F.layer_norm(x, (c,), w, b)
        g = torch.ones_like(y)
        return lambda: torch.autograd.grad(y, (x, w, b), g, retain_graph=True)
    return make


def _pointwise(kind: str, numel: int) -> Callable[[str, torch.dtype], Thunk]:
    def make(device: str, dtype: torch.dtype) -> Thunk:
        x, y = _rand(device, dtype, numel), _rand(device, dtype, numel)
        calls: dict[str, Thunk] = {
            "add": lambda: torch.add(x, y), "mul": lambda: torch.mul(x, y), "relu": lambda: torch.relu(x),
            "copy": lambda: x.clone(), "cat": lambda: torch.cat([x, y])}
        return calls[kind]
    return make


def _mean(n: int, c: int, hw: int) -> Callable[[str, torch.dtype], Thunk]:
    def make(device: str, dtype: torch.dtype) -> Thunk:
        x = _rand(device, dtype, n, c, hw, hw)
        return lambda: x.mean((2, 3))
    return make


def _max_pool(n: int, c: int, hw: int) -> Callable[[str, torch.dtype], Thunk]:
    def make(device: str, dtype: torch.dtype) -> Thunk:
        x = _rand(device, dtype, n, c, hw, hw)
        return lambda: F.max_pool2d(x, 3, 2, 1)
    return make


def _channels_last(n: int, c: int, hw: int) -> Callable[[str, torch.dtype], Thunk]:
    def make(device: str, dtype: torch.dtype) -> Thunk:
        x = _rand(device, dtype, n, c, hw, hw)
        return lambda: x.contiguous(memory_format=torch.channels_last)
    return make


def _sgd(tensors: int, numel: int) -> Callable[[str, torch.dtype], Thunk]:
    """SGD with momentum's steady-state foreach update, as torch.optim.SGD(foreach=True) runs it."""
    def make(device: str, dtype: torch.dtype) -> Thunk:
        params = [_rand(device, dtype, numel) for _ in range(tensors)]
        grads = [_rand(device, dtype, numel) for _ in range(tensors)]
        bufs = [_rand(device, dtype, numel) for _ in range(tensors)]

        def step() -> None:
            torch._foreach_mul_(bufs, 0.9)
            torch._foreach_add_(bufs, grads)
            torch._foreach_add_(params, bufs, alpha=-0.01)
        return step
    return make


LOW = ("float32", "bfloat16", "float16")  # GEMMs and convolutions on CUDA


def _conv_cases() -> Iterator[Case]:
    # (label, class, (n, c, hw, out, k, groups, stride)), quick ones marked. On one CPU thread torch runs the
    # unstrided 1×1 convolutions at batches under 16 with its own kernel (CONV_NATIVE), so the strided and
    # batch-16 ones are oneDNN's 1×1 cases there; the wide ones read weights far larger than their inputs.
    shapes = [
        ("dense3x3", OpClass.CONV_DENSE, (2, 16, 28, 16, 3, 1, 1), True),
        ("dense3x3", OpClass.CONV_DENSE, (4, 32, 28, 32, 3, 1, 1), True),
        ("dense3x3", OpClass.CONV_DENSE, (2, 64, 56, 64, 3, 1, 1), False),
        ("dense3x3s2", OpClass.CONV_DENSE, (4, 128, 28, 128, 3, 1, 2), False),
        ("dense3x3 wide", OpClass.CONV_DENSE, (2, 512, 4, 512, 3, 1, 1), False),
        ("dense3x3 wide", OpClass.CONV_DENSE, (2, 512, 7, 512, 3, 1, 1), False),
        ("stem7x7s2", OpClass.CONV_DENSE, (4, 3, 56, 64, 7, 1, 2), False),
        ("1x1", OpClass.CONV_1X1, (4, 64, 28, 256, 1, 1, 1), True),
        ("1x1", OpClass.CONV_1X1, (8, 256, 14, 64, 1, 1, 1), False),
        ("1x1", OpClass.CONV_1X1, (2, 32, 14, 32, 1, 1, 1), False),
        ("1x1 wide", OpClass.CONV_1X1, (2, 1024, 4, 2048, 1, 1, 1), False),
        ("1x1 wide", OpClass.CONV_1X1, (4, 1024, 7, 1024, 1, 1, 1), False),
        ("1x1s2", OpClass.CONV_1X1, (4, 256, 28, 512, 1, 1, 2), True),
        ("1x1", OpClass.CONV_1X1, (16, 128, 14, 256, 1, 1, 1), False),
        ("1x1s2", OpClass.CONV_1X1, (4, 64, 28, 128, 1, 1, 2), False),
        ("1x1", OpClass.CONV_1X1, (16, 256, 14, 512, 1, 1, 1), False),
        ("dw3x3", OpClass.CONV_DEPTHWISE, (2, 32, 28, 32, 3, 32, 1), True),
        ("dw3x3", OpClass.CONV_DEPTHWISE, (8, 64, 56, 64, 3, 64, 1), True),
        ("dw3x3", OpClass.CONV_DEPTHWISE, (8, 256, 14, 256, 3, 256, 1), False),
        ("g4_3x3", OpClass.CONV_GROUPED, (4, 64, 28, 64, 3, 4, 1), False),
        ("g8_3x3", OpClass.CONV_GROUPED, (4, 128, 28, 128, 3, 8, 1), False),
        ("g8_3x3", OpClass.CONV_GROUPED, (2, 32, 14, 32, 3, 8, 1), True),
    ]
    for label, op_class, (n, c, hw, out, k, groups, stride), quick in shapes:
        size = f"{n}x{c}x{hw}x{hw}->{out}"
        native = native_threads((n, c, hw, hw), (out, c // groups, k, k), stride, 1, groups, "float32")
        yield Case(f"conv {label} {size}", op_class, _conv(n, c, hw, out, k, groups, stride), LOW, quick,
                   native_threads=native)
        yield Case(f"conv {label} {size} backward", op_class,
                   _conv(n, c, hw, out, k, groups, stride, backward=True), LOW, quick, native_threads=native)
    yield Case("conv dense3x3 4x32x28x28->32 backward input only", OpClass.CONV_DENSE,
               _conv(4, 32, 28, 32, 3, 1, 1, backward=True, weight_grad=False), LOW)


def grid() -> list[Case]:
    """Every micro-benchmark, in the order they are timed."""
    cases = [Case(f"mm {n}x{n}x{n}", OpClass.GEMM, _gemm(n, n, n), LOW, n in (128, 512))
             for n in (64, 128, 256, 512, 1024)]
    # skinny ones too: a linear layer at a small batch reads a weight matrix far larger than its activations
    cases += [Case(f"mm {m}x{n}x{k}", OpClass.GEMM, _gemm(m, n, k), LOW, quick)
              for m, n, k, quick in ((4096, 64, 256, False), (32, 1000, 2048, True), (3136, 256, 64, False),
                                     (4, 4096, 4096, False), (2, 4096, 9216, False))]
    cases.append(Case("addmm 256x1000x512", OpClass.GEMM, _gemm(256, 1000, 512, bias=True), LOW))
    cases += list(_conv_cases())
    for n, c, hw, quick in ((8, 64, 56, False), (8, 32, 28, True), (2, 16, 14, False)):
        for backward in (False, True):
            cases.append(Case(f"batch_norm {n}x{c}x{hw}x{hw}{' backward' if backward else ''}",
                              OpClass.NORMALIZATION, _batch_norm(n, c, hw, backward), quick=quick))
    for rows, c in ((8 * 197, 768), (64, 256)):
        for backward in (False, True):
            cases.append(Case(f"layer_norm {rows}x{c}{' backward' if backward else ''}", OpClass.NORMALIZATION,
                              _layer_norm(rows, c, backward)))
    for numel in (2**12, 2**16, 2**20, 2**22):
        for kind in ("add", "relu", "mul"):
            cases.append(Case(f"{kind} {numel}", OpClass.ELEMENTWISE, _pointwise(kind, numel),
                              quick=numel in (2**16, 2**20)))
    cases += [Case("mean 8x256x14x14", OpClass.REDUCTION, _mean(8, 256, 14), quick=True),
              Case("mean 8x2048x7x7", OpClass.REDUCTION, _mean(8, 2048, 7)),
              Case("max_pool2d 8x64x112x112", OpClass.POOLING, _max_pool(8, 64, 112)),
              Case("max_pool2d 4x32x56x56", OpClass.POOLING, _max_pool(4, 32, 56), quick=True)]
    cases += [Case("clone 1048576", OpClass.COPY_LAYOUT, _pointwise("copy", 2**20), quick=True),
              Case("cat 2x262144", OpClass.COPY_LAYOUT, _pointwise("cat", 2**18)),
              Case("channels_last 8x64x56x56", OpClass.COPY_LAYOUT, _channels_last(8, 64, 56))]
    cases += [Case("sgd momentum 20x65536", OpClass.OPTIMIZER, _sgd(20, 2**16), quick=True),
              Case("sgd momentum 60x262144", OpClass.OPTIMIZER, _sgd(60, 2**18))]
    return cases + list(_gpu_cases())


def _gpu_cases() -> Iterator[Case]:
    """Sizes at which a GPU's kernels fill the device: a curve fitted below them would be extrapolated."""
    for n in (2048, 4096, 8192):
        yield Case(f"mm {n}x{n}x{n}", OpClass.GEMM, _gemm(n, n, n), LOW, cuda_only=True)
    yield Case("mm 65536x1024x256", OpClass.GEMM, _gemm(65536, 1024, 256), LOW, cuda_only=True)
    for label, op_class, (n, c, hw, out, k, groups) in (
            ("dense3x3", OpClass.CONV_DENSE, (64, 64, 56, 64, 3, 1)),
            ("dense3x3", OpClass.CONV_DENSE, (128, 256, 14, 256, 3, 1)),
            ("1x1", OpClass.CONV_1X1, (64, 256, 56, 64, 1, 1)),
            ("dw3x3", OpClass.CONV_DEPTHWISE, (64, 128, 56, 128, 3, 128)),
            ("g8_3x3", OpClass.CONV_GROUPED, (64, 256, 28, 256, 3, 8))):
        size = f"{n}x{c}x{hw}x{hw}->{out}"
        yield Case(f"conv {label} {size}", op_class, _conv(n, c, hw, out, k, groups), LOW, cuda_only=True)
        yield Case(f"conv {label} {size} backward", op_class, _conv(n, c, hw, out, k, groups, backward=True),
                   LOW, cuda_only=True)
    yield Case("batch_norm 64x64x112x112", OpClass.NORMALIZATION, _batch_norm(64, 64, 112, False), cuda_only=True)
    yield Case("batch_norm 64x64x112x112 backward", OpClass.NORMALIZATION, _batch_norm(64, 64, 112, True),
               cuda_only=True)
    for kind in ("add", "relu", "mul"):
        yield Case(f"{kind} {2**26}", OpClass.ELEMENTWISE, _pointwise(kind, 2**26), cuda_only=True)
    yield Case("max_pool2d 64x64x112x112", OpClass.POOLING, _max_pool(64, 64, 112), cuda_only=True)
    yield Case("clone 67108864", OpClass.COPY_LAYOUT, _pointwise("copy", 2**26), cuda_only=True)
    yield Case("sgd momentum 160x1048576", OpClass.OPTIMIZER, _sgd(160, 2**20), cuda_only=True)


# ---- timing
def _median_seconds(thunk: Thunk, device: str, threads: int, min_run_time: float) -> float:
    """Median seconds of one call. On CUDA torch.utils.benchmark's clock synchronises around each block of
    calls, not each call: calls queue back to back, as a step's kernels do."""
    timer = timer_module().Timer("thunk()", globals={"thunk": thunk}, num_threads=threads)
    timer.timeit(1)  # warm-up: first-call allocations, kernel selection
    synchronize(device)
    return float(timer.blocked_autorange(min_run_time=min_run_time).median)


OVERHEAD_CHAIN = 32  # modules in the chain that measures an operator's fixed cost


def overhead_us(device: str, threads: int, min_run_time: float = 0.2) -> tuple[float, float]:
    """An operator's fixed cost in a training step, forward and backward: a chain of one-element Linear
    modules (a module call, dispatch, autograd's bookkeeping, a launch), timed forward alone and forward with
    backward, per module. A micro-benchmark of overhead, not a model: there is nothing to compute."""
    chain = torch.nn.Sequential(*(torch.nn.Linear(1, 1) for _ in range(OVERHEAD_CHAIN))).to(device)
    x = torch.ones(1, 1, device=device, requires_grad=True)

    def forward() -> None:
        chain(x)

    def both() -> None:
        chain(x).sum().backward()

    f = _median_seconds(forward, device, threads, min_run_time)
    fb = _median_seconds(both, device, threads, min_run_time)
    # a Linear forward is a t() and an addmm; backward its two gradients and accumulation
    return 1e6 * f / OVERHEAD_CHAIN / 2, 1e6 * max(fb - f, 0.0) / OVERHEAD_CHAIN / 3


def launch_us(device: str, threads: int, min_run_time: float = 0.1) -> float:
    """A kernel's fixed cost: the median time of an add on one element, dispatch and launch included (on
    CUDA, of such adds queued back to back)."""
    x = torch.ones(1, device=device)
    return 1e6 * _median_seconds(lambda: torch.add(x, x), device, threads, min_run_time)


PAGE_IN_BYTES = 64 * 2**20  # above glibc's largest mmap threshold: mapped fresh on every allocation


def page_in_gbps(threads: int, min_run_time: float = 0.2) -> float:
    """How fast this CPU faults in fresh memory: filling a newly allocated 64 MiB tensor, less filling one
    already touched, per byte (GB/s). A micro-benchmark of the allocator and the OS, no model."""
    count = PAGE_IN_BYTES // 4
    warm = torch.empty(count)
    warm.fill_(1.0)
    fresh_s = _median_seconds(lambda: torch.empty(count).fill_(1.0), "cpu", threads, min_run_time)
    warm_s = _median_seconds(lambda: warm.fill_(1.0), "cpu", threads, min_run_time)
    return PAGE_IN_BYTES / max(fresh_s - warm_s, 0.01 * fresh_s) / 1e9


def planned(device: str, *, quick: bool = False, dtypes: tuple[str, ...] | None = None,
            cases: list[Case] | None = None) -> list[tuple[Case, str]]:
    """The (case, dtype) pairs `run` times: float32 on the CPU; on CUDA also the GPU-sized cases, each in its
    dtypes (float32, and bfloat16 and float16 for GEMMs and convolutions), those in `dtypes` only if given."""
    cuda = device.split(":")[0] == "cuda"
    chosen = [c for c in (cases if cases is not None else grid())
              if (c.quick or not quick) and (cuda or not c.cuda_only)]
    return [(case, dtype) for case in chosen for dtype in (case.dtypes if cuda else ("float32",))
            if dtypes is None or dtype in dtypes]


def run(device: str, threads: int, *, quick: bool = False, time_limit: float | None = None,
        min_run_time: float | None = None, on_case: Callable[[Measurement], None] | None = None,
        dtypes: tuple[str, ...] | None = None, cases: list[Case] | None = None,
        skipped: list[str] | None = None) -> list[Measurement]:
    """Times the `planned` grid (its quick part with `quick`) on `device`; no case starts once `time_limit`
    seconds have passed. A case the device has no memory for is left out (named in `skipped`). float32 on
    CUDA runs under the process's TF32 switches: the caller's float32 peak must be the one they give."""
    min_run_time = min_run_time if min_run_time is not None else (0.05 if quick else 0.2)
    autotune = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = device != "cpu"  # as bench runs CUDA steps; the warm-up call tunes
    try:
        return _run(planned(device, quick=quick, dtypes=dtypes, cases=cases), device, threads, time_limit,
                    min_run_time, on_case, skipped)
    finally:
        torch.backends.cudnn.benchmark = autotune


def _run(plan: list[tuple[Case, str]], device: str, threads: int, time_limit: float | None, min_run_time: float,
         on_case: Callable[[Measurement], None] | None, skipped: list[str] | None) -> list[Measurement]:
    start = time.perf_counter()
    out: list[Measurement] = []
    for case, dtype in plan:
        if time_limit is not None and time.perf_counter() - start > time_limit:
            break
        count = cost(case, dtype)
        try:
            seconds = _median_seconds(case.make(device, getattr(torch, dtype)), device, threads, min_run_time)
        except (RuntimeError, MemoryError) as e:
            if not is_oom(e):
                raise
            free_memory()
            seconds = math.nan
        if not math.isfinite(seconds) or seconds <= 0:
            if skipped is not None:
                skipped.append(f"{case.name} {dtype}")
            continue
        m = Measurement(case.name, case.op_class_on(device, threads), dtype, count.flops, count.bytes, count.kernels,
                        seconds, count.weight_bytes)
        out.append(m)
        if on_case is not None:
            on_case(m)
    return out
