"""The measured memory-bandwidth roof: against a copy timed here, its byte formulas by hand, its cache."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
import torch

from cnnprobe.runtime import bandwidth as bw
from cnnprobe.runtime import flops_peak

PLANTED = "planted by a test"


def _cached(gbps):
    return {"gbps": gbps, "source": "measured copy", "detail": PLANTED}


def _copy_gbps(size: int, calls: int = 5) -> float:
    """A copy of two `size`-byte float32 buffers on one thread timed with perf_counter, the best of a few
    after one warm-up; 2 × size bytes move per copy."""
    src = torch.ones(size // 4)
    dst = torch.empty_like(src)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dst.copy_(src)
        best = float("inf")
        for _ in range(calls):
            start = time.perf_counter()
            dst.copy_(src)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 2 * size / best / 1e9


def test_the_measured_bandwidth_is_a_real_copy_rate():
    """The roof measured now against a large copy timed here with perf_counter just before and after: at least
    0.7× of it (the roof is a best-of too), and not wildly above (a wrong byte count would be)."""
    size = 4 * bw.llc_bytes()
    before = _copy_gbps(size)
    measured = bw.measure_bandwidth("cpu", 1)
    here = max(before, _copy_gbps(size))
    assert measured.source in ("measured copy", "measured triad")
    assert 0.7 * here <= measured.gbps <= 4 * here, (measured, here)
    assert "1 thread" in measured.detail and "MiB" in measured.detail


class _FakeTimer:
    """torch.utils.benchmark's Timer with a fixed time per statement: the byte formulas, by hand."""

    seconds: dict[str, float] = {}
    made: list[tuple[str, int]] = []

    def __init__(self, stmt, globals, num_threads):
        self.stmt = stmt
        _FakeTimer.made.append((stmt, num_threads))

    def timeit(self, number):
        return SimpleNamespace(median=self.seconds[self.stmt])

    def blocked_autorange(self, min_run_time):
        return SimpleNamespace(median=self.seconds[self.stmt])


def _fake_timing(monkeypatch, copy_s, triad_s):
    monkeypatch.setattr(bw, "llc_bytes", lambda root=bw.CPU_CACHE_DIR: 2**20)  # buffers of 4 and 8 MiB
    monkeypatch.setattr(bw, "timer_module", lambda: SimpleNamespace(Timer=_FakeTimer))
    _FakeTimer.seconds = {"a.copy_(b)": copy_s, "torch.add(b, c, alpha=3.0, out=a)": triad_s}
    _FakeTimer.made = []


def test_triad_moves_three_buffers_and_copy_two(monkeypatch):
    size = 8 * 2**20  # the largest buffer: the best rate at equal times
    _fake_timing(monkeypatch, copy_s=1.0, triad_s=1.0)
    triad = bw.measure_bandwidth("cpu", 2)
    assert triad.gbps == pytest.approx(3 * size / 1e9) and triad.source == "measured triad"
    assert "8 MiB" in triad.detail and "4 MiB/8 MiB" in triad.detail and "2 threads" in triad.detail
    assert {t for _, t in _FakeTimer.made} == {2} and len(_FakeTimer.made) == 4  # 2 kernels × 2 sizes
    _fake_timing(monkeypatch, copy_s=0.5, triad_s=1.0)  # copy: 2 × size in half the time beats 3 × size
    copy = bw.measure_bandwidth("cpu", 1)
    assert copy.gbps == pytest.approx(4 * size / 1e9) and copy.source == "measured copy"
    assert bw.bytes_moved("copy", 100) == 200 and bw.bytes_moved("triad", 100) == 300


def test_buffers_lie_beyond_the_cache_and_under_a_share_of_free_memory(monkeypatch):
    monkeypatch.setattr(bw, "llc_bytes", lambda root=bw.CPU_CACHE_DIR: 32 * 2**20)
    monkeypatch.setattr(bw, "available_bytes", lambda device: 64 * 2**30)
    assert bw.buffer_sizes("cpu") == [128 * 2**20, 256 * 2**20]
    monkeypatch.setattr(bw, "available_bytes", lambda device: 4 * 2**30)  # 3 buffers under 1/8 of 4 GiB
    sizes = bw.buffer_sizes("cpu")
    assert sizes == [128 * 2**20, 4 * 2**30 // 24 // 4 * 4] and 3 * max(sizes) <= 4 * 2**30 / 8
    assert all(size % 4 == 0 for size in sizes)


def test_cuda_buffers_lie_beyond_its_l2_and_under_a_share_of_free_memory(monkeypatch):
    """The CUDA sizes' logic, on the CPU: at least 8 L2s each, a fallback where torch has no L2 size."""
    mib = 2**20
    monkeypatch.setattr(bw, "available_bytes", lambda device: 100 * 2**30)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(L2_cache_size=60 * mib))
    assert bw.buffer_sizes("cuda") == [480 * mib, 512 * mib, 1024 * mib]
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace())
    assert bw.buffer_sizes("cuda:0") == [512 * mib, 1024 * mib]
    monkeypatch.setattr(bw, "available_bytes", lambda device: 6 * 2**30)  # 3 buffers under 1/8 of 6 GiB
    assert bw.buffer_sizes("cuda") == [256 * mib]


