"""The time model's vocabulary: operator classes, one operator's cost, efficiency curves and a calibration.

Plain data, no torch: the spec table, the classifier, the time model, the micro-benchmarks and the renderers
all read these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

MAX_PEAK_SHARE = 4.0  # the most of a roof a fitted curve may claim (a measured bandwidth is DRAM's, not a cache's)


class OpClass(str, Enum):
    """What kind of kernel an operator is: each reaches its own share of the device's roofs."""

    GEMM = "gemm"  # matrix products, linear layers
    CONV_DENSE = "conv_dense"  # groups == 1, kernel larger than 1×1
    CONV_GROUPED = "conv_grouped"  # 1 < groups < channels
    CONV_DEPTHWISE = "conv_depthwise"  # groups == input channels
    CONV_1X1 = "conv_1x1"  # pointwise, groups == 1
    # torch's own CPU convolution (im2col and one GEMM per sample), which it runs instead of oneDNN for 1×1
    # convolutions at batches under 16 on one thread, and for tiny inputs (`ConvShape.native_threads`)
    CONV_NATIVE = "conv_native"
    ATTENTION = "attention"  # scaled dot-product attention kernels
    NORMALIZATION = "normalization"  # batch, layer, group norm (forward and backward)
    ELEMENTWISE = "elementwise"  # activations, adds, multiplies, dropout
    REDUCTION = "reduction"  # sums, means, softmax, loss reductions
    POOLING = "pooling"  # max and average pooling, forward and backward (a max pool's indices cost a CPU 30× a mean)
    COPY_LAYOUT = "copy_layout"  # copies, cat, permute-with-copy, dtype casts, padding
    OPTIMIZER = "optimizer"  # the optimizer's update kernels (foreach or per-parameter)
    OTHER = "other"

    @property
    def compute_bound(self) -> bool:
        """Whether the class's kernels are judged against the compute roof first (their efficiency curve is a
        share of peak FLOP/s); the others' curves are a share of the memory bandwidth."""
        return self in (OpClass.GEMM, OpClass.CONV_DENSE, OpClass.CONV_GROUPED, OpClass.CONV_DEPTHWISE,
                        OpClass.CONV_1X1, OpClass.CONV_NATIVE, OpClass.ATTENTION)


# at most this many threads: torch always runs a convolution on the CPU with its own kernel
ANY_THREADS = 1 << 30


@dataclass(frozen=True)
class ConvShape:
    """What a CPU's convolution costs beyond its FLOPs and tensors: which kernel torch picks, and the weights."""

    samples: int  # the batch: torch's own kernel runs one GEMM per sample, reading the weights each time
    weight_bytes: int
    weight_grad: bool  # a backward that computes the weight's gradient (the others compute the input's only)
    # torch picks its own kernel over oneDNN with at most this many threads: 0 never, 1 for a 1×1 convolution
    # unstrided at a batch under 16 ("THNN is faster when single-threaded"), ANY_THREADS for a tiny input
    native_threads: int = 0


@dataclass(frozen=True)
class OpCost:
    """One operator call of a step, as the time model reads it."""

    name: str  # the aten operator, e.g. "convolution_backward"
    op_class: OpClass
    flops: int  # cnnprobe's counter (2 × MACs); 0 for operators without a formula
    bytes: int  # read and written, each distinct tensor once (trace.costs.operator_bytes)
    dtype: str  # the compute dtype of its main input: float32, bfloat16, float16, ...
    phase: str  # "forward", "backward", "optimizer" (or "unmarked")
    dims: tuple[int, int, int] | None = None  # (m, n, k) of the GEMM it is, for wave quantization on GPUs
    fresh: tuple[int, ...] = ()  # the bytes of each storage it allocates (its outputs), which a CPU may page in
    conv: ConvShape | None = None  # a convolution's kernel choice and weights, for CPUs
    # the operand a layer's weights are: a convolution's weights, a matrix product's larger input (a linear
    # layer's weight at a small batch); a CPU's kernels prepare it (reorder, pack) at a cost that follows its size
    weight_bytes: int = 0

    @property
    def work(self) -> float:
        """The size its efficiency depends on: FLOPs for a compute class, bytes for the others."""
        return float(self.flops if self.op_class.compute_bound else self.bytes)


@dataclass(frozen=True)
class Curve:
    """The share of a roof a class reaches at a given size: `peak_share × work / (work + half_work)`, rising
    from nothing for tiny kernels to `peak_share` for large ones."""

    peak_share: float
    half_work: float  # the work (FLOPs or bytes) at which half of `peak_share` is reached

    def efficiency(self, work: float) -> float:
        if work <= 0:
            return self.peak_share
        return self.peak_share * work / (work + self.half_work)


