"""A detection, segmentation or video model's new heads (--num-classes) and a detection backbone's frozen stages
(--trainable-backbone-layers), each against torchvision's own builders and layer lists as the oracle.

Every model is built on meta: shapes and requires_grad flags need no storage.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn
from torchvision import models
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.ops.misc import FrozenBatchNorm2d

import cnnprobe
from cnnprobe.models.registry import list_models
from cnnprobe.models.request import ModelRequest
from cnnprobe.models.shipped import unread_weights

from .conftest import one_error_line

K = 7  # a class count no model ships with
DETECTION = [s.name for s in list_models(task="detection")]
SEGMENTATION = [s.name for s in list_models(task="segmentation")]
VIDEO = [s.name for s in list_models(task="video")]

# the heads torchvision's fine-tuning recipes replace, by the model name's family
HEADS = {
    "fasterrcnn": ["roi_heads.box_predictor"], "keypointrcnn": ["roi_heads.box_predictor"],
    "maskrcnn": ["roi_heads.box_predictor", "roi_heads.mask_predictor"],
    "retinanet": ["head.classification_head"], "fcos": ["head.classification_head"],
    "ssd": ["head.classification_head"], "deeplabv3": ["classifier.4", "aux_classifier.4"],
    "fcn": ["classifier.4", "aux_classifier.4"], "lraspp": ["classifier.low_classifier", "classifier.high_classifier"],
    "r3d": ["fc"], "mc3": ["fc"], "r2plus1d": ["fc"], "s3d": ["classifier.1"], "mvit": ["head.1"], "swin3d": ["head"],
}


def heads_of(name: str) -> list[str]:
    return next(paths for family, paths in HEADS.items() if name.startswith(family))


def oracle(name: str, **kwargs) -> nn.Module:
    """torchvision's builder at `num_classes` (or other arguments), without weights, on meta."""
    options = {"weights": None, **kwargs}
    if name in DETECTION or name in SEGMENTATION:
        options["weights_backbone"] = None
    if name.startswith(("deeplabv3", "fcn")):
        options["aux_loss"] = True  # as their DEFAULT weights build them
    with torch.device("meta"):
        return models.get_model(name, **options)


def shipped(name: str, **kwargs) -> nn.Module:
    """torchvision's builder as shipped (DEFAULT weights' architecture), straight from torchvision, on meta."""
    with unread_weights(), torch.device("meta"):
        return models.get_model(name, weights=models.get_model_weights(name).DEFAULT, **kwargs)


def under(names, paths: list[str]) -> list[str]:
    return [n for n in names if any(n.startswith(p + ".") for p in paths)]


def shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in module.named_parameters()}


@pytest.mark.parametrize("name", DETECTION + SEGMENTATION + VIDEO)
def test_num_classes_gives_the_heads_torchvisions_builder_makes(name):
    ours = shapes(ModelRequest(name, num_classes=K).build().module)
    theirs = shapes(oracle(name, num_classes=K))
    heads = under(theirs, heads_of(name))
    assert heads and {n: ours[n] for n in heads} == {n: theirs[n] for n in heads}
    # everything else as shipped: where both have a parameter (a shipped detection backbone has
    # FrozenBatchNorm2d, whose statistics are buffers), it has the builder's shape
    assert set(ours) <= set(theirs)
    assert {n: s for n, s in ours.items() if theirs[n] != s} == {}
    default = shapes(oracle(name))
    assert any(default[n] != theirs[n] for n in heads)  # K changed something: the check above can fail


