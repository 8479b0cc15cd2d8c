"""`bench`: modes, phases, memory, the peak, settings, freezing, sweeps, outputs, and every bad input.

Timing goals live in benchmarks/. Numbers here are checked against references that did not come from the
code under test: FLOPs written out by hand, step times taken with a plain `perf_counter` loop, memory
counted by torch's own MemTracker, and invariants a wrong figure would break.
"""

from __future__ import annotations

import csv
import json
import re
import statistics
import time

import pytest
import torch
from torch import nn

import cnnprobe
from cnnprobe.benchmark import timing
from cnnprobe.benchmark.batchsearch import fits_on_cpu
from cnnprobe.benchmark.runners import (
    BenchSetup,
    ForwardBackwardRunner,
    ForwardRunner,
    TrainStepRunner,
)
from cnnprobe.benchmark.sweep import parse_batches, sweep
from cnnprobe.core.errors import CnnprobeError, InputSizeError, OutOfMemory, UsageError
from cnnprobe.core.search import search_batch as find_max_batch
from cnnprobe.runtime import flops_peak as peak_module
from cnnprobe.runtime.flops_peak import datasheet
from cnnprobe.training.config import BenchConfig

from .conftest import one_error_line, stderr_lines, table_rows
from .load import Load

FAST = dict(min_time=0.02, max_time=0.2, warmup=1, threads=1)
FAST_ARGS = ["--min-time", "0.02", "--max-time", "0.2", "--warmup", "1", "--threads", "1"]
BENCH_FOOTER = ("!:", "times in ms", "peak memory, measured", "peak memory and step time", "step time, measured", "lenet b", "resnet18 b", "alexnet b")  # the lines that follow the bench table
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# LeNet by hand: conv1 1→6 5×5 at 28×28, conv2 6→16 5×5 at 10×10, then 400→120→84→10.
LENET_MACS = 1 * 6 * 25 * 28 * 28 + 6 * 16 * 25 * 10 * 10 + 400 * 120 + 120 * 84 + 84 * 10
CONV1_MACS = 1 * 6 * 25 * 28 * 28
# Backward: every layer's weight gradient (its forward MACs), every input gradient but conv1's.
LENET_BACKWARD_MACS = LENET_MACS + (LENET_MACS - CONV1_MACS)


def plain_step_ms(mode: str, batch: int, blocks: int = 10, block_s: float = 0.01) -> float:
    """A LeNet step timed with nothing but perf_counter: the independent reference for bench's figures. The
    statistic is bench's: the median over blocks of a block's mean step."""
    torch.manual_seed(0)
    model = cnnprobe.build_model("lenet", device="cpu").module
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step() -> None:
        if mode == "forward":
            model.eval()
            with torch.inference_mode():
                model(x)
            return
        model.train()
        nn.functional.cross_entropy(model(x), y).backward()
        if mode == "train_step":
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(5):
            step()
        start = time.perf_counter()
        step()
        number = max(1, round(block_s / (time.perf_counter() - start)))
        samples = []
        for _ in range(blocks):
            start = time.perf_counter()
            for _ in range(number):
                step()
            samples.append((time.perf_counter() - start) / number)
        return 1e3 * statistics.median(samples)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lenet8():
    return timing.bench("lenet", batch=8, min_time=0.3, max_time=2.0, warmup=3, threads=1)


def test_all_modes_on_lenet(lenet8):
    r = lenet8
    assert [m.mode for m in r.results] == ["forward", "forward_backward", "train_step"]
    assert (r.model, r.device, r.batch, r.dtype, r.threads) == ("lenet", "cpu", 8, "float32", 1)
    for m in r.results:
        assert m.median_ms > 0 and m.iqr_ms >= 0 and m.runs >= 1 and m.samples_ms
        assert m.noisy == (m.iqr_ms > 0.1 * m.median_ms)


def test_flops_per_step_match_the_hand_count(lenet8):
    fwd, fb, train = lenet8.results
    assert fwd.flops == 2 * LENET_MACS * 8
    assert fb.flops == train.flops == 2 * (LENET_MACS + LENET_BACKWARD_MACS) * 8


@pytest.mark.parametrize("mode", ["forward", "forward_backward", "train_step"])
def test_times_and_rates_agree_with_a_plain_perf_counter_loop(mode):
    """A unit slip (ms for s), a forgotten batch or a step timed twice is off by 2× or more; machine noise
    is not. Both sides are the same statistic (the median over blocks of a block's mean step), measured
    alternately five times so that load coming and going falls on both; the median of the five ratios is
    judged. Rates are checked against the plain loop too, not against bench's own median. Batch 32: a step of
    a few milliseconds, so that a scheduler's time slice on a busy machine is a share of a step, not a step."""
    times, rates, tflops = [], [], []
    for _ in range(5):
        r = timing.bench("lenet", batch=32, mode=mode, min_time=0.2, max_time=1.0, warmup=3, threads=1, peak=False,
                         memory=False, predict=False).results[0]
        plain_ms = plain_step_ms(mode, 32, block_s=0.02)
        times.append(r.median_ms / plain_ms)
        rates.append(r.samples_per_s / (32 / (plain_ms / 1e3)))
        tflops.append(r.tflops / (r.flops / (plain_ms / 1e3) / 1e12))
    assert 0.5 < statistics.median(times) < 2.0, times
    assert 0.5 < statistics.median(rates) < 2.0, rates
    assert 0.5 < statistics.median(tflops) < 2.0, tflops


