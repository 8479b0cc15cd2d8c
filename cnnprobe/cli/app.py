"""The `cnnprobe` command: parse, call the API, render.

This module imports no torch at module level, so `cnnprobe --help` is fast.
Every error a user can cause ends as one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, cast

import typer
from typer.core import TyperGroup

from ..benchmark.regression import DEFAULT_THRESHOLD
from ..core import signals
from ..core.enums import Counter, Device, DType, Mode, Optimizer
from ..core.errors import CnnprobeError, RunError

# typer vendors click in recent releases and depends on it in older ones. Found, not imported, so mypy sees a
# bare `type`: cast to an exception class (click's, with format_message() and exit_code).
ClickException = cast("type[Any]", next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"))


class Interrupted(Exception):
    """Ctrl-C, carried past typer (which would turn it into a silent exit 130)."""


class ModelExited(Exception):
    """A user's model called sys.exit(): its failure, not cnnprobe's exit."""


def _fail(message: str, code: int, json_mode: bool = False, prefix: str = "cnnprobe: error: ") -> NoReturn:
    """One line on stderr (none for an empty message: help was printed) and, in --json mode, one JSON object
    on stdout, so that a script reading stdout always gets JSON."""
    text = " ".join(str(message).split())
    if text:
        sys.stderr.write(f"{prefix}{text}\n")
    if json_mode and text:
        import json

        sys.stdout.write(json.dumps({"error": text, "exit_code": code}) + "\n")
    sys.stdout.flush()
    sys.exit(code)


def _output_failed(error: OSError | UnicodeEncodeError, json_mode: bool) -> NoReturn:
    """Standard output could not take what was printed: a full disk, a closed pipe, an encoding without × or →."""
    if isinstance(error, OSError) and error.errno == errno.EPIPE:  # `cnnprobe list | head`: nothing to say
        _quiet_stdout()
        sys.exit(1)
    if isinstance(error, UnicodeEncodeError):
        encoding = getattr(sys.stdout, "encoding", None) or "unknown"
        message = (f"cannot print to standard output in its encoding ({encoding}); set PYTHONIOENCODING=utf-8 "
                   "or a UTF-8 locale, or use --json")
    else:
        message = f"cannot write to standard output: {error.strerror or error}"
    _quiet_stdout()
    sys.stderr.write(f"cnnprobe: error: {message}\n")
    sys.exit(2)


def _quiet_stdout() -> None:
    """Point standard output at /dev/null, so that the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


