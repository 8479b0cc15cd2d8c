"""The time model against hand computations, on devices and calibrations built here."""

from __future__ import annotations

import math

import pytest

from cnnprobe.runtime.records import Calibration, ConvShape, Curve, DeviceSpec, OpClass, OpCost
from cnnprobe.runtime.timemodel import (
    DEFAULT_CPU,
    DEFAULT_GPU,
    DEFAULT_PAGE_IN_GBPS,
    TILE,
    StepTime,
    on_cpu,
    op_seconds,
    page_in_seconds,
    paged_in_bytes,
    step_time,
    wave_factor,
    weight_seconds,
)

GPU = DeviceSpec(key="test-gpu", name="Test GPU", kind="gpu",
                 tflops={"float32": 60.0, "tf32": 400.0, "bfloat16": 800.0, "float16": 800.0},
                 bandwidth_gbps=3000.0, memory_bytes=80 * 10**9, sms=132, launch_us=3.0)
OLD_GPU = DeviceSpec(key="old-gpu", name="V100-like", kind="gpu", tflops={"float32": 15.7, "float16": 125.0},
                     bandwidth_gbps=900.0, memory_bytes=32 * 10**9, sms=80, launch_us=3.0)
CPU = DeviceSpec(key="test-cpu", name="Test CPU", kind="cpu", tflops={"float32": 2.0}, bandwidth_gbps=50.0,
                 memory_bytes=64 * 10**9, launch_us=10.0)
CAL = Calibration(device_key="test-gpu", device_name="Test GPU", compute={OpClass.GEMM: Curve(0.7, 1e9)},
                  memory={OpClass.ELEMENTWISE: Curve(0.8, 1e6), OpClass.GEMM: Curve(0.8, 2e6)}, launch_us=5.0,
                  calibrated=True, source="by hand")


def gemm(m: int, n: int, k: int, dtype: str = "bfloat16", batch: int = 1, phase: str = "forward") -> OpCost:
    size = {"bfloat16": 2, "float16": 2, "float32": 4}[dtype]
    return OpCost("mm", OpClass.GEMM, 2 * batch * m * n * k, batch * (m * k + k * n + m * n) * size, dtype, phase,
                  (m, n, k))


def add(elements: int, phase: str = "forward") -> OpCost:
    return OpCost("add", OpClass.ELEMENTWISE, 0, 3 * elements * 4, "float32", phase)


def test_compute_bound_gemm_by_hand():
    """8192³ in bfloat16: 2·8192³ FLOPs at 800 TFLOP/s × 0.7·F/(F + 1e9) × the wave factor, 64·64 = 4096 tiles
    over 132 SMs: 32 waves, factor 4096 / (32·132); plus the calibration's 5 µs launch."""
    op = gemm(8192, 8192, 8192)
    flops = 2 * 8192**3
    efficiency = 0.7 * flops / (flops + 1e9)
    wave = 4096 / (32 * 132)
    compute = flops / (800e12 * efficiency * wave)
    memory = 3 * 8192**2 * 2 / (3000e9 * 0.8 * (3 * 8192**2 * 2) / (3 * 8192**2 * 2 + 2e6))
    assert compute > memory  # compute-bound
    assert wave_factor(op, GPU) == pytest.approx(wave)
    assert op_seconds(op, GPU, CAL) == pytest.approx(compute + 5e-6, rel=1e-12)


def test_memory_bound_add_by_hand():
    """2²⁴ float32 elements, two read and one written: bytes / (3000 GB/s × 0.8·B/(B + 1e6)) + 5 µs."""
    op = add(2**24)
    moved = 3 * 2**24 * 4
    assert op_seconds(op, GPU, CAL) == pytest.approx(moved / (3000e9 * 0.8 * moved / (moved + 1e6)) + 5e-6,
                                                     rel=1e-12)


def test_wave_factor_full_waves_and_one_tile_more():
    """m = n = 128·132: 132·132 tiles, exactly 132 waves over 132 SMs: factor 1. 133 tiles (m = 128·133,
    n = 128) need 2 waves: 133 / (2·132). A bmm's batch multiplies the tiles: 3 × 44 = 132 tiles, one wave."""
    assert TILE == 128
    assert wave_factor(gemm(128 * 132, 128 * 132, 64), GPU) == 1.0
    assert wave_factor(gemm(128 * 133, 128, 64), GPU) == pytest.approx(133 / 264)
    assert wave_factor(gemm(128 * 132 * 132 + 1, 128, 64), GPU) == pytest.approx(17425 / (133 * 132))
    assert wave_factor(gemm(128 * 44, 128, 64, batch=3), GPU) == 1.0
    assert wave_factor(gemm(128, 128, 64), GPU) == pytest.approx(1 / 132)
    assert wave_factor(gemm(128 * 133, 128, 64), CPU) == 1.0  # no waves on a CPU
    assert wave_factor(add(10**6), GPU) == 1.0  # no GEMM, no waves


