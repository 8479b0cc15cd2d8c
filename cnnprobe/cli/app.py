"""The `cnnprobe` command: one plain function per command, each options → request → one API call → render.

This module imports no torch at module level, so `cnnprobe --help` is fast. The shared options are in
`options`, the error edge (one line on stderr, an exit code) in `edge`, bench in `benchcmd`.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..core.enums import Counter, Device, DType, Mode, Optimizer, Task
from ..core.errors import CnnprobeError
from .benchcmd import BENCH_EXAMPLES, bench
from .edge import Command, OneLineErrors, model_output
from .options import (
    MODEL,
    OUTPUT,
    STEP,
    Batch,
    Depth,
    DTypeOpt,
    Freeze,
    FreezeAll,
    FreezeBn,
    FreezeExcept,
    Head,
    InputDtype,
    InputRange,
    InputSize,
    Json,
    ModelArg,
    ModeOpt,
    NumClasses,
    OptimizerOpt,
    TrainableBackboneLayers,
    Trust,
    Weights,
    example,
    flag,
    freeze_plan,
    model_request,
    option,
)
from .predictcmd import CALIBRATE_EXAMPLES, PREDICT_EXAMPLES, calibrate, predict
from .profilecmd import PROFILE_EXAMPLES, profile

app = typer.Typer(
    cls=OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Look inside CNNs: per-layer shapes, parameters before and after freezing, FLOPs, timings.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def command(examples: tuple[str, ...], name: str | None = None) -> Any:
    """A command, its help ending in `examples`."""
    return app.command(name, cls=Command, epilog=example(*examples))


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"cnnprobe {__version__}")
        raise typer.Exit()


@app.callback(epilog=example("cnnprobe summary resnet18", "cnnprobe bench resnet18 --device cuda --batch 64"))
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, metavar="",
                                          help="Print cnnprobe's version and exit.")] = False,
) -> None:
    """Look inside CNNs: per-layer shapes, parameters before and after freezing, FLOPs, timings."""


def _show(data: Any, json_mode: bool, lines: Any) -> None:
    """The record as one JSON object, or its tables (`lines()` renders them)."""
    from ..report.console import emit_json, print_pieces

    if json_mode:
        emit_json(data.to_dict())
    else:
        print_pieces(lines())


@command(name="list", examples=("cnnprobe list 'resnet*'", "cnnprobe list --task detection", "cnnprobe list --json"))
def list_cmd(
    pattern: Annotated[str | None, typer.Argument(help="Glob or substring of the name, e.g. 'resnet*'.")] = None,
    task: Annotated[Task | None, option("--task", panel=OUTPUT, help="Only the models of this task, as "
                                        "torchvision groups them.")] = None,
    json: Json = False,
) -> None:
    """List the models cnnprobe can build: source, name, task, parameters and default input size."""
    from ..models.build import param_counts
    from ..models.registry import list_models
    from ..report.console import emit_json, print_pieces
    from ..report.registry_list import list_table

    specs = list_models(pattern, task=task)
    if not specs:
        of = f" of task {task.value}" if task is not None else ""
        raise CnnprobeError(f"no model{of} matches '{pattern}'" if pattern else f"no model{of}")
    params = param_counts(specs)
    if json:
        emit_json({"models": [
            {"source": s.source.value, "name": s.name, "qualified": s.qualified, "params": params[s.qualified],
             "task": s.task.value, "input_size": list(s.input_shape or []), "published_gmacs": s.published_gmacs}
            for s in specs
        ]})
        return
    print_pieces([list_table(specs, params)])


@command(examples=("cnnprobe summary resnet18 --depth 2", "cnnprobe summary resnet18 --input-size 3,128,128"))
def summary(
    model: ModelArg, input_size: InputSize = None, input_dtype: InputDtype = None, input_range: InputRange = None,
    batch: Batch = 1, num_classes: NumClasses = None, weights: Weights = None, trust: Trust = False,
    trainable_backbone_layers: TrainableBackboneLayers = None, depth: Depth = 3, json: Json = False,
) -> None:
    """Per-layer output shapes, parameters and MACs, built on the meta device: no weights are allocated."""
    from ..analysis import summary as api
    from ..report.summary import summary_lines

    request = model_request(model, input_size=input_size, input_dtype=input_dtype, input_range=input_range, batch=batch,
                       num_classes=num_classes, weights=weights, trust=trust,
                       trainable_backbone_layers=trainable_backbone_layers)
    with model_output(json):
        result = api.summary(request, depth=depth)
    _show(result, json, lambda: summary_lines(result))


@command(examples=("cnnprobe trainable resnet18 --freeze-except layer4,fc --num-classes 10",
                            "cnnprobe trainable resnet18 --freeze-all --head 'dropout(0.3),linear(10)' --freeze-bn"))
def trainable(
    model: ModelArg, num_classes: NumClasses = None, head: Head = None, weights: Weights = None,
    trust: Trust = False, input_size: InputSize = None, input_dtype: InputDtype = None,
    input_range: InputRange = None, freeze_except: FreezeExcept = None, freeze_all: FreezeAll = False,
    freeze: Freeze = None, freeze_bn: FreezeBn = False, trainable_backbone_layers: TrainableBackboneLayers = None,
    lr: Annotated[list[str] | None, option("--lr", panel=STEP, help="MODULES=LR, repeatable: an optimizer parameter "
                                           "group, e.g. --lr layer4=1e-4 --lr fc=1e-3.")] = None,
    optimizer: OptimizerOpt = Optimizer.ADAM, json: Json = False,
) -> None:
    """Total and trainable parameters before and after freezing, per top-level block (a model with lazy layers
    is sized by one pass of its input)."""
    from ..analysis import trainable as api
    from ..report.console import warn
    from ..report.trainable import trainable_lines

    plan = freeze_plan(freeze_all, freeze_except, freeze)
    request = model_request(model, num_classes=num_classes, head=head, weights=weights, trust=trust,
                       input_size=input_size, input_dtype=input_dtype, input_range=input_range,
                       trainable_backbone_layers=trainable_backbone_layers)
    with model_output(json):
        report = api.trainable(request, plan=plan, lr=lr or [], freeze_bn=freeze_bn, optimizer=optimizer)
    for w in report.warnings:
        warn(w)
    _show(report, json, lambda: trainable_lines(report))


@command(examples=("cnnprobe flops vit_h_14", "cnnprobe flops resnet18 --backward --freeze-except layer4,fc"))
def flops(
    model: ModelArg, input_size: InputSize = None, input_dtype: InputDtype = None, input_range: InputRange = None,
    batch: Batch = 1, num_classes: NumClasses = None, head: Head = None, weights: Weights = None,
    trust: Trust = False, freeze_except: FreezeExcept = None, freeze_all: FreezeAll = False, freeze: Freeze = None,
    trainable_backbone_layers: TrainableBackboneLayers = None,
    backward: Annotated[bool, flag("--backward", panel=STEP, help="Also count the backward pass, from the operators "
                                   "autograd runs.")] = False,
    counter: Annotated[Counter, option("--counter", panel=STEP, help="torch: formulas of torch.utils.flop_counter on "
                                       "meta (exact, no weights); fvcore: fvcore on real tensors.")] = Counter.TORCH,
    depth: Depth = 2, json: Json = False,
) -> None:
    """MACs and FLOPs (FLOPs = 2 × MACs) by module and operator; --backward counts training's backward pass."""
    from ..analysis import flops as api
    from ..report.flops import flops_lines

    request = model_request(model, input_size=input_size, input_dtype=input_dtype, input_range=input_range, batch=batch,
                       num_classes=num_classes, head=head, weights=weights, trust=trust,
                       trainable_backbone_layers=trainable_backbone_layers)
    plan = freeze_plan(freeze_all, freeze_except, freeze)
    with model_output(json):
        report = api.flops(request, plan=plan, depth=depth, backward=backward, counter=counter)
    _show(report, json, lambda: flops_lines(report))


