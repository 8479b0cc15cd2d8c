"""`cnnprobe checkpoint`: what a weights file holds and whether it fits a model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from ..core.formatting import count, nbytes
from .compare import compatibility_line
from .tables import note_lines

if TYPE_CHECKING:
    from ..analysis.checkpoint import CheckpointInfo

FORMAT_LABELS = {"state_dict": "state_dict", "training_checkpoint": "training checkpoint",
                 "pickled_model": "whole pickled model", "torchvision_weights": "torchvision weights"}


def checkpoint_lines(info: CheckpointInfo) -> list[Any]:
    header = Text.assemble((info.path, "bold"), f" · {FORMAT_LABELS.get(info.format, info.format)} · "
                                                f"{nbytes(info.file_bytes)}")
    pieces: list[Any] = [header, _facts(info)]
    if info.compatibility:
        pieces.append(compatibility_line(info.compatibility, "these weights"))
    return pieces + note_lines(info.model_notes, "note: --model: ")


def _facts(info: CheckpointInfo) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    w = info.weights
    grid.add_row("tensors", f"{count(w.tensors)} holding {count(w.params)} values, {nbytes(w.bytes)}")
    grid.add_row("dtypes", ", ".join(f"{d} ×{n}" for d, n in w.dtypes.items()) or "-")
    if w.meta:
        grid.add_row("values", f"none in {count(w.meta)} meta tensors: shapes only, nothing to load")
    grid.add_row("saved on", ", ".join(f"{loc} ({n} storages)" for loc, n in info.saved_on.items()) or "-")
    if info.torchvision:
        grid.add_row("weights", f"{info.torchvision}; sha256 {'matches' if info.hash_ok else 'does NOT match'} the "
                                "file name")
    if info.pickled_class:
        grid.add_row("class", f"{info.pickled_class} (unpickled because of --trust)")
    if info.format == "training_checkpoint":
        grid.add_row("keys", ", ".join(info.keys))
        grid.add_row("epoch", str(info.epoch))
        grid.add_row("loss", str(info.loss))
        if info.optimizer:
            o = info.optimizer
            lrs = ", ".join(f"{x:g}" for x in o.lr)
            grid.add_row("optimizer", f"{o.type}, {o.param_groups} param groups (lr {lrs}), "
                                      f"state for {o.params} params: {o.state_tensors} tensors, "
                                      f"{nbytes(o.state_bytes)}")
    return grid
