"""`bench` across processes, GPUs and nodes: one rank's work, on torch.distributed with DDP.

Every rank runs the same code, started by torch's elastic launcher (`bench
--nproc N` from Python, or torchrun across nodes): it joins the process group
from the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK, ...), builds the
model and wraps it in DistributedDataParallel, and times its train_step and
forward_backward with bench's own steps. Timing is collective: ranks run the
same number of steps in blocks, and after each block they agree (an all-reduce
of the maximum) on the slowest rank's time, so a step's time is the slowest
rank's and every rank stops together. Beside the synchronised step the same
step runs under `no_sync()` (the exposed communication is the difference), one
all-reduce of the gradients' size is timed (its bandwidth), and rank 0 times the
plain step alone on its device while the others wait (the scaling efficiency).
"""

from __future__ import annotations

import datetime
import os
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel

from .benchconfig import BenchConfig, settings
from .benchresult import NOISY, BenchResult, ModeResult
from .devices import device_name, iqr, synchronize, timer_module
from .enums import Device, DType, Mode
from .errors import CnnprobeError
from .runners import RUNNERS, BenchSetup, ModeRunner

LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
DDP_MODES = (Mode.FORWARD_BACKWARD, Mode.TRAIN_STEP)
BLOCK_SECONDS = 0.05  # a timed block: long enough to time, short enough for many samples


@dataclass
class DistOptions:
    """How the ranks talk: the backend, the process group's timeout, DDP's bucket size."""

    backend: str | None = None  # default: nccl on CUDA, gloo on the CPU
    timeout: float = 300.0  # seconds, for init_process_group and every collective
    bucket_mb: float | None = None  # DDP's bucket_cap_mb; None: DDP's own default (25)


@dataclass
class RankResult:
    """One rank's own view of each mode."""

    rank: int
    local_rank: int
    host: str
    device: str
    threads: int
    modes: dict[str, dict[str, float]] = field(default_factory=dict)  # mode -> median_ms, iqr_ms, samples/s, memory


@dataclass
class DistResult:
    """What `bench --nproc/--ddp` reports: rank 0's result with the job's figures beside it."""

    run: BenchResult
    world_size: int
    backend: str
    per_rank: list[RankResult]
    global_batch: int
    allreduce_bytes: int  # gradient bytes DDP all-reduces per step (trainable parameters only)
    allreduce_ms: float  # one all-reduce of that many bytes, median
    bucket_mb: float | None
    gradients_match: bool  # after one synchronised step, every rank holds the same gradients
    modes: dict[str, dict[str, float]] = field(default_factory=dict)  # mode -> the job's figures

    @property
    def headline(self) -> dict[str, float]:
        """The train_step's figures where there is one (the JSON's top-level keys)."""
        return self.modes.get(Mode.TRAIN_STEP.value) or next(iter(self.modes.values()), {})

    @property
    def allreduce_gbps(self) -> float | None:
        return self.allreduce_bytes / (self.allreduce_ms / 1e3) / 1e9 if self.allreduce_ms else None

    def to_dict(self) -> dict[str, Any]:
        data = self.run.to_dict()
        head = self.headline
        data.update(
            world_size=self.world_size, backend=self.backend, per_rank=[asdict(r) for r in self.per_rank],
            global_batch=self.global_batch, aggregate_samples_per_s=head.get("aggregate_samples_per_s"),
            scaling_efficiency=head.get("scaling_efficiency"), comm_exposed_ms=head.get("comm_exposed_ms"),
            comm_exposed_share=head.get("comm_exposed_share"), allreduce_bytes=self.allreduce_bytes,
            allreduce_ms=self.allreduce_ms, allreduce_gbps=self.allreduce_gbps, bucket_mb=self.bucket_mb,
            gradients_match=self.gradients_match, modes=self.modes,
        )
        return data


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


