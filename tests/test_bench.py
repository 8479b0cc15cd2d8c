"""`bench`: modes, statistics, settings, freezing, sweeps, outputs, and every bad input.

Timing goals live in benchmarks/; these tests check the logic and never how fast anything is.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch

import cnnprobe
from cnnprobe import timing
from cnnprobe.errors import CnnprobeError, InputSizeError, UsageError
from cnnprobe.peak import datasheet
from cnnprobe.timing import BenchConfig, Runner, find_max_batch, parse_batches

from .conftest import one_error_line, table_rows

FAST = dict(min_time=0.02, max_time=0.2, warmup=1, threads=1)
FAST_ARGS = ["--min-time", "0.02", "--max-time", "0.2", "--warmup", "1", "--threads", "1"]
BENCH_FOOTER = ("!:", "bwd ms:", "lenet b", "resnet18 b")  # the lines that follow the bench table
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_all_modes_on_lenet():
    r = timing.bench("lenet", batch=4, **FAST)
    assert [m.mode for m in r.results] == ["forward", "forward_backward", "train_step"]
    assert (r.model, r.device, r.batch, r.dtype, r.threads) == ("lenet", "cpu", 4, "float32", 1)
    for m in r.results:
        assert m.median_ms > 0 and m.iqr_ms >= 0 and m.runs >= 1
        assert m.samples_per_s == pytest.approx(4 / (m.median_ms / 1e3))
        assert m.peak_memory_bytes > 61_706 * 4  # at least the weights
        assert m.noisy == (m.iqr_ms > 0.1 * m.median_ms)
    fwd, fb, train = r.results
    assert fwd.flops == 2 * 416_520 * 4
    assert fb.flops == fwd.flops + 2 * 715_440 * 4  # forward plus the counted backward
    assert fb.backward_ms is not None and fb.forward_train_ms is not None
    assert fb.backward_ms == pytest.approx(max(0.0, fb.median_ms - fb.forward_train_ms))
    assert train.optimizer_ms is not None
    assert fwd.tflops == pytest.approx(fwd.flops / (fwd.median_ms / 1e3) / 1e12)
    assert r.peak["source"] == "measured matmul" and fwd.peak_share == pytest.approx(fwd.tflops / r.peak["tflops"])


def test_forward_runs_in_eval_under_inference_mode_and_the_rest_in_train_mode():
    seen = []
    runner = Runner("lenet", 2, BenchConfig(**FAST))
    runner.setup()
    runner.raw.register_forward_hook(lambda m, i, o: seen.append((m.training, torch.is_inference_mode_enabled())))
    runner.step("forward")()
    runner.step("forward_backward")()
    assert seen == [(False, True), (True, False)]


def test_train_step_updates_weights_and_clears_gradients():
    runner = Runner("lenet", 2, BenchConfig(**FAST))
    runner.setup()
    before = runner.raw.classifier[5].weight.detach().clone()
    runner.step("train_step")()
    assert not torch.equal(before, runner.raw.classifier[5].weight)
    assert all(p.grad is None for p in runner.raw.parameters())


@pytest.mark.parametrize("optimizer, kind", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam)])
def test_optimizer_choice(optimizer, kind):
    runner = Runner("lenet", 2, BenchConfig(optimizer=optimizer, **FAST))
    runner.setup()
    assert isinstance(runner.step("train_step").optimizer, kind)


def test_threads_are_set_and_reported():
    r = timing.bench("lenet", batch=2, mode="forward", **{**FAST, "threads": 2})
    assert r.threads == 2 and r.settings["threads"] == 2


def test_settings_state_cuda_switches():
    """The CUDA branch of the settings, checked without a GPU: cudnn.benchmark and TF32 are stated."""
    s = timing.settings(BenchConfig(device="cuda", dtype="bfloat16"), 4)
    assert {"cudnn_benchmark", "tf32_matmul", "tf32_cudnn", "float32_matmul_precision"} <= set(s)
    assert s["autocast"] == "bfloat16"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_lower_precision_runs_under_autocast(dtype):
    r = timing.bench("lenet", batch=2, dtype=dtype, **FAST)
    assert r.dtype == dtype and r.settings["autocast"] == dtype
    assert len(r.results) == 3


def test_channels_last():
    runner = Runner("cnnprobe:resnet18", 1, BenchConfig(channels_last=True, input_size="3,32,32", **FAST))
    runner.setup()
    assert runner.x.is_contiguous(memory_format=torch.channels_last)
    assert runner.raw.conv1.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_compile():
    r = timing.bench("lenet", batch=2, mode="forward", compile=True, **FAST)
    assert r.settings["compile"] and r.results[0].median_ms > 0


def test_freezing_measures_both_and_reports_the_saving():
    r = timing.bench("cnnprobe:resnet18", batch=2, input_size="3,32,32", freeze_except="layer4,fc", **FAST)
    keys = [(m.mode, m.frozen) for m in r.results]
    assert keys == [("forward", False), ("forward_backward", True), ("train_step", True),
                    ("forward_backward", False), ("train_step", False)]
    frozen, full = r.result("train_step", True), r.result("train_step", False)
    assert frozen.flops < full.flops  # the frozen backward counts fewer FLOPs
    assert r.frozen_saving("train_step") == pytest.approx(1 - frozen.median_ms / full.median_ms)
    assert r.trainable_params == 8_906_728
    assert r.to_dict()["frozen_saving"]["train_step"] == r.frozen_saving("train_step")


def test_nothing_trainable_is_an_error():
    with pytest.raises(CnnprobeError, match="nothing is trainable"):
        timing.bench("lenet", batch=1, freeze_all=True, **FAST)


def test_forward_only_with_freeze_all_needs_nothing_trainable():
    r = timing.bench("lenet", batch=1, mode="forward", freeze_all=True, **FAST)
    assert [m.mode for m in r.results] == ["forward"]


def test_find_max_batch():
    assert find_max_batch(lambda b: b <= 100, 1, 4096) == 100
    assert find_max_batch(lambda b: b <= 64, 1, 4096) == 64
    assert find_max_batch(lambda b: True, 1, 4096) == 4096
    assert find_max_batch(lambda b: True, 1, 3000) == 3000
    assert find_max_batch(lambda b: False, 1, 4096) == 0
    calls = []
    find_max_batch(lambda b: calls.append(b) or b <= 37, 1, 4096)
    assert len(calls) < 15  # doubling then bisection, not a linear scan


@pytest.mark.parametrize("text, expected", [("1", [1]), ("1,8,32", [1, 8, 32]), ("auto", ["auto"]), (16, [16])])
def test_parse_batches(text, expected):
    assert parse_batches(text) == expected


@pytest.mark.parametrize("text", ["0", "-4", "x", "1,,2", ""])
def test_parse_batches_rejects(text):
    with pytest.raises(InputSizeError):
        parse_batches(text)


@pytest.mark.parametrize("field, value", [("min_time", 0), ("min_time", -1), ("threads", 0), ("warmup", -1),
                                          ("max_time", 0.001)])
def test_config_rejects(field, value):
    with pytest.raises(UsageError):
        BenchConfig(**{field: value})


def _oom_above(limit: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every step of a batch above `limit` fail as an allocation would, to test the handling."""
    real_step = Runner.step

    def step(self, mode):
        fn = real_step(self, mode)
        if self.batch <= limit:
            return fn

        def failing():
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        return failing

    monkeypatch.setattr(Runner, "step", step)


