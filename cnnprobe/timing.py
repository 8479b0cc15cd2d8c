"""`bench`: forward, backward and train-step timings you can trust.

A runner with phases, as in timm's benchmark.py: setup (model, input,
precision, memory format, compile, optimizer), then for each mode warm-up
steps that are not counted, timed steps through torch.utils.benchmark (whose
timer synchronises CUDA) repeated until the median is stable within a time
budget, one more step for peak memory, and the same statistics for every
mode: median, IQR, number of runs, and a flag when IQR/median is high.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .enums import Device, DType, Mode, Optimizer
from .trace import training_loss
from .errors import CnnprobeError, InputSizeError, UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .peak import Peak

NOISY = 0.10  # IQR / median above this is flagged
CPU_AUTO_LIMIT = 4096
CUDA_AUTO_LIMIT = 65536


class OutOfMemory(CnnprobeError):
    """A batch did not fit; the memory has been freed."""

    exit_code = 1

    def __init__(self, model: str, batch: int, device: str, detail: str) -> None:
        self.model, self.batch, self.device, self.detail = model, batch, device, detail
        super().__init__(f"{model} at batch {batch} ran out of memory on {device}: {detail}")


# torch.utils.benchmark and torch.compile import cpp_extension, which logs a note about a missing CUDA
# toolkit on machines without one; it is not ours to print.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def timer_module() -> Any:
    """torch.utils.benchmark (imported on first use: it is slow to import)."""
    import torch.utils.benchmark as benchmark

    return benchmark


def is_oom(error: BaseException) -> bool:
    """Whether an exception means an allocation failed (CUDA or CPU)."""
    import torch

    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if t)
    if isinstance(error, (MemoryError, *oom_types)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class ModeResult:
    """One mode's timings. Times are per step of the whole batch."""

    mode: str
    median_ms: float
    iqr_ms: float
    runs: int  # timed steps
    samples_per_s: float
    peak_memory_bytes: int
    noisy: bool  # IQR above NOISY × median
    frozen: bool = False  # measured with the freezing plan applied
    flops: int | None = None  # counted FLOPs per step (forward, plus backward where there is one)
    tflops: float | None = None  # achieved
    peak_share: float | None = None  # of the device's peak
    forward_train_ms: float | None = None  # forward in train mode with autograd recording
    backward_ms: float | None = None  # forward_backward median − forward_train median
    optimizer_ms: float | None = None  # train_step median − forward_backward median


@dataclass
class BenchResult:
    """What `cnnprobe bench` reports for one model at one batch size."""

    model: str
    source: str
    device: str
    device_name: str
    batch: int
    dtype: str
    input_size: list[int]
    threads: int
    settings: dict[str, Any]
    peak: dict[str, Any] | None
    results: list[ModeResult] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    notes: list[str] = field(default_factory=list)

    def result(self, mode: str, frozen: bool | None = None) -> ModeResult | None:
        for r in self.results:
            if r.mode == mode and (frozen is None or r.frozen == frozen):
                return r
        return None

    def frozen_saving(self, mode: str) -> float | None:
        """How much less time a step takes with the freezing plan than without, as a share."""
        frozen, full = self.result(mode, True), self.result(mode, False)
        if frozen is None or full is None or not full.median_ms:
            return None
        return 1 - frozen.median_ms / full.median_ms

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["frozen_saving"] = {m: s for m in ("forward_backward", "train_step")
                                 if (s := self.frozen_saving(m)) is not None}
        return data


