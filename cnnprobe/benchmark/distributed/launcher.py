"""`bench --nproc N`: N local ranks started through torch's elastic launcher, from Python.

The launcher (`torch.distributed.launcher.api.elastic_launch`, what torchrun
runs) owns process start, the rendezvous and failure propagation: a rank that
fails ends the whole job (no restarts), its error is read from the error file
its `@record`-decorated worker writes, and the other ranks are stopped, never
left hanging. Ctrl-C stops every rank.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from ...core.enums import Device
from ...core.errors import CnnprobeError, RunError
from ...core.formatting import nbytes
from ...core.signals import LAUNCHER_PID_ENV, Terminated
from ...memory import host
from ...training.config import BenchConfig
from .failures import CONSEQUENCE, PROGRESS_ENV
from .group import DistOptions
from .result import DistResult, from_dict
from .worker import DDP_MODES, worker

MAX_LOCAL_RANKS = 256


def check_nproc(nproc: int, device: str) -> None:
    if isinstance(nproc, bool) or not isinstance(nproc, int) or not 1 <= nproc <= MAX_LOCAL_RANKS:
        raise CnnprobeError(f"--nproc must be an integer from 1 to {MAX_LOCAL_RANKS}, got {nproc}")
    if device == "cuda" and nproc > torch.cuda.device_count():
        raise CnnprobeError(f"--nproc {nproc} with --device cuda: this machine has {torch.cuda.device_count()} GPU(s); "
                            "one rank per GPU")


def free_port(port: int | None) -> int:
    """The port the rendezvous listens on: the one asked for, if nothing else holds it, or a free one."""
    if port is not None and not 0 < port < 65536:
        raise CnnprobeError(f"--port must be from 1 to 65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port or 0))
        except OSError as e:
            raise CnnprobeError(f"--port {port} is in use ({e.strerror}); choose another or leave it out") from None
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _quiet_launcher():
    """The agent logs its every step; what matters reaches the user as a result or one error line."""
    prefixes = ("torch.distributed.elastic", "torch.distributed.launcher", "torch.distributed.run",
                "torch.multiprocessing")
    names = [*prefixes, *(n for n in logging.root.manager.loggerDict if n.startswith(prefixes))]
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def launch(model: Any, batch: int, config: BenchConfig, nproc: int, options: DistOptions,
           port: int | None = None) -> DistResult:
    """Run the DDP bench on `nproc` local ranks and return rank 0's result."""
    device = Device(config.device).value
    check_nproc(nproc, device)
    check_memory(model, batch, config, nproc)
    with tempfile.TemporaryDirectory(prefix=f"cnnprobe-ranks-{os.getpid()}-") as logs, _reaper(logs):
        launch_config = LaunchConfig(
            min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"cnnprobe-{uuid.uuid4().hex[:8]}",
            rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{free_port(port)}", max_restarts=0,
            monitor_interval=0.1, start_method="spawn",
            logs_specs=DefaultLogsSpecs(log_dir=logs, redirects=Std.ALL),  # ranks print nothing on our terminal
        )
        progress = Path(logs) / "progress"
        env = {"OMP_NUM_THREADS": str(config.threads or max(1, (os.cpu_count() or 1) // nproc)),
               LAUNCHER_PID_ENV: str(os.getpid()), PROGRESS_ENV: str(progress)}
        try:
            terminal = sys.stderr.isatty()
            with _quiet_launcher(), _environment(env), _errorfiles_in(logs), _ranks_stderr(logs) as own, \
                    _show_progress(progress, nproc, own if terminal else None):
                outputs = elastic_launch(launch_config, worker)(model, batch, config, options)
        except ChildFailedError as e:
            raise RunError(failure_text(e, Path(logs))) from None
        except SignalException as e:  # Ctrl-C (or a kill): the agent has stopped every rank
            if e.sigval == signal.SIGINT:
                raise KeyboardInterrupt from None
            if e.sigval == signal.SIGTERM:
                raise Terminated() from None
            raise RunError(f"stopped by signal {e.sigval.name}; every rank was stopped") from None
    result = outputs.get(0)
    if result is None:  # pragma: no cover - rank 0 always returns the job's result
        raise RunError("rank 0 returned no result")
    return from_dict(result)


# a CPU rank before its model: Python, torch, gloo (measured: PSS 415 MiB, 377 MiB anonymous)
RANK_PROCESS_BYTES = 400 << 20
CUDA_RANK_PROCESS_BYTES = 1 << 30  # a CUDA rank's host memory: the CUDA context and its libraries, roughly


def available_memory() -> int | None:
    """Bytes the machine can still give (MemAvailable), or None where it cannot be read."""
    return host.available_bytes()


def rank_memory(model: Any, batch: int, config: BenchConfig) -> tuple[int, int, str]:
    """(one rank's process, its heaviest step, that step's mode) in bytes of host memory: the step predicted on
    fake tensors as `cnnprobe memory` does, plus DDP's gradient buckets (a copy of the gradients)."""
    if Device(config.device) is Device.CUDA:
        return CUDA_RANK_PROCESS_BYTES, 0, "its GPU"
    from ...memory.predict import Predictor

    modes = [m for m in config.modes if m in DDP_MODES] or [DDP_MODES[-1]]
    try:
        report = Predictor(model, config.replace(mode=modes[-1] if len(modes) == 1 else config.mode)).at(
            batch, modes, compare_freezing=False)
    except Exception:  # noqa: BLE001 - the step cannot be predicted: the process alone is still counted
        return RANK_PROCESS_BYTES, 0, modes[-1].value
    heaviest = max(report.results, key=lambda r: r.predicted_peak_bytes)
    buckets = heaviest.breakdown.get("gradients", 0)
    return RANK_PROCESS_BYTES, heaviest.predicted_peak_bytes + buckets, heaviest.mode


def check_memory(model: Any, batch: int, config: BenchConfig, nproc: int, available: int | None = None) -> None:
    """Refuse a rank count whose predicted memory (each rank's process plus its step) exceeds what is
    available, before any rank starts."""
    available = available_memory() if available is None else available
    if available is None or nproc == 1:
        return
    process, step, mode = rank_memory(model, batch, config)
    need = nproc * (process + step)
    if need > available:
        raise CnnprobeError(
            f"--nproc {nproc} needs about {nbytes(need)} of memory ({nproc} ranks × ({nbytes(process)} per process + "
            f"{nbytes(step)} for {mode} at batch {batch})), more than the {nbytes(available)} available: "
            f"use at most {max(1, available // max(1, process + step))} ranks, or a smaller --batch")


@contextlib.contextmanager
def _reaper(path: str) -> Iterator[None]:
    """A small process that removes `path` once this one is gone, however it goes (SIGKILL too): it waits for
    the end of a pipe only this process holds. The ranks die with this process on their own (signals)."""
    code = ("import os,shutil,sys,time\nsys.stdin.buffer.read()\n"
            "for _ in range(3):\n shutil.rmtree(sys.argv[1], ignore_errors=True)\n time.sleep(0.5)")
    try:
        reaper = subprocess.Popen([sys.executable, "-S", "-c", code, path], stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        reaper = None
    try:
        yield
    finally:
        if reaper is not None and reaper.stdin is not None:
            reaper.stdin.close()


@contextlib.contextmanager
def _errorfiles_in(path: str) -> Iterator[None]:
    """torch's spawn names each rank's traceback file in the temporary directory (pytorch-errorfile-*.pickle)
    and leaves it when the rank fails: put them in our directory, which goes."""
    old = tempfile.tempdir
    tempfile.tempdir = path
    try:
        yield
    finally:
        tempfile.tempdir = old


@contextlib.contextmanager
def _ranks_stderr(logs: str) -> Iterator[int | None]:
    """While the ranks run, file descriptor 2 (which they inherit) points at a file in our directory: a rank
    that Ctrl-C catches while Python itself starts, before any handler of ours, writes its fatal error there
    and not on the user's terminal. Yields a descriptor of the real stderr, for the launcher's own use."""
    try:
        saved = os.dup(2)
        target = os.open(os.path.join(logs, "stderr"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        yield None
        return
    sys.stderr.flush()
    os.dup2(target, 2)
    os.close(target)
    try:
        yield saved
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _show_progress(path: Path, nproc: int, fd: int | None) -> Iterator[None]:
    """What rank 0 is doing, on a terminal's stderr, while the ranks work (a 9-minute silence is no answer)."""
    if fd is None:
        yield
        return
    from rich.console import Console

    done = threading.Event()
    start = time.monotonic()
    stream = os.fdopen(os.dup(fd), "w", encoding=sys.stderr.encoding or "utf-8", errors="replace")
    with stream, Console(file=stream, force_terminal=True).status(f"starting {nproc} ranks") as status:
        def update() -> None:
            while not done.wait(0.5):
                try:
                    phase = path.read_text().strip()
                except OSError:
                    phase = f"starting {nproc} ranks"
                status.update(f"{phase or 'starting'} · {time.monotonic() - start:.0f} s")

        thread = threading.Thread(target=update, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(1)


def failure_text(error: ChildFailedError, logs: Path | None = None) -> str:
    """The one line that names the rank that started the failure. In order: a rank's own account
    (RankFailure: the survivors' verdict from the job's store), a rank's own error (not a lost connection), a
    rank that died without a Python error (a signal, os._exit), and last what the others saw."""
    messages: dict[int, str] = {}
    for path in sorted(logs.rglob("error.json")) if logs is not None else []:
        try:
            data = json.loads(path.read_text())["message"]
            messages[int(path.parent.name)] = str(data["message"] if isinstance(data, dict) else data)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    for rank, failure in error.failures.items():
        data = failure.error_file_data.get("message") if isinstance(failure.error_file_data, dict) else None
        if data and data != "<NONE>" and rank not in messages:
            messages[rank] = str(data.get("message", "") if isinstance(data, dict) else data)
    deaths = {rank: _death(f.exitcode) for rank, f in error.failures.items() if rank not in messages}
    first = {rank: (m.strip().splitlines() or ["no message"])[0] for rank, m in messages.items()}
    accounts = {r: m.removeprefix("RankFailure: ") for r, m in first.items() if m.startswith("RankFailure: ")}
    own = {r: m for r, m in first.items() if r not in accounts and not CONSEQUENCE.search(m)}
    if accounts:
        text = accounts[min(accounts)]
        for rank, death in deaths.items():
            text = text.replace(f"rank {rank} died", f"rank {rank} died ({death})")
        return text
    if own:
        rank = min(own)
        return _strip(own[rank]) if own[rank].startswith("JobError: ") else f"rank {rank} failed: {_strip(own[rank])}"
    if deaths:
        return "; ".join(f"rank {r} died: {d}" for r, d in sorted(deaths.items()))
    rank = min(first) if first else min(error.failures, default=0)
    return f"rank {rank} failed: {_strip(first.get(rank, 'no message'))}"


def _death(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode} without an error"


def _strip(message: str) -> str:
    for prefix in ("CnnprobeError: ", "OutOfMemory: ", "RunError: ", "UsageError: ", "InputSizeError: ",
                   "PatternError: ", "ForwardError: ", "UserFileError: ", "WeightsError: ", "UnknownModelError: ",
                   "JobError: ", "HeadError: ", "InputTooSmallError: "):
        message = message.removeprefix(prefix)
    return message


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
