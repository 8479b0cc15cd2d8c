"""The 12 quantized torchvision models through every command: parameters as torchvision counts them (the float
architecture's) with the packed int8 values beside, MACs of the quantized operators, bench against the float
twin, and one clear line for what they cannot do."""

from __future__ import annotations

import pytest
import torch

import cnnprobe
from cnnprobe.analysis.flops import within_published
from cnnprobe.models.build import param_counts
from cnnprobe.models.registry import list_models, resolve
from cnnprobe.trace.tracer import Tracer

from .conftest import one_error_line

QUANTIZED = [s.name for s in list_models(task="quantized")]
HEAVY = {"quantized_resnext101_32x8d", "quantized_resnext101_64x4d", "quantized_inception_v3", "quantized_resnet50",
         "quantized_googlenet"}  # seconds each to quantize for real on the CPU
CASES = [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in QUANTIZED]
FAST = ["--min-time", "0.02", "--max-time", "0.2", "--warmup", "1", "--threads", "1"]

# quantized_resnet18's packed values by hand: each convolution's int8 weight plus a float bias per output channel
# (its BatchNorm folded in), and the linear's weight and bias.
CONV1 = 64 * 3 * 7 * 7 + 64
LAYER1 = 4 * (64 * 64 * 9 + 64)
LAYER2 = (128 * 64 * 9 + 128) + 3 * (128 * 128 * 9 + 128) + (128 * 64 + 128)  # the last: the 1x1 downsample
LAYER3 = (256 * 128 * 9 + 256) + 3 * (256 * 256 * 9 + 256) + (256 * 128 + 256)
LAYER4 = (512 * 256 * 9 + 512) + 3 * (512 * 512 * 9 + 512) + (512 * 256 + 512)
FC = 512 * 1000 + 1000
RESNET18_BN_CHANNELS = 64 + 4 * 64 + 5 * 128 + 5 * 256 + 5 * 512  # two parameters each in float, one bias in int8


def test_every_quantized_model_is_registered():
    import torchvision

    assert sorted(QUANTIZED) == sorted(torchvision.models.list_models(module=torchvision.models.quantization))
    assert len(QUANTIZED) >= 12 and all(not resolve(n).on_meta for n in QUANTIZED)


def test_list_counts_num_params_without_building_the_int8_models():
    specs = list_models(task="quantized")
    counts = param_counts(specs)
    assert {s.name: counts[s.qualified] for s in specs} == {s.name: s.published_params for s in specs}


@pytest.mark.parametrize("name", CASES)
def test_summary_totals_num_params_and_counts_published_macs(name):
    """One real build each: the total is torchvision's num_params (the float twin's); the rows show the packed
    values (fewer: BatchNorm folds into the convolutions' biases) and say so; the MACs of the int8 operators are
    torchvision's `_ops`, and the float model's to the multiply-accumulate."""
    spec = resolve(name)
    s = cnnprobe.summary(name, depth=1)
    assert s.total_params == spec.published_params and s.trainable_params == 0
    dropped = 3_326_696 if name == "quantized_inception_v3" else 0  # its auxiliary head, which int8 drops
    assert s.packed_params is not None and 0.99 * (s.total_params - dropped) < s.packed_params < s.total_params
    top = [r for r in s.layers if r.depth == 1 and r.call <= 1]
    assert sum(r.params for r in top) == s.packed_params
    assert any(f"add up to {s.packed_params:,}, not the total" in n for n in s.notes)
    assert any("auxiliary head" in n for n in s.notes) is bool(dropped)
    assert not any(r.type == "LinearPackedParams" for r in s.layers)  # counted in its linear's row
    data = s.to_dict()
    assert data["total_params"] == spec.published_params and data["packed_params"] == s.packed_params
    assert within_published(s.macs / 1e9, spec.published_gmacs), f"{name}: {s.macs / 1e9:.4f} vs {spec.published_gmacs}"
    assert s.macs == cnnprobe.flops(name.removeprefix("quantized_"), depth=0).macs  # the same arithmetic, in int8


def test_trainable_totals_num_params_with_nothing_trainable():
    t = cnnprobe.trainable("quantized_shufflenet_v2_x0_5")
    assert t.total_params == 1_366_792 and t.after.trainable_params == 0
    assert t.packed_params is not None and sum(b.params_before for b in t.blocks) == t.packed_params < t.total_params
    assert any("block rows show those" in n for n in t.notes)