def _all_max(value: float, device: torch.device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def collective_time(fn: Callable[[], None], config: BenchConfig, device: torch.device,
                    sync: Callable[[], None]) -> tuple[list[float], list[float]]:
    """Warm-up, then blocks of steps until the slowest rank's median is stable: (the slowest rank's time per
    step of each block, this rank's own). Blocks start together (a barrier, outside the timed region) and
    each block's time is the slowest rank's (an all-reduce of the maximum), so every rank takes the same
    decisions from the same numbers: they run the same steps and stop together."""
    for _ in range(config.warmup):
        fn()
    run = timer_module().Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    sync()
    once = _all_max(run.timeit(1).median, device)
    number = max(1, int(BLOCK_SECONDS / max(once, 1e-6)))
    slowest: list[float] = []
    own: list[float] = []
    max_time = config.max_time or 10 * config.min_time
    spent = 0.0
    while True:
        sync()
        mine = run.timeit(number).median
        block = _all_max(mine, device)
        own.append(mine)
        slowest.append(block)
        spent += block * number
        stable = len(slowest) >= 3 and iqr(slowest) <= NOISY * statistics.median(slowest)
        if (spent >= config.min_time and stable) or spent >= max_time:
            return slowest, own


def gradient_checksum(module: torch.nn.Module) -> torch.Tensor:
    """Every gradient reduced to two float64 numbers (sum and a position-weighted sum): equal gradients
    give equal checksums, bit for bit."""
    parts = []
    for p in module.parameters():
        if p.grad is not None:
            g = p.grad.detach().double().flatten()
            parts += [g.sum(), (g * torch.arange(1, g.numel() + 1, dtype=torch.float64, device=g.device)).sum()]
    return torch.stack(parts) if parts else torch.zeros(2, dtype=torch.float64)


def _rank_device(device: str, local_rank: int) -> str:
    if device != "cuda":
        return "cpu"
    if local_rank >= torch.cuda.device_count():
        raise CnnprobeError(f"local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()}")
    torch.cuda.set_device(local_rank)
    return f"cuda:{local_rank}"


@record
def worker(model: Any, batch: int, config: BenchConfig, options: DistOptions) -> dict[str, Any] | None:
    """One rank's work, started by the elastic launcher (from `--nproc`, or torchrun). Rank 0 returns the
    job's result as a dict; the others return None. Errors are written to the launcher's error file."""
    rank, world, local_rank = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    device = Device(config.device).value
    rank_device = _rank_device(device, local_rank)
    threads = config.threads or max(1, (os.cpu_count() or 1) // local_world)
    torch.set_num_threads(threads)
    backend = backend_for(device, options.backend)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=options.timeout),
                            **({"device_id": torch.device(rank_device)} if backend == "nccl" else {}))
    try:
        result = _work(model, batch, config.replace(threads=threads, repeat=1), options, rank, world, local_rank,
                       rank_device, backend)
        dist.barrier()  # leave together: no rank tears the group down while another still reads from it
    finally:
        dist.destroy_process_group()
    return result


