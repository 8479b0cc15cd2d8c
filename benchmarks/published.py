"""Published single-GPU training throughputs, as data to check `cnnprobe predict` against on paper.

Nothing here is measured by cnnprobe: every row is a figure someone else published, with the source named down to the
commit. Rows were selected by rule, not by how well they fit: every 1-GPU row of the sources below whose model
cnnprobe registers with the same architecture.

Groups:

- `DLE`: NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/<model>/README.md, "Training performance results"
  tables (pytorch-21.03 NGC container), numbers added in commit 7bdfc81d258746323bf0d3ca57e0ad302a4c3a74 and unchanged
  at 729963dd47e7c8bd462ad10bfac7a7b0b604e6dd. The tables are titled "8x A100 80GB" (DGX A100) and "8x V100 16GB/32GB"
  (DGX-1, SXM2) but each has a 1-GPU row; only those are kept (per-GPU, no 8-GPU figure is divided). The README names no
  batch size: batch and memory format are configs.yml's for that platform and precision at the same commit (AMP rows
  run `memory_format: nhwc`, TF32/FP32 rows NCHW). The benchmark mode reads real ImageNet through DLE's data loader,
  with label smoothing and (ResNet) SGD momentum or (EfficientNet) RMSprop; "TF32" is fp32 with TF32 math (PyTorch
  1.8's default), "FP32" on V100 is plain fp32. ResNet-50 v1.5 is torchvision's resnet50; DLE's efficientnet-b0/b4
  are the paper's B0/B4 at 224/380 px, the same architecture as torchvision's, in NVIDIA's implementation.
- `TIMM`: huggingface/pytorch-image-models results/benchmark-train-amp-{nchw,nhwc}-pt112-cu113-rtx3090.csv at commit
  c865028c34fc05cc7deea8e753b30d8cd1952591 (their last version; PyTorch 1.12, CUDA 11.3, one RTX 3090). timm's
  benchmark.py train mode: synthetic inputs already on the GPU, AMP (fp16 autocast, no GradScaler), cross-entropy,
  SGD with Nesterov momentum, cudnn.benchmark, 10 warm-up and 50 timed steps; the nhwc file is `--channels-last`. Each
  CSV column is kept: train_samples_per_sec (`samples_per_s`), train_step_time (`step_ms`), train_batch_size,
  train_img_size (timm's default train size for that model, not always torchvision's) and param_count (`params_m`,
  millions). A timm model is mapped to a torchvision one only where the architecture is the same, and its parameter
  count was checked against torchvision's (tests/test_published.py holds that check). The older pt110/pt111 CSVs
  have the same columns and were superseded by these; they are not transcribed.
- `LAMBDA`: Lambda's PyTorch GPU benchmark (lambdal/deeplearning-benchmark, the data behind
  https://lambdalabs.com/gpu-benchmarks): DLE's ResNet-50 on synthetic data, NCHW, at Lambda's batch sizes, every
  1-GPU row of its v1 and v2 CSVs (several hosts of one GPU model are several rows). published_lambda.py says how it
  ran and which GPUs were left out (Quadro RTX 8000, GH200, B200: no spec key near them).
- `HISTORICAL`: earlier versions of the DLE ResNet-50 README (other containers, other GPUs such as the A100 40GB),
  kept apart from `ROWS` because they are superseded figures for the same model and device.
- `UNREGISTERED`: DLE 1-GPU rows for models cnnprobe does not register (ResNeXt101-32x4d, SE-ResNeXt101-32x4d,
  EfficientNet-WideSE), so that every row found is reported; `model` holds the source's name there.

`tf32` says whether fp32 convolutions could use TF32: True on A100 and RTX 3090 (cuDNN's default in both sources'
PyTorch), False on V100, which has none. `device` is a key of cnnprobe's spec table; where the GPU is not one of the
keys the nearest is used and `note` says so.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .published_lambda import LAMBDA_COMMIT, LAMBDA_V1, LAMBDA_V2
from .published_timm import TIMM_NCHW, TIMM_NHWC

DEVICE_KEYS = (
    "h200", "h100-sxm", "h100-pcie", "a100-sxm4-80gb", "a100-pcie-40gb", "l40s", "l4", "a10g", "t4", "v100-sxm2",
    "rtx4090", "rtx3090",
)


@dataclass(frozen=True)
class Published:
    """One published training throughput on one GPU."""

    model: str  # cnnprobe's (torchvision's) name
    source_model: str  # the source's name
    device: str  # a key of DEVICE_KEYS
    dtype: str  # "float16" for AMP / mixed precision, "float32" otherwise
    tf32: bool
    channels_last: bool
    batch: int  # per GPU
    image_size: int
    samples_per_s: float
    mode: str  # "train_step"
    source: str
    note: str
    step_ms: float | None = None  # where the source gives it
    params_m: float | None = None  # the source's parameter count, millions


_DLE = "NVIDIA/DeepLearningExamples"
_DLE_COMMIT = "7bdfc81d258746323bf0d3ca57e0ad302a4c3a74"
_DGXA100 = "table 'Training performance: NVIDIA DGX A100 (8x A100 80GB)', 1-GPU row"
_DGX1_16 = "table 'Training performance: NVIDIA DGX-1 16GB (8x V100 16GB)', 1-GPU row"
_DGX1_32 = "table 'Training performance: NVIDIA DGX-1 32GB (8x V100 32GB)', 1-GPU row"
_EFF_A100 = "table 'Training performance: NVIDIA A100 (8x A100 80GB)', GPUs=1 row"
_EFF_V16 = "table 'Training performance: NVIDIA DGX-1 (8x V100 16GB)', GPUs=1 row"
_EFF_V32 = "table 'Training performance: NVIDIA DGX-1 (8x V100 32GB)', GPUs=1 row"


def _dle(model: str, readme: str, table: str, device: str, precision: str, batch: int, image: int, img_s: float,
         note: str, source_model: str = "", commit: str = _DLE_COMMIT) -> Published:
    """A DLE row; `precision` is the README's column: AMP (fp16, NHWC), TF32 or FP32 (NCHW)."""
    amp = precision == "AMP"
    return Published(
        model=model, source_model=source_model or readme, device=device, dtype="float16" if amp else "float32",
        tf32=precision == "TF32" or (amp and device != "v100-sxm2"), channels_last=amp, batch=batch,
        image_size=image, samples_per_s=img_s, mode="train_step",
        source=f"{_DLE} PyTorch/Classification/ConvNets/{readme}/README.md @ {commit}, {table}, {precision} column; "
        f"batch and memory format: PyTorch/Classification/ConvNets/configs.yml @ {commit}",
        note=note,
    )


