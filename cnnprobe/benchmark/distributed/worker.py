"""`bench` across processes, GPUs and nodes: one rank's work, on torch.distributed with DDP.

Every rank runs the same code, started by torch's elastic launcher (`bench
--nproc N` from Python, or torchrun across nodes): it joins the process group
from the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK, ...), builds the
model and wraps it in DistributedDataParallel, and times its train_step and
forward_backward with bench's own steps. Timing is collective and interleaved:
in each round the ranks time one block of the synchronised step, one of the same
step under `no_sync()`, and rank 0 one block of the plain step alone while the
others wait (the one-process baseline), so all three see the same load; after
each block the ranks agree (an all-reduce of the maximum) on the slowest rank's
time, so every rank takes the same decisions and stops together. Efficiency and
exposed communication are paired per round, with a bootstrap interval; a figure
the noise could have made (efficiency above 100%, negative exposed
communication) is flagged, never reported as a result.

When a rank fails, dies or hangs, the survivors say which: every rank keeps its
progress (a count of collectives reached and the phase) in the job's store, and
a failing rank writes its error there; a rank that wrote nothing is dead or
hung, and the one that fell behind is named.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import random
import re
import signal
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

from ...core import signals
from ...core.enums import Device, DType, Mode
from ...core.errors import CnnprobeError, RunError
from ...training.config import BenchConfig, settings
from ...training.devices import device_name, iqr, synchronize, timer_module
from ..result import NOISY, BenchResult, ModeResult
from ..runners import RUNNERS, BenchSetup, ModeRunner

LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
DDP_MODES = (Mode.FORWARD_BACKWARD, Mode.TRAIN_STEP)
BLOCK_SECONDS = 0.05  # a timed block: long enough to time, short enough for many samples
MIN_ROUNDS = 5  # interleaved rounds at least: fewer cannot give an interval
LEVEL = 0.95  # of the bootstrap intervals
GRACE = 2.0  # seconds a failing rank waits for the others' word before it names the culprit
FAULT_ENV = "CNNPROBE_TEST_FAULT"  # tests only: "rank=1:kill:after_init" (kill, exit, hang, raise)
PROGRESS_ENV = "CNNPROBE_PROGRESS_FILE"  # `--nproc`: rank 0 writes its phase here, for the launcher to show
FAULT_POINTS = ("start", "after_init", "timing")

# What the other ranks say when one has died: consequences, not causes.
CONSEQUENCE = re.compile(r"connection closed|connection reset|broken pipe|timed out|timeout|abort|by peer|"
                         r"remote worker|socket|terminated by its launcher", re.IGNORECASE)


@dataclass
class DistOptions:
    """How the ranks talk: the backend, the process group's timeout, DDP's bucket size."""

    backend: str | None = None  # default: nccl on CUDA, gloo on the CPU
    timeout: float = 300.0  # seconds, for init_process_group and every collective
    bucket_mb: float | None = None  # DDP's bucket_cap_mb; None: DDP's own default (25)
    find_unused_parameters: bool = False  # DDP's option: let parameters that get no gradient through


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
    allreduce_bytes: int  # gradient bytes DDP all-reduces per step (the parameters DDP reduces only)
    allreduce_ms: float  # one all-reduce of that many bytes, median
    bucket_mb: float | None
    gradients_match: bool  # after one synchronised step, every rank holds the same gradients
    modes: dict[str, dict[str, Any]] = field(default_factory=dict)  # mode -> the job's figures
    gradients_differ: list[str] = field(default_factory=list)  # parameters whose gradients differ between ranks
    unused_parameters: list[str] = field(default_factory=list)  # trainable, but no gradient (find_unused_parameters)
    # DDP leaves them out (_ddp_params_and_buffers_to_ignore)
    ignored_parameters: list[str] = field(default_factory=list)

    @property
    def headline(self) -> dict[str, Any]:
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
            scaling_efficiency=head.get("scaling_efficiency"),
            scaling_efficiency_interval=head.get("scaling_efficiency_interval"),
            scaling_efficiency_noise=head.get("scaling_efficiency_noise"), comm_exposed_ms=head.get("comm_exposed_ms"),
            comm_exposed_interval_ms=head.get("comm_exposed_interval_ms"),
            comm_exposed_noise=head.get("comm_exposed_noise"),
            comm_exposed_share=head.get("comm_exposed_share"), allreduce_bytes=self.allreduce_bytes,
            allreduce_ms=self.allreduce_ms, allreduce_gbps=self.allreduce_gbps, bucket_mb=self.bucket_mb,
            gradients_match=self.gradients_match, gradients_differ=self.gradients_differ,
            unused_parameters=self.unused_parameters, ignored_parameters=self.ignored_parameters, modes=self.modes,
        )
        return data


class RankFailure(RunError):
    """The job failed: `str()` is the one line that names the culprit; `reporter` says whether this rank is the
    one that prints it (the lowest rank still alive), `exit_code` 143 when the launcher stopped the job."""

    def __init__(self, text: str, reporter: bool, terminated: bool = False) -> None:
        super().__init__(text)
        self.reporter = reporter
        if terminated:
            self.exit_code = signals.TERMINATED_EXIT


class JobError(CnnprobeError):
    """A problem of the model or options that every rank meets alike: said once, naming no rank."""


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


def inject_fault(point: str, rank: int) -> None:
    """The tests' hook: `CNNPROBE_TEST_FAULT=rank=1:kill:after_init` makes rank 1 die by SIGKILL there; `exit`
    leaves by os._exit(7) (no Python error), `hang` sleeps for ever, `raise` raises a ValueError."""
    for item in filter(None, os.environ.get(FAULT_ENV, "").split(",")):
        parts = item.strip().split(":")
        if len(parts) != 3 or parts[0] != f"rank={rank}" or parts[2] != point:
            continue
        if parts[1] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif parts[1] == "exit":
            os._exit(7)
        elif parts[1] == "hang":
            while True:
                time.sleep(3600)
        elif parts[1] == "raise":
            raise ValueError(f"injected fault on rank {rank} at {point}")


class Progress:
    """Where this rank is: a count of the collective points it reached and the phase, in the job's store
    (shared by every rank, kept by the launcher's agent, so it outlives a dead rank)."""

    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world, self.count, self.phase = rank, world, 0, "joining the process group"
        self.store: Any = None
        self.file = os.environ.get(PROGRESS_ENV) if rank == 0 else None

    def attach(self) -> None:
        try:
            self.store = dist.distributed_c10d._get_default_store()
        except Exception:  # noqa: BLE001 - a private API: without it, failures name less
            self.store = None

    def at(self, phase: str) -> None:
        self.count += 1
        self.phase = phase
        if self.store is not None:
            with contextlib.suppress(Exception):  # the store is a witness, never a reason to fail
                self.store.set(f"cnnprobe/at/{self.rank}", f"{self.count} {phase}")
        if self.file:
            try:
                with open(self.file, "w") as f:
                    f.write(phase)
            except OSError:
                self.file = None

    def of(self, rank: int) -> tuple[int, str]:
        """(count, phase) rank `rank` last reported; (0, 'joining the process group') if nothing."""
        with contextlib.suppress(Exception):
            key = f"cnnprobe/at/{rank}"
            if self.store is not None and self.store.check([key]):
                count, _, phase = self.store.get(key).decode().partition(" ")
                return int(count), phase
        return 0, "joining the process group"


def _one_line(error: BaseException) -> str:
    if isinstance(error, signals.Terminated):
        return "terminated by its launcher (SIGTERM)"
    text = " ".join(str(error).split()) or "no message"
    text = re.sub(r"\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", text).split(". This is typically caused")[0]
    if isinstance(error, CnnprobeError):
        return text
    return f"{type(error).__name__}: {text}"


def report_failure(error: BaseException, progress: Progress) -> RankFailure:
    """This rank failed (or saw the job fail). Say so in the store, let the group go (so that ranks blocked in
    a collective with this one notice), wait a moment for the others' word, and name the culprit: the rank
    whose own error started it, else the rank that fell behind or never answered (dead or hung)."""
    term = signals.defer_terminate()
    store, me, world = progress.store, progress.rank, progress.world
    own = _one_line(error)
    consequence = bool(CONSEQUENCE.search(own)) or isinstance(error, signals.Terminated)
    status = "" if consequence else (f"job:{own}" if isinstance(error, JobError) else own)
    with contextlib.suppress(Exception):
        store.set(f"cnnprobe/failed/{me}", status or "-")
    _abort_group()
    statuses = _statuses(store, world, causes_wanted=consequence)
    causes = {r: m for r, m in statuses.items() if m != "-"}
    if causes:
        rank = min(causes)
        message = causes[rank]
        text = message[4:] if message.startswith("job:") else f"rank {rank} failed: {message}"
    else:
        text = _culprits(progress, statuses, own)
    reporter = me == min(statuses, default=me) and _claim(store)
    stopped = isinstance(error, signals.Terminated) or term[0]
    with contextlib.suppress(Exception):
        if reporter:
            store.set("cnnprobe/reported", "1")
        else:  # let the reporter print before this rank's exit makes the launcher stop it
            store.wait(["cnnprobe/reported"], datetime.timedelta(seconds=5))
            time.sleep(0.5)
    if reporter:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the line is about to be printed: let nothing cut it
    return RankFailure(text, reporter, terminated=stopped and not causes and text.startswith("stopped"))


def _claim(store: Any) -> bool:
    """Whether this rank is the first to claim the report (one line, one JSON object, whoever gets there)."""
    try:
        return int(store.add("cnnprobe/reporter", 1)) == 1
    except Exception:  # noqa: BLE001 - no store: say it rather than say nothing
        return True


def _statuses(store: Any, world: int, causes_wanted: bool) -> dict[int, str]:
    """Every rank's word in the store after at most GRACE seconds: its error, or '-' (it saw the failure)."""
    deadline = time.monotonic() + GRACE
    found: dict[int, str] = {}
    while True:
        for r in range(world):
            key = f"cnnprobe/failed/{r}"
            try:
                if r not in found and store.check([key]):
                    found[r] = store.get(key).decode()
            except Exception:  # noqa: BLE001
                return found
        if len(found) == world or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _culprits(progress: Progress, statuses: dict[int, str], own: str) -> str:
    """No rank had an error of its own: name those that never answered, or else those that fell behind."""
    if not statuses:
        return f"rank {progress.rank} failed: {own}"
    where = {r: progress.of(r) for r in range(progress.world)}
    furthest = max(c for c, _ in where.values())
    behind = [r for r, (c, _) in where.items() if c < furthest]
    silent = [r for r in range(progress.world) if r not in statuses]
    culprits = [r for r in silent if r in behind] or silent or behind
    if not culprits:
        return f"stopped: {own} (on every rank)"
    hung = re.search(r"timed out|timeout", own, re.IGNORECASE)
    verb = "stopped answering" if hung else "died"
    names = ", ".join(f"rank {r} {verb} {_during(where[r][1])}" for r in culprits)
    seen_by = min(statuses)
    return f"{names} (no error from it; rank {seen_by} saw: {own if seen_by == progress.rank else 'the job fail'})"


def _during(phase: str) -> str:
    return f"while {phase}"


def _abort_group() -> None:
    with contextlib.suppress(Exception):  # the group is already broken; its end is all we want
        if dist.is_initialized():
            dist.destroy_process_group()


def _all_max(value: float, device: torch.device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


@dataclass
class Interleaved:
    """Per-round block times (seconds per step) of the three series, timed in turn in each round."""

    ddp: list[float] = field(default_factory=list)  # the slowest rank's
    no_sync: list[float] = field(default_factory=list)  # the slowest rank's
    single: list[float] = field(default_factory=list)  # rank 0 alone, the plain model
    own: list[float] = field(default_factory=list)  # this rank's own synchronised step


def interleaved_time(fns: dict[str, Callable[[], None]], config: BenchConfig, device: torch.device, rank: int,
                     sync: Callable[[], None], progress: Progress, label: str) -> Interleaved:
    """Warm-up, then rounds of one block each of the synchronised step, the no_sync step and (rank 0 alone)
    the plain step, until every series' median is stable (at least MIN_ROUNDS rounds and --min-time), or
    --max-time. Every decision is made from all-reduced numbers, so every rank takes it alike."""
    timers, number = {}, {}
    for name, fn in fns.items():
        here = name != "single" or rank == 0
        progress.at(f"warming up {label}{'' if name == 'ddp' else ' (' + name + ')'}")
        if here:
            for _ in range(config.warmup):
                fn()
        timers[name] = timer_module().Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
        sync()
        once = _all_max(timers[name].timeit(1).median if here else 0.0, device)
        number[name] = max(1, int(BLOCK_SECONDS / max(once, 1e-6)))
    out = Interleaved()
    max_time = config.max_time or 10 * config.min_time
    spent = 0.0
    while True:
        progress.at(f"timing {label} (round {len(out.ddp) + 1})")
        inject_fault("timing", rank)
        for name, series in (("ddp", out.ddp), ("no_sync", out.no_sync), ("single", out.single)):
            sync()
            mine = timers[name].timeit(number[name]).median if name != "single" or rank == 0 else 0.0
            block = _all_max(mine, device)
            if name == "ddp":
                out.own.append(mine)
            series.append(block)
            spent += block * number[name]
        rounds = len(out.ddp)
        stable = rounds >= MIN_ROUNDS and all(iqr(s) <= NOISY * statistics.median(s)
                                              for s in (out.ddp, out.no_sync, out.single))
        if (spent >= config.min_time and stable) or (spent >= max_time and rounds >= 2):
            return out


def interval(values: list[float], level: float = LEVEL, draws: int = 2000) -> tuple[float, float]:
    """A percentile-bootstrap interval of the median of `values` (seeded: the same numbers, the same interval)."""
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    tail = (1 - level) / 2
    return medians[int(tail * (draws - 1))], medians[int((1 - tail) * (draws - 1))]


def job_figures(t: Interleaved, world: int, batch: int) -> dict[str, Any]:
    """The job's figures from paired rounds: efficiency = the plain step over the synchronised one in the same
    round; exposed communication = the synchronised step less the no_sync step in the same round."""
    median = statistics.median(t.ddp)
    efficiency = [s / d for s, d in zip(t.single, t.ddp, strict=True)]
    exposed = [d - q for d, q in zip(t.ddp, t.no_sync, strict=True)]
    eff, eff_lo_hi = statistics.median(efficiency), interval(efficiency)
    exp, exp_lo_hi = statistics.median(exposed), interval(exposed)
    eff_noise = eff > 1.0
    return {
        "median_ms": 1e3 * median, "no_sync_ms": 1e3 * statistics.median(t.no_sync),
        "single_process_ms": 1e3 * statistics.median(t.single), "aggregate_samples_per_s": world * batch / median,
        "scaling_efficiency": None if eff_noise else eff,
        "scaling_efficiency_measured": eff,
        "scaling_efficiency_interval": list(eff_lo_hi),
        "scaling_efficiency_noise": eff_noise,
        "comm_exposed_ms": 1e3 * exp, "comm_exposed_interval_ms": [1e3 * exp_lo_hi[0], 1e3 * exp_lo_hi[1]],
        "comm_exposed_noise": exp < 0,
        "comm_exposed_share": exp / median, "rounds": len(t.ddp),
        "iqr_ms": {"ddp": 1e3 * iqr(t.ddp), "no_sync": 1e3 * iqr(t.no_sync), "single_process": 1e3 * iqr(t.single)},
    }


def is_noisy(t: Interleaved, figures: dict[str, Any]) -> bool:
    """Noisy if any timing a figure is made of is (the synchronised step, the no_sync step, the one-process
    step), if too few rounds back the interval, or if a figure is one noise alone could have made."""
    spread = any(iqr(s) > NOISY * statistics.median(s) for s in (t.ddp, t.no_sync, t.single))
    return spread or len(t.ddp) < MIN_ROUNDS or figures["scaling_efficiency_noise"] or figures["comm_exposed_noise"]


def gradient_checksum(module: torch.nn.Module) -> torch.Tensor:
    """Every gradient reduced to two float64 numbers (sum and a position-weighted sum): equal gradients
    give equal checksums, bit for bit."""
    parts = [c for _, c in parameter_checksums(module)]
    return torch.cat(parts) if parts else torch.zeros(2, dtype=torch.float64)


def parameter_checksums(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, two float64 numbers) for each parameter with a gradient."""
    out = []
    for name, p in module.named_parameters():
        if p.grad is not None:
            g = p.grad.detach().double().flatten()
            weights = torch.arange(1, g.numel() + 1, dtype=torch.float64, device=g.device)
            out.append((name, torch.stack([g.sum(), (g * weights).sum()]).cpu()))
    return out


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
    job's result as a dict; the others return None. A failure raises RankFailure naming the culprit (the
    launcher reads it from the error file `@record` writes; under torchrun the reporting rank prints it)."""
    rank, world, local_rank = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        signals.guard_rank()  # again: torch's spawn wrapper replaced the parent-death signal with its own
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    device = Device(config.device).value
    rank_device = _rank_device(device, local_rank)
    threads = config.threads or max(1, (os.cpu_count() or 1) // local_world)
    torch.set_num_threads(threads)
    backend = backend_for(device, options.backend)
    progress = Progress(rank, world)
    inject_fault("start", rank)
    try:
        nccl_only: dict[str, Any] = {"device_id": torch.device(rank_device)} if backend == "nccl" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=options.timeout), **nccl_only)
    except Exception as e:  # noqa: BLE001 - the launcher's environment points at nothing that answers
        if signals.seen():  # Ctrl-C while waiting for the others, turned into an error on the way
            raise KeyboardInterrupt from None
        raise RunError(f"rank {rank} could not join the process group at {os.environ.get('MASTER_ADDR')}:"
                       f"{os.environ.get('MASTER_PORT')} ({_one_line(e)}); under torchrun, is every rank "
                       "started? Outside it, RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT may be left over "
                       "from an earlier job") from None
    progress.attach()
    signals.raise_on_terminate()
    try:
        progress.at("building the model")
        inject_fault("after_init", rank)
        result = _work(model, batch, config.replace(threads=threads, repeat=1), options, rank, world, local_rank,
                       rank_device, backend, progress)
        progress.at("leaving")
        dist.barrier()  # leave together: no rank tears the group down while another still reads from it
    except (Exception, signals.Terminated) as e:
        if world == 1 or progress.store is None:
            raise
        raise report_failure(e, progress) from None
    finally:
        _abort_group()
    return result


def _work(model: Any, batch: int, config: BenchConfig, options: DistOptions, rank: int, world: int, local_rank: int,
          rank_device: str, backend: str, progress: Progress) -> dict[str, Any] | None:
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
    plain = setup.module
    unused = _unused_parameters(setup, config)
    if unused and not options.find_unused_parameters:
        raise JobError(f"{len(unused)} trainable parameter(s) get no gradient in a step: {', '.join(unused[:8])}"
                       + (f" and {len(unused) - 8} more" if len(unused) > 8 else "")
                       + "; DDP needs every trainable parameter used in each step: freeze them (--freeze), or pass "
                       "--find-unused-parameters (DDP's find_unused_parameters=True, slower)")
    bucket: dict[str, Any] = {"bucket_cap_mb": options.bucket_mb} if options.bucket_mb else {}
    progress.at("wrapping the model in DDP")
    ddp = DistributedDataParallel(setup.raw, device_ids=[local_rank] if backend == "nccl" else None,
                                  find_unused_parameters=options.find_unused_parameters, **bucket)
    setup.module = ddp
    ignored = sorted(getattr(ddp, "parameters_to_ignore", ()) or ())
    reduced = [p for n, p in setup.raw.named_parameters() if p.requires_grad and n not in ignored]
    allreduce_bytes = sum(p.numel() * p.element_size() for p in reduced)
    trainable = setup.trainable()

    def sync() -> None:
        synchronize(rank_device)
        dist.barrier()

    # one synchronised step, then the gradients every rank holds, compared parameter by parameter
    progress.at("checking gradients after a synchronised step")
    RUNNERS[Mode.FORWARD_BACKWARD](setup, config.freezing).step()()
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, parameter_checksums(setup.raw))
    differ = sorted({name for other in gathered for (name, c), (_, c0) in zip(other, gathered[0], strict=False)
                     if not torch.equal(c, c0)} | ({"(the parameters with gradients differ)"}
                                                   if len({len(g) for g in gathered}) > 1 else set()))

    own: dict[str, dict[str, float]] = {}
    job: dict[str, dict[str, Any]] = {}
    mode_results: list[ModeResult] = []
    for mode in (m for m in config.modes if m in DDP_MODES):
        runner: ModeRunner = RUNNERS[mode](setup, config.freezing)
        fn = runner.step()
        single_fn = RUNNERS[mode](setup, config.freezing).step(plain)

        def unsynced(fn: Callable[[], None] = fn) -> None:
            with ddp.no_sync():
                fn()

        timed = interleaved_time({"ddp": fn, "no_sync": unsynced, "single": single_fn}, config, device, rank, sync,
                                 progress, mode.value)
        progress.at(f"counting the memory of {mode.value}")
        peak = runner.memory(fn)[0] if config.memory else 0
        sync()
        figures = job_figures(timed, world, batch)
        mine = timed.own
        own[mode.value] = {"median_ms": 1e3 * statistics.median(mine), "iqr_ms": 1e3 * iqr(mine),
                           "samples_per_s": batch / statistics.median(mine), "peak_memory_bytes": peak}
        job[mode.value] = figures
        median = statistics.median(timed.ddp)
        mode_results.append(ModeResult(
            mode=mode.value, median_ms=1e3 * median, iqr_ms=1e3 * iqr(timed.ddp), runs=len(timed.ddp),
            samples_per_s=batch / median, peak_memory_bytes=peak, noisy=is_noisy(timed, figures),
            frozen=config.freezing, memory_method="tensors" if device.type == "cpu" else "allocator",
            samples_ms=[1e3 * s for s in timed.ddp]))
    progress.at("timing one all-reduce")
    allreduce_ms = _time_allreduce(allreduce_bytes, device, sync)
    ranks: list[Any] = [None] * world
    me = RankResult(rank, local_rank, socket.gethostname(), rank_device, torch.get_num_threads(), own)
    progress.at("gathering the results")
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
                             allreduce_ms, options.bucket_mb, not differ, job, differ, unused, ignored))


def _unused_parameters(setup: BenchSetup, config: BenchConfig) -> list[str]:
    """Trainable parameters that get no gradient from one forward-backward of the plain model (before DDP, which
    would fail on them with a message that names none)."""
    assert setup.raw is not None
    RUNNERS[Mode.FORWARD_BACKWARD](setup, config.freezing).step()()
    unused = [n for n, p in setup.raw.named_parameters() if p.requires_grad and p.grad is None]
    setup.raw.zero_grad(set_to_none=True)
    return unused


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
    from ..result import Repeat

    run = data["run"]
    results = [ModeResult(**{**m, "repeats": [Repeat(**r) for r in m.get("repeats", [])]}) for m in run["results"]]
    return DistResult(**{**data, "run": BenchResult(**{**run, "results": results}),
                         "per_rank": [RankResult(**r) for r in data["per_rank"]]})
