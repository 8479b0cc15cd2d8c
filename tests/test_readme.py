"""The README is true: its set-up commands are what CI runs, and its console blocks are real output."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"
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


def profile_words(text: str) -> list[str]:
    """A profile's words, sorted, with its measurements taken out: the numbers, where each roof came from, which
    roof bounds a row (a roof raised by a row in cache moves the ridge) and the note that says a roof was raised.
    The table splits where its figures' widths say, so the words are compared in any order."""
    stream = re.sub(r"note: a module (moved|beat) .*? exceeds #%", "", masked(text))
    stream = re.sub(r"roofs: .*? ridge", "roofs: <measured> ridge", stream).replace("+#%", "#%").replace("-#%", "#%")
    return sorted(re.sub(r"\b(compute|memory)\b", "<bound>", stream).split())


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as a reader's clone is when the README's examples run: tests/examples/ in it, and the checkpoint
    `python tests/examples/checkpoint.py` writes, written by that command."""
    folder = tmp_path_factory.mktemp("clone")
    (folder / "tests").mkdir()
    (folder / "tests" / "examples").symlink_to(ROOT / "tests" / "examples", target_is_directory=True)
    subprocess.run([sys.executable, "tests/examples/checkpoint.py"], cwd=folder, check=True, capture_output=True)
    assert (folder / "run" / "checkpoint.pth").is_file()
    return folder


@pytest.mark.parametrize("command", [c for c, _ in _blocks()])
def test_console_block_is_real_output(command, request, monkeypatch, clone):
    from typer.testing import CliRunner

    from cnnprobe.cli import app

    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.chdir(clone)
    result = CliRunner().invoke(app, shlex.split(command)[1:])
    assert result.exit_code == 0, result.stderr
    actual = "\n".join(line.rstrip() for line in result.stdout.splitlines()) + "\n"
    text = README.read_text()
    expected = dict(_blocks())[command]
    if request.config.getoption("--update-snapshots"):
        README.write_text(text.replace(f"$ {command}\n{expected}```", f"$ {command}\n{actual}```"))
        return
    if command.startswith("cnnprobe profile"):  # measured, and its table splits where the figures' widths say
        assert profile_words(actual) == profile_words(expected), f"README block for `{command}` differs:\n{actual}"
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


# ---------------------------------------------------------------- the Python block and the shell examples


def _section_blocks(language: str) -> list[tuple[str, str]]:
    """(the heading above it, its text) for every block of one language, in the README's order."""
    out, heading = [], ""
    for part in re.split(r"(```[a-z]*\n.*?```)", README.read_text(), flags=re.S):
        if part.startswith(f"```{language}\n"):
            out.append((heading, part[len(language) + 4:-3]))
        elif not part.startswith("```"):
            headings = re.findall(r"^#+ (.*)$", part, re.M)
            heading = headings[-1] if headings else heading
    return out


def _shown_values(code: str) -> list[tuple[str, object]]:
    """`expression   # value` lines: what the README says an expression evaluates to."""
    shown = []
    for line in code.splitlines():
        left, _, comment = line.partition("  #")
        try:
            tree = ast.parse(left.strip(), mode="eval")
            value = ast.literal_eval(comment.strip())
        except (SyntaxError, ValueError):
            continue
        shown.append((ast.unparse(tree), value))
    return shown


def test_shown_values_are_read_from_expression_lines_only():
    code = "x = f(1)   # a Summary: not a value\nx.a, x.b   # (1, [2])\nx.c   # 'text'\n"
    assert _shown_values(code) == [("(x.a, x.b)", (1, [2])), ("x.c", "text")]


@pytest.mark.slow
def test_the_python_block_runs_as_written(clone, monkeypatch):
    """Executed as a reader would paste it, in a clone where `python tests/examples/checkpoint.py` ran (the README
    says so above the block); every value a comment shows is what the expression gives."""
    import torch

    import cnnprobe

    blocks = _section_blocks("python")
    assert {heading for heading, _ in blocks} == {"Python API"}, blocks
    code = "\n".join(text for _, text in blocks)  # one session: later blocks use what earlier ones made
    assert "python tests/examples/checkpoint.py" in README.read_text().split("## Python API", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(clone)
    namespace: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)
    shown = _shown_values(code)
    assert len(shown) >= 5, shown
    for expression, value in shown:
        assert eval(expression, namespace) == value, expression
    assert isinstance(namespace["optimizer"], torch.optim.Adam)
    assert [g["lr"] for g in namespace["optimizer"].param_groups] == [1e-4, 1e-3]
    by_keywords = cnnprobe.flops("resnet18", input_size="3,128,128", batch=4, backward=True, freeze_except="layer4,fc")
    assert namespace["frozen"].to_dict() == by_keywords.to_dict()  # the records' block says so


