"""Files that would exhaust memory, the stack or the terminal if read naively, crafted at run time.

Every bomb goes through the real command line in a child process that reports its own peak resident memory
(VmHWM): each must end in one clean line, exit 2, under 1 GB. The budget is the file's
own size (64 MiB plus 8 times what it holds on disk), so an ordinary checkpoint is never refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from .conftest import one_error_line
from .hostile import bombs, files

ROOT = Path(__file__).resolve().parent.parent
GB = 10**9
FAST = ["--min-time", "0.02", "--max-time", "0.1", "--warmup", "1", "--threads", "1"]


# The child reports its own high-water mark (VmHWM, reset at exec) as it exits: wait4's ru_maxrss would also
# count the pages of the forking test process, torch and all.
_MEASURED = """import os, runpy, sys
try:
    sys.argv[0] = "cnnprobe"
    runpy.run_module("cnnprobe", run_name="__main__")
finally:
    with open("/proc/self/status") as status, open(os.environ["CNNPROBE_TEST_HWM"], "w") as out:
        out.write(next(line for line in status if line.startswith("VmHWM")).split()[1])
"""


def run_measured(*args: str) -> tuple[int, str, str, int]:
    """(exit status, stdout, stderr, peak RSS in bytes) of `python -m cnnprobe ARGS` in a child of its own."""
    with tempfile.TemporaryDirectory() as folder:
        hwm = Path(folder) / "hwm"
        run = subprocess.run([sys.executable, "-c", _MEASURED, *args], capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "CNNPROBE_TEST_HWM": str(hwm)}, timeout=600)
        return run.returncode, run.stdout, run.stderr, int(hwm.read_text()) * 1024


BOMBS = {
    "memoize_stored": (lambda d: bombs.memoize(d, "stored"), "memoizes more than"),
    "memoize_deflated": (lambda d: bombs.memoize(d, "deflated", 15_000_000), "memoizes more than"),
    "memoize_deflated_20m": (lambda d: bombs.memoize(d, "deflated"), "zip bomb"),
    "memoize_legacy": (lambda d: bombs.memoize(d, "legacy"), "memoizes more than"),
    "bytearray8_4g_stored": (lambda d: bombs.bytearray8(d, "stored", 4 * bombs.GiB), "BYTEARRAY8 at byte 2 declaring 4.0 GiB"),
    "bytearray8_4g_legacy": (lambda d: bombs.bytearray8(d, "legacy", 4 * bombs.GiB), "BYTEARRAY8 at byte 2 declaring 4.0 GiB"),
    "bytearray8_1g_deflated": (lambda d: bombs.bytearray8(d, "deflated", bombs.GiB), "BYTEARRAY8 at byte 2 declaring 1.0 GiB"),
    "bytearray8_1g_legacy": (lambda d: bombs.bytearray8(d, "legacy", bombs.GiB), "BYTEARRAY8 at byte 2 declaring 1.0 GiB"),
    "storages_legacy_sparse": (lambda d: bombs.storages(d, "legacy"), "storage declaring 1.0 GiB"),
    "storages_zip": (lambda d: bombs.storages(d, "stored"), "storage declaring 1.0 GiB"),
    "many_members": (bombs.many_members, "declares 150,000 zip members"),
    "overlapping": (bombs.overlapping, "zip members that overlap"),
}


# `--weights` reads through the same preflight as `checkpoint`: one bomb of each family proves that path (each
# command is a child process of its own, a few seconds apiece)
THROUGH_WEIGHTS = {"memoize_stored", "bytearray8_4g_legacy", "storages_zip", "many_members"}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BOMBS))
def test_a_memory_bomb_is_refused_in_one_line_under_1_gb(tmp_path, name):
    make, message = BOMBS[name]
    path = make(tmp_path)
    assert path.stat().st_blocks * 512 < 32 * 2**20  # what the file holds on disk
    if name == "storages_legacy_sparse":  # the file claims 3 GiB, its disk blocks hold a few kilobytes
        assert path.stat().st_size > 3 * bombs.GiB and path.stat().st_blocks * 512 < 2**20
    commands = [["checkpoint", str(path)]]
    if name in THROUGH_WEIGHTS:
        commands.append(["summary", "lenet", "--weights", str(path)])
    for args in commands:
        code, _, err, peak = run_measured(*args)
        assert code == 2, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "refusing" in lines[0], lines
        assert peak < GB, f"{name} {args[0]}: peak RSS {peak / 2**20:.0f} MiB"


def test_the_budget_follows_the_file_and_ordinary_files_pass(tmp_path):
    from cnnprobe.core.errors import WeightsError
    from cnnprobe.weights.safeload import preflight, safe_load

    MiB = 2**20
    for fmt in ("stored", "legacy"):
        preflight(bombs.storages(tmp_path, fmt, declared=3 * 20 * MiB, sparse=False))  # 60 MiB in a 1 KiB file
        with pytest.raises(WeightsError, match="storage declaring 30.0 MiB"):  # 90: the second one is refused
            preflight(bombs.storages(tmp_path, fmt, declared=3 * 30 * MiB, sparse=False))
    padded = bombs.storages(tmp_path, "legacy", declared=3 * 30 * MiB, sparse=False)
    with padded.open("ab") as f:
        f.write(os.urandom(4 * MiB))  # 4 MiB the file really holds: 32 MiB more of budget
    preflight(padded)
    state = files.lenet_state()
    for proto in (2, 4):
        for zipped in (True, False):
            path = tmp_path / f"lenet_{proto}_{zipped}.pth"
            torch.save(state, path, pickle_protocol=proto, _use_new_zipfile_serialization=zipped)
            preflight(path)
            assert all(torch.equal(safe_load(path).obj[k], state[k]) for k in state)


def test_declared_lengths_are_refused_before_they_are_read():
    import io

    from cnnprobe.weights.pickles import Budget, TooLarge, audit

    budget = Budget(2**20)
    stream = io.BytesIO(b"\x80\x05\x96" + (2**40).to_bytes(8, "little") + b"\0" * 16 + b".")
    with pytest.raises(TooLarge, match="BYTEARRAY8 at byte 2 declaring 1.0 TiB"):
        audit(stream, budget, {})
    assert stream.tell() == 11  # the opcode and its length, not a byte of what it declared
    assert budget.left == 2**20 - 11 - 32  # the 11 bytes read and the PROTO opcode's object


# ---------------------------------------------------------------- nesting, markup, odd values


@pytest.mark.parametrize("field", ["loss", "epoch", "lr", "param_groups", "state"])
def test_a_checkpoint_nested_100000_deep_is_one_line(cli, tmp_path, field):
    path = bombs.nested(tmp_path, field)
    for args in (["checkpoint", str(path)], ["summary", "lenet", "--weights", str(path)]):
        run = cli(*args)
        assert run.exit_code == 2 and "nested more than 1,000 deep" in one_error_line(run)
    run = cli("checkpoint", str(path), "--json")
    assert run.exit_code == 2 and "nested more than 1,000 deep" in run.json()["error"]


def test_a_checkpoint_nested_within_bounds_prints_briefly(cli, tmp_path):
    path = bombs.nested(tmp_path, "loss", depth=900)
    run = cli("checkpoint", str(path), "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["loss"] == "[[[[...]]]]"


def test_a_tuple_key_nested_200000_deep_is_refused_not_a_crash(tmp_path):
    path = tmp_path / "tuple_key.pth"
    deep_key = b"N" + b"\x85" * 200_000  # None, then TUPLE1 again and again: hashing it overflowed the C stack
    bombs._zip(path, {"archive/data.pkl": b"\x80\x02}(" + deep_key + b"K\x01u.", "archive/version": b"3\n"})
    code, _, err, _ = run_measured("checkpoint", str(path))
    assert code == 2 and "nested more than 1,000 deep" in err and len(err.strip().splitlines()) == 1


MARKUP = {"epoch": "[red]red[/red]", "loss": "[/bold] :warning: [link=http://x]y[/link]", "[bold]key[/bold]": 1,
          ("a", "tuple"): 2}


def test_text_from_a_file_prints_literally(cli, tmp_path):
    path = tmp_path / "[bold]markup[dim].pth"
    torch.save({"model_state_dict": files.lenet_state(), **MARKUP}, path)
    run = cli("checkpoint", str(path))
    assert run.exit_code == 0, run.stderr
    for text in ("[red]red[/red]", "[/bold] :warning: [link=http://x]y[/link]", "[bold]key[/bold]",
                 "('a', 'tuple')", "[bold]markup[dim].pth"):
        assert text in run.stdout, text
    data = cli("checkpoint", str(path), "--json").json()
    assert data["loss"] == MARKUP["loss"] and "('a', 'tuple')" in data["keys"]


def test_markup_in_a_malformed_field_is_one_literal_line(cli, tmp_path):
    path = files.training_checkpoint(tmp_path, "bad", optimizer_state_dict={"state": {}, "param_groups": [
        {"lr": "[/red]"}]})
    assert "has lr '[/red]', not a number" in one_error_line(cli("checkpoint", str(path)))


def test_keys_json_cannot_hold_are_written_as_text(cli, tmp_path):
    path = files.training_checkpoint(tmp_path, "tuple_loss", loss={(1, 2): 3.0})
    data = cli("checkpoint", str(path), "--json").json()
    assert data["loss"] == "{(1, 2): 3.0}"
    from cnnprobe.report.console import json_text

    assert json.loads(json_text({(1, 2): {("a",): 1}, 3: 4})) == {"(1, 2)": {"('a',)": 1}, "3": 4}


class OddTensor(torch.Tensor):
    """A tensor whose size methods lie, as a trusted pickle's class may."""

    def numel(self):  # type: ignore[override]
        return "many"

    def element_size(self):  # type: ignore[override]
        return None


