"""Distributed runs that go wrong, for real: a rank killed (SIGKILL, os._exit), hung, or failing, under `--nproc`
and under torchrun; the launcher killed or interrupted while ranks start. Faults are injected through the
worker's test hook (CNNPROBE_TEST_FAULT), so the rank really dies or really stops answering. Each run costs
seconds (two CPU ranks import torch), so most are marked slow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnprobe.benchmark.distributed.failures import FAULT_ENV

from .conftest import one_error_line

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--min-time", "0.1", "--max-time", "1", "--warmup", "1"]
TMP = Path(os.environ.get("TMPDIR", "/tmp"))


def _cnnprobe(*args: str, fault: str | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.Popen([sys.executable, "-m", "cnnprobe", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, env=env, start_new_session=True, **kwargs)


def _children(pid: int) -> set[int]:
    """Every process below `pid` now (ranks and their helpers)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited process its new parent has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_for_ranks(process: subprocess.Popen, count: int = 2, timeout: float = 120) -> set[int]:
    """The launcher's rank processes, as soon as `count` exist (they are then still importing torch)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ranks = {p for p in _children(process.pid) if b"multiprocessing" in _cmdline(p)}
        if len(ranks) >= count:
            return ranks
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("the ranks never started")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _all_gone(pids: set[int], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_running(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def _leftovers(pid: int, before: set[str]) -> list[str]:
    """What a launcher with this pid left in the temporary directory: its ranks' directory, torch's error files."""
    deadline = time.monotonic() + 10
    while True:
        left = [p.name for p in TMP.glob(f"cnnprobe-ranks-{pid}-*")]
        left += [p.name for p in TMP.glob("pytorch-errorfile-*.pickle") if p.name not in before]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _errorfiles() -> set[str]:
    return {p.name for p in TMP.glob("pytorch-errorfile-*.pickle")}


@pytest.mark.slow
@pytest.mark.parametrize("fault, rank, cause, phase", [
    ("rank=1:kill:after_init", 1, "killed by SIGKILL", "while building the model"),
    ("rank=1:exit:timing", 1, "exited with code 7 without an error", "while timing forward_backward (round 1)"),
    ("rank=0:kill:timing", 0, "killed by SIGKILL", "while timing forward_backward (round 1)"),
])
def test_nproc_names_the_rank_that_died(fault, rank, cause, phase):
    before = _errorfiles()
    process = _cnnprobe("bench", "lenet", "--nproc", "2", "--timeout", "60", *FAST, fault=fault)
    out, err = process.communicate(timeout=240)
    lines = err.strip().splitlines()
    assert process.returncode == 1 and out == "" and len(lines) == 1 and "Traceback" not in err, err
    line = lines[0]
    # the survivor's account names the phase too; when the launcher stopped the survivor before it could
    # give one, the launcher's own record of the exit still names the rank and the cause
    assert line in (f"cnnprobe: error: rank {rank} died: {cause}",) or line.startswith(
        f"cnnprobe: error: rank {rank} died ({cause}) {phase}"), line
    assert f"rank {1 - rank} died" not in line and f"rank {1 - rank} failed" not in line  # the survivor is not blamed
    assert not _leftovers(process.pid, before)


@pytest.mark.slow
def test_nproc_names_the_rank_that_hung():
    before = _errorfiles()
    process = _cnnprobe("bench", "lenet", "--nproc", "2", "--timeout", "8", *FAST, "--json",
                        fault="rank=1:hang:timing")
    out, err = process.communicate(timeout=240)
    assert process.returncode == 1, err
    error = json.loads(out)  # one object
    assert error["error"].startswith("rank 1 stopped answering while timing forward_backward"), error
    assert "rank 0 saw" in error["error"] and "Timed out" in error["error"]
    assert len(err.strip().splitlines()) == 1
    assert not _leftovers(process.pid, before)


def _torchrun(*args: str, fault: str | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "cnnprobe",
                           *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env)


def _one_report(run: subprocess.CompletedProcess) -> str:
    """torchrun's ranks: one JSON object on stdout and one cnnprobe line on stderr, from one rank alone
    (torchrun's agent adds its own summary of the failure below; that is torchrun's, not ours)."""
    assert run.returncode != 0
    objects = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    ours = [line for line in run.stderr.splitlines() if line.startswith("cnnprobe: ")]
    assert len(objects) == 1 and len(ours) == 1, (run.stdout, run.stderr)
    assert ours[0] == f"cnnprobe: error: {objects[0]['error']}"
    assert "internal error" not in run.stderr
    return objects[0]["error"]


@pytest.mark.slow
@pytest.mark.parametrize("fault, expected", [
    ("rank=1:kill:after_init", "rank 1 died while building the model"),
    ("rank=0:hang:timing", "rank 0 stopped answering while timing forward_backward"),
    ("rank=1:raise:timing", "rank 1 failed: ValueError: injected fault on rank 1 at timing"),
])
def test_torchrun_one_line_one_object_naming_the_rank(fault, expected):
    run = _torchrun("bench", "lenet", "--ddp", "--timeout", "8", *FAST, "--json", fault=fault)
    assert _one_report(run).startswith(expected)


def test_stale_launcher_environment_is_one_line(cli, monkeypatch):
    """RANK, WORLD_SIZE, ... left set from an earlier job: nothing answers; one line, no internal error."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    run = cli("bench", "lenet", "--ddp", "--timeout", "2", *FAST)
    line = one_error_line(run)
    assert run.exit_code == 1 and "could not join the process group" in line and "left over" in line


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["ranks starting", "ranks timing"])
def test_a_killed_launcher_leaves_no_rank_and_no_directory(moment):
    process, everything = _launched_until(moment)
    process.kill()  # SIGKILL, as a CI job's timeout does in the end: no handler runs in the launcher
    process.communicate(timeout=30)
    assert _all_gone(everything), [p for p in everything if _running(p)]
    assert not _leftovers(process.pid, _errorfiles())


