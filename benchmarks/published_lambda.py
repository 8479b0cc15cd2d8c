"""Lambda's PyTorch training benchmark, ResNet-50 rows on one GPU, transcribed for benchmarks/published.py.

lambdal/deeplearning-benchmark at aa5addb6a53675a649a80036dad548f1c27cbcc4 (the charts behind
https://lambdalabs.com/gpu-benchmarks). Each run is NVIDIA DeepLearningExamples' ConvNets main.py (Lambda's fork,
LambdaLabsML/DeepLearningExamples branch lambda/benchmark) with `--arch resnet50 --data-backend synthetic
--training-only --prof 100`, AMP as `--amp --static-loss-scale 256`, no `--memory-format` (main.py's default, NCHW),
224 px. v1 rows ran in NGC's PyTorch 22.10 container (per Lambda's page); v2 rows in later containers (the README's
example is pytorch:24.10-py3; the CSV does not say per row). Every 1-GPU row is listed; the few with no spec key near
their GPU are comments, not rows.
"""

from __future__ import annotations

LAMBDA_COMMIT = "aa5addb6a53675a649a80036dad548f1c27cbcc4"

# (Lambda's name_gpu, device key, precision, batch, img/s): 1-GPU rows of
# pytorch/pytorch-train-throughput-{fp16,fp32}.csv, batch from pytorch/pytorch-train-bs-{fp16,fp32}.csv
LAMBDA_V1: tuple[tuple[str, str, str, int, float], ...] = (
    # left out: Quadro RTX 8000 (651.0 img/s): no spec key near it
    ("LambdaCloud V100 16GB", "v100-sxm2", "fp16", 256, 833.0),
    ("RTX 3090", "rtx3090", "fp16", 448, 905.0),
    ("LambdaCloud A10", "a10g", "fp16", 448, 638.0),
    ("LambdaCloud A100 40GB PCIe", "a100-pcie-40gb", "fp16", 720, 1396.0),
    ("A100 80GB PCIe", "a100-sxm4-80gb", "fp16", 1280, 1527.0),
    ("A100 80GB SXM4", "a100-sxm4-80gb", "fp16", 1280, 1582.0),
    ("RTX 6000 Ada", "l40s", "fp16", 928, 1146.0),
    ("RTX A6000", "rtx3090", "fp16", 928, 916.0),
    ("RTX 4090", "rtx4090", "fp16", 448, 1301.0),
    ("H100 80GB PCIe Gen5", "h100-pcie", "fp16", 1280, 1866.0),
    ("LambdaCloud H100 80GB PCIe Gen5", "h100-pcie", "fp16", 1280, 1851.0),
    ("H100 80GB SXM5", "h100-sxm", "fp16", 1280, 2616.0),
    ("Dell H100 80GB SXM5", "h100-sxm", "fp16", 1280, 2776.0),
    ("DellTexas H100 80GB SXM5", "h100-sxm", "fp16", 1280, 2785.0),
    ("SMC H100 80GB SXM5", "h100-sxm", "fp16", 1280, 2787.0),
    ("1CC H100 80GB SXM5", "h100-sxm", "fp16", 1280, 2791.0),
    ("RAIDZ1 H100 80GB SXM5", "h100-sxm", "fp16", 1280, 2790.0),
    # left out: Quadro RTX 8000 (274.0 img/s): no spec key near it
    ("LambdaCloud V100 16GB", "v100-sxm2", "fp32", 128, 369.0),
    ("RTX 3090", "rtx3090", "fp32", 224, 513.0),
    ("LambdaCloud A10", "a10g", "fp32", 224, 349.0),
    ("LambdaCloud A100 40GB PCIe", "a100-pcie-40gb", "fp32", 360, 882.0),
    ("A100 80GB PCIe", "a100-sxm4-80gb", "fp32", 640, 1014.0),
    ("A100 80GB SXM4", "a100-sxm4-80gb", "fp32", 640, 1066.0),
    ("RTX 6000 Ada", "l40s", "fp32", 496, 647.0),
    ("RTX A6000", "rtx3090", "fp32", 496, 514.0),
    ("RTX 4090", "rtx4090", "fp32", 224, 721.0),
    ("H100 80GB PCIe Gen5", "h100-pcie", "fp32", 640, 1197.0),
    ("LambdaCloud H100 80GB PCIe Gen5", "h100-pcie", "fp32", 640, 1182.0),
    ("H100 80GB SXM5", "h100-sxm", "fp32", 640, 1753.0),
    ("Dell H100 80GB SXM5", "h100-sxm", "fp32", 640, 1893.0),
    ("DellTexas H100 80GB SXM5", "h100-sxm", "fp32", 640, 1893.0),
    ("SMC H100 80GB SXM5", "h100-sxm", "fp32", 640, 1893.0),
    ("1CC H100 80GB SXM5", "h100-sxm", "fp32", 640, 1898.0),
    ("RAIDZ1 H100 80GB SXM5", "h100-sxm", "fp32", 640, 1894.0),
)