def test_the_last_level_cache_is_read_from_sysfs(tmp_path):
    for name, level, size, kind in [("index0", 1, "48K", "Data"), ("index1", 1, "32K", "Instruction"),
                                    ("index2", 2, "2048K", "Unified"), ("index3", 3, "36M", "Unified")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "level").write_text(f"{level}\n")
        (tmp_path / name / "size").write_text(f"{size}\n")
        (tmp_path / name / "type").write_text(f"{kind}\n")
    assert bw.llc_bytes(tmp_path) == 36 * 2**20
    (tmp_path / "index3" / "size").write_text("garbage\n")  # the largest level unreadable: the next one
    assert bw.llc_bytes(tmp_path) == 2048 * 2**10
    assert bw.llc_bytes(tmp_path / "missing") == bw.FALLBACK_LLC
    assert bw.llc_bytes() >= 2**20  # this machine's


def test_the_bandwidth_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNPROBE_CACHE", str(tmp_path))
    monkeypatch.setattr(bw, "measure_bandwidth", lambda *a: bw.Bandwidth(1e6, "measured triad", "stored"))
    first = bw.measured_bandwidth("cpu", 1)
    key = bw.cache_key("cpu", 1)
    assert json.loads((tmp_path / bw.CACHE).read_text())[key]["gbps"] == first.gbps
    monkeypatch.setattr(bw, "measure_bandwidth", lambda *a: pytest.fail("measured although cached"))
    assert bw.measured_bandwidth("cpu", 1) == first
    assert key != bw.cache_key("cpu", 2) and key != flops_peak.cache_key("cpu", "float32", 1)


def test_a_plausible_cached_bandwidth_is_kept_without_measuring(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNPROBE_CACHE", str(tmp_path))
    (tmp_path / bw.CACHE).write_text(json.dumps({bw.cache_key("cpu", 1): _cached(1e6)}))  # above any memory
    monkeypatch.setattr(bw, "measure_bandwidth", lambda *a: pytest.fail("measured although plausible"))
    assert bw.measured_bandwidth("cpu", 1).gbps == 1e6


def test_a_cached_bandwidth_far_below_a_quick_copy_is_measured_again(tmp_path, monkeypatch):
    """A figure a tenth of the truth (measured at a busy moment, or edited) would make every module's share
    read 10× too high; the quick copy finds it implausible, and the figure measured again is a real one."""
    monkeypatch.setenv("CNNPROBE_CACHE", str(tmp_path))
    key = bw.cache_key("cpu", 1)
    here = _copy_gbps(4 * bw.llc_bytes())
    (tmp_path / bw.CACHE).write_text(json.dumps({key: _cached(here / 10)}))
    again = bw.measured_bandwidth("cpu", 1)
    assert again.detail != PLANTED and again.gbps > 3 * here / 10
    assert json.loads((tmp_path / bw.CACHE).read_text())[key]["gbps"] == again.gbps


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", json.dumps({"KEY": _cached(0)}),
                                     json.dumps({"KEY": _cached(-3.0)}), json.dumps({"KEY": _cached("fast")}),
                                     json.dumps({"KEY": _cached(True)}), json.dumps({"KEY": {"gbps": 1.0}}),
                                     json.dumps({"KEY": _cached(float("nan"))}), "\x00\xff"])