def test_phases_add_up_to_the_step(lenet8):
    """Forward, backward and optimizer are timed inside the same steps: their medians add up to the
    whole step's median (within 15%), and each is measured, never clamped or derived."""
    fwd, fb, train = lenet8.results
    assert fwd.backward_ms is None and fwd.optimizer_ms is None
    assert fwd.forward_ms == pytest.approx(fwd.median_ms, rel=0.15)
    assert fb.optimizer_ms is None and fb.forward_ms > 0 and fb.backward_ms > 0
    assert train.optimizer_ms > 0
    for m in (fb, train):
        assert m.phases_ms == pytest.approx(m.median_ms, rel=0.15), (m.mode, m.phases_ms, m.median_ms)
        assert m.phase_steps == m.runs  # the timed steps, and only those (not the calibration)
        assert m.forward_iqr_ms >= 0 and m.backward_iqr_ms >= 0
    # the same backward pass in both modes, measured at different moments: each as a multiple of the reference
    # kernel timed between its own blocks, so that the machine's speed at each moment cancels
    def backward_per_reference(m):
        return m.step_per_reference * m.backward_ms / m.median_ms

    assert backward_per_reference(train) > 0.5 * backward_per_reference(fb), (train.backward_ms, fb.backward_ms)


def test_figures_say_how_many_blocks_they_rest_on(lenet8):
    for m in lenet8.results:
        assert m.blocks == len(m.samples_ms) == len(m.reference_samples_ms) >= 10 and not m.few_blocks
        assert m.runs == m.blocks * m.steps_per_block


def test_too_few_blocks_are_flagged(cli):
    """A step longer than --max-time allows ten blocks of: no `IQR` without a mark from too few blocks."""
    r = timing.bench("lenet", batch=1, mode="forward", min_time=0.001, max_time=0.001, warmup=0, threads=1)
    m = r.results[0]
    assert m.blocks < 10 and m.few_blocks
    out = cli("bench", "lenet", "--mode", "forward", "--min-time", "0.001", "--max-time", "0.001", "--threads", "1")
    row = table_rows(out.stdout, until=BENCH_FOOTER)[0]
    text = " ".join(out.stdout.split())
    assert row[2].endswith("?") and "?: rests on fewer than 10 timed blocks" in text
    said = re.search(r"each the median over timed blocks \(at least (\d+) blocks of at least (\d+) steps", text)
    assert said is not None and int(said[1]) < 10 and int(said[2]) >= 1


@pytest.mark.slow
def test_phases_and_step_agree_under_load():
    """Issue 16 §7 and §9: with two busy-loop processes on the machine, the phases (forward, backward,
    optimizer) add up to the step within 15%, because both are medians over the same timed blocks; they
    were medians of single steps against a median of block means, and came apart under load."""
    with Load() as load:
        load.set(2)
        r = timing.bench("lenet", batch=8, mode="train_step", min_time=0.3, max_time=2.0, warmup=2, threads=1,
                         count_flops=False, peak=False, memory=False, predict=False)
    m = r.results[0]
    assert m.phases_ms == pytest.approx(m.median_ms, rel=0.15), (m.forward_ms, m.backward_ms, m.optimizer_ms,
                                                                m.median_ms)
    assert m.phase_steps == m.runs


def test_peak_memory_breakdown_adds_up_and_holds_the_weights(lenet8):
    weights = 61_706 * 4  # LeNet's parameters, float32
    inputs = 8 * 1 * 28 * 28 * 4 + 8 * 8  # the batch and its int64 targets
    fwd, fb, train = lenet8.results
    for m in lenet8.results:
        assert m.memory_method == "allocator"  # the CPU allocator's own peak; the tensor count its breakdown
        assert sum(m.memory_breakdown.values()) == m.peak_memory_bytes
        assert m.peak_memory_bytes - m.memory_breakdown["workspace"] == m.tensor_peak_bytes
        assert m.memory_breakdown["parameters"] == weights
        assert m.memory_breakdown["inputs"] == inputs
    assert fwd.memory_breakdown["gradients"] == 0
    assert fb.memory_breakdown["gradients"] <= weights and train.memory_breakdown["optimizer_state"] == 0  # plain SGD
    assert fwd.peak_memory_bytes <= fb.peak_memory_bytes  # the relation between modes
    assert train.peak_memory_bytes >= fb.peak_memory_bytes - weights  # less what zero_grad frees


