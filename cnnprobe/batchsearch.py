"""`--batch auto`: the largest batch whose heaviest step fits, and refusing CPU batches the machine cannot hold."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .benchconfig import BenchConfig
from .devices import free_memory, is_oom
from .enums import Device, Optimizer
from .errors import OutOfMemory
from .inspect import summary
from .memory import available_bytes
from .runners import RUNNERS, BenchSetup

if TYPE_CHECKING:
    from torch import nn

CPU_AUTO_LIMIT = 4096
CUDA_AUTO_LIMIT = 65536


def find_max_batch(fits: Callable[[int], bool], start: int = 1, limit: int = CPU_AUTO_LIMIT) -> int:
    """The largest batch for which `fits` holds: doubling from `start`, then bisection. 0 if none fits."""
    if not fits(start):
        return 0
    good = start
    while True:
        trial = min(good * 2, limit)
        if trial == good:
            return good  # the search's upper limit
        if not fits(trial):
            bad = trial
            break
        good = trial
    while bad - good > 1:
        middle = (good + bad) // 2
        if fits(middle):
            good = middle
        else:
            bad = middle
    return good


def estimated_bytes(model: "str | nn.Module", batch: int, config: BenchConfig) -> int:
    """A generous training-memory estimate from the meta-device summary: weights, gradients, optimizer
    state and twice the activations. Used to refuse CPU batches the machine cannot hold."""
    s = summary(model, batch=batch, input_size=config.input_size, input_dtype=config.input_dtype,
                input_range=config.input_range, num_classes=config.num_classes, depth=0)
    state = Optimizer(config.optimizer).state_per_param if config.training else 0
    if not config.training:
        return s.param_bytes + s.activation_bytes
    return s.param_bytes * (2 + state) + s.activation_bytes * 2


def fits_on_cpu(model: "str | nn.Module", batch: int, config: BenchConfig) -> tuple[bool, int, int | None]:
    need = estimated_bytes(model, batch, config)
    available = available_bytes()
    return (available is None or need < 0.8 * available), need, available


def auto_batch(model: "str | nn.Module", config: BenchConfig) -> int:
    """The largest batch whose heaviest configured step runs without running out of memory."""
    heaviest = config.modes[-1]
    probe = config.replace(mode=heaviest, count_flops=False, peak=False, memory=False, repeat=1)

    def fits(batch: int) -> bool:
        if Device(config.device) is Device.CPU and not fits_on_cpu(model, batch, config)[0]:
            return False
        setup = BenchSetup(model, batch, probe)
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
    best = find_max_batch(fits, 1, limit)
    if best == 0:
        raise OutOfMemory(str(model), 1, Device(config.device).value, "not even batch 1 fits")
    return best