app.command(cls=Command, epilog=example(*BENCH_EXAMPLES))(bench)
app.command(cls=Command, epilog=example(*PROFILE_EXAMPLES))(profile)
app.command(cls=Command, epilog=example(*PREDICT_EXAMPLES))(predict)
app.command(cls=Command, epilog=example(*CALIBRATE_EXAMPLES))(calibrate)


@command(examples=("cnnprobe memory vit_h_14 --batch 32 --device cuda",
                            "cnnprobe memory resnet50 --freeze-except layer4,fc --budget 24GiB"))
def memory(
    model: ModelArg, batch: Batch = 1, input_size: InputSize = None, input_dtype: InputDtype = None,
    input_range: InputRange = None, num_classes: NumClasses = None, head: Head = None,
    freeze_except: FreezeExcept = None, freeze_all: FreezeAll = False, freeze: Freeze = None,
    freeze_bn: FreezeBn = False, trainable_backbone_layers: TrainableBackboneLayers = None,
    optimizer: OptimizerOpt = Optimizer.ADAM, dtype: DTypeOpt = DType.FLOAT32,
    device: Annotated[Device, option("--device", panel=STEP, help="The device predicted for (prediction itself "
                                     "needs none).")] = Device.CPU,
    mode: ModeOpt = Mode.ALL,
    budget: Annotated[str | None, option("--budget", panel=STEP, help="A memory size (24GiB, 80GB, 512MiB): answer "
                                         "the largest batch whose heaviest mode fits.")] = None,
    depth: Annotated[int, option("--depth", panel=OUTPUT, help="Module depth of the saved-activations table.")] = 2,
    top: Annotated[int, option("--top", panel=OUTPUT, help="Rows of the saved-activations table.")] = 10,
    json: Json = False,
) -> None:
    """Predict a training step's peak memory before running it, freezing included: parameters, gradients,
    optimizer state, activations and temporaries, on fake tensors (nothing is allocated)."""
    from ..memory import predict as api
    from ..report.memory import memory_lines

    if top <= 0:
        raise CnnprobeError(f"--top must be positive, got {top}")
    request = model_request(model, batch=batch, input_size=input_size, input_dtype=input_dtype, input_range=input_range,
                       num_classes=num_classes, head=head, trainable_backbone_layers=trainable_backbone_layers)
    plan = freeze_plan(freeze_all, freeze_except, freeze)
    with model_output(json):
        report = api.memory(request, plan=plan, mode=mode, optimizer=optimizer, dtype=dtype, device=device,
                            freeze_bn=freeze_bn, budget=budget, depth=depth)
    _show(report, json, lambda: memory_lines(report, depth, top))


