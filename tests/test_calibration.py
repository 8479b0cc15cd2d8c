"""The calibration's grid, fit and storage: the fit against timings the curve itself made, the grid against
hand counts, and a quick grid on this CPU against its own fit."""

from __future__ import annotations

import json
import statistics

import pytest

from cnnprobe.core import cache
from cnnprobe.core.errors import CnnprobeError
from cnnprobe.runtime import calibration, microbench
from cnnprobe.runtime.microbench import Measurement
from cnnprobe.runtime.records import Calibration, Curve, OpClass
from cnnprobe.runtime.timemodel import DEFAULT_CPU

PEAK_TFLOPS, BANDWIDTH_GBPS, LAUNCH_US = 2.0, 50.0, 3.0


def _synthetic(op_class: OpClass, curve: Curve, works: list[float], kernels: int = 1) -> list[Measurement]:
    """Cases timed exactly as the curve says: launches plus work over the roof at the curve's efficiency."""
    ceiling = PEAK_TFLOPS * 1e12 if op_class.compute_bound else BANDWIDTH_GBPS * 1e9
    out = []
    for i, w in enumerate(works):
        per = w / kernels
        seconds = kernels * (LAUNCH_US * 1e-6 + (per / ceiling) / (curve.peak_share * per / (per + curve.half_work)))
        flops, nbytes = (int(w), 0) if op_class.compute_bound else (0, int(w))
        out.append(Measurement(f"case {i}", op_class, "float32", flops, nbytes, kernels, seconds))
    return out


def _fit(ms: list[Measurement]) -> Calibration:
    return calibration.fit(ms, PEAK_TFLOPS, BANDWIDTH_GBPS, "cpu", "test cpu", 1, launch_us=LAUNCH_US)


def test_fit_recovers_known_curves() -> None:
    gemm, add, sgd = Curve(0.6, 5e7), Curve(0.8, 2e5), Curve(0.5, 1e6)
    ms = (_synthetic(OpClass.GEMM, gemm, [1e6 * 4**i for i in range(8)])
          + _synthetic(OpClass.ELEMENTWISE, add, [1e4 * 4**i for i in range(7)])
          + _synthetic(OpClass.OPTIMIZER, sgd, [1e6 * 4**i for i in range(5)], kernels=3))
    cal = _fit(ms)
    for found, true in ((cal.compute[OpClass.GEMM], gemm), (cal.memory[OpClass.ELEMENTWISE], add),
                        (cal.memory[OpClass.OPTIMIZER], sgd)):
        assert found.peak_share == pytest.approx(true.peak_share, rel=1e-6)
        assert found.half_work == pytest.approx(true.half_work, rel=1e-6)
    assert OpClass.GEMM not in cal.memory and OpClass.ELEMENTWISE not in cal.compute
    assert cal.fit_error == pytest.approx(0, abs=1e-9)
    assert cal.calibrated and cal.source == "measured on test cpu by cnnprobe calibrate"


def test_fit_is_robust_to_one_outlier() -> None:
    true = Curve(0.4, 2e7)
    ms = _synthetic(OpClass.CONV_DENSE, true, [1e6 * 3**i for i in range(10)])
    slow = ms[6]
    ms[6] = Measurement(slow.name, slow.op_class, slow.dtype, slow.flops, slow.bytes, slow.kernels, 8 * slow.seconds)
    cal = _fit(ms)
    found = cal.compute[OpClass.CONV_DENSE]
    assert found.peak_share == pytest.approx(true.peak_share, rel=1e-3)
    assert found.half_work == pytest.approx(true.half_work, rel=1e-3)
    assert any("case 6" in note for note in cal.notes)
    assert cal.fit_error == pytest.approx(0, abs=1e-6)  # the median case is exact; the outlier is one of ten


def test_efficiency_rises_to_the_peak_share() -> None:
    curve = Curve(0.7, 1e6)
    values = [curve.efficiency(w) for w in (1e3, 1e5, 1e6, 1e7, 1e9)]
    assert values == sorted(values) and values[-1] < 0.7
    assert curve.efficiency(1e6) == pytest.approx(0.35)
    assert curve.efficiency(1e12) == pytest.approx(0.7, rel=1e-5)
    # a measured case's efficiency is the curve's at its work, net of its launch
    (m,) = _synthetic(OpClass.GEMM, curve, [3e6])
    assert calibration.efficiency(m, PEAK_TFLOPS * 1e12, LAUNCH_US * 1e-6) == pytest.approx(curve.efficiency(3e6))


