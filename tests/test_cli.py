"""The command line as a shell: help, no torch for --help, JSON purity, list, python -m."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from .conftest import one_error_line

COMMANDS = ["list", "summary", "trainable", "flops", "bench", "memory", "checkpoint", "compare"]
# the help panels each command's options show under (besides typer's own "Options", for -h)
PANELS = {
    "list": ["Output"],
    "summary": ["Model and input", "Freezing", "Output"],  # --trainable-backbone-layers
    "trainable": ["Model and input", "Freezing", "Step", "Output"],
    "flops": ["Model and input", "Freezing", "Step", "Output"],
    "bench": ["Model and input", "Freezing", "Step", "Timing", "Output", "Distributed"],
    "memory": ["Model and input", "Freezing", "Step", "Output"],
    "checkpoint": ["Model and input", "Output"],
    "compare": ["Model and input", "Output"],
}


def test_help(cli):
    run = cli("--help")
    assert run.exit_code == 0
    for command in COMMANDS:
        assert command in run.stdout
    assert "<bool>" not in run.stdout and "Examples:" in run.stdout


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("option", ["--help", "-h"])
def test_help_of_every_command(cli, command, option):
    """Every command's help: its panels, an example of the command itself, and flags shown without a value."""
    run = cli(command, option)
    assert run.exit_code == 0
    assert "Usage" in run.stdout
    titles = re.findall(r"╭─ (.+?) ─", run.stdout)
    assert titles == ["Arguments", "Options", *PANELS[command]]
    example = re.search(r"Examples:\s+(cnnprobe \S+)", run.stdout)
    assert example is not None and example.group(1) == f"cnnprobe {command}"
    assert "<bool>" not in run.stdout


@pytest.mark.parametrize("command, flags", [
    ("bench", ["--json", "--trust", "--freeze-all", "--channels-last", "--compile", "--ddp", "--find-unused-parameters"]),
    ("trainable", ["--freeze-all", "--freeze-bn", "--trust", "--json"]),
    ("flops", ["--backward", "--freeze-all"]),
])
def test_flags_show_no_value(cli, command, flags):
    """A flag's help row names the flag and goes straight to its help: no placeholder, no `--no-` twin."""
    text = cli(command, "--help").stdout
    for name in flags:
        row = next(line for line in text.splitlines() if re.search(rf"│ {name}\s", line))
        assert re.search(rf"│ {name}\s+[^\s<\[]", row), row
        assert f"--no-{name[2:]}" not in text


def test_help_does_not_import_torch_and_is_fast():
    code = (
        "import sys, time; t = time.perf_counter(); sys.argv = ['cnnprobe', '--help']\n"
        "from cnnprobe.cli import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "print(repr(('torch' in sys.modules, time.perf_counter() - t)), file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported, seconds = eval(result.stderr.strip().splitlines()[-1])
    assert imported is False
    assert "summary" in result.stdout
    assert seconds < 2.0  # generous for a loaded CI machine; benchmarks/ tracks the real figure


def test_python_dash_m():
    result = subprocess.run([sys.executable, "-m", "cnnprobe", "summary", "lenet", "--json"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total_params"] == 61_706


def test_unknown_command_is_one_line(cli):
    assert "No such command" in one_error_line(cli("bogus"))


def test_missing_argument_is_one_line(cli):
    assert "Missing argument" in one_error_line(cli("summary"))


def test_list(cli):
    run = cli("list", "resnet1*")
    assert run.exit_code == 0
    for name in ("resnet18", "resnet101", "resnet152", "11,689,512", "224"):
        assert name in run.stdout


def test_list_json_has_both_sources(cli):
    data = cli("list", "--json").json()["models"]
    sources = {m["source"] for m in data}
    assert sources == {"cnnprobe", "torchvision"}
    lenet = next(m for m in data if m["name"] == "lenet")
    assert lenet == {**lenet, "params": 61_706, "input_size": [1, 28, 28], "qualified": "cnnprobe:lenet"}
    vgg16 = {m["qualified"]: m["params"] for m in data if m["name"] == "vgg16"}
    assert vgg16 == {"torchvision:vgg16": 138_357_544, "cnnprobe:vgg16": 138_365_992}


def test_list_counts_parameters_and_they_match_the_published_figures(cli):
    """`list` counts each model on meta; torchvision's own metadata is the independent check."""
    from torchvision import models

    from cnnprobe.models.registry import list_models

    published = {s.qualified: s.published_params for s in list_models("torchvision:*")}
    counted = {m["qualified"]: m["params"] for m in cli("list", "torchvision:*", "--json").json()["models"]}
    assert counted == published and len(counted) == len(models.list_models())  # every task's: 121 on 0.29
    again = {m["qualified"]: m["params"] for m in cli("list", "torchvision:*", "--json").json()["models"]}
    assert again == counted  # the second time from the cache, the same


def test_list_no_match_is_one_line(cli):
    assert "no model matches" in one_error_line(cli("list", "nothing-like-this"))


@pytest.mark.parametrize("args", [["summary", "lenet", "--json"], ["trainable", "resnet18", "--freeze-except", "fc", "--json"],
                                  ["list", "lenet", "--json"]])
def test_json_mode_prints_exactly_one_object(cli, args):
    run = cli(*args)
    assert run.exit_code == 0
    assert run.stdout.count("\n") == 1
    assert isinstance(json.loads(run.stdout), dict)


def test_version_and_short_help(cli):
    from cnnprobe import __version__

    run = cli("--version")
    assert run.exit_code == 0 and run.stdout.strip() == f"cnnprobe {__version__}"
    short, long = cli("-h"), cli("--help")
    assert short.exit_code == 0 and short.stdout == long.stdout and "summary" in short.stdout
    assert cli("summary", "-h").stdout == cli("summary", "--help").stdout


@pytest.mark.parametrize("args", [["trainable", "--help"], ["--help"], ["list"]])
def test_a_closed_pipe_is_a_quiet_exit_not_a_models_sys_exit(args):
    """`cnnprobe trainable --help | head -3`: rich answers the broken pipe with SystemExit(1), which the error
    edge once took for a model calling sys.exit(). The reader here is gone before anything is written."""
    import os
    from pathlib import Path

    read, write = os.pipe()
    os.close(read)
    try:
        run = subprocess.run([sys.executable, "-m", "cnnprobe", *args], stdout=write, stderr=subprocess.PIPE,
                             text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent,
                             env={**os.environ, "COLUMNS": "80"}, check=False)
    finally:
        os.close(write)
    assert run.returncode == 1 and run.stderr == "", run.stderr
