"""`bench` across processes, GPUs and nodes: one rank's work, on torch.distributed with DDP.

Every rank runs the same code, started by torch's elastic launcher (`bench
--nproc N` from Python, or torchrun across nodes): it joins the process group
from the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK, ...: `group`),
builds the model and wraps it in DistributedDataParallel, and times its
train_step and forward_backward with bench's own steps, in interleaved rounds
(`interleaved`). When a rank fails, dies or hangs, the survivors say which
(`failures`); rank 0 returns the job's result (`result`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel

from ...core import signals
from ...core.enums import Device, DType, Mode
from ...training.config import BenchConfig, settings
from ...training.devices import device_name, synchronize
from ...training.steps import plan
from ...training.targets import make_targets
from ..result import BenchResult, ModeResult
from ..runners import RUNNERS, BenchSetup
from .failures import JobError, Progress, RankFailure, inject_fault, one_line, report_failure
from .gradients import differing_gradients, unused_parameters
from .group import DistOptions, abort_group, backend_for, in_launcher, join, rank_device, time_allreduce
from .interleaved import interleaved_noisy, interleaved_time, job_figures
from .result import DistResult, RankResult, from_dict

# the rank's entry, and what the CLI and the report take from here with it
__all__ = ["DDP_MODES", "DistOptions", "DistResult", "RankFailure", "backend_for", "from_dict", "in_launcher",
           "worker"]

DDP_MODES = (Mode.FORWARD_BACKWARD, Mode.TRAIN_STEP)


@dataclass
class Rank:
    """This process's place in the job."""

    rank: int
    world: int
    local_rank: int
    device: str  # "cuda:N" or "cpu"
    backend: str
    progress: Progress

    def sync(self) -> None:
        """The device's queue drained, then every rank here."""
        synchronize(self.device)
        dist.barrier()


@record
def worker(model: Any, batch: int, config: BenchConfig, options: DistOptions) -> dict[str, Any] | None:
    """One rank's work, started by the elastic launcher (from `--nproc`, or torchrun). Rank 0 returns the
    job's result as a dict; the others return None. A failure raises RankFailure naming the culprit (the
    launcher reads it from the error file `@record` writes; under torchrun the reporting rank prints it)."""
    rank, world, local_rank = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        signals.guard_rank()  # again: torch's spawn wrapper replaced the parent-death signal with its own
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    device = Device(config.device).value
    me = Rank(rank, world, local_rank, rank_device(device, local_rank), backend_for(device, options.backend),
              Progress(rank, world))
    threads = config.threads or max(1, (os.cpu_count() or 1) // local_world)
    torch.set_num_threads(threads)
    inject_fault("start", rank)
    join(me.backend, options.timeout, me.device, rank, one_line)
    me.progress.attach()
    signals.raise_on_terminate()
    try:
        me.progress.at("building the model")
        inject_fault("after_init", rank)
        result = _work(model, batch, config.replace(threads=threads, repeat=1), options, me)
        me.progress.at("leaving")
        dist.barrier()  # leave together: no rank tears the group down while another still reads from it
    except (Exception, signals.Terminated) as e:
        if world == 1 or me.progress.store is None:
            raise
        raise report_failure(e, me.progress) from None
    finally:
        abort_group()
    return result


def _work(model: Any, batch: int, config: BenchConfig, options: DistOptions, me: Rank) -> dict[str, Any] | None:
    setup = _rank_setup(model, batch, config, me)
    plain = setup.module
    ddp, unused, ignored = _wrap(setup, options, me)
    assert setup.raw is not None and setup.built is not None
    reduced = [p for n, p in setup.raw.named_parameters() if p.requires_grad and n not in ignored]
    allreduce_bytes = sum(p.numel() * p.element_size() for p in reduced)
    me.progress.at("checking gradients after a synchronised step")
    differ = differing_gradients(setup, me.world)
    results, own, job = _time_modes(setup, ddp, plain, me)
    me.progress.at("timing one all-reduce")
    allreduce_ms = time_allreduce(allreduce_bytes, torch.device(me.device), me.sync)
    ranks: list[Any] = [None] * me.world
    mine = RankResult(me.rank, me.local_rank, socket.gethostname(), me.device, torch.get_num_threads(), own)
    me.progress.at("gathering the results")
    dist.all_gather_object(ranks, asdict(mine))
    if me.rank != 0:
        return None
    return asdict(DistResult(_bench_result(setup, results, me.device), me.world, me.backend,
                             [RankResult(**r) for r in ranks], me.world * batch, allreduce_bytes, allreduce_ms,
                             options.bucket_mb, not differ, job, differ, unused, ignored))


def _rank_setup(model: Any, batch: int, config: BenchConfig, me: Rank) -> BenchSetup:
    """The model built as bench builds it, frozen by the plan, with this rank's own random data on its device."""
    device = torch.device(me.device)
    setup = BenchSetup(model, batch, config).build()
    assert setup.built is not None
    if me.device.startswith("cuda"):
        torch.cuda.set_device(device)
    torch.manual_seed(me.rank)  # each rank its own data, as in training: equal gradients come from the all-reduce
    setup.inputs = tuple(x.to(device) for x in setup.built.example_inputs(batch, random=True))
    if config.channels_last:
        setup.inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
                             for x in setup.inputs)
    setup.target = make_targets(setup.built, setup.inputs, seed=me.rank)
    setup.set_frozen(config.freezing)
    return setup


