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

from cnnprobe.benchmark.distributed.gradients import gradient_checksum
from cnnprobe.core.errors import CnnprobeError

from .conftest import one_error_line

ROOT = Path(__file__).resolve().parent.parent
MODELS = Path(__file__).parent / "hostile" / "models.py"
FAST = ["--min-time", "0.1", "--max-time", "1", "--warmup", "1"]
KEYS = {"world_size", "backend", "per_rank", "aggregate_samples_per_s", "scaling_efficiency", "comm_exposed_ms",
        "allreduce_bytes", "model", "batch", "results", "gradients_match"}
LENET = 61_706


def _check(data: dict, world: int, batch: int) -> None:
    assert set(data) >= KEYS
    assert (data["world_size"], data["backend"], data["batch"], data["global_batch"]) == (world, "gloo", batch, world * batch)
    assert [r["rank"] for r in data["per_rank"]] == list(range(world))
    assert data["gradients_match"]  # what DDP promises: after a synchronised step every rank holds the same
    head = data["modes"]["train_step"]
    assert head["aggregate_samples_per_s"] == pytest.approx(world * batch / (head["median_ms"] / 1e3))
    measured, (low, high) = head["scaling_efficiency_measured"], head["scaling_efficiency_interval"]
    assert 0 < low <= measured <= high
    if measured > 1:  # never a result above 100%: flagged as noise
        assert data["scaling_efficiency"] is None and data["scaling_efficiency_noise"] and head_result(data)["noisy"]
    else:
        assert data["scaling_efficiency"] == measured and not data["scaling_efficiency_noise"]
    low, high = head["comm_exposed_interval_ms"]
    assert low <= data["comm_exposed_ms"] <= high
    assert data["comm_exposed_noise"] == (data["comm_exposed_ms"] < 0)
    if data["comm_exposed_noise"]:
        assert head_result(data)["noisy"]
    assert head_result(data)["runs"] == head["rounds"] >= 2
    if head["rounds"] < 5:  # --max-time cut the rounds short: too few for an interval to judge
        assert head_result(data)["noisy"]
    assert head["median_ms"] >= max(r["modes"]["train_step"]["median_ms"] for r in data["per_rank"]) * 0.9


def head_result(data: dict) -> dict:
    return next(r for r in data["results"] if r["mode"] == "train_step")


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
    timeout = 300  # seconds: rank 0, left waiting in a collective for the failed rank, would wait this long
    start = time.perf_counter()
    run = cli("bench", f"{MODELS}:FailsOnRankOne", "--input-size", "4", "--nproc", "2", "--timeout", str(timeout),
              *FAST)
    line = one_error_line(run)
    assert run.exit_code == 1 and "rank 1 failed: " in line and "rank one is broken" in line
    # the launcher stops the other rank: the job ends before the collective timeout could have ended it (no
    # speed goal: two ranks starting on a loaded machine take well under it)
    assert time.perf_counter() - start < timeout
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", "cnnprobe.benchmark.distributed.worker|multiprocessing.spawn"], capture_output=True, text=True)
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
    from cnnprobe.benchmark.distributed import launcher as launch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(CnnprobeError, match="has 1 GPU"):
        launch.check_nproc(2, "cuda")


def test_gradient_checksums_tell_gradients_apart():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    x = torch.tensor([[1.0, 2.0, 3.0]])
    for m in (a, b):
        m(x).sum().backward()
    assert torch.equal(gradient_checksum(a), gradient_checksum(b))
    grad = b.weight.grad.clone()  # [[1, 2, 3], [1, 2, 3]]: every row holds x
    b.weight.grad[0, 0] += 1e-6
    assert not torch.equal(gradient_checksum(a), gradient_checksum(b))
    b.weight.grad.copy_(grad)
    assert torch.equal(gradient_checksum(a), gradient_checksum(b))
    b.weight.grad[0, [0, 2]] = grad[0, [2, 0]]  # the same numbers in other places: 1 and 3 swapped
    assert not torch.equal(b.weight.grad, grad)
    assert b.weight.grad.sum() == grad.sum()  # a plain sum cannot see it
    assert not torch.equal(gradient_checksum(a), gradient_checksum(b))


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited process its new parent has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _interleaved(ddp, no_sync, single):
    from cnnprobe.benchmark.distributed.interleaved import Interleaved

    return Interleaved(ddp=ddp, no_sync=no_sync, single=single, own=ddp)


