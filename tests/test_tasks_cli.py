"""Every task through the command line: list --task against torchvision's own grouping, summary and flops of
one model of each task, --input-size per task, compare across tasks, and nothing downloading, ever (the
CLI run in a subprocess whose sockets cannot connect, with an empty torch hub)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from torchvision import models

from .conftest import one_error_line

ROOT = Path(__file__).resolve().parents[1]

# torchvision's own grouping of its models: the module each task's builders live in
MODULES = {"classification": models, "detection": models.detection, "segmentation": models.segmentation,
           "video": models.video, "optical_flow": models.optical_flow, "quantized": models.quantization}

# one cheap model of each task, at a small input where its own is large
CASES = {
    "classification": ("mobilenet_v3_small", []),
    "detection": ("ssdlite320_mobilenet_v3_large", []),  # its transform resizes every image to 320 anyway
    "segmentation": ("lraspp_mobilenet_v3_large", ["--input-size", "3,128,128"]),
    "video": ("r3d_18", ["--input-size", "3,4,56,56"]),
    "optical_flow": ("raft_small", ["--input-size", "3,128,128"]),
}
SLOW = {"detection", "optical_flow"}  # detection reads tensor values (nonzero, NMS): run for real on the CPU
SLOW_LISTS = {"classification", "quantized"}  # counting 80 classifiers; quantized models are built for real


def _task_params():
    return [pytest.param(task, marks=pytest.mark.slow) if task in SLOW else task for task in CASES]


# ---------------------------------------------------------------- list --task


@pytest.mark.parametrize("task", [pytest.param(t, marks=pytest.mark.slow) if t in SLOW_LISTS else t for t in MODULES])
def test_list_task_is_torchvisions_grouping(cli, task):
    """`list --task` holds exactly the torchvision models torchvision lists under that task's module, each
    with its task in the JSON and the table."""
    run = cli("list", "torchvision:*", "--task", task, "--json")
    assert run.exit_code == 0, run.stderr
    listed = run.json()["models"]
    assert sorted(m["name"] for m in listed) == sorted(models.list_models(module=MODULES[task]))
    assert {m["task"] for m in listed} == {task}
    table = cli("list", "torchvision:*", "--task", task)
    rows = [line.split() for line in table.stdout.splitlines()[3:] if line.strip()]
    assert [(r[1], r[2]) for r in rows] == [(m["name"], task) for m in listed]


@pytest.mark.slow
def test_every_model_has_a_task_and_the_tasks_cover_the_registry(cli):
    data = cli("list", "torchvision:*", "--json").json()["models"]
    assert len(data) == len(models.list_models())
    by_task = {t: sorted(m["name"] for m in data if m["task"] == t) for t in MODULES}
    assert by_task == {t: sorted(models.list_models(module=m)) for t, m in MODULES.items()}


def test_bad_task_is_typers_one_line(cli):
    line = one_error_line(cli("list", "--task", "pose"))
    assert "Invalid value for '--task'" in line and "optical_flow" in line


def test_no_model_of_a_task_matches_is_one_line(cli):
    assert "no model of task video matches 'resnet'" in one_error_line(cli("list", "resnet", "--task", "video"))


# ---------------------------------------------------------------- summary and flops of each task


@pytest.mark.parametrize("task", _task_params())
def test_summary_and_flops_of_each_task(cli, task):
    """summary --depth 1 and flops of one model per task: the task said in the JSON and the header, the
    parameters torchvision publishes, the inputs as given, and one MAC count in both commands."""
    name, size = CASES[task]
    summary = cli("summary", name, *size, "--depth", "1", "--json")
    assert summary.exit_code == 0, summary.stderr
    s = summary.json()
    published = models.get_model_weights(name).DEFAULT.meta["num_params"]
    assert s["task"] == task and s["total_params"] == published
    assert s["layers"] and all(r["depth"] == 1 for r in s["layers"])
    flops = cli("flops", name, *size, "--json")
    assert flops.exit_code == 0, flops.stderr
    f = flops.json()
    assert f["task"] == task and f["macs"] == s["macs"] > 0
    given = [int(d) for d in size[1].split(",")] if size else None
    expected = [given] * (2 if task == "optical_flow" else 1) if given else [i["shape"] for i in s["inputs"]]
    assert [i["shape"] for i in f["inputs"]] == [i["shape"] for i in s["inputs"]] == expected
    header = cli("summary", name, *size, "--depth", "0").stdout.splitlines()[0]
    assert header.startswith(f"{name} (torchvision{'' if task == 'classification' else ', ' + task})")


@pytest.mark.slow
def test_detection_flops_at_the_default_input_match_the_published_figure(cli):
    """ssdlite's own transform sets its input (320): torchvision's `_ops` is the independent figure."""
    f = cli("flops", "ssdlite320_mobilenet_v3_large", "--json").json()
    assert f["macs"] / 1e9 == pytest.approx(f["published_gmacs"], rel=0.01)


def test_trainable_says_the_task(cli):
    run = cli("trainable", "lraspp_mobilenet_v3_large", "--freeze-except", "classifier", "--json")
    assert run.exit_code == 0, run.stderr
    r = run.json()
    assert r["task"] == "segmentation" and r["after"]["trainable_params"] < r["before"]["trainable_params"]


# ---------------------------------------------------------------- --input-size per task


def test_a_video_clip_size_sets_the_frames(cli):
    """r3d_18 at 8 frames of 112: its convolutions are 3-D over time, so half the frames is half the MACs."""
    eight = cli("flops", "r3d_18", "--input-size", "3,8,112,112", "--json").json()
    assert eight["inputs"][0]["shape"] == [3, 8, 112, 112]
    assert eight["macs"] / 1e9 == pytest.approx(eight["published_gmacs"] / 2, rel=0.01)
    sides = cli("summary", "r3d_18", "--input-size", "56", "--depth", "0", "--json").json()
    assert sides["inputs"][0]["shape"] == [3, 16, 56, 56]  # one side: the frame's sides, not the clip's length


@pytest.mark.slow
def test_one_size_sizes_both_of_rafts_images(cli):
    one = cli("summary", "raft_small", "--input-size", "3,128,128", "--depth", "0", "--json").json()
    two = cli("summary", "raft_small", "--input-size", "3,128,128", "--input-size", "3,128,128", "--depth", "0",
              "--json").json()
    assert [i["shape"] for i in one["inputs"]] == [[3, 128, 128]] * 2
    assert one["macs"] == two["macs"] > 0


@pytest.mark.parametrize("args, message", [
    (["summary", "r3d_18", "--input-size", "3,112,112"], "ambiguous for r3d_18"),
    (["summary", "r3d_18", "--input-size", "3,8,8,112,112"], "takes video clips of C,T,H,W"),
    (["summary", "ssdlite320_mobilenet_v3_large", "--input-size", "3,4,224,224"], "takes images of C,H,W"),
    (["summary", "raft_small", *["--input-size", "3,128,128"] * 3], "which takes 2 inputs"),
    (["summary", "s3d", "--input-size", "3,2,112,112"], "too small for s3d"),
    (["summary", "mvit_v1_b", "--input-size", "3,4,224,224"], "mvit_v1_b"),
    (["flops", "raft_small", "--input-size", "3,60,60"], "divisible by 8"),
])
def test_a_bad_size_for_a_task_is_one_line(cli, args, message):
    assert message in one_error_line(cli(*args))


# ---------------------------------------------------------------- compare across tasks


@pytest.mark.slow
def test_compare_two_detection_models(cli):
    run = cli("compare", "ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn", "--json")
    assert run.exit_code == 0, run.stderr
    c = run.json()
    assert (c["a"]["task"], c["b"]["task"]) == ("detection", "detection")
    assert c["b"]["params"] == models.get_model_weights(c["b"]["model"]).DEFAULT.meta["num_params"]
    assert {d["name"] for d in c["layers"] if d["status"] == "added"} >= {"rpn", "roi_heads"}


@pytest.mark.slow
def test_compare_a_detection_model_with_its_backbones_classifier(cli):
    c = cli("compare", "mobilenet_v3_large", "ssdlite320_mobilenet_v3_large", "--json").json()
    assert (c["a"]["task"], c["b"]["task"]) == ("classification", "detection")
    assert c["state_dict"]["compatible"] is False and c["b"]["input_size"] == c["a"]["input_size"]


@pytest.mark.parametrize("a, b", [("r3d_18", "resnet18"), ("resnet18", "raft_small")])
def test_compare_across_input_kinds_says_why_not(cli, a, b):
    line = one_error_line(cli("compare", a, b))
    assert f"cannot compare {a} with {b} at one input" in line and "takes" in line


# ---------------------------------------------------------------- nothing downloads, ever

OFFLINE = '''
import socket

def _refuse(*args, **kwargs):
    raise OSError("network disabled by the test: cnnprobe tried to connect")

socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
'''

DRIVER = '''
import json, os, socket, sys
from typer.testing import CliRunner
from cnnprobe.cli import app

try:  # the guard itself: it must refuse, or the test proves nothing
    socket.create_connection(("127.0.0.1", 9), timeout=1)
    guarded = False
except OSError as e:
    guarded = "network disabled by the test" in str(e)
out = {"guarded": guarded, "runs": []}
for home, args in json.loads(sys.argv[1]):
    os.environ["TORCH_HOME"] = home
    r = CliRunner().invoke(app, args)
    out["runs"].append({"args": args, "code": r.exit_code, "stderr": r.stderr, "stdout": r.stdout})
print(json.dumps(out))
'''


def _offline(tmp_path: Path, runs: list[tuple[Path, list[str]]]) -> dict:
    """Run the CLI in a fresh interpreter whose sockets cannot connect, each run under its TORCH_HOME."""
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(textwrap.dedent(OFFLINE))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(guard), str(ROOT)]), "COLUMNS": "120",
           "CNNPROBE_CACHE": str(tmp_path / "cache")}
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(key, None)
    plan = json.dumps([(str(home), args) for home, args in runs])
    done = subprocess.run([sys.executable, "-c", DRIVER, plan], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["guarded"], "the sitecustomize guard did not load: the test would prove nothing"
    return result


def _files(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())


@pytest.mark.slow
def test_nothing_downloads(tmp_path):
    """summary, flops and trainable of a model of each task, and list --task detection, with no network and
    an empty torch hub: every one succeeds and nothing is written to the hub. --weights DEFAULT without the
    file cached is one line naming the file to place."""
    home = tmp_path / "torch"
    home.mkdir()
    runs = [(home, ["list", "--task", "detection", "--json"])]
    for name, size in CASES.values():
        runs += [(home, ["summary", name, *size, "--depth", "1", "--json"]), (home, ["flops", name, *size, "--json"]),
                 (home, ["trainable", name, "--json"])]
    runs.append((home, ["summary", "ssdlite320_mobilenet_v3_large", "--weights", "DEFAULT"]))
    result = _offline(tmp_path, runs)
    *fine, weights = result["runs"]
    for run in fine:
        assert run["code"] == 0, (run["args"], run["stderr"])
        assert isinstance(json.loads(run["stdout"]), dict), run["args"]
    assert weights["code"] != 0 and "Traceback" not in weights["stderr"]
    lines = [line for line in weights["stderr"].splitlines() if line.strip()]
    assert len(lines) == 1 and "ssdlite320_mobilenet_v3_large_coco-a79551df.pth" in lines[0], lines
    assert _files(home) == []


@pytest.mark.slow
def test_cached_detection_weights_load_without_fetching_the_backbone(tmp_path):
    """ssdlite's DEFAULT weights placed in the cache: --weights DEFAULT loads them, offline, and the hub holds
    that one file afterwards (torchvision's builder never asks for its backbone's ImageNet weights)."""
    import torch

    from cnnprobe.models.shipped import build_shipped

    home = tmp_path / "torch"
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    member = models.get_model_weights("ssdlite320_mobilenet_v3_large").DEFAULT
    file = checkpoints / os.path.basename(member.url)
    with torch.device("cpu"):
        torch.save(build_shipped("ssdlite320_mobilenet_v3_large").state_dict(), file)
    result = _offline(tmp_path, [(home, ["summary", "ssdlite320_mobilenet_v3_large", "--weights", "DEFAULT",
                                         "--depth", "0", "--json"])])
    run = result["runs"][0]
    assert run["code"] == 0, run["stderr"]
    s = json.loads(run["stdout"])
    assert s["total_params"] == member.meta["num_params"]
    assert any("loaded strictly" in n for n in s["notes"])
    assert _files(home) == [f"hub/checkpoints/{file.name}"]


def test_list_counts_are_cached_under_the_code_that_builds_the_models():
    """A count cached before cnnprobe changed how a model is built (FrozenBatchNorm2d, quantization) is not
    reused: the cache key holds a digest of the model-building source, which must read real files."""
    import hashlib

    from cnnprobe.models import build
    from cnnprobe.models.registry import resolve

    assert build._source_digest() != hashlib.sha1(b"").hexdigest()[:12]
    keys = {build._builder_version(resolve(name)) for name in ("cnnprobe:lenet", "torchvision:r3d_18")}
    assert all(build._source_digest() in k for k in keys) and len(keys) == 2