_A80 = "a100-sxm4-80gb"
_V = "v100-sxm2"
_V16 = "V100 SXM2 16GB (DGX-1)"
_V32 = "V100 SXM2 32GB (DGX-1)"
_B4_V32 = (
    "V100 SXM2 32GB (DGX-1); suspect in the source: the same table's 8-GPU row is 17.6x this figure (641 / 1565 "
    "img/s), and its caption says V100 16GB; kept as published"
)
_WS_V32 = (
    "V100 SXM2 32GB (DGX-1); suspect in the source: the same table's 8-GPU rows are 14.7x (AMP) and 17.5x (FP32) "
    "these figures; kept as published"
)

DLE: tuple[Published, ...] = (
    _dle("resnet50", "resnet50v1.5", _DGXA100, _A80, "AMP", 256, 224, 2470.0, "quoted in issue 20"),
    _dle("resnet50", "resnet50v1.5", _DGXA100, _A80, "TF32", 256, 224, 938.0, "quoted in issue 20"),
    _dle("resnet50", "resnet50v1.5", _DGX1_16, _V, "AMP", 256, 224, 1200.0, _V16),
    _dle("resnet50", "resnet50v1.5", _DGX1_16, _V, "FP32", 112, 224, 367.0, _V16),
    _dle("resnet50", "resnet50v1.5", _DGX1_32, _V, "AMP", 256, 224, 1156.0, _V32),
    _dle("resnet50", "resnet50v1.5", _DGX1_32, _V, "FP32", 112, 224, 356.0, _V32),
    _dle("efficientnet_b0", "efficientnet", _EFF_A100, _A80, "AMP", 256, 224, 2489.0, "", "efficientnet-b0"),
    _dle("efficientnet_b0", "efficientnet", _EFF_A100, _A80, "TF32", 256, 224, 1078.0, "", "efficientnet-b0"),
    _dle("efficientnet_b0", "efficientnet", _EFF_V16, _V, "AMP", 128, 224, 1301.0, _V16, "efficientnet-b0"),
    _dle("efficientnet_b0", "efficientnet", _EFF_V16, _V, "FP32", 64, 224, 655.0, _V16, "efficientnet-b0"),
    _dle("efficientnet_b0", "efficientnet", _EFF_V32, _V, "AMP", 256, 224, 1401.0, _V32, "efficientnet-b0"),
    _dle("efficientnet_b0", "efficientnet", _EFF_V32, _V, "FP32", 128, 224, 646.0, _V32, "efficientnet-b0"),
    _dle("efficientnet_b4", "efficientnet", _EFF_A100, _A80, "AMP", 128, 380, 331.0, "", "efficientnet-b4"),
    _dle("efficientnet_b4", "efficientnet", _EFF_A100, _A80, "TF32", 64, 380, 157.0, "", "efficientnet-b4"),
    _dle("efficientnet_b4", "efficientnet", _EFF_V16, _V, "AMP", 32, 380, 204.0, _V16, "efficientnet-b4"),
    _dle("efficientnet_b4", "efficientnet", _EFF_V16, _V, "FP32", 16, 380, 83.0, _V16, "efficientnet-b4"),
    _dle("efficientnet_b4", "efficientnet", _EFF_V32, _V, "AMP", 64, 380, 89.0, _B4_V32, "efficientnet-b4"),
    _dle("efficientnet_b4", "efficientnet", _EFF_V32, _V, "FP32", 32, 380, 36.0, _B4_V32, "efficientnet-b4"),
)

