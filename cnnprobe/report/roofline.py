"""`profile --plot`: the profile's rows on the roofline, achieved TFLOP/s against FLOPs per byte, log-log.

The roofs are the measured ones the report carries (the best GEMM and the best large copy or triad); each
row is plotted once per direction it ran, where it counted FLOPs and bytes and took time. What is drawn is
computed by the small pure functions here, so that the tests can hold the picture to the Roof.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import NamedTuple

from ..benchmark.attribution.record import ProfileReport, Roof
from ..core.errors import CnnprobeError
from .files import require_matplotlib, write_atomic

MARKERS = {"forward": "o", "backward": "^"}
LABELLED = 5  # the rows that took longest get their names beside their points
MARGIN = 3.0  # how far (a factor) the axes reach beyond the outermost point or the ridge


class RooflinePoint(NamedTuple):
    name: str
    direction: str  # "forward" or "backward"
    intensity: float  # FLOPs per byte
    tflops: float  # achieved
    ms: float


def roof_line(roof: Roof, intensities: list[float]) -> list[float]:
    """The roofline's TFLOP/s at each intensity (FLOPs per byte): the bandwidth roof's slope up to the ridge, the
    compute roof beyond it."""
    return [min(roof.peak_tflops, roof.bandwidth_gbps * 1e9 * i / 1e12) for i in intensities]


def roofline_points(report: ProfileReport) -> list[RooflinePoint]:
    """Every row's forward and backward point that can sit on log axes: with FLOPs, bytes and time."""
    out = []
    for row in (*report.modules, *report.unattributed.values()):
        for direction, p in row.points().items():
            if p.flops > 0 and p.bytes > 0 and p.ms > 0 and p.intensity and p.achieved_tflops:
                out.append(RooflinePoint(row.name, direction, p.intensity, p.achieved_tflops, p.ms))
    return out


def axis_ranges(roof: Roof, points: list[RooflinePoint]) -> tuple[tuple[float, float], tuple[float, float]]:
    """(x range, y range) holding every point, the ridge and the roofs above them, with a margin on log axes."""
    xs = [p.intensity for p in points] + [roof.ridge]
    x_lo, x_hi = min(xs) / MARGIN, max(xs) * MARGIN
    ys = [p.tflops for p in points] + [roof.peak_tflops, *roof_line(roof, [x_lo])]
    return (x_lo, x_hi), (min(ys) / MARGIN, max(ys) * MARGIN)


def _check_roof(roof: Roof) -> None:
    for what, value in (("compute roof", roof.peak_tflops), ("bandwidth roof", roof.bandwidth_gbps)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise CnnprobeError(f"cannot draw the roofline: the {what} is {value!r}, not a positive measurement")


def plot_roofline(report: ProfileReport, path: str | Path) -> Path:
    """The rows on the measured roofline as a PNG (needs matplotlib), written whole or not at all."""
    roof = report.roof
    _check_roof(roof)
    plt = require_matplotlib()
    points = roofline_points(report)
    (x_lo, x_hi), (y_lo, y_hi) = axis_ranges(roof, points)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ridge = roof.ridge
    # the legend says where each roof comes from; the details (sizes, threads) are in the table and the JSON
    bandwidth = f"bandwidth roof {roof.bandwidth_gbps:,.1f} GB/s ({roof.bandwidth_source.split(':')[0]})"
    compute = f"compute roof {roof.peak_tflops:,.3g} TFLOP/s ({roof.peak_source.split(':')[0]})"
    ax.plot([x_lo, ridge], roof_line(roof, [x_lo, ridge]), color="tab:blue", linewidth=2, label=bandwidth)
    ax.plot([ridge, x_hi], roof_line(roof, [ridge, x_hi]), color="tab:red", linewidth=2, label=compute)
    ax.axvline(ridge, color="grey", linestyle=":", linewidth=1)
    ax.annotate(f"ridge {ridge:,.3g} FLOPs/B", (ridge, y_lo), xytext=(3, 3), textcoords="offset points",
                fontsize=7, color="grey")
    for direction, marker in MARKERS.items():
        mine = [p for p in points if p.direction == direction]
        if mine:
            ax.scatter([p.intensity for p in mine], [p.tflops for p in mine], marker=marker, s=28, alpha=0.8,
                       color="tab:green" if direction == "forward" else "tab:purple", label=direction, zorder=3)
    longest = sorted({r.name: r.total_ms for r in (*report.modules, *report.unattributed.values())}.items(),
                     key=lambda kv: -kv[1])[:LABELLED]
    for name, _ in longest:  # once per row, beside its longer direction
        mine = [p for p in points if p.name == name]
        if mine:
            p = max(mine, key=lambda q: q.ms)
            ax.annotate(name, (p.intensity, p.tflops), xytext=(4, 2), textcoords="offset points", fontsize=7)
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.set_xlabel("arithmetic intensity (FLOPs / byte)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.set_title(f"{report.model} · batch {report.batch} · {report.device_name} · {report.dtype} · {report.mode}",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower right", framealpha=0.9)  # under the points: the roofs stay in view
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return write_atomic(path, buffer.getvalue())