class _OneLineErrors(TyperGroup):
    """Turns usage errors, user errors and crashes into one stderr line and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted() from None
        except SystemExit as e:  # typer's own exits are not SystemExit: this came from user code
            raise ModelExited(e.code) from None

    def main(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        argv = list(sys.argv[1:] if args is None else args)
        json_mode = "--json" in argv
        try:
            rv = super().main(args, *rest, **kwargs)
        except ClickException as e:
            _fail(e.format_message(), e.exit_code, json_mode)
        except (typer.Abort, Interrupted, KeyboardInterrupt) as e:
            detail = f": {e}" if isinstance(e, Interrupted) and str(e) else ""
            _fail(f"interrupted{detail}", 130, json_mode and not detail, prefix="cnnprobe: ")
        except signals.Terminated:
            _fail("terminated", signals.TERMINATED_EXIT, json_mode, prefix="cnnprobe: ")
        except ModelExited as e:
            _fail(f"the model called sys.exit({e.args[0]}) while cnnprobe was running it", 1, json_mode)
        except CnnprobeError as e:
            _fail(str(e), e.exit_code, json_mode and not getattr(e, "printed", False))
        except (OSError, UnicodeEncodeError) as e:
            if isinstance(e, UnicodeEncodeError) or e.errno in (errno.ENOSPC, errno.EPIPE, errno.EIO, errno.EBADF):
                _output_failed(e, json_mode)
            _internal(e, json_mode)
        except Exception as e:  # noqa: BLE001 - the last line of defence
            if signals.terminated():  # a SIGTERM some library turned into another error (an import half done)
                _fail("terminated", signals.TERMINATED_EXIT, json_mode, prefix="cnnprobe: ")
            if signals.seen():  # a Ctrl-C some library turned into another error (an import half done)
                _fail("interrupted", 130, json_mode, prefix="cnnprobe: ")
            _internal(e, json_mode)
        if signals.terminated():  # a SIGTERM an import swallowed whole
            _fail("terminated", signals.TERMINATED_EXIT, json_mode, prefix="cnnprobe: ")
        if rv == 130 or signals.seen():  # typer turns Ctrl-C into a silent exit 130; imports may swallow it
            _fail("interrupted", 130, json_mode, prefix="cnnprobe: ")
        try:
            sys.stdout.flush()
        except (OSError, UnicodeEncodeError) as e:
            _output_failed(e, json_mode)
        sys.exit(rv if isinstance(rv, int) else 0)


def _internal(error: BaseException, json_mode: bool) -> NoReturn:
    if os.environ.get("CNNPROBE_DEBUG"):
        raise error
    _fail(f"internal error: {type(error).__name__}: {error} (set CNNPROBE_DEBUG=1 for the traceback)", 3, json_mode)


app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Look inside CNNs: per-layer shapes, parameters before and after freezing, FLOPs, timings.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"cnnprobe {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print cnnprobe's version and exit.")] = False,
) -> None:
    """Look inside CNNs: per-layer shapes, parameters before and after freezing, FLOPs, timings."""

ModelArg = Annotated[
    str,
    typer.Argument(
        help="A registered name (resnet18, cnnprobe:vgg16, torchvision:vgg16) or path/to/file.py:ClassOrFactory.",
        show_default=False,
    ),
]
InputSize = Annotated[
    list[str] | None,
    typer.Option("--input-size", help="Input sizes without the batch: C,H,W (or H,W, or one side), any rank "
                 "(1,10 for a Conv1d); repeat for a model with several inputs. Default: the model's own."),
]
InputDtype = Annotated[
    list[str] | None,
    typer.Option("--input-dtype", help="Input dtype (float32, long, ...): once for all inputs, or once per "
                 "--input-size."),
]
InputRange = Annotated[
    str | None,
    typer.Option("--input-range", help="LOW,HIGH: integer inputs (token ids) draw their values from [LOW, HIGH); "
                 "default: the first embedding's size."),
]
Batch = Annotated[int, typer.Option("--batch", help="Batch size of the example input.")]
NumClasses = Annotated[int | None, typer.Option("--num-classes", help="Width of the classifier head.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]
Weights = Annotated[
    str | None,
    typer.Option("--weights", help="DEFAULT or a torchvision weights name (IMAGENET1K_V1) from the local torch hub "
                 "cache, or a state_dict / training checkpoint file; loaded strictly, mapped to the CPU."),
]
Trust = Annotated[
    bool,
    typer.Option("--trust", help="Allow full unpickling of a file that needs it (a whole pickled model). This RUNS "
                 "CODE from the file: only for files from a source you trust."),
]
FreezeExcept = Annotated[
    str | None, typer.Option("--freeze-except", help="Freeze everything except these modules: layer4,fc.")
]
FreezeAll = Annotated[bool, typer.Option("--freeze-all", help="Freeze every parameter (feature extraction).")]
Freeze = Annotated[str | None, typer.Option("--freeze", help="Freeze only these modules; globs allowed: "
                                                             "layer1,layer2.")]
Head = Annotated[
    str | None,
    typer.Option("--head", help="Replace the final classifier with these layers, as trainable --head; a new head stays "
                 "trainable under --freeze-all and --freeze-except."),
]


@app.command("list")
def list_cmd(
    pattern: Annotated[str | None, typer.Argument(help="Glob or substring of the name, e.g. 'resnet*'.")] = None,
    json: Json = False,
) -> None:
    """List the models cnnprobe can build: source, name, parameters and default input size."""
    from ..models.build import param_counts
    from ..models.registry import list_models
    from ..report.console import emit_json, print_pieces
    from ..report.registry_list import list_table

    specs = list_models(pattern)
    if not specs:
        raise CnnprobeError(f"no model matches '{pattern}'")
    params = param_counts(specs)
    if json:
        emit_json({"models": [
            {"source": s.source.value, "name": s.name, "qualified": s.qualified, "params": params[s.qualified],
             "input_size": list(s.input_shape or []), "published_gmacs": s.published_gmacs}
            for s in specs
        ]})
        return
    print_pieces([list_table(specs, params)])


@app.command()
def summary(
    model: ModelArg,
    input_size: InputSize = None,
    input_dtype: InputDtype = None,
    input_range: InputRange = None,
    batch: Batch = 1,
    depth: Annotated[int, typer.Option("--depth", help="How deep the layer rows go (1 = top-level blocks).")] = 3,
    num_classes: NumClasses = None,
    weights: Weights = None,
    trust: Trust = False,
    json: Json = False,
) -> None:
    """Per-layer output shapes, parameters and MACs, built on the meta device: no weights are allocated."""
    from ..analysis import summary as inspect
    from ..report.console import emit_json, print_pieces
    from ..report.summary import summary_lines

    with _model_output(json):
        result = inspect.summary(model, input_size=input_size, input_dtype=input_dtype, input_range=input_range,
                                 batch=batch, depth=depth, num_classes=num_classes, weights=weights, trust=trust)
    if json:
        emit_json(result.to_dict())
    else:
        print_pieces(summary_lines(result))


@app.command()
def trainable(
    model: ModelArg,
    freeze_except: FreezeExcept = None,
    freeze_all: FreezeAll = False,
    freeze: Freeze = None,
    num_classes: Annotated[int | None, typer.Option("--num-classes", help="Replace the final classifier layer with one "
                                                                          "of this width.")] = None,
    head: Annotated[
        str | None,
        typer.Option("--head", help="Replace the final classifier with these layers: "
                                    "dropout(0.3),linear(256),relu,dropout(0.3),linear(10)."),
    ] = None,
    lr: Annotated[
        list[str] | None,
        typer.Option("--lr", help="MODULES=LR, repeatable: an optimizer parameter group, e.g. --lr layer4=1e-4 --lr "
                                  "fc=1e-3."),
    ] = None,
    freeze_bn: Annotated[bool, typer.Option("--freeze-bn", help="Put BatchNorm layers in eval mode, so their running "
                                                                "statistics stop updating.")] = False,
    optimizer: Annotated[Optimizer, typer.Option("--optimizer", help="Optimizer whose state memory to "
                                                                     "count.")] = Optimizer.ADAM,
    weights: Weights = None,
    trust: Trust = False,
    input_size: InputSize = None,
    input_dtype: InputDtype = None,
    input_range: InputRange = None,
    json: Json = False,
) -> None:
    """Total and trainable parameters before and after freezing, per top-level block (a model with lazy layers
    is sized by one pass of its input)."""
    from ..analysis import trainable as api
    from ..report.console import emit_json, print_pieces, warn
    from ..report.trainable import trainable_lines

    with _model_output(json):
        report = api.trainable(
            model, freeze_all=freeze_all, freeze_except=freeze_except, freeze=freeze, num_classes=num_classes,
            head=head, lr=lr or [], freeze_bn=freeze_bn, optimizer=optimizer, weights=weights, trust=trust,
            input_size=input_size, input_dtype=input_dtype, input_range=input_range,
        )
    for w in report.warnings:
        warn(w)
    if json:
        emit_json(report.to_dict())
    else:
        print_pieces(trainable_lines(report))


@app.command()
def flops(
    model: ModelArg,
    input_size: InputSize = None,
    input_dtype: InputDtype = None,
    input_range: InputRange = None,
    batch: Batch = 1,
    depth: Annotated[int, typer.Option("--depth", help="How deep the by-module rows go.")] = 2,
    num_classes: NumClasses = None,
    backward: Annotated[bool, typer.Option("--backward", help="Also count the backward pass, from the operators "
                                                              "autograd runs.")] = False,
    freeze_except: FreezeExcept = None,
    freeze_all: FreezeAll = False,
    freeze: Freeze = None,
    head: Head = None,
    counter: Annotated[Counter, typer.Option("--counter", help="torch: formulas of torch.utils.flop_counter on meta "
                                                               "(exact, no weights); fvcore: fvcore on real "
                                                               "tensors.")] = Counter.TORCH,
    weights: Weights = None,
    trust: Trust = False,
    json: Json = False,
) -> None:
    """MACs and FLOPs (FLOPs = 2 × MACs) by module and operator; --backward counts training's backward pass."""
    from ..analysis import flops as flopcount
    from ..report.console import emit_json, print_pieces
    from ..report.flops import flops_lines

    with _model_output(json):
        report = flopcount.flops(
            model, input_size=input_size, input_dtype=input_dtype, input_range=input_range, batch=batch, depth=depth,
            num_classes=num_classes, backward=backward,
            freeze_all=freeze_all, freeze_except=freeze_except, freeze=freeze, counter=counter, weights=weights,
            trust=trust, head=head,
        )
    if json:
        emit_json(report.to_dict())
    else:
        print_pieces(flops_lines(report))