@command(examples=("cnnprobe checkpoint run/checkpoint.pth", "cnnprobe checkpoint weights.pth --model "
                            "resnet18 --num-classes 10"))
def checkpoint(
    file: Annotated[str, typer.Argument(help="A .pth/.pt file: state_dict, training checkpoint, pickled model or "
                                             "torchvision weights.", show_default=False)],
    model: Annotated[str | None, option("--model", panel=MODEL, help="Also check that the weights fit this "
                                        "model.")] = None,
    num_classes: NumClasses = None, trust: Trust = False, input_size: InputSize = None,
    input_dtype: InputDtype = None, input_range: InputRange = None, json: Json = False,
) -> None:
    """What a weights or checkpoint file holds, read safely (weights_only): format, tensors, dtypes, devices,
    training state."""
    from ..analysis import checkpoint as api
    from ..report.checkpoint import checkpoint_lines

    request = model_request(model, num_classes=num_classes, trust=trust, input_size=input_size, input_dtype=input_dtype,
                       input_range=input_range)
    with model_output(json):
        info = api.inspect_checkpoint(file, model=request)
    _show(info, json, lambda: checkpoint_lines(info))


@command(examples=("cnnprobe compare cnnprobe:alexnet alexnet",
                            "cnnprobe compare resnet18 resnet34 --depth 1"))
def compare(
    a: Annotated[str, typer.Argument(help="First model (A).", show_default=False)],
    b: Annotated[str, typer.Argument(help="Second model (B).", show_default=False)],
    input_size: InputSize = None, input_dtype: InputDtype = None, input_range: InputRange = None,
    batch: Batch = 1,
    weights_a: Annotated[str | None, option("--weights-a", panel=MODEL, help="Weights for A, as --weights.")] = None,
    weights_b: Annotated[str | None, option("--weights-b", panel=MODEL, help="Weights for B, as --weights.")] = None,
    trust: Trust = False,
    depth: Annotated[int, option("--depth", panel=OUTPUT, help="How deep the differing layers are listed.")] = 3,
    json: Json = False,
) -> None:
    """Two models side by side: parameters, MACs, the layers that differ, and whether A's weights load into B."""
    from ..analysis import compare as api
    from ..models.build import check_depth
    from ..report.compare import comparison_model_lines

    check_depth(depth)
    request = model_request(a, input_size=input_size, input_dtype=input_dtype, input_range=input_range, batch=batch,
                       weights=weights_a, trust=trust)
    with model_output(json):
        result = api.compare_models(request, b, weights_b=weights_b)
    _show(result, json, lambda: comparison_model_lines(result, depth))


def main() -> None:
    """The `cnnprobe` command (see `cnnprobe.__main__`, which also catches Ctrl-C while this module loads)."""
    app()
