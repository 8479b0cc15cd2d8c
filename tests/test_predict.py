"""`cnnprobe predict` and `cnnprobe calibrate`: the JSON contract, the epoch and the band by hand, fitting, every
bad input; and the CPU prediction against bench's measurement, as a ratio measured in the same run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

KEYS = {"model", "device", "batch", "dtype", "calibrated", "results"}
RESULT_KEYS = {"mode", "frozen", "predicted_ms", "low_ms", "high_ms", "forward_ms", "backward_ms", "optimizer_ms",
               "samples_per_s", "epoch_s", "by_class", "predicted_peak_bytes", "fits"}


@pytest.fixture(scope="module")
def a100() -> dict:
    from typer.testing import CliRunner

    from cnnprobe.cli import app

    result = CliRunner().invoke(app, ["predict", "resnet50", "--device", "a100-sxm4-80gb", "--dtype", "float16",
                                      "--channels-last", "--batch", "256", "--dataset-size", "1281167", "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_the_json_holds_the_contract(a100: dict) -> None:
    assert set(a100) >= KEYS and a100["device"] == "a100-sxm4-80gb" and a100["batch"] == 256
    assert a100["dtype"] == "float16" and a100["calibrated"] is False
    assert [(r["mode"], r["frozen"]) for r in a100["results"]] == [
        ("forward", False), ("forward_backward", False), ("train_step", False)]
    for r in a100["results"]:
        assert set(r) >= RESULT_KEYS
        # the band, the throughput and the epoch, by hand
        assert r["low_ms"] == pytest.approx(r["predicted_ms"] / (1 + a100["band"]))
        assert r["high_ms"] == pytest.approx(r["predicted_ms"] * (1 + a100["band"]))
        assert r["samples_per_s"] == pytest.approx(256 / (r["predicted_ms"] / 1e3))
        assert r["epoch_s"] == pytest.approx(math.ceil(1281167 / 256) * r["predicted_ms"] / 1e3)
        assert sum(r["by_class"].values()) == pytest.approx(r["predicted_ms"])
        assert r["fits"] is True and 0 < r["predicted_peak_bytes"] < 80 * 2**30
    forward, fb, train = (r["predicted_ms"] for r in a100["results"])
    assert forward < fb < train  # a backward costs more than nothing, the optimizer too
    parts = a100["results"][2]
    assert parts["forward_ms"] + parts["backward_ms"] + parts["optimizer_ms"] == pytest.approx(parts["predicted_ms"])


def test_the_a100_prediction_is_of_the_published_order(a100: dict) -> None:
    """NVIDIA's DeepLearningExamples: ResNet-50 v1.5, one A100 80GB, mixed precision, batch 256: 2,470 img/s. A
    prediction from the datasheet with no calibration must at least be of that order (the report holds how near)."""
    train = a100["results"][2]["samples_per_s"]
    assert 2470 / 3 < train < 2470 * 3


def test_does_not_fit_is_said(cli) -> None:
    run = cli("predict", "vit_h_14", "--device", "l4", "--batch", "64", "--mode", "train_step")
    assert run.exit_code == 0, run.stderr
    assert "DOES NOT FIT" in run.stdout and "does not fit: train_step needs" in " ".join(run.stdout.split())


def test_list_devices(cli) -> None:
    run = cli("predict", "--list-devices")
    assert run.exit_code == 0 and "h100-sxm" in run.stdout and "a100-sxm4-80gb" in run.stdout
    data = json.loads(cli("predict", "--list-devices", "--json").stdout)
    assert {d["key"] for d in data["devices"]} >= {"h200", "h100-sxm", "h100-pcie", "a100-sxm4-80gb", "a100-pcie-40gb",
                                                    "l40s", "l4", "a10g", "t4", "v100-sxm2", "rtx4090", "rtx3090"}


@pytest.mark.parametrize("args,message", [
    (["resnet18", "--device", "h100"], "h100"),
    (["resnet18", "--device", "a100-sxm4-80gb", "--dataset-size", "0"], "--dataset-size"),
    (["resnet18", "--device", "a100-sxm4-80gb", "--epochs", "0"], "--epochs"),
    (["resnet18", "--device", "a100-sxm4-80gb", "--calibration", "/nonexistent/cal.json"], "/nonexistent/cal.json"),
    (["--device", "l4"], "needs a model"),
    (["resnet18", "--device", "l4", "--batch", "0"], "batch"),
])
def test_bad_input_is_one_line(cli, args: list[str], message: str) -> None:
    run = cli("predict", *args)
    lines = run.stderr.strip().splitlines()
    assert run.exit_code != 0 and len(lines) == 1 and message in lines[0], run.stderr
    assert "Traceback" not in run.stderr


def test_a_calibration_from_another_device_is_refused(cli, tmp_path: Path) -> None:
    from cnnprobe.runtime.calibration import save
    from cnnprobe.runtime.records import Calibration, Curve, OpClass

    path = tmp_path / "h100.json"
    save(Calibration("h100-sxm", "NVIDIA H100 80GB HBM3", {OpClass.GEMM: Curve(0.7, 1e9)}, {}, 4.0, True,
                     "measured"), path)
    run = cli("predict", "resnet18", "--device", "l4", "--calibration", str(path))
    assert run.exit_code == 2 and "was measured on h100-sxm" in run.stderr
    ok = cli("predict", "resnet18", "--device", "h100-sxm", "--calibration", str(path), "--json")
    assert ok.exit_code == 0, ok.stderr
    assert json.loads(ok.stdout)["calibrated"] is True


def test_a_calibration_written_by_calibrate_out_is_read_by_predict(cli, tmp_path: Path) -> None:
    path = tmp_path / "cpu.json"
    made = cli("calibrate", "--device", "cpu", "--quick", "--threads", "1", "--out", str(path))
    assert made.exit_code == 0, made.stderr
    run = cli("predict", "resnet18", "--device", "cpu", "--threads", "1", "--calibration", str(path), "--json",
              "--input-size", "3,64,64", "--mode", "forward")
    assert run.exit_code == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["calibrated"] is True and data["results"][0]["predicted_ms"] > 0
    assert json.loads(path.read_text())["page_in_gbps"] > 0


@pytest.fixture(scope="module")
def cpu_calibration():
    """This machine's CPU, calibrated on the micro-benchmarks (never a model), one thread, as the report does."""
    from cnnprobe.runtime.calibration import run_calibration

    return run_calibration("cpu", threads=1)


