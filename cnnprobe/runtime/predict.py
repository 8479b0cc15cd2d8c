"""`predict`: a training step's time on a device you may not have, before running it, with an error band.

The step is bench's own, run on fake tensors by `cnnprobe memory` (which also says whether it fits): every
operator it records, forward, backward and the optimizer's, gets a class, FLOPs and bytes (`opclass`) and a
time under the device's roofs and its class's efficiency at that size (`timemodel`). The efficiencies come
from a calibration measured on that device (`cnnprobe calibrate`), or else from defaults, and then the output
says "uncalibrated" and the band is wider. What the model ignores is said with every prediction.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

from ..core.enums import Device, DType, Mode, Optimizer
from ..core.errors import UsageError
from ..memory.predict import MemoryReport, Predictor
from ..models.build import check_batch
from ..models.freezing import FreezePlan
from ..models.request import ModelRequest, RequestOptions, requested
from ..training.config import BenchConfig
from .calibration import cached, load
from .hardware import cpu_spec, device_spec
from .opclass import classify_all
from .records import Calibration, DeviceSpec, OpCost
from .timemodel import DEFAULT_CPU, DEFAULT_GPU, StepTime, step_time

if TYPE_CHECKING:
    from torch import nn

# The band around a prediction is a factor, as its errors are (a step predicted at half its time is as far off as
# one predicted at twice it): [predicted / (1 + band), predicted × (1 + band)]. From reports/predict-accuracy.md,
# the 90th percentile of max(r, 1/r) - 1 for r = predicted/measured: over this machine's CPU steps where
# calibrated, and over the published GPU rows predicted from the datasheet alone where uncalibrated.
BAND_CALIBRATED = 0.85
BAND_UNCALIBRATED = 0.95
IGNORED = ("the model ignores overlap between kernels, data loading, the host's Python and dispatch time under a "
           "GPU's kernels, fusion and the choice of convolution algorithm")


@dataclass
class TimeResult:
    """One mode and plan on one device: the predicted step, its phases, and whether it fits."""

    mode: str
    frozen: bool
    predicted_ms: float
    low_ms: float
    high_ms: float
    forward_ms: float
    backward_ms: float
    optimizer_ms: float
    samples_per_s: float
    epoch_s: float | None  # --dataset-size samples, once, at this batch (the last batch partial)
    by_class: dict[str, float]  # operator class -> ms of the step
    predicted_peak_bytes: int
    fits: bool
    kernels: int  # operators timed

    def dominant(self, top: int = 3) -> list[tuple[str, float]]:
        """The classes that take most of the step, with their share."""
        total = sum(self.by_class.values()) or 1.0
        return [(c, ms / total) for c, ms in sorted(self.by_class.items(), key=lambda kv: -kv[1])[:top]]


@dataclass
class TimeReport:
    """What `cnnprobe predict` says of one model at one batch on one device."""

    model: str
    task: str
    device: str  # the spec table's key
    device_name: str
    batch: int
    dtype: str
    channels_last: bool
    optimizer: str
    calibrated: bool
    calibration: str  # where the efficiencies come from
    band: float  # [low_ms, high_ms] is [predicted / (1 + band), predicted × (1 + band)]
    memory_bytes: int  # the device's
    input_size: list[int]
    dataset_size: int | None = None
    epochs: int = 1
    results: list[TimeResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibration_for(spec: DeviceSpec, file: str | Path | None = None, threads: int | None = None) -> Calibration:
    """The efficiencies to predict `spec` with: a file given, else one measured on that device and cached, else
    the defaults (uncalibrated)."""
    if file is not None:
        cal = load(file)
        if cal.device_key != spec.key:
            raise UsageError(f"--calibration {file} was measured on {cal.device_key} ({cal.device_name}), not "
                             f"{spec.key}: predict with --device {cal.device_key}, or calibrate on {spec.key}")
        return cal
    import torch

    found = cached(spec.key, (threads or torch.get_num_threads()) if spec.kind == "cpu" else None)
    if found is not None:
        return found
    default = DEFAULT_CPU if spec.kind == "cpu" else DEFAULT_GPU
    return Calibration(**{**default.__dict__, "device_key": spec.key, "device_name": spec.name})


def _tf32(op: OpCost) -> bool:
    """torch's defaults on a GPU: float32 convolutions run in TF32 (cudnn.allow_tf32), matrix products do not
    (matmul.allow_tf32 is off)."""
    return op.dtype == "float32" and op.op_class.value.startswith("conv")


def _result(mode: str, frozen: bool, t: StepTime, batch: int, peak: int, spec: DeviceSpec, band: float,
            dataset_size: int | None, epochs: int) -> TimeResult:
    ms = 1e3 * t.total_s
    epoch = None if dataset_size is None else epochs * math.ceil(dataset_size / batch) * t.total_s
    return TimeResult(mode=mode, frozen=frozen, predicted_ms=ms, low_ms=ms / (1 + band), high_ms=ms * (1 + band),
                      forward_ms=1e3 * t.forward_s, backward_ms=1e3 * t.backward_s, optimizer_ms=1e3 * t.optimizer_s,
                      samples_per_s=batch / t.total_s if t.total_s > 0 else math.inf, epoch_s=epoch,
                      by_class={k: 1e3 * v for k, v in t.by_class.items()}, predicted_peak_bytes=peak,
                      fits=peak <= spec.memory_bytes, kernels=t.kernels)


def time_results(memory: Predictor, report: MemoryReport, spec: DeviceSpec, cal: Calibration, batch: int, *,
                 dataset_size: int | None = None, epochs: int = 1) -> list[TimeResult]:
    """Each of memory's predicted steps (run with `keep_ops`) timed on `spec`: one fake run for both."""
    band = BAND_CALIBRATED if cal.calibrated else BAND_UNCALIBRATED
    out = []
    for r in report.results:
        t = step_time(classify_all(memory.ops[(r.mode, r.frozen)]), spec, cal, tf32=_tf32)
        out.append(_result(r.mode, r.frozen, t, batch, r.predicted_peak_bytes, spec, band, dataset_size, epochs))
    return out