def _cal() -> Calibration:
    return Calibration("cpu", "test cpu", {OpClass.GEMM: Curve(0.5, 1e7)}, {OpClass.ELEMENTWISE: Curve(0.9, 1e5)},
                       launch_us=2.5, calibrated=True, source="measured on test cpu by cnnprobe calibrate",
                       threads=1, torch="2.x", fit_error=0.12, notes=["a note"])


def test_save_load_round_trip(tmp_path) -> None:
    path = tmp_path / "cal.json"
    calibration.save(_cal(), path)
    assert calibration.load(path) == _cal()
    assert json.loads(path.read_text())["kind"] == calibration.FILE_KIND


@pytest.mark.parametrize("text", ['{"kind": "cnnprobe calibration", "device_key": "cpu", "compute": {"gemm": {',
                                  '{"results": []}', '[1, 2]',
                                  '{"kind": "cnnprobe calibration", "device_key": "cpu", '
                                  '"compute": {"gemm": {"peak_share": -1, "half_work": 0}}}',
                                  '{"kind": "cnnprobe calibration", "device_key": "cpu", '
                                  '"compute": {"no_such_class": {"peak_share": 0.5, "half_work": 0}}}'])
def test_a_damaged_or_foreign_file_is_one_clear_error(tmp_path, text: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(CnnprobeError) as e:
        calibration.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(CnnprobeError, match="does not exist"):
        calibration.load(tmp_path / "missing.json")


def test_cache_round_trip() -> None:
    cal = _cal()
    calibration.store(cal, "cpu")
    assert calibration.cached("cpu", 1) == cal
    assert calibration.cached("test cpu", 1) == cal  # by the machine's name too
    gpu = Calibration("h200", "NVIDIA H200", {OpClass.GEMM: Curve(0.7, 1e9)}, calibrated=True, threads=1)
    calibration.store(gpu)
    assert calibration.cached("h200", 1) == gpu and calibration.cached("NVIDIA H200", 1) == gpu
    assert calibration.cached("cpu", 7) is None
    cache.store(calibration.CACHE, {calibration.cache_key("cpu", 1): {"device_key": "cpu", "compute": 3}})
    assert calibration.cached("cpu", 1) is None  # a damaged entry is no calibration


def _case(name: str) -> microbench.Case:
    return next(c for c in microbench.grid() if c.name == name)


def test_counts_match_hand_formulas() -> None:
    mm = microbench.cost(_case("mm 512x512x512"))
    assert (mm.flops, mm.bytes, mm.kernels) == (2 * 512**3, 3 * 512 * 512 * 4, 1)
    add = microbench.cost(_case("add 65536"))
    assert (add.flops, add.bytes, add.kernels) == (0, 3 * 65536 * 4, 1)
    relu = microbench.cost(_case("relu 65536"))
    assert relu.bytes == 2 * 65536 * 4
    conv = microbench.cost(_case("conv dw3x3 8x64x56x56->64"))
    assert conv.flops == 2 * 8 * 64 * 1 * 9 * 56 * 56  # N · C_out · C_in/groups · k² · H_out · W_out
    backward = microbench.cost(_case("conv dw3x3 8x64x56x56->64 backward"))
    assert backward.flops == 2 * conv.flops  # input and weight gradients
    # SGD momentum: buf *= m (read, write), buf += g (2 reads, write), p -= lr·buf (2 reads, write)
    sgd = microbench.cost(_case("sgd momentum 20x65536"))
    assert (sgd.bytes, sgd.kernels) == (8 * 20 * 65536 * 4, 3)
    # the weights the rate is fitted on: a convolution's (C_out · C_in/groups · k²), a product's larger input
    assert conv.weight_bytes == backward.weight_bytes == 64 * 1 * 9 * 4
    assert microbench.cost(_case("conv dense3x3 wide 2x512x4x4->512")).weight_bytes == 512 * 512 * 9 * 4
    assert microbench.cost(_case("mm 2x4096x9216")).weight_bytes == 9216 * 4096 * 4
    assert mm.weight_bytes == 512 * 512 * 4 and add.weight_bytes == sgd.weight_bytes == 0


def test_the_grid_is_single_operators_never_a_model() -> None:
    cases = microbench.grid()
    classes = {c.op_class for c in cases}
    assert {OpClass.GEMM, OpClass.CONV_DENSE, OpClass.CONV_1X1, OpClass.CONV_DEPTHWISE, OpClass.CONV_GROUPED,
            OpClass.NORMALIZATION, OpClass.ELEMENTWISE, OpClass.REDUCTION, OpClass.POOLING, OpClass.COPY_LAYOUT,
            OpClass.OPTIMIZER} <= classes
    names = {c.name for c in cases}
    assert len(names) == len(cases)
    for case in cases:
        count = microbench.cost(case)
        assert 1 <= count.kernels <= 3, case.name
        assert count.bytes > 0 and (count.flops > 0) == case.op_class.compute_bound, case.name
    assert any("backward" in n and n.startswith("conv") for n in names)


def test_a_time_limit_stops_the_grid() -> None:
    assert microbench.run("cpu", 1, time_limit=0) == []
    with pytest.raises(CnnprobeError, match="no micro-benchmark"):
        calibration.calibrate("cpu", 1, PEAK_TFLOPS, BANDWIDTH_GBPS, time_limit=0)


@pytest.mark.slow
def test_a_quick_cpu_grid_fits_itself() -> None:
    from cnnprobe.runtime.bandwidth import measured_bandwidth
    from cnnprobe.runtime.flops_peak import measured

    peak, bandwidth = measured("cpu", "float32", 1).tflops, measured_bandwidth("cpu", 1).gbps
    seen: list[Measurement] = []
    before = calibration.cached("cpu", 1)
    cal = calibration.calibrate("cpu", 1, peak, bandwidth, quick=True, on_case=seen.append)
    assert {OpClass.GEMM, OpClass.CONV_DENSE, OpClass.CONV_DEPTHWISE} <= set(cal.compute)
    assert OpClass.ELEMENTWISE in cal.memory
    assert cal.calibrated and cal.launch_us > 0 and cal.fit_error is not None and cal.fit_error < 1
    # the fit's error, recomputed from its curves and rates (each backward case on its class's backward curve)
    fitted = calibration.fit(seen, peak, bandwidth, "cpu", "here", 1, launch_us=2.0)
    errors = []
    for m in seen:
        forward = fitted.compute if m.op_class.compute_bound else fitted.memory
        curve = (fitted.backward.get(m.op_class) if m.backward else None) or forward[m.op_class]
        rate = (fitted.backward_weights_gbps if m.backward and m.op_class in fitted.backward
                else fitted.weights_gbps).get(m.op_class)
        ceiling = calibration.roof(m, peak, bandwidth)
        assert ceiling is not None
        seconds = calibration.predict_seconds(curve, m, ceiling, 2e-6) + calibration.weight_seconds(m, rate)
        errors.append(abs(seconds / m.seconds - 1))
    assert statistics.median(errors) == pytest.approx(fitted.fit_error)
    assert sum(e <= fitted.fit_error + 1e-12 for e in errors) >= len(errors) / 2
    assert calibration.cached("cpu", 1) == before  # a quick grid is not kept


def test_each_dtype_is_judged_against_its_own_peak() -> None:
    cuda = microbench.planned("cuda")
    assert {d for c, d in cuda if c.op_class is OpClass.GEMM} == {"float32", "bfloat16", "float16"}
    assert {d for c, d in cuda if c.op_class is OpClass.ELEMENTWISE} == {"float32"}
    assert {d for _, d in microbench.planned("cpu")} == {"float32"}
    assert any(c.name == "mm 8192x8192x8192" for c, _ in cuda)
    assert not any(c.cuda_only for c, _ in microbench.planned("cpu"))
    assert {d for _, d in microbench.planned("cuda", dtypes=("float32",))} == {"float32"}
    curve = Curve(0.5, 1e7)
    ms = _synthetic(OpClass.GEMM, curve, [1e6 * 4**i for i in range(6)])
    half = [Measurement(m.name, m.op_class, "bfloat16", m.flops, m.bytes, m.kernels, m.seconds / 4) for m in ms]
    # bfloat16 at 4× float32's peak, each 4× as fast: the same share of its own peak
    cal = calibration.fit(ms + half, PEAK_TFLOPS, BANDWIDTH_GBPS, "x", "x", 1, launch_us=0.0,
                          dtype_tflops={"bfloat16": 4 * PEAK_TFLOPS})
    assert cal.compute[OpClass.GEMM].peak_share == pytest.approx(0.5, rel=1e-3)
    # without bfloat16's peak its cases cannot be judged: left out
    alone = calibration.fit(ms + [Measurement(m.name, m.op_class, m.dtype, m.flops, m.bytes, m.kernels, 9.0)
                                  for m in half], PEAK_TFLOPS, BANDWIDTH_GBPS, "x", "x", 1)
    assert alone.compute[OpClass.GEMM].peak_share == pytest.approx(0.5, rel=0.05)
    with pytest.raises(CnnprobeError):
        calibration.fit(ms, 0.0, BANDWIDTH_GBPS, "x", "x", 1)


def test_a_class_of_constant_time_is_fitted_on_its_bounds() -> None:
    """Cases that all take the same time whatever their work: the work term at its floor, the fixed part
    carrying the time."""
    ms = [Measurement(f"c{i}", OpClass.ELEMENTWISE, "float32", 0, 10**i, 1, 1e-3) for i in range(3, 7)]
    cal = calibration.fit(ms, PEAK_TFLOPS, BANDWIDTH_GBPS, "x", "x", 1)
    curve = cal.memory[OpClass.ELEMENTWISE]
    assert curve.peak_share == pytest.approx(calibration.PEAK_SHARE[1], rel=0.01) and curve.half_work > 1e6
    assert cal.fit_error is not None and cal.fit_error < 0.01


def test_a_case_without_memory_is_skipped_by_name() -> None:
    def make(device: str, dtype) -> microbench.Thunk:
        def thunk() -> None:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return thunk if device != "meta" else (lambda: None)

    add = _case("add 4096")
    cases = [microbench.Case("too big", OpClass.GEMM, make), add]
    skipped: list[str] = []
    ms = microbench.run("cpu", 1, cases=cases, skipped=skipped, min_run_time=0.01)
    assert skipped == ["too big float32"] and [m.name for m in ms] == ["add 4096"]


def test_the_weight_rate_is_recovered_from_heavy_cases() -> None:
    """Convolutions timed as a known curve plus their weights at 3 GB/s: the light cases (compute-bound) fix the
    curve, the heavy ones (weights over their activations, memory-bound) the rate beyond their memory time, and
    both come back."""
    curve, rate = Curve(0.6, 5e7), 3.0
    ms = []
    for i, (flops, nbytes, weights) in enumerate([(1e7, 1e5, 1e4), (4e7, 4e5, 4e4), (1.6e8, 1.6e6, 1e5),
                                                  (6.4e8, 6.4e6, 4e5), (2.5e9, 2.5e7, 1e6),
                                                  (1.5e8, 1e7, 9e6), (3e7, 9e6, 8e6)]):
        # the time model's operator time: the larger of compute and memory time (the CPU's default memory
        # curve for the class), then the weights at their rate
        memory = nbytes / (BANDWIDTH_GBPS * 1e9 * 0.5 * nbytes / (nbytes + 2e5))
        seconds = max(_synthetic(OpClass.CONV_DENSE, curve, [flops])[0].seconds, memory) + weights / (rate * 1e9)
        ms.append(Measurement(f"conv {i}", OpClass.CONV_DENSE, "float32", int(flops), int(nbytes), 1, seconds,
                              int(weights)))
    assert [m.heavy for m in ms] == [False] * 5 + [True] * 2
    assert DEFAULT_CPU.memory[OpClass.CONV_DENSE] == Curve(0.5, 2e5)  # the memory curve written out above
    cal = _fit(ms)
    # two passes (curve, rate, curve again, rate again): near, not exact
    assert cal.weights_gbps[OpClass.CONV_DENSE] == pytest.approx(rate, rel=1e-2)
    assert cal.compute[OpClass.CONV_DENSE].peak_share == pytest.approx(0.6, rel=1e-2)
    assert cal.fit_error == pytest.approx(0, abs=1e-2)
    assert Calibration.from_dict(cal.to_dict()) == cal
