"""`cnnprobe bench`: its options, in panels, and the shell around `benchmark.outcome`, which decides the
run and how it ends. The timed sweep and the distributed run are one function each."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..benchmark.regression import DEFAULT_THRESHOLD
from ..core import signals
from ..core.enums import Device, DType, Mode, Optimizer
from ..core.errors import CnnprobeError
from .edge import Interrupted, model_output, printed
from .options import (
    DISTRIBUTED,
    MODEL,
    OUTPUT,
    STEP,
    TIMING,
    ChannelsLast,
    DTypeOpt,
    Freeze,
    FreezeAll,
    FreezeExcept,
    Head,
    InputDtype,
    InputRange,
    InputSize,
    Json,
    ModeOpt,
    NumClasses,
    RunDevice,
    StepOptimizer,
    Threads,
    TrainableBackboneLayers,
    Trust,
    Warmup,
    Weights,
    flag,
    freeze_plan,
    model_request,
    option,
)
from .progress import progress

BENCH_EXAMPLES = ("cnnprobe bench resnet18 --device cuda --batch 64",
                         "cnnprobe bench resnet18,resnet50 --batch 1,8,32 --mode forward --csv runs.csv",
                         "cnnprobe bench resnet50 --freeze-except layer4,fc --save base.json",
                         "cnnprobe bench resnet18 --nproc 2 --mode train_step")


def bench(
    model: Annotated[str, typer.Argument(help="One model or several, comma-separated: resnet18,resnet50.",
                                         show_default=False)],
    batch: Annotated[str, option("--batch", panel=MODEL, help="Batch size, a sweep (1,8,32,64), or 'auto' for the "
                                 "largest that fits.")] = "1",
    input_size: InputSize = None, input_dtype: InputDtype = None, input_range: InputRange = None,
    num_classes: NumClasses = None, head: Head = None, weights: Weights = None, trust: Trust = False,
    freeze_except: FreezeExcept = None, freeze_all: FreezeAll = False, freeze: Freeze = None,
    trainable_backbone_layers: TrainableBackboneLayers = None, device: RunDevice = Device.CPU,
    mode: ModeOpt = Mode.ALL, dtype: DTypeOpt = DType.FLOAT32,
    optimizer: StepOptimizer = Optimizer.SGD,
    channels_last: ChannelsLast = False,
    compile: Annotated[bool, flag("--compile", panel=STEP, help="torch.compile the model (compilation happens "
                                  "during warm-up).")] = False,
    threads: Threads = None,
    min_time: Annotated[float, option("--min-time", panel=TIMING, help="Seconds of timed runs at least; runs repeat "
                                      "until the median is stable.")] = 1.0,
    max_time: Annotated[float | None, option("--max-time", panel=TIMING, help="Seconds of timed runs at most per "
                                             "mode; default 10 × --min-time.")] = None,
    warmup: Warmup = 3,
    repeat: Annotated[int | None, option("--repeat", panel=TIMING, help="Run the whole sweep N times, to measure "
                                         "run-to-run drift; default 2 with --save, the baseline's count with "
                                         "--compare, 1 otherwise.")] = None,
    json: Json = False,
    csv: Annotated[str | None, option("--csv", panel=OUTPUT, help="Also write the results as CSV to this "
                                      "file.")] = None,
    plot: Annotated[str | None, option("--plot", panel=OUTPUT, help="Write a PNG of throughput against batch size "
                                       "(needs matplotlib).")] = None,
    save: Annotated[str | None, option("--save", panel=OUTPUT, help="Write the same JSON as --json to this file, as "
                                       "a baseline.")] = None,
    compare: Annotated[str | None, option("--compare", panel=OUTPUT, help="Compare with a baseline saved by --save; "
                                          "exit 1 naming each mode that regressed.")] = None,
    threshold: Annotated[float, option("--threshold", panel=OUTPUT, help="Percent slower that counts as a "
                                       "regression: the 95% interval of new/old must lie above "
                                       "it.")] = DEFAULT_THRESHOLD,
    nproc: Annotated[int | None, option("--nproc", panel=DISTRIBUTED, help="Data-parallel on N local ranks (DDP, "
                                        "started by torch's elastic launcher); train_step and "
                                        "forward_backward.")] = None,
    ddp: Annotated[bool, flag("--ddp", panel=DISTRIBUTED, help="Join a torchrun job (RANK, WORLD_SIZE, ... in the "
                              "environment); rank 0 prints.")] = False,
    backend: Annotated[str | None, option("--backend", panel=DISTRIBUTED, help="torch.distributed backend; default "
                                          "nccl on CUDA, gloo on the CPU.")] = None,
    timeout: Annotated[float, option("--timeout", panel=DISTRIBUTED, help="Seconds a rank waits for the others "
                                     "(init_process_group's timeout).")] = 300.0,
    bucket_mb: Annotated[float | None, option("--bucket-mb", panel=DISTRIBUTED, help="DDP's gradient bucket size in "
                                              "MB; default DDP's own (25).")] = None,
    port: Annotated[int | None, option("--port", panel=DISTRIBUTED, help="With --nproc: the rendezvous port on "
                                       "127.0.0.1; default a free one.")] = None,
    find_unused_parameters: Annotated[bool, flag("--find-unused-parameters", panel=DISTRIBUTED, help="With "
                                                 "--nproc/--ddp: DDP's find_unused_parameters, for a model with "
                                                 "trainable parameters a step does not use.")] = False,
) -> None:
    """Time forward, backward and train steps with warm-up, synchronised timers and stable medians; with
    --nproc or --ddp, data-parallel across processes, GPUs and nodes."""
    from ..benchmark.outcome import split_models
    from ..training.config import BenchConfig

    models = split_models(model)
    request = model_request(None, input_size=input_size, input_dtype=input_dtype, input_range=input_range,
                            num_classes=num_classes, head=head, weights=weights, trust=trust,
                            trainable_backbone_layers=trainable_backbone_layers)
    config = BenchConfig(device=device, dtype=dtype, mode=mode, channels_last=channels_last, compile=compile,
                         threads=threads, min_time=min_time, max_time=max_time, warmup=warmup, optimizer=optimizer,
                         request=request, plan=freeze_plan(freeze_all, freeze_except, freeze))
    if nproc is not None or ddp:
        distributed(models, batch, config.replace(predict=False), json, nproc=nproc, ddp=ddp,
                    files=[csv, plot, save, compare], backend=backend, timeout=timeout, bucket_mb=bucket_mb,
                    port=port, find_unused=find_unused_parameters)
    else:
        timed(models, batch, config, json, csv=csv, plot=plot, save=save, compare=compare, threshold=threshold,
              repeat=repeat)


def timed(models: list[str], batch: str, config: Any, json_mode: bool, *, csv: str | None, plot: str | None,
          save: str | None, compare: str | None, threshold: float, repeat: int | None) -> None:
    """The sweep on this machine: checks before timing, the sweep, then the tables, the files, the ending."""
    from ..benchmark import outcome
    from ..benchmark.sweep import sweep
    from ..report import files
    from ..report.bench import BENCH_COLUMNS, bench_lines, bench_rows
    from ..report.console import emit_json, json_text, print_pieces, warn
    from ..report.regression import comparison_lines
    from ..training.devices import machine_load

    for path in (csv, plot, save):  # fail before timing, not after
        if path is not None:
            files.check_writable(path)
    if plot:
        files.require_matplotlib()
    plan = outcome.plan_bench(models, batch, config, compare=compare, save=save, threshold=threshold, repeat=repeat)
    load = machine_load(plan.config.threads)
    if load:
        warn(load)
    with progress(enabled=True, total=plan.steps) as advance, model_output(json_mode):
        result = sweep(plan.models, plan.batches, plan.config, on_phase=advance,
                       on_search=lambda text: advance(text, advance=False))
    verdict = outcome.verdict_of(plan, result)
    data = outcome.report_data(result, verdict)
    unwritten = outcome.write_outputs([
        (save, lambda p: files.write_atomic(p, json_text(data))),
        (csv, lambda p: files.write_csv(bench_rows(result.runs), BENCH_COLUMNS, p)),
        (plot, lambda p: files.plot_throughput(result.runs, p))], result, files.OutputError)
    if json_mode:
        emit_json({**data, "unwritten": unwritten} if unwritten else data)
    else:
        print_pieces(bench_lines(result) + (comparison_lines(verdict) if verdict else []))
    _end(outcome.ending(plan, result, verdict, unwritten, files.OutputError))


def _end(error: BaseException | None) -> None:
    """Exit as the run ended: Ctrl-C as 130 with what it says, an error as printed already (with --json,
    stdout holds the one object, which says what went wrong)."""
    if isinstance(error, KeyboardInterrupt):
        raise Interrupted(str(error))
    if isinstance(error, CnnprobeError):
        raise printed(error)


def distributed(models: list[str], batch: str, config: Any, json_mode: bool, *, nproc: int | None, ddp: bool,
                files: list[str | None], backend: str | None, timeout: float, bucket_mb: float | None,
                port: int | None, find_unused: bool) -> None:
    """`bench --nproc N` (ranks started here) or `bench --ddp` (this process is one rank of a torchrun job)."""
    from ..benchmark import outcome
    from ..benchmark.distributed.failures import RankFailure
    from ..benchmark.distributed.group import DistOptions, backend_for, in_launcher
    from ..benchmark.distributed.result import from_dict
    from ..benchmark.distributed.worker import worker
    from ..report.console import emit_json, print_pieces
    from ..report.ddp import ddp_lines
    from ..training.devices import check_device

    per_rank = outcome.check_distributed(models, batch, nproc=nproc, ddp=ddp, files=files, timeout=timeout,
                                         bucket_mb=bucket_mb)
    check_device(config.device)
    backend_for(config.device.value, backend)
    options = DistOptions(backend, timeout, bucket_mb, find_unused)
    signals.raise_pending()  # a Ctrl-C or SIGTERM while torch loaded, which an import swallowed
    if ddp:
        if not in_launcher():
            raise CnnprobeError("--ddp joins a job started by torchrun, but RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR "
                                "and MASTER_PORT are not set: run it under torchrun, or use --nproc N")
        try:
            with model_output(json_mode):
                data = worker(models[0], per_rank, config, options)
        except RankFailure as e:  # one line and one JSON object, from one rank; the others leave quietly
            e.args = (str(e),) if e.reporter else ("",)
            raise
        if data is None:
            return  # only rank 0 prints
        result = from_dict(data)
    else:
        from ..benchmark.distributed.launcher import launch

        assert nproc is not None  # called for --nproc or --ddp, and this is not --ddp
        with model_output(json_mode):
            result = launch(models[0], per_rank, config, nproc, options, port)
    if json_mode:
        emit_json(result.to_dict())
    else:
        print_pieces(ddp_lines(result))
    error = outcome.gradients_error(result.gradients_differ)
    if error is not None:
        raise printed(error)
