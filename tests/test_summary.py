"""`summary`: records, totals that add up, the JSON contract, meta construction and failures."""

from __future__ import annotations

import pytest
from torch import nn

import cnnprobe
from cnnprobe.analysis.probe import probe
from cnnprobe.core.errors import ForwardError, InputTooSmallError, UsageError
from cnnprobe.models.build import build_model
from cnnprobe.models.registry import list_models

from .conftest import DATA, one_error_line, table_rows


def test_lenet_records():
    s = cnnprobe.summary("lenet")
    assert (s.total_params, s.trainable_params, s.non_trainable_params) == (61_706, 61_706, 0)
    assert s.input_size == [1, 1, 28, 28]
    assert s.param_bytes == 61_706 * 4
    assert s.device == "meta"


@pytest.mark.parametrize("name", ["lenet", "cnnprobe:resnet18", "resnet18", "vit_b_16", "mobilenet_v3_small"])
def test_columns_add_up_to_their_totals(name):
    """Top-level rows sum to the totals; every container holds its children's params plus its own."""
    s = cnnprobe.summary(name, depth=99)
    modules = dict(cnnprobe.build_model(name).module.named_modules())

    def own(module_name: str) -> int:
        return sum(p.numel() for p in modules[module_name].parameters(recurse=False))

    top = [r for r in s.layers if r.depth == 1]
    assert sum(r.params for r in top) + own("") == s.total_params
    assert sum(r.trainable_params for r in top) + own("") == s.trainable_params
    assert sum(r.macs for r in top) <= s.macs
    if name != "vit_b_16":  # the ViT's attention runs partly in its encoder blocks' own forward
        assert sum(r.macs for r in top) == s.macs
    for parent in (r for r in s.layers if not r.is_leaf):
        children = modules[parent.name].children()
        assert sum(p.numel() for c in children for p in c.parameters()) + own(parent.name) == parent.params


def test_vit_class_token_counts_at_the_root():
    s = cnnprobe.summary("vit_b_16", depth=99)
    model = cnnprobe.build_model("vit_b_16").module
    assert s.total_params == 86_567_656 == sum(p.numel() for p in model.parameters())


def test_depth_limits_rows():
    s = cnnprobe.summary("resnet18", depth=1)
    assert {r.depth for r in s.rows()} == {1}
    assert [r.name for r in s.rows()] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
                                          "avgpool", "fc"]


def test_batch_and_input_size():
    s = cnnprobe.summary("resnet18", batch=8, input_size="3,128,128")
    assert s.input_size == [8, 3, 128, 128]
    assert s.layers[-1].output_shape == [8, 1000]
    assert s.input_source == "user"


def test_num_classes_sets_the_head():
    s = cnnprobe.summary("resnet18", num_classes=10)
    assert s.layers[-1].output_shape == [1, 10]
    assert s.total_params == 11_689_512 - 513_000 + 5_130


def test_shape_flow_of_resnet18():
    flow = cnnprobe.summary("resnet18").shape_flow
    assert flow == [[3, 224, 224], [64, 112, 112], [64, 56, 56], [128, 28, 28], [256, 14, 14], [512, 7, 7],
                    [512, 1, 1], [1000]]


def test_accepts_a_module():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    s = cnnprobe.summary(model, input_size="3,16,16")
    assert s.model == "Sequential"
    assert s.total_params == 3 * 4 * 9 + 4 + 4 * 2 + 2
    assert s.device == "cpu"


def test_meta_costs_no_memory_for_huge_models():
    """vit_h_14 holds 2.5 GB of weights; on meta its parameters have no storage at all."""
    built = cnnprobe.build_model("vit_h_14")
    assert all(p.is_meta for p in built.module.parameters())


def test_constructors_that_compute_fall_back_to_registering_on_meta():
    """regnet derives widths with tensor arithmetic, which meta cannot do at construction."""
    built = cnnprobe.build_model("regnet_y_400mf")
    assert built.device == "meta"
    assert built.note is not None


def test_models_that_read_values_run_for_real_on_cpu():
    s = cnnprobe.summary(f"{DATA}/models.py:ReadsValues")
    assert s.device == "cpu"
    assert "meta" in s.notes[0]
    assert s.layers[-1].output_shape == [1, 2]


def test_failing_layer_is_named():
    with pytest.raises(ForwardError) as info:
        cnnprobe.summary(f"{DATA}/models.py:TypoVGG")
    e = info.value
    assert e.layer == "classifier.3"
    assert e.layer_type == "Linear"
    assert e.input_shapes == [[1, 4096]]
    assert "4097" in e.expected
    assert "classifier.3" in str(e) and "1×4096" in str(e)


def test_input_too_small():
    with pytest.raises(InputTooSmallError) as info:
        cnnprobe.summary("cnnprobe:alexnet", input_size="3,32,32")
    assert info.value.layer == "features.12"
    assert "too small" in str(info.value)


def test_fixed_size_models_refuse_other_sizes():
    with pytest.raises(ForwardError, match="Expected 224 but got 256"):
        cnnprobe.summary("vit_b_16", input_size="3,256,256")