_RNXT, _SE = "resnext101-32x4d", "se-resnext101-32x4d"
_NO_TV = "no torchvision model: torchvision has resnext101_32x8d and resnext101_64x4d, not 32x4d"
_NO_TV_WS = "no torchvision model (EfficientNet with wider squeeze-excitation)"
UNREGISTERED: tuple[Published, ...] = (
    _dle(_RNXT, _RNXT, _DGXA100, _A80, "AMP", 128, 224, 1211.0, _NO_TV),
    _dle(_RNXT, _RNXT, _DGXA100, _A80, "TF32", 128, 224, 456.0, _NO_TV),
    _dle(_RNXT, _RNXT, _DGX1_16, _V, "AMP", 128, 224, 587.0, f"{_V16}; {_NO_TV}"),
    _dle(_RNXT, _RNXT, _DGX1_16, _V, "FP32", 64, 224, 147.0, f"{_V16}; {_NO_TV}"),
    _dle(_RNXT, _RNXT, _DGX1_32, _V, "AMP", 128, 224, 565.0, f"{_V32}; {_NO_TV}"),
    _dle(_RNXT, _RNXT, _DGX1_32, _V, "FP32", 64, 224, 144.0, f"{_V32}; {_NO_TV}"),
    _dle(_SE, _SE, _DGXA100, _A80, "AMP", 128, 224, 855.0, "no torchvision model"),
    _dle(_SE, _SE, _DGXA100, _A80, "TF32", 128, 224, 395.0, "no torchvision model"),
    _dle(_SE, _SE, _DGX1_16, _V, "AMP", 112, 224, 443.0, f"{_V16}; no torchvision model"),
    _dle(_SE, _SE, _DGX1_16, _V, "FP32", 64, 224, 132.0, f"{_V16}; no torchvision model"),
    _dle(_SE, _SE, _DGX1_32, _V, "AMP", 112, 224, 427.0, f"{_V32}; no torchvision model"),
    _dle(_SE, _SE, _DGX1_32, _V, "FP32", 64, 224, 130.0, f"{_V32}; no torchvision model"),
    _dle("efficientnet-widese-b0", "efficientnet", _EFF_A100, _A80, "AMP", 256, 224, 2512.0, _NO_TV_WS),
    _dle("efficientnet-widese-b0", "efficientnet", _EFF_A100, _A80, "TF32", 256, 224, 1078.0, _NO_TV_WS),
    _dle("efficientnet-widese-b0", "efficientnet", _EFF_V16, _V, "AMP", 128, 224, 1299.0, f"{_V16}; {_NO_TV_WS}"),
    _dle("efficientnet-widese-b0", "efficientnet", _EFF_V16, _V, "FP32", 64, 224, 655.0, f"{_V16}; {_NO_TV_WS}"),
    _dle("efficientnet-widese-b0", "efficientnet", _EFF_V32, _V, "AMP", 256, 224, 603.0, f"{_WS_V32}; {_NO_TV_WS}"),
    _dle("efficientnet-widese-b0", "efficientnet", _EFF_V32, _V, "FP32", 128, 224, 281.0, f"{_WS_V32}; {_NO_TV_WS}"),
    _dle("efficientnet-widese-b4", "efficientnet", _EFF_A100, _A80, "AMP", 128, 380, 331.0, _NO_TV_WS),
    _dle("efficientnet-widese-b4", "efficientnet", _EFF_A100, _A80, "TF32", 64, 380, 157.0, _NO_TV_WS),
    _dle("efficientnet-widese-b4", "efficientnet", _EFF_V16, _V, "AMP", 32, 380, 204.0, f"{_V16}; {_NO_TV_WS}"),
    _dle("efficientnet-widese-b4", "efficientnet", _EFF_V16, _V, "FP32", 16, 380, 83.0, f"{_V16}; {_NO_TV_WS}"),
    _dle("efficientnet-widese-b4", "efficientnet", _EFF_V32, _V, "AMP", 64, 380, 89.0, f"{_B4_V32}; {_NO_TV_WS}"),
    _dle("efficientnet-widese-b4", "efficientnet", _EFF_V32, _V, "FP32", 32, 380, 36.0, f"{_B4_V32}; {_NO_TV_WS}"),
)

