"""FLOPs you can trust: labelled, exact against published figures, backward counted with freezing."""

from __future__ import annotations

from math import prod

import pytest
from torch import nn

import cnnprobe
from cnnprobe.analysis.flops import within_published
from cnnprobe.core.errors import (
    InputSizeError,
    InputTooSmallError,
    PatternError,
    UnknownModelError,
)
from cnnprobe.models.registry import list_models

from .conftest import one_error_line


def conv_macs(cin: int, cout: int, k: int, out_hw: int) -> int:
    return cin * cout * k * k * out_hw * out_hw


def test_lenet_macs_derived_from_layer_shapes():
    """Conv MACs = Cin·Cout·k²·H_out·W_out, linear MACs = in·out; biases are additions, not MACs."""
    s = cnnprobe.summary("lenet", depth=2)
    shapes = {r.name: r.output_shape for r in s.layers}
    conv1 = conv_macs(1, 6, 5, shapes["features.0"][-1])  # 28×28 out
    conv2 = conv_macs(6, 16, 5, shapes["features.3"][-1])  # 10×10 out
    linears = 400 * 120 + 120 * 84 + 84 * 10
    assert conv1 + conv2 + linears == 416_520
    assert cnnprobe.flops("lenet").macs == 416_520
    assert s.macs == 416_520
    per_layer = {r.name: r.macs for r in s.layers}
    assert per_layer["features.0"] == conv1 and per_layer["features.3"] == conv2
    assert per_layer["classifier.1"] == 400 * 120


def test_flops_are_twice_macs_and_scale_with_batch():
    one = cnnprobe.flops("resnet18")
    eight = cnnprobe.flops("resnet18", batch=8)
    assert one.flops == 2 * one.macs
    assert eight.macs == 8 * one.macs
    assert eight.input_size == [8, 3, 224, 224]


def test_attention_is_counted():
    """torchvision's 17.564 for vit_b_16 includes attention; without it the count is about 4% lower."""
    r = cnnprobe.flops("vit_b_16")
    assert within_published(r.macs / 1e9, 17.564)
    ops = {o.op: o.macs for o in r.by_operator}
    attention = sum(m for op, m in ops.items() if "attention" in op or op in ("bmm", "matmul"))
    assert attention > 0.03 * r.macs


def test_swin_attention_through_plain_matmuls_is_counted():
    assert within_published(cnnprobe.flops("swin_t").macs / 1e9, 4.491)


def test_by_module_and_by_operator_read_the_same_total():
    r = cnnprobe.flops("resnet50", depth=1)
    assert sum(m.macs for m in r.by_module) == r.macs
    assert sum(o.macs for o in r.by_operator) == r.macs
    assert abs(sum(o.share for o in r.by_operator) - 1) < 1e-9


def test_uncounted_operators_are_listed_not_dropped():
    r = cnnprobe.flops("resnet18")
    batch_norm = [op for op in r.uncounted_ops if "batch_norm" in op]  # the overload name varies by torch release
    assert batch_norm and sum(r.uncounted_ops[op] for op in batch_norm) == 20
    assert r.uncounted_ops["relu_"] == 17
    assert r.uncounted_ops["add_"] == 8


def test_backward_counts_weight_and_input_gradients():
    """LeNet: every layer needs weight gradients; all but the first need input gradients."""
    r = cnnprobe.flops("lenet", backward=True)
    weight_grads = r.macs
    input_grads = r.macs - conv_macs(1, 6, 5, 28)
    assert r.backward_macs == weight_grads + input_grads
    assert r.backward_flops == 2 * r.backward_macs


def _out_side(size: int, k: int, stride: int = 1, pad: int = 0, dilation: int = 1) -> int:
    """PyTorch's documented output size of a convolution along one axis."""
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


class _Stem(nn.Module):
    """A 1×1 convolution in front of the layer under test, so the layer's input needs a gradient too."""

    def __init__(self, channels: int, layer: nn.Module, dims: int) -> None:
        super().__init__()
        self.stem = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1](channels, channels, 1, bias=False)
        self.layer = layer

    def forward(self, x):
        return self.layer(self.stem(x))


