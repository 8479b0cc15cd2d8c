"""Regression tracking: --save, --compare, --threshold and --repeat, judged mode by mode with an interval."""

from __future__ import annotations

import copy
import json
import random

import pytest

from cnnprobe.benchmark.blocks import Timed
from cnnprobe.benchmark.regression import check_comparable, compare, load_baseline, ratio_interval
from cnnprobe.benchmark.runners import ModeRunner
from cnnprobe.core.errors import CnnprobeError

from .conftest import one_error_line, stderr_lines, table_rows


def samples(median: float, spread: float = 0.02, n: int = 41, seed: int = 0) -> list[float]:
    """Timed samples around a median, as torch.utils.benchmark returns them."""
    rng = random.Random(seed)
    return sorted(median * (1 + rng.uniform(-spread, spread)) for _ in range(n))


def result(mode: str, medians: list[float], spread: float = 0.02, frozen: bool = False) -> dict:
    repeats = [{"median_ms": m, "iqr_ms": spread * m, "runs": 41, "samples_ms": samples(m, spread, seed=i)}
               for i, m in enumerate(medians)]
    middle = sorted(medians)[len(medians) // 2] if len(medians) % 2 else sum(medians) / len(medians)
    return {"mode": mode, "frozen": frozen, "median_ms": middle, "iqr_ms": spread * middle, "repeats": repeats,
            "samples_ms": [s for r in repeats for s in r["samples_ms"]]}


def run(model="resnet18", batch=64, device="cuda", dtype="float32", spread=0.02, **medians):
    medians = medians or {"forward": [10.0, 10.0], "forward_backward": [30.0, 30.0], "train_step": [35.0, 35.0]}
    return {"model": model, "batch": batch, "device": device, "dtype": dtype,
            "results": [result(m, v if isinstance(v, list) else [v, v], spread) for m, v in medians.items()]}


# ---------------------------------------------------------------- the statistic


def test_unchanged_timings_give_intervals_that_cover_one():
    """Twenty pairs of runs drawn from one distribution: a 95% interval covers the true ratio of 1 in about
    19 of them (a binomial count below 16 would happen with probability under 0.2%)."""
    covered = 0
    for seed in range(20):
        before = [samples(10, n=61, seed=4 * seed), samples(10, n=61, seed=4 * seed + 1)]
        after = [samples(10, n=61, seed=4 * seed + 2), samples(10, n=61, seed=4 * seed + 3)]
        ratio, low, high = ratio_interval(before, after, seed=seed)
        covered += low <= 1 <= high
        assert ratio == pytest.approx(1, abs=0.02)
    assert covered >= 16


def test_twice_as_slow_is_told_apart():
    ratio, low, high = ratio_interval([samples(10), samples(10, seed=1)], [samples(20, seed=2), samples(20, seed=3)])
    assert ratio == pytest.approx(2, rel=0.02) and 1.8 < low < high < 2.2


def test_run_to_run_drift_widens_the_interval():
    """Two baseline repeats 12% apart: the interval must cover that drift, not just the within-run spread."""
    steady = ratio_interval([samples(10), samples(10, seed=1)], [samples(11), samples(11, seed=1)])
    drifting = ratio_interval([samples(10), samples(11.2, seed=1)], [samples(11), samples(11, seed=1)])
    assert drifting[2] - drifting[1] > 2 * (steady[2] - steady[1])


def test_the_verdict_is_reproducible():
    args = ([samples(10), samples(10.5, seed=1)], [samples(10.2), samples(10.9, seed=1)])
    assert ratio_interval(*args) == ratio_interval(*args)


# ---------------------------------------------------------------- verdicts


def test_a_run_against_itself_passes():
    baseline = [run()]
    verdict = compare(baseline, copy.deepcopy(baseline))
    assert verdict.ok and not verdict.regressions
    assert [c.ratio for c in verdict.changes] == [1.0, 1.0, 1.0]
    assert all(c.ratio_low <= 1 <= c.ratio_high for c in verdict.changes)


def test_a_twice_slower_mode_is_named():
    verdict = compare([run()], [run(forward=10.0, forward_backward=30.0, train_step=70.0)], threshold=10)
    assert [c.mode for c in verdict.regressions] == ["train_step"]
    assert verdict.to_dict()["regressions"] == ["resnet18 b64 train_step"]
    assert verdict.regressions[0].ratio_low > 1.8


def test_slower_than_the_threshold_but_within_the_noise_is_not_a_regression():
    """+14% on the point, but the baseline's own repeats were 15% apart: not proven beyond 10%."""
    baseline = run(train_step=[32.5, 37.5])
    assert compare([baseline], [run(train_step=[40.0, 40.0])], threshold=10).ok


def test_within_the_threshold_is_not_a_regression():
    assert compare([run(train_step=35.0)], [run(train_step=37.0)], threshold=10).ok


def test_faster_is_reported_as_improved():
    verdict = compare([run(train_step=35.0)], [run(train_step=20.0)])
    assert verdict.ok and verdict.changes[0].improved


@pytest.mark.parametrize("other", [run(device="cpu"), run(dtype="bfloat16"), run(batch=32), run(model="resnet50")])
def test_incomparable_runs_are_an_error_not_a_verdict(other):
    with pytest.raises(CnnprobeError, match="cannot compare"):
        compare([run()], [other])


def test_a_baseline_may_hold_more_runs():
    assert compare([run(), run(batch=32)], [run(batch=32)]).ok


@pytest.mark.parametrize("threshold", [0, -1, float("nan"), float("inf")])
def test_threshold_must_be_finite_and_positive(threshold):
    with pytest.raises(CnnprobeError, match="threshold"):
        compare([run()], [run()], threshold=threshold)


def test_a_single_repeat_says_what_it_cannot_see():
    one = run(forward=[10.0], forward_backward=[30.0], train_step=[35.0])
    assert any("one repeat" in n for n in compare([one], [copy.deepcopy(one)]).notes)


def test_a_file_without_samples_is_judged_on_medians():
    bare = {"model": "m", "batch": 1, "device": "cpu", "dtype": "float32",
            "results": [{"mode": "forward", "median_ms": 10.0, "iqr_ms": 0.1}]}
    slow = copy.deepcopy(bare)
    slow["results"][0]["median_ms"] = 20.0
    verdict = compare([bare], [slow])
    assert not verdict.ok and verdict.notes


# ---------------------------------------------------------------- baselines


def _write(tmp_path, data) -> str:
    path = tmp_path / "base.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def _with(change) -> dict:
    data = run()
    change(data)
    return data


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a bench JSON"),
    ("[1, 2]", "not an object"),
    ({"model": "x"}, "lacks batch, device, dtype, results"),
    ({"runs": "many"}, "'runs' is not a non-empty list"),
    (_with(lambda d: d.update(batch="2")), "batch '2'"),
    (_with(lambda d: d.update(batch=True)), "batch True"),
    (_with(lambda d: d.update(results={"mode": "forward"})), "results that are not a non-empty list"),
    (_with(lambda d: d["results"][0].pop("mode")), "has mode None"),
    (_with(lambda d: d["results"][0].pop("median_ms")), "median_ms None"),
    (_with(lambda d: d["results"][0].update(median_ms=-3)), "median_ms -3"),
    (_with(lambda d: d["results"][0].update(median_ms=0)), "median_ms 0"),
    (_with(lambda d: d["results"][0].update(median_ms="fast")), "median_ms 'fast'"),
    (_with(lambda d: d["results"][0].update(samples_ms=[1, "x"])), "samples_ms"),
    (_with(lambda d: d["results"][0]["repeats"][1].update(median_ms=None)), "a repeat with median_ms None"),
    (_with(lambda d: d["results"][0].update(mode="sideways")), "mode 'sideways'"),
])
def test_bad_baselines(tmp_path, content, message):
    with pytest.raises(CnnprobeError, match="baseline") as error:
        load_baseline(_write(tmp_path, content))
    assert message in str(error.value)


