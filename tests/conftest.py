from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

SNAPSHOTS = Path(__file__).parent / "snapshots"
DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True, scope="session")
def _peak_cache(tmp_path_factory: pytest.TempPathFactory):
    """Measure the CPU's peak matmul once per session, in a cache of the tests' own."""
    import os

    os.environ["CNNPROBE_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def _torch_threads():
    """Tests that build a bench setup directly set torch's thread count; the next test gets it back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-snapshots", action="store_true", help="rewrite tests/snapshots/*.txt from the output")


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch):
    """Run the CLI in-process through typer's CliRunner, with a fixed terminal width."""
    from cnnprobe.cli import app

    monkeypatch.setenv("COLUMNS", "120")
    runner = CliRunner()

    def run(*args: str) -> Run:
        result = runner.invoke(app, list(args))
        return Run(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def snapshot(request: pytest.FixtureRequest):
    """Compare text with tests/snapshots/<name>.txt. Only --update-snapshots writes one: a missing snapshot
    fails, so that deleting a file cannot turn its test green."""

    def check(name: str, text: str) -> None:
        path = SNAPSHOTS / f"{name}.txt"
        if request.config.getoption("--update-snapshots"):
            path.write_text(text)
            return
        assert path.exists(), f"snapshot {path} is missing; write it with --update-snapshots"
        assert text == path.read_text(), f"output differs from {path}; rerun with --update-snapshots if intended"

    return check


def table_rows(text: str, until: str | tuple[str, ...]) -> list[list[str]]:
    """Whitespace-split cells of the first rendered table: the lines after its header rule, up to the
    first line that starts with `until`, or one of them (after stripping)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("─"))
    rows = []
    for line in lines[start + 1:]:
        if line.strip().startswith(until):
            break
        rows.append(line.split())
    return rows


_LOAD_WARNING = re.compile(r"^warning: (the machine is busy|\d+ threads on \d+ cores? oversubscribe)")


def stderr_lines(stderr: str) -> list[str]:
    """stderr's lines but bench's warning that the machine is busy: tests run on loaded machines."""
    return [line for line in stderr.strip().splitlines() if not _LOAD_WARNING.match(line)]


def one_error_line(run: Run) -> str:
    """Bad input: non-zero exit, nothing on stdout, exactly one line on stderr, no traceback."""
    assert run.exit_code != 0
    assert run.stdout == ""
    lines = stderr_lines(run.stderr)
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert lines[0].startswith("cnnprobe: error: ")
    return lines[0]