def test_a_damaged_bandwidth_cache_is_measured_again_and_rewritten(tmp_path, monkeypatch, content):
    monkeypatch.setenv("CNNPROBE_CACHE", str(tmp_path))
    key = bw.cache_key("cpu", 1)
    (tmp_path / bw.CACHE).write_bytes(content.replace("KEY", key).encode("utf-8", "surrogateescape"))
    calls = []
    monkeypatch.setattr(bw, "measure_bandwidth",
                        lambda *a: calls.append(a) or bw.Bandwidth(12.5, "measured copy", "fresh"))
    assert bw.measured_bandwidth("cpu", 1) == bw.Bandwidth(12.5, "measured copy", "fresh")
    assert calls == [("cpu", 1)]
    assert json.loads((tmp_path / bw.CACHE).read_text())[key] == {"gbps": 12.5, "source": "measured copy",
                                                                  "detail": "fresh"}


def test_refresh_keeps_the_better_of_old_and_new(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNPROBE_CACHE", str(tmp_path))
    key = bw.cache_key("cpu", 1)
    (tmp_path / bw.CACHE).write_text(json.dumps({key: _cached(50.0)}))
    monkeypatch.setattr(bw, "measure_bandwidth", lambda *a: bw.Bandwidth(20.0, "measured triad", "busy"))
    assert bw.measured_bandwidth("cpu", 1, refresh=True).detail == PLANTED  # the old one was better
    monkeypatch.setattr(bw, "measure_bandwidth", lambda *a: bw.Bandwidth(80.0, "measured triad", "quiet"))
    assert bw.measured_bandwidth("cpu", 1, refresh=True).gbps == 80.0
    assert json.loads((tmp_path / bw.CACHE).read_text())[key]["detail"] == "quiet"


def test_bandwidth_at_least_raises_the_roof_only_when_beaten(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNPROBE_CACHE", str(tmp_path))
    roof = bw.Bandwidth(10.0, "measured copy", "slow")
    monkeypatch.setattr(bw, "measure_bandwidth", lambda *a: pytest.fail("measured although not beaten"))
    assert bw.bandwidth_at_least(roof, 10.0, "layer1 forward", "cpu", 1) is roof
    assert bw.bandwidth_at_least(roof, 3.0, "layer1 forward", "cpu", 1) is roof

    monkeypatch.setattr(bw, "measure_bandwidth", lambda *a: bw.Bandwidth(40.0, "measured triad", "again"))
    assert bw.bandwidth_at_least(roof, 30.0, "layer1 forward", "cpu", 1).detail == "again"  # measured again

    (tmp_path / bw.CACHE).unlink()
    monkeypatch.setattr(bw, "measure_bandwidth", lambda *a: bw.Bandwidth(11.0, "measured triad", "again"))
    beaten = bw.bandwidth_at_least(roof, 90.0, "layer1.0.relu forward", "cpu", 1)
    assert beaten.gbps == 90.0 and beaten.source == "achieved by layer1.0.relu forward"
    assert "11 GB/s" in beaten.detail and "cache" in beaten.detail
    assert 30.0 / beaten.gbps <= 1 and 90.0 / beaten.gbps <= 1  # no share above 100%


@pytest.mark.parametrize(("name", "gbps"), [
    ("NVIDIA H200", 4800), ("NVIDIA H100 80GB HBM3", 3350), ("NVIDIA H100 SXM5 80GB", 3350),
    ("NVIDIA H100 PCIe", 2000), ("NVIDIA A100-SXM4-80GB", 2039), ("NVIDIA A100 80GB PCIe", 1935),
    ("NVIDIA A100-SXM4-40GB", 1555), ("NVIDIA A100-PCIE-40GB", 1555), ("NVIDIA L40S", 864), ("NVIDIA L4", 300),
    ("NVIDIA A10", 600), ("Tesla V100-SXM2-16GB", 900), ("Tesla T4", 320), ("NVIDIA GeForce RTX 4090", 1008),
    ("NVIDIA A10G", 600), ("NVIDIA GeForce RTX 3090", 936), ("Tesla V100-PCIE-32GB", 900),
    ("NVIDIA L40", None), ("NVIDIA H100 NVL", None), ("AMD EPYC 7763 64-Core Processor", None)])
def test_the_datasheet_bandwidth_of_known_gpus(name, gbps):
    found = bw.datasheet_bandwidth(name)
    assert (found.gbps if found else None) == gbps
    assert found is None or found.source == "datasheet"


def test_every_gpu_with_a_datasheet_peak_has_a_datasheet_bandwidth():
    from cnnprobe.runtime.hardware import SPECS

    for spec in SPECS.values():
        for phrase in spec.matches:
            name = f"NVIDIA {phrase}"
            assert flops_peak.datasheet(name, "float32") is not None, name
            assert bw.datasheet_bandwidth(name).gbps == spec.bandwidth_gbps, name
