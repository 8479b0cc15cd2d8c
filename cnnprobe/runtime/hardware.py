"""The one table of devices the time model knows, each figure with where it comes from.

Peaks are dense: NVIDIA's datasheets print tensor figures with 2:4 sparsity (marked *), twice what a training
step can reach; this table holds the figure without it. For GeForce cards FP16/BF16 are the figures with FP32
accumulate (what autocast's matrix products use), half those with FP16 accumulate. A dtype a device has no
tensor path for (TF32 and BF16 on a T4 or a V100) is absent: `DeviceSpec.peak_tflops` falls back to float32.
Memory sizes are as the datasheet states them, in GiB (the chips' capacity); CUDA sees a little less (ECC,
the driver's reservations). A clock derived from a peak says so: `FP32 peak / (SMs × FP32 lanes × 2)`.
Plain data, no torch: `cnnprobe predict --list-devices` reads it without starting torch.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from ..core.errors import UsageError
from .records import DeviceSpec

GIB = 2**30
GPU_LAUNCH_US = 4.0
CPU_LAUNCH_US = 10.0
LAUNCH_SOURCE = ("cnnprobe default: a typical eager PyTorch {what}'s fixed cost (dispatch and launch); "
                 "`cnnprobe calibrate` measures it")
TENSOR = ("tf32", "bfloat16", "float16")
CPU_KEY = "cpu"
# A name holding one of these words is a variant the table does not hold (a laptop part, an NVL or Ti card, the
# 4090 D): it borrows no figure from its base card.
VARIANT_WORDS = frozenset({"LAPTOP", "MOBILE", "NVL", "TI", "SUPER", "D"})

H100_SHEET = "NVIDIA H100 Tensor Core GPU datasheet (https://resources.nvidia.com/en-us-tensor-core/" \
             "nvidia-tensor-core-gpu-datasheet)"
HOPPER_PAPER = "NVIDIA H100 Tensor Core GPU Architecture whitepaper"
H200_SHEET = "NVIDIA H200 Tensor Core GPU datasheet (https://www.nvidia.com/en-us/data-center/h200/), H200 SXM"
A100_SHEET = "NVIDIA A100 Tensor Core GPU datasheet (https://www.nvidia.com/content/dam/en-zz/Solutions/" \
             "Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf)"
A100_PAPER = "NVIDIA A100 Tensor Core GPU Architecture whitepaper (https://images.nvidia.com/aem-dam/en-zz/" \
             "Solutions/data-center/nvidia-ampere-architecture-whitepaper.pdf): 108 SMs"
L40S_SHEET = "NVIDIA L40S datasheet (https://resources.nvidia.com/en-us-l40s/l40s-datasheet-28413)"
L4_SHEET = "NVIDIA L4 Tensor Core GPU datasheet (https://www.nvidia.com/en-us/data-center/l4/)"
A10_SHEET = "NVIDIA A10 Tensor Core GPU datasheet (https://www.nvidia.com/content/dam/en-zz/Solutions/" \
            "Data-Center/a10/pdf/a10-datasheet.pdf)"
T4_SHEET = "NVIDIA T4 Tensor Core GPU datasheet (https://www.nvidia.com/content/dam/en-zz/Solutions/" \
           "Data-Center/tesla-t4/t4-tensor-core-datasheet-951643.pdf)"
V100_SHEET = "NVIDIA V100 Tensor Core GPU datasheet (https://images.nvidia.com/content/technologies/volta/pdf/" \
             "volta-v100-datasheet-update-us-1165301-r5.pdf)"
ADA_PAPER = "NVIDIA Ada GPU architecture whitepaper, appendix, GeForce RTX 4090 (https://images.nvidia.com/" \
            "aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf)"
GA102_PAPER = "NVIDIA Ampere GA102 GPU architecture whitepaper, appendix, GeForce RTX 3090 (https://www.nvidia.com/" \
              "content/PDF/nvidia-ampere-ga-102-gpu-architecture-whitepaper-v2.pdf)"
SPARSE = "; the dense figure (the sheet's starred one, with sparsity, is twice it)"
GEFORCE = (": Tensor TFLOPS without sparsity; FP16 and BF16 those with FP32 accumulate (half the FP16-accumulate "
           "figure for FP16)")


def _clock(peak: float, sms: int, lanes: int) -> str:
    return f"derived: {peak:g} TFLOP/s FP32 / ({sms} SMs × {lanes} FP32 lanes × 2 FLOP)"


def _gpu(key: str, name: str, tflops: dict[str, float], gbps: float, memory_gib: float, sms: int, mhz: int,
         sheet: str, matches: tuple[str, ...], /, **sources: str) -> DeviceSpec:
    """A GPU row; every figure's source is `sheet` unless `sources` names another."""
    figures = [*tflops, "bandwidth_gbps", "memory_bytes", "sms", "boost_mhz"]
    unknown = set(sources) - set(figures)
    assert not unknown, f"sources for figures {key} does not state: {unknown}"
    named = {f: sources.get(f, sheet) for f in figures}
    named["launch_us"] = LAUNCH_SOURCE.format(what="kernel")
    return DeviceSpec(key=key, name=name, kind="gpu", tflops=dict(tflops), bandwidth_gbps=gbps,
                      memory_bytes=int(memory_gib * GIB), sms=sms, boost_mhz=mhz, launch_us=GPU_LAUNCH_US,
                      sources=named, matches=matches)


