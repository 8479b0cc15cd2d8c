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
import re
import signal
import socket
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch
from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from .benchconfig import BenchConfig
from .ddp import DistOptions, DistResult, from_dict, worker
from .enums import Device
from .errors import CnnprobeError, RunError

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
    with tempfile.TemporaryDirectory(prefix="cnnprobe-ranks-") as logs:
        launch_config = LaunchConfig(
            min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"cnnprobe-{uuid.uuid4().hex[:8]}",
            rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{free_port(port)}", max_restarts=0,
            monitor_interval=0.1, start_method="spawn",
            logs_specs=DefaultLogsSpecs(log_dir=logs, redirects=Std.OUT),  # ranks print nothing on our stdout
        )
        env = {"OMP_NUM_THREADS": str(config.threads or max(1, (os.cpu_count() or 1) // nproc))}
        try:
            with _quiet_launcher(), _environment(env):
                outputs = elastic_launch(launch_config, worker)(model, batch, config, options)
        except ChildFailedError as e:
            raise RunError(failure_text(e, Path(logs))) from None
        except SignalException as e:  # Ctrl-C (or a kill): the agent has stopped every rank
            if e.sigval == signal.SIGINT:
                raise KeyboardInterrupt from None
            raise RunError(f"stopped by signal {e.sigval.name}; every rank was stopped") from None
    result = outputs.get(0)
    if result is None:  # pragma: no cover - rank 0 always returns the job's result
        raise RunError("rank 0 returned no result")
    return from_dict(result)


# What the other ranks say when one has died: consequences, not causes.
_CONSEQUENCE = re.compile(r"connection closed|connection reset|broken pipe|timed out|timeout|abort|by peer|"
                          r"remote worker|socket", re.IGNORECASE)


def failure_text(error: ChildFailedError, logs: Path | None = None) -> str:
    """`rank 1 failed: ValueError: ...` for the rank whose error caused the others' (the error files the
    `@record` workers wrote say which: the earliest that is not a lost connection)."""
    found: list[tuple[bool, int, int, str]] = []
    for path in sorted(logs.rglob("error.json")) if logs is not None else []:
        try:
            data = json.loads(path.read_text())["message"]
            message, stamp = str(data["message"]), int(data.get("extraInfo", {}).get("timestamp", 0))
            found.append((bool(_CONSEQUENCE.search(message)), stamp, int(path.parent.name), message))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if found:
        _, _, rank, message = min(found)
    else:
        rank, failure = min(error.failures.items(), key=lambda kv: kv[1].timestamp or 0)
        message = str(failure.message or "").strip() or f"exit code {failure.exitcode}"
    first = message.strip().splitlines()[0] if message.strip() else "no message"
    for prefix in ("CnnprobeError: ", "OutOfMemory: ", "RunError: ", "UsageError: ", "InputSizeError: ",
                   "PatternError: ", "ForwardError: ", "UserFileError: ", "WeightsError: ", "UnknownModelError: "):
        first = first.removeprefix(prefix)
    return f"rank {rank} failed: {first}"


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