# |predicted/measured - 1|: reports/predict-accuracy.md's worst for these three models is 55% (convnext_tiny's
# backward, predicted at 0.45×), and its 90th percentile over 23 models 48%; with a margin for a loaded machine
TOLERANCE = 0.7


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "convnext_tiny"])
def test_cpu_predictions_against_bench_measured_in_the_same_run(name: str, cpu_calibration) -> None:
    """Each step within TOLERANCE of bench's median, measured in the same run; tried up to three times, as load
    only ever slows the measurement (a busy moment fails one try, a wrong model every one)."""
    from benchmarks.predict_accuracy import measure_and_predict

    readings = []
    for _ in range(3):
        rows = measure_and_predict(name, cpu_calibration, min_time=0.2)
        assert {(r.mode, r.frozen) for r in rows} >= {("forward", False), ("train_step", False), ("train_step", True)}
        ratios = {f"{r.mode}{' frozen' if r.frozen else ''}": round(r.ratio, 2) for r in rows}
        if all(abs(r.ratio - 1) <= TOLERANCE for r in rows):
            break
        readings.append(ratios)
    else:
        pytest.fail(f"predicted/measured beyond ±{TOLERANCE:.0%} in every try: {readings}")
    # freezing saves time in the prediction as it does in the measurement
    train = {r.frozen: r for r in rows if r.mode == "train_step"}
    assert train[True].predicted_ms < train[False].predicted_ms and train[True].measured_ms < train[False].measured_ms