def test_sweep_records_oom_and_the_largest_batch_that_fit(monkeypatch):
    _oom_above(2, monkeypatch)
    sweep = timing.sweep(["lenet"], [1, 2, 4, 8], BenchConfig(mode="forward", **FAST))
    assert [r.batch for r in sweep.runs] == [1, 2]
    assert len(sweep.failures) == 1
    failure = sweep.failures[0]
    assert (failure.batch, failure.largest_fit) == (4, 2) and "out of memory" in failure.reason.lower()


def test_auto_batch_finds_the_largest_that_fits(monkeypatch):
    _oom_above(12, monkeypatch)
    sweep = timing.sweep(["lenet"], ["auto"], BenchConfig(mode="forward", **FAST))
    assert sweep.auto == {"lenet": 12}
    assert sweep.runs[0].batch == 12


def test_cpu_batches_beyond_memory_are_refused_before_running():
    ok, need, available = timing.fits_on_cpu("vgg16", 100_000, BenchConfig())
    assert not ok and need > available


@pytest.fixture
def ctrl_c_at_train_step(monkeypatch):
    """Press Ctrl-C when the train step is about to be timed."""
    real_run_mode = Runner.run_mode

    def run_mode(self, mode, *args, **kwargs):
        if mode.value == "train_step":
            raise KeyboardInterrupt
        return real_run_mode(self, mode, *args, **kwargs)

    monkeypatch.setattr(Runner, "run_mode", run_mode)


def test_ctrl_c_keeps_what_was_measured(ctrl_c_at_train_step):
    sweep = timing.sweep(["lenet"], [1], BenchConfig(**FAST))
    assert sweep.interrupted
    assert [m.mode for m in sweep.runs[0].results] == ["forward", "forward_backward"]


def test_datasheet_peaks():
    assert datasheet("NVIDIA H200", "bfloat16").tflops == 989.4
    assert datasheet("NVIDIA H100 PCIe", "bfloat16").tflops == 756.0
    assert datasheet("NVIDIA H100 80GB HBM3", "bfloat16").tflops == 989.4
    assert datasheet("NVIDIA A100-SXM4-80GB", "float32", tf32=True).detail == "A100 dense tf32"
    assert datasheet("Some Unknown GPU", "float32") is None


def test_public_api():
    assert cnnprobe.bench is timing.bench


# ---------------------------------------------------------------- CLI


