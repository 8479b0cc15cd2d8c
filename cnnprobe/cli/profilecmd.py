"""`cnnprobe profile`: bench's model and step options, the depth and the outputs; options → config → one call →
render. No torch at import."""

from __future__ import annotations

from typing import Annotated

import typer

from ..core.enums import Device, DType, Mode, Optimizer
from ..core.errors import CnnprobeError
from .edge import model_output
from .options import (
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
    NumClasses,
    RunDevice,
    StepOptimizer,
    Threads,
    TrainableBackboneLayers,
    Trust,
    Warmup,
    Weights,
    freeze_plan,
    model_request,
    option,
)
from .progress import progress

PROFILE_EXAMPLES = ("cnnprobe profile resnet18 --batch 8",
                    "cnnprobe profile mobilenet_v3_small --depth -1 --top 15 --trace step.json --plot roofline.png",
                    "cnnprobe profile resnet18 --freeze-except layer4,fc --device cuda --batch 64")


def profile(
    model: Annotated[str, typer.Argument(help="A registered name (resnet18) or path/to/file.py:ClassOrFactory.",
                                         show_default=False)],
    batch: Annotated[int, option("--batch", panel=MODEL, help="Batch size.")] = 1,
    input_size: InputSize = None, input_dtype: InputDtype = None, input_range: InputRange = None,
    num_classes: NumClasses = None, head: Head = None, weights: Weights = None, trust: Trust = False,
    freeze_except: FreezeExcept = None, freeze_all: FreezeAll = False, freeze: Freeze = None,
    trainable_backbone_layers: TrainableBackboneLayers = None, device: RunDevice = Device.CPU,
    mode: Annotated[Mode, option("--mode", panel=STEP, help="The one step profiled: forward (eval, "
                                 "inference_mode), forward_backward, or train_step (+ optimizer step and "
                                 "zero_grad).")] = Mode.TRAIN_STEP,
    dtype: DTypeOpt = DType.FLOAT32,
    optimizer: StepOptimizer = Optimizer.SGD,
    channels_last: ChannelsLast = False,
    threads: Threads = None,
    min_time: Annotated[float, option("--min-time", panel=TIMING, help="Seconds of profiled steps at least (as many "
                                      "again run unprofiled, interleaved).")] = 1.0,
    max_time: Annotated[float | None, option("--max-time", panel=TIMING, help="Seconds of profiled steps at most; "
                                             "default 10 × --min-time.")] = None,
    warmup: Warmup = 3,
    depth: Annotated[int, option("--depth", panel=OUTPUT, help="Rows at this depth (1 = what the model's forward "
                                 "calls); -1 for the leaves.")] = 1,
    top: Annotated[int | None, option("--top", panel=OUTPUT, help="Show the N slowest rows; the others are folded "
                                      "into one line. Default: all.")] = None,
    json: Json = False,
    trace: Annotated[str | None, option("--trace", panel=OUTPUT, help="Write one traced step as Chrome Trace Event "
                                        "JSON (open in Perfetto or chrome://tracing).")] = None,
    plot: Annotated[str | None, option("--plot", panel=OUTPUT, help="Write the roofline as a PNG (needs "
                                       "matplotlib).")] = None,
) -> None:
    """Where a step's time goes, module by module, forward and backward: measured by hooks, beside each
    module's MACs and bytes and the device's measured roofline, the hooks' cost measured in the same run."""
    from ..benchmark.attribution.run import Profiler
    from ..report import files
    from ..report.chrometrace import write_trace
    from ..report.console import emit_json, print_pieces
    from ..report.profile import profile_lines
    from ..report.roofline import plot_roofline
    from ..training.config import BenchConfig

    if top is not None and top <= 0:
        raise CnnprobeError(f"--top must be positive, got {top}")
    for path in (trace, plot):  # fail before timing, not after
        if path is not None:
            files.check_writable(path)
    if plot:
        files.require_matplotlib()
    request = model_request(None, input_size=input_size, input_dtype=input_dtype, input_range=input_range,
                            num_classes=num_classes, head=head, weights=weights, trust=trust,
                            trainable_backbone_layers=trainable_backbone_layers)
    config = BenchConfig(device=device, dtype=dtype, mode=mode, channels_last=channels_last, threads=threads,
                         min_time=min_time, max_time=max_time, warmup=warmup, optimizer=optimizer, request=request,
                         plan=freeze_plan(freeze_all, freeze_except, freeze), memory=False, predict=False)
    profiler = Profiler(model, batch, config, depth=depth, timeline=trace is not None)
    with progress(enabled=True, total=5) as advance, model_output(json):
        report = profiler.run(on_phase=advance)
    if trace is not None:
        write_trace(report, trace)
    if plot is not None:
        plot_roofline(report, plot)
    if json:
        emit_json(report.to_dict())
    else:
        print_pieces(profile_lines(report, top))