def test_figures_are_paired_round_by_round():
    from cnnprobe.benchmark.distributed.interleaved import job_figures

    # load moves between rounds: round 2 is twice as slow for every series alike
    t = _interleaved([0.010, 0.020, 0.010, 0.010, 0.010], [0.008, 0.016, 0.008, 0.008, 0.008],
                     [0.008, 0.016, 0.008, 0.008, 0.008])
    f = job_figures(t, world=2, batch=4)
    assert f["scaling_efficiency"] == pytest.approx(0.8)  # 8 ms over 10 ms in every round
    assert f["scaling_efficiency_interval"] == pytest.approx([0.8, 0.8])
    assert f["comm_exposed_ms"] == pytest.approx(2.0)  # median of 2, 4, 2, 2, 2
    assert f["aggregate_samples_per_s"] == pytest.approx(2 * 4 / 0.010)
    assert not f["scaling_efficiency_noise"] and not f["comm_exposed_noise"]


def test_an_efficiency_above_one_is_noise_not_a_result():
    from cnnprobe.benchmark.distributed.interleaved import interleaved_noisy, job_figures

    # the baseline happened to run slower than the synchronised step: no physics makes DDP faster than that
    t = _interleaved([0.010] * 6, [0.0105] * 6, [0.0110] * 6)
    f = job_figures(t, world=2, batch=1)
    assert f["scaling_efficiency"] is None and f["scaling_efficiency_noise"]
    assert f["scaling_efficiency_measured"] == pytest.approx(1.1)
    assert f["comm_exposed_noise"] and f["comm_exposed_ms"] == pytest.approx(-0.5)
    assert interleaved_noisy(t, f)


def test_the_noise_flag_sees_the_no_sync_and_single_timings():
    from cnnprobe.benchmark.distributed.interleaved import interleaved_noisy, job_figures

    steady = [0.010, 0.0101, 0.0099, 0.010, 0.010, 0.0100]
    wild = [0.002, 0.009, 0.003, 0.008, 0.002, 0.009]
    for t in (_interleaved(steady, wild, [0.008] * 6), _interleaved(steady, [0.009] * 6, [x * 3 for x in wild])):
        assert interleaved_noisy(t, job_figures(t, 2, 1))
    calm = _interleaved(steady, [0.009] * 6, [0.008] * 6)
    assert not interleaved_noisy(calm, job_figures(calm, 2, 1))


def test_bootstrap_interval_of_the_median():
    from cnnprobe.benchmark.distributed.interleaved import interval

    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 100.0]
    low, high = interval(values)
    assert low <= 5.5 <= high and high < 100  # the median's interval, not the range
    assert interval([5.0]) == (5.0, 5.0)


def test_the_table_never_shows_an_efficiency_above_100():
    from cnnprobe.benchmark.distributed.interleaved import job_figures
    from cnnprobe.report.ddp import efficiency, exposed

    figures = job_figures(_interleaved([0.01] * 5, [0.011] * 5, [0.015] * 5), 2, 1)
    assert efficiency(figures) == "noise [150–150%]!" and exposed(figures).startswith("noise")
    figures = job_figures(_interleaved([0.01] * 5, [0.009] * 5, [0.008] * 5), 2, 1)
    assert efficiency(figures) == "80.0% [80–80%]" and exposed(figures).startswith("1.000")


@pytest.mark.slow
def test_unused_parameters_are_named_and_the_option_lets_them_through(cli):
    run = cli("bench", f"{MODELS}:UnusedLayer", "--input-size", "4", "--nproc", "2", "--mode", "train_step", *FAST)
    line = one_error_line(run)
    assert "spare.weight, spare.bias" in line and "--find-unused-parameters" in line and "rank" not in line
    data = cli("bench", f"{MODELS}:UnusedLayer", "--input-size", "4", "--nproc", "2", "--mode", "train_step",
               "--find-unused-parameters", *FAST, "--json").json()
    assert data["unused_parameters"] == ["spare.weight", "spare.bias"]  # the model's order, as the error line's
    assert data["gradients_match"]