# Each case: the layer, the input (C and spatial sizes), and the layer's forward MACs written out by hand:
# every output position (input position, when transposed) × output channels × input channels per group × kernel.
_CONV_CASES = {
    "depthwise 3x3": (nn.Conv2d(64, 64, 3, padding=1, groups=64), (64, 56, 56),
                      _out_side(56, 3, pad=1) ** 2 * 64 * (64 // 64) * 3 * 3),
    "grouped 3x3 stride 2": (nn.Conv2d(32, 64, 3, stride=2, padding=1, groups=4), (32, 20, 20),
                             _out_side(20, 3, 2, 1) ** 2 * 64 * (32 // 4) * 3 * 3),
    "dilated 3x3": (nn.Conv2d(8, 8, 3, padding=2, dilation=2), (8, 17, 17),
                    _out_side(17, 3, pad=2, dilation=2) ** 2 * 8 * 8 * 9),
    "transposed grouped 4x4 stride 2": (
        nn.ConvTranspose2d(16, 24, 4, stride=2, padding=1, output_padding=1, groups=2), (16, 9, 9),
        9 * 9 * 16 * (24 // 2) * 4 * 4),  # each input position scatters C_out/groups × k² products
    "1-d depthwise k5": (nn.Conv1d(12, 12, 5, padding=2, groups=12), (12, 100), _out_side(100, 5, pad=2) * 12 * 1 * 5),
    "1-d k3 stride 2": (nn.Conv1d(4, 6, 3, stride=2), (4, 31), _out_side(31, 3, 2) * 6 * 4 * 3),
    "3-d grouped": (nn.Conv3d(8, 8, 3, padding=1, groups=2), (8, 4, 6, 6), 4 * 6 * 6 * 8 * (8 // 2) * 27),
}


@pytest.mark.parametrize("case", list(_CONV_CASES))
def test_convolution_backward_matches_the_hand_formula(case):
    """Backward of a convolution = its forward MACs for the weight gradient, plus the same again for the
    input gradient when something before it trains. torch's own counter overcounts grouped ones by `groups`."""
    layer, size, forward = _CONV_CASES[case]
    channels, dims = size[0], len(size) - 1
    alone = cnnprobe.flops(layer, input_size=size, backward=True, depth=0)
    assert alone.macs == forward
    assert alone.backward_macs == forward  # the first layer: weight gradient only
    stem_macs = prod(size) * channels  # 1×1 convolution, channels → channels, at every input position
    with_stem = cnnprobe.flops(_Stem(channels, layer, dims), input_size=size, backward=True, depth=0)
    assert with_stem.macs == stem_macs + forward
    assert with_stem.backward_macs == stem_macs + 2 * forward  # stem: weight grad; layer: input and weight grads


def test_backward_of_a_frozen_grouped_convolution_is_only_its_input_gradient():
    layer = nn.Conv2d(32, 32, 3, padding=1, groups=32)
    forward = 16 * 16 * 32 * 1 * 9
    model = _Stem(32, layer, 2)
    stem_macs = 32 * 16 * 16 * 32
    r = cnnprobe.flops(model, input_size="32,16,16", backward=True, freeze="layer", depth=0)
    assert r.backward_macs == forward + stem_macs  # layer: input gradient only; stem: weight gradient


def test_backward_honours_freezing():
    """Frozen layers need no weight gradients, and layers before the first trainable one no input gradients."""
    full = cnnprobe.flops("lenet", backward=True)
    head_only = cnnprobe.flops("lenet", backward=True, freeze_except="classifier.5")
    assert head_only.backward_macs == 84 * 10  # the head's weight gradient; nothing flows further back
    last_two = cnnprobe.flops("lenet", backward=True, freeze_except="classifier.3,classifier.5")
    assert last_two.backward_macs == (120 * 84 + 84 * 10) + 84 * 10  # two weight grads, one input grad
    nothing = cnnprobe.flops("lenet", backward=True, freeze_all=True)
    assert nothing.backward_macs == 0
    assert full.backward_macs > last_two.backward_macs


def test_frozen_resnet18_backbone_saves_backward_flops():
    full = cnnprobe.flops("resnet18", backward=True)
    frozen = cnnprobe.flops("resnet18", backward=True, freeze_except="layer4,fc")
    assert frozen.macs == full.macs
    assert frozen.backward_macs < 0.25 * full.backward_macs
    assert frozen.trainable_params == 8_906_728


def test_freezing_without_backward_is_an_error():
    with pytest.raises(PatternError, match="--backward"):
        cnnprobe.flops("resnet18", freeze_except="fc")


def test_fvcore_engine_on_real_tensors():
    r = cnnprobe.flops("resnet18", counter="fvcore")
    assert r.counter == "fvcore" and r.device == "cpu"
    ops = {o.op: o.macs for o in r.by_operator}
    assert ops["conv"] == cnnprobe.flops("resnet18").by_operator[0].macs  # same convolutions
    assert "batch_norm" in ops  # fvcore's own convention adds normalisation
    assert r.macs > cnnprobe.flops("resnet18").macs


def test_fvcore_skips_attention():
    ours = cnnprobe.flops("vit_b_16").macs
    theirs = cnnprobe.flops("vit_b_16", counter="fvcore")
    assert theirs.macs < 0.98 * ours
    assert any("attention" in op for op in theirs.uncounted_ops)


def test_a_module_with_counter_fvcore():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 14 * 14, 2))
    r = cnnprobe.flops(model, input_size="3,16,16", counter="fvcore")
    assert r.macs == 3 * 8 * 9 * 14 * 14 + 8 * 14 * 14 * 2


@pytest.mark.parametrize(
    "kwargs, error",
    [({"input_size": "3,16,16"}, InputTooSmallError), ({"batch": 0}, InputSizeError),
     ({"backward": True, "freeze_except": "layer9"}, PatternError)],
)
def test_bad_input(kwargs, error):
    with pytest.raises(error):
        cnnprobe.flops("cnnprobe:alexnet", **kwargs)


def test_unknown_model():
    with pytest.raises(UnknownModelError):
        cnnprobe.flops("alexnett")


# ---------------------------------------------------------------- CLI


def test_cli_labels_macs_and_flops(cli):
    run = cli("flops", "resnet18")
    assert run.exit_code == 0
    assert "MACs 1.814 G · FLOPs 3.628 G" in run.stdout
    assert "FLOPs = 2 × MACs" in run.stdout
    assert 'under "GFLOPS": those are MACs' in run.stdout
    assert "not counted" in run.stdout


def test_cli_json_contract(cli):
    data = cli("flops", "resnet18", "--json", "--backward", "--freeze-except", "layer4,fc").json()
    assert data["macs"] == 1_814_073_344
    assert data["flops"] == 2 * data["macs"]
    assert data["input_size"] == [1, 3, 224, 224]
    assert "2 * macs" in data["convention"]
    assert data["backward_flops"] == 2 * data["backward_macs"] > 0
    assert {"by_module", "by_operator", "uncounted_ops"} <= set(data)


def test_cli_json_without_backward_has_no_backward_keys(cli):
    data = cli("flops", "lenet", "--json").json()
    assert "backward_flops" not in data
    assert data["macs"] == 416_520


@pytest.mark.parametrize(
    "args, message",
    [(["flops", "resnt18"], "did you mean resnet18"),
     (["flops", "cnnprobe:alexnet", "--input-size", "3,16,16"], "too small"),
     (["flops", "resnet18", "--backward", "--freeze-except", "layer9"], "'layer9' matches no parameter"),
     (["flops", "resnet18", "--input-size", "3,x,2"], "malformed --input-size"),
     (["flops", "resnet18", "--counter", "thop"], "Invalid value for '--counter'")],
)
def test_cli_bad_input_is_one_line(cli, args, message):
    assert message in one_error_line(cli(*args))


# MACs against `_ops` for every model of every task: tests/test_task_flops.py::test_macs_match_published_ops


@pytest.mark.slow
@pytest.mark.parametrize("name", [s.name for s in list_models("torchvision:*") if s.task.value != "quantized"])
def test_backward_costs_between_one_and_two_forwards(name):  # quantized: forward-only, refused (test_quantized)
    """Everything trainable, each layer's weight gradient costs its forward MACs and its input gradient the
    same again, except the first layer's: backward/forward lies in [1, 2] for every model. A counter that
    forgets the groups of a convolution's weight gradient (torch's) puts mobilenets at 30×."""
    r = cnnprobe.flops(name, batch=2, backward=True, depth=0)
    assert r.train_forward_macs >= r.macs  # train mode computes at least what eval mode does
    assert 1.0 <= r.backward_ratio <= 2.0, f"{name}: backward/forward {r.backward_ratio:.3f}"