def test_fwd_bwd_peak_memory_of_resnet18_matches_torchs_memtracker():
    """An independent tensor-level count: torch's MemTracker over the same step of a fresh resnet18.
    A forward_backward step frees last step's gradients first, so its steady-state peak is the first step's."""
    mem_tracker = pytest.importorskip("torch.distributed._tools.mem_tracker")
    r = timing.bench("resnet18", batch=4, mode="forward_backward", min_time=0.01, max_time=0.05, warmup=1,
                     count_flops=False, peak=False)
    ours = r.results[0].tensor_peak_bytes  # like with like: the tensor count beside the allocator's peak
    torch.manual_seed(0)
    model = cnnprobe.build_model("resnet18", device="cpu").module.train()
    x, y = torch.randn(4, 3, 224, 224), torch.randint(0, 1000, (4,))
    tracker = mem_tracker.MemTracker()
    tracker.track_external(model, x, y)
    with tracker:
        nn.functional.cross_entropy(model(x), y).backward()
    theirs = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    assert ours == pytest.approx(theirs, rel=0.05)
    breakdown = r.results[0].memory_breakdown
    assert breakdown["parameters"] == 11_689_512 * 4
    assert breakdown["activations"] > breakdown["parameters"]  # at 224 px, batch 4: what autograd saves dominates


def test_adam_state_and_freezing_show_in_the_breakdown():
    """Adam keeps two float32 moments and a scalar step per trainable tensor; freezing all but the head keeps
    them for the head alone, and the frozen backbone saves no activations for backward."""
    r = timing.bench("cnnprobe:resnet18", batch=2, input_size="3,32,32", optimizer="adam", freeze_except="fc",
                     min_time=0.01, max_time=0.05, warmup=2, count_flops=False, peak=False)
    frozen, full = r.result("train_step", True), r.result("train_step", False)
    fc = 512 * 1000 + 1000
    assert frozen.memory_breakdown["optimizer_state"] == 2 * 4 * fc + 4 * 2  # fc.weight and fc.bias
    assert full.memory_breakdown["optimizer_state"] == 2 * 4 * 11_689_512 + 4 * 62  # 62 parameter tensors
    assert frozen.memory_breakdown["gradients"] == 4 * fc and full.memory_breakdown["gradients"] == 4 * 11_689_512
    assert frozen.peak_memory_bytes < full.peak_memory_bytes
    saved_frozen = r.result("forward_backward", True).memory_breakdown["activations"]
    saved_full = r.result("forward_backward", False).memory_breakdown["activations"]
    assert saved_frozen < 0.05 * saved_full  # only what fc needs: its 2×512 input and the logits


def test_forward_runs_in_eval_under_inference_mode_and_the_rest_in_train_mode():
    seen = []
    setup = BenchSetup("lenet", 2, BenchConfig(**FAST)).build()
    setup.raw.register_forward_hook(lambda m, i, o: seen.append((m.training, torch.is_inference_mode_enabled())))
    ForwardRunner(setup).step()()
    ForwardBackwardRunner(setup).step()()
    assert seen == [(False, True), (True, False)]


def test_train_step_updates_weights_and_clears_gradients():
    setup = BenchSetup("lenet", 2, BenchConfig(**FAST)).build()
    before = setup.raw.classifier[5].weight.detach().clone()
    TrainStepRunner(setup).step()()
    assert not torch.equal(before, setup.raw.classifier[5].weight)
    assert all(p.grad is None for p in setup.raw.parameters())


@pytest.mark.parametrize("optimizer, kind", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                             ("adamw", torch.optim.AdamW)])
def test_optimizer_choice(optimizer, kind):
    setup = BenchSetup("lenet", 2, BenchConfig(optimizer=optimizer, **FAST)).build()
    runner = TrainStepRunner(setup)
    runner.step()
    assert type(runner.optimizer) is kind


def test_threads_are_set_and_reported_and_restored():
    before = torch.get_num_threads()
    r = timing.bench("lenet", batch=2, mode="forward", **{**FAST, "threads": 2})
    assert r.threads == 2 and r.settings["threads"] == 2
    assert torch.get_num_threads() == before


def test_settings_state_cuda_switches():
    """The CUDA branch of the settings, checked without a GPU: cudnn.benchmark and TF32 are stated."""
    from cnnprobe.training.config import settings

    s = settings(BenchConfig(device="cuda", dtype="bfloat16"), 4)
    assert {"cudnn_benchmark", "tf32_matmul", "tf32_cudnn", "float32_matmul_precision"} <= set(s)
    assert s["autocast"] == "bfloat16"


# the peak in the precision in use is one code path for both: bfloat16 proves it, and float16's products on a
# CPU (no native float16 matmul) took half a minute of the suite to measure
@pytest.mark.parametrize("dtype, peak", [("bfloat16", True), ("float16", False)])
def test_lower_precision_runs_under_autocast(dtype, peak):
    r = timing.bench("lenet", batch=2, dtype=dtype, peak=peak, **FAST)
    assert r.dtype == dtype and r.settings["autocast"] == dtype
    assert len(r.results) == 3
    if peak:
        assert all(0 < m.peak_share <= 1 for m in r.results), r.peak
    else:
        assert all(m.peak_share is None for m in r.results)


def test_channels_last():
    setup = BenchSetup("cnnprobe:resnet18", 1, BenchConfig(channels_last=True, input_size="3,32,32", **FAST)).build()
    assert setup.inputs[0].is_contiguous(memory_format=torch.channels_last)
    assert setup.raw.conv1.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_compile():
    r = timing.bench("lenet", batch=2, mode="forward", compile=True, **FAST)
    assert r.settings["compile"] and r.results[0].median_ms > 0