@dataclass
class Calibration:
    """Efficiency curves per class and a per-kernel launch cost for one device; `calibrated` False for defaults."""

    device_key: str  # the spec table's key ("cpu", "h100-sxm", ...)
    device_name: str  # what the machine calls itself, where measured
    compute: dict[OpClass, Curve] = field(default_factory=dict)
    memory: dict[OpClass, Curve] = field(default_factory=dict)
    launch_us: float = 0.0  # a forward operator's fixed cost: dispatch, launch, and on the CPU a module's call
    calibrated: bool = False
    source: str = "defaults"  # "measured on <device> by cnnprobe calibrate", a file, "defaults"
    threads: int | None = None
    torch: str = ""
    fit_error: float | None = None  # the micro-benchmarks' median |predicted/measured - 1| after the fit
    notes: list[str] = field(default_factory=list)
    # a backward kernel's curve where it differs from its forward's (oneDNN's weight gradients, batch norm's
    # backward): a compute curve for a compute class, a memory curve for the others
    backward: dict[OpClass, Curve] = field(default_factory=dict)
    backward_launch_us: float | None = None  # a backward node's fixed cost (autograd's engine); None: launch_us
    # a CPU: how fast the OS maps and zeroes freshly allocated pages (bytes of first touches per second / 1e9);
    # None: timemodel's default
    page_in_gbps: float | None = None
    # a convolution's weight preparation, by class, as bytes of weights per second / 1e9 (forward, backward):
    # on a CPU oneDNN reorders the weights into its blocked layout and torch's own kernel re-reads them per
    # sample on every eager call, a cost that follows the weights' size, not the FLOPs. Absent: no such cost
    weights_gbps: dict[OpClass, float] = field(default_factory=dict)
    backward_weights_gbps: dict[OpClass, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for kind in ("compute", "memory", "backward"):
            data[kind] = {c.value: asdict(v) for c, v in getattr(self, kind).items()}
        for kind in ("weights_gbps", "backward_weights_gbps"):
            data[kind] = {c.value: v for c, v in getattr(self, kind).items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Calibration":
        """The record `to_dict` wrote; raises ValueError (or KeyError, TypeError) on anything else."""
        curves = {kind: {OpClass(k): Curve(float(v["peak_share"]), float(v["half_work"]))
                         for k, v in dict(data.get(kind, {})).items()} for kind in ("compute", "memory", "backward")}
        for kind in curves.values():
            for curve in kind.values():
                # a share above 1: a CPU's caches serve kernels whose data fits in them faster than DRAM
                if not (0 < curve.peak_share <= MAX_PEAK_SHARE and curve.half_work >= 0):
                    raise ValueError(f"an efficiency curve out of range: {curve}")
        return cls(device_key=str(data["device_key"]), device_name=str(data.get("device_name", "")),
                   compute=curves["compute"], memory=curves["memory"], launch_us=float(data.get("launch_us", 0.0)),
                   calibrated=bool(data.get("calibrated", False)), source=str(data.get("source", "")),
                   threads=data.get("threads"), torch=str(data.get("torch", "")), fit_error=data.get("fit_error"),
                   notes=list(data.get("notes", [])), backward=curves["backward"],
                   backward_launch_us=data.get("backward_launch_us"),
                   page_in_gbps=None if data.get("page_in_gbps") is None else float(data["page_in_gbps"]),
                   weights_gbps=_rates(data.get("weights_gbps")),
                   backward_weights_gbps=_rates(data.get("backward_weights_gbps")))


def _rates(data: Any) -> dict[OpClass, float]:
    rates = {OpClass(k): float(v) for k, v in dict(data or {}).items()}
    if any(not v > 0 for v in rates.values()):
        raise ValueError(f"a weight rate out of range: {rates}")
    return rates


@dataclass(frozen=True)
class DeviceSpec:
    """One device the time model knows: its dense peaks, memory and shape, each figure with its source."""

    key: str  # what --device takes: "h100-sxm", "a100-sxm4-80gb", "cpu"
    name: str  # as the vendor names it
    kind: str  # "gpu" or "cpu"
    tflops: dict[str, float]  # dense (never with sparsity) peak TFLOP/s by dtype: float32, tf32, bfloat16, float16
    bandwidth_gbps: float  # memory bandwidth, GB/s
    memory_bytes: int
    sms: int | None = None  # streaming multiprocessors (GPUs): waves of tiles are counted over them
    boost_mhz: int | None = None
    launch_us: float = 0.0  # a kernel's fixed cost where no calibration says otherwise
    sources: dict[str, str] = field(default_factory=dict)  # figure -> where it comes from (datasheet, page)
    matches: tuple[str, ...] = ()  # substrings of torch.cuda.get_device_name() that identify this device
    threads: int | None = None  # a CPU: the threads its roofs were measured with, and its steps run on

    def peak_tflops(self, dtype: str, tf32: bool = False) -> float:
        """The dense peak for a compute dtype; float32 under TF32 where the device has it and `tf32` is on; a
        dtype the device lacks (bfloat16 on a V100) runs at float32's."""
        if dtype == "float32" and tf32 and "tf32" in self.tflops:
            return self.tflops["tf32"]
        return self.tflops.get(dtype, self.tflops["float32"])
