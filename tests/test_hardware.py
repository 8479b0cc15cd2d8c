"""The device spec table: every figure sourced, dense not sparse, each row consistent with itself, CUDA's names
matched, and the --list-devices table."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from cnnprobe.core.errors import UsageError
from cnnprobe.report.console import json_text
from cnnprobe.report.devices import device_lines, devices_dict
from cnnprobe.runtime import bandwidth, flops_peak
from cnnprobe.runtime.hardware import SPECS, cpu_spec, device_spec, matching, stated_figures

GPUS = ["h200", "h100-sxm", "h100-pcie", "a100-sxm4-80gb", "a100-pcie-40gb", "l40s", "l4", "a10g", "t4", "v100-sxm2",
        "rtx4090", "rtx3090"]
# FP32 FLOP per SM per clock, by architecture (each architecture whitepaper's SM diagram: FP32 lanes × 2): an
# independent check that a row's SM count, clock and FP32 peak agree with one another
FP32_PER_SM_CLOCK = {"h200": 256, "h100-sxm": 256, "h100-pcie": 256, "a100-sxm4-80gb": 128, "a100-sxm4-40gb": 128,
                     "a100-pcie-80gb": 128, "a100-pcie-40gb": 128, "l40s": 256, "l4": 256, "a10": 256, "a10g": 256,
                     "t4": 128, "v100-sxm2": 128, "v100-sxm2-32gb": 128, "v100-pcie": 128, "v100-pcie-32gb": 128,
                     "rtx4090": 256, "rtx3090": 256}


def test_the_table_holds_every_device_the_issue_names():
    assert set(GPUS) <= set(SPECS)
    assert all(SPECS[k].kind == "gpu" and SPECS[k].key == k for k in SPECS)


@pytest.mark.parametrize("key", list(SPECS))
def test_every_figure_a_row_states_names_its_source(key):
    spec = SPECS[key]
    stated = stated_figures(spec)
    assert {"float32", "bandwidth_gbps", "memory_bytes", "sms", "boost_mhz", "launch_us"} <= set(stated)
    assert set(stated) == set(spec.sources), (set(stated) ^ set(spec.sources))
    for figure in stated:
        source = spec.sources[figure]
        assert len(source) > 20, (figure, source)
        # a figure is the vendor's, derived (saying how), or cnnprobe's own default
        assert any(word in source for word in ("NVIDIA", "derived", "cnnprobe default", "CUDA's", "AWS")), source
    for dtype in set(spec.tflops) & {"tf32", "bfloat16", "float16"}:
        assert "sparsity" in spec.sources[dtype] or "derived" in spec.sources[dtype], (dtype, spec.sources[dtype])


def test_peaks_are_dense_not_with_sparsity():
    # the datasheets' starred figures (with 2:4 sparsity) are twice these
    assert SPECS["h100-sxm"].tflops["float16"] == 989.4 and SPECS["h100-sxm"].tflops["tf32"] == 494.7
    assert SPECS["h200"].tflops["bfloat16"] == 989.4
    assert SPECS["h100-pcie"].tflops["float16"] == 756.0
    assert SPECS["a100-sxm4-80gb"].tflops["float16"] == 312.0 and SPECS["a100-sxm4-80gb"].tflops["tf32"] == 156.0
    assert SPECS["l4"].tflops["float16"] == 121.0 and SPECS["l4"].tflops["tf32"] == 60.0
    # GeForce: FP16 with FP32 accumulate, the figure training's autocast products reach
    assert SPECS["rtx4090"].tflops["float16"] == 165.2 and SPECS["rtx3090"].tflops["float16"] == 71.0
    for spec in SPECS.values():  # a dense tensor peak is no more than 16× FP32 on any of these (H100: 14.8×)
        assert max(spec.tflops.values()) <= 16 * spec.tflops["float32"], spec.key


@pytest.mark.parametrize("key", ["t4", "v100-sxm2", "v100-pcie"])
def test_devices_without_tf32_or_bf16_fall_back_to_float32(key):
    spec = SPECS[key]
    assert "tf32" not in spec.tflops and "bfloat16" not in spec.tflops
    assert spec.peak_tflops("float32", tf32=True) == spec.tflops["float32"]
    assert spec.peak_tflops("bfloat16") == spec.tflops["float32"]
    assert spec.peak_tflops("float16") == spec.tflops["float16"] > spec.tflops["float32"]


def test_tf32_is_used_only_where_asked():
    spec = SPECS["a100-sxm4-80gb"]
    assert spec.peak_tflops("float32") == 19.5 and spec.peak_tflops("float32", tf32=True) == 156.0


@pytest.mark.parametrize("key", list(SPECS))
def test_ridge_points_are_plausible(key):
    """fp16 peak over bandwidth: FLOPs a kernel must do per byte to be compute-bound, 50-700 on these GPUs."""
    spec = SPECS[key]
    ridge = spec.tflops["float16"] * 1e12 / (spec.bandwidth_gbps * 1e9)
    assert 50 <= ridge <= 700, ridge


@pytest.mark.parametrize("key", list(SPECS))
def test_sm_count_clock_and_fp32_peak_agree(key):
    spec = SPECS[key]
    assert spec.sms is not None and spec.boost_mhz is not None
    computed = spec.sms * FP32_PER_SM_CLOCK[key] * spec.boost_mhz * 1e6 / 1e12
    assert computed == pytest.approx(spec.tflops["float32"], rel=0.02), computed


def test_memory_is_the_stated_capacity():
    assert SPECS["h200"].memory_bytes == 141 * 2**30 and SPECS["a100-pcie-40gb"].memory_bytes == 40 * 2**30
    assert SPECS["t4"].memory_bytes == 16 * 2**30 and SPECS["l40s"].memory_bytes == 48 * 2**30


@pytest.mark.parametrize(("name", "key"), [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"), ("NVIDIA H100 PCIe", "h100-pcie"), ("NVIDIA H200", "h200"),
    ("NVIDIA A100-SXM4-80GB", "a100-sxm4-80gb"), ("NVIDIA A100-SXM4-40GB", "a100-sxm4-40gb"),
    ("NVIDIA A100-PCIE-40GB", "a100-pcie-40gb"), ("NVIDIA A100 80GB PCIe", "a100-pcie-80gb"),
    ("NVIDIA A10G", "a10g"), ("NVIDIA A10", "a10"), ("Tesla T4", "t4"), ("Tesla V100-SXM2-16GB", "v100-sxm2"),
    ("Tesla V100-SXM2-32GB", "v100-sxm2-32gb"), ("Tesla V100-PCIE-32GB", "v100-pcie-32gb"),
    ("NVIDIA GeForce RTX 4090", "rtx4090"), ("NVIDIA GeForce RTX 3090", "rtx3090"), ("NVIDIA L4", "l4"),
    ("NVIDIA L40S", "l40s"),
    # variants the table does not hold borrow nothing from their base card
    ("NVIDIA L40", None), ("NVIDIA H100 NVL", None), ("NVIDIA GeForce RTX 3090 Ti", None),
    ("NVIDIA GeForce RTX 4090 Laptop GPU", None), ("NVIDIA GeForce RTX 4090 D", None), ("NVIDIA GH200 480GB", None),
    ("AMD EPYC 7763 64-Core Processor", None), ("", None)])
def test_cuda_names_match_their_row(name, key):
    found = matching(name)
    assert (found.key if found else None) == key


def test_every_match_phrase_finds_its_own_row():
    for spec in SPECS.values():
        for phrase in spec.matches:
            assert matching(f"NVIDIA {phrase}") is spec, phrase


def test_device_spec_takes_any_case_and_names_the_closest_for_an_unknown_key():
    assert device_spec("H100-SXM") is SPECS["h100-sxm"]
    with pytest.raises(UsageError) as caught:
        device_spec("h100")
    message = str(caught.value)
    assert "\n" not in message and "unknown device 'h100'" in message
    assert "did you mean h100-sxm, h100-pcie?" in message and "--list-devices" in message
    with pytest.raises(UsageError, match="did you mean rtx4090"):
        device_spec("rtx-4090")
    with pytest.raises(UsageError, match=r"unknown device 'quantum'; see `cnnprobe predict --list-devices`$"):
        device_spec("quantum")
    with pytest.raises(ValueError, match="cpu_spec"):
        device_spec("cpu")


def test_the_roofs_datasheet_figures_come_from_the_table():
    assert flops_peak.datasheet("NVIDIA H200", "bfloat16").tflops == 989.4
    assert flops_peak.datasheet("NVIDIA H100 PCIe", "float16").tflops == 756.0
    assert flops_peak.datasheet("NVIDIA A10G", "float16").tflops == 70.0
    assert flops_peak.datasheet("Tesla T4", "bfloat16") is None  # no figure: bench shows none rather than fp32's
    assert flops_peak.datasheet("Tesla V100-SXM2-16GB", "float32", tf32=True).tflops == 15.7
    assert flops_peak.datasheet("NVIDIA L40S", "float32", tf32=True).detail == "l40s dense tf32"
    assert bandwidth.datasheet_bandwidth("NVIDIA A100-SXM4-80GB").gbps == 2039.0
    assert bandwidth.datasheet_bandwidth("NVIDIA A10G").detail == "a10g memory bandwidth"
    for spec in SPECS.values():
        name = f"NVIDIA {spec.matches[0]}"
        assert flops_peak.datasheet(name, "float32").tflops == spec.tflops["float32"]
        assert bandwidth.datasheet_bandwidth(name).gbps == spec.bandwidth_gbps


def test_a_cpu_row_says_its_figures_were_measured_here():
    cpu = cpu_spec(1.5, 20.0, 8 * 2**30, "Some CPU", 2, peak_detail="1024³ float32, 2 threads")
    assert cpu.key == "cpu" and cpu.kind == "cpu" and cpu.sms is None
    assert cpu.peak_tflops("bfloat16") == 1.5  # a dtype not measured runs at float32's
    assert set(stated_figures(cpu)) == set(cpu.sources)
    assert cpu.sources["float32"] == "measured on this machine: 1024³ float32, 2 threads"
    assert cpu.sources["bandwidth_gbps"].startswith("measured on this machine")
    both = cpu_spec({"float32": 1.5, "bfloat16": 0.2}, 20.0, 8 * 2**30, "Some CPU", 1)
    assert both.peak_tflops("bfloat16") == 0.2 and "1 thread" in both.sources["bfloat16"]
    with pytest.raises(ValueError):
        cpu_spec({"bfloat16": 0.2}, 20.0, 1, "x", 1)


def _rendered(specs, width=120):
    out = io.StringIO()
    console = Console(file=out, width=width, highlight=False, soft_wrap=False, markup=False, emoji=False)
    for piece in device_lines(specs):
        console.print(piece)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()) + "\n"


def test_the_list_devices_table_snapshot(snapshot):
    specs = [*SPECS.values(), cpu_spec(1.25, 18.5, 16 * 2**30, "Example CPU", 2)]
    text = _rendered(specs)
    snapshot("devices_list", text)
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split()[:1] and line.split()[0] in SPECS
            and not line.startswith(" ")}
    assert rows["h100-sxm"][-9:] == ["67", "494.7", "989.4", "989.4", "3350", "80", "GiB", "132", "1980"]
    assert rows["t4"][-9:] == ["8.1", "-", "-", "65", "320", "16", "GiB", "40", "1590"]
    assert "measured on this machine" in text and "sparsity" in text


def test_the_json_form_holds_every_figure_and_source():
    data = json.loads(json_text(devices_dict(list(SPECS.values()))))
    by_key = {d["key"]: d for d in data["devices"]}
    assert set(by_key) == set(SPECS)
    h100 = by_key["h100-sxm"]
    assert h100["tflops"]["float16"] == 989.4 and h100["bandwidth_gbps"] == 3350.0 and h100["sms"] == 132
    assert "sparsity" in h100["sources"]["float16"] and h100["matches"][0] == "H100"


def test_the_table_and_its_rendering_need_no_torch():
    """--list-devices prints without starting torch: the table and its renderer import none of it."""
    import subprocess
    import sys

    code = "import sys, cnnprobe.report.devices, cnnprobe.runtime.hardware; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