@dataclass
class BenchConfig:
    """Everything a benchmark run depends on, besides the model and batch."""

    device: Device | str = Device.CPU
    dtype: DType | str = DType.FLOAT32
    mode: Mode | str = Mode.ALL
    channels_last: bool = False
    compile: bool = False
    threads: int | None = None
    min_time: float = 1.0
    max_time: float | None = None  # default: 10 × min_time
    warmup: int = 3
    optimizer: Optimizer | str = Optimizer.SGD
    freeze_all: bool = False
    freeze_except: str | Sequence[str] | None = None
    freeze: str | Sequence[str] | None = None
    num_classes: int | None = None
    input_size: str | tuple[int, ...] | None = None
    weights: str | None = None
    trust: bool = False
    count_flops: bool = True
    peak: bool = True

    def __post_init__(self) -> None:
        self.device = Device(self.device)
        self.dtype = DType(self.dtype)
        self.mode = Mode(self.mode)
        self.optimizer = Optimizer(self.optimizer)
        if not (self.min_time > 0 and math.isfinite(self.min_time)):
            raise UsageError(f"--min-time must be a positive number of seconds, got {self.min_time}")
        if self.max_time is not None and not (self.max_time >= self.min_time and math.isfinite(self.max_time)):
            raise UsageError(f"--max-time must be at least --min-time ({self.min_time} s), got {self.max_time}")
        if self.threads is not None and self.threads <= 0:
            raise UsageError(f"--threads must be positive, got {self.threads}")
        if self.warmup < 0:
            raise UsageError(f"--warmup must be 0 or more, got {self.warmup}")

    @property
    def modes(self) -> list[Mode]:
        return Mode.expand(self.mode)

    @property
    def freezing(self) -> bool:
        return bool(self.freeze_all or self.freeze_except or self.freeze)


def check_device(device: Device | str) -> str:
    """A device that exists here, or one clear error."""
    import torch

    device = Device(device)
    if device is Device.CUDA and not torch.cuda.is_available():
        raise CnnprobeError("--device cuda: no CUDA device is available here (torch.cuda.is_available() is False)")
    return device.value


def settings(config: BenchConfig, threads: int) -> dict[str, Any]:
    """The switches that change timings, stated with every result."""
    import torch

    out: dict[str, Any] = {
        "threads": threads,
        "autocast": None if config.dtype is DType.FLOAT32 else config.dtype.value,
        "channels_last": config.channels_last,
        "compile": config.compile,
        "optimizer": Optimizer(config.optimizer).value,
        "torch": torch.__version__,
    }
    if Device(config.device) is Device.CUDA:
        out.update(
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
            float32_matmul_precision=torch.get_float32_matmul_precision(),
        )
    return out


