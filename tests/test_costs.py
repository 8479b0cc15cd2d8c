"""Costs by module call, forward and backward: MACs and bytes, against formulas written out here and `flops`."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import cnnprobe
from cnnprobe.models.freezing import FreezePlan
from cnnprobe.trace.costs import CostCounter, PhaseCost, StepCosts

N, C, H, W, COUT, K, CLASSES = 2, 3, 8, 8, 8, 3, 10
F32 = 4  # bytes per element


def _net(inplace: bool = False) -> nn.Module:
    with torch.device("meta"):
        return nn.Sequential(nn.Conv2d(C, COUT, K, padding=1), nn.ReLU(inplace=inplace), nn.Flatten(),
                             nn.Linear(COUT * H * W, CLASSES))


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepCosts:
    """A training step as the steps mark it: forward with the loss, then its backward."""
    counter = CostCounter(model)
    with counter:
        counter.phase("forward")
        loss = F.cross_entropy(model(x), y)
        counter.phase("backward")
        loss.backward()
        counter.phase("end")
    return counter.costs()


def _tiny_step(inplace: bool = False, freeze_conv: bool = False) -> StepCosts:
    net = _net(inplace)
    if freeze_conv:
        net[0].requires_grad_(False)
    x = torch.empty(N, C, H, W, device="meta")
    y = torch.zeros(N, dtype=torch.long, device="meta")
    return _train(net, x, y)


CONV_MACS = N * COUT * H * W * C * K * K
LINEAR_MACS = N * (COUT * H * W) * CLASSES
IMAGE, CONV_W, CONV_OUT = N * C * H * W, COUT * C * K * K, N * COUT * H * W
LINEAR_W = CLASSES * COUT * H * W


def test_forward_macs_and_bytes_from_hand_formulas():
    """aten.convolution takes the bias as an operand and adds it in the same kernel: the conv reads its input,
    weight and bias and writes its output. ReLU reads its input and writes its output. Flatten is a view: 0.
    Linear runs as addmm(bias, x, weight.t()): weight.t() is a view of the weight's storage, read once."""
    by = _tiny_step().by_name()
    assert by["0"].forward_macs == CONV_MACS
    assert by["0"].forward_bytes == F32 * (IMAGE + CONV_W + COUT + CONV_OUT)
    assert by["1"].forward_macs == 0 and by["1"].forward_bytes == F32 * 2 * CONV_OUT
    assert by["2"].forward_bytes == 0
    assert by["3"].forward_macs == LINEAR_MACS
    assert by["3"].forward_bytes == F32 * (CLASSES + CONV_OUT + LINEAR_W + N * CLASSES)
    assert by[""].forward_macs == CONV_MACS + LINEAR_MACS


def test_in_place_relu_reads_and_writes_its_tensor():
    """The rule: an in-place operator reads and writes its argument, both count (as relu's out of place)."""
    assert _tiny_step(inplace=True).by_name()["1"].forward_bytes == F32 * 2 * CONV_OUT


def test_backward_macs_all_trainable():
    """The first conv's input needs no gradient: only its weight gradient (1× forward). The linear computes
    both (2× forward). The conv's backward reads the output gradient, input and weight, writes the weight's and
    the bias's gradients; ReLU's reads the gradient and its output and writes the input gradient."""
    by = _tiny_step().by_name()
    assert by["0"].backward_macs == CONV_MACS
    assert by["0"].backward_bytes == F32 * (CONV_OUT + IMAGE + CONV_W + CONV_W + COUT)
    assert by["1"].backward_bytes == F32 * 3 * CONV_OUT
    assert by["3"].backward_macs == 2 * LINEAR_MACS
    # input gradient mm(grad, W), weight gradient mm(grad.t(), x), bias gradient sum(grad): each reads its
    # operands and writes its result
    grad = N * CLASSES
    assert by["3"].backward_bytes == F32 * ((grad + LINEAR_W + CONV_OUT) + (grad + CONV_OUT + LINEAR_W)
                                            + (grad + CLASSES))
    assert by[""].backward_macs == CONV_MACS + 2 * LINEAR_MACS


