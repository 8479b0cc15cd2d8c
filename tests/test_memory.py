"""`cnnprobe memory`: steady-state peaks predicted on fake tensors, checked against real steps, hand formulas,
torch's MemTracker, and a real run at the batch a budget allows."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnprobe.benchmark import timing
from cnnprobe.core.enums import Mode
from cnnprobe.memory.predict import CUDA_ROUND, Predictor, memory, parse_budget
from cnnprobe.training.config import BenchConfig

from .conftest import one_error_line

FAST = dict(min_time=0.01, max_time=0.05, warmup=1, threads=1, count_flops=False, peak=False)
LENET = 61_706


@pytest.mark.parametrize("name, size, batch, optimizer, recipe", [
    ("lenet", None, 8, "adam", None),
    ("lenet", None, 8, "momentum", "classifier.5"),
    ("cnnprobe:resnet18", "3,32,32", 4, "adamw", "layer4,fc"),
    ("mobilenet_v3_small", "3,64,64", 2, "sgd", "classifier"),
])
def test_predictions_match_real_steps_within_3_percent(name, size, batch, optimizer, recipe):
    """Every mode, with and without the recipe: the prediction against the same step run for real and counted
    storage by storage; the breakdown category by category within 5%."""
    measured = timing.bench(name, batch=batch, input_size=size, optimizer=optimizer, freeze_except=recipe, predict=False,
                            **FAST)
    predicted = memory(name, batch=batch, input_size=size, optimizer=optimizer, freeze_except=recipe)
    assert [(r.mode, r.frozen) for r in predicted.results] == [(r.mode, r.frozen) for r in measured.results]
    for m, p in zip(measured.results, predicted.results):
        assert p.predicted_peak_bytes == pytest.approx(m.peak_memory_bytes, rel=0.03), (m.mode, m.frozen)
        for category, size_ in m.memory_breakdown.items():
            slack = 0.03 * m.peak_memory_bytes if category == "workspace" else 64  # the allocator's excess
            assert p.breakdown[category] == pytest.approx(size_, rel=0.05, abs=slack), (m.mode, category)


def test_the_breakdown_against_hand_formulas():
    """lenet, Adam, batch 8: parameters 4 bytes each; Adam keeps two moments per parameter and a 4-byte step
    per tensor; the inputs are 8 images and 8 int64 targets."""
    r = memory("lenet", batch=8, optimizer="adam", mode="train_step").results[0]
    assert r.breakdown["parameters"] == 4 * LENET
    assert r.breakdown["optimizer_state"] == 2 * 4 * LENET + 4 * 10
    assert r.breakdown["inputs"] == 8 * 28 * 28 * 4 + 8 * 8
    assert sum(r.breakdown.values()) == r.predicted_peak_bytes
    assert r.predicted_peak_bytes - r.breakdown["workspace"] == r.tensor_peak_bytes


def test_fwd_bwd_prediction_matches_torchs_memtracker():
    """An independent tensor-level count: MemTracker over a real first fwd+bwd of resnet18 (the same as the
    steady state, since the step frees the last gradients first), against the prediction's own tensor peak."""
    mem_tracker = pytest.importorskip("torch.distributed._tools.mem_tracker")
    predicted = memory("resnet18", batch=2, mode="forward_backward").results[0].tensor_peak_bytes
    torch.manual_seed(0)
    from cnnprobe.models.build import build_model

    model = build_model("resnet18", device="cpu").module.train()
    x, y = torch.randn(2, 3, 224, 224), torch.randint(0, 1000, (2,))
    tracker = mem_tracker.MemTracker()
    tracker.track_external(model, x, y)
    with tracker:
        nn.functional.cross_entropy(model(x), y).backward()
    assert predicted == pytest.approx(tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"], rel=0.03)


def test_freezing_saves_state_and_activations_and_the_frozen_prefix_saves_nothing():
    r = memory("cnnprobe:resnet18", batch=4, input_size="3,64,64", optimizer="adam", freeze_except="layer4,fc")
    saving = r.freezing_saves("train_step")
    trainable = 8_393_728 + 513_000
    frozen_state = 11_689_512 - trainable
    assert saving["gradients_and_optimizer_state"] > 3 * 4 * frozen_state * 0.9  # grads and two Adam moments
    frozen = r.result("forward_backward", True)
    assert frozen.saved_by_module and all(name.split(".")[0] in ("layer3", "layer4", "avgpool", "fc", "")
                                          for name in frozen.saved_by_module)  # layer3's output feeds layer4
    full = r.result("forward_backward", False)
    assert sum(frozen.saved_by_module.values()) < 0.5 * sum(full.saved_by_module.values())
    assert r.predicted_peak_bytes["train_step"] == r.result("train_step", True).predicted_peak_bytes


class _StepSettingsOnly:
    """A BenchConfig that refuses to give its timing settings: a prediction must not need them."""

    TIMING = ("min_time", "max_time", "warmup", "repeat", "peak", "count_flops", "predict")

    def __init__(self, config):
        self._config = config

    def __getattr__(self, name):
        if name in self.TIMING:
            raise AssertionError(f"the memory prediction read the benchmark's {name}")
        return getattr(self._config, name)

    def replace(self, **changes):
        return _StepSettingsOnly(self._config.replace(**changes))


def test_the_prediction_needs_no_timing_setting():
    options = dict(optimizer="adam", freeze_except="classifier.5")
    guarded = Predictor("lenet", _StepSettingsOnly(BenchConfig(**options))).at(2, workspaces=False)
    timed = Predictor("lenet", BenchConfig(min_time=7.0, max_time=70.0, warmup=9, repeat=3, **options))
    assert [(r.mode, r.frozen, r.predicted_peak_bytes) for r in guarded.results] == \
        [(r.mode, r.frozen, r.predicted_peak_bytes) for r in timed.at(2, workspaces=False).results]
    assert len(guarded.results) == 5 and guarded.trainable_params == 84 * 10 + 10  # the plan: classifier.5


def test_cuda_predictions_round_to_the_allocator():
    cpu = memory("lenet", batch=2, optimizer="adam", mode="train_step")
    cuda = memory("lenet", batch=2, optimizer="adam", mode="train_step", device="cuda")
    c, g = cpu.results[0], cuda.results[0]
    assert all(v % CUDA_ROUND == 0 for v in g.breakdown.values())
    lenet_tensors = [6 * 25, 6, 16 * 6 * 25, 16, 400 * 120, 120, 120 * 84, 84, 84 * 10, 10]  # weights and biases
    assert g.breakdown["parameters"] == sum(CUDA_ROUND * -(-4 * n // CUDA_ROUND) for n in lenet_tensors)
    assert c.breakdown["parameters"] == 4 * sum(lenet_tensors)
    assert any("cuDNN" in n for n in cuda.notes) and not cpu.notes


def test_budget_gives_a_batch_that_fits_and_really_runs_under_it():
    budget = 3 * 2**20
    r = memory("lenet", mode="train_step", optimizer="adam", budget=budget)
    b = r.budget
    assert b.batch > 1 and b.peak_bytes <= budget < b.next_peak_bytes
    measured = timing.bench("lenet", batch=b.batch, mode="train_step", optimizer="adam", predict=False, **FAST)
    assert measured.results[0].peak_memory_bytes <= budget
    over = timing.bench("lenet", batch=b.batch + 1, mode="train_step", optimizer="adam", predict=False, **FAST)
    assert over.results[0].peak_memory_bytes > budget


@pytest.mark.slow  # the answer and its neighbour calibrated: bfloat16 kernels run for real on the CPU
def test_budget_on_resnet50_bf16_adam():
    r = memory("resnet50", mode="train_step", optimizer="adam", dtype="bfloat16", freeze_except="layer4,fc",
               budget="2GiB")
    assert r.budget.peak_bytes <= 2 * 2**30 < r.budget.next_peak_bytes
    assert r.budget.predictions <= 12  # a line through two predictions, a few around it, the answer calibrated


@pytest.mark.parametrize("text, value", [("24GiB", 24 * 2**30), ("80GB", 80 * 10**9), ("512 MiB", 512 * 2**20),
                                         ("1.5gib", int(1.5 * 2**30)), ("1000", 1000)])
def test_parse_budget(text, value):
    assert parse_budget(text) == value


def test_prediction_allocates_nothing_for_the_model():
    """vgg16's 528 MiB of weights never exist: building and predicting stays far below them."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Predictor("vgg16", BenchConfig(mode="forward")).at(1)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    assert grown < 200 * 2**20


def test_bench_prints_the_prediction_beside_the_measurement(cli):
    run = cli("bench", "lenet", "--batch", "4", "--min-time", "0.02", "--threads", "1")
    assert run.exit_code == 0 and "predicted/measured" in run.stdout
    data = cli("bench", "lenet", "--batch", "4", "--min-time", "0.02", "--threads", "1", "--json").json()
    for r in data["results"]:
        assert r["predicted_peak_bytes"] == pytest.approx(r["peak_memory_bytes"], rel=0.03)


def test_cli_table_and_json_contract(cli):
    run = cli("memory", "cnnprobe:resnet18", "--input-size", "3,64,64", "--batch", "2", "--freeze-except", "layer4,fc",
              "--budget", "1GiB")
    assert run.exit_code == 0, run.stderr
    for text in ("steady-state peak", "optimizer adam", "freezing saves", "activations saved for backward",
                 "--budget 1.000 GiB"):
        assert text in run.stdout
    data = cli("memory", "lenet", "--batch", "2", "--json").json()
    assert set(data["predicted_peak_bytes"]) == {"forward", "forward_backward", "train_step"}
    assert set(data["breakdown"]["train_step"]) == {"parameters", "buffers", "gradients", "optimizer_state", "inputs",
                                                    "activations", "temporaries", "workspace"}
    assert all(r["tensor_peak_bytes"] <= r["predicted_peak_bytes"] for r in data["results"])


@pytest.mark.parametrize("args, message", [
    (["--budget", "lots"], "malformed --budget 'lots'"),
    (["--budget", "-3GiB"], "malformed --budget"),
    (["--budget", "10KiB"], "even batch 1 needs"),
    (["--mode", "sideways"], "Invalid value for '--mode'"),
    (["--optimizer", "lion"], "Invalid value for '--optimizer'"),
    (["--top", "0"], "--top must be positive"),
    (["--head", ""], "--head is empty"),
])
def test_cli_bad_input(cli, args, message):
    run = cli("memory", "lenet", *args)
    assert message in one_error_line(run) and run.exit_code == 2


def test_a_model_that_reads_values_cannot_be_predicted(cli):
    from pathlib import Path

    path = Path(__file__).parent / "data" / "models.py"
    line = one_error_line(cli("memory", f"{path}:ReadsValues"))
    assert "reads tensor values" in line and "bench" in line


def test_predictions_start_bench_batch_auto(monkeypatch):
    """`--batch auto` starts where the prediction says the batch fits, not at 1."""
    from cnnprobe.benchmark import batchsearch

    tried = []
    real = batchsearch.search_batch
    monkeypatch.setattr(batchsearch, "search_batch", lambda fits, start, limit: tried.append(start) or real(
        lambda b: b <= 3, start, limit))
    assert batchsearch.auto_batch("lenet", BenchConfig(mode=Mode.FORWARD, **FAST)) == 3
    assert tried and tried[0] > 1