class Runner:
    """Times one model at one batch size on one device, mode by mode."""

    def __init__(self, model: "str | nn.Module", batch: int, config: BenchConfig) -> None:
        self.model_ref = model
        self.batch = batch
        self.config = config
        self.device = check_device(config.device)
        self.built: Any = None
        self.module: "nn.Module | None" = None
        self.x: "torch.Tensor | None" = None
        self.target: "torch.Tensor | None" = None
        self.flops: dict[str, int | None] = {}
        self.peak: "Peak | None" = None
        self.result: BenchResult | None = None  # filled mode by mode, so an interrupted run keeps what it has

    # ---- setup
    def setup(self) -> None:
        """Model, input, precision, memory format, compile. `bench` restores the global switches after."""
        import copy

        import torch
        from torch import nn

        from .build import build_model

        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        if self.device == "cuda":
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(0)
        model = self.model_ref
        if isinstance(model, nn.Module):  # never change the caller's module: time a copy on the device
            model = copy.deepcopy(model).to(self.device)
        self.built = build_model(model, num_classes=self.config.num_classes,
                                 input_size=self.config.input_size, device=self.device,
                                 weights=self.config.weights, trust=self.config.trust)
        module = self.built.module
        shape = (self.batch, *self.built.input_shape)
        self.x = torch.randn(shape, device=self.device)
        self.target = torch.randint(0, 1000, (self.batch,), device=self.device)
        if self.config.channels_last:
            module = module.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.raw = module
        self.module = torch.compile(module) if self.config.compile else module

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        if DType(self.config.dtype) is DType.FLOAT32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=getattr(torch, DType(self.config.dtype).value))

    def set_frozen(self, frozen: bool) -> None:
        from .freezing import FreezePlan

        for p in self.raw.parameters():
            p.requires_grad_(True)
        if frozen:
            FreezePlan.from_options(self.config.freeze_all, self.config.freeze_except, self.config.freeze).apply(self.raw)
        training = any(m is not Mode.FORWARD for m in self.config.modes)
        if training and not any(p.requires_grad for p in self.raw.parameters()):
            raise CnnprobeError("nothing is trainable after freezing: give the model a new head (--num-classes) "
                                "or freeze less")

    def _optimizer(self) -> "torch.optim.Optimizer":
        import torch

        params = [p for p in self.raw.parameters() if p.requires_grad]
        kind = Optimizer(self.config.optimizer)
        if kind is Optimizer.ADAM:
            return torch.optim.Adam(params, lr=1e-4)
        if kind is Optimizer.ADAMW:
            return torch.optim.AdamW(params, lr=1e-4)
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9 if kind is Optimizer.MOMENTUM else 0.0)

    def step(self, mode: Mode | str) -> Callable[[], object]:
        """The callable one timed run executes."""
        import torch

        module, x, target, autocast = self.module, self.x, self.target, self.autocast
        assert module is not None and x is not None and target is not None
        mode = str(Mode(mode).value) if mode != "forward_train" else mode
        if mode == "forward":
            module.eval()

            def forward() -> object:
                with torch.inference_mode(), autocast():
                    return module(x)

            return forward
        module.train()
        if mode == "forward_train":

            def forward_train() -> object:
                with autocast():
                    return training_loss(module(x), target)

            return forward_train
        if mode == "forward_backward":

            def forward_backward() -> object:
                module.zero_grad(set_to_none=True)
                with autocast():
                    loss = training_loss(module(x), target)
                loss.backward()
                return None

            return forward_backward
        optimizer = self._optimizer()

        def train_step() -> object:
            with autocast():
                loss = training_loss(module(x), target)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return None

        train_step.optimizer = optimizer  # type: ignore[attr-defined]
        return train_step

    # ---- measuring
    def time(self, fn: Callable[[], object]) -> tuple[float, float, int]:
        """Warm-up, then timed runs until the median is stable: (median s, IQR s, runs)."""
        import torch

        for _ in range(self.config.warmup):
            fn()
        benchmark = timer_module()
        timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
        max_time = self.config.max_time or 10 * self.config.min_time
        m = timer.adaptive_autorange(threshold=NOISY, min_run_time=self.config.min_time, max_run_time=max_time)
        return m.median, m.iqr, len(m.times) * m.number_per_run

    def memory(self, fn: Callable[[], object]) -> int:
        from .memory import cpu_peak, cuda_peak, storage_bytes

        if self.device == "cuda":
            return cuda_peak(fn, self.device)
        held = [*self.raw.parameters(), *self.raw.buffers(), self.x, self.target]
        held += [p.grad for p in self.raw.parameters() if p.grad is not None]
        for state in getattr(getattr(fn, "optimizer", None), "state", {}).values():
            held += [v for v in state.values() if hasattr(v, "untyped_storage")]
        return cpu_peak(fn, storage_bytes(held))

    def count_flops(self) -> None:
        """FLOPs per step from the meta-device count: forward, and backward with and without freezing."""
        from .flopcount import flops

        if not self.config.count_flops:
            return
        if self.built.spec.source.value == "module":  # count on a meta copy; never touch the user's module
            import copy

            ref: Any = copy.deepcopy(self.raw).to("meta")
        else:
            ref = self.built.spec
        kwargs: dict[str, Any] = dict(batch=self.batch, input_size=self.built.input_shape,
                                      num_classes=self.config.num_classes, depth=0)
        needs_backward = any(m is not Mode.FORWARD for m in self.config.modes)
        full = flops(ref, backward=needs_backward, **kwargs)
        self.flops["forward"] = full.flops
        self.flops["backward"] = full.backward_flops
        if needs_backward and self.config.freezing:
            frozen = flops(ref, backward=True, freeze_all=self.config.freeze_all,
                           freeze_except=self.config.freeze_except, freeze=self.config.freeze, **kwargs)
            self.flops["backward_frozen"] = frozen.backward_flops

    def run_mode(self, mode: Mode, frozen: bool, forward_train: float | None = None,
                 forward_backward: float | None = None) -> ModeResult:
        fn = self.step(mode)
        median, iqr, runs = self.time(fn)
        peak_memory = self.memory(fn)
        step_flops = self.flops.get("forward")
        if mode is not Mode.FORWARD and step_flops is not None:
            backward = self.flops.get("backward_frozen" if frozen else "backward")
            step_flops = None if backward is None else step_flops + backward
        tflops = step_flops / median / 1e12 if step_flops else None
        result = ModeResult(
            mode=mode.value, median_ms=1e3 * median, iqr_ms=1e3 * iqr, runs=runs, samples_per_s=self.batch / median,
            peak_memory_bytes=peak_memory, noisy=iqr > NOISY * median, frozen=frozen, flops=step_flops,
            tflops=tflops, peak_share=tflops / self.peak.tflops if tflops and self.peak else None,
        )
        if mode is Mode.FORWARD_BACKWARD and forward_train is not None:
            result.forward_train_ms = 1e3 * forward_train
            result.backward_ms = max(0.0, 1e3 * (median - forward_train))
        if mode is Mode.TRAIN_STEP and forward_backward is not None:
            result.optimizer_ms = max(0.0, 1e3 * (median - forward_backward))
        return result

    def explain(self, mode: Mode | str, error: BaseException) -> Exception:
        """A step failed for a reason other than memory: run it once more under the tracer to name the layer."""
        from .trace import Tracer, explain_failure

        tracer = Tracer(self.raw, fast_meta=False)
        try:
            with tracer:
                self.step(mode)()
        except Exception as again:  # noqa: BLE001
            error = again
        return explain_failure(tracer, error, model=self.built.name, input_shape=list(self.x.shape))

    def run(self, on_phase: Callable[[str], None] | None = None) -> BenchResult:
        """Every configured mode; with freezing, backward modes also once without, for comparison.

        Thread count, cudnn.benchmark and the random generators are as they were afterwards.
        """
        import torch

        threads, cudnn_benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
        devices = [torch.device(self.device).index or 0] if self.device == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                return self._run(on_phase)
        finally:
            torch.set_num_threads(threads)
            torch.backends.cudnn.benchmark = cudnn_benchmark

    def _run(self, on_phase: Callable[[str], None] | None) -> BenchResult:
        import torch

        from .peak import datasheet, measured

        self.setup()
        self.count_flops()
        threads = torch.get_num_threads()
        if self.config.peak and self.config.count_flops:
            self.peak = measured(self.device, DType(self.config.dtype).value, threads)
        raw = self.raw
        result = self.result = BenchResult(
            model=self.built.name, source=self.built.spec.source.value, device=self.device,
            device_name=_device_name(self.device), batch=self.batch, dtype=DType(self.config.dtype).value,
            input_size=[self.batch, *self.built.input_shape], threads=threads,
            settings=settings(self.config, threads), peak=asdict(self.peak) if self.peak else None,
            total_params=sum(p.numel() for p in raw.parameters()),
        )
        if result.peak is not None and self.device == "cuda":
            table = datasheet(result.device_name, result.dtype, bool(torch.backends.cuda.matmul.allow_tf32))
            result.peak["datasheet"] = asdict(table) if table else None
        variants = [True, False] if self.config.freezing else [False]
        for frozen in variants:
            self.set_frozen(frozen)
            if frozen or not self.config.freezing:
                result.trainable_params = sum(p.numel() for p in raw.parameters() if p.requires_grad)
            forward_train = forward_backward = None
            for mode in self.config.modes:
                if mode is Mode.FORWARD and not frozen and self.config.freezing:
                    continue  # freezing does not change the forward pass
                if on_phase:
                    on_phase(f"{self.built.name} b{self.batch} {mode.value}{' (full, for comparison)' if self.config.freezing and not frozen else ''}")
                try:
                    if mode is Mode.FORWARD_BACKWARD:
                        forward_train = self.time(self.step("forward_train"))[0]
                    r = self.run_mode(mode, frozen and mode is not Mode.FORWARD, forward_train, forward_backward)
                except (CnnprobeError, KeyboardInterrupt):
                    raise
                except Exception as e:  # noqa: BLE001 - the model failed: say where, unless memory ran out
                    if is_oom(e):
                        raise
                    raise self.explain(mode, e) from None
                if mode is Mode.FORWARD_BACKWARD:
                    forward_backward = r.median_ms / 1e3
                result.results.append(r)
        if self.built.weights is not None:
            result.notes.append(self.built.weights.describe())
        if DType(self.config.dtype) is DType.FLOAT16 and any(m is not Mode.FORWARD for m in self.config.modes):
            result.notes.append("float16 training is timed without a GradScaler")
        return result

    def close(self) -> None:
        self.module = self.raw = self.x = self.target = None  # type: ignore[assignment]
        self.built = None
        free_memory()


