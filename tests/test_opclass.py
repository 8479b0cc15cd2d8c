"""Each operator's class, FLOPs, bytes and GEMM dims against a hand computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnprobe.analysis.flops import flops as count_flops
from cnnprobe.memory.tracker import MemoryTracker, TensorSpec
from cnnprobe.runtime.opclass import classify, classify_all, conv_kind, native_threads
from cnnprobe.runtime.records import ANY_THREADS as ANY
from cnnprobe.runtime.records import OpClass

aten = torch.ops.aten
F32 = 4  # bytes per float32 element


def spec(*shape: int, dtype: torch.dtype = torch.float32) -> TensorSpec:
    """A contiguous tensor's spec."""
    stride, step = [], 1
    for n in reversed(shape):
        stride.insert(0, step)
        step *= n
    return TensorSpec(tuple(shape), tuple(stride), dtype)


@pytest.mark.parametrize(("groups", "k", "kind"), [
    (1, 1, OpClass.CONV_1X1), (1, 3, OpClass.CONV_DENSE), (4, 1, OpClass.CONV_GROUPED),
    (4, 3, OpClass.CONV_GROUPED), (8, 1, OpClass.CONV_DEPTHWISE), (8, 3, OpClass.CONV_DEPTHWISE)])
def test_convolution_class_flops_bytes_dims(groups, k, kind):
    """N=2, C_in=8, 10×10, C_out=16, 'same' padding (the output is 10×10), with a bias:
    FLOPs = 2·N·C_out·H·W·(C_in/g)·k²; bytes = (input + weight + output + bias) × 4;
    dims = (N·H·W, C_out/g, C_in/g·k²)."""
    n, c_in, h, w, c_out = 2, 8, 10, 10, 16
    args = (spec(n, c_in, h, w), spec(c_out, c_in // groups, k, k), spec(c_out), [1, 1], [k // 2, k // 2], [1, 1],
            False, [0, 0], groups)
    cost = classify(aten.convolution.default, args, {}, "forward")
    assert cost is not None
    assert cost.op_class is kind
    assert cost.flops == 2 * n * c_out * h * w * (c_in // groups) * k * k
    assert cost.bytes == (n * c_in * h * w + c_out * (c_in // groups) * k * k + n * c_out * h * w + c_out) * F32
    assert cost.dims == (n * h * w, c_out // groups, c_in // groups * k * k)
    assert cost.dtype == "float32" and cost.phase == "forward"
    assert cost.work == cost.flops  # a compute class: its size is its FLOPs


def test_convolution_backward_keeps_the_forward_gemm_and_counts_each_gradient():
    """Input and weight gradients, no bias: twice the forward's FLOPs, the forward's GEMM dims; bytes read
    grad_output, input, weight and write grad_input and grad_weight."""
    n, c, h, w = 2, 8, 6, 6
    args = (spec(n, 16, h, w), spec(n, c, h, w), spec(16, c, 3, 3), None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
            [True, True, False])
    cost = classify(aten.convolution_backward.default, args, {}, "backward")
    assert cost is not None and cost.op_class is OpClass.CONV_DENSE
    assert cost.flops == 2 * 2 * (n * 16 * h * w * c * 9)
    assert cost.dims == (n * h * w, 16, c * 9)
    assert cost.bytes == (n * 16 * h * w + 2 * n * c * h * w + 2 * 16 * c * 9) * F32


def test_conv_kind_edge_cases():
    assert conv_kind((1, 1, 8, 8), (4, 1, 3, 3), 1) is OpClass.CONV_DENSE  # one channel, groups 1: not depthwise
    assert conv_kind((1, 6, 8, 8), (6, 2, 1, 1), 3) is OpClass.CONV_GROUPED  # a grouped 1×1 is grouped


def test_addmm_is_a_gemm_with_its_dims():
    """addmm(bias[n], x[m, k], w[k, n]): FLOPs 2mnk; bytes (n + mk + kn + mn) × 4; dims (m, n, k)."""
    m, n, k = 32, 10, 64
    cost = classify(aten.addmm.default, (spec(n), spec(m, k), spec(k, n)), {}, "forward")
    assert cost is not None and cost.op_class is OpClass.GEMM
    assert cost.dims == (m, n, k)
    assert cost.flops == 2 * m * n * k
    assert cost.bytes == (n + m * k + k * n + m * n) * F32


def test_bmm_dims_leave_the_batch_to_the_flops():
    cost = classify(aten.bmm.default, (spec(3, 5, 7), spec(3, 7, 11)), {}, "forward")
    assert cost is not None and cost.op_class is OpClass.GEMM
    assert cost.dims == (5, 11, 7) and cost.flops == 2 * 3 * 5 * 11 * 7


def test_batch_norm_bytes():
    """Training batch norm reads the input, weight, bias, running mean and variance, and writes the output and
    the saved mean and inverse std: (2·NCHW + 6·C) × 4; no FLOPs formula; a memory class."""
    n, c, h, w = 4, 16, 7, 7
    args = (spec(n, c, h, w), spec(c), spec(c), spec(c), spec(c), True, 0.1, 1e-5)
    cost = classify(aten.native_batch_norm.default, args, {}, "forward")
    assert cost is not None and cost.op_class is OpClass.NORMALIZATION
    assert cost.flops == 0
    assert cost.bytes == (2 * n * c * h * w + 6 * c) * F32
    assert cost.work == cost.bytes


def test_elementwise_add_and_the_optimizers_add_():
    """add(a, b) reads two and writes one; add_(p, g) in the optimizer's phase reads p and g and writes p."""
    size = 1000
    add = classify(aten.add.Tensor, (spec(size), spec(size)), {}, "forward")
    assert add is not None and add.op_class is OpClass.ELEMENTWISE
    assert add.bytes == 3 * size * F32 and add.flops == 0 and add.dims is None
    step = classify(aten.add_.Tensor, (spec(size), spec(size)), {"alpha": -0.1}, "optimizer")
    assert step is not None and step.op_class is OpClass.OPTIMIZER and step.phase == "optimizer"
    assert step.bytes == 3 * size * F32
    same = classify(aten.add_.Tensor, (spec(size), spec(size)), {"alpha": -0.1}, "backward")
    assert same is not None and same.op_class is OpClass.ELEMENTWISE  # the cache keeps no phase


def test_bf16_dtype_and_other_classes():
    x = spec(2, 8, 6, 6, dtype=torch.bfloat16)
    pool = classify(aten.max_pool2d_with_indices.default, (x, [2, 2], [2, 2]), {}, "forward")
    assert pool is not None and pool.op_class is OpClass.POOLING and pool.dtype == "bfloat16"
    cast = classify(aten._to_copy.default, (x,), {"dtype": torch.float32}, "forward")
    assert cast is not None and cast.op_class is OpClass.COPY_LAYOUT
    assert cast.bytes == 2 * 8 * 6 * 6 * (2 + 4)  # read in bfloat16, written in float32
    cat = classify(aten.cat.default, ([spec(2, 3), spec(2, 5)], 1), {}, "forward")
    assert cat is not None and cat.op_class is OpClass.COPY_LAYOUT and cat.bytes == 2 * (2 * 8) * F32
    softmax = classify(aten._softmax.default, (spec(4, 10), 1, False), {}, "forward")
    assert softmax is not None and softmax.op_class is OpClass.REDUCTION
    foreach = classify(aten._foreach_mul_.Scalar, ([spec(10), spec(20)], 0.5), {}, "optimizer")
    assert foreach is not None and foreach.op_class is OpClass.OPTIMIZER and foreach.bytes == 2 * 30 * F32


def test_in_place_activations_and_backward_copies():
    x = spec(2, 16, 4, 4)
    for func in (aten.hardswish_.default, aten.silu_.default, aten.hardsigmoid_.default, aten.relu_.default):
        cost = classify(func, (x,), {}, "forward")
        assert cost is not None and cost.op_class is OpClass.ELEMENTWISE, func
        assert cost.bytes == 2 * 2 * 16 * 4 * 4 * F32  # read and written in place
    grad = classify(aten.select_backward.default, (spec(2, 16), [2, 5, 16], 1, 0), {}, "backward")
    assert grad is not None and grad.op_class is OpClass.COPY_LAYOUT
    assert grad.bytes == (2 * 16 + 2 * 5 * 16) * F32


def test_views_metadata_and_empty_cost_nothing():
    assert classify(aten.view.default, (spec(4, 6), [24]), {}, "forward") is None
    assert classify(aten.t.default, (spec(4, 6),), {}, "backward") is None
    assert classify(aten.detach.default, (spec(4, 6),), {}, "backward") is None
    assert classify(aten.empty.memory_format, ([1000, 1000],), {"dtype": torch.float32,
                                                                "device": torch.device("cpu")}, "forward") is None


def _recorded_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list:
    tracker = MemoryTracker({}, record_ops=True)
    with tracker:
        tracker.phase("forward")
        loss = nn.functional.cross_entropy(net(x), y)
        tracker.phase("backward")
        loss.backward()
    tracker.close()
    return tracker.result().ops


def test_a_real_steps_classes_and_flops_match_the_flop_counter():
    """Conv-BN-ReLU-Linear, forward and backward on the CPU, recorded by the memory tracker: the classes
    each operator should have, and FLOPs summing to `flops`' forward + backward for the same net."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 8 * 8, 10))
    ops = _recorded_step(net, torch.randn(2, 3, 8, 8), torch.randint(0, 10, (2,)))
    costs = classify_all(ops)
    by_name = {(c.phase, c.name): c.op_class for c in costs}
    assert by_name[("forward", "convolution")] is OpClass.CONV_DENSE
    assert by_name[("backward", "convolution_backward")] is OpClass.CONV_DENSE
    assert by_name[("forward", "native_batch_norm")] is OpClass.NORMALIZATION
    assert by_name[("backward", "native_batch_norm_backward")] is OpClass.NORMALIZATION
    assert by_name[("forward", "relu")] is OpClass.ELEMENTWISE
    assert by_name[("backward", "threshold_backward")] is OpClass.ELEMENTWISE
    assert by_name[("forward", "addmm")] is OpClass.GEMM and by_name[("backward", "mm")] is OpClass.GEMM
    assert by_name[("forward", "_log_softmax")] is OpClass.REDUCTION
    assert by_name[("forward", "nll_loss_forward")] is OpClass.REDUCTION
    assert not any(c.name in ("view", "t", "detach") for c in costs)
    assert {c.phase for c in costs} == {"forward", "backward"}
    report = count_flops(net, input_size="3,8,8", batch=2, backward=True)
    assert report.train_forward_macs is not None and report.backward_macs is not None
    counted = 2 * (report.train_forward_macs + report.backward_macs)
    assert sum(c.flops for c in costs) == counted
    # by hand: conv 2·2·8·64·27 forward and once more for its weight gradient (its input needs none);
    # linear 2·2·512·10 forward, twice in backward (input and weight gradients)
    assert counted == 2 * 2 * (2 * 8 * 64 * 27) + 3 * (2 * 2 * 512 * 10)


@pytest.mark.parametrize(("n", "c", "hw", "k", "stride", "groups", "threads"), [
    (4, 64, 14, 1, 1, 1, 1),  # 1×1, unstrided, batch under 16: torch's own kernel on one thread only
    (15, 64, 14, 1, 1, 1, 1),
    (16, 64, 14, 1, 1, 1, 0),  # batch 16: oneDNN
    (4, 64, 14, 1, 2, 1, 0),  # strided: oneDNN
    (4, 64, 14, 3, 1, 1, 0),  # 3×3: oneDNN
    (1, 8, 16, 3, 1, 1, ANY),  # batch 1, 8·16·16 = 2048 elements ≤ 20480, a 3×3 kernel: always its own
    (1, 8, 16, 5, 1, 1, 0),  # ... but a 5×5 kernel is oneDNN's
    (1, 128, 16, 3, 1, 1, 0),  # 32768 elements: oneDNN
    (1, 8, 16, 3, 1, 8, 0),  # grouped: oneDNN
])
def test_which_cpu_convolutions_torch_runs_with_its_own_kernel(n, c, hw, k, stride, groups, threads):
    """ATen's ConvParams::use_mkldnn, by hand: oneDNN needs (strided or dilated or N ≥ 16 or not 1×1 or more than
    one thread) and (groups > 1 or both kernel sides > 3 or N > 1 or N·C·H·W > 20480)."""
    w = (c, c // groups, k, k)
    assert native_threads((n, c, hw, hw), w, [stride] * 2, [1, 1], groups, "float32") == threads
    assert native_threads((n, c, hw, hw), w, [stride] * 2, [1, 1], groups, "bfloat16") == 0
    args = (spec(n, c, hw, hw), spec(*w), None, [stride] * 2, [k // 2] * 2, [1, 1], False, [0, 0], groups)
    cost = classify(aten.convolution.default, args, {}, "forward")
    assert cost is not None and cost.conv is not None
    assert cost.conv.native_threads == threads and cost.conv.samples == n and not cost.conv.weight_grad
    assert cost.weight_bytes == cost.conv.weight_bytes == c * (c // groups) * k * k * F32


def test_fresh_storages_and_gemm_weights():
    """An addmm allocates its output (m·n floats) and its weight is its larger input; an in-place add allocates
    nothing; a view allocates nothing."""
    cost = classify(aten.addmm.default, (spec(4096), spec(2, 9216), spec(9216, 4096)), {}, "forward")
    assert cost is not None and cost.fresh == (2 * 4096 * F32,) and cost.weight_bytes == 9216 * 4096 * F32
    cost = classify(aten.add_.Tensor, (spec(64, 64), spec(64, 64)), {}, "forward")
    assert cost is not None and cost.fresh == () and cost.weight_bytes == 0
    assert classify(aten.view.default, (spec(64, 64), [4096]), {}, "forward") is None
    backward = classify(aten.convolution_backward.default,
                        (spec(2, 16, 6, 6), spec(2, 8, 6, 6), spec(16, 8, 3, 3), None, [1, 1], [1, 1], [1, 1],
                         False, [0, 0], 1, [True, True, False]), {}, "backward")
    assert backward is not None and backward.conv is not None and backward.conv.weight_grad
    assert sorted(backward.fresh) == sorted((2 * 8 * 6 * 6 * F32, 16 * 8 * 9 * F32))  # grad_input, grad_weight


@pytest.mark.parametrize(("n", "k", "stride"), [(4, 1, 1), (16, 1, 1), (4, 1, 2), (4, 3, 1), (1, 3, 1)])
def test_the_kernel_rule_matches_the_kernel_torch_runs(n, k, stride):
    """The rule against torch itself: the profiler names the kernel a real convolution runs on one thread."""
    from torch.profiler import ProfilerActivity, profile

    c, hw = (8, 16) if n == 1 else (64, 14)
    x, w = torch.randn(n, c, hw, hw), torch.randn(c, c, k, k)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            torch.nn.functional.conv2d(x, w, stride=stride, padding=k // 2)
    finally:
        torch.set_num_threads(threads)
    names = {e.key for e in prof.key_averages()}
    native = native_threads(tuple(x.shape), tuple(w.shape), [stride] * 2, [1, 1], 1, "float32") >= 1
    assert ("aten::_slow_conv2d_forward" in names) is native, names
    assert ("aten::mkldnn_convolution" in names) is (not native), names