def test_sizes_come_from_torch_not_from_a_subclass(cli, tmp_path):
    state = {k: v.as_subclass(OddTensor) for k, v in files.lenet_state().items()}
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    run = cli("checkpoint", str(path), "--trust", "--json")
    assert run.exit_code == 0, run.stderr
    plain = files.lenet_state()
    assert run.json()["weights"]["params"] == sum(v.numel() for v in plain.values())
    assert run.json()["weights"]["bytes"] == sum(v.numel() * 4 for v in plain.values())


# ---------------------------------------------------------------- absurd options


@pytest.mark.parametrize("args, message", [
    (["summary", "lenet", "--input-size", "1048576,1048576,1048576"], "values in one sample, above"),
    (["memory", "lenet", "--input-size", "1,1048576,1048576,1048576"], "values in one sample, above"),
    (["trainable", "resnet18", "--head", "linear(99999999999)"], "in --head: a width above 16,777,216"),
    (["trainable", "resnet18", "--head", "linear(9999999999999999999)"], "in --head: a width above"),
])
def test_absurd_options_are_usage_errors(cli, args, message):
    run = cli(*args)
    assert message in one_error_line(run) and run.exit_code == 2


@pytest.mark.parametrize("command", [["memory"], ["bench", "--mode", "forward", *FAST]])
def test_an_input_the_model_rejects_while_predicting_memory_is_its_forward_failure(cli, command):
    run = cli(*command, "lenet", "--input-size", "3,32,32")  # lenet takes one channel
    assert "forward pass of lenet failed" in one_error_line(run) and run.exit_code == 1  # a ForwardError, not 3