def test_frozen_first_layer_has_no_backward():
    """Frozen, with an input that needs no gradient: autograd never runs the conv (nor the ReLU after it), and
    the linear's input needs no gradient either, so its backward is the weight gradient alone."""
    costs = _tiny_step(freeze_conv=True)
    by = costs.by_name()
    assert by["0"].backward_macs == 0 and by["0"].backward_bytes == 0
    assert by["1"].backward_bytes == 0
    assert by["3"].backward_macs == LINEAR_MACS
    spans = {s.name: s.span for s in costs.walk()}
    assert not spans["0"].has_backward and not spans["1"].has_backward and spans["3"].has_backward


def test_each_counted_operator_told_once():
    """The Tracer's own FLOP tallies, forward and backward, against what its hook told the counter."""
    net = _net()
    counter = CostCounter(net)
    with counter:
        counter.phase("forward")
        loss = F.cross_entropy(net(torch.empty(N, C, H, W, device="meta")), torch.zeros(N, dtype=torch.long,
                                                                                      device="meta"))
        counter.phase("backward")
        loss.backward()
    costs = counter.costs()
    assert 2 * costs.seen.macs == counter.tracer.total_flops + counter.tracer.backward_flops
    assert 2 * costs.spans_total().forward_macs == counter.tracer.total_flops


def test_nothing_dropped():
    costs = _tiny_step()
    assert costs.total() == costs.seen
    assert costs.seen.bytes == sum(costs.bytes_by_op.values()) > 0
    # the loss and its gradient run outside the model: bucketed by phase, with bytes
    assert costs.phases["forward"].bytes > 0 and costs.phases["backward"].bytes > 0
    assert costs.phases["forward"].macs == 0


def test_optimizer_phase_moves_bytes_without_macs():
    net = _net()
    x = torch.empty(N, C, H, W, device="meta")
    y = torch.zeros(N, dtype=torch.long, device="meta")
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    counter = CostCounter(net)
    with counter:
        counter.phase("forward")
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        counter.phase("backward")
        loss.backward()
        counter.phase("optimizer")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        counter.phase("end")
    costs = counter.costs()
    params = sum(p.numel() for p in net.parameters())
    # at least: each parameter read and written, each gradient read
    assert costs.phases["optimizer"].bytes >= F32 * 3 * params
    assert costs.phases["optimizer"].macs == 0
    assert costs.total() == costs.seen


def test_forward_only_under_inference_mode():
    net = _net().eval()
    x = torch.empty(N, C, H, W, device="meta")
    counter = CostCounter(net)
    with counter:
        counter.phase("forward")
        with torch.inference_mode():
            net(x)
        counter.phase("end")
    costs = counter.costs()
    assert all(s.total.backward_macs == 0 and s.total.backward_bytes == 0 for s in costs.walk())
    assert not any(s.span.has_backward for s in costs.walk())
    assert costs.by_name()[""].forward_macs == CONV_MACS + LINEAR_MACS
    assert "backward" not in costs.phases


def test_spans_nest_and_costs_are_inclusive():
    costs = _tiny_step()
    for s in costs.walk():
        summed = s.own
        for child in s.children:
            summed = summed + child.total
        assert s.total == summed
    # depth 1 with what the model ran itself partitions the model's cost
    depth1, uncovered = costs.by_name(1), costs.uncovered(1)
    rows = list(depth1.values()) + list(uncovered.values())
    assert sum(r.bytes for r in rows) == costs.by_name()[""].bytes
    assert sum(r.macs for r in rows) == costs.by_name()[""].macs


def _bytes_of(fn: Callable[[], object]) -> int:
    counter = CostCounter(nn.Identity())
    with counter:
        fn()
    return counter.costs().seen.bytes


def test_byte_rules_of_one_operator():
    """Each distinct tensor read plus each written, a storage at most once: an expanded input reads its small
    storage, a slice its own elements, a tensor passed twice once; a destination only written is not read;
    views move nothing, copies read and write."""
    n = 1000
    row, square, other = (torch.empty(1, n, device="meta"), torch.empty(n, n, device="meta"),
                          torch.empty(n, n, device="meta"))
    assert _bytes_of(lambda: row.expand(n, n) + square) == F32 * (n + 2 * n * n)
    assert _bytes_of(lambda: square[:10].sum()) == F32 * (10 * n + 1)
    assert _bytes_of(lambda: square * square) == F32 * 2 * n * n
    assert _bytes_of(lambda: square.copy_(other)) == F32 * 2 * n * n
    assert _bytes_of(lambda: torch.add(row, row, out=torch.empty(1, n, device="meta"))) == F32 * 2 * n
    assert _bytes_of(lambda: square.add_(other)) == F32 * 3 * n * n
    assert _bytes_of(lambda: square.clone()) == F32 * 2 * n * n
    assert _bytes_of(lambda: square.view(-1).t().unsqueeze(0).permute(1, 0)) == 0