def _hopper(key: str, name: str, tflops: dict[str, float], gbps: float, memory_gib: float, sms: int, mhz: int,
            sheet: str, matches: tuple[str, ...], sparse_tf32: int, sparse_fp16: int) -> DeviceSpec:
    tensor = f"{sheet}: {sparse_tf32:,} (TF32), {sparse_fp16:,} (FP16, BF16) TFLOP/s with sparsity; the dense " \
             f"figure, half, as the {HOPPER_PAPER} tabulates it"
    return _gpu(key, name, tflops, gbps, memory_gib, sms, mhz, sheet, matches, tf32=tensor, bfloat16=tensor,
                float16=tensor, sms=f"{HOPPER_PAPER}: {sms} SMs", boost_mhz=_clock(tflops["float32"], sms, 128))


def _v100(key: str, form: str, memory_gib: int, matches: tuple[str, ...]) -> DeviceSpec:
    """A V100 row: SXM2 or PCIe (clocks and peaks differ), 16 or 32 GB (nothing else does)."""
    sxm = form == "SXM2"
    tflops = {"float32": 15.7, "float16": 125.0} if sxm else {"float32": 14.0, "float16": 112.0}
    clock = _clock(tflops["float32"], 80, 64)
    return _gpu(key, f"NVIDIA V100 {form} {memory_gib}GB", tflops, 900.0, memory_gib, 80, 1530 if sxm else 1380,
                f"{V100_SHEET}, V100 {form}", matches,
                float16=f"{V100_SHEET}, V100 {form}: Tensor performance (FP16 with FP32 accumulate; no sparsity)",
                sms=f"derived: {V100_SHEET}'s 5,120 CUDA cores / 64 per Volta SM",
                boost_mhz=clock if sxm else f"the V100 PCIe's boost clock as the driver reports it; {clock} = "
                                            "1.37 GHz agrees")


def _hopper_and_a100() -> list[DeviceSpec]:
    hopper = {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4}
    ampere = {"float32": 19.5, "tf32": 156.0, "bfloat16": 312.0, "float16": 312.0}
    a100 = {**{f: f"{A100_SHEET}{SPARSE}" for f in TENSOR}, "sms": A100_PAPER, "boost_mhz": _clock(19.5, 108, 64)}
    return [
        _hopper("h200", "NVIDIA H200 SXM 141GB", hopper, 4800.0, 141, 132, 1980, H200_SHEET, ("H200",), 989, 1979),
        _hopper("h100-sxm", "NVIDIA H100 SXM5 80GB", hopper, 3350.0, 80, 132, 1980, f"{H100_SHEET}, H100 SXM",
                ("H100", "H100 SXM", "H100 SXM5", "H100 HBM3"), 989, 1979),
        _hopper("h100-pcie", "NVIDIA H100 PCIe 80GB", {"float32": 51.2, "tf32": 378.0, "bfloat16": 756.0,
                                                       "float16": 756.0},
                2000.0, 80, 114, 1755, f"{H100_SHEET}, H100 PCIe", ("H100 PCIE",), 756, 1513),
        _gpu("a100-sxm4-80gb", "NVIDIA A100 80GB SXM4", ampere, 2039.0, 80, 108, 1410, f"{A100_SHEET}, A100 80GB SXM",
             ("A100 SXM4 80GB", "A100 SXM 80GB", "A100 80GB"), **a100),
        _gpu("a100-sxm4-40gb", "NVIDIA A100 40GB SXM4", ampere, 1555.0, 40, 108, 1410, f"{A100_SHEET}, A100 40GB SXM",
             ("A100 SXM4 40GB", "A100 SXM4", "A100 SXM"), **a100),
        _gpu("a100-pcie-80gb", "NVIDIA A100 80GB PCIe", ampere, 1935.0, 80, 108, 1410,
             f"{A100_SHEET}, A100 80GB PCIe", ("A100 80GB PCIE",), **a100),
        _gpu("a100-pcie-40gb", "NVIDIA A100 40GB PCIe", ampere, 1555.0, 40, 108, 1410,
             f"{A100_SHEET}, A100 40GB PCIe", ("A100 PCIE 40GB", "A100 PCIE", "A100"), **a100),
    ]


