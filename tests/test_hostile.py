"""The cases a careful user and a hostile file bring, each through the command line.

Models live in tests/hostile/models.py; crafted files are written at run time by tests/hostile/files.py.
Every case ends with the right result, or one clean error line and the right exit code; with --json, stdout
always parses as one JSON object, errors included.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from .conftest import one_error_line, stderr_lines, table_rows
from .hostile import files

MODELS = Path(__file__).parent / "hostile" / "models.py"
ROOT = Path(__file__).resolve().parent.parent
FAST = ["--min-time", "0.02", "--max-time", "0.1", "--warmup", "1", "--threads", "1"]


def model(name: str) -> str:
    return f"{MODELS}:{name}"


def json_error(run) -> dict:
    """An error in --json mode: one stderr line, and one JSON object on stdout saying the same."""
    assert run.exit_code != 0
    data = json.loads(run.stdout)
    assert set(data) == {"error", "exit_code"} and data["exit_code"] == run.exit_code
    assert len(stderr_lines(run.stderr)) == 1 and data["error"] in run.stderr
    return data


# ---------------------------------------------------------------- models and inputs


def test_lazy_layers_are_materialised_before_counting_and_freezing(cli):
    conv, fc = 3 * 8 * 9 + 8, 8 * 10 + 10  # LazyConv2d(8, 3) on 3 channels, LazyLinear(10) on 8 features
    s = cli("summary", model("Lazy"), "--input-size", "3,16,16", "--json").json()
    assert s["total_params"] == conv + fc
    f = cli("flops", model("Lazy"), "--input-size", "3,16,16", "--json").json()
    assert f["macs"] == 3 * 8 * 9 * 14 * 14 + 8 * 10
    t = cli("trainable", model("Lazy"), "--freeze-except", "fc", "--json").json()
    assert (t["before"]["trainable_params"], t["after"]["trainable_params"]) == (conv + fc, fc)


def test_a_conv1d_takes_its_input_of_rank_two(cli):
    r = cli("flops", model("Audio"), "--input-size", "1,10", "--json").json()
    assert r["input_size"] == [1, 1, 10] and r["macs"] == 1 * 4 * 3 * 8 + 4 * 2


def test_a_conv3d_takes_its_input_of_rank_four(cli):
    r = cli("summary", model("Video"), "--input-size", "3,4,8,8", "--json").json()
    assert r["input_size"] == [1, 3, 4, 8, 8] and r["macs"] == 3 * 4 * 27 * 4 * 8 * 8 + 4 * 2
    assert cli("summary", model("Video"), "--json").json()["input_size"] == [1, 3, 16, 112, 112]  # inferred


def test_token_ids_in_range(cli):
    inferred = cli("summary", model("TextCNN"), "--json").json()
    assert inferred["inputs"] == [{"shape": [128], "dtype": "int64", "range": [0, 100]}]  # the embedding's size
    given = cli("flops", model("TextCNN"), "--input-size", "20", "--input-dtype", "long", "--input-range", "0,50",
                "--json").json()
    assert given["inputs"] == [{"shape": [20], "dtype": "int64", "range": [0, 50]}]
    assert given["macs"] == 8 * 4 * 3 * 18 + 4 * 2
    run = cli("bench", model("TextCNN"), "--input-size", "20", "--input-dtype", "long", "--batch", "2", *FAST)
    assert run.exit_code == 0, run.stderr
    assert "2×20 int64 in [0, 100)" in run.stdout


def test_several_inputs(cli):
    r = cli("flops", model("TwoInputs"), "--input-size", "10", "--input-size", "6", "--json").json()
    assert [i["shape"] for i in r["inputs"]] == [[10], [6]] and r["macs"] == 10 * 4 + 6 * 4
    run = cli("bench", model("TwoInputs"), "--input-size", "10", "--input-size", "6", "--batch", "2", *FAST, "--json")
    assert run.exit_code == 0, run.stderr
    assert [m["mode"] for m in run.json()["results"]] == ["forward", "forward_backward", "train_step"]


def test_a_model_states_its_example_input(cli):
    r = cli("summary", model("StatesItsInput"), "--batch", "3", "--json").json()
    assert r["input_source"] == "stated" and [i["shape"] for i in r["inputs"]] == [[10], [6]]
    assert r["input_size"] == [3, 10]


@pytest.mark.parametrize("args, message", [
    (["--input-size", "10", "--input-size", "6", "--input-dtype", "float32", "--input-dtype", "float32",
      "--input-dtype", "long"], "3 --input-dtype for 2 inputs"),
    (["--input-dtype", "complex7"], "unknown --input-dtype 'complex7'"),
    (["--input-range", "5,1", "--input-dtype", "long"], "HIGH must be above LOW"),
    (["--input-range", "0,10"], "applies to integer inputs"),
])
def test_bad_input_descriptions(cli, args, message):
    assert message in one_error_line(cli("summary", model("TwoInputs"), *args))


def test_a_shared_module_appears_once_per_call_under_its_caller(cli):
    run = cli("summary", model("SharedReLU"), "--input-size", "3,8,8", "--depth", "4")
    rows = table_rows(run.stdout, until="total params")
    names = [r[0] for r in rows]
    assert names == ["stem", "blocks.0", "blocks.0.conv", "blocks.0.act", "blocks.1", "blocks.1.conv", "blocks.1.act",
                     "head"]
    top = [r for r, line in zip(rows, run.stdout.splitlines()[3:]) if not line.startswith(" ")]
    total = next(line.split()[-1] for line in run.stdout.splitlines() if line.startswith("total params"))
    assert sum(int(r[3].replace(",", "")) for r in top) == int(total.replace(",", ""))


def test_a_reused_layer_says_so_and_counts_its_parameters_once(cli):
    data = cli("summary", model("Recursive"), "--input-size", "3,8,8", "--json").json()
    conv = [layer for layer in data["layers"] if layer["name"] == "conv"]
    assert [(c["call"], c["calls"], c["params"]) for c in conv] == [(1, 3, 148), (2, 3, 0), (3, 3, 0)]
    assert sum(layer["params"] for layer in data["layers"]) == data["total_params"]
    assert sum(layer["macs"] for layer in data["layers"]) == data["macs"]
    text = cli("summary", model("Recursive"), "--input-size", "3,8,8").stdout
    assert "call 2/3" in text and "call 3/3" in text


def test_torchscript_submodules_agree_with_flops(cli):
    s = cli("summary", model("Scripted"), "--input-size", "3,8,8", "--depth", "1", "--json").json()
    f = cli("flops", model("Scripted"), "--input-size", "3,8,8", "--depth", "1", "--json").json()
    assert [layer["name"] for layer in s["layers"]] == ["stem", "body", "head"]  # in the order they ran
    assert {layer["name"]: layer["macs"] for layer in s["layers"]} == {m["name"]: m["macs"] for m in f["by_module"]}
    assert sum(layer["macs"] for layer in s["layers"]) == s["macs"] == f["macs"]
    assert sum(layer["params"] for layer in s["layers"]) == s["total_params"]


def test_a_model_that_must_run_for_real_is_refused_before_a_batch_that_cannot_fit(cli):
    reads_values = f"{Path(__file__).parent / 'data' / 'models.py'}:ReadsValues"
    for command in (["summary"], ["bench", "--mode", "forward"]):
        line = one_error_line(cli(*command, reads_values, "--batch", "1000000"))
        assert "runs for real on the CPU" in line and "use a smaller --batch" in line
    assert cli("summary", reads_values, "--batch", "2").exit_code == 0


@pytest.mark.parametrize("command", [["summary"], ["flops"], ["bench", *FAST, "--mode", "forward"]])
def test_what_a_model_prints_stays_out_of_json(cli, command):
    run = cli(*command, model("Chatty"), "--input-size", "4", "--json")
    assert run.exit_code == 0, run.stderr
    json.loads(run.stdout)  # one object and nothing else
    assert "forward of Chatty" in run.stderr


# ---------------------------------------------------------------- files


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    return folder, {**files.protocol_files(folder), **{f"runs_{k}": v for k, v in files.code_running(folder).items()}}


@pytest.mark.parametrize("name", ["p2", "p3", "p4", "p5", "p2_legacy", "p3_legacy", "p4_legacy", "p5_legacy"])
def test_every_pickle_protocol_is_read_safely(cli, crafted, name):
    from cnnprobe.weights.safeload import safe_load

    _, made = crafted
    loaded = safe_load(made[name])
    expected = files.lenet_state()
    assert not loaded.trusted and list(loaded.obj) == list(expected)
    assert all(torch.equal(loaded.obj[k], expected[k]) for k in expected)
    run = cli("checkpoint", str(made[name]), "--model", "lenet")
    assert run.exit_code == 0 and run.stderr == ""  # no torch warnings either
    assert "every key matches" in run.stdout


def test_a_protocol_4_training_checkpoint(cli, crafted):
    data = cli("checkpoint", str(crafted[1]["training_p4"]), "--json").json()
    assert data["format"] == "training_checkpoint" and data["epoch"] == 3 and data["optimizer"]["lr"] == [1e-3]


@pytest.mark.parametrize("name", ["runs_p0", "runs_p2", "runs_p4", "runs_zip_p4"])
def test_code_running_pickles_are_refused_naming_what_they_import(cli, crafted, name):
    folder, made = crafted
    line = one_error_line(cli("checkpoint", str(made[name])))
    assert "needs full unpickling" in line and "system" in line, line
    assert not (folder / files.MARKER_NAME).exists()


def test_a_zip_bomb_is_refused_before_it_inflates(cli, tmp_path):
    bomb = files.zip_bomb(tmp_path)
    assert bomb.stat().st_size < 4 * 2**20
    refusals = []
    for _ in range(2):
        start = time.perf_counter()
        line = one_error_line(cli("checkpoint", str(bomb)))
        refusals.append(time.perf_counter() - start)
        assert "zip bomb" in line and "1.0 GiB" in line
    # nothing was inflated: the refusal costs a fraction of inflating the member once, timed here right after
    # (in 16 MiB pieces, kept nowhere), so that both run under the machine's load of the moment
    start = time.perf_counter()
    with zipfile.ZipFile(bomb) as z, z.open("archive/data.pkl") as member:
        while member.read(1 << 24):
            pass
    inflating = time.perf_counter() - start
    assert min(refusals) < inflating / 4, (refusals, inflating)
    from cnnprobe.core.errors import WeightsError
    from cnnprobe.weights.safeload import pickle_globals

    with pytest.raises(WeightsError, match="zip bomb"):
        pickle_globals(bomb)


@pytest.mark.parametrize("loss, shown", [(float("nan"), "NaN"), (float("inf"), "Infinity"),
                                         (float("-inf"), "-Infinity"), (torch.tensor(1 + 2j), "(1+2j)")])
def test_values_json_cannot_hold_are_written_as_strings(cli, tmp_path, loss, shown):
    path = files.training_checkpoint(tmp_path, "odd_loss", loss=loss)
    run = cli("checkpoint", str(path), "--json")
    assert run.exit_code == 0, run.stderr
    assert json.loads(run.stdout)["loss"] == shown
    assert "NaN" not in run.stdout.replace('"NaN"', "")  # no bare NaN, which is not JSON


@pytest.mark.parametrize("optimizer, message", [
    ({"state": {}, "param_groups": [{"lr": "fast"}]}, "param group 0 has lr 'fast', not a number"),
    ({"state": {}, "param_groups": 5}, "param_groups is 5, not a list of groups"),
    ({"state": [1, 2], "param_groups": []}, "state is [1, 2], not a mapping"),
])
def test_a_malformed_optimizer_state_is_named(cli, tmp_path, optimizer, message):
    path = files.training_checkpoint(tmp_path, "bad_optimizer", optimizer_state_dict=optimizer)
    line = one_error_line(cli("checkpoint", str(path)))
    assert message in line
    assert cli("checkpoint", str(path)).exit_code == 2


def test_meta_weights_are_named(cli, tmp_path):
    path = files.meta_weights(tmp_path)
    assert "meta tensors" in cli("checkpoint", str(path)).stdout
    line = one_error_line(cli("summary", "lenet", "--weights", str(path)))
    assert "are meta tensors" in line
    assert cli("summary", "lenet", "--weights", str(path)).exit_code == 2


# ---------------------------------------------------------------- output files


@pytest.fixture
def failing_replace(monkeypatch):
    """The disk fills up at the last moment: the rename of the finished temporary file fails."""
    import errno

    def replace(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("cnnprobe.report.files.os.replace", replace)


def test_a_write_that_fails_at_the_end_keeps_the_results_and_leaves_no_temporary(cli, tmp_path, failing_replace):
    out = tmp_path / "out.csv"
    run = cli("bench", "lenet", "--mode", "forward", *FAST, "--csv", str(out))
    assert run.exit_code == 1
    assert "forward" in run.stdout and "median ms" in run.stdout  # the measured results are printed
    assert "No space left on device" in run.stderr and len(stderr_lines(run.stderr)) == 1
    assert list(tmp_path.iterdir()) == []  # no half file, no .tmp
    data = cli("bench", "lenet", "--mode", "forward", *FAST, "--save", str(out), "--json")
    assert data.exit_code == 1 and json.loads(data.stdout)["unwritten"]


def test_a_symlink_is_written_through(cli, tmp_path):
    target = tmp_path / "real.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert cli("bench", "lenet", "--mode", "forward", *FAST, "--csv", str(link)).exit_code == 0
    assert link.is_symlink() and target.read_text().startswith("model,device")


def test_modes_follow_the_umask_and_existing_files_keep_theirs(cli, tmp_path):
    old = os.umask(0o022)
    try:
        new = tmp_path / "new.json"
        existing = tmp_path / "existing.json"
        existing.write_text("{}")
        existing.chmod(0o640)
        assert cli("bench", "lenet", "--mode", "forward", *FAST, "--save", str(new), "--repeat", "1").exit_code == 0
        assert cli("bench", "lenet", "--mode", "forward", *FAST, "--save", str(existing), "--repeat", "1").exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(new.stat().st_mode) == 0o644
    assert stat.S_IMODE(existing.stat().st_mode) == 0o640


@pytest.mark.parametrize("args, message", [
    (["bench", "lenet", "--csv", "{tmp}/newdir/"], "a path ending in / is a folder"),
    (["bench", "lenet", "--csv", ""], "an output file name is empty"),
    (["bench", "lenet", "--csv", "{tmp}"], "it is a folder"),
    (["bench", "lenet", "--compare", ""], "--compare is empty"),
    (["summary", "lenet", "--weights", ""], "--weights is empty"),
    (["trainable", "resnet18", "--head", ""], "--head is empty"),
    (["summary", "lenet", "--input-size", ""], "malformed --input-size"),
])
def test_empty_and_folder_paths_are_errors(cli, tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert message in one_error_line(cli(*args))


# ---------------------------------------------------------------- exit codes and messages


@pytest.mark.parametrize("args, message", [
    (["summary", "lenet", "--input-size", "3,224,²"], "malformed --input-size"),
    (["summary", "lenet", "--input-size", "99999999999999999999"], "a size above"),
    (["summary", "lenet", "--batch", "99999999999999999999"], "--batch must be a positive integer"),
    (["bench", "lenet", "--batch", "99999999999999999999"], "--batch must be a positive integer below"),
    (["summary", "lenet", "--num-classes", "99999999999999999999"], "--num-classes must be a positive integer"),
    (["trainable", "resnet18", "--lr", "fc=1e-3", "--lr", "fc=1e-4"], "--lr names 'fc' twice"),
])
def test_input_the_user_can_fix_is_exit_2(cli, args, message):
    run = cli(*args)
    assert message in one_error_line(run) and run.exit_code == 2


def test_did_you_mean_suggests_only_names_that_work(cli):
    line = one_error_line(cli("summary", "file:resnet18"))
    assert "did you mean resnet18" in line and "file:resnet18?" not in line
    assert "did you mean torchvision:resnet18" in one_error_line(cli("summary", "torchvision:resnt18"))


def test_a_model_that_exits_is_its_failure(cli):
    line = one_error_line(cli("summary", model("ExitsInForward"), "--input-size", "4"))
    assert "called sys.exit(4)" in line and "models.py:ExitsInForward" in line
    line = one_error_line(cli("summary", model("exits_when_built")))
    assert "called sys.exit(5)" in line and "models.py" in line
    run = cli("bench", model("ExitsInForward"), "--input-size", "4", *FAST)
    assert "called sys.exit(4)" in one_error_line(run) and run.exit_code == 1


def test_a_model_without_parameters(cli):
    assert "has no parameters" in one_error_line(cli("bench", model("NoParameters"), "--input-size", "4", *FAST))
    assert cli("bench", model("NoParameters"), "--input-size", "4", "--mode", "forward", *FAST).exit_code == 0


def test_no_arguments_prints_help_and_no_empty_error(cli):
    run = cli()
    assert "Usage" in run.stdout + run.stderr and "cnnprobe: error:" not in run.stderr


def test_ctrl_c_in_any_command_is_one_interrupted_line(cli, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("cnnprobe.analysis.summary.summary", interrupted)
    run = cli("summary", "lenet")
    assert run.exit_code == 130 and run.stderr.strip() == "cnnprobe: interrupted"


@pytest.mark.parametrize("args", [["summary", "lenett"], ["summary", "lenet", "--input-size", "3,x"],
                                  ["bench", "lenet", "--batch", "0"], ["checkpoint", "/nonexistent.pth"],
                                  ["flops", "resnet18", "--counter", "thop"]])
def test_json_errors_are_json_too(cli, args):
    json_error(cli(*args, "--json"))


def _cnnprobe(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnprobe", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=120, **kwargs)


def test_stdout_that_cannot_be_written(tmp_path):
    with open("/dev/full", "w") as full:
        run = subprocess.run([sys.executable, "-m", "cnnprobe", "summary", "lenet"], stdout=full,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        "cnnprobe: error: cannot write to standard output: No space left on device"]


def test_stdout_in_an_encoding_without_our_symbols():
    run = _cnnprobe("summary", "lenet", env={"PYTHONIOENCODING": "ascii"})
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert "encoding (ascii)" in run.stderr and "PYTHONIOENCODING=utf-8" in run.stderr
    assert json.loads(_cnnprobe("summary", "lenet", "--json", env={"PYTHONIOENCODING": "ascii"}).stdout)


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0])
def test_ctrl_c_while_the_command_line_loads(delay):
    """Whenever Ctrl-C comes (even inside an import that swallows KeyboardInterrupt): one line, and the exit
    status a shell reads as 130 (Python may end by the signal itself, which the shell reports as 128 + 2)."""
    process = subprocess.Popen([sys.executable, "-m", "cnnprobe", "summary", "vit_h_14"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode in (130, -signal.SIGINT), (process.returncode, err)
    assert err.strip().splitlines()[-1] == "cnnprobe: interrupted"


@pytest.mark.parametrize("name", ["StatesItsInput", "ExampleMethod", "ExampleClassmethod", "ExampleProperty",
                                  "ExampleAttribute", "example_factory"])
@pytest.mark.parametrize("command", ["summary", "flops", "trainable"])
def test_example_input_in_every_form(cli, name, command):
    """A staticmethod, classmethod, instance method, property, attribute or a factory's callable: each states
    the input, in every command (an instance method is called on the instance, not on the class)."""
    run = cli(command, model(name), "--json")
    assert run.exit_code == 0, run.stderr
    r = run.json()
    shapes = [i["shape"] for i in r["inputs"]]
    assert shapes == ([[10], [6]] if name == "StatesItsInput" else [[3, 16, 16]])  # not a Conv2d's 3×224×224
    if command == "summary":  # the one command whose JSON says where its input came from
        assert r["input_source"] == "stated"


def test_an_example_input_that_fails_is_one_line(cli):
    line = one_error_line(cli("summary", model("ExampleFails")))
    assert "example_input" in line and "RuntimeError: no data here" in line


# LazyFlat by hand: a 3x3 conv 3->8 with bias, then a linear from 8 x (side-2)^2 features to 10.
def lazy_flat_params(side: int) -> int:
    return 3 * 8 * 9 + 8 + 8 * (side - 2) ** 2 * 10 + 10


@pytest.mark.parametrize("command, extra, total", [
    ("summary", [], lambda r: r["total_params"]),
    ("trainable", [], lambda r: r["total_params"]),
    ("flops", [], lambda r: r["macs"] and None),
    ("memory", ["--mode", "forward"], lambda r: r["total_params"]),
    ("bench", ["--mode", "forward", *FAST], lambda r: r["total_params"]),
])
def test_every_command_sizes_lazy_layers_with_the_input_given(cli, command, extra, total):
    """Each command that gives lazy layers their shapes takes the input options and says which input it used."""
    assert lazy_flat_params(32) == 72_234 and lazy_flat_params(224) == 3_942_954
    for size, side in ((["--input-size", "3,32,32"], 32), ([], 224)):
        run = cli(command, model("LazyFlat"), *size, *extra, "--json")
        assert run.exit_code == 0, run.stderr
        r = run.json()
        if total(r) is not None:
            assert total(r) == lazy_flat_params(side)
        said = [n for n in r["notes"] if "lazy layers" in n]
        assert len(said) == 1 and f"3×{side}×{side}" in said[0], r["notes"]
        assert ("--input-size sets it" in said[0]) is (not size)


def test_compare_and_checkpoint_size_lazy_layers_with_the_input_given(cli, tmp_path):
    from cnnprobe.models.build import build_model

    path = tmp_path / "lazy32.pt"
    torch.save(build_model(model("LazyFlat"), input_size="3,32,32", device="cpu").module.state_dict(), path)
    fits = cli("checkpoint", str(path), "--model", model("LazyFlat"), "--input-size", "3,32,32", "--json").json()
    assert fits["compatibility"]["compatible"] and "3×32×32" in fits["model_notes"][0]
    default = cli("checkpoint", str(path), "--model", model("LazyFlat"), "--json").json()
    assert not default["compatibility"]["compatible"] and "3×224×224" in default["model_notes"][0]
    r = cli("compare", model("LazyFlat"), model("LazyFlat"), "--input-size", "3,32,32", "--json").json()
    assert r["a"]["params"] == r["b"]["params"] == lazy_flat_params(32)
    assert sum("lazy layers" in n and "3×32×32" in n for n in r["notes"]) == 2


@pytest.mark.parametrize("head", ["linear(99999999999999999999)", "linear(1e30)", "linear(512,99999999999)"])
def test_a_head_too_wide_is_a_usage_error(cli, head):
    line = one_error_line(cli("trainable", "resnet18", "--head", head))
    assert "--head" in line and "wide" in line


def test_fvcore_on_an_input_the_cpu_cannot_hold_is_a_usage_error(cli):
    run = cli("flops", "lenet", "--counter", "fvcore", "--input-size", "1,200000,200000")
    assert run.exit_code == 2, run.stderr
    line = one_error_line(run)
    assert "--counter torch" in line and "1×1×200000×200000" in line


@pytest.mark.parametrize("command", ["summary", "trainable", "memory"])
def test_num_classes_on_a_lazy_model_replaces_the_head_once_it_has_its_shape(cli, command):
    """The lazy layers are sized first, then the head is replaced: a LazyLinear's input width is known."""
    run = cli(command, model("Lazy"), "--num-classes", "3", "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["total_params"] == 3 * 8 * 9 + 8 + 8 * 3 + 3


def test_an_example_input_of_a_dtype_cnnprobe_cannot_make_is_one_line(cli):
    line = one_error_line(cli("summary", model("ExampleComplex")))
    assert "example_input of ExampleComplex" in line and "complex64" in line


@pytest.mark.parametrize("command", ["summary", "trainable"])
def test_lazy_layers_of_a_model_that_reads_values_are_sized_for_real(cli, command):
    """Meta tensors hold no values: the lazy layers are sized on a real CPU copy, with the input given."""
    run = cli(command, model("LazyReadsValues"), "--input-size", "3,8,8", "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["total_params"] == 3 * 4 * 9 + 4 + 4 * 6 * 6 * 3 + 3