def test_cli_table(cli):
    run = cli("bench", "lenet", "--batch", "1,4", *FAST_ARGS)
    assert run.exit_code == 0, run.stderr
    for text in ("fwd+bwd", "train_step", "median ms", "samples/s", "peak mem", "1 thread", "float32"):
        assert text in run.stdout


def test_cli_json_contract(cli):
    data = cli("bench", "lenet", "--batch", "4", "--json", *FAST_ARGS).json()
    assert {k: data[k] for k in ("model", "device", "batch", "dtype")} == {
        "model": "lenet", "device": "cpu", "batch": 4, "dtype": "float32"}
    assert [r["mode"] for r in data["results"]] == ["forward", "forward_backward", "train_step"]
    for r in data["results"]:
        assert {"mode", "median_ms", "iqr_ms", "samples_per_s", "peak_memory_bytes", "runs", "noisy"} <= set(r)


def test_cli_sweep_json_and_csv(cli, tmp_path):
    out = tmp_path / "bench.csv"
    run = cli("bench", "lenet,cnnprobe:alexnet", "--batch", "1,2", "--mode", "forward", "--json", "--csv", str(out),
              *FAST_ARGS)
    data = run.json()
    assert [(r["model"], r["batch"]) for r in data["runs"]] == [("lenet", 1), ("lenet", 2), ("alexnet", 1), ("alexnet", 2)]
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 and rows[0]["mode"] == "forward" and float(rows[0]["median_ms"]) > 0


def test_cli_plot(cli, tmp_path):
    out = tmp_path / "throughput.png"
    run = cli("bench", "lenet", "--batch", "1,2", "--mode", "forward", "--plot", str(out), *FAST_ARGS)
    assert run.exit_code == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_frozen_saving_is_said(cli):
    run = cli("bench", "cnnprobe:resnet18", "--input-size", "3,32,32", "--batch", "2", "--freeze-except", "layer4,fc",
              *FAST_ARGS)
    assert run.exit_code == 0
    assert "freezing saves" in run.stdout or "did not make" in run.stdout
    weights = [row[1] for row in table_rows(run.stdout, until=BENCH_FOOTER)]
    assert weights == ["-", "frozen", "frozen", "all", "all"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_cli_cuda_without_cuda(cli):
    assert "no CUDA device" in one_error_line(cli("bench", "lenet", "--device", "cuda"))


@pytest.mark.parametrize(
    "args, message",
    [(["bench", "lenet", "--batch", "0"], "--batch must be a positive integer"),
     (["bench", "lenet", "--batch", "big"], "--batch takes positive integers or 'auto'"),
     (["bench", "lenet", "--min-time", "0"], "--min-time must be a positive"),
     (["bench", "lenett"], "did you mean lenet"),
     (["bench", "vgg16", "--batch", "100000"], "ran out of memory on cpu"),
     (["bench", "lenet", "--device", "tpu"], "Invalid value for '--device'"),
     (["bench", "lenet", "--freeze-all"], "nothing is trainable"),
     (["bench", "lenet", "--freeze-except", "layer9"], "matches no parameter"),
     (["bench", "lenet", "--csv", "/nonexistent/dir/out.csv", "--mode", "forward"], "does not exist")],
)
def test_cli_bad_input_is_one_line(cli, args, message):
    assert message in one_error_line(cli(args[0], *FAST_ARGS, *args[1:]))


def test_cli_oom_in_a_sweep_names_the_batch_and_the_largest_that_fit(cli, monkeypatch):
    _oom_above(2, monkeypatch)
    run = cli("bench", "lenet", "--batch", "1,2,4", "--mode", "forward", *FAST_ARGS)
    assert run.exit_code == 1
    rows = table_rows(run.stdout, until=BENCH_FOOTER)
    assert [row[:2] for row in rows] == [["lenet", "1"], ["lenet", "2"]]  # what fitted is still shown
    line = run.stderr.strip()
    assert "\n" not in line and "batch 4 ran out of memory" in line and "largest batch that fit was 2" in line


def test_cli_ctrl_c_prints_what_was_measured(cli, ctrl_c_at_train_step):
    run = cli("bench", "lenet", *FAST_ARGS)
    assert run.exit_code == 130
    assert [row[0] for row in table_rows(run.stdout, until=BENCH_FOOTER)] == ["forward", "fwd+bwd"]
    assert "interrupted" in run.stderr


@needs_cuda
@pytest.mark.cuda
def test_cuda_bench_reports_allocator_peak_and_settings():
    r = timing.bench("resnet18", batch=8, device="cuda", min_time=0.1, warmup=2)
    assert r.settings["cudnn_benchmark"] is True
    weights = 11_689_512 * 4
    assert all(m.peak_memory_bytes > weights for m in r.results)


@needs_cuda
@pytest.mark.cuda
def test_cuda_oom_is_caught_and_freed():
    with pytest.raises(timing.OutOfMemory):
        timing.bench("vgg16", batch=1_000_000, device="cuda", mode="forward", min_time=0.1)
    assert torch.cuda.memory_allocated() < 2**30