def _work(model: Any, batch: int, config: BenchConfig, options: DistOptions, rank: int, world: int, local_rank: int,
          rank_device: str, backend: str) -> dict[str, Any] | None:
    device = torch.device(rank_device)
    setup = BenchSetup(model, batch, config).build()
    assert setup.raw is not None and setup.built is not None
    if rank_device.startswith("cuda"):
        torch.cuda.set_device(device)
    torch.manual_seed(rank)  # each rank its own data, as in training: equal gradients come from the all-reduce
    setup.inputs = tuple(x.to(device) for x in setup.built.example_inputs(batch, random=True))
    if config.channels_last:
        setup.inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
                             for x in setup.inputs)
    setup.target = torch.randint(0, 1000, (batch,), device=device)
    setup.set_frozen(config.freezing)
    bucket = {"bucket_cap_mb": options.bucket_mb} if options.bucket_mb else {}
    ddp = DistributedDataParallel(setup.raw, device_ids=[local_rank] if backend == "nccl" else None, **bucket)
    plain = setup.module
    setup.module = ddp
    trainable = setup.trainable()
    allreduce_bytes = sum(p.numel() * p.element_size() for p in trainable)

    def sync() -> None:
        synchronize(rank_device)
        dist.barrier()

    # one synchronised step, then the gradients every rank holds, compared on rank 0
    ForwardBackwardRunner = RUNNERS[Mode.FORWARD_BACKWARD]
    ForwardBackwardRunner(setup, config.freezing).step()()
    checksums = [torch.zeros(0)] * world
    dist.all_gather_object(checksums, gradient_checksum(setup.raw).cpu())
    gradients_match = all(torch.equal(checksums[0], c) for c in checksums)

    own: dict[str, dict[str, float]] = {}
    job: dict[str, dict[str, float]] = {}
    mode_results: list[ModeResult] = []
    for mode in (m for m in config.modes if m in DDP_MODES):
        runner: ModeRunner = RUNNERS[mode](setup, config.freezing)
        fn = runner.step()
        slowest, mine = collective_time(fn, config, device, sync)

        def unsynced(fn: Callable[[], None] = fn) -> None:
            with ddp.no_sync():
                fn()

        quiet, _ = collective_time(unsynced, config, device, sync)
        peak = runner.memory(fn)[0] if config.memory else 0
        sync()
        single = _single_process(setup, plain, mode, config, rank, device) if rank == 0 else 0.0
        sync()
        median = statistics.median(slowest)
        no_sync = statistics.median(quiet)
        exposed = median - no_sync
        single = _broadcast(single, device)
        own[mode.value] = {"median_ms": 1e3 * statistics.median(mine), "iqr_ms": 1e3 * iqr(mine),
                           "samples_per_s": batch / statistics.median(mine), "peak_memory_bytes": peak}
        job[mode.value] = {
            "median_ms": 1e3 * median, "no_sync_ms": 1e3 * no_sync, "comm_exposed_ms": 1e3 * exposed,
            "comm_exposed_share": exposed / median, "single_process_ms": 1e3 * single,
            "aggregate_samples_per_s": world * batch / median,
            "scaling_efficiency": (world * batch / median) / (world * batch / single) if single else None,
        }
        mode_results.append(ModeResult(
            mode=mode.value, median_ms=1e3 * median, iqr_ms=1e3 * iqr(slowest), runs=len(slowest),
            samples_per_s=batch / median, peak_memory_bytes=peak, noisy=iqr(slowest) > NOISY * median,
            frozen=config.freezing, memory_method="tensors" if device.type == "cpu" else "allocator",
            samples_ms=[1e3 * s for s in slowest]))
    allreduce_ms = _time_allreduce(allreduce_bytes, device, sync)
    ranks: list[Any] = [None] * world
    me = RankResult(rank, local_rank, socket.gethostname(), rank_device, torch.get_num_threads(), own)
    dist.all_gather_object(ranks, asdict(me))
    if rank != 0:
        return None
    built = setup.built
    run = BenchResult(
        model=built.name, source=built.spec.source.value, device=device.type, device_name=device_name(rank_device),
        batch=batch, dtype=DType(config.dtype).value, input_size=[batch, *built.input_shape],
        threads=torch.get_num_threads(), settings=settings(config, torch.get_num_threads()), peak=None,
        results=mode_results, total_params=sum(p.numel() for p in setup.raw.parameters()),
        trainable_params=sum(p.numel() for p in trainable), inputs=[s.to_dict() for s in built.inputs],
    )
    return asdict(DistResult(run, world, backend, [RankResult(**r) for r in ranks], world * batch, allreduce_bytes,
                             allreduce_ms, options.bucket_mb, gradients_match, job))


def _single_process(setup: BenchSetup, plain: Any, mode: Mode, config: BenchConfig, rank: int,
                    device: torch.device) -> float:
    """Rank 0 alone, the plain model (no DDP) at the same per-rank batch on its device: the reference for
    scaling efficiency. The other ranks wait at a barrier meanwhile."""
    ddp, setup.module = setup.module, plain
    try:
        runner = RUNNERS[mode](setup, config.freezing)
        fn = runner.step()
        for _ in range(config.warmup):
            fn()
        median, *_ = runner.time(fn)
        return median
    finally:
        setup.module = ddp


def _broadcast(value: float, device: torch.device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def _time_allreduce(nbytes: int, device: torch.device, sync: Callable[[], None], repeats: int = 5) -> float:
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
    return 1e3 * _all_max(statistics.median(times[1:]), device)


def from_dict(data: dict[str, Any]) -> DistResult:
    """A DistResult again from the dict a worker returned through the launcher."""
    from .benchresult import Repeat

    run = data["run"]
    results = [ModeResult(**{**m, "repeats": [Repeat(**r) for r in m.get("repeats", [])]}) for m in run["results"]]
    return DistResult(**{**data, "run": BenchResult(**{**run, "results": results}),
                         "per_rank": [RankResult(**r) for r in data["per_rank"]]})
