"""The README is true: its set-up commands are what CI runs, and its console blocks are real output."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
CI = Path(__file__).resolve().parent.parent / ".ci" / "run"
BLOCK = re.compile(r"```console\n\$ (cnnprobe [^\n]*)\n(.*?)```", re.S)


def _blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(README.read_text())


def test_ci_runs_the_readmes_second_command():
    setup = README.read_text().split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", setup, re.S)
    assert len(commands) == 2 and all("\n" not in c for c in commands)  # exactly two one-line commands
    assert commands[1] in CI.read_text().splitlines()


@pytest.mark.parametrize("command", [c for c, _ in _blocks()])
def test_console_block_is_real_output(command, request, monkeypatch):
    from typer.testing import CliRunner

    from cnnprobe.cli import app

    monkeypatch.setenv("COLUMNS", "100")
    result = CliRunner().invoke(app, shlex.split(command)[1:])
    assert result.exit_code == 0, result.stderr
    actual = "\n".join(line.rstrip() for line in result.stdout.splitlines()) + "\n"
    text = README.read_text()
    expected = dict(_blocks())[command]
    if request.config.getoption("--update-snapshots"):
        README.write_text(text.replace(f"$ {command}\n{expected}```", f"$ {command}\n{actual}```"))
        return
    assert actual == expected, f"README block for `{command}` differs; rerun with --update-snapshots"