@pytest.mark.parametrize("name", DETECTION + SEGMENTATION + VIDEO)
def test_num_classes_trains_what_the_recipe_trains(name):
    """The recipe: the model as shipped, its heads replaced by the builder's K-class ones, which train."""
    before = shipped(name)
    grads = {n: p.requires_grad for n, p in before.named_parameters()}
    heads = heads_of(name)
    new = dict(oracle(name, num_classes=K).named_parameters())
    expected = (sum(p.numel() for n, p in before.named_parameters() if grads[n] and n not in under(grads, heads))
                + sum(new[n].numel() for n in under(new, heads)))
    report = cnnprobe.trainable(name, num_classes=K)
    assert report.after.trainable_params == expected
    assert report.before.trainable_params == sum(p.numel() for n, p in before.named_parameters() if grads[n])
    assert report.head.name == ", ".join(heads)
    # new heads stay trainable under --freeze-all, as the fine-tuning recipes train them
    frozen = cnnprobe.trainable(name, num_classes=K, freeze_all=True)
    assert frozen.after.trainable_params == sum(new[n].numel() for n in under(new, heads))


def test_faster_rcnn_as_the_tutorial_fine_tunes_it():
    """torchvision's object-detection fine-tuning tutorial, step by step."""
    model = shipped("fasterrcnn_resnet50_fpn")
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    with torch.device("meta"):
        model.roi_heads.box_predictor = FastRCNNPredictor(in_features, 2)
    expected = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report = cnnprobe.trainable("fasterrcnn_resnet50_fpn", num_classes=2)
    assert (report.before.total_params, report.before.trainable_params) == (41_755_286, 41_532_886)
    assert report.after.trainable_params == expected == 41_532_886 - 1024 * 91 * 5 - 91 * 5 + 1024 * 2 * 5 + 2 * 5
    assert report.head.old == "FastRCNNPredictor(1024→91 classes)"
    assert report.head.new == "FastRCNNPredictor(1024→2 classes)"


def test_mask_rcnn_replaces_the_mask_predictor_too():
    model = shipped("maskrcnn_resnet50_fpn")
    with torch.device("meta"):
        model.roi_heads.box_predictor = FastRCNNPredictor(1024, 3)
        model.roi_heads.mask_predictor = MaskRCNNPredictor(256, 256, 3)
    built = ModelRequest("maskrcnn_resnet50_fpn", num_classes=3).build().module
    assert shapes(built) == shapes(model)
    assert built.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 3


def test_keypoint_rcnn_keeps_its_keypoints_and_says_so():
    report = cnnprobe.trainable("keypointrcnn_resnet50_fpn", num_classes=K)
    built = ModelRequest("keypointrcnn_resnet50_fpn", num_classes=K).build().module
    assert built.roi_heads.keypoint_predictor.kps_score_lowres.out_channels == 17
    assert built.roi_heads.box_predictor.cls_score.out_features == K
    assert any("17 keypoints" in note for note in report.notes)


def test_a_replaced_head_runs(cli):
    """The new heads are wired where the model reads them: a forward pass gives K-wide outputs."""
    model = ModelRequest("deeplabv3_mobilenet_v3_large", num_classes=K, input_size="3,64,64").build()
    out = model.module.eval()(*model.arguments(model.example_inputs(1)))
    assert out["out"].shape == (1, K, 64, 64) and out["aux"].shape == (1, K, 64, 64)
    video = ModelRequest("r3d_18", num_classes=K, input_size="3,4,32,32").build()
    assert video.module(*video.arguments(video.example_inputs(2))).shape == (2, K)


def test_num_classes_and_head_refusals_are_one_line(cli):
    line = one_error_line(cli("trainable", "raft_small", "--num-classes", "3"))
    assert "optical flow" in line and "no classifier" in line
    line = one_error_line(cli("trainable", "fasterrcnn_resnet50_fpn", "--head", "dropout(0.3),linear(3)"))
    assert "--num-classes" in line and "roi_heads.box_predictor" in line
    assert cli("trainable", "raft_small", "--num-classes", "3").exit_code == 2


def test_a_video_model_takes_a_head_of_layers(cli):
    run = cli("trainable", "r3d_18", "--freeze-all", "--head", "dropout(0.3),linear(64),relu,linear(5)", "--json")
    assert run.exit_code == 0, run.stderr
    data = run.json()
    assert data["after"]["trainable_params"] == 512 * 64 + 64 + 64 * 5 + 5
    assert data["head"]["name"] == "fc"


# --------------------------------------------------------------------------- --trainable-backbone-layers