# Superseded versions of the ResNet-50 README. 20.12 (commit 097c7ff9): configs.yml at that commit, AMP in NHWC.
# 20.06 (46ff3707): the README's own batch table, NCHW (main.py's default; the commands set no memory format), apex AMP.
# 19.10 (f0ef8493): no batch stated; 256 is main.py's default at that commit.
_C2012 = "097c7ff917b7c56246590b1246a8f5bd8957c534"
_C2006 = "46ff3707e04683e41b79af0f94a74e45f8016786"
_C1910 = "f0ef8493eb077dccfa32fcecc90df869699a4365"
_A40 = (
    "A100 SXM4 40GB (DGX A100); nearest key a100-pcie-40gb (same datasheet peaks and 1555 GB/s, but 400 W SXM4 "
    "against 250 W PCIe)"
)
_OLD = "superseded figure (pytorch-{} container)"


def _old(device: str, precision: str, batch: int, img_s: float, commit: str, table: str, note: str,
         channels_last: bool) -> Published:
    row = _dle("resnet50", "resnet50v1.5", table, device, precision, batch, 224, img_s, note, commit=commit)
    if commit != _C2012:
        batch_from = "the README's batch-size table" if commit == _C2006 else "main.py's default"
        row = replace(row, source=f"{row.source.split('; batch')[0]}; batch: {batch_from}")
    return replace(row, channels_last=channels_last and row.channels_last)