def test_a_missing_baseline(tmp_path):
    with pytest.raises(CnnprobeError, match="does not exist"):
        load_baseline(tmp_path / "nope.json")


def test_a_sweep_file_is_a_baseline(tmp_path):
    path = _write(tmp_path, {"runs": [run(), run(batch=32)], "failures": []})
    assert [r["batch"] for r in load_baseline(path)] == [64, 32]


def test_a_mode_the_run_will_not_measure_is_named(tmp_path):
    baseline = load_baseline(_write(tmp_path, run()))
    with pytest.raises(CnnprobeError, match="forward_backward .* does not measure"):
        check_comparable(baseline, ["resnet18"], [64], "cuda", "float32", 10.0, [("forward", False)])


# ---------------------------------------------------------------- CLI, with deterministic timings


@pytest.fixture
def fixed_timings(monkeypatch):
    """Replace the timed runs by fixed samples per mode, so verdicts are deterministic; `slow` multiplies the
    timings of the named modes."""
    slow: dict[str, float] = {}
    medians = {"forward": 0.010, "forward_backward": 0.030, "train_step": 0.035}
    calls = []

    def time_blocks(self, fn):
        calls.append(self.mode.value)
        median = medians[self.mode.value] * slow.get(self.mode.value, 1.0)
        timed = [s / 1e3 for s in samples(1e3 * median, seed=len(calls))]
        machine = slow.get("_machine", 1.0)  # the whole machine slower: the reference kernel too
        reference = [machine * s / 1e3 for s in samples(1.0, seed=1000 + len(calls))]
        return Timed([machine * t for t in timed], reference, 1, 256)

    monkeypatch.setattr(ModeRunner, "time_blocks", time_blocks)
    slow["_calls"] = calls  # type: ignore[assignment]
    return slow