def _the_others() -> list[DeviceSpec]:
    l40s_tensor = f"{L40S_SHEET}: the dense figure, 362.05 (the sheet's with-sparsity 733 is not twice it)"
    a10g = ("derived: 80 SMs (CUDA's multiprocessor count for the A10G on AWS G5, against the A10's 72) × 1710 MHz "
            "(the A10G's boost clock; the A10's is 1695) × GA102's rates per SM and clock as the NVIDIA Ampere GA102 "
            "whitepaper gives them for GeForce cards: 256 FLOP FP32, 256 TF32, 512 FP16/BF16 with FP32 accumulate; "
            "the A10G's tensor cores run at that rate, half the A10's (Baseten, 'NVIDIA A10 vs A10G for ML model "
            "inference', https://www.baseten.co/blog/nvidia-a10-vs-a10g-for-ml-model-inference/: 70 TFLOP/s FP16 "
            "against the A10's 125)")
    aws = "AWS EC2 G5 instances (https://aws.amazon.com/ec2/instance-types/g5/): A10G, 24 GB; 600 GB/s as the A10's"
    return [
        _gpu("l40s", "NVIDIA L40S", {"float32": 91.6, "tf32": 183.0, "bfloat16": 362.05, "float16": 362.05},
             864.0, 48, 142, 2520, L40S_SHEET, ("L40S",), tf32=f"{L40S_SHEET}{SPARSE}", bfloat16=l40s_tensor,
             float16=l40s_tensor, sms=f"derived: {L40S_SHEET}'s 18,176 CUDA cores / 128 per Ada SM",
             boost_mhz=_clock(91.6, 142, 128)),
        _gpu("l4", "NVIDIA L4", {"float32": 30.3, "tf32": 60.0, "bfloat16": 121.0, "float16": 121.0},
             300.0, 24, 58, 2040, L4_SHEET, ("L4",), **{f: f"{L4_SHEET}{SPARSE}" for f in TENSOR},
             sms="CUDA's multiprocessor count for the L4 (AD104: 7,424 CUDA cores / 128 per SM)",
             boost_mhz=_clock(30.3, 58, 128)),
        _gpu("a10", "NVIDIA A10", {"float32": 31.2, "tf32": 62.5, "bfloat16": 125.0, "float16": 125.0},
             600.0, 24, 72, 1695, A10_SHEET, ("A10",), **{f: f"{A10_SHEET}{SPARSE}" for f in TENSOR},
             sms=f"derived: {A10_SHEET}'s 9,216 CUDA cores / 128 per GA102 SM", boost_mhz=_clock(31.2, 72, 128)),
        _gpu("a10g", "NVIDIA A10G (AWS G5)", {"float32": 35.0, "tf32": 35.0, "bfloat16": 70.0, "float16": 70.0},
             600.0, 24, 80, 1710, a10g, ("A10G",), bandwidth_gbps=aws, memory_bytes=aws,
             sms="CUDA's multiprocessor count on AWS G5 instances (80)", boost_mhz="the A10G's boost clock "
             "(NVIDIA does not publish an A10G datasheet); 35.0 TFLOP/s FP32 = 80 SMs × 256 FLOP × 1.71 GHz"),
        _gpu("t4", "NVIDIA T4", {"float32": 8.1, "float16": 65.0}, 320.0, 16, 40, 1590, T4_SHEET, ("T4",),
             float16=f"{T4_SHEET}: mixed precision FP16/FP32 (no sparsity on Turing)",
             sms=f"derived: {T4_SHEET}'s 2,560 CUDA cores / 64 per Turing SM (its 320 Tensor Cores / 8)",
             boost_mhz=f"the T4's boost clock as the driver reports it; {_clock(8.1, 40, 64)} = 1.58 GHz agrees"),
        _v100("v100-sxm2", "SXM2", 16, ("V100", "V100 SXM2", "V100 SXM2 16GB")),
        _v100("v100-sxm2-32gb", "SXM2", 32, ("V100 SXM2 32GB",)),
        _v100("v100-pcie", "PCIe", 16, ("V100 PCIE", "V100 PCIE 16GB")),
        _v100("v100-pcie-32gb", "PCIe", 32, ("V100 PCIE 32GB",)),
        _gpu("rtx4090", "NVIDIA GeForce RTX 4090", {"float32": 82.6, "tf32": 82.6, "bfloat16": 165.2,
                                                     "float16": 165.2},
             1008.0, 24, 128, 2520, ADA_PAPER, ("RTX 4090",), **{f: f"{ADA_PAPER}{GEFORCE}" for f in TENSOR}),
        _gpu("rtx3090", "NVIDIA GeForce RTX 3090", {"float32": 35.6, "tf32": 35.6, "bfloat16": 71.0, "float16": 71.0},
             936.0, 24, 82, 1695, GA102_PAPER, ("RTX 3090",), **{f: f"{GA102_PAPER}{GEFORCE}" for f in TENSOR}),
    ]