@app.command()
def bench(
    model: Annotated[str, typer.Argument(help="One model or several, comma-separated: "
                                              "resnet18,resnet50.", show_default=False)],
    device: Annotated[Device, typer.Option("--device", help="Where to run.")] = Device.CPU,
    batch: Annotated[str, typer.Option("--batch", help="Batch size, a sweep (1,8,32,64), or 'auto' for the largest "
                                                       "that fits.")] = "1",
    mode: Annotated[Mode, typer.Option("--mode", help="forward (eval, inference_mode), forward_backward (train mode), "
                                                      "train_step (+ optimizer step and zero_grad), or "
                                                      "all.")] = Mode.ALL,
    dtype: Annotated[DType, typer.Option("--dtype", help="float32, or bfloat16/float16 under "
                                                         "autocast.")] = DType.FLOAT32,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="Model and input in channels_last memory "
                                                                        "format.")] = False,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model (compilation happens during "
                                                            "warm-up).")] = False,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads (torch.set_num_threads); default: "
                                                                  "torch's.")] = None,
    min_time: Annotated[float, typer.Option("--min-time", help="Seconds of timed runs at least; runs repeat until the "
                                                               "median is stable.")] = 1.0,
    max_time: Annotated[float | None, typer.Option("--max-time", help="Seconds of timed runs at most per mode; default "
                                                                      "10 × --min-time.")] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed steps before timing.")] = 3,
    optimizer: Annotated[Optimizer, typer.Option("--optimizer", help="Optimizer of train_step.")] = Optimizer.SGD,
    freeze_except: FreezeExcept = None,
    freeze_all: FreezeAll = False,
    freeze: Freeze = None,
    num_classes: NumClasses = None,
    head: Head = None,
    input_size: InputSize = None,
    input_dtype: InputDtype = None,
    input_range: InputRange = None,
    weights: Weights = None,
    trust: Trust = False,
    json: Json = False,
    csv: Annotated[str | None, typer.Option("--csv", help="Also write the results as CSV to this file.")] = None,
    plot: Annotated[str | None, typer.Option("--plot", help="Write a PNG of throughput against batch size (needs "
                                                            "matplotlib).")] = None,
    save: Annotated[str | None, typer.Option("--save", help="Write the same JSON as --json to this file, as a "
                                                            "baseline.")] = None,
    compare: Annotated[str | None, typer.Option("--compare", help="Compare with a baseline saved by --save; exit 1 "
                                                                  "naming each mode that regressed.")] = None,
    threshold: Annotated[float, typer.Option("--threshold", help="Percent slower that counts as a regression: the 95% "
                                                                 "interval of new/old must lie above "
                                                                 "it.")] = DEFAULT_THRESHOLD,
    repeat: Annotated[int | None, typer.Option("--repeat", help="Run the whole sweep N times, to measure run-to-run "
                                                                "drift; default 2 with --save, the baseline's count "
                                                                "with --compare, 1 otherwise.")] = None,
    nproc: Annotated[int | None, typer.Option("--nproc", help="Data-parallel on N local ranks (DDP, started by torch's "
                                                              "elastic launcher); train_step and "
                                                              "forward_backward.")] = None,
    ddp: Annotated[bool, typer.Option("--ddp", help="Join a torchrun job (RANK, WORLD_SIZE, ... in the environment); "
                                                    "rank 0 prints.")] = False,
    backend: Annotated[str | None, typer.Option("--backend", help="torch.distributed backend; default nccl on CUDA, "
                                                                  "gloo on the CPU.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds a rank waits for the others "
                                                             "(init_process_group's timeout).")] = 300.0,
    bucket_mb: Annotated[float | None, typer.Option("--bucket-mb", help="DDP's gradient bucket size in MB; default "
                                                                        "DDP's own (25).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="With --nproc: the rendezvous port on 127.0.0.1; default a "
                                                            "free one.")] = None,
    find_unused_parameters: Annotated[bool, typer.Option("--find-unused-parameters", help="With --nproc/--ddp: DDP's "
                                                                                          "find_unused_parameters, for "
                                                                                          "a model with trainable "
                                                                                          "parameters a step does not "
                                                                                          "use.")] = False,
) -> None:
    """Time forward, backward and train steps with warm-up, synchronised timers and stable medians; with
    --nproc or --ddp, data-parallel across processes, GPUs and nodes."""
    from ..benchmark import regression
    from ..benchmark.sweep import parse_batches, sweep
    from ..models.registry import resolve
    from ..report.bench import BENCH_COLUMNS, bench_lines, bench_rows
    from ..report.console import emit_json, json_text, print_pieces, warn
    from ..report.files import OutputError, check_writable, plot_throughput, require_matplotlib, write_atomic, write_csv
    from ..report.regression import comparison_lines
    from ..training.config import BenchConfig
    from ..training.devices import check_device

    models = [m.strip() for m in model.split(",") if m.strip()]
    if not models:
        raise CnnprobeError("no model given")
    config = BenchConfig(
        device=device, dtype=dtype, mode=mode, channels_last=channels_last, compile=compile, threads=threads,
        min_time=min_time, max_time=max_time, warmup=warmup, optimizer=optimizer, freeze_all=freeze_all,
        freeze_except=freeze_except, freeze=freeze, num_classes=num_classes, head=head, input_size=input_size,
        input_dtype=input_dtype, input_range=input_range, weights=weights, trust=trust,
    )
    if nproc is not None or ddp:
        _distributed(models, batch, nproc, ddp, json, [csv, plot, save, compare], config.replace(predict=False),
                     backend, timeout, bucket_mb, port, find_unused_parameters)
        return
    for path in (csv, plot, save):  # fail before timing, not after
        if path is not None:
            check_writable(path)
    if compare is not None and not compare.strip():
        raise CnnprobeError("--compare is empty: give a baseline file saved with --save")
    if plot:
        require_matplotlib()
    batches = parse_batches(batch)
    baseline = None
    if compare is not None:
        baseline = regression.load_baseline(compare)
        regression.check_threshold(threshold)
        if repeat is None:
            repeat = max(len(m.get("repeats") or [m]) for run in baseline for m in run["results"])
    if repeat is None:
        repeat = 2 if save else 1
    config = config.replace(repeat=repeat)
    check_device(config.device)
    names = [resolve(m).name for m in models]
    if baseline is not None:
        regression.check_comparable(baseline, names, batches, Device(config.device).value, DType(config.dtype).value,
                                    threshold, config.planned())

    from ..training.devices import machine_load

    load = machine_load(config.threads)
    if load:
        warn(load)
    total = len(models) * len(batches) * len(config.planned()) * repeat
    with _progress(enabled=True, total=total) as advance, _model_output(json):
        result = sweep(models, batches, config, on_phase=advance, on_search=lambda text: advance(text, advance=False))

    verdict = None
    if baseline is not None and result.runs and not result.interrupted:
        verdict = regression.compare(baseline, [r.to_dict() for r in result.runs], threshold)
        verdict.notes += regression.thinning_notes(baseline)
    data = result.report()
    if verdict is not None:
        data["comparison"] = verdict.to_dict()
    unwritten: list[str] = []  # measured results are printed even when a file cannot take them
    writers: list[tuple[str | None, Callable[[str], object]]] = [
        (save, lambda p: write_atomic(p, json_text(data))),
        (csv, lambda p: write_csv(bench_rows(result.runs), BENCH_COLUMNS, p)),
        (plot, lambda p: plot_throughput(result.runs, p))]
    for path, write in writers:
        if path and result.runs:
            try:
                write(path)
            except OutputError as e:
                unwritten.append(str(e))
    if json:
        emit_json({**data, "unwritten": unwritten} if unwritten else data)
    else:
        print_pieces(bench_lines(result) + (comparison_lines(verdict) if verdict else []))
    if unwritten:
        raise _printed(OutputError("; ".join(unwritten) + " (the results are printed above)"))
    if result.interrupted:
        raise Interrupted("the results above are what was measured so far")
    if result.failures:
        raise _printed(RunError(result.failure_text(Device(config.device).value)))
    if verdict is not None and not verdict.ok:
        raise _printed(RunError(f"regressed against {compare}: {verdict.regression_text()}"))
    if verdict is not None and verdict.blind:
        raise _printed(regression.BlindError(
            f"cannot judge against {compare}: the interval is too wide to tell a {threshold:g}% slowdown from none "
            f"for {verdict.blind_text()}; save the baseline again with more --repeat or --min-time, or on a "
            "quieter machine"))