def _resnet18(freeze_except: str | None) -> nn.Module:
    with torch.device("meta"):
        model = torchvision.models.resnet18()
    if freeze_except:
        FreezePlan.from_options(freeze_except=freeze_except).apply(model)
    return model.train()


@pytest.mark.parametrize("freeze_except", [None, "layer4,fc"])
def test_resnet18_matches_flops(freeze_except):
    size = (3, 64, 64)
    report = cnnprobe.flops("resnet18", input_size=",".join(map(str, size)), backward=True,
                            freeze_except=freeze_except)
    model = _resnet18(freeze_except)
    x = torch.empty(1, *size, device="meta")
    costs = _train(model, x, torch.zeros(1, dtype=torch.long, device="meta"))
    total = costs.spans_total()
    outside = {k: v.macs for k, v in costs.phases.items()}
    assert total.backward_macs + outside.get("backward", 0) == report.backward_macs
    depth1 = costs.by_name(1)
    forward = sum(c.forward_macs for c in depth1.values()) + costs.uncovered(1)[""].forward_macs
    assert forward + outside.get("forward", 0) == report.train_forward_macs
    assert costs.total() == costs.seen
    if freeze_except:
        spans = {s.name: s for s in costs.walk()}
        for prefix in ("conv1", "bn1", "layer1", "layer2", "layer3"):
            assert not spans[prefix].span.has_backward
            assert spans[prefix].total.backward_macs == 0 == spans[prefix].total.backward_bytes
        layer4 = depth1["layer4"]
        assert layer4.backward_macs > layer4.forward_macs  # weight and input gradients
        assert spans["layer3"].total.forward_macs > 0


def test_train_step_marks_its_phases_on_the_counter():
    """The counter as a TrainStep's `marks`, on a meta setup: what the model runs is in its spans, the loss,
    its gradient and the optimizer in the phases. Plain SGD is `p.add_(grad, alpha=-lr)` per parameter: it
    reads the parameter and its gradient and writes the parameter, 3 × 4 bytes per trainable element."""
    from cnnprobe.training.config import BenchConfig
    from cnnprobe.training.setup import BenchSetup
    from cnnprobe.training.steps import TrainStep
    from cnnprobe.training.targets import make_targets

    config = BenchConfig(mode="train_step", optimizer="sgd", input_size="3,32,32", freeze_except="layer4,fc")
    built = config.request.build("resnet18", weights=False)
    inputs = tuple(s.make(2, "meta", random=True) for s in built.inputs)
    setup = BenchSetup.assembled(built, built.module, inputs, make_targets(built, inputs), config, 2, device="meta")
    setup.set_frozen(True)
    runner = TrainStep(setup, frozen=True)
    step = runner.step()
    step()  # the gradients and optimizer state a steady step starts with
    counter = CostCounter(built.module)
    runner.marks = counter
    with counter:
        step()
    costs = counter.costs()
    trainable = sum(p.numel() for p in built.module.parameters() if p.requires_grad)
    assert costs.phases["optimizer"] == PhaseCost(0, F32 * 3 * trainable)
    assert costs.phases["forward"].bytes > 0 and costs.phases["backward"].bytes > 0
    report = cnnprobe.flops("resnet18", input_size="3,32,32", batch=2, backward=True, freeze_except="layer4,fc")
    assert costs.spans_total().backward_macs + costs.phases["backward"].macs == report.backward_macs
    assert costs.total() == costs.seen


def test_max_depth_folds_deeper_calls_into_their_caller():
    """Followed to depth 1 only, each top-level module's own cost is what it and everything it calls ran."""
    x, y = torch.empty(2, 3, 32, 32, device="meta"), torch.zeros(2, dtype=torch.long, device="meta")
    deep = _train(_resnet18(None), x, y)
    model = _resnet18(None)
    counter = CostCounter(model, max_depth=1)
    with counter:
        counter.phase("forward")
        loss = F.cross_entropy(model(x), y)
        counter.phase("backward")
        loss.backward()
    shallow = counter.costs()
    assert max(s.depth for s in shallow.walk()) == 1
    assert {s.name: s.own for s in shallow.walk() if s.depth == 1} == deep.by_name(1)