@pytest.mark.parametrize("kwargs", [{"batch": 0}, {"batch": -3}, {"depth": -1}, {"input_size": "3,abc"},
                                    {"num_classes": 0}, {"num_classes": -5}])
def test_bad_arguments(kwargs):
    with pytest.raises(UsageError):
        cnnprobe.summary("lenet", **kwargs)


# ---------------------------------------------------------------- CLI


def test_cli_summary_snapshot(cli, snapshot):
    run = cli("summary", "lenet")
    assert run.exit_code == 0, run.stderr
    snapshot("summary_lenet", run.stdout)
    rows = table_rows(run.stdout, until="total params")
    top = [row for row, line in zip(rows, run.stdout.splitlines()[3:]) if not line.startswith(" ")]
    total = next(line.split()[-1] for line in run.stdout.splitlines() if line.startswith("total params"))
    assert f"{sum(int(r[3].replace(',', '')) for r in top):,}" == total
    assert "1×28×28 → 6×28×28 → 6×14×14 → 16×10×10 → 16×5×5 → 400 → 120 → 84 → 10" in run.stdout
    assert "61,706" in run.stdout


def test_cli_summary_json_contract(cli):
    run = cli("summary", "resnet18", "--json", "--depth", "2", "--batch", "4")
    assert run.exit_code == 0
    data = run.json()
    assert data["total_params"] == data["trainable_params"] == 11_689_512
    assert data["input_size"] == [4, 3, 224, 224]
    assert data["layers"], "layers must not be empty"
    for layer in data["layers"]:
        assert {"name", "type", "output_shape", "params", "trainable", "depth", "macs"} <= set(layer)
        assert isinstance(layer["output_shape"], list) and all(isinstance(d, int) for d in layer["output_shape"])
        assert layer["output_shape"][0] == 4
        assert layer["depth"] <= 2
    assert data["layers"][0] == {**data["layers"][0], "name": "conv1", "type": "Conv2d",
                                 "output_shape": [4, 64, 112, 112], "params": 9408}
    assert data["macs"] * 2 == data["flops"]
    assert "2 * macs" in data["convention"]


@pytest.mark.parametrize(
    "args, message",
    [(["summary", "resnt18"], "did you mean resnet18"),
     (["summary", "lenet", "--input-size", "3,abc"], "malformed --input-size"),
     (["summary", "lenet", "--batch", "0"], "--batch must be a positive integer"),
     (["summary", "cnnprobe:alexnet", "--input-size", "3,32,32"], "too small"),
     (["summary", f"{DATA}/missing.py:Net"], "does not exist"),
     (["summary", f"{DATA}/broken.py:Net"], "cannot import"),
     (["summary", f"{DATA}/models.py:TypoVGG"], "layer 'classifier.3' (Linear): got input 1×4096"),
     (["summary", "lenet", "--batch", "many"], "Invalid value for '--batch'")],
)
def test_cli_bad_input_is_one_line(cli, args, message):
    assert message in one_error_line(cli(*args))


@pytest.mark.slow
@pytest.mark.parametrize("name", [s.qualified for s in list_models()])
def test_shape_rules_agree_with_metas_own_kernels(name):
    """The tracer answers some operators from shapes alone; every call's output must be what torch's own
    meta kernels give, for every registered model."""
    built = build_model(name)
    fast = probe(built, 2)
    slow = probe(built, 2, fast=False)
    assert [(c.name, c.output_shape) for c in fast.tracer.calls] == [(c.name, c.output_shape) for c in slow.tracer.calls]
    assert fast.tracer.flops_by_op == slow.tracer.flops_by_op


def test_the_api_takes_the_records_and_the_keywords_alike():
    """A ModelRequest and a FreezePlan say what the keywords say: the same reports from either."""
    import dataclasses

    from cnnprobe import BenchConfig, FreezePlan, ModelRequest

    request = ModelRequest("cnnprobe:resnet18", input_size="3,32,32", batch=2, num_classes=7)
    keywords = dict(input_size="3,32,32", num_classes=7)
    assert cnnprobe.summary(request).to_dict() == cnnprobe.summary("cnnprobe:resnet18", batch=2, **keywords).to_dict()
    plan = FreezePlan.from_options(freeze_except="layer4,fc")
    by_record = cnnprobe.trainable(request, plan=plan)
    assert by_record.to_dict() == cnnprobe.trainable("cnnprobe:resnet18", freeze_except="layer4,fc",
                                                     **keywords).to_dict()
    assert 0 < by_record.after.trainable_params < by_record.before.trainable_params
    config = BenchConfig(request=request, plan=plan)
    assert config.freezing and config.freeze_except == "layer4,fc" and config.num_classes == 7
    assert config == BenchConfig(request=request, freeze_except="layer4,fc")
    assert BenchConfig(freeze_except="layer4,fc", batch=2, **keywords).request.given() == request.given()
    assert config.replace(freeze_except=None).plan.empty and config.replace(head="linear(3)").request.head == "linear(3)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.freeze_all = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        cnnprobe.summary("lenet", freeze_all=True)  # summary freezes nothing
    with pytest.raises(TypeError):
        cnnprobe.flops("lenet", plan=plan, freeze_all=True, backward=True)  # a plan or its keywords