def _table() -> dict[str, DeviceSpec]:
    return {s.key: s for s in [*_hopper_and_a100(), *_the_others()]}


SPECS: dict[str, DeviceSpec] = _table()


def device_spec(key: str) -> DeviceSpec:
    """The table's row for a `--device` key (any case); an unknown key is a UsageError naming the closest."""
    wanted = key.strip().lower()
    if wanted in SPECS:
        return SPECS[wanted]
    if wanted == CPU_KEY:
        raise ValueError("the cpu's figures are measured on this machine, not tabulated: build them with cpu_spec()")
    raise UsageError(f"unknown device '{key}'{_hint(wanted)}")


def _hint(wanted: str) -> str:
    keys = [*SPECS, CPU_KEY]
    close = [k for k in keys if wanted and wanted.replace(" ", "-") in k] or \
        difflib.get_close_matches(wanted, keys, n=3, cutoff=0.5)
    listed = "see `cnnprobe predict --list-devices`"
    return f"; did you mean {', '.join(close[:3])}? ({listed})" if close else f"; {listed}"


def _words(text: str) -> set[str]:
    return set(text.upper().replace("-", " ").replace("_", " ").split())


def matching(cuda_name: str) -> DeviceSpec | None:
    """The row for a name as CUDA gives it (`torch.cuda.get_device_name()`, e.g. 'NVIDIA A100-SXM4-80GB'): the
    one whose phrase has the most words all in the name; None for a device or a variant the table lacks."""
    words = _words(cuda_name)
    if words & VARIANT_WORDS:
        return None
    best: tuple[int, int] = (0, 0)
    found = None
    for spec in SPECS.values():
        for phrase in spec.matches:
            score = (len(_words(phrase)), len(phrase))
            if _words(phrase) <= words and score > best:
                best, found = score, spec
    return found


def cpu_spec(peak_tflops: float | Mapping[str, float], bandwidth_gbps: float, memory_bytes: int, name: str,
             threads: int, *, peak_detail: str = "", bandwidth_detail: str = "") -> DeviceSpec:
    """This machine's CPU as a row: its roofs as bench measures them (flops_peak, bandwidth), a float32 peak or
    one per dtype; a dtype not measured runs at float32's."""
    tflops = {"float32": float(peak_tflops)} if isinstance(peak_tflops, (int, float)) else \
        {k: float(v) for k, v in peak_tflops.items()}
    if "float32" not in tflops:
        raise ValueError("a CPU's peaks need float32's")
    plural = "s" if threads != 1 else ""
    peak = peak_detail or f"the best square matrix product, {threads} thread{plural}"
    sources = {dtype: f"measured on this machine: {peak}" for dtype in tflops}
    sources["bandwidth_gbps"] = "measured on this machine: " + \
        (bandwidth_detail or f"the best copy and triad beyond the last-level cache, {threads} thread{plural}")
    sources["memory_bytes"] = "measured on this machine: its total memory"
    sources["launch_us"] = LAUNCH_SOURCE.format(what="CPU operator")
    return DeviceSpec(key=CPU_KEY, name=name, kind="cpu", tflops=tflops, bandwidth_gbps=float(bandwidth_gbps),
                      memory_bytes=int(memory_bytes), launch_us=CPU_LAUNCH_US, sources=sources, threads=threads)


def stated_figures(spec: DeviceSpec) -> list[str]:
    """The figures a row states (each must name its source): its peaks and whichever other fields it holds."""
    others = [f for f in ("bandwidth_gbps", "memory_bytes", "sms", "boost_mhz", "launch_us")
              if getattr(spec, f) not in (None, 0, 0.0)]
    return [*spec.tflops, *others]