@app.command()
def memory(
    model: ModelArg,
    batch: Batch = 1,
    input_size: InputSize = None,
    input_dtype: InputDtype = None,
    input_range: InputRange = None,
    num_classes: NumClasses = None,
    freeze_except: FreezeExcept = None,
    freeze_all: FreezeAll = False,
    freeze: Freeze = None,
    head: Head = None,
    freeze_bn: Annotated[bool, typer.Option("--freeze-bn", help="BatchNorm layers in eval mode, as trainable "
                                                                "--freeze-bn.")] = False,
    optimizer: Annotated[Optimizer, typer.Option("--optimizer", help="Optimizer of train_step, whose state is "
                                                                     "counted.")] = Optimizer.ADAM,
    dtype: Annotated[DType, typer.Option("--dtype", help="float32, or bfloat16/float16 under "
                                                         "autocast.")] = DType.FLOAT32,
    device: Annotated[Device, typer.Option("--device", help="The device predicted for (prediction itself needs "
                                                            "none).")] = Device.CPU,
    mode: Annotated[Mode, typer.Option("--mode", help="forward, forward_backward, train_step, or all.")] = Mode.ALL,
    budget: Annotated[str | None, typer.Option("--budget", help="A memory size (24GiB, 80GB, 512MiB): answer the "
                                                                "largest batch whose heaviest mode fits.")] = None,
    depth: Annotated[int, typer.Option("--depth", help="Module depth of the saved-activations table.")] = 2,
    top: Annotated[int, typer.Option("--top", help="Rows of the saved-activations table.")] = 10,
    json: Json = False,
) -> None:
    """Predict a training step's peak memory before running it, freezing included: parameters, gradients,
    optimizer state, activations and temporaries, on fake tensors (nothing is allocated)."""
    from ..memory.predict import memory as predict
    from ..report.console import emit_json, print_pieces
    from ..report.memory import memory_lines

    if top <= 0:
        raise CnnprobeError(f"--top must be positive, got {top}")
    with _model_output(json):
        report = predict(model, batch=batch, mode=mode, optimizer=optimizer, dtype=dtype, device=device,
                         freeze_all=freeze_all, freeze_except=freeze_except, freeze=freeze, head=head,
                         freeze_bn=freeze_bn, num_classes=num_classes, input_size=input_size, input_dtype=input_dtype,
                         input_range=input_range, budget=budget, depth=depth)
    if json:
        emit_json(report.to_dict())
    else:
        print_pieces(memory_lines(report, depth, top))


