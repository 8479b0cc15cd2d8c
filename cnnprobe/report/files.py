"""Files cnnprobe writes for the user: CSV, JSON, PNG. Written whole or not at all."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import CnnprobeError

if TYPE_CHECKING:
    from ..benchmark.result import BenchResult


class OutputError(CnnprobeError):
    """A file that could not be written; the results were printed all the same."""

    exit_code = 1


def _resolve(path: str | Path) -> Path:
    """Where writing `path` really writes: a symlink's target (written through, never replaced)."""
    text = str(path)
    if not text.strip():
        raise CnnprobeError("an output file name is empty")
    target = Path(text).expanduser()
    if text.endswith(("/", os.sep)):
        if not target.is_dir():
            raise CnnprobeError(f"cannot write '{path}': the folder does not exist (a path ending in / is a folder)")
        raise CnnprobeError(f"cannot write '{path}': it is a folder; name a file in it")
    return Path(os.path.realpath(target)) if target.is_symlink() else target


def _special(target: Path) -> bool:
    """An existing pipe, device or socket: written into as it is, never renamed over."""
    try:
        mode = target.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def check_writable(path: str | Path) -> None:
    """Fail before a long run, not after it, when an output path cannot be written."""
    target = _resolve(path)
    if target.is_dir():
        raise CnnprobeError(f"cannot write '{path}': it is a folder")
    if _special(target):
        if not os.access(target, os.W_OK):
            raise CnnprobeError(f"cannot write '{path}': permission denied")
        return
    if not target.parent.is_dir():
        raise CnnprobeError(f"cannot write '{path}': folder '{target.parent}' does not exist")
    if not os.access(target.parent, os.W_OK):
        raise CnnprobeError(f"cannot write '{path}': folder '{target.parent}' is not writable")
    if target.exists() and not os.access(target, os.W_OK):
        raise CnnprobeError(f"cannot write '{path}': the file is not writable")


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write whole or not at all: to a temporary file beside the target, then renamed over it, so a crash or a
    full disk never leaves half a file and no temporary file stays behind. A symlink is written through to
    its target; a pipe or device is written into. A new file gets the mode the umask allows; an existing one
    keeps its own."""
    check_writable(path)
    target = _resolve(path)
    raw = data.encode() if isinstance(data, str) else data
    if _special(target):
        try:
            with open(target, "wb") as f:
                f.write(raw)
        except OSError as e:
            raise OutputError(f"cannot write '{path}': {e.strerror or e}") from None
        return target
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except OSError:
        mode = 0o666 & ~_umask()
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        tmp = None
    except OSError as e:
        raise OutputError(f"cannot write '{path}': {e.strerror or e}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