def _wrap(setup: BenchSetup, options: DistOptions, me: Rank) -> tuple[DistributedDataParallel, list[str], list[str]]:
    """The model in DDP, which then runs every step: (DDP, trainable parameters without a gradient, parameters
    DDP leaves out). Unused parameters are a job error unless DDP is told to look for them."""
    unused = unused_parameters(setup)
    if unused and not options.find_unused_parameters:
        raise JobError(f"{len(unused)} trainable parameter(s) get no gradient in a step: {', '.join(unused[:8])}"
                       + (f" and {len(unused) - 8} more" if len(unused) > 8 else "")
                       + "; DDP needs every trainable parameter used in each step: freeze them (--freeze), or pass "
                       "--find-unused-parameters (DDP's find_unused_parameters=True, slower)")
    bucket: dict[str, Any] = {"bucket_cap_mb": options.bucket_mb} if options.bucket_mb else {}
    me.progress.at("wrapping the model in DDP")
    ddp = DistributedDataParallel(setup.raw, device_ids=[me.local_rank] if me.backend == "nccl" else None,
                                  find_unused_parameters=options.find_unused_parameters, **bucket)
    setup.module = ddp
    return ddp, unused, sorted(getattr(ddp, "parameters_to_ignore", ()) or ())


def _time_modes(setup: BenchSetup, ddp: DistributedDataParallel, plain: Any,
                me: Rank) -> tuple[list[ModeResult], dict[str, dict[str, float]], dict[str, dict[str, Any]]]:
    """Each planned DDP mode timed in interleaved rounds: (the job's results, this rank's own figures, the
    job's paired figures), by mode."""
    config, batch, device = setup.config, setup.batch, torch.device(me.device)
    results: list[ModeResult] = []
    own: dict[str, dict[str, float]] = {}
    job: dict[str, dict[str, Any]] = {}
    for step in plan(config, DDP_MODES, compare=False):
        runner = RUNNERS[step.mode](setup, step.frozen)
        fn = runner.step()

        def unsynced(fn: Callable[[], None] = fn) -> None:
            with ddp.no_sync():
                fn()

        single = RUNNERS[step.mode](setup, step.frozen).step(plain)
        timed = interleaved_time({"ddp": fn, "no_sync": unsynced, "single": single}, config, device, me.rank,
                                 me.sync, me.progress, step.mode.value)
        me.progress.at(f"counting the memory of {step.mode.value}")
        peak = runner.memory(fn)[0] if config.memory else 0
        me.sync()
        figures = job[step.mode.value] = job_figures(timed, me.world, batch)
        own[step.mode.value] = RankResult.figures(timed.own, batch, peak)
        results.append(ModeResult.timed(
            step.mode.value, timed.ddp, batch, runs=len(timed.ddp), peak_memory_bytes=peak,
            noisy=interleaved_noisy(timed, figures), frozen=step.frozen,
            memory_method="tensors" if device.type == "cpu" else "allocator"))
    return results, own, job


def _bench_result(setup: BenchSetup, results: list[ModeResult], rank_device: str) -> BenchResult:
    """Rank 0's run as bench reports one, the job's timings in it."""
    built, config, batch, raw = setup.built, setup.config, setup.batch, setup.raw
    assert built is not None and raw is not None
    threads = torch.get_num_threads()
    return BenchResult(
        model=built.name, source=built.spec.source.value, device=torch.device(rank_device).type,
        device_name=device_name(rank_device), batch=batch, dtype=DType(config.dtype).value,
        input_size=[batch, *built.input_shape], threads=threads, settings=settings(config, threads), peak=None,
        results=results, total_params=sum(p.numel() for p in raw.parameters()),
        trainable_params=sum(p.numel() for p in setup.trainable()), inputs=[s.to_dict() for s in built.inputs],
    )
