"""`bench`: forward, backward and train-step timings you can trust, for one model at one batch size.

`Bench` runs the phases in order: setup (`runners.BenchSetup`), the FLOP count
of each step on meta, the device's peak, then each planned mode's runner
(with freezing, the backward modes once frozen and once with everything
trainable, for comparison). It keeps what it has measured in `result`, so an
interrupted run still has something to show. Thread count, cudnn.benchmark
and the random generators are as they were afterwards.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch

from ..analysis.flops import step_flops as count_steps
from ..core.enums import Device, DType, Mode, Source, Task
from ..core.errors import CnnprobeError, ForwardError, OutOfMemory
from ..models.build import check_batch
from ..models.request import ModelRequest
from ..runtime.flops_peak import Peak, at_least, datasheet, measured
from ..runtime.predict import calibration_for, here, time_results
from ..trace.failures import explain_failure
from ..trace.tracer import Tracer
from ..training.config import BenchConfig, settings
from ..training.devices import device_name, free_memory, is_oom
from ..training.steps import plan, walk
from .int8 import NOTE, checked_config, float_twin, saving, twin_config
from .prepared import Prepared
from .result import BenchResult, ModeResult, merge_repeats
from .runners import RUNNERS, BenchSetup, ModeRunner

if TYPE_CHECKING:
    from torch import nn


def step_flops(setup: BenchSetup, config: BenchConfig, prepared: Prepared | None = None) -> dict[str, int | None]:
    """FLOPs of one step of each kind, counted on meta: the eval forward, and the train-mode forward with
    its backward, all trainable and (with a plan) frozen. The count runs on a copy of the run's meta
    build (`prepared`) where it stands for the device's; else on a meta copy of what the setup built."""
    built = setup.built
    assert built is not None and setup.raw is not None
    if not config.count_flops:
        return {}
    meta = prepared.built(built.inputs) if prepared is not None else None
    if meta is None:
        module = built.spec.source is Source.MODULE  # a module passed in holds its new head already
        ref: Any = copy_to_meta(setup.raw) if module else built.spec
        meta = config.request.build(ref, inputs=built.inputs, weights=False, head=not module)
    return count_steps(meta, setup.batch, config.plan, training=config.training)


def predicted_peaks(model: "str | nn.Module", batch: int, config: BenchConfig,
                    prepared: Prepared | None = None) -> dict[tuple[str, bool], tuple[int, float | None]]:
    """`cnnprobe memory`'s prediction of every planned step's peak and `cnnprobe predict`'s of its time on this
    device, from one fake run, to print beside what is measured."""
    if not config.predict or config.compile:
        return {}
    try:
        predictor = (prepared or Prepared(model, config)).predictor()
        report = predictor.at(batch, keep_ops=True, workspaces=config.memory)
    except CnnprobeError:  # a model that cannot run on fake tensors is measured all the same
        return {}
    times: dict[tuple[str, bool], float] = {}
    try:
        spec = here(Device(config.device).value, config.threads)
        for t in time_results(predictor, report, spec, calibration_for(spec, threads=config.threads), batch):
            times[(t.mode, t.frozen)] = t.predicted_ms
    except CnnprobeError:
        pass
    return {(r.mode, r.frozen): (r.predicted_peak_bytes if config.memory else 0, times.get((r.mode, r.frozen)))
            for r in report.results}


def copy_to_meta(module: "nn.Module") -> "nn.Module":
    return copy.deepcopy(module).to("meta")