class TimePredictor:
    """One model under one configuration on one device, at any batch: memory's fake run, then the time model."""

    def __init__(self, model: "str | nn.Module", config: BenchConfig, spec: DeviceSpec, calibration: Calibration):
        self.spec, self.calibration = spec, calibration
        self.config = config.replace(device=Device.CPU if spec.kind == "cpu" else Device.CUDA)
        self.memory = Predictor(model, self.config)

    def at(self, batch: int, *, dataset_size: int | None = None, epochs: int = 1) -> TimeReport:
        check_batch(batch)
        config, spec, cal = self.config, self.spec, self.calibration
        memory = self.memory.at(batch, keep_ops=True, workspaces=spec.kind == "cpu")
        band = BAND_CALIBRATED if cal.calibrated else BAND_UNCALIBRATED
        report = TimeReport(
            model=memory.model, task=self.memory.built.spec.task.value, device=spec.key, device_name=spec.name,
            batch=batch, dtype=DType(config.dtype).value, channels_last=config.channels_last,
            optimizer=Optimizer(config.optimizer).value, calibrated=cal.calibrated, calibration=cal.source,
            band=band, memory_bytes=spec.memory_bytes, input_size=memory.input_size, dataset_size=dataset_size,
            epochs=epochs, notes=[*memory.notes, IGNORED])
        if not cal.calibrated:
            how = ("cnnprobe calibrate --device cpu" if spec.kind == "cpu"
                   else f"cnnprobe calibrate --device cuda on a {spec.name}")
            report.notes.append(f"uncalibrated: {spec.key}'s efficiencies are cnnprobe's defaults, so the band is "
                                f"×/÷ {1 + band:.2f}; `{how}` measures them")
        report.results = time_results(self.memory, memory, spec, cal, batch, dataset_size=dataset_size,
                                      epochs=epochs)
        return report


def here(device: str, threads: int | None = None) -> DeviceSpec:
    """The spec of the device this process runs on: the CPU with its measured roofs, or the GPU's table entry
    (else one from its measured roofs)."""
    if device == "cpu":
        return resolve_device("cpu", threads)
    import torch

    from ..training.devices import device_name
    from .bandwidth import measured_bandwidth
    from .flops_peak import measured
    from .hardware import matching

    spec = matching(device_name(device))
    if spec is not None:
        return spec
    threads = threads or torch.get_num_threads()
    free, total = torch.cuda.mem_get_info()
    peak, bandwidth = measured(device, "float32", threads), measured_bandwidth(device, threads)
    return DeviceSpec("cuda", device_name(device), "gpu", {"float32": peak.tflops}, bandwidth.gbps, total,
                      sources={"all": "measured on this machine (not in the spec table)"})


def resolve_device(key: str, threads: int | None = None) -> DeviceSpec:
    """A key of the spec table, or "cpu": this machine, its roofs measured as bench measures its peak."""
    if key != "cpu":
        return device_spec(key)
    import torch

    from ..memory.host import available_bytes
    from .bandwidth import measured_bandwidth
    from .flops_peak import measured

    threads = threads or torch.get_num_threads()
    peak, bandwidth = measured("cpu", "float32", threads), measured_bandwidth("cpu", threads)
    return cpu_spec(peak.tflops, bandwidth.gbps, available_bytes() or 0, peak.detail, threads)


def predict(model: "str | nn.Module | ModelRequest", device: str = "cpu", *, plan: FreezePlan | None = None,
            mode: Mode | str = Mode.ALL, optimizer: Optimizer | str = Optimizer.SGD,
            dtype: DType | str = DType.FLOAT32, channels_last: bool = False, dataset_size: int | None = None,
            epochs: int = 1, calibration: str | Path | None = None, threads: int | None = None,
            **options: Unpack[RequestOptions]) -> TimeReport:
    """A step's predicted time on `device` (a spec table key, or "cpu" for this machine) for each mode and plan,
    with its band, samples/s, epoch time and whether its predicted peak memory fits."""
    request, plan = requested(model, plan, **options)
    if dataset_size is not None and dataset_size <= 0:
        raise UsageError(f"--dataset-size must be positive, got {dataset_size}")
    if epochs <= 0:
        raise UsageError(f"--epochs must be positive, got {epochs}")
    if request.model is None:
        raise TypeError("predict() needs a model")
    spec = resolve_device(device, threads)
    config = BenchConfig(dtype=dtype, mode=mode, optimizer=optimizer, channels_last=channels_last, request=request,
                         plan=plan, threads=threads)
    predictor = TimePredictor(request.model, config, spec, calibration_for(spec, calibration, threads))
    return predictor.at(request.batch, dataset_size=dataset_size, epochs=epochs)