def _resnet_rule(n: int):
    """backbone_utils._resnet_fpn_extractor: the last n of layer4..conv1 train (and bn1 with all five)."""
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:n] + (["bn1"] if n == 5 else [])
    return lambda index, name: not any(name.startswith(t) for t in train)


def _staged_rule(stages: list[int], length: int, n: int):
    """The MobileNet and VGG extractors: blocks before the n-th stage from the last are frozen."""
    before = length if n == 0 else stages[len(stages) - n]
    return lambda index, name: index < before


@functools.cache
def _source(name: str) -> tuple[list[tuple[int, str, tuple[int, ...]]], str, int, object]:
    """The classifier backbone a detection builder starts from, built here on its own: (block index, name, shape)
    of each parameter in order, the prefix its parameters take in the detection model, the largest
    trainable_backbone_layers, and the freezing rule for each N."""
    with torch.device("meta"):
        if "resnet50" in name:
            norm = nn.BatchNorm2d if name.endswith("_v2") else FrozenBatchNorm2d
            net = models.resnet50(norm_layer=norm)
            params = [(0, n, tuple(p.shape)) for n, p in net.named_parameters() if not n.startswith("fc.")]
            return params, "backbone.body.", 5, _resnet_rule
        if name.startswith("ssd300"):
            blocks = list(models.vgg16().features)
            stages = [0] + [i for i, b in enumerate(blocks) if isinstance(b, nn.MaxPool2d)][:-1]
            prefix = "backbone."
        else:
            ssdlite = name.startswith("ssdlite")
            norm = (lambda c: nn.BatchNorm2d(c, eps=0.001, momentum=0.03)) if ssdlite else FrozenBatchNorm2d
            blocks = list(models.mobilenet_v3_large(norm_layer=norm, reduced_tail=ssdlite).features)
            stages = [0] + [i for i, b in enumerate(blocks) if getattr(b, "_is_cn", False)] + [len(blocks) - 1]
            prefix = "backbone.features." if ssdlite else "backbone.body."
    params = [(i, f"{i}.{n}", tuple(p.shape)) for i, b in enumerate(blocks) for n, p in b.named_parameters()]
    return params, prefix, len(stages), lambda n: _staged_rule(stages, len(blocks), n)


def expected_trainable(name: str, n: int, model: nn.Module) -> set[str]:
    """The names the builder leaves trainable for trainable_backbone_layers=n: every parameter but the
    backbone's frozen blocks, matched to the detection model's in order (its extractor keeps their order)."""
    params, prefix, _, rule = _source(name)
    frozen_if = rule(n)
    names = [(k, tuple(p.shape)) for k, p in model.named_parameters()]
    ours = [(k, s) for k, s in names if k.startswith(prefix) and k != "backbone.scale_weight"][:len(params)]
    assert [s for _, s in ours] == [s for _, _, s in params]  # the same backbone, parameter by parameter
    frozen = {k for (k, _), (index, source, _) in zip(ours, params, strict=True) if frozen_if(index, source)}
    return {k for k, _ in names} - frozen


CASES = [(name, n) for name in DETECTION for n in range(_source(name)[2] + 1)]


@pytest.mark.parametrize("name, n", CASES)
def test_trainable_backbone_layers_freezes_what_torchvision_freezes(name, n):
    model = ModelRequest(name, trainable_backbone_layers=n).build().module
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert trainable == expected_trainable(name, n, model)


@pytest.mark.parametrize("name", DETECTION)
def test_the_shipped_default_is_the_builders_default(name):
    """Without the option a detection model is as shipped: its builder's default N (3; SSD's 4, SSDLite's 6)."""
    default = {"ssd300_vgg16": 4, "ssdlite320_mobilenet_v3_large": 6}.get(name, 3)
    model = ModelRequest(name).build().module
    assert {k for k, p in model.named_parameters() if p.requires_grad} == expected_trainable(name, default, model)
    theirs = shipped(name, trainable_backbone_layers=0)  # torchvision's own, with weights: the oracle's oracle
    ours = ModelRequest(name, trainable_backbone_layers=0).build().module
    assert ({k for k, p in ours.named_parameters() if p.requires_grad}
            == {k for k, p in theirs.named_parameters() if p.requires_grad})