def test_an_input_too_large_to_allocate_is_a_usage_error():
    from cnnprobe.core.errors import InputSizeError
    from cnnprobe.models.inputs import InputSpec

    with pytest.raises(InputSizeError, match="cannot be allocated on cpu: use a smaller --input-size or --batch"):
        InputSpec((60000, 60000)).make(100_000, "cpu")  # 1.3 PiB: malloc refuses at once
    with pytest.raises(InputSizeError, match="overflows a tensor's storage"):
        InputSpec((60000, 60000)).make(2**40, "meta")


# ---------------------------------------------------------------- JSON the program reads


def _baseline(tmp_path: Path, cli) -> dict:
    path = tmp_path / "base.json"
    assert cli("bench", "lenet", "--mode", "forward", *FAST, "--repeat", "1", "--save", str(path)).exit_code == 0
    return json.loads(path.read_text())


def test_a_500_mb_baseline_is_refused_unread(tmp_path):
    path = tmp_path / "huge.json"
    with path.open("wb") as f:
        f.write(b'{"runs": [')
        f.truncate(500 * 10**6)  # a real 500 MB file, written in no time (its tail is a hole)
    code, _, err, peak = run_measured("bench", "lenet", "--compare", str(path))
    assert code == 2 and "is 476.8 MiB, above the 64.0 MiB" in err and len(err.strip().splitlines()) == 1
    assert peak < GB