@pytest.mark.slow
def test_differing_gradients_are_named_and_fail_the_run(cli):
    run = cli("bench", f"{MODELS}:IgnoredByDDP", "--input-size", "4", "--nproc", "2", "--mode", "train_step", *FAST,
              "--json")
    assert run.exit_code == 1
    data = json.loads(run.stdout)
    assert data["gradients_differ"] == ["head.bias", "head.weight"] and not data["gradients_match"]
    assert data["ignored_parameters"] == ["head.bias", "head.weight"]
    assert data["allreduce_bytes"] == 4 * (4 * 4 + 4)  # fc only: what DDP reduces, not what it ignores
    assert "head.bias, head.weight" in run.stderr.strip().splitlines()[-1]


def test_nproc_beyond_the_machines_memory_is_refused(cli, monkeypatch):
    from cnnprobe.benchmark.distributed import launcher as launch

    monkeypatch.setattr(launch, "available_memory", lambda: 3 << 30)
    line = one_error_line(cli("bench", "lenet", "--nproc", "64", "--threads", "1"))
    assert "--nproc 64 needs about" in line and "3.0 GiB available" in line and "per process" in line


def test_the_memory_check_counts_the_step_against_a_hand_count():
    from cnnprobe.benchmark.distributed import launcher as launch
    from cnnprobe.training.config import BenchConfig

    config = BenchConfig(mode="train_step", predict=False)
    process, step, mode = launch.rank_memory("lenet", 4, config)
    # at least the parameters, their gradients and DDP's bucket copy of them, for 61,706 float32 parameters
    assert mode == "train_step" and step >= 3 * 4 * LENET and process == launch.RANK_PROCESS_BYTES
    fits = 2 * (process + step)
    launch.check_memory("lenet", 4, config, 2, available=fits)  # exactly enough: runs
    with pytest.raises(CnnprobeError, match="--nproc 2 needs about"):
        launch.check_memory("lenet", 4, config, 2, available=fits - 1)


def test_a_ctrl_c_an_import_turned_into_another_error_is_still_an_interrupt(cli, monkeypatch):
    """numpy, interrupted half-way through its import under torch, raises 'cannot load module more than once'
    on the next import: the Ctrl-C the handler saw wins, exit 130, not an internal error."""
    from cnnprobe.benchmark.distributed import launcher as launch
    from cnnprobe.core import signals

    def interrupted_import(*args, **kwargs):
        monkeypatch.setattr(signals, "_seen", True)
        raise ImportError("cannot load module more than once per process")

    monkeypatch.setattr(launch, "launch", interrupted_import)
    run = cli("bench", "lenet", "--nproc", "2")
    assert run.exit_code == 130 and run.stderr.strip() == "cnnprobe: interrupted"


def test_a_ctrl_c_an_import_swallowed_stops_before_the_ranks_start(cli, monkeypatch):
    from cnnprobe.benchmark.distributed import launcher as launch
    from cnnprobe.core import signals

    started = []
    monkeypatch.setattr(launch, "launch", lambda *a, **k: started.append(1))
    monkeypatch.setattr(signals, "_seen", True)  # seen while torch loaded, and swallowed there
    run = cli("bench", "lenet", "--nproc", "2", "--json")
    assert run.exit_code == 130 and not started and run.stdout.count("{") <= 1


def test_a_sigterm_an_import_swallowed_stops_before_the_ranks_start(cli, monkeypatch):
    """Under load, SIGTERM landing in torch's import was caught by a library on the way and the bench ran to
    the end with exit 0: the handler's note makes it 143 before any rank starts."""
    from cnnprobe.benchmark.distributed import launcher as launch
    from cnnprobe.core import signals

    started = []
    monkeypatch.setattr(launch, "launch", lambda *a, **k: started.append(1))
    monkeypatch.setattr(signals, "_terminated", False)  # restored after the test: later tests see no SIGTERM
    try:
        signals._on_terminate(15, None)
    except signals.Terminated:
        pass  # what the library did
    assert signals.terminated()
    run = cli("bench", "lenet", "--nproc", "2")
    assert run.exit_code == 143 and not started and run.stderr.strip() == "cnnprobe: terminated"


def test_a_sigterm_swallowed_after_the_last_check_still_exits_143(cli, monkeypatch):
    from cnnprobe.analysis import summary
    from cnnprobe.core import signals

    real = summary.summary

    def swallowed(*args, **kwargs):
        monkeypatch.setattr(signals, "_terminated", True)
        return real(*args, **kwargs)

    monkeypatch.setattr(summary, "summary", swallowed)
    run = cli("summary", "lenet")
    assert run.exit_code == 143 and run.stderr.strip() == "cnnprobe: terminated"
