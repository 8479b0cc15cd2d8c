"""Weights and checkpoints, read safely: every format, foreign devices, unsafe pickles, broken files."""

from __future__ import annotations

import contextlib
import pathlib

import pytest
import torch
import torchvision

import cnnprobe
from cnnprobe.analysis.checkpoint import inspect_checkpoint
from cnnprobe.core.errors import WeightsError
from cnnprobe.models.build import build_model
from cnnprobe.weights.safeload import pickle_globals, safe_load

from .conftest import one_error_line

MARKER = pathlib.Path("/tmp/cnnprobe-test-pwned")


class Evil:
    """Unpickling this touches MARKER: the stand-in for a file that runs code."""

    def __reduce__(self):
        return (pathlib.Path.touch, (MARKER,))


def lenet(num_classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("lenet", num_classes=num_classes, device="cpu").module


@pytest.fixture
def files(tmp_path):
    """The tutorial's three forms, and the ways files go wrong."""
    model = lenet()
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 1, 28, 28)).sum().backward()
    optimizer.step()
    paths = {name: tmp_path / f"{name}.pth" for name in (
        "state_dict", "whole", "training", "evil", "prefixed", "five_classes", "corrupt", "truncated", "empty")}
    torch.save(model.state_dict(), paths["state_dict"])
    torch.save(model, paths["whole"])
    torch.save({"epoch": 7, "model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
                "loss": torch.tensor(0.25)}, paths["training"])
    torch.save({"weight": torch.zeros(2), "payload": Evil()}, paths["evil"])
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, paths["prefixed"])
    torch.save(lenet(num_classes=5).state_dict(), paths["five_classes"])
    paths["corrupt"].write_bytes(b"\x00\x01 this is not a checkpoint \xff" * 50)
    data = paths["state_dict"].read_bytes()
    paths["truncated"].write_bytes(data[: len(data) // 2])
    paths["empty"].write_bytes(b"")
    MARKER.unlink(missing_ok=True)
    return paths


@contextlib.contextmanager
def saved_as_cuda():
    """torch.save as if the tensors lived on cuda:0, so files from a GPU machine can be made without one."""
    state = {"on": True}

    def tag(storage):
        return "cuda:0" if state["on"] and storage.device.type == "cpu" else None

    torch.serialization.register_package(-100, tag, lambda storage, location: None)
    try:
        yield
    finally:
        state["on"] = False


def test_state_dict(files):
    info = inspect_checkpoint(files["state_dict"])
    assert info.format == "state_dict"
    assert (info.weights.tensors, info.weights.params, info.weights.bytes) == (10, 61_706, 61_706 * 4)
    assert info.weights.dtypes == {"float32": 10}
    assert info.saved_on == {"cpu": 10}


def test_training_checkpoint(files):
    info = inspect_checkpoint(files["training"])
    assert info.format == "training_checkpoint"
    assert info.epoch == 7 and info.loss == pytest.approx(0.25)
    assert info.keys == ["epoch", "model_state_dict", "optimizer_state_dict", "loss"]
    saved = torch.load(files["training"], weights_only=True)["optimizer_state_dict"]["param_groups"][0]
    # torch releases whose Adam saves no decoupled_weight_decay flag cannot be told from AdamW by their state
    assert info.optimizer.type == ("Adam" if "decoupled_weight_decay" in saved else "Adam or AdamW")
    assert info.optimizer.params == 10
    assert info.optimizer.state_bytes == 2 * 61_706 * 4 + 10 * 4  # exp_avg, exp_avg_sq and a step counter each
    assert info.weights.params == 61_706


def test_whole_pickled_model_is_refused_without_trust(files):
    with pytest.raises(WeightsError, match="needs full unpickling.*cnnprobe.models.classics.lenet.LeNet.*--trust"):
        inspect_checkpoint(files["whole"])
    info = inspect_checkpoint(files["whole"], trust=True)
    assert info.format == "pickled_model" and info.pickled_class == "cnnprobe.models.classics.lenet.LeNet"
    assert info.trusted and info.weights.params == 61_706


def test_a_pickle_that_runs_code_is_refused_and_never_runs(files):
    assert {"pathlib.Path", "__builtin__.getattr"} <= set(pickle_globals(files["evil"]))
    with pytest.raises(WeightsError, match="can run code.*pathlib"):
        inspect_checkpoint(files["evil"])
    with pytest.raises(WeightsError):
        cnnprobe.summary("lenet", weights=str(files["evil"]))
    assert not MARKER.exists()


def test_files_saved_on_a_gpu_load_to_the_cpu(tmp_path):
    path = tmp_path / "from_gpu.pth"
    with saved_as_cuda():
        torch.save(lenet().state_dict(), path)
    if torch.cuda.is_available():  # plain torch.load puts them back on the GPU
        assert all(t.device.type == "cuda" for t in torch.load(path, weights_only=True).values())
    else:  # and fails where there is none
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    loaded = safe_load(path)
    assert loaded.saved_on == {"cuda:0": 10}
    assert all(t.device.type == "cpu" for t in loaded.obj.values())
    assert inspect_checkpoint(path).saved_on == {"cuda:0": 10}
    s = cnnprobe.summary("lenet", weights=str(path))
    assert s.device == "cpu" and "loaded strictly" in s.notes[0]


@pytest.mark.parametrize("name, message", [
    ("corrupt", "truncated, corrupted or not a PyTorch file"), ("truncated", "truncated, corrupted or not a PyTorch file"),
    ("empty", "is empty"), ("missing", "does not exist"), ("folder", "is a directory"),
])
def test_broken_files_name_the_file(files, tmp_path, name, message):
    path = {"missing": tmp_path / "missing.pth", "folder": tmp_path}.get(name) or files[name]
    with pytest.raises(WeightsError, match=message) as info:
        inspect_checkpoint(path)
    assert str(path) in str(info.value)


def test_compatibility_with_a_model(files):
    info = inspect_checkpoint(files["state_dict"], model="lenet")
    assert info.compatibility.compatible and info.compatibility.matched == 10
    other = inspect_checkpoint(files["five_classes"], model="lenet").compatibility
    assert not other.compatible
    assert other.mismatched == [("classifier.5.weight", [5, 84], [10, 84]), ("classifier.5.bias", [5], [10])]
    far = inspect_checkpoint(files["state_dict"], model="resnet18").compatibility
    assert len(far.missing) == 122 and len(far.unexpected) == 10
    assert "and 119 more" in far.describe()


def test_weights_file_loads_strictly(files):
    s = cnnprobe.summary("lenet", weights=str(files["state_dict"]))
    assert s.total_params == 61_706 and s.device == "cpu"
    model = build_model("lenet", weights=str(files["training"])).module
    saved = torch.load(files["training"], weights_only=True)["model_state_dict"]
    torch.testing.assert_close(model.state_dict()["classifier.5.bias"], saved["classifier.5.bias"])
    with pytest.raises(WeightsError, match=r"classifier.5.weight: file 5×84, model 10×84"):
        build_model("lenet", weights=str(files["five_classes"]), num_classes=10)
    with pytest.raises(WeightsError, match=r"122 missing"):
        build_model("resnet18", weights=str(files["state_dict"]))


def test_a_fine_tuned_head_is_built_to_the_files_width(files):
    built = build_model("lenet", weights=str(files["five_classes"]))
    assert built.module.classifier[5].out_features == 5
    assert built.weights.num_classes == 5 and "5 classes" in built.weights.describe()


def test_data_parallel_prefix_is_dropped(files):
    built = build_model("lenet", weights=str(files["prefixed"]))
    assert built.weights.stripped_prefix == "module."


# ---------------------------------------------------------------- torchvision weights from the local cache


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A TORCH_HOME whose cache holds resnet18's DEFAULT weights file (made here, in the published format)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), folder / "resnet18-f37072fd.pth")
    return folder, reference


def test_torchvision_resnet18_weights_load_into_cnnprobe_resnet18(hub):
    folder, reference = hub
    built = build_model("cnnprobe:resnet18", weights="DEFAULT")
    assert built.weights.name == "ResNet18_Weights.IMAGENET1K_V1"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(built.module.eval()(x), reference.eval()(x))


def test_torchvision_model_with_named_weights(hub):
    built = build_model("resnet18", weights="IMAGENET1K_V1")
    torch.testing.assert_close(built.module.fc.weight, hub[1].fc.weight)
    full = build_model("torchvision:resnet18", weights="ResNet18_Weights.IMAGENET1K_V1")
    assert full.weights.source.endswith("resnet18-f37072fd.pth")


def test_torchvision_weights_file_is_recognised(hub):
    info = inspect_checkpoint(hub[0] / "resnet18-f37072fd.pth", model="cnnprobe:resnet18")
    assert info.format == "torchvision_weights" and info.torchvision == "ResNet18_Weights.IMAGENET1K_V1"
    assert info.hash_ok is False  # made here, so its content is not the published file's
    assert info.compatibility.compatible


def test_unknown_weights_name(hub):
    with pytest.raises(WeightsError, match="has no weights 'IMAGENET9K'; it has DEFAULT, IMAGENET1K_V1"):
        build_model("resnet18", weights="IMAGENET9K")
    with pytest.raises(WeightsError, match="no published weights"):
        build_model("cnnprobe:alexnet", weights="DEFAULT")


def test_offline_default_fails_at_once_without_touching_the_network(tmp_path, monkeypatch):
    """No download is tried: every way to the network (torch.hub's, torchvision's own binding of it, urllib,
    requests) ends in a name lookup and a socket's connect, which are watched here. How long the refusal takes
    is benchmarks/test_inspection.py's, against a build of the same model."""
    import socket

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    tried = []

    def no_network(*args, **kwargs):
        tried.append(args)
        raise AssertionError("cnnprobe must not download")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(WeightsError) as info:
        build_model("vgg16", weights="DEFAULT")
    assert tried == []
    message = str(info.value)
    assert "vgg16-397923af.pth" in message and str(tmp_path / "hub" / "checkpoints") in message


# ---------------------------------------------------------------- CLI


def test_cli_checkpoint(cli, files):
    run = cli("checkpoint", str(files["training"]), "--model", "lenet")
    assert run.exit_code == 0
    for text in ("training checkpoint", "epoch", "7", "Adam", "61,706", "these weights fit lenet"):
        assert text in run.stdout


def test_cli_checkpoint_json(cli, files):
    data = cli("checkpoint", str(files["state_dict"]), "--json").json()
    assert data["format"] == "state_dict" and data["weights"]["params"] == 61_706 and data["saved_on"] == {"cpu": 10}


@pytest.mark.parametrize("name, message", [
    ("whole", "needs full unpickling"), ("evil", "can run code"), ("corrupt", "truncated, corrupted"),
    ("truncated", "truncated, corrupted"), ("empty", "is empty"),
])
def test_cli_bad_files_are_one_line(cli, files, name, message):
    assert message in one_error_line(cli("checkpoint", str(files[name])))
    assert not MARKER.exists()


def test_cli_trust_unpickles(cli, files):
    run = cli("checkpoint", str(files["whole"]), "--trust")
    assert run.exit_code == 0 and "whole pickled model" in run.stdout


@pytest.mark.parametrize("command", [["summary", "lenet"], ["trainable", "lenet"], ["flops", "lenet"]])
def test_cli_weights_on_commands(cli, files, command, tmp_path):
    assert cli(*command, "--weights", str(files["state_dict"]), "--json").exit_code == 0
    other = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18().state_dict(), other)
    assert "do not fit" in one_error_line(cli(*command, "--weights", str(other)))


def test_cli_offline_default(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    line = one_error_line(cli("summary", "resnet18", "--weights", "DEFAULT"))
    assert "resnet18-f37072fd.pth" in line and "not in the local cache" in line


def test_cli_compare_identical(cli):
    run = cli("compare", "cnnprobe:resnet18", "resnet18", "--json")
    data = run.json()
    assert data["identical"] is True and data["layers"] == [] and data["state_dict"]["compatible"]


def test_cli_compare_alexnets(cli):
    run = cli("compare", "cnnprobe:alexnet", "alexnet")
    assert run.exit_code == 0
    assert "different" in run.stdout and "Conv2d 1×96×55×55" in run.stdout and "Conv2d 1×64×55×55" in run.stdout
    data = cli("compare", "cnnprobe:alexnet", "alexnet", "--json").json()
    assert data["identical"] is False
    first = next(d for d in data["layers"] if d["name"] == "features.0")
    assert (first["status"], first["a_shape"], first["b_shape"]) == ("changed", [1, 96, 55, 55], [1, 64, 55, 55])
    assert data["a"]["params"] == 62_378_344 and data["b"]["params"] == 61_100_840


def test_compare_added_and_removed_layers():
    c = cnnprobe.compare_models("resnet18", "resnet34")
    statuses = {d.status for d in c.layers}
    assert "added" in statuses and not c.identical
    assert any(d.name == "layer1.2" and d.status == "added" for d in c.layers)
    assert c.b.params - c.a.params == 21_797_672 - 11_689_512


def test_cli_compare_bad_input(cli):
    assert "did you mean resnet18" in one_error_line(cli("compare", "resnt18", "resnet34"))