@app.command()
def checkpoint(
    file: Annotated[str, typer.Argument(help="A .pth/.pt file: state_dict, training checkpoint, pickled model or "
                                             "torchvision weights.", show_default=False)],
    model: Annotated[str | None, typer.Option("--model", help="Also check that the weights fit this model.")] = None,
    num_classes: Annotated[int | None, typer.Option("--num-classes", help="Width of --model's head, for fine-tuned "
                                                                          "checkpoints.")] = None,
    trust: Trust = False,
    input_size: InputSize = None,
    input_dtype: InputDtype = None,
    input_range: InputRange = None,
    json: Json = False,
) -> None:
    """What a weights or checkpoint file holds, read safely (weights_only): format, tensors, dtypes, devices,
    training state."""
    from ..analysis.checkpoint import inspect_checkpoint
    from ..report.checkpoint import checkpoint_lines
    from ..report.console import emit_json, print_pieces

    with _model_output(json):
        info = inspect_checkpoint(file, model=model, num_classes=num_classes, trust=trust, input_size=input_size,
                                  input_dtype=input_dtype, input_range=input_range)
    if json:
        emit_json(info.to_dict())
    else:
        print_pieces(checkpoint_lines(info))


@app.command()
def compare(
    a: Annotated[str, typer.Argument(help="First model (A).", show_default=False)],
    b: Annotated[str, typer.Argument(help="Second model (B).", show_default=False)],
    input_size: InputSize = None,
    input_dtype: InputDtype = None,
    input_range: InputRange = None,
    batch: Batch = 1,
    depth: Annotated[int, typer.Option("--depth", help="How deep the differing layers are listed.")] = 3,
    weights_a: Annotated[str | None, typer.Option("--weights-a", help="Weights for A, as --weights.")] = None,
    weights_b: Annotated[str | None, typer.Option("--weights-b", help="Weights for B, as --weights.")] = None,
    trust: Trust = False,
    json: Json = False,
) -> None:
    """Two models side by side: parameters, MACs, the layers that differ, and whether A's weights load into B."""
    from ..analysis.compare import compare_models
    from ..models.build import check_depth
    from ..report.compare import comparison_model_lines
    from ..report.console import emit_json, print_pieces

    check_depth(depth)
    with _model_output(json):
        result = compare_models(a, b, input_size=input_size, input_dtype=input_dtype, input_range=input_range,
                                batch=batch, weights_a=weights_a, weights_b=weights_b, trust=trust)
    if json:
        emit_json(result.to_dict())
    else:
        print_pieces(comparison_model_lines(result, depth))