class Bench:
    """One model at one batch size on one device, mode by mode."""

    def __init__(self, model: "str | nn.Module", batch: int, config: BenchConfig,
                 prepared: Prepared | None = None) -> None:
        self.model = model
        self.prepared = prepared or Prepared(model, config)  # the meta build, shared with other batches
        self.batch = check_batch(batch)
        self.config = config
        self.setup = BenchSetup(model, batch, config)
        self.result: BenchResult | None = None  # filled mode by mode
        self.peak: Peak | None = None

    def run(self, on_phase: Callable[[str], None] | None = None) -> BenchResult:
        threads, cudnn_benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
        devices = [torch.device(self.setup.device).index or 0] if self.setup.device == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                return self._run(on_phase)
        finally:
            torch.set_num_threads(threads)
            torch.backends.cudnn.benchmark = cudnn_benchmark

    def _run(self, on_phase: Callable[[str], None] | None) -> BenchResult:
        config, setup = self.config, self.setup.build()
        assert setup.built is not None and setup.raw is not None
        counted = step_flops(setup, config, self.prepared)
        predicted = predicted_peaks(self.model, self.batch, config, self.prepared)
        threads = torch.get_num_threads()
        dtype = DType(config.dtype).value
        if config.peak and config.count_flops:
            self.peak = measured(setup.device, dtype, threads)
        name = device_name(setup.device)
        result = self.result = BenchResult(
            model=setup.built.name, source=setup.built.spec.source.value, device=setup.device, device_name=name,
            batch=self.batch, dtype=dtype, input_size=[self.batch, *setup.built.input_shape], threads=threads,
            inputs=[s.to_dict() for s in setup.built.inputs],
            settings=settings(config, threads), peak=None, total_params=self._total_params(),
        )
        sheet = (datasheet(name, dtype, bool(torch.backends.cuda.matmul.allow_tf32))
                 if setup.device == "cuda" else None)
        for step in walk(setup, plan(config)):
            if not step.comparison:
                result.trainable_params = sum(p.numel() for p in setup.trainable())
            if on_phase:
                full = " (all trainable, for comparison)" if step.comparison else ""
                on_phase(f"{result.model} b{self.batch} {step.mode.value}{full}")
            key = "forward" if step.mode is Mode.FORWARD else ("train_frozen" if step.frozen else "train")
            measured_mode = self._measure(RUNNERS[step.mode](setup, step.frozen, counted.get(key)))
            peak, step_ms = predicted.get((step.mode.value, step.frozen), (None, None))
            measured_mode.predicted_peak_bytes = peak or None
            measured_mode.predicted_ms = step_ms
            result.results.append(measured_mode)
            self._share(result, sheet)
        if setup.built.spec.task is Task.QUANTIZED:
            self._against_float(result, on_phase)
        if setup.built.weights is not None:
            result.notes.append(setup.built.weights.describe())
        if setup.built.materialized:
            result.notes.append(setup.built.materialized)
        if DType(config.dtype) is DType.FLOAT16 and config.training:
            result.notes.append("float16 training is timed without a GradScaler")
        if config.compile and config.memory and setup.device == "cpu":
            result.notes.append("with --compile, peak memory is counted on the eager step")
        return result

    def _total_params(self) -> int:
        """The model's parameters; a quantized model's are its float twin's (models.quantized)."""
        built, raw = self.setup.built, self.setup.raw
        assert built is not None and raw is not None
        quantized = built.quantized_params()
        return quantized.total if quantized is not None else sum(p.numel() for p in raw.parameters())

    def _against_float(self, result: BenchResult, on_phase: Callable[[str], None] | None) -> None:
        """A quantized model's forward pass against its float twin's, timed right after at the same batch."""
        twin = float_twin(result.model)
        if twin is None:
            return
        found = saving(result, run_once(twin, self.batch, twin_config(self.config), on_phase))
        result.int8 = found.to_dict() if found is not None else None
        result.notes.append(NOTE.format(twin=twin))

    def _measure(self, runner: ModeRunner) -> ModeResult:
        try:
            return runner.run()
        except (CnnprobeError, KeyboardInterrupt):
            raise
        except SystemExit as e:
            raise ForwardError(f"{runner.setup.built.name if runner.setup.built else 'the model'} called "
                               f"sys.exit({e.code}) in a {runner.mode.value} step") from None
        except Exception as e:  # noqa: BLE001 - the model failed: say where, unless memory ran out
            if is_oom(e):
                raise
            raise self.explain(runner, e) from None

    def _share(self, result: BenchResult, sheet: Peak | None) -> None:
        """Shares of the peak for every result so far; a result that beats the peak raises it first."""
        if self.peak is None:
            return
        best = max((r.tflops for r in result.results if r.tflops), default=0.0)
        if best > self.peak.tflops:
            leader = max(result.results, key=lambda r: r.tflops or 0.0)
            what = f"{result.model} b{result.batch} {leader.mode}"
            self.peak = at_least(self.peak, best, what, result.device, result.dtype, result.threads)
        result.peak = asdict(self.peak)
        if sheet is not None:
            result.peak["datasheet"] = asdict(sheet)
        for r in result.results:
            r.set_shares(self.peak.tflops, sheet.tflops if sheet else None)

    def explain(self, runner: ModeRunner, error: BaseException) -> Exception:
        """A step failed for a reason other than memory: run it once more under the tracer to name the layer."""
        setup = self.setup
        assert setup.raw is not None and setup.inputs and setup.built is not None
        tracer = Tracer(setup.raw, fast_meta=False)
        try:
            with tracer:
                runner.step(setup.raw)()
        except Exception as again:  # noqa: BLE001
            error = again
        return explain_failure(tracer, error, model=setup.built.name, input_shape=list(setup.inputs[0].shape))

    def close(self) -> None:
        self.setup.close()
        free_memory()


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def run_once(model: "str | nn.Module", batch: int, config: BenchConfig,
             on_phase: Callable[[str], None] | None = None, keep: list[BenchResult] | None = None,
             prepared: Prepared | None = None) -> BenchResult:
    """One timed run; out of memory becomes OutOfMemory after the memory is freed. An interrupted run's
    partial result is appended to `keep`; `prepared` is the model's meta build, when a sweep has it."""
    run = Bench(model, batch, config, prepared)
    detail = None
    try:
        return run.run(on_phase)
    except KeyboardInterrupt:
        if keep is not None and run.result is not None and run.result.results:
            run.result.notes.append("interrupted")
            keep.append(run.result)
        raise
    except Exception as e:  # noqa: BLE001
        if not is_oom(e):
            raise
        detail = first_line(e)  # keep the text only: the exception's frames hold the tensors
    finally:
        run.close()
    free_memory()
    raise OutOfMemory(str(model), batch, Device(config.device).value, detail)


def bench(model: "str | nn.Module | ModelRequest", batch: int = 1, config: BenchConfig | None = None,
          **options: Any) -> BenchResult:
    """Time one model at one batch size; options are BenchConfig's fields (its request's and plan's keywords
    among them). With `repeat=N` the whole run happens N times and each mode keeps every run's figures.

    Raises OutOfMemory (after freeing the memory) when the batch does not fit.
    """
    if isinstance(model, ModelRequest):  # the request's options go into the configuration
        options["request"] = model
        config = config.replace(**options) if config is not None else None
    config = config or BenchConfig(**options)
    target = config.request.model if isinstance(model, ModelRequest) else model
    if target is None:
        raise TypeError("bench() needs a model")
    check_batch(batch)
    config = checked_config([target], config)
    later = config.replace(predict=False)  # the prediction is the same in every repeat; the first run's is kept
    prepared = Prepared(target, config)
    return merge_repeats([run_once(target, batch, config if i == 0 else later, prepared=prepared)
                          for i in range(config.repeat)])
