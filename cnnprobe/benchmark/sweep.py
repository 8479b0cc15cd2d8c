"""Several models at several batch sizes, repeated as asked: one table, failures recorded, Ctrl-C kept."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..core.enums import Device
from ..core.errors import InputSizeError, OutOfMemory
from ..training.config import BenchConfig
from ..training.devices import free_memory
from .batchsearch import auto_batch, fits_on_cpu
from .prepared import Prepared
from .result import BenchResult, Failure, Sweep, merge_repeats
from .timing import run_once

if TYPE_CHECKING:
    from torch import nn


def parse_batches(text: str | int | Sequence[int | str]) -> list[int | str]:
    """`"1,8,32"` -> [1, 8, 32]; `"auto"` stays; anything else is one clear error."""
    items = text.split(",") if isinstance(text, str) else list(text) if not isinstance(text, int) else [text]
    out: list[int | str] = []
    for item in items:
        item = str(item).strip().lower()
        if item == "auto":
            out.append("auto")
            continue
        if not (item.isascii() and item.isdigit()) or len(item) > 9:
            if item.lstrip("-").isascii() and item.lstrip("-").isdigit():
                raise InputSizeError(f"--batch must be a positive integer below 10^9, got {item}")
            raise InputSizeError(f"--batch takes positive integers or 'auto', got '{item}'")
        value = int(item)
        if value <= 0:
            raise InputSizeError(f"--batch must be a positive integer, got {value}")
        out.append(value)
    if not out:
        raise InputSizeError("--batch is empty")
    return out


def _labelled(on_phase: Callable[[str], None], suffix: str, text: str) -> None:
    on_phase(text + suffix)


def sweep(
    models: Sequence["str | nn.Module"],
    batches: Sequence[int | str],
    config: BenchConfig,
    on_phase: Callable[[str], None] | None = None,
    on_search: Callable[[str], None] | None = None,
) -> Sweep:
    """Every model at every batch size, the whole sweep `config.repeat` times (so that run-to-run drift
    shows between repeats, not within one). An out-of-memory batch is recorded and that model's larger
    ones skipped; Ctrl-C stops the sweep and keeps what was measured. `on_phase` hears of each mode as it
    starts, `on_search` of each batch a `--batch auto` search tries."""
    out = Sweep()
    done: dict[tuple[str, int], list[BenchResult]] = {}
    failed: set[str] = set()
    fits: set[tuple[str, int]] = set()  # predicted to fit on the CPU: the same in every repeat
    largest: dict[str, int] = {}
    prepared = {str(model): Prepared(model, config) for model in models}  # each model built on meta once
    try:
        for repeat in range(config.repeat):
            label = on_phase
            # the memory prediction is the same in every repeat: merge_repeats keeps the first run's
            run_config = config if repeat == 0 else config.replace(predict=False)
            if on_phase is not None and config.repeat > 1:
                label = functools.partial(_labelled, on_phase, f" · repeat {repeat + 1}/{config.repeat}")
            for model in models:
                name = str(model)
                for batch in batches:
                    if name in failed:
                        break
                    try:
                        if batch == "auto":
                            if name not in out.auto:
                                out.auto[name] = auto_batch(model, config, on_search, prepared[name])
                            batch = out.auto[name]
                        batch = int(batch)
                        if Device(config.device) is Device.CPU and (name, batch) not in fits:
                            ok, need, available = fits_on_cpu(model, batch, config, prepared[name])
                            if not ok:
                                raise OutOfMemory(name, batch, "cpu", f"needs about {need / 2**30:.1f} GiB, "
                                                  f"{(available or 0) / 2**30:.1f} GiB available")
                            fits.add((name, batch))
                        partial: list[BenchResult] = []
                        try:
                            result = run_once(model, batch, run_config, label, partial, prepared[name])
                            done.setdefault((name, batch), []).append(result)
                        finally:
                            done.setdefault((name, batch), []).extend(partial)
                        largest[name] = max(largest.get(name, 0), batch)
                    except OutOfMemory as e:
                        out.failures.append(Failure(name, e.batch, e.detail, largest.get(name)))
                        failed.add(name)
                        free_memory()
    except KeyboardInterrupt:
        out.interrupted = True
    out.runs = [merge_repeats(runs) for runs in done.values() if runs]
    return out
