"""cnnprobe: look inside CNNs.

    >>> import cnnprobe
    >>> s = cnnprobe.summary("lenet")
    >>> s.total_params, s.shape_flow[-1]
    (61706, [10])

The names below import torch only when first used, so `import cnnprobe`
(and `cnnprobe --help`) stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from . import signals as _signals

_signals.guard_spawned_rank()  # a rank `bench --nproc` started dies with it, from the first import on

__version__ = "0.1.0"

_EXPORTS = {
    "summary": "inspect",
    "Summary": "inspect",
    "LayerRecord": "inspect",
    "trainable": "transfer",
    "TrainableReport": "transfer",
    "freeze": "freezing",
    "freeze_batchnorm": "freezing",
    "param_groups": "freezing",
    "flops": "flopcount",
    "bench": "timing",
    "BenchResult": "benchresult",
    "BenchConfig": "benchconfig",
    "FlopReport": "flopcount",
    "build_model": "build",
    "compare_models": "modeldiff",
    "inspect_checkpoint": "checkpoints",
    "safe_load": "checkpoints",
    "list_models": "registry",
    "resolve": "registry",
    "parse_head": "head",
    "replace_head": "head",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'cnnprobe' has no attribute '{name}'")
