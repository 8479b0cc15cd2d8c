"""The committed reports hold what they claim: every run of the CPU baseline obeys the invariants of a true
measurement, and the baseline is one `bench --compare` accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cnnprobe.benchmark.regression import load_baseline

REPORTS = Path(__file__).resolve().parent.parent / "reports"


@pytest.fixture(scope="module")
def baseline() -> list[dict]:
    return json.loads((REPORTS / "bench-cpu.json").read_text())["runs"]


def test_the_cpu_baseline_is_a_baseline(baseline):
    assert load_baseline(REPORTS / "bench-cpu.json") == baseline
    assert all(len(m["repeats"]) >= 2 for run in baseline for m in run["results"])


def test_no_share_of_peak_above_100_percent(baseline):
    for run in baseline:
        for m in run["results"]:
            assert 0 < m["peak_share"] <= 1, (run["model"], run["batch"], m["mode"])
            assert m["tflops"] * 1e12 == pytest.approx(m["flops"] / (m["median_ms"] / 1e3))


def test_peak_memory_is_ordered_by_mode_and_adds_up(baseline):
    """forward ≤ forward_backward; train_step ≥ forward_backward less the gradients that zero_grad frees;
    every breakdown sums to its peak and holds the model's weights."""
    for run in baseline:
        modes = {m["mode"]: m for m in run["results"]}
        fwd, fb, train = (modes[k] for k in ("forward", "forward_backward", "train_step"))
        assert fwd["peak_memory_bytes"] <= fb["peak_memory_bytes"]
        assert train["peak_memory_bytes"] >= fb["peak_memory_bytes"] - fb["memory_breakdown"]["gradients"]
        for m in run["results"]:
            assert sum(m["memory_breakdown"].values()) == m["peak_memory_bytes"]
            assert m["memory_breakdown"]["parameters"] == 4 * run["total_params"]  # float32


def test_phases_add_up_to_each_step(baseline):
    for run in baseline:
        for m in run["results"]:
            phases = sum(m[k] for k in ("forward_ms", "backward_ms", "optimizer_ms") if m[k] is not None)
            assert phases == pytest.approx(m["median_ms"], rel=0.15), (run["model"], run["batch"], m["mode"])


def test_every_backward_forward_ratio_in_the_parity_report_lies_in_one_to_two():
    """The report covers every registered torchvision model; every model that trains has a backward/forward
    ratio in [1, 2] (the int8 models, forward-only, have none)."""
    from cnnprobe.models.registry import list_models

    rows = [line.strip("|").split("|") for line in (REPORTS / "torchvision-parity.md").read_text().splitlines()
            if re.match(r"\| [a-z]", line) and "model" not in line]
    specs = {s.name: s.task.value for s in list_models("torchvision:*")}
    assert {cells[1].strip(): cells[0].strip() for cells in rows} == specs
    ratios = {cells[1].strip(): cells[-1].strip() for cells in rows}
    assert {name for name, r in ratios.items() if r == "-"} == {n for n, t in specs.items() if t == "quantized"}
    assert all(1.0 <= float(r) <= 2.0 for r in ratios.values() if r != "-")
