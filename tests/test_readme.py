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


_NUMBER = re.compile(r"\d[\d,]*(\.\d+)?")


def masked(text: str) -> str:
    """Timings with their noise taken out: every number, the CPU's name, where the peak came from (a busy
    moment can make a model beat the matrix product), the noisy marks and the rules' widths.
    What stays is checked, as one stream of words (a longer number may move a word to the next line): the
    labels and units, the columns and the modes."""
    out = []
    for line in text.splitlines():
        if line.startswith(("!:", "?:")):
            continue  # said only when a result happened to be noisy, or to rest on too few blocks
        line = re.sub(r"^.* \((cpu|cuda)\) · ", r"<device> (\1) · ", line)
        line = re.sub(r"\bthreads\b", "thread", _NUMBER.sub("#", line.replace("!", "").replace("?", "")))
        line = re.sub(r"─+", "─", line)
        out.append(line)
    stream = " ".join(" ".join(out).split())
    return re.sub(r"peak # TFLOP/s: .*? mode ", "peak # TFLOP/s: <measured or achieved> mode ", stream)


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
    if command.startswith(("cnnprobe bench", "cnnprobe memory")):  # measured (a prediction's workspaces are
        # calibrated on this machine's kernels), not computed: compare with the numbers masked
        assert masked(actual) == masked(expected), f"README block for `{command}` differs beyond timing noise:\n{actual}"
        return
    assert actual == expected, f"README block for `{command}` differs; rerun with --update-snapshots"


def test_a_missing_snapshot_fails(snapshot, tmp_path, monkeypatch, request):
    """The snapshot fixture never writes a file on its own: a deleted snapshot is a failure."""
    from . import conftest

    if request.config.getoption("--update-snapshots"):
        pytest.skip("--update-snapshots writes snapshots on purpose")
    monkeypatch.setattr(conftest, "SNAPSHOTS", tmp_path)
    with pytest.raises(AssertionError, match="is missing"):
        snapshot("never_written", "some output\n")
    assert not (tmp_path / "never_written.txt").exists()


def test_masking_keeps_what_is_not_noise():
    a = "x (cpu) · 2 threads\nmode   median ms   peak mem\nforward   12.5   3.0 MiB\n!: noisy\n"
    b = "y (cpu) · 4 threads\nmode   median ms   peak mem\nforward   9.25!   31.0 MiB\n"
    assert masked(a) == masked(b)
    assert masked(a) != masked(a.replace("MiB", "KiB")) and masked(a) != masked(a.replace("forward", "fwd+bwd"))
