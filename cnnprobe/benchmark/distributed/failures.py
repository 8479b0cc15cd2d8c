"""When a rank fails, dies or hangs, the survivors say which.

Every rank keeps its progress (a count of collectives reached and the phase) in
the job's store, and a failing rank writes its error there; a rank that wrote
nothing is dead or hung, and the one that fell behind is named. The tests make
ranks fail on purpose through `inject_fault`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import signal
import time
from typing import Any

import torch.distributed as dist

from ...core import signals
from ...core.errors import CnnprobeError, RunError
from .group import abort_group

GRACE = 2.0  # seconds a failing rank waits for the others' word before it names the culprit
FAULT_ENV = "CNNPROBE_TEST_FAULT"  # tests only: "rank=1:kill:after_init" (kill, exit, hang, raise)
PROGRESS_ENV = "CNNPROBE_PROGRESS_FILE"  # `--nproc`: rank 0 writes its phase here, for the launcher to show
FAULT_POINTS = ("start", "after_init", "timing")

# What the other ranks say when one has died: consequences, not causes.
CONSEQUENCE = re.compile(r"connection closed|connection reset|broken pipe|timed out|timeout|abort|by peer|"
                         r"remote worker|socket|terminated by its launcher", re.IGNORECASE)


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


def one_line(error: BaseException) -> str:
    """An error as one line: torch's source locations and advice left out, the type named unless it is ours."""
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
    own = one_line(error)
    consequence = bool(CONSEQUENCE.search(own)) or isinstance(error, signals.Terminated)
    status = "" if consequence else (f"job:{own}" if isinstance(error, JobError) else own)
    with contextlib.suppress(Exception):
        store.set(f"cnnprobe/failed/{me}", status or "-")
    abort_group()
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
