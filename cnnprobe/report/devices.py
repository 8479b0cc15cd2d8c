"""`cnnprobe predict --list-devices`: the devices the time model knows, their figures and where each comes from."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rich.text import Text

from ..core.formatting import nbytes
from ..runtime.records import DeviceSpec
from .tables import Col, Fitted

PEAKS = (("fp32", "float32"), ("tf32", "tf32"), ("bf16", "bfloat16"), ("fp16", "float16"))
FIGURE_NAMES = {"float32": "fp32", "tf32": "tf32", "bfloat16": "bf16", "float16": "fp16",
                "bandwidth_gbps": "bandwidth", "memory_bytes": "memory", "sms": "SMs", "boost_mhz": "clock",
                "launch_us": "launch"}


def device_table(specs: list[DeviceSpec]) -> Fitted:
    """One row per device: its dense peaks, memory bandwidth and size, SMs and clock; '-' where it has no
    such figure (no TF32 or BF16 tensor path: those run at fp32's)."""
    table = Fitted([Col("device", "left", key=True), Col("name", "left", text=True),
                    *(Col(label) for label, _ in PEAKS), Col("GB/s"), Col("memory"), Col("SMs"), Col("MHz")],
                   title=f"{len(specs)} devices · dense peaks in TFLOP/s")
    for s in specs:
        peaks = [f"{s.tflops[d]:g}" if d in s.tflops else "-" for _, d in PEAKS]
        table.add_row(s.key, s.name, *peaks, f"{s.bandwidth_gbps:g}", nbytes(s.memory_bytes, 0),
                      str(s.sms) if s.sms else "-", str(s.boost_mhz) if s.boost_mhz else "-")
    return table


def source_lines(specs: list[DeviceSpec]) -> list[Text]:
    """One line per source, naming the devices and figures it gives: a source many rows share (a datasheet's
    variants, the default launch cost) is written once."""
    by_source: dict[str, dict[tuple[str, ...], list[str]]] = {}
    for spec in specs:
        figures: dict[str, list[str]] = {}
        for figure, source in spec.sources.items():
            figures.setdefault(source, []).append(FIGURE_NAMES.get(figure, figure))
        for source, names in figures.items():
            by_source.setdefault(source, {}).setdefault(tuple(names), []).append(spec.key)
    lines = []
    for source, groups in by_source.items():
        what = "; ".join(f"{', '.join(keys)} ({', '.join(names)})" for names, keys in groups.items())
        lines.append(Text(f"  {what}: {source}", style="dim"))
    return lines


def device_lines(specs: list[DeviceSpec]) -> list[Any]:
    """The table, what its figures mean, and below it every figure's source."""
    pieces: list[Any] = [
        device_table(specs),
        Text("peaks are dense (never with 2:4 sparsity); fp16/bf16 are tensor-core figures with FP32 accumulate; "
             "'-': no such tensor path, the dtype runs at fp32's; memory as the datasheet states it"),
        Text("sources:"),
    ]
    return [*pieces, *source_lines(specs)]


def devices_dict(specs: list[DeviceSpec]) -> dict[str, Any]:
    """The --json form: every row with all its figures and their sources."""
    return {"devices": [{**asdict(s), "matches": list(s.matches)} for s in specs]}
