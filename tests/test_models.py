"""The hand-written classics: exact parameter counts derived by hand, and per-layer shapes."""

from __future__ import annotations

import pytest
import torch
import torchvision

import cnnprobe
from cnnprobe.models.build import build_model
from cnnprobe.models.registry import list_models


def conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def linear(fin: int, fout: int) -> int:
    return fin * fout + fout


def bn(c: int) -> int:
    return 2 * c


def vgg_params(widths: list[int]) -> int:
    total, cin = 0, 3
    for w in widths:
        total += conv(cin, w, 3) + bn(w)
        cin = w
    return total + linear(25088, 4096) + linear(4096, 4096) + linear(4096, 1000)


def resnet_params(blocks: list[int]) -> int:
    total = conv(3, 64, 7, bias=False) + bn(64)
    cin = 64
    for width, n in zip([64, 128, 256, 512], blocks):
        for _ in range(n):
            total += conv(cin, width, 3, False) + bn(width) + conv(width, width, 3, False) + bn(width)
            if cin != width:
                total += conv(cin, width, 1, False) + bn(width)
            cin = width
    return total + linear(512, 1000)


HAND_DERIVED = {
    "lenet": conv(1, 6, 5) + conv(6, 16, 5) + linear(400, 120) + linear(120, 84) + linear(84, 10),
    "alexnet": conv(3, 96, 11) + conv(96, 256, 5) + conv(256, 384, 3) + conv(384, 384, 3) + conv(384, 256, 3)
    + linear(9216, 4096) + linear(4096, 4096) + linear(4096, 1000),
    "vgg11": vgg_params([64, 128, 256, 256, 512, 512, 512, 512]),
    "vgg13": vgg_params([64, 64, 128, 128, 256, 256, 512, 512, 512, 512]),
    "vgg16": vgg_params([64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]),
    "vgg19": vgg_params([64, 64, 128, 128, 256, 256, 256, 256] + [512] * 8),
    "resnet18": resnet_params([2, 2, 2, 2]),
    "resnet34": resnet_params([3, 4, 6, 3]),
}
HANDWRITTEN = [s.name for s in list_models("cnnprobe:*")]


def test_every_handwritten_model_has_a_derivation():
    assert sorted(HANDWRITTEN) == sorted(HAND_DERIVED)


@pytest.mark.parametrize("name", HANDWRITTEN)
def test_parameter_count_is_derived_by_hand(name):
    model = build_model(f"cnnprobe:{name}").module
    assert sum(p.numel() for p in model.parameters()) == HAND_DERIVED[name]


def test_headline_counts():
    assert HAND_DERIVED["lenet"] == 61_706
    assert HAND_DERIVED["alexnet"] == 62_378_344
    assert HAND_DERIVED["resnet18"] == 11_689_512


@pytest.mark.parametrize("name", ["vgg11", "vgg13", "vgg16", "vgg19"])
def test_vgg_matches_torchvision_bn_variant(name):
    """Conv + BN + ReLU everywhere and a 4096-wide last layer: torchvision's vggNN_bn, key for key."""
    ours = build_model(f"cnnprobe:{name}").module.state_dict()
    theirs = build_model(f"torchvision:{name}_bn").module.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_resnet_names_and_shapes_match_torchvision(name):
    ours = build_model(f"cnnprobe:{name}").module.state_dict()
    theirs = build_model(f"torchvision:{name}").module.state_dict()
    assert list(ours) == list(theirs)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_torchvision_resnet18_weights_load_and_compute_the_same():
    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    ours = build_model("cnnprobe:resnet18", device="cpu").module.eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


LENET_SHAPES = {
    "features.0": [1, 6, 28, 28],
    "features.2": [1, 6, 14, 14],
    "features.3": [1, 16, 10, 10],
    "features.5": [1, 16, 5, 5],
    "classifier.0": [1, 400],
    "classifier.1": [1, 120],
    "classifier.3": [1, 84],
    "classifier.5": [1, 10],
}
ALEXNET_SHAPES = {
    "features.0": [1, 96, 55, 55],
    "features.2": [1, 96, 27, 27],
    "features.3": [1, 256, 27, 27],
    "features.5": [1, 256, 13, 13],
    "features.6": [1, 384, 13, 13],
    "features.8": [1, 384, 13, 13],
    "features.10": [1, 256, 13, 13],
    "features.12": [1, 256, 6, 6],
    "avgpool": [1, 256, 6, 6],
    "classifier.1": [1, 4096],
    "classifier.6": [1, 1000],
}
VGG16_SHAPES = {"features.5": [1, 64, 224, 224], "features.6": [1, 64, 112, 112], "features.42": [1, 512, 14, 14], "features.43": [1, 512, 7, 7],
                "avgpool": [1, 512, 7, 7], "classifier.0": [1, 4096], "classifier.6": [1, 1000]}
RESNET_SHAPES = {"conv1": [1, 64, 112, 112], "maxpool": [1, 64, 56, 56], "layer1": [1, 64, 56, 56],
                 "layer2": [1, 128, 28, 28], "layer3": [1, 256, 14, 14], "layer4": [1, 512, 7, 7],
                 "avgpool": [1, 512, 1, 1], "fc": [1, 1000]}


@pytest.mark.parametrize(
    "name, expected",
    [("lenet", LENET_SHAPES), ("cnnprobe:alexnet", ALEXNET_SHAPES), ("cnnprobe:vgg16", VGG16_SHAPES),
     ("cnnprobe:resnet18", RESNET_SHAPES), ("cnnprobe:resnet34", RESNET_SHAPES)],
)
def test_output_shapes(name, expected):
    shapes = {r.name: r.output_shape for r in cnnprobe.summary(name, depth=2).layers}
    assert {k: shapes[k] for k in expected} == expected


def test_lenet_reads_28_14_5():
    s = cnnprobe.summary("lenet")
    assert s.shape_flow == [[1, 28, 28], [6, 28, 28], [6, 14, 14], [16, 10, 10], [16, 5, 5], [400], [120], [84], [10]]


@pytest.mark.parametrize("name", HANDWRITTEN)
def test_handwritten_models_run_for_real_with_gradients(name):
    """Small real forward and backward: right output width, finite values, a gradient on every parameter."""
    built = build_model(f"cnnprobe:{name}", num_classes=7, device="cpu")
    model = built.module.train()
    c, h, w = built.input_shape
    if name.startswith(("resnet", "vgg")):  # adaptive pooling takes smaller inputs; keep the test cheap
        h = w = 64
    x = torch.randn(2, c, h, w)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