def _device_name(device: str) -> str:
    from .peak import device_name

    return device_name(device)


def bench(model: "str | nn.Module", batch: int = 1, config: BenchConfig | None = None, **options: Any) -> BenchResult:
    """Time one model at one batch size; options are BenchConfig's fields.

    Raises OutOfMemory (after freeing the memory) when the batch does not fit.
    """
    from .build import check_batch

    config = config or BenchConfig(**options)
    check_batch(batch)
    runner = Runner(model, batch, config)
    detail = None
    try:
        return runner.run()
    except Exception as e:  # noqa: BLE001
        if not is_oom(e):
            raise
        detail = _first_line(e)  # keep the text only: the exception's frames hold the tensors
    finally:
        runner.close()
    free_memory()
    raise OutOfMemory(str(model), batch, Device(config.device).value, detail)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def find_max_batch(fits: Callable[[int], bool], start: int = 1, limit: int = CPU_AUTO_LIMIT) -> int:
    """The largest batch for which `fits` holds: doubling from `start`, then bisection. 0 if none fits."""
    if not fits(start):
        return 0
    good = start
    while True:
        trial = min(good * 2, limit)
        if trial == good:
            return good  # the search's upper limit
        if not fits(trial):
            bad = trial
            break
        good = trial
    while bad - good > 1:
        middle = (good + bad) // 2
        if fits(middle):
            good = middle
        else:
            bad = middle
    return good


