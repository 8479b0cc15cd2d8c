"""The options the commands share, each declared once, in the help panels they show under.

A flag (a bool option) shows no value placeholder: it takes none. This module imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..core.enums import Device, DType, Mode, Optimizer

if TYPE_CHECKING:
    from ..models.freezing import FreezePlan
    from ..models.request import ModelRequest

MODEL = "Model and input"
FREEZING = "Freezing"
STEP = "Step"
TIMING = "Timing"
OUTPUT = "Output"
DISTRIBUTED = "Distributed"


def option(*names: str, help: str, panel: str, **kwargs: Any) -> Any:
    """An option under `panel` in the help."""
    return typer.Option(*names, help=help, rich_help_panel=panel, **kwargs)


def flag(name: str, help: str, panel: str) -> Any:
    """A switch: present or not, no value (and none shown in the help)."""
    return typer.Option(name, help=help, rich_help_panel=panel, metavar="", show_default=False)


# the model and its input
ModelArg = Annotated[str, typer.Argument(
    help="A registered name (resnet18, cnnprobe:vgg16, torchvision:vgg16) or path/to/file.py:ClassOrFactory.",
    show_default=False)]
InputSize = Annotated[list[str] | None, option(
    "--input-size", panel=MODEL, help="Input sizes without the batch: C,H,W (or H,W, or one side), any rank (1,10 "
    "for a Conv1d); repeat for a model with several inputs. Default: the model's own.")]
InputDtype = Annotated[list[str] | None, option(
    "--input-dtype", panel=MODEL, help="Input dtype (float32, long, ...): once for all inputs, or once per "
    "--input-size.")]
InputRange = Annotated[str | None, option(
    "--input-range", panel=MODEL, help="LOW,HIGH: integer inputs (token ids) draw their values from [LOW, HIGH); "
    "default: the first embedding's size.")]
Batch = Annotated[int, option("--batch", panel=MODEL, help="Batch size of the example input.")]
NumClasses = Annotated[int | None, option(
    "--num-classes", panel=MODEL, help="Width of the classifier head: the final classifier layer is replaced by one of "
    "this width where the builder does not take it. A detection, segmentation or video model's task heads are "
    "replaced as torchvision's fine-tuning recipes do (Faster R-CNN's box predictor, Mask R-CNN's mask predictor, "
    "the classification heads of RetinaNet, FCOS and SSD, classifier[4] and aux_classifier[4]).")]
Head = Annotated[str | None, option(
    "--head", panel=MODEL, help="Replace the final classifier with these layers, e.g. "
    "dropout(0.3),linear(256),relu,dropout(0.3),linear(10); a new head stays trainable under --freeze-all and "
    "--freeze-except.")]
Weights = Annotated[str | None, option(
    "--weights", panel=MODEL, help="DEFAULT or a torchvision weights name (IMAGENET1K_V1) from the local torch hub "
    "cache, or a state_dict / training checkpoint file; loaded strictly, mapped to the CPU.")]
Trust = Annotated[bool, flag(
    "--trust", panel=MODEL, help="Allow full unpickling of a file that needs it (a whole pickled model). This RUNS "
    "CODE from the file: only for files from a source you trust.")]

# freezing
FreezeExcept = Annotated[str | None, option(
    "--freeze-except", panel=FREEZING, help="Freeze everything except these modules: layer4,fc.")]
FreezeAll = Annotated[bool, flag("--freeze-all", panel=FREEZING, help="Freeze every parameter (feature extraction).")]
Freeze = Annotated[str | None, option(
    "--freeze", panel=FREEZING, help="Freeze only these modules; globs allowed: layer1,layer2.")]
TrainableBackboneLayers = Annotated[int | None, option(
    "--trainable-backbone-layers", panel=FREEZING, help="Detection models only: how many backbone "
    "stages train, counted from the last (0-5 for ResNet and VGG backbones, 0-6 for MobileNetV3), passed to "
    "torchvision's builder, which freezes the rest. Default: as shipped (3; SSD 4, SSDLite 6). The builder freezes "
    "first; --freeze freezes more on top; --freeze-except and --freeze-all decide every parameter themselves, so the "
    "modules they keep train even where the builder froze them.")]
FreezeBn = Annotated[bool, flag(
    "--freeze-bn", panel=FREEZING, help="Put BatchNorm layers in eval mode, so their running statistics stop "
    "updating.")]

# the step
ModeOpt = Annotated[Mode, option(
    "--mode", panel=STEP, help="forward (eval, inference_mode), forward_backward (train mode), train_step "
    "(+ optimizer step and zero_grad), or all.")]
DTypeOpt = Annotated[DType, option("--dtype", panel=STEP, help="float32, or bfloat16/float16 under autocast.")]
OptimizerOpt = Annotated[Optimizer, option(
    "--optimizer", panel=STEP, help="The optimizer of a training step, whose state memory is counted.")]
RunDevice = Annotated[Device, option("--device", panel=STEP, help="Where to run.")]
# the step of a timed run (bench, profile)
StepOptimizer = Annotated[Optimizer, option("--optimizer", panel=STEP, help="Optimizer of train_step.")]
ChannelsLast = Annotated[bool, flag("--channels-last", panel=STEP, help="Model and input in channels_last memory "
                                    "format.")]
Threads = Annotated[int | None, option("--threads", panel=STEP, help="CPU threads (torch.set_num_threads); default: "
                                       "torch's.")]
Warmup = Annotated[int, option("--warmup", panel=TIMING, help="Untimed steps before timing.")]

# output
Json = Annotated[bool, flag("--json", panel=OUTPUT, help="Print one JSON object on stdout instead of tables.")]
Depth = Annotated[int, option("--depth", panel=OUTPUT, help="How deep the rows by module go (1 = top-level blocks).")]


def example(*commands: str) -> str:
    """An epilog of examples, one a line."""
    return "\n\n".join(["Examples:", *commands])


def model_request(model: str | None, **options: Any) -> ModelRequest:
    """The model options as one record (imported here: the records import torch)."""
    from ..models.request import ModelRequest

    return ModelRequest(model, **options)


def freeze_plan(freeze_all: bool, freeze_except: str | None, freeze: str | None) -> FreezePlan:
    from ..models.freezing import FreezePlan

    return FreezePlan.from_options(freeze_all, freeze_except, freeze)
