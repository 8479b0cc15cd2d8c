"""`cnnprobe profile` through the CLI: the JSON contract, the table's lines, the files, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnprobe.report.chrometrace import check_trace

FAST = ["--input-size", "3,64,64", "--min-time", "0.2", "--threads", "1"]
KEYS = {"model", "batch", "device", "dtype", "mode", "step_ms", "unprofiled_step_ms", "overhead", "roof", "modules",
        "unattributed"}
ROW_KEYS = {"name", "type", "depth", "forward_ms", "backward_ms", "forward_macs", "backward_macs", "bytes", "intensity",
            "achieved_tflops", "achieved_gbps", "bound", "roofline_share", "frozen"}


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    """One run with --json, --trace and --plot, shared by the tests that read it."""
    from typer.testing import CliRunner

    from cnnprobe.cli import app

    folder = tmp_path_factory.mktemp("profile")
    trace, plot = folder / "step.json", folder / "roofline.png"
    result = CliRunner().invoke(app, ["profile", "resnet18", "--batch", "2", *FAST, "--json", "--trace", str(trace),
                                      "--plot", str(plot)])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), trace, plot


def test_the_json_holds_the_contract(profiled: tuple[dict, Path, Path]) -> None:
    data, _, _ = profiled
    assert set(data) >= KEYS
    assert {"peak_tflops", "bandwidth_gbps"} <= set(data["roof"])
    assert data["model"] == "resnet18" and data["batch"] == 2 and data["mode"] == "train_step"
    assert data["device"] == "cpu" and data["dtype"] == "float32"
    assert [m["name"] for m in data["modules"]][:4] == ["conv1", "bn1", "relu", "maxpool"]
    for row in [*data["modules"], *data["unattributed"].values()]:
        assert set(row) >= ROW_KEYS, set(row) ^ ROW_KEYS
        if row["roofline_share"] is not None:
            assert 0 < row["roofline_share"] <= 1
        if row["achieved_tflops"]:
            assert row["achieved_tflops"] <= data["roof"]["peak_tflops"] * (1 + 1e-9)
        if row["achieved_gbps"]:
            assert row["achieved_gbps"] <= data["roof"]["bandwidth_gbps"] * (1 + 1e-9)
    assert set(data["unattributed"]) == {"outside modules", "loss", "optimizer", "profiler hooks"}
    total = sum(r["forward_ms"] + (r["backward_ms"] or 0) for r in [*data["modules"], *data["unattributed"].values()])
    assert total == pytest.approx(data["attributed_ms"])
    # the partition against the step timed without hooks, in the same run (loosely: one run, a shared machine)
    assert 0.75 <= data["attributed_ms"] / data["unprofiled_step_ms"] <= 1.25


def test_the_trace_and_the_plot_are_written(profiled: tuple[dict, Path, Path]) -> None:
    _, trace, plot = profiled
    data = json.loads(trace.read_text())
    assert check_trace(data) == []
    assert {e.get("cat") for e in data["traceEvents"]} >= {"forward", "backward", "phase", "operator"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_table_states_the_roofs_and_the_overhead(cli) -> None:
    run = cli("profile", "resnet18", "--batch", "2", *FAST, "--top", "4")
    assert run.exit_code == 0, run.stderr
    out = run.stdout
    assert "hooks cost" in out and "roofs: compute" in out and "bandwidth" in out
    assert "(6 more rows)" in out and "[optimizer]" in out and "[loss]" in out
    assert "rows and unattributed pieces add up to" in out


@pytest.mark.parametrize("args,message", [
    (["--mode", "all"], "profile times one mode"),
    (["--depth", "0"], "--depth must be"),
    (["--top", "0"], "--top must be positive"),
    (["--device", "cuda"], "no CUDA device"),
    (["--batch", "0"], "batch"),
    (["--freeze-except", "nosuchlayer"], "nosuchlayer"),
    (["--trace", "/nonexistent/dir/t.json"], "/nonexistent/dir"),
    (["--plot", "/nonexistent/dir/r.png"], "/nonexistent/dir"),
])
def test_bad_input_is_one_line_and_a_nonzero_exit(cli, args: list[str], message: str) -> None:
    if args[0] == "--device":
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is here")
    run = cli("profile", "resnet18", *FAST, *args)
    assert run.exit_code != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], run.stderr
    assert "Traceback" not in run.stderr


def test_an_unknown_model_is_one_line(cli) -> None:
    run = cli("profile", "resnet1800", *FAST)
    assert run.exit_code == 2 and "unknown model" in run.stderr and len(run.stderr.strip().splitlines()) == 1


@pytest.mark.cuda
def test_profile_on_cuda(cli) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    run = cli("profile", "resnet18", "--device", "cuda", "--batch", "8", "--min-time", "0.3", "--json")
    assert run.exit_code == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["device"] == "cuda" and data["overhead"] < 0.10
    assert abs(data["attributed_ms"] / data["unprofiled_step_ms"] - 1) < 0.10


FAILING = '''
import torch
from torch import nn


class RunsOut(nn.Module):
    """Fine on meta (where cnnprobe builds and probes it); out of memory, or a plain failure, on the device."""

    def __init__(self, message: str = "CUDA out of memory. Tried to allocate 2.00 GiB") -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.message = message

    def forward(self, x):
        if not x.is_meta:
            raise RuntimeError(self.message)
        return self.conv(x)


def fails():
    return RunsOut("mat1 and mat2 shapes cannot be multiplied")
'''


@pytest.mark.parametrize("name,message,code", [("RunsOut", "ran out of memory", 1), ("fails", "mat1 and mat2", 1)])
def test_a_step_that_fails_is_one_line(cli, tmp_path: Path, name: str, message: str, code: int) -> None:
    path = tmp_path / "failing.py"
    path.write_text(FAILING)
    run = cli("profile", f"{path}:{name}", "--input-size", "3,16,16", "--min-time", "0.1")
    lines = run.stderr.strip().splitlines()
    assert run.exit_code == code and len(lines) == 1 and message in lines[0], run.stderr
    assert "internal error" not in run.stderr and "Traceback" not in run.stderr