def _estimated_bytes(model: "str | nn.Module", batch: int, config: BenchConfig) -> int:
    """A generous training-memory estimate from the meta-device summary: weights, gradients, optimizer
    state and twice the activations. Used to refuse CPU batches the machine cannot hold."""
    from .inspect import summary

    s = summary(model, batch=batch, input_size=config.input_size, num_classes=config.num_classes, depth=0)
    training = any(m is not Mode.FORWARD for m in config.modes)
    state = Optimizer(config.optimizer).state_per_param if training else 0
    return s.param_bytes * ((2 + state) if training else 1) + s.activation_bytes * (2 if training else 1)


def fits_on_cpu(model: "str | nn.Module", batch: int, config: BenchConfig) -> tuple[bool, int, int | None]:
    from .memory import available_bytes

    need = _estimated_bytes(model, batch, config)
    available = available_bytes()
    return (available is None or need < 0.8 * available), need, available


def auto_batch(model: "str | nn.Module", config: BenchConfig) -> int:
    """The largest batch whose heaviest configured step fits in memory."""
    heaviest = config.modes[-1]

    def fits(batch: int) -> bool:
        if Device(config.device) is Device.CPU and not fits_on_cpu(model, batch, config)[0]:
            return False
        probe = BenchConfig(**{**asdict_config(config), "mode": heaviest, "count_flops": False, "peak": False})
        runner = Runner(model, batch, probe)
        try:
            runner.setup()
            runner.set_frozen(config.freezing)
            runner.step(heaviest)()
            return True
        except Exception as e:  # noqa: BLE001
            if is_oom(e):
                return False
            raise
        finally:
            runner.close()

    limit = CUDA_AUTO_LIMIT if Device(config.device) is Device.CUDA else CPU_AUTO_LIMIT
    best = find_max_batch(fits, 1, limit)
    if best == 0:
        raise OutOfMemory(str(model), 1, Device(config.device).value, "not even batch 1 fits")
    return best


