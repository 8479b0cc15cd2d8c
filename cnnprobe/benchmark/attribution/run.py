"""`profile`: one step of one model at one batch, timed module by module, forward and backward.

The step is bench's own (`training.steps`). It is timed in blocks, each followed by a block of the same step
without hooks (`blocks.time_blocks`, the unprofiled step as its reference), so the hooks' cost is measured in
the same run, block by block. The rows' counts come from one more step of the run under cnnprobe's counter
(`counting`), the roofs from bench's measured peak and the measured bandwidth. A parameter's gradient
accumulation runs right after the node that made the gradient: for a row's first operator that is just after
the row's backward ends, in the piece around it (with `zero_grad(set_to_none=True)` it only takes the tensor).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ...core.enums import Device, DType, Mode
from ...core.errors import CnnprobeError, ForwardError, OutOfMemory, UsageError
from ...models.build import check_batch
from ...runtime.bandwidth import bandwidth_at_least, measured_bandwidth
from ...runtime.flops_peak import at_least, measured
from ...trace.failures import explain_failure
from ...trace.spans import Span, Spans
from ...trace.tracer import Tracer
from ...training.config import BenchConfig
from ...training.devices import NoClock, device_name, free_memory, iqr, is_oom
from ...training.setup import BenchSetup
from ...training.steps import STEPS, Step
from ..blocks import time_blocks
from ..int8 import checked_config
from ..timing import first_line
from .clock import StepClock
from .counting import count_rows
from .join import RowInfo, raise_roof, read_roofline, rows
from .record import ProfileReport, Roof
from .timeline import trace_step

if TYPE_CHECKING:
    from torch import nn

class _Unprofiled:
    """The step without hooks: what each profiled block alternates with."""

    n = 0

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn

    def __call__(self) -> None:
        self.fn()


class _Tee:
    """Phase marks to two clocks: bench's phase clock and the profile's."""

    def __init__(self, *clocks: Any) -> None:
        self.clocks = clocks

    def phase(self, name: str) -> None:
        for clock in self.clocks:
            clock.phase(name)


def check_profile(config: BenchConfig, depth: int) -> Mode:
    """The one mode a profile times, and a depth it can partition at."""
    modes = config.modes
    if len(modes) != 1:
        raise UsageError("profile times one mode: --mode forward, forward_backward or train_step")
    if depth == 0 or depth < -1:
        raise UsageError(f"--depth must be 1 or more (or -1 for the leaves), got {depth}")
    if config.compile:
        raise UsageError("profile times modules by hooks, which torch.compile fuses away: drop --compile")
    return modes[0]


class Profiler:
    """One model at one batch, one mode: timed, counted, read against the roofline."""

    def __init__(self, model: "str | nn.Module", batch: int, config: BenchConfig, *, depth: int = 1,
                 timeline: bool = False) -> None:
        config = checked_config([model], config)  # a quantized model: forward-only, int8 on the CPU
        self.mode = check_profile(config, depth)
        self.model, self.batch, self.config, self.depth = model, check_batch(batch), config, depth
        self.timeline = timeline
        self.setup = BenchSetup(model, batch, config)

    def run(self, on_phase: Callable[[str], None] | None = None) -> ProfileReport:
        threads, cudnn_benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
        devices = [torch.device(self.setup.device).index or 0] if self.setup.device == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                return self._run(on_phase or (lambda text: None))
        except (CnnprobeError, KeyboardInterrupt):
            raise
        except SystemExit as e:
            raise ForwardError(f"{self._name()} called sys.exit({e.code}) in a {self.mode.value} step") from None
        except Exception as e:  # noqa: BLE001 - the model failed or memory ran out: one line that says which
            if is_oom(e):
                detail = first_line(e)  # the text only: the exception's frames hold the tensors
                self.setup.close()
                free_memory()
                raise OutOfMemory(self._name(), self.batch, Device(self.config.device).value, detail) from None
            raise self._explain(e) from None
        finally:
            torch.set_num_threads(threads)
            torch.backends.cudnn.benchmark = cudnn_benchmark
            self.setup.close()

    def _name(self) -> str:
        built = self.setup.built
        return built.name if built is not None else str(self.model)

    def _explain(self, error: BaseException) -> Exception:
        """A step that failed, run once more under the tracer to name the layer it failed in."""
        setup = self.setup
        if setup.raw is None or setup.built is None or not setup.inputs:
            return ForwardError(f"{self._name()} failed: {first_line(error)}")
        tracer = Tracer(setup.raw, fast_meta=False)
        try:
            with tracer:
                STEPS[self.mode](setup, self.config.freezing and self.mode is not Mode.FORWARD).step()()
        except Exception as again:  # noqa: BLE001
            error = again
        return explain_failure(tracer, error, model=setup.built.name, input_shape=list(setup.inputs[0].shape))

    def _run(self, on_phase: Callable[[str], None]) -> ProfileReport:
        config, setup = self.config, self.setup.build()
        assert setup.built is not None and setup.raw is not None
        frozen = config.freezing and self.mode is not Mode.FORWARD
        setup.set_frozen(frozen)
        step = STEPS[self.mode](setup, frozen)
        fn = step.step()
        on_phase(f"{setup.built.name} b{self.batch} {self.mode.value}: warm-up")
        for _ in range(max(1, config.warmup)):
            fn()
        on_phase(f"{setup.built.name} b{self.batch} {self.mode.value}: timing modules")
        clock, timed = self._time(step, fn)
        on_phase(f"{setup.built.name} b{self.batch} {self.mode.value}: counting MACs and bytes")
        counts = count_rows(step, fn, self.depth)
        threads = torch.get_num_threads()
        dtype = DType(config.dtype).value
        on_phase(f"{setup.built.name} b{self.batch}: the device's roofs")
        peak = measured(setup.device, dtype, threads)
        bandwidth = measured_bandwidth(setup.device, threads)
        roof = Roof(peak.tflops, bandwidth.gbps, peak.source, peak.detail, bandwidth.source, bandwidth.detail)
        modules, unattributed = rows(clock.samples, counts.rows, self._info(clock), counts.pieces)
        step_ms, unprofiled_ms = 1e3 * timed.median, 1e3 * statistics.median(timed.reference)
        everything = [*modules, *unattributed.values()]
        raise_roof(roof, everything, compute=lambda v, what: self._peak(peak, v, what, dtype, threads),
                   bandwidth=lambda v, what: self._bandwidth(bandwidth, v, what, threads))
        read_roofline(everything, roof, step_ms)
        report = ProfileReport(
            model=setup.built.name, task=setup.built.spec.task.value, batch=self.batch, device=setup.device,
            device_name=device_name(setup.device), dtype=dtype, mode=self.mode.value, frozen=frozen, threads=threads,
            depth=self.depth, input_size=[self.batch, *setup.built.input_shape], step_ms=step_ms,
            step_iqr_ms=1e3 * timed.iqr, unprofiled_step_ms=unprofiled_ms, unprofiled_iqr_ms=1e3 * iqr(timed.reference),
            overhead=statistics.median(timed.ratios) - 1, steps=timed.steps, roof=roof, modules=modules,
            unattributed=unattributed)
        if self.timeline:
            on_phase(f"{setup.built.name} b{self.batch}: tracing one step")
            report.timeline = trace_step(step, fn, None, counts.calls)  # every module call, at any depth
        report.notes.extend([*counts.notes, *self._notes(report)])
        return report

    def _depth_limit(self) -> int | None:
        return None if self.depth < 0 else self.depth

    def _time(self, step: Step, fn: Callable[[], None]) -> tuple[StepClock, Any]:
        """Profiled blocks alternating with unprofiled ones; the clock's samples and the blocks' figures."""
        assert self.setup.raw is not None
        spans = Spans(self.setup.raw, _NoListener(), max_depth=self._depth_limit())
        clock = StepClock(self.setup.device, self.depth, lambda: spans.roots,
                          hook_ns=lambda: (spans.hook_ns, spans.root_hook_ns))
        spans.listener = clock

        def arm(marks: Any) -> None:
            if isinstance(marks, NoClock):
                step.marks = marks
                spans.__exit__(None, None, None)
                clock.close_block()
            else:
                step.marks = _Tee(marks, clock)
                spans.__enter__()

        min_time = self.config.min_time
        max_time = self.config.max_time or 10 * min_time
        timed = time_blocks(fn, _Unprofiled(fn), arm, self.setup.device, min_time, max_time, reference_share=1.0)
        return clock, timed

    def _info(self, clock: StepClock) -> dict[str, RowInfo]:
        """Each module path's type, depth and frozenness, from the call tree of the last timed step."""
        assert self.setup.raw is not None
        out: dict[str, RowInfo] = {}
        modules = dict(self.setup.raw.named_modules(remove_duplicate=False))
        for span in (s for root in clock.last for s in root.walk()):
            module = modules.get(span.name)
            params = list(module.parameters()) if module is not None else []
            out.setdefault(span.name, RowInfo(span.type, span.depth, bool(params) and not any(
                p.requires_grad for p in params)))
        return out

    def _peak(self, peak: Any, achieved: float, what: str, dtype: str, threads: int) -> tuple[float, str, str]:
        raised = at_least(peak, achieved, what, self.setup.device, dtype, threads)
        return raised.tflops, raised.source, raised.detail

    def _bandwidth(self, bandwidth: Any, achieved: float, what: str, threads: int) -> tuple[float, str, str]:
        raised = bandwidth_at_least(bandwidth, achieved, what, self.setup.device, threads)
        return raised.gbps, raised.source, raised.detail

    def _notes(self, report: ProfileReport) -> list[str]:
        notes = []
        if report.roof.peak_source.startswith("achieved"):
            notes.append("a module beat the measured matrix product: the compute roof is raised to what it reached, "
                         "so no share exceeds 100%")
        if report.roof.bandwidth_source.startswith("achieved"):
            notes.append("a module moved its bytes faster than the measured memory bandwidth (its data stayed in "
                         "cache): the bandwidth roof is raised to what it reached, so no share exceeds 100%")
        return notes


class _NoListener:
    def begin(self, span: Span, direction: str) -> None:
        pass

    def end(self, span: Span, direction: str) -> None:
        pass


def profile(model: "str | nn.Module", batch: int = 1, config: BenchConfig | None = None, *, depth: int = 1,
            timeline: bool = False, **options: Any) -> ProfileReport:
    """Where one step's time goes, module by module: options are BenchConfig's fields (mode defaults to
    train_step)."""
    options.setdefault("mode", Mode.TRAIN_STEP)
    config = config.replace(**options) if config is not None else BenchConfig(**options)
    return Profiler(model, batch, config, depth=depth, timeline=timeline).run()