FAST = ["--warmup", "0", "--threads", "1", "--min-time", "0.01"]


def test_cli_save_writes_the_json_of_json_with_two_repeats(cli, tmp_path, fixed_timings):
    base = tmp_path / "base.json"
    printed = cli("bench", "lenet", *FAST, "--json", "--save", str(base)).json()
    saved = json.loads(base.read_text())
    assert saved == printed
    assert saved["repeat"] == 2 and all(len(m["repeats"]) == 2 for m in saved["results"])


def test_cli_compare_against_itself_passes(cli, tmp_path, fixed_timings):
    base = tmp_path / "base.json"
    assert cli("bench", "lenet", *FAST, "--save", str(base)).exit_code == 0
    result = cli("bench", "lenet", *FAST, "--compare", str(base))
    assert result.exit_code == 0, result.stderr
    assert "against the baseline" in result.stdout and "REGRESSED" not in result.stdout
    assert [row[-1] for row in table_rows(result.stdout.split("against the baseline", 1)[1], "new/old:")] == ["same"] * 3


def test_cli_compare_fails_naming_the_slowed_mode(cli, tmp_path, fixed_timings):
    base = tmp_path / "base.json"
    assert cli("bench", "lenet", *FAST, "--save", str(base)).exit_code == 0
    fixed_timings["train_step"] = 2.0  # deliberately slowed
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
    change = data["comparison"]["changes"][0]
    assert change["ratio_low"] > 1.8 and change["repeats_before"] == change["repeats_after"] == 2


def test_cli_threshold(cli, tmp_path, fixed_timings):
    base = tmp_path / "base.json"
    cli("bench", "lenet", *FAST, "--save", str(base))
    fixed_timings["train_step"] = 1.3
    assert cli("bench", "lenet", *FAST, "--compare", str(base), "--threshold", "50").exit_code == 0
    assert cli("bench", "lenet", *FAST, "--compare", str(base), "--threshold", "20").exit_code == 1


@pytest.mark.parametrize("args, message", [
    (["--batch", "8"], "cannot compare"), (["--dtype", "bfloat16"], "cannot compare"),
    (["--batch", "auto"], "not --batch auto"), (["--mode", "forward"], "does not measure"),
    (["--threshold", "0"], "--threshold must be a positive"), (["--threshold", "nan"], "--threshold must be"),
    (["--threshold", "inf"], "--threshold must be"),
])
def test_cli_incomparable_runs_fail_before_timing(cli, tmp_path, fixed_timings, args, message):
    base = tmp_path / "base.json"
    cli("bench", "lenet", *FAST, "--save", str(base))
    timed = len(fixed_timings["_calls"])
    assert message in one_error_line(cli("bench", "lenet", *FAST, *args, "--compare", str(base)))
    assert len(fixed_timings["_calls"]) == timed  # nothing was timed


@pytest.mark.parametrize("change", [lambda d: d["results"][0].pop("median_ms"), lambda d: d.update(batch="1"),
                                    lambda d: d.update(results={}), lambda d: d["results"][1].update(mode=None)])
def test_cli_malformed_baseline_fails_before_timing(cli, tmp_path, fixed_timings, change):
    data = run(model="lenet", batch=1, device="cpu")
    change(data)
    path = _write(tmp_path, data)
    assert "baseline" in one_error_line(cli("bench", "lenet", *FAST, "--compare", path))
    assert fixed_timings["_calls"] == []


def test_cli_missing_baseline(cli, tmp_path):
    assert "does not exist" in one_error_line(cli("bench", "lenet", "--compare", str(tmp_path / "nope.json")))


def test_cli_save_into_a_missing_folder(cli, tmp_path, fixed_timings):
    line = one_error_line(cli("bench", "lenet", *FAST, "--mode", "forward", "--save", str(tmp_path / "no" / "b.json")))
    assert "does not exist" in line


# ---------------------------------------------------------------- a machine that changes speed, a blind gate


def with_reference(data: dict, machine: float = 1.0, seed: int = 0) -> dict:
    """A run whose every block has a reference-kernel time beside it; `machine` scales steps and reference
    alike, as a machine slowed by other work does."""
    data = copy.deepcopy(data)
    for m in data["results"]:
        for i, r in enumerate(m["repeats"]):
            r["samples_ms"] = [machine * s for s in r["samples_ms"]]
            r["reference_samples_ms"] = [machine * s for s in samples(1.0, n=len(r["samples_ms"]), seed=seed + i)]
            r["reference_n"] = 256
            r["median_ms"] *= machine
        m["median_ms"] *= machine
    return data