def _shell_commands(section: str | None = None) -> list[str]:
    """The README's shell examples but the set-up commands, one command per entry (continued lines joined,
    trailing comments dropped)."""
    out = []
    for heading, text in _section_blocks("sh"):
        if heading == "Set up" or (section is not None and heading != section):
            continue
        for line in text.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+# .*$", "", line).strip()
            if command:
                out.append(command)
    return out


def _parse(args: list[str]) -> dict:
    """The CLI's own parser on a command line, nothing run: unknown options and bad values raise."""
    from typer.main import get_command

    from cnnprobe.cli import app

    group = get_command(app)
    command = group.get_command(group.context_class(group, info_name="cnnprobe"), args[0])
    assert command is not None, args
    return command.make_context(args[0], list(args[1:]), parent=group.context_class(group, info_name="cnnprobe")).params


TOUR = "Inputs of any shape, dtype and number"


@pytest.mark.slow
@pytest.mark.parametrize("command", _shell_commands(TOUR))
def test_the_tours_commands_run_as_written(command, clone, monkeypatch, cli):
    """From a clone's root, with the example models shipped in tests/examples/."""
    monkeypatch.chdir(clone)
    args = shlex.split(command)
    assert args[0] == "cnnprobe" and (clone / args[2].split(":")[0]).is_file(), command
    run = cli(*args[1:])
    assert run.exit_code == 0, run.stderr
    assert run.stdout.strip(), command


def test_the_tour_says_where_cnnprobe_comes_from():
    tour = README.read_text().split("## A short tour", 1)[1].split("```", 1)[0]
    assert ". .venv/bin/activate" in tour and "tests/examples/" in tour


# What the remaining shell examples need beyond a CPU and a few seconds: these are parsed by the CLI's own
# parser (every option exists, every value converts), and run elsewhere in the suite in small form.
NOT_RUN_HERE = {
    "--device cuda": "a GPU (tests/test_bench.py and tests/test_ddp.py run the CUDA paths where there is one)",
    "--nproc 2": "two ranks of resnet18 at 224 px for a minute or more (tests/test_ddp.py runs lenet's)",
    "--save base.json": "resnet18's whole sweep twice (benchmarks/test_training.py saves and compares a small one)",
    "--compare base.json": "the baseline the line above saves",
}


def test_the_parser_refuses_what_the_cli_refuses():
    assert _parse(["bench", "resnet18", "--batch", "8"])["batch"] == "8"
    for wrong in (["bench", "resnet18", "--batchh", "8"], ["bench", "resnet18", "--threshold", "x"], ["bnech", "x"]):
        with pytest.raises(Exception):  # noqa: B017  (click's usage errors: unknown option, bad value, command)
            _parse(wrong)


def test_every_other_shell_example_parses():
    commands = [c for c in _shell_commands() if c not in _shell_commands(TOUR)]
    assert len(commands) >= 8, commands
    for command in commands:
        args = shlex.split(command)
        if "pytest" in args:
            continue  # test_the_benchmark_commands_are_pytests_own
        start = args.index("cnnprobe") + 1  # after `-m` under torchrun and srun
        assert args[0] in ("cnnprobe", "torchrun", "srun"), command
        assert any(reason in command for reason in NOT_RUN_HERE) or args[0] != "cnnprobe", command
        params = _parse(args[start:])
        assert params["model"] == args[start + 1], command


@pytest.mark.slow
def test_the_benchmark_commands_are_pytests_own(tmp_path):
    """The two pytest-benchmark commands: every option they pass is one pytest (with pytest-benchmark) takes."""
    commands = [c for c in _shell_commands() if " -m pytest " in c]
    assert len(commands) == 2, commands
    for command in commands:
        args = shlex.split(command)
        assert args[:3] == [".venv/bin/python", "-m", "pytest"], command
        run = subprocess.run([sys.executable, *args[1:], "--collect-only", "-q", "-p", "no:cacheprovider",
                              f"--benchmark-storage={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert "test_step" in run.stdout