def _distributed(models: list[str], batch: str, nproc: int | None, ddp: bool, json_mode: bool, files: list[Any],
                 config: Any, backend: str | None, timeout: float, bucket_mb: float | None, port: int | None,
                 find_unused: bool = False) -> None:
    """`bench --nproc N` (ranks started here) or `bench --ddp` (this process is one rank of a torchrun job)."""
    import math

    from ..benchmark.distributed.worker import DistOptions, backend_for, in_launcher, worker
    from ..report.console import emit_json, print_pieces
    from ..report.ddp import ddp_lines
    from ..training.devices import check_device

    if nproc is not None and ddp:
        raise CnnprobeError("--nproc starts the ranks itself; --ddp joins ranks torchrun started: give one")
    if len(models) > 1 or "," in batch or batch.strip().lower() == "auto":
        raise CnnprobeError("a distributed bench takes one model and one batch size (per rank)")
    if any(f is not None for f in files):
        raise CnnprobeError("--csv, --plot, --save and --compare are not available with --nproc or --ddp; use --json")
    if not (math.isfinite(timeout) and timeout > 0):
        raise CnnprobeError(f"--timeout must be a positive number of seconds, got {timeout}")
    if bucket_mb is not None and not (math.isfinite(bucket_mb) and bucket_mb > 0):
        raise CnnprobeError(f"--bucket-mb must be a positive number, got {bucket_mb}")
    per_rank = int(_parse_one_batch(batch))
    check_device(config.device)
    backend_for(config.device.value, backend)
    options = DistOptions(backend, timeout, bucket_mb, find_unused)
    signals.raise_pending()  # a Ctrl-C or SIGTERM while torch loaded, which an import swallowed
    if ddp:
        if not in_launcher():
            raise CnnprobeError("--ddp joins a job started by torchrun, but RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR "
                                "and MASTER_PORT are not set: run it under torchrun, or use --nproc N")
        from ..benchmark.distributed.worker import RankFailure

        try:
            with _model_output(json_mode):
                data = worker(models[0], per_rank, config, options)
        except RankFailure as e:  # one line and one JSON object, from one rank; the others leave quietly
            e.args = (str(e),) if e.reporter else ("",)
            raise
        if data is None:
            return  # only rank 0 prints
        from ..benchmark.distributed.worker import from_dict

        result = from_dict(data)
    else:
        from ..benchmark.distributed.launcher import launch

        assert nproc is not None  # called for --nproc or --ddp, and this is not --ddp
        with _model_output(json_mode):
            result = launch(models[0], per_rank, config, nproc, options, port)
    if json_mode:
        emit_json(result.to_dict())
    else:
        print_pieces(ddp_lines(result))
    if result.gradients_differ:
        raise _printed(RunError("gradients differ between ranks after a synchronised step, in "
                                + ", ".join(result.gradients_differ[:8])
                                + (f" and {len(result.gradients_differ) - 8} more" if len(result.gradients_differ) > 8
                                   else "") + " (the results are printed above)"))


