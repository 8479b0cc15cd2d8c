"""`bench` across processes on torch.distributed: gloo on the CPU, two ranks, started by `--nproc` (torch's
elastic launcher from Python), by torchrun, and as two torchrun "nodes" on one machine."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnprobe.ddp import gradient_checksum
from cnnprobe.errors import CnnprobeError

from .conftest import one_error_line

ROOT = Path(__file__).resolve().parent.parent
MODELS = Path(__file__).parent / "hostile" / "models.py"
FAST = ["--min-time", "0.1", "--max-time", "1", "--warmup", "1"]
KEYS = {"world_size", "backend", "per_rank", "aggregate_samples_per_s", "scaling_efficiency", "comm_exposed_ms",
        "allreduce_bytes", "model", "batch", "results", "gradients_match"}
LENET = 61_706


def _check(data: dict, world: int, batch: int) -> None:
    assert KEYS <= set(data)
    assert (data["world_size"], data["backend"], data["batch"], data["global_batch"]) == (world, "gloo", batch, world * batch)
    assert [r["rank"] for r in data["per_rank"]] == list(range(world))
    assert data["gradients_match"]  # what DDP promises: after a synchronised step every rank holds the same
    head = data["modes"]["train_step"]
    assert head["aggregate_samples_per_s"] == pytest.approx(world * batch / (head["median_ms"] / 1e3))
    assert 0 < data["scaling_efficiency"] <= 1.5
    assert head["median_ms"] >= max(r["modes"]["train_step"]["median_ms"] for r in data["per_rank"]) * 0.9
    assert data["comm_exposed_ms"] == pytest.approx(head["median_ms"] - head["no_sync_ms"])


def test_nproc_two_ranks(cli):
    run = cli("bench", "lenet", "--nproc", "2", "--batch", "4", *FAST, "--json")
    assert run.exit_code == 0, run.stderr
    data = run.json()
    _check(data, 2, 4)
    assert data["allreduce_bytes"] == 4 * LENET  # every float32 gradient, once per step
    assert [m["mode"] for m in data["results"]] == ["forward_backward", "train_step"]
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert all(r["threads"] == threads for r in data["per_rank"])  # the cores shared out among local ranks


def test_frozen_parameters_are_not_all_reduced(cli):
    data = cli("bench", "lenet", "--nproc", "2", "--freeze-except", "classifier.5", "--mode", "train_step", *FAST,
               "--json").json()
    assert data["allreduce_bytes"] == 4 * (84 * 10 + 10) and data["gradients_match"]


def test_the_table(cli):
    run = cli("bench", "lenet", "--nproc", "2", *FAST)
    assert run.exit_code == 0, run.stderr
    for text in ("DistributedDataParallel · 2 ranks · gloo", "efficiency", "exposed comm ms", "identical on every rank"):
        assert text in run.stdout


def _torchrun(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def test_under_torchrun_rank_zero_alone_prints_one_json_object():
    run = _torchrun("--nproc-per-node", "2", "-m", "cnnprobe", "bench", "lenet", "--ddp", *FAST, "--json")
    assert run.returncode == 0, run.stderr
    _check(json.loads(run.stdout), 2, 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_on_one_machine():
    port = _free_port()
    common = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
              f"127.0.0.1:{port}", "--rdzv-id", f"cnnprobe-test-{port}", "-m", "cnnprobe", "bench", "lenet", "--ddp",
              *FAST, "--json"]
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *common], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(2)]
    outputs = [node.communicate(timeout=240) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err for _, err in outputs]
    printed = [out for out, _ in outputs if out.strip()]
    assert len(printed) == 1  # one object, from rank 0, whichever node it is on
    _check(json.loads(printed[0]), 2, 1)


def test_a_failing_rank_ends_the_job_naming_it(cli):
    start = time.perf_counter()
    run = cli("bench", f"{MODELS}:FailsOnRankOne", "--input-size", "4", "--nproc", "2", "--timeout", "30", *FAST)
    line = one_error_line(run)
    assert run.exit_code == 1 and "rank 1 failed: ValueError: rank one is broken" in line
    assert time.perf_counter() - start < 90  # well within the timeout: the launcher stops the other rank
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", "cnnprobe.ddp|multiprocessing.spawn"], capture_output=True, text=True)
    assert str(os.getpid()) not in left.stdout.split() and not [
        p for p in left.stdout.split() if _parent(int(p)) == os.getpid()]  # no rank left behind


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


@pytest.mark.parametrize("args, message", [
    (["--ddp"], "RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT are not set"),
    (["--nproc", "0"], "--nproc must be an integer from 1"),
    (["--nproc", "2", "--ddp"], "give one"),
    (["--nproc", "2", "--batch", "1,2"], "one model and one batch size"),
    (["--nproc", "2", "--save", "x.json"], "not available with --nproc"),
    (["--nproc", "2", "--timeout", "0"], "--timeout must be a positive"),
    (["--nproc", "2", "--backend", "nccl"], "--backend nccl needs --device cuda"),
    (["--nproc", "2", "--backend", "smoke"], "--backend must be gloo, nccl or mpi"),
])
def test_bad_distributed_options(cli, args, message):
    assert message in one_error_line(cli("bench", "lenet", *args))


def test_a_port_in_use(cli):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert "is in use" in one_error_line(cli("bench", "lenet", "--nproc", "2", "--port", str(port)))


def test_more_ranks_than_gpus(monkeypatch):
    from cnnprobe import launch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(CnnprobeError, match="has 1 GPU"):
        launch.check_nproc(2, "cuda")


def test_gradient_checksums_tell_gradients_apart():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    for m in (a, b):
        m(torch.ones(1, 3)).sum().backward()
    assert torch.equal(gradient_checksum(a), gradient_checksum(b))
    b.weight.grad[0, 0] += 1e-6
    assert not torch.equal(gradient_checksum(a), gradient_checksum(b))
    b.weight.grad[0, 0] -= 1e-6
    b.weight.grad[[0, 1]] = b.weight.grad[[1, 0]].clone()  # the same numbers in other places
    assert not torch.equal(gradient_checksum(a), gradient_checksum(b)) or torch.equal(a.weight.grad, b.weight.grad)


def test_ctrl_c_stops_every_rank():
    import signal

    process = subprocess.Popen([sys.executable, "-m", "cnnprobe", "bench", "resnet18", "--nproc", "2", "--min-time", "30"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(12)  # the ranks are up and timing
    children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode in (130, -signal.SIGINT) and err.strip().splitlines()[-1] == "cnnprobe: interrupted"
    time.sleep(0.5)
    assert children and not [pid for pid in children if _running(int(pid))]  # no rank left behind


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited process its new parent has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
