"""Names, sources, default inputs, and torchvision's published parameter counts as the oracle."""

from __future__ import annotations

import pytest
import torchvision

from cnnprobe.core.enums import Source, Task
from cnnprobe.core.errors import InputSizeError, UnknownModelError, UserFileError
from cnnprobe.models.build import build_model
from cnnprobe.models.inputs import parse_size as parse_input_size
from cnnprobe.models.quantized import registered_params
from cnnprobe.models.registry import list_models, resolve, suggest

from .conftest import DATA

TORCHVISION = [s.name for s in list_models("torchvision:*")]


def test_every_torchvision_model_of_every_task_is_registered():
    expected = torchvision.models.list_models()
    assert sorted(TORCHVISION) == sorted(expected)
    assert len(TORCHVISION) >= 121 or torchvision.__version__ < "0.29"
    classifiers = torchvision.models.list_models(module=torchvision.models)
    assert sorted(s.name for s in list_models("torchvision:*", task="classification")) == sorted(classifiers)
    detection = torchvision.models.list_models(module=torchvision.models.detection)
    assert sorted(s.name for s in list_models(task="detection")) == sorted(detection)


def test_bare_name_prefers_torchvision():
    assert resolve("vgg16").source is Source.TORCHVISION
    assert resolve("lenet").source is Source.CNNPROBE
    assert resolve("cnnprobe:vgg16").source is Source.CNNPROBE
    assert resolve("torchvision:vgg16").qualified == "torchvision:vgg16"


def test_bare_vgg16_is_torchvisions_138m_model():
    model = build_model("vgg16").module
    assert sum(p.numel() for p in model.parameters()) == 138_357_544


@pytest.mark.parametrize(
    "name, shape",
    [("lenet", (1, 28, 28)), ("resnet18", (3, 224, 224)), ("inception_v3", (3, 299, 299)),
     ("vit_h_14", (3, 518, 518)), ("efficientnet_b7", (3, 600, 600)), ("vit_b_16", (3, 224, 224)),
     ("cnnprobe:vgg16", (3, 224, 224))],
)
def test_default_input_is_the_weights_eval_crop(name, shape):
    assert resolve(name).input_shape == shape


def test_resolution_sizes_include_the_large_ones():
    sides = {s.input_shape[1] for s in list_models("torchvision:*")}
    assert {299, 384, 518, 600} <= sides


@pytest.mark.parametrize("typo, expected", [("resnt18", "resnet18"), ("vgg61", "vgg16"), ("lenett", "lenet")])
def test_unknown_names_suggest_the_closest(typo, expected):
    with pytest.raises(UnknownModelError) as info:
        resolve(typo)
    assert expected in info.value.suggestions
    assert expected in str(info.value)


def test_unknown_source_and_wrong_source():
    with pytest.raises(UnknownModelError):
        resolve("timm:resnet18")
    with pytest.raises(UnknownModelError, match="torchvision:"):
        resolve("torchvision:lenet")


def test_suggest_returns_nothing_for_nonsense():
    assert suggest("zzzzqqqq") == []


def test_list_filters_by_glob_and_substring():
    assert {s.name for s in list_models("resnet1*")} == {"resnet18", "resnet101", "resnet152"}
    assert {s.qualified for s in list_models("cnnprobe:vgg")} == {f"cnnprobe:vgg{n}" for n in (11, 13, 16, 19)}


@pytest.mark.parametrize("text, expected", [("3,224,224", (3, 224, 224)), ("3x64x64", (3, 64, 64)),
                                            ("128,96", (128, 96)), ("32", (32,)), ("1,10", (1, 10)),
                                            ("3,16,112,112", (3, 16, 112, 112))])
def test_parse_input_size(text, expected):
    assert parse_input_size(text) == expected


@pytest.mark.parametrize("text", ["3,abc", "", "1,2,3,4,5,6,7", "3,-1,2", "0,28,28", "3,,", "3,224,²",
                                  "3,99999999999999999999,2"])
def test_parse_input_size_rejects(text):
    with pytest.raises(InputSizeError):
        parse_input_size(text)


def test_input_size_completion():
    assert build_model("resnet18", input_size="128,96").input_shape == (3, 128, 96)
    assert build_model("lenet", input_size="32").input_shape == (1, 32, 32)


def test_inputs_of_any_rank_follow_the_first_convolution():
    from torch import nn

    conv1d = nn.Sequential(nn.Conv1d(2, 4, 3), nn.Flatten())
    assert build_model(conv1d).input_shape == (2, 16000)  # a second of 16 kHz audio
    assert build_model(conv1d, input_size="2,100").input_shape == (2, 100)
    assert build_model(conv1d, input_size="100").input_shape == (2, 100)  # the length; channels stay
    conv3d = nn.Conv3d(3, 4, 3)
    assert build_model(conv3d).input_shape == (3, 16, 112, 112)
    assert build_model(conv3d, input_size="3,8,32,32").input_shape == (3, 8, 32, 32)
    assert build_model(conv3d, input_size="32").input_shape == (3, 32, 32, 32)


def test_user_file_class_and_factory():
    built = build_model(f"{DATA}/models.py:SmallNet")
    assert built.spec.source is Source.FILE
    assert built.input_shape == (1, 224, 224)  # channels read off the first convolution
    assert built.input_source == "inferred"
    assert sum(p.numel() for p in built.module.parameters()) == 4 * 9 + 4 + 4 * 3 + 3
    assert type(build_model(f"{DATA}/models.py:small_net").module).__name__ == "SmallNet"


def test_user_file_num_classes_replaces_the_head():
    model = build_model(f"{DATA}/models.py:SmallNet", num_classes=5).module
    assert model.fc.out_features == 5


@pytest.mark.parametrize(
    "spec, message",
    [("missing.py:Net", "does not exist"),
     ("broken.py:Net", "NameError: name 'undefined_name' is not defined (line 3)"),
     ("models.py:Nope", "has no class or function 'Nope'; it defines TypoVGG, SmallNet"),
     ("models.py", "name the model to build"),
     ("models.py:needs_arguments", "failed when built with no arguments"),
     ("models.py:not_a_module", "returned int, not an nn.Module")],
)
def test_user_file_errors(spec, message):
    with pytest.raises(UserFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_model(f"{DATA}/{spec}")


@pytest.mark.parametrize("name", TORCHVISION)
def test_parameter_count_equals_published_num_params(name):
    """The shipped architecture: counts equal torchvision's `num_params` for every model."""
    spec = resolve(name)
    if spec.task is Task.QUANTIZED:  # packed int8 weights, no nn.Parameter: the float twin's count (test_quantized)
        assert registered_params(name) == spec.published_params
        return
    built = build_model(spec)
    assert built.device == "meta"
    assert sum(p.numel() for p in built.module.parameters()) == spec.published_params
