"""Run the one analysis pass, on meta where possible and for real where not."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..core.enums import Source
from ..core.errors import ForwardError, InputSizeError
from ..core.formatting import nbytes
from ..memory.host import available_bytes
from ..memory.tracker import MemoryTracker
from ..models import meta
from ..models.build import Built, rebuild
from ..trace.failures import explain_failure
from ..trace.tracer import Tracer


@dataclass
class Probe:
    """The result of one forward pass under the tracer."""

    built: Built
    tracer: Tracer
    batch: int
    extra: Any = None  # what `run` returned, e.g. torchinfo's statistics

    @property
    def input_size(self) -> list[int]:
        return [self.batch, *self.built.input_shape]

    @property
    def notes(self) -> list[str]:
        """The build's notes, then the pass's (selections answered on meta, MACs counted apart)."""
        return [*self.built.notes, *self.tracer.notes()]


Run = Callable[[torch.nn.Module, tuple[Any, ...]], Any]  # (module, the call's arguments) -> anything


def _forward(built: Built, xs: tuple[torch.Tensor, ...], run: Run, fast: bool = True) -> tuple[Tracer, Any]:
    module = built.module
    was_training = module.training
    module.eval()
    # a registered model's value reads are known (torchvision's selections): answered on meta; a user's model
    # that reads values runs for real instead, where its branches see real numbers
    answers = built.spec.source in (Source.TORCHVISION, Source.CNNPROBE)
    tracer = Tracer(module, fast_meta=fast and built.device == "meta", data_dependent=answers)
    try:
        with tracer, torch.no_grad(), no_mha_fastpath():
            extra = run(module, built.arguments(xs))
    except Exception as e:  # noqa: BLE001 - explained below
        e.__cnnprobe_tracer__ = tracer  # type: ignore[attr-defined]
        raise
    finally:
        module.train(was_training)
    return tracer, extra


class no_mha_fastpath:
    """Real CPU tensors under no_grad take MultiheadAttention's fused path, which escapes FLOP
    formulas (vit_b_16 would count 11.3 instead of 17.6 GMACs). Switch it off while counting."""

    def __enter__(self) -> None:
        mha = getattr(torch.backends, "mha", None)
        self.previous = mha.get_fastpath_enabled() if mha else None
        if mha:
            mha.set_fastpath_enabled(False)

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            torch.backends.mha.set_fastpath_enabled(self.previous)


def probe(built: Built, batch: int = 1, run: Run | None = None, fast: bool = True) -> Probe:
    """One forward pass under the tracer, `run(module, arguments)` doing the calling (the arguments are the
    batch as the model's task takes it: a list of images for a detection model).

    `fast=False` runs every operator's real meta kernel instead of the
    tracer's shape rules (for checking those rules).

    On meta first; when the model cannot run on meta (it reads tensor values),
    it is rebuilt on the CPU and run for real, after checking that the batch
    fits in memory. A genuine failure of the model becomes a ForwardError
    naming the layer.
    """
    run = run or (lambda module, args: module(*args))
    xs = built.example_inputs(batch)
    try:
        tracer, extra = _forward(built, xs, run, fast)
    except SystemExit as e:
        raise ForwardError(f"{built.name} called sys.exit({e.code}) in its forward pass") from None
    except Exception as e:  # noqa: BLE001
        root = root_cause(e)
        if built.device == "meta" and meta.is_meta_error(root) and built.spec.source is not Source.MODULE:
            rebuilt = rebuild(built, "cpu")
            rebuilt.note = f"run for real on the CPU: meta tensors failed ({type(root).__name__}: {root})"
            if batch > 1:
                check_real_run_fits(rebuilt, batch)
            return probe(rebuilt, batch, run, fast)
        raise explain_failure(getattr(e, "__cnnprobe_tracer__", None), e, model=built.name,
                              input_shape=list(xs[0].shape)) from None
    return Probe(built, tracer, batch, extra)


def check_real_run_fits(built: Built, batch: int) -> None:
    """A model that must run for real: count one sample's tensor memory, scale it to the batch, and refuse
    a batch the machine cannot hold before running it (the kernel's out-of-memory killer cannot be caught)."""
    available = available_bytes()
    if available is None:
        return
    weights = sum(t.numel() * t.element_size() for t in (*built.module.parameters(), *built.module.buffers()))
    tracker = MemoryTracker({})
    with tracker, torch.no_grad():
        built.module.eval()
        built.module(*built.arguments(built.example_inputs(1)))
    tracker.close()
    need = weights + batch * tracker.result().peak_bytes
    if need > 0.8 * available:
        raise InputSizeError(
            f"{built.name} reads tensor values in its forward pass, so it runs for real on the CPU; at batch "
            f"{batch} that needs about {nbytes(need)}, more than the {nbytes(available)} available: use a smaller "
            "--batch")


def root_cause(error: BaseException) -> BaseException:
    """The first error of a chain: what a meta run really failed at."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error
