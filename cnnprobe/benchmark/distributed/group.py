"""The process group one rank joins, from the launcher's environment, and the collectives bench's own code runs
on it: the all-reduce of the maximum every decision is taken from, and one timed all-reduce of the gradients'
size."""

from __future__ import annotations

import contextlib
import datetime
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ...core import signals
from ...core.errors import CnnprobeError, RunError
from ...training.devices import synchronize

LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class DistOptions:
    """How the ranks talk: the backend, the process group's timeout, DDP's bucket size."""

    backend: str | None = None  # default: nccl on CUDA, gloo on the CPU
    timeout: float = 300.0  # seconds, for init_process_group and every collective
    bucket_mb: float | None = None  # DDP's bucket_cap_mb; None: DDP's own default (25)
    find_unused_parameters: bool = False  # DDP's option: let parameters that get no gradient through


def in_launcher() -> bool:
    """Whether this process was started by torchrun or the elastic launcher."""
    return all(k in os.environ for k in LAUNCHER_ENV)


def backend_for(device: str, backend: str | None) -> str:
    if backend:
        if backend not in ("gloo", "nccl", "mpi"):
            raise CnnprobeError(f"--backend must be gloo, nccl or mpi, got '{backend}'")
        if backend == "nccl" and device != "cuda":
            raise CnnprobeError("--backend nccl needs --device cuda; the CPU uses gloo")
        return backend
    return "nccl" if device == "cuda" else "gloo"


def rank_device(device: str, local_rank: int) -> str:
    """This rank's device: its own GPU (made current), or the CPU."""
    if device != "cuda":
        return "cpu"
    if local_rank >= torch.cuda.device_count():
        raise CnnprobeError(f"local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()}")
    torch.cuda.set_device(local_rank)
    return f"cuda:{local_rank}"


def join(backend: str, timeout: float, device: str, rank: int, explain: Callable[[BaseException], str]) -> None:
    """Join the process group the launcher's environment names; `explain` makes the cause one line."""
    try:
        nccl_only: dict[str, Any] = {"device_id": torch.device(device)} if backend == "nccl" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout), **nccl_only)
    except Exception as e:  # noqa: BLE001 - the launcher's environment points at nothing that answers
        if signals.seen():  # Ctrl-C while waiting for the others, turned into an error on the way
            raise KeyboardInterrupt from None
        raise RunError(f"rank {rank} could not join the process group at {os.environ.get('MASTER_ADDR')}:"
                       f"{os.environ.get('MASTER_PORT')} ({explain(e)}); under torchrun, is every rank "
                       "started? Outside it, RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT may be left over "
                       "from an earlier job") from None


def abort_group() -> None:
    with contextlib.suppress(Exception):  # the group is already broken; its end is all we want
        if dist.is_initialized():
            dist.destroy_process_group()


def all_max(value: float, device: torch.device) -> float:
    """The largest of every rank's `value`: what each rank decides from, so that all decide alike."""
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def time_allreduce(nbytes: int, device: torch.device, sync: Callable[[], None], repeats: int = 5) -> float:
    """Median milliseconds of one all-reduce of `nbytes` of float32, as DDP's buckets carry the gradients."""
    if not nbytes:
        return 0.0
    buffer = torch.zeros(max(1, nbytes // 4), dtype=torch.float32, device=device)
    times = []
    for _ in range(repeats + 1):
        sync()
        start = time.perf_counter()
        dist.all_reduce(buffer)
        synchronize(str(device))
        times.append(time.perf_counter() - start)
    return 1e3 * all_max(statistics.median(times[1:]), device)