def test_freezing_measures_both_and_reports_the_saving():
    r = timing.bench("cnnprobe:resnet18", batch=2, input_size="3,32,32", freeze_except="layer4,fc", **FAST)
    keys = [(m.mode, m.frozen) for m in r.results]
    assert keys == [("forward", False), ("forward_backward", True), ("train_step", True),
                    ("forward_backward", False), ("train_step", False)]
    assert keys == BenchConfig(freeze_except="layer4,fc").planned()
    frozen, full = r.result("train_step", True), r.result("train_step", False)
    assert frozen.flops < full.flops  # the frozen backward counts fewer FLOPs
    assert r.trainable_params == 8_393_728 + 513_000  # layer4 and fc, as torchvision's resnet18 has them
    assert r.to_dict()["frozen_saving"]["train_step"] == r.frozen_saving("train_step")


def test_nothing_trainable_is_an_error():
    with pytest.raises(CnnprobeError, match="nothing is trainable"):
        timing.bench("lenet", batch=1, freeze_all=True, **FAST)


def test_a_model_without_parameters_says_so():
    with pytest.raises(CnnprobeError, match="has no parameters"):
        timing.bench(nn.Sequential(nn.ReLU()), batch=1, input_size="4,4", **FAST)


def test_forward_only_with_freeze_all_needs_nothing_trainable():
    r = timing.bench("lenet", batch=1, mode="forward", freeze_all=True, **FAST)
    assert [m.mode for m in r.results] == ["forward"]


def test_repeat_keeps_every_run():
    r = timing.bench("lenet", batch=2, mode="forward", repeat=3, **FAST)
    m = r.results[0]
    assert r.repeat == 3 and len(m.repeats) == 3
    assert sorted(x.median_ms for x in m.repeats)[1] == m.median_ms  # the median of the three medians
    assert len(m.samples_ms) == sum(len(x.samples_ms) for x in m.repeats)


def test_a_mode_result_is_made_from_its_samples_in_one_place():
    from cnnprobe.benchmark.result import NOISY, ModeResult, is_noisy

    samples = [0.010, 0.012, 0.020, 0.011, 0.013]  # seconds per step, one per block
    r = ModeResult.timed("train_step", samples, 8, runs=50, peak_memory_bytes=123, flops=10**9, frozen=True)
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    assert r.median_ms == pytest.approx(12.0) and r.iqr_ms == pytest.approx(1e3 * (q3 - q1))
    assert r.samples_per_s == pytest.approx(8 / 0.012) and r.tflops == pytest.approx(1e9 / 0.012 / 1e12)
    assert r.samples_ms == pytest.approx([10.0, 12.0, 20.0, 11.0, 13.0]) and r.runs == 50 and r.frozen
    assert r.noisy == (q3 - q1 > NOISY * 0.012) and r.peak_memory_bytes == 123
    assert ModeResult.timed("forward", [0.010] * 4, 1, runs=4).noisy is False  # no spread at all
    assert ModeResult.timed("forward", [0.005, 0.010, 0.015], 1, runs=3).noisy  # the IQR is half the median
    assert ModeResult.timed("forward", [0.005, 0.010, 0.015], 1, runs=3, noisy=False).noisy is False  # DDP's rule
    assert is_noisy(1.1, 10.0) and not is_noisy(0.9, 10.0)
    r.set_shares(2 * r.tflops, None)
    assert r.peak_share == pytest.approx(0.5) and r.datasheet_share is None
    merged = ModeResult.measured("train_step", 24.0, 1.0, 100, 8, flops=10**9, like=r)
    assert merged.samples_per_s == pytest.approx(8 / 0.024) and merged.tflops == pytest.approx(r.tflops / 2)
    assert merged.frozen and merged.mode == "train_step"  # what is not figured again carries over from `like`


def test_a_result_survives_its_dict():
    from cnnprobe.benchmark.result import BenchResult

    r = timing.bench("lenet", batch=2, mode="forward", repeat=2, **FAST)
    again = BenchResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again == r and again.results[0].repeats[1] == r.results[0].repeats[1]


class _Setup:
    """What `walk` needs of a setup: its config, and set_frozen, here recorded."""

    def __init__(self, config):
        self.config, self.calls = config, []

    def set_frozen(self, frozen):
        self.calls.append(frozen)


def test_the_plan_is_walked_freezing_only_where_the_state_changes():
    from cnnprobe.core.enums import Mode
    from cnnprobe.training.steps import plan, walk

    config = BenchConfig(freeze_except="fc")
    setup = _Setup(config)
    seen = [(s.mode.value, s.frozen, s.comparison, setup.calls[-1]) for s in walk(setup, plan(config))]
    assert [(m, f) for m, f, *_ in seen] == config.planned()
    assert seen == [("forward", False, False, True), ("forward_backward", True, False, True),
                    ("train_step", True, False, True), ("forward_backward", False, True, False),
                    ("train_step", False, True, False)]  # the forward pass runs under the plan
    assert setup.calls == [True, False]
    ddp = plan(config, (Mode.FORWARD_BACKWARD, Mode.TRAIN_STEP), compare=False)
    assert [(s.mode.value, s.frozen) for s in ddp] == [("forward_backward", True), ("train_step", True)]
    alone = _Setup(BenchConfig(mode="forward", freeze_all=True))
    assert [(s.mode.value, s.frozen) for s in walk(alone, plan(alone.config))] == [("forward", False)]
    assert alone.calls == [True]  # the trainable count is taken under the plan
    plain = _Setup(BenchConfig())
    assert len(list(walk(plain, plan(plain.config)))) == 3 and plain.calls == [False]