def test_resnet18_packed_values_by_hand():
    assert CONV1 + LAYER1 + LAYER2 + LAYER3 + LAYER4 + FC == 11_689_512 - RESNET18_BN_CHANNELS
    s = cnnprobe.summary("quantized_resnet18", depth=1)
    rows = {r.name: r.params for r in s.layers}
    assert (rows["conv1"], rows["layer1"], rows["layer2"], rows["layer3"], rows["layer4"], rows["fc"]) == \
        (CONV1, LAYER1, LAYER2, LAYER3, LAYER4, FC)
    assert s.packed_params == CONV1 + LAYER1 + LAYER2 + LAYER3 + LAYER4 + FC
    biases = 64 + 4 * 64 + 5 * 128 + 5 * 256 + 5 * 512 + 1000  # one per output channel, float32
    assert s.param_bytes == (s.packed_params - biases) + 4 * biases  # int8 weights: one byte each
    assert s.total_params == 11_689_512


def test_compare_counts_both_as_torchvision_does(cli):
    run = cli("compare", "quantized_resnet18", "resnet18", "--json")
    assert run.exit_code == 0, run.stderr
    data = run.json()
    assert data["a"]["params"] == data["b"]["params"] == 11_689_512
    assert data["a"]["macs"] == data["b"]["macs"]
    assert any("packed int8 values" in n for n in data["notes"])


def _quantized_layer(layer: torch.nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    q = torch.quantize_per_tensor(x, 0.1, 0, torch.quint8)
    tracer = Tracer(layer)
    with tracer, torch.no_grad():
        out = layer(q)
    return tracer.total_flops // 2, out


def test_quantized_convolution_and_linear_macs_by_hand():
    """A strided, grouped int8 convolution and an int8 linear, against the hand formula."""
    from torch.ao.nn import quantized as nnq

    conv = nnq.Conv2d(4, 8, 3, stride=2, padding=1, groups=2)
    macs, out = _quantized_layer(conv, torch.randn(2, 4, 9, 9))
    assert list(out.shape) == [2, 8, 5, 5]
    assert macs == 2 * 8 * (4 // 2) * 3 * 3 * 5 * 5
    relu = torch.ao.nn.intrinsic.quantized.ConvReLU2d(4, 6, 1)
    assert _quantized_layer(relu, torch.randn(1, 4, 7, 7))[0] == 1 * 6 * 4 * 7 * 7
    linear = nnq.Linear(16, 5)
    assert _quantized_layer(linear, torch.randn(3, 16))[0] == 3 * 16 * 5


def test_resnet18_macs_by_layer_by_hand():
    r = cnnprobe.flops("quantized_resnet18", depth=1)
    rows = {m.name: m.macs for m in r.by_module}
    assert rows["conv1"] == 64 * 3 * 7 * 7 * 112 * 112 and rows["fc"] == 512 * 1000
    assert {o.op for o in r.by_operator} == {"conv2d", "conv2d_relu", "linear"}


@pytest.mark.slow
def test_bench_times_int8_against_its_float_twin(cli):
    run = cli("bench", "quantized_resnet18", *FAST, "--json")
    assert run.exit_code == 0, run.stderr
    data = run.json()
    assert [r["mode"] for r in data["results"]] == ["forward"]  # --mode all: the forward pass only
    assert data["total_params"] == 11_689_512 and data["device"] == "cpu"
    q = data["int8"]
    assert q["float_model"] == "resnet18"
    assert q["int8_median_ms"] == data["results"][0]["median_ms"]
    assert q["speedup"] == pytest.approx(q["float_median_ms"] / q["int8_median_ms"])
    assert q["float_median_ms"] > 0
    assert any("float twin" in n for n in data["notes"])
    from cnnprobe.benchmark.result import BenchResult, Sweep
    from cnnprobe.report.bench import int8_lines

    line = str(int8_lines(Sweep(runs=[BenchResult.from_dict(data)]))[0])
    assert line.startswith("int8 vs float32: quantized_resnet18 b1 forward ") and "resnet18 " in line
    assert ("as fast" in line) is (q["speedup"] >= 1)


@pytest.mark.parametrize("args, message", [
    (["bench", "quantized_resnet18", "--mode", "train_step"], "forward-only"),
    (["bench", "quantized_resnet18", "--mode", "forward_backward"], "use --mode forward"),
    (["bench", "quantized_resnet18", "--device", "cuda"], "runs int8 on the CPU only"),
    (["bench", "quantized_resnet18,resnet18"], "bench it apart from float models"),
    (["bench", "quantized_resnet18", "--mode", "forward", "--freeze-all"], "freezing changes nothing"),
    (["bench", "quantized_resnet18", "--dtype", "bfloat16"], "computes in int8"),
    (["memory", "quantized_resnet18"], "cnnprobe bench quantized_resnet18"),
    (["flops", "quantized_shufflenet_v2_x0_5", "--backward"], "no backward pass to count"),
    (["flops", "quantized_shufflenet_v2_x0_5", "--counter", "fvcore"], "use --counter torch"),
    (["trainable", "quantized_shufflenet_v2_x0_5", "--num-classes", "10"], "fine-tune its float model"),
])
def test_what_a_quantized_model_cannot_do_is_one_line(cli, args, message):
    assert message in one_error_line(cli(*args))