def _parse_one_batch(text: str) -> int:
    from ..benchmark.sweep import parse_batches

    return int(parse_batches(text)[0])


def _printed(error: CnnprobeError) -> CnnprobeError:
    """An error raised after the results were printed: with --json, stdout already holds its one object, which
    says what went wrong (failures, comparison, unwritten)."""
    error.printed = True  # type: ignore[attr-defined]
    return error


def _model_output(json_mode: bool) -> contextlib.AbstractContextManager[Any]:
    """With --json, what a model prints goes to stderr: stdout holds the JSON object and nothing else."""
    return contextlib.redirect_stdout(sys.stderr) if json_mode else contextlib.nullcontext()


class _progress:
    """A rich progress bar on stderr, only for a terminal (with --json too: stdout keeps the JSON alone).
    The callable it gives takes a description; `advance=False` says what is happening without counting a
    step (a batch search's probes)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.total = total

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda description, advance=True: None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), TimeElapsedColumn(),
                            console=Console(stderr=True, markup=False, emoji=False), transient=True)
        self.bar.__enter__()
        task = self.bar.add_task("starting", total=self.total)
        first = [True]

        def advance(description: str, advance: bool = True) -> None:
            if advance and not first[0]:
                self.bar.advance(task)
            first[0] = first[0] and not advance
            self.bar.update(task, description=description)

        return advance

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)


def main() -> None:
    """The `cnnprobe` command (see `cnnprobe.__main__`, which also catches Ctrl-C while this module loads)."""
    app()