_T40 = "table 'Training performance: NVIDIA DGX A100 (8x A100 40GB)', 1-GPU row"
_T16_1910 = "table 'Traininig performance: NVIDIA DGX1-16G (8x V100 16G)', 1-GPU row"
_T32_1910 = "table 'Traininig performance: NVIDIA DGX1-32G (8x V100 32G)', 1-GPU row"
_TDGX2 = "table 'Traininig performance: NVIDIA DGX2 (16x V100 32G)', 1-GPU row"
_DGX2 = "V100 SXM3 32GB 350 W (DGX-2); nearest key v100-sxm2"
HISTORICAL: tuple[Published, ...] = (
    _old(_A80, "AMP", 256, 2461.0, _C2012, _DGXA100, _OLD.format("20.12"), True),
    _old(_A80, "TF32", 256, 945.0, _C2012, _DGXA100, _OLD.format("20.12"), False),
    _old(_V, "AMP", 256, 1180.0, _C2012, _DGX1_16, f"{_V16}; " + _OLD.format("20.12"), True),
    _old(_V, "FP32", 112, 371.0, _C2012, _DGX1_16, f"{_V16}; " + _OLD.format("20.12"), False),
    _old(_V, "AMP", 256, 1115.0, _C2012, _DGX1_32, f"{_V32}; " + _OLD.format("20.12"), True),
    _old(_V, "FP32", 112, 365.0, _C2012, _DGX1_32, f"{_V32}; " + _OLD.format("20.12"), False),
    _old("a100-pcie-40gb", "AMP", 256, 1240.81, _C2006, _T40, f"{_A40}; " + _OLD.format("20.06"), False),
    _old("a100-pcie-40gb", "TF32", 256, 680.15, _C2006, _T40, f"{_A40}; " + _OLD.format("20.06"), False),
    _old(_V, "AMP", 256, 856.52, _C2006, _DGX1_16, f"{_V16}; " + _OLD.format("20.06"), False),
    _old(_V, "FP32", 128, 373.21, _C2006, _DGX1_16, f"{_V16}; " + _OLD.format("20.06"), False),
    _old(_V, "AMP", 256, 816.00, _C2006, _DGX1_32, f"{_V32}; " + _OLD.format("20.06"), False),
    _old(_V, "FP32", 128, 359.76, _C2006, _DGX1_32, f"{_V32}; " + _OLD.format("20.06"), False),
    _old(_V, "AMP", 256, 893.09, _C1910, _T16_1910, f"{_V16}; batch not stated; " + _OLD.format("19.10"), False),
    _old(_V, "FP32", 256, 380.44, _C1910, _T16_1910, f"{_V16}; batch not stated; " + _OLD.format("19.10"), False),
    _old(_V, "AMP", 256, 849.63, _C1910, _T32_1910, f"{_V32}; batch not stated; " + _OLD.format("19.10"), False),
    _old(_V, "FP32", 256, 373.93, _C1910, _T32_1910, f"{_V32}; batch not stated; " + _OLD.format("19.10"), False),
    _old(_V, "AMP", 256, 894.41, _C1910, _TDGX2, f"{_DGX2}; batch not stated; " + _OLD.format("19.10"), False),
    _old(_V, "FP32", 256, 402.23, _C1910, _TDGX2, f"{_DGX2}; batch not stated; " + _OLD.format("19.10"), False),
)

_TIMM_REPO = "huggingface/pytorch-image-models"
_TIMM_COMMIT = "c865028c34fc05cc7deea8e753b30d8cd1952591"
_SAME = "same architecture, timm's implementation (parameter count matches torchvision's)"
_TIMM_NOTES = {
    "tv_": "timm's registration of torchvision's weights: torchvision's architecture",
    "gluon_": "Gluon ResNet v1b (stride on the 3x3, as torchvision's v1.5): same architecture",
    "tf_": "TF 'SAME' padding (an explicit pad before strided convolutions) and TF BatchNorm eps; otherwise "
    "torchvision's architecture",
    "vgg": "timm runs fc6/fc7 as 7x7 and 1x1 convolutions (ConvMlp): torchvision's parameters and FLOPs at 224",
    "inception_v3": "timm builds no AuxLogits head (23.83M params); torchvision's default has it (27.16M), so its "
    "train step does that extra work",
    "vit_huge_patch14_224": "torchvision's published 633.47M params are at 518 px; at 224 both count 632.05M",
}