# ---------------------------------------------------------------- the peak


def _cached(tflops):
    return {"tflops": tflops, "source": "measured matmul", "detail": "planted by a test"}


def test_a_stale_low_cached_peak_is_measured_again_and_no_share_exceeds_100(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNPROBE_CACHE", str(tmp_path))
    key = peak_module.cache_key("cpu", "float32", 1)
    (tmp_path / "peaks.json").write_text(json.dumps({key: _cached(1e-9)}))
    r = timing.bench("lenet", batch=8, **FAST)
    assert r.peak["tflops"] > 1e-6 and r.peak["detail"] != "planted by a test"
    assert all(0 < m.peak_share <= 1 for m in r.results)
    assert json.loads((tmp_path / "peaks.json").read_text())[key]["tflops"] == r.peak["tflops"]


def test_a_cached_peak_too_low_but_never_beaten_is_measured_again(tmp_path, monkeypatch):
    """Issue 16 §9: a cached figure divided by 10 made shares read 10× too high, and no model beat it. The
    quick check at start (one small product) finds it implausible; the figure measured again is checked
    against a product timed here with perf_counter, not against the code's own measurement."""
    monkeypatch.setenv("CNNPROBE_CACHE", str(tmp_path))
    true = peak_module.measured("cpu", "float32", 1)
    key = peak_module.cache_key("cpu", "float32", 1)
    (tmp_path / "peaks.json").write_text(json.dumps({key: _cached(true.tflops / 10)}))
    again = peak_module.measured("cpu", "float32", 1)
    assert again.detail != "planted by a test" and again.tflops > 3 * true.tflops / 10
    assert json.loads((tmp_path / "peaks.json").read_text())[key]["tflops"] == again.tflops
    assert again.tflops > 0.3 * _one_thread_matmul_tflops(512)  # of the order of a real product's rate


def test_a_plausible_cached_peak_is_kept_without_measuring(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNPROBE_CACHE", str(tmp_path))
    key = peak_module.cache_key("cpu", "float32", 1)
    (tmp_path / "peaks.json").write_text(json.dumps({key: _cached(1e3)}))  # far above any CPU: never beaten
    monkeypatch.setattr(peak_module, "measure_matmul", lambda *a: pytest.fail("measured although plausible"))
    assert peak_module.measured("cpu", "float32", 1).tflops == 1e3


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _one_thread_matmul_tflops(n: int) -> float:
    """An n×n product on one thread timed with perf_counter, the best of five after one warm-up."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.mm(a, b)
        best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(5))
    finally:
        torch.set_num_threads(threads)
    return 2 * n**3 / best / 1e12


def test_a_model_that_beats_every_matmul_is_the_peak(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNPROBE_CACHE", str(tmp_path))
    monkeypatch.setattr(peak_module, "measure_matmul", lambda *a: peak_module.Peak(1e-9, "measured matmul", "slow"))
    p = peak_module.at_least(peak_module.Peak(1e-9, "measured matmul", "slow"), 5e-9, "lenet b8 forward", "cpu",
                             "float32", 1)
    assert p.tflops == 5e-9 and p.source == "achieved by the model" and "lenet b8 forward" in p.detail


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", json.dumps({"KEY": _cached(0)}),
                                     json.dumps({"KEY": _cached("fast")}), json.dumps({"KEY": {"tflops": 1.0}}),
                                     json.dumps({"KEY": _cached(float("nan"))}), "\x00\xff"])
def test_a_corrupt_peak_cache_is_ignored_and_rewritten(tmp_path, monkeypatch, content):
    monkeypatch.setenv("CNNPROBE_CACHE", str(tmp_path))
    key = peak_module.cache_key("cpu", "float32", 1)
    (tmp_path / "peaks.json").write_bytes(content.replace("KEY", key).encode("utf-8", "surrogateescape"))
    r = timing.bench("lenet", batch=1, mode="forward", **FAST)
    assert 0 < r.results[0].peak_share <= 1
    assert json.loads((tmp_path / "peaks.json").read_text())[key]["tflops"] > 0


def test_the_measured_peak_is_a_real_matmul_rate():
    """The peak measured now against a matrix product timed here with perf_counter right after: of the same
    order. Both are the best of several products (the peak the best of its sizes, this one the best of
    five), and both are measured in the same moment, not the peak of an earlier, quieter one from the cache."""
    p = peak_module.measured("cpu", "float32", 1, refresh=True)
    here = _one_thread_matmul_tflops(1024)
    assert 0.5 < p.tflops / here < 3.0, (p.tflops, here)


def test_datasheet_peaks():
    assert datasheet("NVIDIA H200", "bfloat16").tflops == 989.4
    assert datasheet("NVIDIA H100 PCIe", "bfloat16").tflops == 756.0
    assert datasheet("NVIDIA H100 80GB HBM3", "bfloat16").tflops == 989.4
    assert datasheet("NVIDIA A100-SXM4-80GB", "float32", tf32=True).detail == "a100-sxm4-80gb dense tf32"
    assert datasheet("Some Unknown GPU", "float32") is None


# ---------------------------------------------------------------- batch search and sweeps


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


@pytest.mark.parametrize("text", ["0", "-4", "x", "1,,2", "", "²", "99999999999999999999"])
def test_parse_batches_rejects(text):
    with pytest.raises(InputSizeError):
        parse_batches(text)


@pytest.mark.parametrize("field, value", [("min_time", 0), ("min_time", -1), ("threads", 0), ("warmup", -1),
                                          ("max_time", 0.001), ("repeat", 0), ("repeat", 99)])
def test_config_rejects(field, value):
    with pytest.raises(UsageError):
        BenchConfig(**{field: value})


def _oom_above(limit: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the setup of a batch above `limit` fail as an allocation would, to test the handling."""
    real_build = BenchSetup.build

    def build(self):
        if self.batch > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_build(self)

    monkeypatch.setattr(BenchSetup, "build", build)


def test_sweep_records_oom_and_the_largest_batch_that_fit(monkeypatch):
    _oom_above(2, monkeypatch)
    result = sweep(["lenet"], [1, 2, 4, 8], BenchConfig(mode="forward", **FAST))
    assert [r.batch for r in result.runs] == [1, 2]
    assert len(result.failures) == 1
    failure = result.failures[0]
    assert (failure.batch, failure.largest_fit) == (4, 2) and "out of memory" in failure.reason.lower()


def test_auto_batch_finds_the_largest_that_fits(monkeypatch):
    _oom_above(12, monkeypatch)
    result = sweep(["lenet"], ["auto"], BenchConfig(mode="forward", **FAST))
    assert result.auto == {"lenet": 12}
    assert result.runs[0].batch == 12


def test_auto_batch_reports_each_batch_it_tries(monkeypatch):
    """Issue 16 §7: `--batch auto` printed nothing for minutes. Every probe is told, and the last batch that
    fitted is among them."""
    _oom_above(12, monkeypatch)
    tried, phases = [], []
    sweep(["lenet"], ["auto"], BenchConfig(mode="forward", **FAST), on_phase=phases.append, on_search=tried.append)
    assert tried and all(t.startswith("lenet: --batch auto, trying batch ") for t in tried)
    batches = {int(t.rsplit(" ", 1)[1]) for t in tried}
    assert 12 in batches and 13 in batches and phases  # the search ends between 12 (fits) and 13 (does not)


def test_a_busy_or_oversubscribed_machine_is_said_before_timing(monkeypatch):
    from cnnprobe.training import devices

    n = devices.cores()
    assert "oversubscribe" in devices.machine_load(n + 1)
    monkeypatch.setattr(devices, "runnable_elsewhere", lambda: 0)
    assert devices.machine_load(1) is None
    monkeypatch.setattr(devices, "runnable_elsewhere", lambda: n)
    assert f"{n} other runnable thread" in devices.machine_load(1)


def test_runnable_threads_are_counted_from_the_kernel():
    """Independent of the code's reading: busy-loop processes started here raise the count by about as many."""
    from cnnprobe.training import devices

    if devices.runnable_elsewhere() is None:
        pytest.skip("no /proc/stat here")
    with Load() as load:
        load.set(3)
        time.sleep(0.2)
        loaded = devices.runnable_elsewhere(readings=9)
    assert loaded >= 2  # three busy loops are runnable whenever they are not running


def test_cli_warns_of_load_on_stderr_and_keeps_json_on_stdout(cli, monkeypatch):
    from cnnprobe.training import devices

    monkeypatch.setattr(devices, "runnable_elsewhere", lambda: 64)
    run = cli("bench", "lenet", "--mode", "forward", "--json", *FAST_ARGS)
    assert run.exit_code == 0 and run.json()["model"] == "lenet"
    assert run.stderr.startswith("warning: the machine is busy: 64 other runnable threads")
    assert stderr_lines(run.stderr) == []


def test_a_repeated_sweep_merges_each_model_and_batch():
    result = sweep(["lenet"], [1, 2], BenchConfig(mode="forward", repeat=2, **FAST))
    assert [(r.batch, r.repeat, len(r.results[0].repeats)) for r in result.runs] == [(1, 2, 2), (2, 2, 2)]


def test_cpu_batches_beyond_memory_are_refused_before_running():
    ok, need, available = fits_on_cpu("vgg16", 100_000, BenchConfig())
    assert not ok and need > available


@pytest.fixture
def ctrl_c_at_train_step(monkeypatch):
    """Press Ctrl-C when the train step is about to be timed."""

    def run(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(TrainStepRunner, "run", run)


def test_ctrl_c_keeps_what_was_measured(ctrl_c_at_train_step):
    result = sweep(["lenet"], [1], BenchConfig(**FAST))
    assert result.interrupted
    assert [m.mode for m in result.runs[0].results] == ["forward", "forward_backward"]


def test_public_api():
    assert cnnprobe.bench is timing.bench
    assert cnnprobe.BenchConfig is BenchConfig


# ---------------------------------------------------------------- CLI


def test_cli_table(cli):
    run = cli("bench", "lenet", "--batch", "1,4", *FAST_ARGS)
    assert run.exit_code == 0, run.stderr
    for text in ("fwd+bwd", "train_step", "median ms", "samples/s", " fwd ", " bwd ", " opt ", "peak mem",
                 "1 thread", "float32"):
        assert text in run.stdout


def test_cli_json_contract(cli):
    data = cli("bench", "lenet", "--batch", "4", "--json", *FAST_ARGS).json()
    assert {k: data[k] for k in ("model", "device", "batch", "dtype")} == {
        "model": "lenet", "device": "cpu", "batch": 4, "dtype": "float32"}
    assert [r["mode"] for r in data["results"]] == ["forward", "forward_backward", "train_step"]
    for r in data["results"]:
        assert {"mode", "median_ms", "iqr_ms", "samples_per_s", "peak_memory_bytes", "runs", "noisy",
                "forward_ms", "backward_ms", "optimizer_ms", "memory_breakdown", "samples_ms", "repeats"} <= set(r)
    assert data["results"][2]["optimizer_ms"] > 0


def test_cli_sweep_json_and_csv(cli, tmp_path):
    out = tmp_path / "bench.csv"
    run = cli("bench", "lenet,cnnprobe:alexnet", "--batch", "1,2", "--mode", "forward", "--json", "--csv", str(out),
              *FAST_ARGS)
    data = run.json()
    assert [(r["model"], r["batch"]) for r in data["runs"]] == [("lenet", 1), ("lenet", 2), ("alexnet", 1), ("alexnet", 2)]
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 and rows[0]["mode"] == "forward"
    assert float(rows[0]["median_ms"]) == pytest.approx(data["runs"][0]["results"][0]["median_ms"])
    assert float(rows[0]["forward_ms"]) > 0 and rows[0]["backward_ms"] == ""


def test_cli_plot(cli, tmp_path):
    out = tmp_path / "throughput.png"
    run = cli("bench", "lenet", "--batch", "1,2", "--mode", "forward", "--plot", str(out), *FAST_ARGS)
    assert run.exit_code == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_frozen_saving_is_said(cli):
    run = cli("bench", "cnnprobe:resnet18", "--input-size", "3,32,32", "--batch", "2", "--freeze-except", "layer4,fc",
              *FAST_ARGS)
    assert run.exit_code == 0
    # one verdict per backward mode, and the one the two times printed beside it call for
    text = " ".join(run.stdout.split())
    verdicts = re.findall(r"resnet18 b2: freezing (saves [\d.]+% of a|did not make) (\w+) (?:faster here \(see the "
                          r"IQR\) )?\(([\d.,]+) ms frozen, ([\d.,]+) ms with all params trainable\)", text)
    assert [mode for _, mode, _, _ in verdicts] == ["forward_backward", "train_step"], text
    for verdict, _, frozen_ms, full_ms in verdicts:
        frozen_ms, full_ms = float(frozen_ms.replace(",", "")), float(full_ms.replace(",", ""))
        if frozen_ms != full_ms:  # equal once rounded: either verdict is what the unrounded medians say
            assert verdict.startswith("saves") == (frozen_ms < full_ms), verdicts
    weights = [row[1] for row in table_rows(run.stdout, until=BENCH_FOOTER)]
    assert weights == ["-", "frozen", "frozen", "all", "all"]


@pytest.fixture
def builds(monkeypatch):
    """Every model built: each call of a registered builder (however a module reached it), and each
    `build_model` by device; every freeze plan parsed; every eval-mode forward traced for a FLOP count."""
    from cnnprobe.analysis import flops as flops_module
    from cnnprobe.models import build, freezing
    from cnnprobe.models.registry import ModelSpec

    seen = {"builders": 0, "meta": 0, "device": 0, "plans": 0, "forward_traces": 0}
    real_builder, real_build = ModelSpec.build, build.build_model
    real_parse, real_forward = freezing.FreezePlan.from_options.__func__, flops_module._torch_forward

    def counted_builder(self, *args, **kwargs):
        seen["builders"] += 1
        return real_builder(self, *args, **kwargs)

    def counted_build(*args, **kwargs):
        seen["meta" if kwargs.get("device", "meta") == "meta" else "device"] += 1
        return real_build(*args, **kwargs)

    def counted_parse(cls, *args, **kwargs):
        seen["plans"] += 1
        return real_parse(cls, *args, **kwargs)

    def counted_forward(*args, **kwargs):
        seen["forward_traces"] += 1
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(ModelSpec, "build", counted_builder)
    monkeypatch.setattr(build, "build_model", counted_build)
    monkeypatch.setattr(freezing.FreezePlan, "from_options", classmethod(counted_parse))
    monkeypatch.setattr(flops_module, "_torch_forward", counted_forward)
    return seen


@pytest.mark.parametrize("args", [[], ["--freeze-except", "classifier"], ["--json"],
                                  ["--freeze-all", "--num-classes", "3", "--json"]])
def test_cli_bench_builds_each_model_at_most_twice(cli, builds, args):
    """One build on meta (the memory prediction, the CPU fit check and the FLOP counts share it), one on the
    device; the freeze plan parsed once; the forward pass traced once for FLOPs, frozen or not."""
    run = cli("bench", "lenet", *args, *FAST_ARGS)
    assert run.exit_code == 0, run.stderr
    assert builds == {"builders": 2, "meta": 1, "device": 1, "plans": 1, "forward_traces": 1}
    if "--json" in args:
        results = run.json()["results"]
        assert all(r["flops"] and r["predicted_peak_bytes"] for r in results)


def test_cli_sweep_builds_on_meta_once_per_model(cli, builds):
    """A sweep over batch sizes and repeats: still one meta build per model; one device build per timed run."""
    run = cli("bench", "lenet", "--batch", "1,2", "--repeat", "2", "--mode", "forward", *FAST_ARGS)
    assert run.exit_code == 0, run.stderr
    assert builds["meta"] == 1 and builds["device"] == 2 * 2 and builds["builders"] == 1 + 2 * 2
    assert builds["plans"] == 1


def test_bench_counts_the_same_flops_as_the_flops_command():
    """The shared meta build and the one forward trace give what `cnnprobe flops` counts on its own builds."""
    config = BenchConfig(freeze_except="classifier", predict=False, memory=False, peak=False, **FAST)
    run = timing.bench("lenet", 2, config)
    full = cnnprobe.flops("lenet", batch=2, backward=True)
    frozen = cnnprobe.flops("lenet", batch=2, backward=True, freeze_except="classifier")
    got = {(r.mode, r.frozen): r.flops for r in run.results}
    assert got == {("forward", False): full.flops, ("forward_backward", True): frozen.training_flops,
                   ("train_step", True): frozen.training_flops, ("forward_backward", False): full.training_flops,
                   ("train_step", False): full.training_flops}
    assert frozen.training_flops < full.training_flops


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_cli_cuda_without_cuda(cli):
    assert "no CUDA device" in one_error_line(cli("bench", "lenet", "--device", "cuda"))


@pytest.mark.parametrize(
    "args, message",
    [(["bench", "lenet", "--batch", "0"], "--batch must be a positive integer"),
     (["bench", "lenet", "--batch", "big"], "--batch takes positive integers or 'auto'"),
     (["bench", "lenet", "--min-time", "0"], "--min-time must be a positive"),
     (["bench", "lenet", "--repeat", "0"], "--repeat must be an integer from 1"),
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
    lines = stderr_lines(run.stderr)
    line = lines[0]
    assert len(lines) == 1 and "batch 4 ran out of memory" in line and "largest batch that fit was 2" in line


def test_cli_ctrl_c_prints_what_was_measured(cli, ctrl_c_at_train_step):
    run = cli("bench", "lenet", *FAST_ARGS)
    assert run.exit_code == 130
    assert [row[0] for row in table_rows(run.stdout, until=BENCH_FOOTER)] == ["forward", "fwd+bwd"]
    assert "interrupted" in run.stderr


@needs_cuda
@pytest.mark.cuda
def test_cuda_bench_reports_allocator_peak_phases_and_mfu():
    r = timing.bench("resnet18", batch=8, device="cuda", min_time=0.1, warmup=2)
    assert r.settings["cudnn_benchmark"] is True
    weights = 11_689_512 * 4
    for m in r.results:
        assert m.memory_method == "allocator" and m.peak_memory_bytes > weights
        assert m.memory_breakdown["parameters"] == weights
        assert m.phases_ms == pytest.approx(m.median_ms, rel=0.15)
        assert 0 < m.peak_share <= 1
    sheet = datasheet(torch.cuda.get_device_name(), "float32", bool(torch.backends.cuda.matmul.allow_tf32))
    if sheet is None:  # a GPU the table does not know: no MFU, and nothing claims one
        assert "datasheet" not in r.peak and all(m.datasheet_share is None for m in r.results)
    else:
        assert r.peak["datasheet"]["tflops"] == sheet.tflops
        assert all(m.datasheet_share == pytest.approx(m.tflops / sheet.tflops) for m in r.results)


@needs_cuda
@pytest.mark.cuda
def test_cuda_oom_is_caught_and_freed():
    with pytest.raises(OutOfMemory):
        timing.bench("vgg16", batch=1_000_000, device="cuda", mode="forward", min_time=0.1)
    assert torch.cuda.memory_allocated() < 2**30


# ---------------------------------------------------------------- blocks and the reference kernel


def test_blocks_see_twice_the_work_and_the_reference_stays():
    """A step that does the same work twice: its blocks take about twice as long as the single step's,
    measured in the same test, while the reference kernel timed beside them does not move; so step ÷
    reference doubles too. The same model and FLOPs always get the same reference."""
    from cnnprobe.benchmark.blocks import Reference, reference_size, time_blocks

    work = Reference("cpu", 192)
    reference = Reference("cpu", reference_size(10**8, "cpu"))
    assert reference.n == reference_size(10**8, "cpu") == 32 * round((5 * 10**7) ** (1 / 3) / 32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        once = time_blocks(work, reference, lambda marks: None, "cpu", 0.2, 2.0)
        twice = time_blocks(lambda: (work(), work()), reference, lambda marks: None, "cpu", 0.2, 2.0)
    finally:
        torch.set_num_threads(threads)
    assert len(once.samples) >= 10 and len(once.reference) == len(once.samples)
    assert 1.5 < twice.median / once.median < 2.7
    assert 1.5 < statistics.median(twice.ratios) / statistics.median(once.ratios) < 2.7
    assert 0.6 < twice.reference_median / once.reference_median < 1.6