def test_before_is_as_shipped_and_freeze_options_combine():
    """trainable's before is the model as shipped; --freeze freezes more on top of the builder's freezing;
    --freeze-except decides every parameter itself."""
    five = cnnprobe.trainable("fasterrcnn_resnet50_fpn", trainable_backbone_layers=5)
    assert (five.before.trainable_params, five.after.trainable_params) == (41_532_886, 41_755_286)
    model = ModelRequest("fasterrcnn_resnet50_fpn", trainable_backbone_layers=0).build().module
    counts = {k: p.numel() for k, p in model.named_parameters()}
    zero = expected_trainable("fasterrcnn_resnet50_fpn", 0, model)
    more = cnnprobe.trainable("fasterrcnn_resnet50_fpn", trainable_backbone_layers=0, freeze="backbone.fpn")
    assert more.after.trainable_params == sum(counts[k] for k in zero if not k.startswith("backbone.fpn."))
    kept = cnnprobe.trainable("fasterrcnn_resnet50_fpn", trainable_backbone_layers=0,
                              freeze_except="backbone.body.layer4")
    assert kept.after.trainable_params == sum(c for k, c in counts.items() if k.startswith("backbone.body.layer4."))


def test_the_cli_passes_trainable_backbone_layers(cli):
    run = cli("trainable", "retinanet_resnet50_fpn", "--trainable-backbone-layers", "1", "--num-classes", "3",
              "--json")
    assert run.exit_code == 0, run.stderr
    model = ModelRequest("retinanet_resnet50_fpn", trainable_backbone_layers=1, num_classes=3).build().module
    names = expected_trainable("retinanet_resnet50_fpn", 1, model)
    assert run.json()["after"]["trainable_params"] == sum(p.numel() for k, p in model.named_parameters()
                                                          if k in names)


@pytest.mark.parametrize("args, words", [
    (("trainable", "fasterrcnn_resnet50_fpn", "--trainable-backbone-layers", "6"), ("0-5", "fasterrcnn_resnet50_fpn")),
    (("trainable", "fasterrcnn_mobilenet_v3_large_fpn", "--trainable-backbone-layers", "7"), ("0-6",)),
    (("flops", "ssd300_vgg16", "--trainable-backbone-layers", "-1"), ("0-5",)),
    (("trainable", "resnet18", "--trainable-backbone-layers", "2"), ("detection", "classification")),
    (("summary", "deeplabv3_resnet50", "--trainable-backbone-layers", "2"), ("detection", "segmentation")),
])
def test_bad_trainable_backbone_layers_is_one_line(cli, args, words):
    run = cli(*args)
    line = one_error_line(run)
    assert run.exit_code == 2
    assert all(w in line for w in words), line


def test_trainable_backbone_layers_with_weights_is_refused_in_one_line(cli):
    run = cli("trainable", "fasterrcnn_resnet50_fpn", "--trainable-backbone-layers", "2", "--weights", "DEFAULT")
    assert "--weights" in one_error_line(run) and run.exit_code == 2


def test_every_command_gets_the_same_new_heads():
    """summary, flops --backward and trainable build through one path: the same replaced heads, frozen alike."""
    size = "3,4,32,32"
    head = 512 * K + K  # r3d_18's fc, K wide
    shipped_fc = 512 * 400 + 400
    assert cnnprobe.summary("r3d_18", num_classes=K, input_size=size).total_params == 33_371_472 - shipped_fc + head
    flops = cnnprobe.flops("r3d_18", num_classes=K, input_size=size, backward=True, freeze_all=True)
    assert flops.trainable_params == head
    assert cnnprobe.trainable("r3d_18", num_classes=K, freeze_all=True).after.trainable_params == head
    assert flops.backward_macs == 512 * K  # the new fc's weight gradient at batch 1: nothing before it trains
