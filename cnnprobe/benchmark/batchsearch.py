"""`--batch auto`: the largest batch whose heaviest step fits, and refusing CPU batches the machine cannot hold."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from ..analysis.probe import probe
from ..analysis.summary import summarize, summary, torchinfo_pass
from ..core.enums import Device, Optimizer
from ..core.errors import CnnprobeError, OutOfMemory
from ..core.search import search_batch
from ..memory.host import available_bytes
from ..models.build import check_batch
from ..training.config import BenchConfig
from ..training.devices import free_memory, is_oom
from .prepared import Prepared
from .runners import RUNNERS, BenchSetup

if TYPE_CHECKING:
    from torch import nn

CPU_AUTO_LIMIT = 4096
CUDA_AUTO_LIMIT = 65536


def estimated_bytes(model: "str | nn.Module", batch: int, config: BenchConfig,
                    prepared: Prepared | None = None) -> int:
    """The heaviest configured step's predicted peak (`cnnprobe memory`), or, for a model that cannot run
    on fake tensors, a generous estimate from the summary: weights, gradients, optimizer state and twice
    the activations. Used to refuse CPU batches the machine cannot hold. `prepared`: the model's meta
    build, shared with the rest of the run."""
    prepared = prepared or Prepared(model, config)
    try:
        return prepared.predictor().peak(batch, config.modes[-1])
    except Exception:  # noqa: BLE001 - the summary below runs the forward for real and names a failure in one line
        pass
    built = prepared.built()
    if built is not None:
        s = summarize(probe(built, check_batch(batch), torchinfo_pass), 0)
    else:  # the meta build failed: this one fails as it did, in one line
        s = summary(replace(config.request, model=model, head=None, weights=None, batch=batch), depth=0)
    state = Optimizer(config.optimizer).state_per_param if config.training else 0
    if not config.training:
        return s.param_bytes + s.activation_bytes
    return s.param_bytes * (2 + state) + s.activation_bytes * 2


def fits_on_cpu(model: "str | nn.Module", batch: int, config: BenchConfig,
                prepared: Prepared | None = None) -> tuple[bool, int, int | None]:
    need = estimated_bytes(model, batch, config, prepared)
    available = available_bytes()
    return (available is None or need < 0.8 * available), need, available


def auto_batch(model: "str | nn.Module", config: BenchConfig, on_try: Callable[[str], None] | None = None,
               prepared: Prepared | None = None) -> int:
    """The largest batch whose heaviest configured step runs without running out of memory: the search
    starts at the batch the prediction says fits the device's free memory, not at 1. `on_try` hears of
    each batch tried, for progress."""
    heaviest = config.modes[-1]
    prepared = prepared or Prepared(model, config)
    probing = config.replace(mode=heaviest, count_flops=False, peak=False, memory=False, repeat=1)

    def fits(batch: int) -> bool:
        if on_try is not None:
            on_try(f"{model if isinstance(model, str) else type(model).__name__}: --batch auto, trying batch {batch}")
        if Device(config.device) is Device.CPU and not fits_on_cpu(model, batch, config, prepared)[0]:
            return False
        setup = BenchSetup(model, batch, probing)
        try:
            setup.build()
            setup.set_frozen(config.freezing)
            RUNNERS[heaviest](setup, config.freezing).step()()
            return True
        except Exception as e:  # noqa: BLE001
            if is_oom(e):
                return False
            raise
        finally:
            setup.close()
            free_memory()

    limit = CUDA_AUTO_LIMIT if Device(config.device) is Device.CUDA else CPU_AUTO_LIMIT
    best = search_batch(fits, predicted_start(model, config, limit, prepared), limit)
    if best == 0:
        raise OutOfMemory(str(model), 1, Device(config.device).value, "not even batch 1 fits")
    return best


def predicted_start(model: "str | nn.Module", config: BenchConfig, limit: int,
                    prepared: Prepared | None = None) -> int:
    """Where `--batch auto` starts: the largest batch whose predicted peak fits the free memory (1 when
    nothing can be predicted)."""
    cuda = Device(config.device) is Device.CUDA
    free = torch.cuda.mem_get_info()[0] if cuda else int(0.8 * (available_bytes() or 0))
    if not free:
        return 1
    try:
        return max(1, (prepared or Prepared(model, config)).predictor().largest_batch(free, config.modes[-1],
                                                                               limit).batch)
    except CnnprobeError:
        return 1