def test_a_baseline_nested_100000_deep_is_refused(cli, tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"runs": ' + "[" * 100_000 + "]" * 100_000 + "}")
    run = cli("bench", "lenet", "--compare", str(path))
    assert run.exit_code == 2 and "nests 100,001 levels deep" in one_error_line(run)


@pytest.mark.slow
def test_a_baseline_of_a_million_samples_is_thinned_not_bootstrapped_whole(cli, tmp_path):
    data = _baseline(tmp_path, cli)
    result = data.get("runs", [data])[0]["results"][0]
    median = result["median_ms"]
    million = [median * (1 + 0.01 * ((i % 7) - 3)) for i in range(1_000_000)]
    for r in [result, *result.get("repeats", [])]:
        r["samples_ms"] = million
    path = tmp_path / "million.json"
    path.write_text(json.dumps(data))
    code, out, err, peak = run_measured("bench", "lenet", "--mode", "forward", *FAST, "--repeat", "1",
                                        "--compare", str(path), "--threshold", "1000")
    assert code == 0, err
    assert "1,000,000 samples in a repeat; 4,096 of them, evenly spaced, are judged" in out
    assert peak < GB


def test_thinning_keeps_samples_evenly_spaced_in_time_order():
    from cnnprobe.benchmark.regression import MAX_SAMPLES, _thin

    repeat = {"samples_ms": [float(i) for i in range(1, 10 * MAX_SAMPLES + 1)]}
    _thin(repeat)
    kept = repeat["samples_ms"]
    assert len(kept) == MAX_SAMPLES and repeat["samples_thinned_from"] == 10 * MAX_SAMPLES
    assert kept[:3] == [1.0, 11.0, 21.0] and all(b - a == 10 for a, b in zip(kept, kept[1:]))
    few = {"samples_ms": [1.0, 2.0]}
    _thin(few)
    assert few == {"samples_ms": [1.0, 2.0]}


@pytest.mark.parametrize("content", ["[" * 100_000 + "]" * 100_000, '{"x": "' + "a" * (5 * 2**20) + '"}'])
def test_a_peak_cache_too_deep_or_too_large_is_ignored_and_rewritten(tmp_path, monkeypatch, content):
    from cnnprobe.core import cache
    from cnnprobe.runtime import flops_peak as peak

    monkeypatch.setenv("CNNPROBE_CACHE", str(tmp_path))
    target = tmp_path / peak.CACHE
    target.write_text(content)
    assert cache.load(peak.CACHE) == {}
    cache.store(peak.CACHE, {"key": {"tflops": 1.0}})
    assert json.loads(target.read_text()) == {"key": {"tflops": 1.0}}  # rewritten, the hostile content gone


def test_a_bench_run_over_a_deep_peak_cache_rewrites_it(cli, tmp_path, monkeypatch):
    from cnnprobe.runtime import flops_peak as peak

    monkeypatch.setenv("CNNPROBE_CACHE", str(tmp_path))
    (tmp_path / peak.CACHE).write_text("[" * 100_000 + "]" * 100_000)
    run = cli("bench", "lenet", "--mode", "forward", *FAST, "--json")
    assert run.exit_code == 0, run.stderr
    assert isinstance(json.loads((tmp_path / peak.CACHE).read_text()), dict)