def _launched_until(moment: str) -> tuple[subprocess.Popen, set[int]]:
    """`bench --nproc 2` with both ranks started (and, for "ranks timing", rank 0 timing): the launcher, and
    every process it and its ranks are."""
    process = _cnnprobe("bench", "lenet", "--nproc", "2", "--min-time", "300")
    ranks = _wait_for_ranks(process)
    if moment == "ranks timing":
        _wait_for_phase(process, "timing")
    return process, _children(process.pid) | ranks


def _wait_for_phase(process: subprocess.Popen, word: str, timeout: float = 180) -> None:
    """Until rank 0's progress file (in the launcher's directory) names `word`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in TMP.glob(f"cnnprobe-ranks-{process.pid}-*/progress"):
            try:
                if word in path.read_text():
                    return
            except OSError:
                pass
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    raise AssertionError(f"rank 0 never reached {word}")


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["ranks starting", "ranks timing"])
def test_ctrl_c_exits_130_with_one_line_and_no_rank_left(moment):
    """Ctrl-C reaches the whole foreground process group: the launcher and every rank at once."""
    process, everything = _launched_until(moment)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=90)  # a swallowed Ctrl-C would time for 300 s and more
    assert process.returncode == 130, err
    assert err.strip().splitlines() == ["cnnprobe: interrupted"] and out == ""
    assert _all_gone(everything)
    assert not _leftovers(process.pid, _errorfiles())


@pytest.mark.slow
def test_sigterm_exits_143_and_stops_every_rank():
    process, everything = _launched_until("ranks timing")
    process.terminate()
    _, err = process.communicate(timeout=90)
    assert process.returncode == 143, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert _all_gone(everything)
    assert not _leftovers(process.pid, _errorfiles())


def test_sigterm_before_any_rank_exits_143():
    process = _cnnprobe("bench", "lenet", "--nproc", "2")
    time.sleep(0.5)  # the command line is still loading
    process.terminate()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and "Traceback" not in err, err
    assert err.strip().splitlines() == ["cnnprobe: terminated"]


@pytest.mark.slow
def test_ranks_leave_when_torchruns_agent_is_killed():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(FAULT_ENV, None)
    agent = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "cnnprobe",
                              "bench", "lenet", "--ddp", "--min-time", "300"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    ranks: set[int] = set()
    while len(ranks) < 2 and time.monotonic() < deadline:
        ranks = {p for p in _children(agent.pid) if b"cnnprobe" in _cmdline(p)}
        time.sleep(0.05)
    assert len(ranks) == 2, agent.communicate(timeout=5)
    time.sleep(3)  # the ranks are importing torch or joining the group
    agent.kill()
    agent.communicate(timeout=30)
    assert _all_gone(ranks), [p for p in ranks if _running(p)]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/script").exists(), reason="needs script(1) for a terminal")
def test_long_work_shows_what_rank_0_is_doing_on_a_terminal():
    command = " ".join([sys.executable, "-m", "cnnprobe", "bench", "lenet", "--nproc", "2", *FAST])
    run = subprocess.run(["script", "-qfec", command, "/dev/null"], capture_output=True, text=True, cwd=ROOT,
                         timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert run.returncode == 0, run.stdout[-2000:]
    for phase in ("starting 2 ranks", "timing forward_backward (round", "timing train_step (round"):
        assert phase in run.stdout
    assert "DistributedDataParallel · 2 ranks" in run.stdout