# (row name, device key, precision, batch, img/s): 1-GPU rows of pytorch/pytorch-train-throughput-v2-{fp16,fp32}.csv,
# batch from pytorch/scripts/config_v2/config_pytorch_{80GB,140GB}.sh
LAMBDA_V2: tuple[tuple[str, str, str, int, float], ...] = (
    ("LambdaBM_ENG04_1xH200_140GB_SXM_h200_v2", "h200", "fp16", 2560, 3079.0),
    ("LambdaBM_ENG04_HTOff_1xH200_140GB_SXM_h200_v2", "h200", "fp16", 2560, 3079.0),
    # left out: LambdaOD_1x_1xGH200_80GB_192-222-58-35_v2 (2846.0 img/s): GH200, no spec key for it
    # left out: LambdaOD_1x_1xGH200_96GB_192-222-57-0_v2 (2844.0 img/s): GH200, no spec key for it
    ("LambdaOD_1x_1xH100_80GB_SXM5_192-222-52-83_v2", "h100-sxm", "fp16", 1280, 2683.0),
    # left out: LambdaOD_1x_Test_1xGH200_96GB_192-222-56-184_v2 (2846.0 img/s): GH200, no spec key for it
    # left out: LambdaOD_1x_Test_1xGH200_96GB_192-222-56-184_v2_bk (2964.0 img/s): GH200, no spec key for it
    ("LambdaOD_1x_Texas_1xH100_80GB_PCIe_209-20-158-50_v2", "h100-pcie", "fp16", 1280, 1976.0),
    ("LambdaOD_1x_Texas_1xH100_80GB_SXM5_192-222-52-129_v2", "h100-sxm", "fp16", 1280, 2791.0),
    ("LambdaOD_1x_Texas_1xH100_80GB_SXM5_192-222-52-154_v2", "h100-sxm", "fp16", 1280, 2792.0),
    ("LambdaOD_1x_Texas_1xH100_80GB_SXM5_192-222-52-179_v2", "h100-sxm", "fp16", 1280, 2790.0),
    ("LambdaOD_1x_Texas_1xH100_80GB_SXM5_192-222-52-249_v2", "h100-sxm", "fp16", 1280, 2800.0),
    ("LambdaOD_1x_Texas_1xH100_80GB_SXM5_192-222-52-60_v2", "h100-sxm", "fp16", 1280, 2791.0),
    ("LambdaOD_1x_Texas_1xH100_80GB_SXM5_192-222-52-74_v2", "h100-sxm", "fp16", 1280, 2792.0),
    ("LambdaOD_1x_Texas_1xH100_80GB_SXM5_192-222-52-77_v2", "h100-sxm", "fp16", 1280, 2792.0),
    ("LambdaOD_1x_Texas_1xH100_80GB_SXM5_192-222-52-92_v2", "h100-sxm", "fp16", 1280, 2792.0),
    ("LambdaOD_2x_Texas_1xH100_80GB_SXM5_192-222-52-120_v2", "h100-sxm", "fp16", 1280, 2794.0),
    ("LambdaOD_2x_Texas_1xH100_80GB_SXM5_192-222-52-176_v2", "h100-sxm", "fp16", 1280, 2790.0),
    ("LambdaOD_2x_Texas_1xH100_80GB_SXM5_192-222-52-211_v2", "h100-sxm", "fp16", 1280, 2793.0),
    ("LambdaOD_2x_Texas_1xH100_80GB_SXM5_192-222-52-65_v2", "h100-sxm", "fp16", 1280, 2789.0),
    ("LambdaOD_4x_Texas_1xH100_80GB_SXM5_192-222-52-139_v2", "h100-sxm", "fp16", 1280, 2791.0),
    ("LambdaOD_4x_Texas_1xH100_80GB_SXM5_192-222-52-178_v2", "h100-sxm", "fp16", 1280, 2790.0),
    ("LambdaOD_4x_Texas_1xH100_80GB_SXM5_192-222-54-151_v2", "h100-sxm", "fp16", 1280, 2793.0),
    ("LambdaOD_4x_Texas_1xH100_80GB_SXM5_192-222-54-254_v2", "h100-sxm", "fp16", 1280, 2793.0),
    ("LambdaOD_8x_Texas_1xH100_80GB_SXM5_192-222-52-149_v2", "h100-sxm", "fp16", 1280, 2789.0),
    ("LambdaOD_8x_Texas_1xH100_80GB_SXM5_192-222-52-89_v2", "h100-sxm", "fp16", 1280, 2788.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-102_v2", "h100-sxm", "fp16", 1280, 2790.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-120_v2", "h100-sxm", "fp16", 1280, 2792.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-130_v2", "h100-sxm", "fp16", 1280, 2788.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-143_v2", "h100-sxm", "fp16", 1280, 2797.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-156_v2", "h100-sxm", "fp16", 1280, 2786.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-158_v2", "h100-sxm", "fp16", 1280, 2783.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-159_v2", "h100-sxm", "fp16", 1280, 2789.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-163_v2", "h100-sxm", "fp16", 1280, 2785.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-180_v2", "h100-sxm", "fp16", 1280, 2788.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-184_v2", "h100-sxm", "fp16", 1280, 2786.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-190_v2", "h100-sxm", "fp16", 1280, 2792.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-206_v2", "h100-sxm", "fp16", 1280, 2790.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-207_v2", "h100-sxm", "fp16", 1280, 2789.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-211_v2", "h100-sxm", "fp16", 1280, 2791.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-225_v2", "h100-sxm", "fp16", 1280, 2792.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-44_v2", "h100-sxm", "fp16", 1280, 2787.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-48_v2", "h100-sxm", "fp16", 1280, 2786.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-90_v2", "h100-sxm", "fp16", 1280, 2791.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-98_v2", "h100-sxm", "fp16", 1280, 2789.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-99_v2", "h100-sxm", "fp16", 1280, 2789.0),
    # left out: LambdaOD_test_1xB200_192GB_129-213-83-251_v2 (3076.0 img/s): no spec key for this GPU
    ("LambdaBM_ENG04_1xH200_140GB_SXM_h200_v2", "h200", "fp32", 1280, 2259.0),
    ("LambdaBM_ENG04_HTOff_1xH200_140GB_SXM_h200_v2", "h200", "fp32", 1280, 2260.0),
    # left out: LambdaOD_1x_1xGH200_80GB_192-222-58-35_v2 (2071.0 img/s): GH200, no spec key for it
    # left out: LambdaOD_1x_1xGH200_96GB_192-222-57-0_v2 (2063.0 img/s): GH200, no spec key for it
    ("LambdaOD_1x_1xH100_80GB_SXM5_192-222-52-83_v2", "h100-sxm", "fp32", 640, 1894.0),
    # left out: LambdaOD_1x_Test_1xGH200_96GB_192-222-56-184_v2 (2082.0 img/s): GH200, no spec key for it
    # left out: LambdaOD_1x_Test_1xGH200_96GB_192-222-56-184_v2_bk (2075.0 img/s): GH200, no spec key for it
    ("LambdaOD_1x_Texas_1xH100_80GB_PCIe_209-20-158-50_v2", "h100-pcie", "fp32", 640, 1248.0),
    ("LambdaOD_1x_Texas_1xH100_80GB_SXM5_192-222-52-129_v2", "h100-sxm", "fp32", 640, 1895.0),
    ("LambdaOD_1x_Texas_1xH100_80GB_SXM5_192-222-52-154_v2", "h100-sxm", "fp32", 640, 1894.0),
    ("LambdaOD_1x_Texas_1xH100_80GB_SXM5_192-222-52-179_v2", "h100-sxm", "fp32", 640, 1894.0),
    ("LambdaOD_1x_Texas_1xH100_80GB_SXM5_192-222-52-249_v2", "h100-sxm", "fp32", 640, 1898.0),
    ("LambdaOD_1x_Texas_1xH100_80GB_SXM5_192-222-52-60_v2", "h100-sxm", "fp32", 640, 1895.0),
    ("LambdaOD_1x_Texas_1xH100_80GB_SXM5_192-222-52-74_v2", "h100-sxm", "fp32", 640, 1895.0),
    ("LambdaOD_1x_Texas_1xH100_80GB_SXM5_192-222-52-77_v2", "h100-sxm", "fp32", 640, 1894.0),
    ("LambdaOD_1x_Texas_1xH100_80GB_SXM5_192-222-52-92_v2", "h100-sxm", "fp32", 640, 1895.0),
    ("LambdaOD_2x_Texas_1xH100_80GB_SXM5_192-222-52-120_v2", "h100-sxm", "fp32", 640, 1896.0),
    ("LambdaOD_2x_Texas_1xH100_80GB_SXM5_192-222-52-176_v2", "h100-sxm", "fp32", 640, 1895.0),
    ("LambdaOD_2x_Texas_1xH100_80GB_SXM5_192-222-52-211_v2", "h100-sxm", "fp32", 640, 1896.0),
    ("LambdaOD_2x_Texas_1xH100_80GB_SXM5_192-222-52-65_v2", "h100-sxm", "fp32", 640, 1895.0),
    ("LambdaOD_4x_Texas_1xH100_80GB_SXM5_192-222-52-139_v2", "h100-sxm", "fp32", 640, 1894.0),
    ("LambdaOD_4x_Texas_1xH100_80GB_SXM5_192-222-52-178_v2", "h100-sxm", "fp32", 640, 1893.0),
    ("LambdaOD_4x_Texas_1xH100_80GB_SXM5_192-222-54-151_v2", "h100-sxm", "fp32", 640, 1896.0),
    ("LambdaOD_4x_Texas_1xH100_80GB_SXM5_192-222-54-254_v2", "h100-sxm", "fp32", 640, 1895.0),
    ("LambdaOD_8x_Texas_1xH100_80GB_SXM5_192-222-52-149_v2", "h100-sxm", "fp32", 640, 1895.0),
    ("LambdaOD_8x_Texas_1xH100_80GB_SXM5_192-222-52-89_v2", "h100-sxm", "fp32", 640, 1894.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-102_v2", "h100-sxm", "fp32", 640, 1894.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-120_v2", "h100-sxm", "fp32", 640, 1894.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-130_v2", "h100-sxm", "fp32", 640, 1894.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-143_v2", "h100-sxm", "fp32", 640, 1897.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-156_v2", "h100-sxm", "fp32", 640, 1894.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-158_v2", "h100-sxm", "fp32", 640, 1892.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-159_v2", "h100-sxm", "fp32", 640, 1895.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-163_v2", "h100-sxm", "fp32", 640, 1892.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-180_v2", "h100-sxm", "fp32", 640, 1892.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-184_v2", "h100-sxm", "fp32", 640, 1894.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-190_v2", "h100-sxm", "fp32", 640, 1896.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-206_v2", "h100-sxm", "fp32", 640, 1895.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-207_v2", "h100-sxm", "fp32", 640, 1895.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-211_v2", "h100-sxm", "fp32", 640, 1896.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-225_v2", "h100-sxm", "fp32", 640, 1896.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-44_v2", "h100-sxm", "fp32", 640, 1894.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-48_v2", "h100-sxm", "fp32", 640, 1894.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-90_v2", "h100-sxm", "fp32", 640, 1896.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-98_v2", "h100-sxm", "fp32", 640, 1894.0),
    ("LambdaOD_Texas_1xH100_80GB_SXM5_192-222-52-99_v2", "h100-sxm", "fp32", 640, 1896.0),
    # left out: LambdaOD_test_1xB200_192GB_129-213-83-251_v2 (2967.0 img/s): no spec key for this GPU
)