def test_a_precision_the_device_lacks_runs_at_float32s_peak():
    """bfloat16 on a V100-like device (float32 15.7, float16 125 TFLOP/s): float32's peak, by hand."""
    bf16, fp32, fp16 = gemm(4096, 4096, 4096, "bfloat16"), gemm(4096, 4096, 4096, "float32"), gemm(
        4096, 4096, 4096, "float16")
    flops = 2 * 4096**3
    tiles = 32 * 32
    wave = tiles / (math.ceil(tiles / 80) * 80)
    expected = flops / (15.7e12 * 0.7 * flops / (flops + 1e9) * wave) + 5e-6
    assert op_seconds(bf16, OLD_GPU, CAL) == pytest.approx(expected, rel=1e-12)
    assert op_seconds(bf16, OLD_GPU, CAL) == pytest.approx(op_seconds(fp32, OLD_GPU, CAL), rel=1e-12)
    assert op_seconds(fp16, OLD_GPU, CAL) < op_seconds(fp32, OLD_GPU, CAL) / 5


def test_tf32_uses_its_peak_only_when_asked():
    op = gemm(8192, 8192, 8192, "float32")
    assert op_seconds(op, GPU, CAL, tf32=True) < op_seconds(op, GPU, CAL) / 5
    ratio = (op_seconds(op, GPU, CAL) - 5e-6) / (op_seconds(op, GPU, CAL, tf32=True) - 5e-6)
    assert ratio == pytest.approx(400 / 60, rel=1e-9)


def test_defaults_and_the_spec_launch_cost_fill_what_the_calibration_lacks():
    """An empty calibration reads the class defaults and the spec table's launch cost."""
    empty = Calibration(device_key="test-gpu", device_name="")
    op = OpCost("native_batch_norm", OpClass.NORMALIZATION, 0, 10**8, "float32", "forward")
    curve = DEFAULT_GPU.memory[OpClass.NORMALIZATION]
    assert op_seconds(op, GPU, empty) == pytest.approx(
        1e8 / (3000e9 * curve.efficiency(1e8)) + GPU.launch_us * 1e-6, rel=1e-12)
    cpu_curve = DEFAULT_CPU.memory[OpClass.NORMALIZATION]
    assert op_seconds(op, CPU, empty) == pytest.approx(1e8 / (50e9 * cpu_curve.efficiency(1e8)) + 10e-6, rel=1e-12)
    for defaults in (DEFAULT_GPU, DEFAULT_CPU):
        assert not defaults.calibrated and defaults.launch_us > 0
        assert set(defaults.memory) == set(OpClass)  # every class has a memory curve
        assert all(c in defaults.compute for c in OpClass if c.compute_bound)
    # a depthwise convolution reaches far less of the peak than a dense one, on both kinds of device (a third
    # on the CPU the defaults were calibrated on)
    for defaults in (DEFAULT_GPU, DEFAULT_CPU):
        assert defaults.compute[OpClass.CONV_DEPTHWISE].peak_share < defaults.compute[OpClass.CONV_DENSE].peak_share / 3


def test_step_time_sums_phases_and_classes():
    ops = [gemm(1024, 1024, 1024, phase="forward"), add(10**6, phase="unmarked"), add(10**6, phase="backward"),
           gemm(1024, 1024, 1024, phase="backward"),
           OpCost("add_", OpClass.OPTIMIZER, 0, 12 * 10**6, "float32", "optimizer")]
    times = [op_seconds(op, GPU, CAL) for op in ops]
    result = step_time(ops, GPU, CAL)
    assert isinstance(result, StepTime)
    assert result.forward_s == pytest.approx(times[0] + times[1])  # unmarked counts in forward
    assert result.backward_s == pytest.approx(times[2] + times[3])
    assert result.optimizer_s == pytest.approx(times[4])
    assert result.total_s == pytest.approx(sum(times))
    assert sum(result.by_class.values()) == pytest.approx(result.total_s)
    assert result.by_class["gemm"] == pytest.approx(times[0] + times[3])
    assert set(result.by_class) == {"gemm", "elementwise", "optimizer"}
    assert result.kernels == 5
    assert result.dominant[0][0] in result.by_class
    assert sum(share for _, share in result.dominant) == pytest.approx(1.0)


