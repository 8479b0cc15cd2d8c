"""Forward, forward+backward and train-step timings tracked with pytest-benchmark.

pytest-benchmark times Python callables and does not synchronise CUDA, so each
callable ends with `torch.cuda.synchronize()` on GPUs; rounds are fixed
(pedantic mode) so that runs are comparable. What every timing depends on is
recorded in `extra_info`.
"""

from __future__ import annotations

import statistics

import pytest
import torch

import cnnprobe
from cnnprobe.timing import BenchConfig, Runner, timer_module

from .conftest import enabled

MODELS = {"lenet": [1, 32], "resnet18": [1, 8], "mobilenet_v3_small": [1, 8]}
MODES = ["forward", "forward_backward", "train_step"]
DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")])]
CASES = [(m, b) for m, batches in MODELS.items() for b in batches]


def synchronised(fn, device: str):
    """pytest-benchmark stops its clock when the callable returns: on CUDA, only after the GPU is done."""
    if device != "cuda":
        return fn

    def run():
        fn()
        torch.cuda.synchronize()

    return run


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model, batch", CASES)
def test_step(benchmark, machine_info, model, batch, mode, device):
    runner = Runner(model, batch, BenchConfig(device=device))
    runner.setup()
    step = synchronised(runner.step(mode), device)
    benchmark.extra_info.update(model=model, batch=batch, mode=mode, device=device,
                                device_name=cnnprobe.timing._device_name(device))
    benchmark.pedantic(step, rounds=10 if model == "lenet" else 5, iterations=1, warmup_rounds=2)
    runner.close()


def test_forward_median_matches_torch_utils_benchmark(request):
    """cnnprobe's forward median against torch.utils.benchmark's for the same model, batch and threads:
    within 10%. Both are measured twice, alternating, and the medians of each compared."""
    threads = torch.get_num_threads()
    min_time = 1.0 if enabled(request.config) else 0.05
    config = BenchConfig(mode="forward", threads=threads, min_time=min_time, count_flops=False, peak=False)
    runner = Runner("resnet18", 8, config)
    runner.setup()
    model, x = runner.raw.eval(), runner.x
    benchmark = timer_module()
    timer = benchmark.Timer("with torch.inference_mode():\n    model(x)", globals={"torch": torch, "model": model, "x": x},
                            num_threads=threads)
    ours, theirs = [], []
    for _ in range(2):
        ours.append(runner.time(runner.step("forward"))[0])
        theirs.append(timer.adaptive_autorange(min_run_time=min_time).median)
    runner.close()
    ratio = statistics.median(ours) / statistics.median(theirs)
    request.node.user_properties.append(("forward_ratio", ratio))
    if enabled(request.config):
        assert 0.9 <= ratio <= 1.1, f"cnnprobe/torch.utils.benchmark = {ratio:.3f}"


def test_frozen_backbone_train_step_is_cheaper(request):
    """resnet18 with --freeze-except layer4,fc against all trainable: a train step measurably cheaper."""
    size = None if enabled(request.config) else "3,64,64"
    result = cnnprobe.bench("resnet18", batch=8, freeze_except="layer4,fc", mode="train_step", input_size=size,
                            min_time=2.0 if enabled(request.config) else 0.05, peak=False)
    frozen, full = result.result("train_step", True), result.result("train_step", False)
    assert frozen is not None and full is not None
    if enabled(request.config):
        assert frozen.median_ms + frozen.iqr_ms < full.median_ms - full.iqr_ms
        assert result.frozen_saving("train_step") > 0.2
