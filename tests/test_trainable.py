"""Freezing, new heads, parameter groups and BatchNorm: the transfer-learning recipes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnprobe
from cnnprobe.core.errors import HeadError, PatternError
from cnnprobe.models.freezing import matches, param_groups, split_patterns
from cnnprobe.models.head import parse_head

from .conftest import one_error_line, table_rows

TUTORIAL_HEAD = "dropout(0.3),linear(256),relu,dropout(0.3),linear(10)"


@pytest.mark.parametrize(
    "pattern, name, expected",
    [("layer4", "layer4.0.conv1.weight", True), ("layer4", "layer40.weight", False),
     ("layer4", "xlayer4.weight", False), ("fc", "fc.bias", True), ("layer[34]", "layer3.1.bn2.weight", True),
     ("features.1*", "features.12.weight", True), ("features.1*", "features.2.weight", False),
     ("**.bn1", "layer1.0.bn1.weight", True), ("**.bn1", "bn1.weight", True), ("**.bn1", "layer1.0.bn2.weight", False),
     ("layer4.0", "layer4.1.conv1.weight", False), ("fc.weight", "fc.weight", True)],
)
def test_patterns_match_whole_components(pattern, name, expected):
    assert matches(pattern, name) is expected


def test_freeze_except_layer4_fc_on_resnet18():
    r = cnnprobe.trainable("resnet18", freeze_except="layer4,fc")
    assert r.total_params == 11_689_512
    assert r.before.trainable_params == 11_689_512
    assert r.after.trainable_params == 8_906_728 == 8_393_728 + 513_000


def test_blocks_sum_to_the_totals():
    r = cnnprobe.trainable("resnet18", freeze_except="layer4,fc")
    assert sum(b.params_after for b in r.blocks) == r.after.total_params
    assert sum(b.trainable_before for b in r.blocks) == r.before.trainable_params
    assert sum(b.trainable_after for b in r.blocks) == r.after.trainable_params
    layer4 = next(b for b in r.blocks if b.name == "layer4")
    assert (layer4.params_before, layer4.trainable_after) == (8_393_728, 8_393_728)


def test_memory_saved_follows_the_optimizer():
    adam = cnnprobe.trainable("resnet18", freeze_except="layer4,fc", optimizer="adam")
    sgd = cnnprobe.trainable("resnet18", freeze_except="layer4,fc", optimizer="sgd")
    frozen = 11_689_512 - 8_906_728
    assert adam.saved_bytes == frozen * 4 * 3  # gradient + exp_avg + exp_avg_sq
    assert sgd.saved_bytes == frozen * 4
    assert adam.after.grad_bytes == 8_906_728 * 4


def test_feature_extraction_with_the_tutorial_head():
    r = cnnprobe.trainable("resnet18", freeze_all=True, head=TUTORIAL_HEAD)
    assert r.after.trainable_params == 133_898 == (512 * 256 + 256) + (256 * 10 + 10)
    assert r.head.name == "fc" and r.head.params_old == 513_000 and r.head.params_new == 133_898
    assert r.after.total_params == 11_689_512 - 513_000 + 133_898


def test_num_classes_replaces_the_final_layer_trainably():
    r = cnnprobe.trainable("resnet18", freeze_all=True, num_classes=10)
    assert r.after.trainable_params == 5_130
    assert r.head.new == "Linear(512→10)"


@pytest.mark.parametrize("name, head", [("vgg16", "classifier.6"), ("vit_b_16", "heads.head"), ("squeezenet1_0", "classifier.1"),
                                        ("efficientnet_b0", "classifier.1"), ("cnnprobe:alexnet", "classifier.6")])
def test_head_is_found_across_families(name, head):
    r = cnnprobe.trainable(name, freeze_all=True, num_classes=10)
    assert r.head.name == head
    assert r.after.trainable_params == r.head.params_new


def test_freeze_only_some_modules_with_globs():
    r = cnnprobe.trainable("resnet18", freeze="conv1,bn1,layer[12]")
    assert r.after.trainable_params == 11_689_512 - 9_408 - 128 - 147_968 - 525_568


def test_freeze_bn_counts_layers_and_buffers():
    r = cnnprobe.trainable("resnet18", freeze_except="layer4,fc", freeze_bn=True)
    assert (r.batchnorm.layers, r.batchnorm.buffers) == (20, 60)
    assert r.batchnorm.frozen
    assert not any("running statistics" in w for w in r.warnings)


def test_without_freeze_bn_a_warning_says_statistics_still_update():
    r = cnnprobe.trainable("resnet18", freeze_except="layer4,fc")
    assert r.batchnorm.layers_with_frozen_params == 15
    assert any("still update their running statistics" in w for w in r.warnings)


def test_freeze_batchnorm_really_stops_running_stats():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    assert cnnprobe.freeze_batchnorm(model) == (1, 3)
    before = model[1].running_mean.clone()
    model(torch.randn(2, 3, 8, 8) + 5)
    torch.testing.assert_close(model[1].running_mean, before)


def test_lr_groups_and_orphans():
    r = cnnprobe.trainable("resnet18", freeze_except="layer3,layer4,fc", lr=["layer4=1e-4", "fc=1e-3"])
    assert [(g.modules, g.lr, g.params) for g in r.groups] == [("layer4", 1e-4, 8_393_728), ("fc", 1e-3, 513_000)]
    assert r.ungrouped and all(n.startswith("layer3.") for n in r.ungrouped)
    assert any("belong to no --lr group" in w and "2,099,712" in w for w in r.warnings)


def test_param_groups_build_a_real_optimizer():
    model = cnnprobe.build_model("cnnprobe:resnet18", device="cpu").module
    cnnprobe.freeze(model, freeze_except="layer4,fc")
    groups, summary, orphans = param_groups(model, {"layer4": 1e-4, "fc": 1e-3})
    optimizer = torch.optim.SGD(groups, lr=0.1)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-4, 1e-3]
    assert orphans == []


def test_a_parameter_in_two_groups_is_an_error():
    with pytest.raises(PatternError, match="two --lr groups"):
        cnnprobe.trainable("resnet18", lr=["layer4=1e-4", "layer4.0=1e-3"])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [({"freeze_except": "layer5"}, PatternError, "matches no parameter"),
     ({"freeze": "layer40"}, PatternError, "matches no parameter"),
     ({"freeze_except": "layer4..fc"}, PatternError, "malformed pattern"),
     ({"freeze_all": True, "freeze_except": "fc"}, PatternError, "contradict"),
     ({"lr": ["layer4"]}, PatternError, "malformed --lr"),
     ({"lr": ["layer4=fast"]}, PatternError, "malformed --lr"),
     ({"lr": ["nothing=1e-3"]}, PatternError, "matches no parameter"),
     ({"head": "linear(10),relu"}, HeadError, "must end with a linear"),
     ({"head": "conv(3)"}, HeadError, "unknown head layer"),
     ({"head": "linear(256,10)"}, HeadError, "follows a layer of width 512"),
     ({"head": "dropout(2),linear(10)"}, HeadError, "probability"),
     ({"head": "linear(10)", "num_classes": 5}, HeadError, "--num-classes says 5")],
)
def test_bad_plans(kwargs, error, message):
    with pytest.raises(error, match=message):
        cnnprobe.trainable("resnet18", **kwargs)


def test_parse_head_tutorial():
    spec = parse_head("Dropout(0.3), Linear(256), ReLU, Dropout(0.3), Linear(10)")
    assert [layer.kind for layer in spec.layers] == ["dropout", "linear", "relu", "dropout", "linear"]
    assert spec.num_classes == 10


def test_split_patterns():
    assert split_patterns("layer4, fc") == ["layer4", "fc"]
    assert split_patterns(["layer3", "layer4,fc"]) == ["layer3", "layer4", "fc"]


# ---------------------------------------------------------------- CLI


def test_cli_trainable_snapshot(cli, snapshot):
    run = cli("trainable", "resnet18", "--freeze-except", "layer4,fc")
    assert run.exit_code == 0
    snapshot("trainable_resnet18_freeze_except", run.stdout)
    rows = table_rows(run.stdout, until="before")
    totals = {line.rsplit(None, 2)[0]: line.split()[-2:] for line in run.stdout.splitlines()
              if line.startswith(("total params", "trainable "))}
    for column, key, side in ((1, "total params", 1), (2, "trainable", 0), (3, "trainable", 1)):
        assert f"{sum(int(r[column].replace(',', '')) for r in rows):,}" == totals[key][side]
    assert "8,906,728" in run.stdout
    assert "running statistics" in run.stderr


def test_cli_trainable_json_contract(cli):
    run = cli("trainable", "resnet18", "--freeze-all", "--head", TUTORIAL_HEAD, "--json", "--freeze-bn")
    assert run.exit_code == 0
    data = run.json()
    assert data["total_params"] == 11_689_512 - 513_000 + 133_898
    assert data["before"]["trainable_params"] == 11_689_512
    assert data["after"]["trainable_params"] == 133_898
    assert data["batchnorm"] == {"layers": 20, "buffers": 60, "frozen": True, "layers_with_frozen_params": 20}


def test_cli_lr_groups(cli):
    run = cli("trainable", "resnet18", "--freeze-except", "layer4,fc", "--lr", "layer4=1e-4", "--lr", "fc=1e-3")
    assert run.exit_code == 0
    assert "optimizer parameter groups" in run.stdout and "0.0001" in run.stdout


@pytest.mark.parametrize(
    "args, message",
    [(["trainable", "resnet18", "--freeze-except", "layer5"], "'layer5' matches no parameter"),
     (["trainable", "resnet18", "--freeze", "nothing"], "matches no parameter"),
     (["trainable", "resnt18"], "did you mean resnet18"),
     (["trainable", "resnet18", "--lr", "layer4"], "malformed --lr"),
     (["trainable", "resnet18", "--head", "linear(10),relu"], "must end with a linear"),
     (["trainable", "resnet18", "--optimizer", "lion"], "Invalid value for '--optimizer'")],
)
def test_cli_bad_input_is_one_line(cli, args, message):
    assert message in one_error_line(cli(*args))


# resnet18's layer4, counted by hand: block 1 (256->512, stride 2, with its 1x1 downsample) and block 2 (512->512);
# each conv 3x3 without bias, each BatchNorm a weight and a bias per channel.
LAYER4 = (256 * 512 * 9 + 512 * 512 * 9 + 256 * 512 + 3 * 2 * 512) + 2 * (512 * 512 * 9 + 2 * 512)


@pytest.mark.slow
@pytest.mark.parametrize("options, expected", [
    (["--freeze-all", "--head", "dropout(0.3),linear(256),relu,linear(10)"], 512 * 256 + 256 + 256 * 10 + 10),
    (["--freeze-except", "layer4", "--head", "linear(10)"], LAYER4 + 512 * 10 + 10),
    (["--freeze-all", "--num-classes", "10"], 512 * 10 + 10),
    (["--freeze", "layer1,layer2,layer3", "--head", "linear(10)"], None),
])
def test_every_command_freezes_the_same_way(cli, options, expected):
    """trainable, memory, bench and flops --backward apply one plan the same way, a new head trainable; the
    count is held against a hand count where one is written."""
    counts = {}
    for command, extra, key in [
        ("trainable", [], lambda r: r["after"]["trainable_params"]),
        ("memory", ["--mode", "train_step"], lambda r: r["trainable_params"]),
        ("flops", ["--backward"], lambda r: r["trainable_params"]),
        ("bench", ["--mode", "train_step", "--min-time", "0.02", "--max-time", "0.05", "--warmup", "0",
                   "--threads", "1"], lambda r: r["trainable_params"]),
    ]:
        run = cli(command, "resnet18", *options, *extra, "--json")
        assert run.exit_code == 0, f"{command}: {run.stderr}"
        counts[command] = key(run.json())
    assert len(set(counts.values())) == 1, counts
    if expected is not None:
        assert counts["trainable"] == expected


def test_a_new_head_is_frozen_only_by_a_freeze_pattern_that_names_it():
    """--freeze-all spares the new head; --freeze fc names it, so it is frozen, in trainable and flops alike."""
    total = 11_689_512 - 513_000 + 512 * 10 + 10  # resnet18 with a 10-class fc
    spared = cnnprobe.trainable("resnet18", freeze_all=True, head="linear(10)")
    assert spared.after.trainable_params == 5130 and spared.after.total_params == total
    named = cnnprobe.trainable("resnet18", freeze="fc", head="linear(10)")
    assert named.after.trainable_params == total - 5130
    from cnnprobe.analysis.flops import flops

    assert flops("resnet18", backward=True, freeze="fc", head="linear(10)").trainable_params == total - 5130
    assert flops("resnet18", backward=True, freeze_all=True, num_classes=10).trainable_params == 5130


def test_freeze_options_are_matched_against_the_new_head():
    """The head is in place before the plan: --freeze-except names the new head's own layers."""
    r = cnnprobe.trainable("resnet18", freeze_except="fc.2", head="linear(256),relu,linear(10)")
    assert r.after.trainable_params == 256 * 10 + 10 + 512 * 256 + 256  # all of the new head
    with pytest.raises(PatternError, match="fc.weight"):
        cnnprobe.trainable("resnet18", freeze_except="fc.weight", head="linear(256),relu,linear(10)")


def test_a_module_passed_in_gets_its_head_once_in_bench_and_memory():
    """A module handed to the API is copied, given the head once, and frozen the same way as a name."""
    from cnnprobe.benchmark.timing import bench
    from cnnprobe.memory.predict import memory
    from cnnprobe.training.config import BenchConfig

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    config = BenchConfig(mode="train_step", freeze_all=True, head="linear(8),relu,linear(3)", min_time=0.02,
                         max_time=0.05, warmup=0, threads=1, input_size="3,8,8")
    run = bench(model, 2, config)
    head = 4 * 8 + 8 + 8 * 3 + 3
    assert run.trainable_params == head and run.total_params == 3 * 4 * 9 + 4 + head
    assert memory(model, head=config.head, freeze_all=True, input_size="3,8,8").trainable_params == head
    assert isinstance(model[3], nn.Linear) and all(p.requires_grad for p in model.parameters())  # untouched
