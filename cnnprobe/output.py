"""Files cnnprobe writes for the user: CSV, JSON, PNG. Written whole or not at all."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CnnprobeError

if TYPE_CHECKING:
    from .benchresult import BenchResult


def check_writable(path: str | Path) -> None:
    """Fail before a long run, not after it, when an output path cannot be written."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise CnnprobeError(f"cannot write '{path}': it is a directory")
    if not target.parent.is_dir():
        raise CnnprobeError(f"cannot write '{path}': folder '{target.parent}' does not exist")
    if not os.access(target.parent, os.W_OK):
        raise CnnprobeError(f"cannot write '{path}': folder '{target.parent}' is not writable")


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write to a temporary file beside `path`, then rename it over: a crash never leaves half a file."""
    check_writable(path)
    target = Path(path).expanduser()
    raw = data.encode() if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.replace(tmp, target)
    except OSError as e:
        raise CnnprobeError(f"cannot write '{path}': {e.strerror or e}") from None
    return target


def write_csv(rows: list[dict[str, Any]], columns: list[str], path: str | Path) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return write_atomic(path, buffer.getvalue())


def require_matplotlib() -> Any:
    """matplotlib's pyplot on a file backend, or one clear error."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CnnprobeError("--plot needs matplotlib: pip install 'cnnprobe[plot]'") from None
    return plt


def plot_throughput(runs: list["BenchResult"], path: str | Path) -> Path:
    """Samples per second against batch size, a line per model and mode (needs matplotlib)."""
    plt = require_matplotlib()
    lines: dict[str, list[tuple[int, float]]] = {}
    for run in runs:
        for r in run.results:
            label = f"{run.model} {r.mode}" + (" frozen" if r.frozen else "")
            lines.setdefault(label, []).append((run.batch, r.samples_per_s))
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, points in sorted(lines.items()):
        points.sort()
        ax.plot([b for b, _ in points], [v for _, v in points], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("samples / s")
    if runs:
        ax.set_title(f"{runs[0].device_name} · {runs[0].dtype} · {runs[0].threads} threads", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return write_atomic(path, buffer.getvalue())
