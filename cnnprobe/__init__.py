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

from .core import signals as _signals

_signals.guard_spawned_rank()  # a rank `bench --nproc` started dies with it, from the first import on

__version__ = "0.1.0"

_EXPORTS = {
    "summary": "analysis.summary",
    "Summary": "analysis.summary",
    "LayerRecord": "analysis.summary",
    "trainable": "analysis.trainable",
    "TrainableReport": "analysis.trainable",
    "freeze": "models.freezing",
    "freeze_batchnorm": "models.freezing",
    "param_groups": "models.freezing",
    "flops": "analysis.flops",
    "bench": "benchmark.timing",
    "BenchResult": "benchmark.result",
    "profile": "benchmark.attribution.run",
    "ProfileReport": "benchmark.attribution.record",
    "BenchConfig": "training.config",
    "ModelRequest": "models.request",
    "FreezePlan": "models.freezing",
    "FlopReport": "analysis.flops",
    "build_model": "models.build",
    "compare_models": "analysis.compare",
    "inspect_checkpoint": "analysis.checkpoint",
    "safe_load": "analysis.checkpoint",
    "list_models": "models.registry",
    "resolve": "models.registry",
    "parse_head": "models.head",
    "replace_head": "models.head",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'cnnprobe' has no attribute '{name}'")
