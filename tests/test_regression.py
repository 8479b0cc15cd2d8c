"""Regression tracking: --save, --compare and --threshold, judged mode by mode."""

from __future__ import annotations

import copy
import json

import pytest

from cnnprobe.errors import CnnprobeError
from cnnprobe.regression import compare, load_baseline
from cnnprobe.timing import Runner

from .conftest import one_error_line


def run(model="resnet18", batch=64, device="cuda", dtype="float32", **medians):
    medians = medians or {"forward": 10.0, "forward_backward": 30.0, "train_step": 35.0}
    return {"model": model, "batch": batch, "device": device, "dtype": dtype,
            "results": [{"mode": m, "frozen": False, "median_ms": v, "iqr_ms": 0.02 * v} for m, v in medians.items()]}


def test_a_run_against_itself_passes():
    baseline = [run()]
    result = compare(baseline, copy.deepcopy(baseline))
    assert result.ok and not result.regressions
    assert [c.change for c in result.changes] == [0.0, 0.0, 0.0]


def test_a_slowed_mode_is_named():
    slowed = run(forward=10.0, forward_backward=30.0, train_step=45.0)
    result = compare([run()], [slowed], threshold=10)
    assert [c.mode for c in result.regressions] == ["train_step"]
    assert result.to_dict()["regressions"] == ["resnet18 b64 train_step"]


def test_slower_than_the_threshold_but_within_the_noise_is_not_a_regression():
    noisy = run(train_step=40.0)
    noisy["results"][0]["iqr_ms"] = 8.0  # 5 ms slower, inside an 8 ms IQR
    baseline = run(train_step=35.0)
    assert compare([baseline], [noisy], threshold=10).ok


def test_within_the_threshold_is_not_a_regression():
    assert compare([run(train_step=35.0)], [run(train_step=37.0)], threshold=10).ok


def test_faster_is_reported_as_improved():
    result = compare([run(train_step=35.0)], [run(train_step=20.0)])
    assert result.ok and result.changes[0].improved


@pytest.mark.parametrize("other", [run(device="cpu"), run(dtype="bfloat16"), run(batch=32), run(model="resnet50")])
def test_incomparable_runs_are_an_error_not_a_verdict(other):
    with pytest.raises(CnnprobeError, match="cannot compare"):
        compare([run()], [other])


def test_a_baseline_may_hold_more_runs():
    assert compare([run(), run(batch=32)], [run(batch=32)]).ok


def test_negative_threshold():
    with pytest.raises(CnnprobeError, match="threshold"):
        compare([run()], [run()], threshold=-1)


@pytest.mark.parametrize("content, message", [(None, "does not exist"), ("{not json", "not a bench JSON"),
                                              ('{"model": "x"}', "not a bench JSON"), ("[1, 2]", "not a bench JSON")])
def test_bad_baselines(tmp_path, content, message):
    path = tmp_path / "base.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CnnprobeError, match=message):
        load_baseline(path)


def test_a_sweep_file_is_a_baseline(tmp_path):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"runs": [run(), run(batch=32)], "failures": []}))
    assert [r["batch"] for r in load_baseline(path)] == [64, 32]


# ---------------------------------------------------------------- CLI, with deterministic timings


@pytest.fixture
def fixed_timings(monkeypatch):
    """Replace the timed runs by fixed medians per step, so comparisons are deterministic; `slow` multiplies
    the median of the named steps."""
    slow: dict[str, float] = {}
    medians = {"forward": 0.010, "forward_train": 0.012, "forward_backward": 0.030, "train_step": 0.035}

    def time(self, fn):
        name = fn.__name__
        return medians[name] * slow.get(name, 1.0), 0.0002, 100

    monkeypatch.setattr(Runner, "time", time)
    return slow


FAST = ["--warmup", "0", "--threads", "1", "--min-time", "0.01"]


def test_cli_save_writes_the_json_of_json(cli, tmp_path, fixed_timings):
    base = tmp_path / "base.json"
    printed = cli("bench", "lenet", *FAST, "--json", "--save", str(base)).json()
    saved = json.loads(base.read_text())
    assert saved == printed


def test_cli_compare_against_itself_passes(cli, tmp_path, fixed_timings):
    base = tmp_path / "base.json"
    assert cli("bench", "lenet", *FAST, "--save", str(base)).exit_code == 0
    result = cli("bench", "lenet", *FAST, "--compare", str(base))
    assert result.exit_code == 0, result.stderr
    assert "against the baseline" in result.stdout and "REGRESSED" not in result.stdout
    assert result.stdout.count("same") == 3


def test_cli_compare_fails_naming_the_slowed_mode(cli, tmp_path, fixed_timings):
    base = tmp_path / "base.json"
    assert cli("bench", "lenet", *FAST, "--save", str(base)).exit_code == 0
    fixed_timings["train_step"] = 1.5  # deliberately slowed
    result = cli("bench", "lenet", *FAST, "--compare", str(base))
    assert result.exit_code == 1
    line = one_error_line(type(result)(1, "", result.stderr))
    assert "regressed" in line and "train_step" in line and "forward " not in line
    assert "REGRESSED" in result.stdout


def test_cli_compare_json_carries_the_verdict(cli, tmp_path, fixed_timings):
    base = tmp_path / "base.json"
    cli("bench", "lenet", *FAST, "--save", str(base))
    fixed_timings["forward"] = 2.0
    result = cli("bench", "lenet", *FAST, "--json", "--compare", str(base))
    assert result.exit_code == 1
    data = result.json()
    assert data["comparison"]["regressions"] == ["lenet b1 forward"] and not data["comparison"]["ok"]


def test_cli_threshold(cli, tmp_path, fixed_timings):
    base = tmp_path / "base.json"
    cli("bench", "lenet", *FAST, "--save", str(base))
    fixed_timings["train_step"] = 1.3
    assert cli("bench", "lenet", *FAST, "--compare", str(base), "--threshold", "50").exit_code == 0
    assert cli("bench", "lenet", *FAST, "--compare", str(base), "--threshold", "20").exit_code == 1


@pytest.mark.parametrize("args, message", [
    (["--batch", "8"], "cannot compare"), (["--dtype", "bfloat16"], "cannot compare"),
    (["--batch", "auto"], "not --batch auto"),
])
def test_cli_incomparable_runs_fail_before_timing(cli, tmp_path, fixed_timings, args, message):
    base = tmp_path / "base.json"
    cli("bench", "lenet", *FAST, "--save", str(base))
    assert message in one_error_line(cli("bench", "lenet", *FAST, *args, "--compare", str(base)))


def test_cli_missing_baseline(cli, tmp_path):
    assert "does not exist" in one_error_line(cli("bench", "lenet", "--compare", str(tmp_path / "nope.json")))


def test_cli_save_into_a_missing_folder(cli, tmp_path, fixed_timings):
    line = one_error_line(cli("bench", "lenet", *FAST, "--mode", "forward", "--save", str(tmp_path / "no" / "b.json")))
    assert "does not exist" in line


def test_a_baselines_own_run_to_run_noise_counts(tmp_path):
    """benchmarks.report --repeat 2 records how far each median moved; a change inside that is noise."""
    path = tmp_path / "base.json"
    path.write_text(json.dumps({"runs": [run()], "noise": {"resnet18 b64 train_step": 0.5}}))
    baseline = load_baseline(path)
    assert compare(baseline, [run(train_step=45.0)]).ok  # +29%, inside the 50% the baseline moved by itself
    assert not compare(baseline, [run(train_step=60.0)]).ok