def _timm_note(name: str, image_size: int, model: str) -> str:
    note = next((v for k, v in _TIMM_NOTES.items() if name.startswith(k)), _SAME)
    return f"{note}; timm's train size {image_size} px" if model.startswith("efficientnet") else note


def _timm(table: tuple[tuple[str, str, float, float, int, int, float], ...], layout: str) -> tuple[Published, ...]:
    path = f"results/benchmark-train-amp-{layout}-pt112-cu113-rtx3090.csv"
    return tuple(
        Published(
            model=model, source_model=name, device="rtx3090", dtype="float16", tf32=True,
            channels_last=layout == "nhwc", batch=batch, image_size=image, samples_per_s=sps, mode="train_step",
            source=f"{_TIMM_REPO} {path} @ {_TIMM_COMMIT}, row {name}", note=_timm_note(name, image, model),
            step_ms=step_ms, params_m=params,
        )
        for name, model, sps, step_ms, batch, image, params in table
    )


# Left out on purpose: timm rows whose torchvision namesake is a different network (parameter counts differ).
TIMM_NOT_SAME = {
    "regnetx_004": "timm 5.16M params, torchvision regnet_x_400mf 5.50M",
    "regnety_008": "timm 6.26M params, torchvision regnet_y_800mf 6.43M",
    "regnety_080": "timm 39.18M params, torchvision regnet_y_8gf 39.38M",
}

TIMM: tuple[Published, ...] = _timm(TIMM_NCHW, "nchw") + _timm(TIMM_NHWC, "nhwc")


_LAMBDA_REPO = "lambdal/deeplearning-benchmark"
_LAMBDA_NOTES = {
    "LambdaCloud V100 16GB": "Lambda Cloud V100 16GB, form factor not stated; nearest key v100-sxm2",
    "LambdaCloud A10": "A10 (72 SMs, 150 W), not the A10G (80 SMs); nearest key a10g",
    "A100 80GB PCIe": "A100 80GB PCIe (300 W, 1935 GB/s); nearest key a100-sxm4-80gb",
    "RTX 6000 Ada": "RTX 6000 Ada (AD102, 142 SMs, 960 GB/s, 300 W); nearest key l40s",
    "RTX A6000": "RTX A6000 (GA102, 84 SMs, 768 GB/s, 300 W); nearest key rtx3090",
}


def _lambda(table: tuple[tuple[str, str, str, int, float], ...], version: str) -> tuple[Published, ...]:
    v2 = version == "v2"
    rows = []
    for name, device, precision, batch, img_s in table:
        csv_path = f"pytorch/pytorch-train-throughput-{'v2-' if v2 else ''}{precision}.csv"
        batch_from = "pytorch/scripts/config_v2 (80GB, 140GB)" if v2 else f"pytorch/pytorch-train-bs-{precision}.csv"
        notes = [_LAMBDA_NOTES.get(name, "")]
        if precision == "fp32":
            notes.append("fp32 as the CSV names it: TF32 where the GPU has it")
        note = "; ".join(n for n in notes if n)
        rows.append(Published(
            model="resnet50", source_model=name, device=device, dtype="float16" if precision == "fp16" else "float32",
            tf32=device != "v100-sxm2", channels_last=False, batch=batch, image_size=224, samples_per_s=img_s,
            mode="train_step", source=f"{_LAMBDA_REPO} {csv_path} @ {LAMBDA_COMMIT}, row '{name}', column resnet50; "
            f"batch: {batch_from}", note=note,
        ))
    return tuple(rows)


LAMBDA: tuple[Published, ...] = _lambda(LAMBDA_V1, "v1") + _lambda(LAMBDA_V2, "v2")

ROWS: list[Published] = [*DLE, *TIMM, *LAMBDA]