def asdict_config(config: BenchConfig) -> dict[str, Any]:
    return {f: getattr(config, f) for f in config.__dataclass_fields__}


@dataclass
class Failure:
    model: str
    batch: int
    reason: str
    largest_fit: int | None  # the largest batch of this model that ran, in this sweep


@dataclass
class Sweep:
    """Several models and batch sizes, as one table."""

    runs: list[BenchResult] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    interrupted: bool = False
    auto: dict[str, int] = field(default_factory=dict)  # model -> batch found by --batch auto

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [r.to_dict() for r in self.runs], "failures": [asdict(f) for f in self.failures],
                "interrupted": self.interrupted, "auto_batch": self.auto}

    def report(self) -> dict[str, Any]:
        """What --json prints: the run itself for one model at one batch, the whole sweep otherwise."""
        if len(self.runs) == 1 and not self.failures and not self.interrupted:
            single = self.runs[0].to_dict()
            if self.auto:
                single["auto_batch"] = self.auto
            return single
        return self.to_dict()

    def failure_text(self, device: str) -> str:
        return "; ".join(
            f"{f.model} at batch {f.batch} ran out of memory on {device} ({f.reason})"
            + (f"; the largest batch that fit was {f.largest_fit}" if f.largest_fit else "")
            for f in self.failures)


def parse_batches(text: str | int | Sequence[int | str]) -> list[int | str]:
    """`"1,8,32"` -> [1, 8, 32]; `"auto"` stays; anything else is one clear error."""
    items = text.split(",") if isinstance(text, str) else list(text) if not isinstance(text, int) else [text]
    out: list[int | str] = []
    for item in items:
        item = str(item).strip().lower()
        if item == "auto":
            out.append("auto")
            continue
        try:
            value = int(item)
        except ValueError:
            raise InputSizeError(f"--batch takes positive integers or 'auto', got '{item}'") from None
        if value <= 0:
            raise InputSizeError(f"--batch must be a positive integer, got {value}")
        out.append(value)
    if not out:
        raise InputSizeError("--batch is empty")
    return out


def sweep(
    models: Sequence["str | nn.Module"],
    batches: Sequence[int | str],
    config: BenchConfig,
    on_phase: Callable[[str], None] | None = None,
) -> Sweep:
    """Every model at every batch size. An out-of-memory batch is recorded and the larger ones skipped;
    Ctrl-C stops the sweep and keeps what was measured."""
    out = Sweep()
    for model in models:
        largest: int | None = None
        for batch in batches:
            try:
                if batch == "auto":
                    batch = auto_batch(model, config)
                    out.auto[str(model)] = batch
                batch = int(batch)
                if Device(config.device) is Device.CPU:
                    ok, need, available = fits_on_cpu(model, batch, config)
                    if not ok:
                        raise OutOfMemory(str(model), batch, "cpu", f"needs about {need / 2**30:.1f} GiB, "
                                          f"{(available or 0) / 2**30:.1f} GiB available")
                runner = Runner(model, batch, config)
                detail = None
                try:
                    out.runs.append(runner.run(on_phase=on_phase))
                    largest = batch
                except KeyboardInterrupt:
                    if runner.result is not None and runner.result.results:
                        runner.result.notes.append("interrupted")
                        out.runs.append(runner.result)
                    raise
                except Exception as e:  # noqa: BLE001
                    if not is_oom(e):
                        raise
                    detail = _first_line(e)  # only the text: the exception's frames hold the tensors
                finally:
                    runner.close()
                if detail is not None:
                    raise OutOfMemory(str(model), batch, Device(config.device).value, detail)
            except OutOfMemory as e:
                out.failures.append(Failure(str(model), e.batch, e.detail, largest))
                free_memory()
                break  # larger batches of this model will not fit either
            except KeyboardInterrupt:
                out.interrupted = True
                return out
    return out
