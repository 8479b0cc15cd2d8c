"""Every table keeps every figure whole at 80 and 60 columns, and the deterministic ones are snapshots whose
columns add up to their totals."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from .conftest import Run

REPORTS = Path(__file__).resolve().parent.parent / "reports"
FIGURE = re.compile(r"(?<![\w.])[-+×]?\d[\d,]*(?:\.\d+)?%?(?![\w.])")
UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def figures(text: str) -> set[str]:
    """Every number as printed: 11,689,512, 44.6, 76.2%, ×1.000, 1×3×224×224's parts."""
    return set(FIGURE.findall(text))


def value(cell: str) -> float:
    """A printed size or count back to a number: `243.5 KiB`, `1.814 G`, `11,689,512`, `-` for none."""
    if cell == "-":
        return 0.0
    number, _, unit = cell.partition(" ")
    return float(number.replace(",", "")) * UNITS.get(unit, 1)


def slack(cell: str) -> float:
    """Half the last printed digit of a size with one decimal: what rounding it may have taken off or added."""
    return 0.05 * UNITS.get(cell.partition(" ")[2], 10) if cell != "-" else 0.0


def rows(text: str, header: str) -> list[list[str]]:
    """The cells of the table whose header line starts with `header`: columns split on two spaces or more."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    assert lines[start + 1].startswith("─")
    out = []
    for line in lines[start + 2:]:
        if not line.strip() or line.startswith("─"):
            break
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) < 2:
            break
        out.append(cells)
    return out


@pytest.fixture
def wide_cli(monkeypatch: pytest.MonkeyPatch):
    """The CLI at a given terminal width."""
    from typer.testing import CliRunner

    from cnnprobe.cli import app

    def run(width: int, *args: str) -> Run:
        monkeypatch.setenv("COLUMNS", str(width))
        result = CliRunner().invoke(app, list(args))
        assert result.exit_code == 0, result.stderr
        return Run(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture(scope="module")
def lenet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from cnnprobe.models.classics.lenet import lenet

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("weights")
    torch.save(lenet().state_dict(), folder / "lenet.pth")
    return folder


COMMANDS = {
    "list": ["list", "resnet*"],
    "summary": ["summary", "resnet18", "--depth", "2"],
    "trainable": ["trainable", "resnet18", "--freeze-all", "--head", "linear(256),relu,linear(10)", "--lr",
                  "fc=1e-3"],
    "flops": ["flops", "resnet18", "--backward", "--freeze-except", "layer4,fc", "--depth", "1"],
    "memory": ["memory", "lenet", "--batch", "8", "--freeze-except", "classifier.5", "--device", "cuda"],
    "checkpoint": ["checkpoint", "lenet.pth", "--model", "lenet"],
    "compare": ["compare", "cnnprobe:resnet18", "resnet34", "--depth", "2"],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_cuts_a_figure_at_80_or_60_columns(command, wide_cli, lenet_file, monkeypatch):
    monkeypatch.chdir(lenet_file)
    wide = wide_cli(200, *COMMANDS[command]).stdout
    assert figures(wide)
    for width in (80, 60):
        narrow = wide_cli(width, *COMMANDS[command]).stdout
        assert "…" not in narrow
        assert figures(wide) <= figures(narrow), (width, sorted(figures(wide) - figures(narrow)))
        assert max(len(line) for line in narrow.splitlines()) <= width


def _baseline_sweep(count: int | None = None):
    from cnnprobe.benchmark.result import BenchResult, ModeResult, Repeat, Sweep

    runs = []
    for data in json.loads((REPORTS / "bench-cpu.json").read_text())["runs"][:count]:
        data = {k: v for k, v in data.items() if k != "frozen_saving"}
        data["results"] = [ModeResult(**{**m, "repeats": [Repeat(**r) for r in m["repeats"]]}) for m in data["results"]]
        runs.append(BenchResult(**data))
    return Sweep(runs=runs)


def _ddp_result():
    from cnnprobe.benchmark.distributed.interleaved import Interleaved, job_figures
    from cnnprobe.benchmark.distributed.result import DistResult, RankResult

    run = _baseline_sweep(1).runs[0]
    timed = Interleaved(ddp=[0.010, 0.011, 0.012], no_sync=[0.009, 0.0095, 0.01], single=[0.008, 0.011, 0.009],
                        own=[0.010, 0.011, 0.012])
    modes = {r.mode: job_figures(timed, 2, run.batch) for r in run.results}
    ranks = [RankResult(rank, rank, "a-rather-long-host-name", "cpu", 1, {
        m: {"median_ms": 10.0 + rank, "iqr_ms": 0.5, "peak_memory_bytes": 123456789} for m in modes}) for rank in (0, 1)]
    return DistResult(run, 2, "gloo", ranks, 2 * run.batch, 1234567, 1.5, None, True, modes)


def _rendered():
    from cnnprobe.benchmark.regression import compare
    from cnnprobe.report.bench import bench_lines
    from cnnprobe.report.ddp import ddp_lines
    from cnnprobe.report.regression import comparison_lines

    runs = [r.to_dict() for r in _baseline_sweep().runs]
    return {"bench sweep": lambda: bench_lines(_baseline_sweep()), "bench one run": lambda: bench_lines(
        _baseline_sweep(5).__class__(runs=_baseline_sweep(5).runs[4:])), "bench --compare": lambda: comparison_lines(
        compare(runs, runs)), "bench --nproc": lambda: ddp_lines(_ddp_result())}


def _render(pieces: list, width: int) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, highlight=False, soft_wrap=False, markup=False, emoji=False)
    for piece in pieces:
        console.print(piece)
    return out.getvalue()


@pytest.mark.parametrize("what", list(_rendered()))
def test_no_bench_table_cuts_a_figure_at_80_or_60_columns(what):
    pieces = _rendered()[what]()
    wide = _render(pieces, 200)
    assert "…" not in wide and figures(wide)
    for width in (100, 80, 60):
        narrow = _render(pieces, width)
        assert "…" not in narrow
        assert figures(wide) <= figures(narrow), (width, sorted(figures(wide) - figures(narrow)))
        assert max(len(line) for line in narrow.splitlines()) <= width


def test_a_split_table_repeats_the_rows_names_and_keeps_every_row():
    text = _render(_rendered()["bench sweep"](), 80)
    parts = [i for i, line in enumerate(text.splitlines()) if line.startswith("model ")]
    assert len(parts) >= 2  # 14 columns do not fit 80: several tables, each headed by model, batch and mode
    tables = [rows(text, line) for line in {text.splitlines()[i] for i in parts}]
    for table in tables:
        assert [r[:3] for r in table] == [r[:3] for r in tables[0]] and len(table) == 21
    assert rows(text, "model")[0][:3] == ["lenet", "1", "forward"]


def test_the_wide_layout_is_one_table():
    """Where the figures fit, nothing changes: one table, as before."""
    text = _render(_rendered()["bench sweep"](), 160)
    assert sum(line.startswith("model ") for line in text.splitlines()) == 2  # the timing and the memory check


# ---------------------------------------------------------------- snapshots, with their sums checked


def test_flops_snapshot_adds_up(cli, snapshot):
    args = ["flops", "resnet18", "--backward", "--freeze-except", "layer4,fc", "--depth", "1"]
    run = cli(*args)
    assert run.exit_code == 0, run.stderr
    snapshot("flops_resnet18_backward", run.stdout)
    data = cli(*args, "--json").json()
    for header, key, total in (("module ", "by_module", data["macs"]), ("operator ", "by_operator", data["macs"])):
        table = rows(run.stdout, header)
        assert len(table) == len(data[key])
        macs = sum(value(r[-3 if header == "operator " else -2]) for r in table)
        assert macs == pytest.approx(total, rel=2e-3)  # each cell rounded to 4 figures
        assert sum(value(r[-1].rstrip("%")) for r in table) == pytest.approx(100, abs=0.06 * len(table))
    assert sum(o["macs"] for o in data["by_operator"]) == data["macs"]
    backward = run.stdout.split("backward by operator", 1)[1]
    assert sum(value(r[1]) for r in rows(backward, "operator ")) == pytest.approx(data["backward_macs"], rel=2e-3)


def test_memory_snapshot_adds_up(cli, snapshot):
    """The prediction for CUDA: no operator's workspace is calibrated on this machine, so it is the same
    everywhere. Each row's categories add up to its peak, as the JSON's breakdown does."""
    args = ["memory", "lenet", "--batch", "8", "--freeze-except", "classifier.5", "--device", "cuda"]
    run = cli(*args)
    assert run.exit_code == 0, run.stderr
    snapshot("memory_lenet_cuda", run.stdout)
    data = cli(*args, "--json").json()
    table = rows(run.stdout, "mode ")
    assert len(table) == len(data["results"]) == 5
    for cells, result in zip(table, data["results"]):
        peak, parts = value(cells[2]), [value(c) for c in cells[3:]]
        assert len(parts) == 6
        assert sum(parts) + result["breakdown"]["buffers"] + result["breakdown"]["workspace"] == pytest.approx(
            peak, abs=sum(slack(c) for c in cells[2:]))
        assert sum(result["breakdown"].values()) == result["predicted_peak_bytes"]
        assert peak == pytest.approx(result["predicted_peak_bytes"], abs=slack(cells[2]))


def test_checkpoint_snapshot_adds_up(cli, snapshot, lenet_file, monkeypatch):
    monkeypatch.chdir(lenet_file)
    run = cli("checkpoint", "lenet.pth", "--model", "lenet")
    assert run.exit_code == 0, run.stderr
    snapshot("checkpoint_lenet", run.stdout)
    data = cli("checkpoint", "lenet.pth", "--model", "lenet", "--json").json()
    line = next(line for line in run.stdout.splitlines() if line.startswith("tensors"))
    tensors, values = (int(n.replace(",", "")) for n in re.findall(r"[\d,]+(?= holding| values)", line))
    dtypes = next(line for line in run.stdout.splitlines() if line.startswith("dtypes"))
    assert sum(int(n) for n in re.findall(r"×(\d+)", dtypes)) == tensors == data["weights"]["tensors"]
    assert values == data["weights"]["params"] == 61706  # LeNet-5's parameters


def test_compare_snapshot_adds_up(cli, snapshot):
    run = cli("compare", "cnnprobe:alexnet", "alexnet", "--depth", "2")
    assert run.exit_code == 0, run.stderr
    snapshot("compare_alexnet", run.stdout)
    for cells in rows(run.stdout, " " * 5)[:2]:  # params and trainable: B − A is the difference of the two
        a, b, change = (int(c.replace(",", "").replace("+", "")) for c in cells[1:])
        assert b - a == change


def test_list_snapshot_matches_the_json(cli, snapshot):
    run = cli("list", "resnet*")
    assert run.exit_code == 0, run.stderr
    snapshot("list_resnet", run.stdout)
    data = cli("list", "resnet*", "--json").json()["models"]
    table = rows(run.stdout, "source ")
    assert [(r[1], r[2], value(r[3])) for r in table] == [(m["name"], m["task"], m["params"]) for m in data]
    assert run.stdout.startswith(f"{len(data)} models")


# ---------------------------------------------------------------- one vocabulary, one formula


def test_memory_categories_are_one_enum_whose_values_are_the_json_keys(cli):
    from cnnprobe.core.enums import MemoryCategory
    from cnnprobe.memory.tracker import CATEGORIES
    from cnnprobe.report.memory import COLUMNS, category_label

    data = cli("memory", "lenet", "--batch", "2", "--device", "cuda", "--json").json()
    assert all(list(r["breakdown"]) == [c.value for c in MemoryCategory] for r in data["results"])
    tensors = tuple(c.value for c in MemoryCategory if c is not MemoryCategory.WORKSPACE)
    assert tensors == CATEGORIES  # the tracker's, derived from the enum
    assert category_label("optimizer_state") == "optimizer state" and category_label("a_new_key") == "a_new_key"
    assert MemoryCategory.WORKSPACE.label == "operators' workspaces"
    table = rows(cli("memory", "lenet", "--batch", "2", "--device", "cuda").stdout, "mode ")
    assert len(table[0]) == 2 + len(COLUMNS)  # mode, peak, one column per category shown


def test_share_of_peak_is_one_formula_for_a_run_and_for_merged_repeats():
    from dataclasses import replace

    from cnnprobe.benchmark.result import merge_repeats, share

    assert share(0.5, 2.0) == 0.25
    assert share(None, 2.0) is None and share(0.0, 2.0) is None and share(1.0, None) is None
    run = _baseline_sweep(1).runs[0]
    merged = merge_repeats([run, replace(run, results=[replace(r, median_ms=2 * r.median_ms) for r in run.results])])
    for r in merged.results:
        assert r.tflops is not None and r.peak_share == pytest.approx(r.tflops / run.peak["tflops"])
        assert r.noisy == (r.iqr_ms > 0.10 * r.median_ms)


def test_a_mark_in_the_table_comes_with_its_legend_and_only_then():
    from dataclasses import replace

    from cnnprobe.report.bench import bench_lines

    sweep = _baseline_sweep(1)
    calm = _render(bench_lines(sweep), 160)
    assert "!:" not in calm and "?:" not in calm
    run = sweep.runs[0]
    run.results = [replace(run.results[0], noisy=True), replace(run.results[1], few_blocks=True), *run.results[2:]]
    marked = _render(bench_lines(sweep), 160)
    cells = [r[2] for r in rows(marked, "mode ")]  # mode, median ms, IQR
    assert cells[0].endswith("!") and cells[1].endswith("?") and not cells[2].endswith(("!", "?"))
    assert "!: noisy, IQR above 10% of the median" in marked and "?: rests on fewer than 10 timed blocks" in marked