def test_a_machine_twice_as_slow_passes_unchanged_code_and_says_so():
    """Everything twice as slow, steps and reference alike: the raw ratio is 2, the judged one 1."""
    verdict = compare([with_reference(run())], [with_reference(run(), machine=2.0, seed=7)])
    assert verdict.ok and not verdict.blind
    for c in verdict.changes:
        assert c.judged_on == "normalized" and c.ratio == pytest.approx(1, abs=0.03)
        assert c.raw_ratio == pytest.approx(2, rel=0.03) and c.machine_ratio == pytest.approx(2, rel=0.03)
    assert any("machine itself changed speed" in n for n in verdict.notes)
    # the same files judged on the step alone (no reference) would have failed unchanged code
    bare = [copy.deepcopy(run())], [run(forward=20.0, forward_backward=60.0, train_step=70.0)]
    assert not compare(*bare).ok


def test_a_twice_slower_model_fails_on_a_slower_machine():
    slow_model = run(forward=10.0, forward_backward=30.0, train_step=70.0)
    verdict = compare([with_reference(run())], [with_reference(slow_model, machine=1.5, seed=7)])
    assert [c.mode for c in verdict.regressions] == ["train_step"]
    assert verdict.regressions[0].ratio == pytest.approx(2, rel=0.03)
    assert verdict.regressions[0].raw_ratio == pytest.approx(3, rel=0.03)


def test_a_baseline_without_reference_is_judged_raw_and_says_so():
    verdict = compare([run()], [with_reference(run())])
    assert verdict.ok and all(c.judged_on == "raw" for c in verdict.changes)
    assert any("no reference-kernel timings" in n for n in verdict.notes)


def test_a_noisy_baseline_is_a_refusal_not_a_pass():
    """Issue 16 §9: a baseline whose two repeats were 0.45 and 1.78 ms let a far slower run pass."""
    noisy = run(forward=[0.45, 1.78], forward_backward=[30.0, 30.0], train_step=[35.0, 35.0])
    verdict = compare([noisy], [run(forward=[1.0, 1.3], forward_backward=[30.0, 30.0], train_step=[35.0, 35.0])])
    assert [c.mode for c in verdict.blind] == ["forward"] and not verdict.regressions
    assert verdict.to_dict()["blind"] == ["resnet18 b64 forward"]
    # a regression proven despite the noise is still a regression, not a refusal
    proven = compare([noisy], [run(forward=[40.0, 41.0], forward_backward=[30.0, 30.0], train_step=[35.0, 35.0])])
    assert [c.mode for c in proven.regressions] == ["forward"] and not proven.blind


def test_a_different_thread_count_or_machine_is_said():
    old, new = run(), run()
    old.update(threads=2, device_name="AMD EPYC"), new.update(threads=1, device_name="Intel Xeon")
    notes = compare([old], [new]).notes
    assert any("thread count differs" in n and "2 then, 1 now" in n for n in notes)
    assert any("machine differs" in n for n in notes)
    assert not any("differs" in n for n in compare([old], [copy.deepcopy(old)]).notes)


def test_cli_machine_slower_in_compare_passes(cli, tmp_path, fixed_timings):
    base = tmp_path / "base.json"
    assert cli("bench", "lenet", *FAST, "--save", str(base)).exit_code == 0
    fixed_timings["_machine"] = 2.0
    result = cli("bench", "lenet", *FAST, "--json", "--compare", str(base))
    assert result.exit_code == 0, result.stderr
    changes = result.json()["comparison"]["changes"]
    assert all(c["raw_ratio"] > 1.8 and c["ratio"] < 1.1 and c["judged_on"] == "normalized" for c in changes)
    assert all(c["machine_ratio"] == pytest.approx(2, rel=0.05) for c in changes)


def test_cli_a_noisy_baseline_exits_2_with_one_line(cli, tmp_path, fixed_timings):
    base = tmp_path / "base.json"
    assert cli("bench", "lenet", *FAST, "--save", str(base)).exit_code == 0
    data = json.loads(base.read_text())
    second = data["results"][0]["repeats"][1]
    second["samples_ms"] = [4 * s for s in second["samples_ms"]]  # the repeats 4× apart
    second["median_ms"] *= 4
    base.write_text(json.dumps(data))
    result = cli("bench", "lenet", *FAST, "--compare", str(base))
    assert result.exit_code == 2
    lines = stderr_lines(result.stderr)
    assert len(lines) == 1 and "cannot judge" in lines[0] and "lenet b1 forward" in lines[0], result.stderr
    assert "cannot tell" in result.stdout
