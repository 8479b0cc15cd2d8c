"""pytest-benchmark suite. CI runs it with benchmarks disabled (each body once, so it never rots);
`pytest benchmarks --benchmark-enable` measures for real. Run and compare commands: README, "Benchmarks"."""

from __future__ import annotations

import os

import pytest
import torch

from cnnprobe.training.devices import cpu_name


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: needs a CUDA device; skipped where there is none")


@pytest.fixture
def machine_info(benchmark) -> dict[str, object]:
    """What every timing depends on, recorded with it."""
    info = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
    }
    benchmark.extra_info.update(info)
    return info


def enabled(config: pytest.Config) -> bool:
    """Whether timings are really being taken (not `--benchmark-disable`)."""
    return not config.getoption("benchmark_disable", False)
