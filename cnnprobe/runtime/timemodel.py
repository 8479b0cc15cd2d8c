"""How long an operator, and a step, takes on a device: a roofline with efficiencies, waves and launches.

An operator's time is the larger of its compute time, `flops / (peak(dtype) × compute efficiency × wave
factor)`, and its memory time, `bytes / (bandwidth × memory efficiency)`, plus a fixed cost per kernel. The
efficiencies are the calibration's curves for the operator's class at its size (`Curve.efficiency`), or the
class defaults below where the calibration has none. On a GPU, a GEMM-like operator's tiles of
`TILE × TILE` outputs run in waves over the SMs: a last wave that fills only part of them wastes the rest.

On a CPU two costs come on top, both of the allocator and the kernel torch picks, not of the arithmetic: a
convolution torch runs with its own kernel rather than oneDNN's (`opclass.native_threads`) is its own class
and reads its weights once per sample; and storages of `PAGE_MIN` bytes or more are mapped fresh by the C
library on every allocation, so their first touch pays the OS's page-in rate (`Calibration.page_in_gbps`).

What the model ignores: overlap between kernels (streams, a copy under a compute kernel), data loading, the
CPU side under the GPU (Python, the dispatcher, kernel-launch latency beyond the fixed per-kernel cost: a
small model on a fast GPU is bound by these and is predicted too fast), fusion (every operator is its own
kernel, its tensors read and written through memory, as `operator_bytes` counts them), cuDNN's and oneDNN's
choice of algorithm (one curve per class, whatever algorithm runs), caches (nothing stays in L2 between
kernels), clocks (the datasheet's boost clock, no throttling), and a GPU's idle time between steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .records import Calibration, Curve, DeviceSpec, OpClass, OpCost

TILE = 128  # outputs per side of the tile one SM computes at a time (cuBLAS's and cuDNN's common 128×128)

# Class defaults for an uncalibrated device: rough shares of the roofs from published kernel benchmarks,
# meant to be replaced by `cnnprobe calibrate`. GPUs: large GEMMs reach about 70% of the dense tensor-core
# peak, convolutions somewhat less, depthwise convolutions a few percent of it (they are bound by memory,
# and have no tensor-core path worth the name); streaming kernels about 80% of the bandwidth, reductions
# and normalisation (two passes, a reduction tree) less. `half_work` is the size at which a class reaches
# half its share: ~1 GFLOP for GPU GEMMs (a 128×128 tile per SM needs thousands of them), ~2 MB for
# streaming kernels (less than that cannot hide the memory latency across all SMs).
_GPU_COMPUTE = {
    OpClass.GEMM: Curve(0.70, 1e9),
    OpClass.CONV_DENSE: Curve(0.60, 2e9),
    OpClass.CONV_1X1: Curve(0.60, 1e9),
    OpClass.CONV_NATIVE: Curve(0.60, 1e9),  # a CPU's kernel only: a GPU's would be its 1×1's
    OpClass.CONV_GROUPED: Curve(0.30, 1e9),
    OpClass.CONV_DEPTHWISE: Curve(0.03, 1e8),
    OpClass.ATTENTION: Curve(0.50, 2e9),
}
_GPU_MEMORY = {
    OpClass.GEMM: Curve(0.80, 2e6),
    OpClass.CONV_DENSE: Curve(0.70, 2e6),
    OpClass.CONV_1X1: Curve(0.70, 2e6),
    OpClass.CONV_NATIVE: Curve(0.70, 2e6),
    OpClass.CONV_GROUPED: Curve(0.60, 2e6),
    OpClass.CONV_DEPTHWISE: Curve(0.50, 2e6),
    OpClass.ATTENTION: Curve(0.70, 2e6),
    OpClass.NORMALIZATION: Curve(0.60, 2e6),
    OpClass.ELEMENTWISE: Curve(0.80, 2e6),
    OpClass.REDUCTION: Curve(0.60, 2e6),
    OpClass.POOLING: Curve(0.60, 2e6),
    OpClass.COPY_LAYOUT: Curve(0.70, 2e6),
    OpClass.OPTIMIZER: Curve(0.70, 2e6),
    OpClass.OTHER: Curve(0.50, 2e6),
}
# CPUs: `cnnprobe calibrate --device cpu` on this project's 2-core AMD EPYC at one thread, rounded, so that a CPU
# that has not been calibrated gets a server x86's shares rather than guesses. Shares are of the measured roofs
# (a 512³ matrix product's FLOP/s, a copy's bandwidth), so a convolution can beat the first and a kernel whose
# data sits in cache the second. A compute class's memory curve is not calibrated (0.5 of the bandwidth).
_CPU_COMPUTE = {
    OpClass.GEMM: Curve(1.2, 1e5),
    OpClass.CONV_DENSE: Curve(1.2, 1.1e7),
    OpClass.CONV_1X1: Curve(0.9, 2.6e6),
    OpClass.CONV_NATIVE: Curve(0.65, 5e5),
    OpClass.CONV_GROUPED: Curve(1.1, 7e6),
    OpClass.CONV_DEPTHWISE: Curve(0.39, 2.8e6),
    OpClass.ATTENTION: Curve(0.5, 1e7),  # not in the grid: about half a GEMM's
}
_CPU_MEMORY = {c: Curve(0.5, 2e5) for c in OpClass} | {
    OpClass.ELEMENTWISE: Curve(3.8, 1e3), OpClass.COPY_LAYOUT: Curve(2.8, 1e3), OpClass.OPTIMIZER: Curve(2.3, 1e3),
    OpClass.NORMALIZATION: Curve(0.16, 1e3), OpClass.REDUCTION: Curve(2.1, 1e3), OpClass.POOLING: Curve(0.04, 3.7e4),
}
_CPU_BACKWARD = {
    OpClass.CONV_DENSE: Curve(1.06, 1.4e7), OpClass.CONV_1X1: Curve(0.84, 1.6e7),
    OpClass.CONV_NATIVE: Curve(0.72, 1.7e6), OpClass.CONV_GROUPED: Curve(1.0, 1.3e7),
    OpClass.CONV_DEPTHWISE: Curve(0.26, 3.4e6),
    OpClass.NORMALIZATION: Curve(0.53, 2.3e5),
}
# Where neither the calibration nor the defaults have a class (a compute curve for a memory class whose
# operator does count FLOPs: interpolation, RoIAlign): a modest share, reached early.
FALLBACK_COMPUTE = Curve(0.25, 1e6)
FALLBACK_MEMORY = Curve(0.5, 1e6)

DEFAULT_GPU = Calibration(device_key="gpu", device_name="", compute=_GPU_COMPUTE, memory=_GPU_MEMORY,
                          launch_us=4.0, calibrated=False, source="defaults")
# weight preparation, GB/s of weights, as calibrated on this project's 2-core AMD EPYC (1 thread), rounded: an
# uncalibrated CPU gets the effect at about its size rather than not at all
_CPU_WEIGHTS = {OpClass.CONV_DENSE: 4.0, OpClass.CONV_NATIVE: 15.0, OpClass.GEMM: 10.0}
_CPU_BACKWARD_WEIGHTS = {OpClass.CONV_DENSE: 0.5, OpClass.CONV_NATIVE: 2.5}
# the OS's rate of faulting in fresh pages where no calibration measured it: ~0.5 ms per MiB (calibrations of
# this project's 2-core AMD EPYC read 1.7 to 2.6 GB/s)
DEFAULT_PAGE_IN_GBPS = 2.0
DEFAULT_CPU = Calibration(device_key="cpu", device_name="", compute=_CPU_COMPUTE, memory=_CPU_MEMORY,
                          launch_us=6.7, calibrated=False, source="defaults", backward=_CPU_BACKWARD,
                          backward_launch_us=4.7, page_in_gbps=DEFAULT_PAGE_IN_GBPS, weights_gbps=_CPU_WEIGHTS,
                          backward_weights_gbps=_CPU_BACKWARD_WEIGHTS)


# glibc's largest mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX, 32 MiB): a storage this large is
# always mapped fresh, and unmapped when freed, so each step faults its pages in again
PAGE_MIN = 32 * 2**20


def defaults_for(spec: DeviceSpec) -> Calibration:
    """The class defaults for a device of this kind."""
    return DEFAULT_GPU if spec.kind == "gpu" else DEFAULT_CPU


def _curve(curves: dict[OpClass, Curve], defaults: dict[OpClass, Curve], op_class: OpClass,
           fallback: Curve) -> Curve:
    return curves.get(op_class) or defaults.get(op_class) or fallback


def _backward(op: OpCost, cal: Calibration) -> Curve | None:
    return cal.backward.get(op.op_class) if op.phase == "backward" else None


def compute_efficiency(op: OpCost, spec: DeviceSpec, cal: Calibration) -> float:
    """The share of peak FLOP/s the operator reaches at its FLOPs (a backward kernel on its own curve, where the
    calibration has one)."""
    curve = (_backward(op, cal) if op.op_class.compute_bound else None) or \
        _curve(cal.compute, defaults_for(spec).compute, op.op_class, FALLBACK_COMPUTE)
    return curve.efficiency(float(op.flops))


def memory_efficiency(op: OpCost, spec: DeviceSpec, cal: Calibration) -> float:
    """The share of the memory bandwidth the operator reaches at its bytes."""
    curve = (None if op.op_class.compute_bound else _backward(op, cal)) or \
        _curve(cal.memory, defaults_for(spec).memory, op.op_class, FALLBACK_MEMORY)
    return curve.efficiency(float(op.bytes))


def wave_factor(op: OpCost, spec: DeviceSpec) -> float:
    """The share of the SMs' tile slots the operator's waves fill: tiles = ⌈m/TILE⌉·⌈n/TILE⌉ per GEMM, times
    the GEMMs the FLOPs say it is (a bmm's batch, a grouped convolution's groups, a convolution backward's
    two gradients: FLOPs / 2mnk); waves = ⌈tiles / SMs⌉; factor = tiles / (waves × SMs). 1 on a CPU and for
    operators that are no GEMM."""
    if spec.kind != "gpu" or not spec.sms or op.dims is None:
        return 1.0
    m, n, k = op.dims
    if min(m, n, k) <= 0:
        return 1.0
    gemms = max(1, round(op.flops / (2 * m * n * k)))
    tiles = math.ceil(m / TILE) * math.ceil(n / TILE) * gemms
    waves = math.ceil(tiles / spec.sms)
    return tiles / (waves * spec.sms)


def launch_seconds(spec: DeviceSpec, cal: Calibration, phase: str = "forward") -> float:
    """A kernel's fixed cost: the calibration's (a backward node's its own, where measured), else the spec
    table's."""
    if phase == "backward" and cal.backward_launch_us:
        return cal.backward_launch_us * 1e-6
    return (cal.launch_us or spec.launch_us) * 1e-6


def on_cpu(op: OpCost, threads: int) -> OpCost:
    """The operator as a CPU with `threads` threads runs it: a convolution torch runs with its own kernel is
    CONV_NATIVE and moves (N − 1) more copies of its weights: one per sample forward and for the input's
    gradient, and for the weight's gradient one read and one accumulation per sample too (3 in all)."""
    conv = op.conv
    if conv is None or threads > conv.native_threads or op.op_class is OpClass.CONV_NATIVE:  # (once only)
        return op
    copies = (conv.samples - 1) * (3 if conv.weight_grad else 1)
    return replace(op, op_class=OpClass.CONV_NATIVE, bytes=op.bytes + copies * conv.weight_bytes)


def paged_in_bytes(op: OpCost, threads: int) -> int:
    """The bytes a CPU step faults in fresh for the operator: each storage of at least PAGE_MIN it allocates,
    and for a convolution oneDNN runs, its copy of the weights in oneDNN's blocked layout, as large as they are
    (one forward, and for a backward computing the weight's gradient also that gradient's blocked copy)."""
    fresh = sum(b for b in op.fresh if b >= PAGE_MIN)
    conv = op.conv
    if conv is not None and threads > conv.native_threads and conv.weight_bytes >= PAGE_MIN:
        fresh += conv.weight_bytes * (2 if conv.weight_grad else 1)
    return fresh


def page_in_seconds(op: OpCost, spec: DeviceSpec, cal: Calibration) -> float:
    """A CPU's time faulting in the operator's fresh pages (`paged_in_bytes`); 0 on a GPU (its caching allocator
    keeps memory mapped)."""
    if spec.kind != "cpu":
        return 0.0
    fresh = paged_in_bytes(op, spec.threads or 1)
    return fresh / ((cal.page_in_gbps or DEFAULT_PAGE_IN_GBPS) * 1e9) if fresh else 0.0


def weight_seconds(op: OpCost, cal: Calibration) -> float:
    """A convolution's or matrix product's time preparing its weights (`Calibration.weights_gbps` for its
    class, a backward's own where measured); 0 for other operators and where the calibration has no rate."""
    if not op.weight_bytes:
        return 0.0
    rate = (cal.backward_weights_gbps.get(op.op_class) if op.phase == "backward" else None) or \
        cal.weights_gbps.get(op.op_class)
    return op.weight_bytes / (rate * 1e9) if rate else 0.0


def op_seconds(op: OpCost, spec: DeviceSpec, cal: Calibration, tf32: bool | Callable[[OpCost], bool] = False) -> float:
    """The operator's predicted time: the larger of compute and memory time, plus one launch, plus on a CPU the
    page-ins of its fresh storages. A dtype the device has no peak for (bfloat16 on a V100 or T4) runs at
    float32's (`DeviceSpec.peak_tflops`)."""
    paged = page_in_seconds(op, spec, cal)
    if spec.kind == "cpu":
        op = on_cpu(op, spec.threads or 1)
    compute = 0.0
    if op.flops > 0:
        peak = spec.peak_tflops(op.dtype, tf32(op) if callable(tf32) else tf32) * 1e12
        compute = op.flops / (peak * compute_efficiency(op, spec, cal) * wave_factor(op, spec))
    memory = 0.0
    if op.bytes > 0:
        memory = op.bytes / (spec.bandwidth_gbps * 1e9 * memory_efficiency(op, spec, cal))
    return max(compute, memory) + launch_seconds(spec, cal, op.phase) + paged + weight_seconds(op, cal)


@dataclass
class StepTime:
    """A step's predicted time by phase and by operator class."""

    forward_s: float
    backward_s: float
    optimizer_s: float
    total_s: float
    by_class: dict[str, float] = field(default_factory=dict)  # OpClass value -> seconds; sums to total_s
    kernels: int = 0  # operators timed, each one kernel

    @property
    def dominant(self) -> list[tuple[str, float]]:
        """The classes by their share of the step, largest first."""
        total = self.total_s or 1.0
        return sorted(((c, s / total) for c, s in self.by_class.items()), key=lambda item: -item[1])


# phase -> StepTime's field; "unmarked" (before the step said) counts as forward, "end" (after the
# optimizer, or after the last phase of a step without one) as optimizer
_PHASES = {"forward": "forward", "unmarked": "forward", "backward": "backward", "optimizer": "optimizer",
           "end": "optimizer"}


def step_time(ops: list[OpCost], spec: DeviceSpec, cal: Calibration,
              tf32: bool | Callable[[OpCost], bool] = False) -> StepTime:
    """The sum of the operators' times, one kernel each, one after another; `tf32` says, for all operators or
    for each, whether float32 runs at the TF32 peak."""
    phases = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    by_class: dict[str, float] = {}
    for op in ops:
        if spec.kind == "cpu":
            op = on_cpu(op, spec.threads or 1)  # its class as the CPU runs it, in by_class too
        seconds = op_seconds(op, spec, cal, tf32)
        phases[_PHASES.get(op.phase, "forward")] += seconds
        by_class[op.op_class.value] = by_class.get(op.op_class.value, 0.0) + seconds
    return StepTime(phases["forward"], phases["backward"], phases["optimizer"], sum(phases.values()), by_class,
                    len(ops))
