"""`cnnprobe predict` and `cnnprobe calibrate`: options → one call → render. No torch at import."""

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
    TrainableBackboneLayers,
    flag,
    freeze_plan,
    model_request,
    option,
)

PREDICT_EXAMPLES = ("cnnprobe predict resnet50 --device a100-sxm4-80gb --dtype float16 --channels-last --batch 256 "
                    "--dataset-size 1281167", "cnnprobe predict convnext_tiny --device cpu --batch 8",
                    "cnnprobe predict --list-devices")
CALIBRATE_EXAMPLES = ("cnnprobe calibrate --device cpu", "cnnprobe calibrate --device cuda --out h100.json")


def predict(
    model: Annotated[str | None, typer.Argument(help="A registered name (resnet50) or path/to/file.py:Class.",
                                                show_default=False)] = None,
    device: Annotated[str, option("--device", panel=STEP, help="The device predicted for: a key of --list-devices "
                                  "(h100-sxm, a100-sxm4-80gb, l4, ...) or cpu (this machine).")] = "cpu",
    batch: Annotated[int, option("--batch", panel=MODEL, help="Batch size.")] = 1,
    input_size: InputSize = None, input_dtype: InputDtype = None, input_range: InputRange = None,
    num_classes: NumClasses = None, head: Head = None,
    freeze_except: FreezeExcept = None, freeze_all: FreezeAll = False, freeze: Freeze = None,
    trainable_backbone_layers: TrainableBackboneLayers = None, mode: ModeOpt = Mode.ALL,
    dtype: DTypeOpt = DType.FLOAT32,
    optimizer: Annotated[Optimizer, option("--optimizer", panel=STEP, help="Optimizer of train_step.")] = Optimizer.SGD,
    channels_last: Annotated[bool, flag("--channels-last", panel=STEP, help="Model and input in channels_last "
                                        "memory format.")] = False,
    dataset_size: Annotated[int | None, option("--dataset-size", panel=STEP, help="Samples in an epoch: the "
                                               "epoch's time is predicted too.")] = None,
    epochs: Annotated[int, option("--epochs", panel=STEP, help="Epochs, with --dataset-size.")] = 1,
    calibration: Annotated[str | None, option("--calibration", panel=STEP, help="A calibration file written by "
                                              "`cnnprobe calibrate --out` on that device.")] = None,
    threads: Annotated[int | None, option("--threads", panel=STEP, help="CPU threads, with --device cpu.")] = None,
    list_devices: Annotated[bool, flag("--list-devices", panel=OUTPUT, help="The devices predict knows, with "
                                       "their figures and sources.")] = False,
    json: Json = False,
) -> None:
    """Predict a training step's time on a device you may not have (an H100, an A100, an L4...), before renting
    it: each mode's step with an error band, samples/s, epoch time, the operator classes that take it, and
    whether its peak memory fits."""
    from ..report.console import emit_json, print_pieces

    if list_devices:
        from ..report.devices import device_lines, devices_dict
        from ..runtime.hardware import SPECS

        if json:
            emit_json(devices_dict(list(SPECS.values())))
        else:
            print_pieces(device_lines(list(SPECS.values())))
        return
    if model is None:
        raise CnnprobeError("predict needs a model (or --list-devices)")
    from ..report.predict import predict_lines
    from ..runtime.predict import predict as api

    request = model_request(model, batch=batch, input_size=input_size, input_dtype=input_dtype,
                            input_range=input_range, num_classes=num_classes, head=head,
                            trainable_backbone_layers=trainable_backbone_layers)
    with model_output(json):
        report = api(request, device, plan=freeze_plan(freeze_all, freeze_except, freeze), mode=mode,
                     optimizer=optimizer, dtype=dtype, channels_last=channels_last, dataset_size=dataset_size,
                     epochs=epochs, calibration=calibration, threads=threads)
    if json:
        emit_json(report.to_dict())
    else:
        print_pieces(predict_lines(report))


def calibrate(
    device: Annotated[Device, option("--device", panel=STEP, help="The device to measure: cpu, or cuda (the GPU "
                                     "here).")] = Device.CPU,
    out: Annotated[str | None, option("--out", panel=OUTPUT, help="Also write the calibration to this file, for "
                                      "`cnnprobe predict --calibration` elsewhere.")] = None,
    threads: Annotated[int | None, option("--threads", panel=STEP, help="CPU threads; default: torch's.")] = None,
    quick: Annotated[bool, flag("--quick", panel=STEP, help="A smaller grid, in seconds (less accurate).")] = False,
    json: Json = False,
) -> None:
    """Time a fixed grid of micro-benchmarks (GEMMs, convolutions of each kind, normalisation, elementwise,
    reductions, copies, the optimizer's update; never whole models) and fit each operator class's efficiency
    curves; the result is cached for this device and used by `predict`."""
    from ..report import files
    from ..report.console import emit_json, print_pieces
    from ..report.predict import calibration_lines
    from ..runtime.calibration import file_record, run_calibration

    if out is not None:
        files.check_writable(out)
    cal = run_calibration(device.value, threads=threads, quick=quick)
    if out is not None:
        from ..report.console import json_text

        files.write_atomic(out, json_text(file_record(cal)))
    if json:
        emit_json(cal.to_dict())
    else:
        print_pieces(calibration_lines(cal))