def _conv(samples: int, weight: int, native: int, phase: str = "forward", weight_grad: bool = False,
          fresh: tuple[int, ...] = ()) -> OpCost:
    return OpCost("convolution_backward" if phase == "backward" else "convolution", OpClass.CONV_1X1, 10**6,
                  10**6, "float32", phase, (64, 64, 64), fresh,
                  ConvShape(samples, weight, weight_grad, native), weight)


ONE_THREAD = DeviceSpec(key="cpu", name="Test CPU", kind="cpu", tflops={"float32": 2.0}, bandwidth_gbps=50.0,
                        memory_bytes=64 * 10**9, launch_us=10.0, threads=1)


def test_a_convolution_torch_runs_itself_rereads_its_weights_per_sample():
    """Batch 4, 1 MB of weights, on one thread: CONV_NATIVE, and 3 more reads of the weights forward (one per
    sample); a backward with the weight's gradient 3 × 3 more (input gradient, weight read and accumulation)."""
    forward = on_cpu(_conv(4, 10**6, native=1), threads=1)
    assert forward.op_class is OpClass.CONV_NATIVE and forward.bytes == 10**6 + 3 * 10**6
    assert on_cpu(forward, threads=1) == forward  # the copies are added once, however often it is asked
    backward = on_cpu(_conv(4, 10**6, native=1, phase="backward", weight_grad=True), threads=1)
    assert backward.bytes == 10**6 + 9 * 10**6
    input_only = on_cpu(_conv(4, 10**6, native=1, phase="backward"), threads=1)
    assert input_only.bytes == 10**6 + 3 * 10**6
    # two threads: oneDNN's, unchanged
    assert on_cpu(_conv(4, 10**6, native=1), threads=2) == _conv(4, 10**6, native=1)


def test_pages_faulted_in_fresh_by_hand():
    """Only storages of 32 MiB or more are mapped fresh; oneDNN's blocked copy of large weights too (twice in a
    backward computing the weight's gradient); torch's own kernel makes no copy. At the calibration's
    2 GB/s: bytes / 2e9 seconds."""
    big, small = 40 * 2**20, 31 * 2**20
    op = _conv(4, 10**6, native=0, fresh=(big, small))
    assert paged_in_bytes(op, 1) == big
    heavy = _conv(2, big, native=0, phase="backward", weight_grad=True, fresh=(big,))
    assert paged_in_bytes(heavy, 1) == big + 2 * big
    assert paged_in_bytes(_conv(2, big, native=1), 1) == 0
    cal = Calibration(device_key="cpu", device_name="", page_in_gbps=2.0)
    assert page_in_seconds(op, ONE_THREAD, cal) == pytest.approx(big / 2e9)
    assert page_in_seconds(op, GPU, cal) == 0  # a GPU's caching allocator keeps its memory mapped
    assert page_in_seconds(op, ONE_THREAD, Calibration(device_key="cpu", device_name="")) == \
        pytest.approx(big / (DEFAULT_PAGE_IN_GBPS * 1e9))


def test_weight_preparation_by_hand():
    """A convolution's weights at its class's rate, a backward's own where the calibration has one."""
    cal = Calibration(device_key="cpu", device_name="", weights_gbps={OpClass.CONV_1X1: 4.0},
                      backward_weights_gbps={OpClass.CONV_1X1: 0.5})
    assert weight_seconds(_conv(2, 8 * 10**6, native=0), cal) == pytest.approx(8e6 / 4e9)
    assert weight_seconds(_conv(2, 8 * 10**6, native=0, phase="backward"), cal) == pytest.approx(8e6 / 0.5e9)
    assert weight_seconds(add(10**6), cal) == 0
    assert weight_seconds(_conv(2, 8 * 10**6, native=0), Calibration(device_key="cpu", device_name="")) == 0
    # in the operator's time, on top of the roofline and the launch
    op = _conv(2, 8 * 10**6, native=0)
    plain = Calibration(device_key="cpu", device_name="", compute={OpClass.CONV_1X1: Curve(0.5, 0.0)})
    both = Calibration(**{**plain.__dict__, "weights_gbps": {OpClass.CONV_1X1: 4.0}})
    assert op_seconds(op, ONE_THREAD, both) - op_seconds(op, ONE_THREAD, plain) == pytest.approx(8e6 / 4e9)
