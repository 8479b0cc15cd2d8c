"""Regenerate the committed CPU baseline: reports/bench-cpu.{md,json,png}.

    python -m benchmarks.report                  # two repeats of the sweep, about ten minutes on 2 cores
    python -m benchmarks.report --repeat 3       # more repeats: a better view of run-to-run drift

The sweep is the one pytest-benchmark tracks (benchmarks/test_training.py):
lenet, resnet18 and mobilenet_v3_small at small batches, every mode, all
threads. The whole sweep runs `--repeat` times; each mode keeps every repeat's
median and samples, so the JSON is a baseline `cnnprobe bench --compare` can
judge against, and the report states how far medians moved between repeats.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

REPORTS = Path(__file__).resolve().parent.parent / "reports"
SWEEP = {"lenet": [1, 8, 32], "resnet18": [1, 8], "mobilenet_v3_small": [1, 8]}


def machine() -> dict[str, object]:
    import torch

    from cnnprobe.training.devices import cpu_name

    return {
        "date": datetime.date.today().isoformat(), "cpu": cpu_name(), "logical_cpus": os.cpu_count(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "torchvision": __import__("torchvision").__version__, "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run_sweep(min_time: float, repeat: int) -> list[dict[str, object]]:
    from cnnprobe.benchmark.sweep import sweep
    from cnnprobe.training.config import BenchConfig

    models = list(SWEEP)
    runs = []
    config = BenchConfig(min_time=min_time, repeat=repeat)
    for model in models:  # one model at a time, so that each keeps its own batch list
        result = sweep([model], SWEEP[model], config, on_phase=lambda text: print(f"  {text}", flush=True))
        if result.failures or result.interrupted:
            raise SystemExit(f"sweep of {model} did not complete: {result.failures}")
        runs += [r.to_dict() for r in result.runs]
    return runs


def drift(runs: list[dict]) -> list[tuple[str, float]]:
    """How far each mode's repeat medians lie apart: (largest − smallest) / smallest."""
    out = []
    for run in runs:
        for m in run["results"]:
            medians = [r["median_ms"] for r in m["repeats"]]
            out.append((f"{run['model']} b{run['batch']} {m['mode']}", max(medians) / min(medians) - 1))
    return out


def relations(runs: list[dict]) -> list[str]:
    """What must hold of every run: shares of peak at most 100%, and peak memory ordered by mode
    (forward ≤ forward_backward; train_step ≥ forward_backward less the gradients zero_grad frees)."""
    broken = []
    for run in runs:
        r = {m["mode"]: m for m in run["results"]}
        name = f"{run['model']} b{run['batch']}"
        for m in run["results"]:
            if m["peak_share"] is not None and m["peak_share"] > 1:
                broken.append(f"{name} {m['mode']} at {100 * m['peak_share']:.1f}% of peak")
        fwd, fb, train = (r[k]["peak_memory_bytes"] for k in ("forward", "forward_backward", "train_step"))
        grads = r["forward_backward"]["memory_breakdown"]["gradients"]
        if not fwd <= fb:
            broken.append(f"{name}: forward {fwd} > forward_backward {fb} bytes")
        if not train >= fb - grads:
            broken.append(f"{name}: train_step {train} < forward_backward {fb} less gradients {grads} bytes")
    return broken


def write(runs: list[dict], info: dict[str, object]) -> None:
    from cnnprobe.benchmark.result import BenchResult
    from cnnprobe.core.formatting import nbytes
    from cnnprobe.report.files import plot_throughput, write_atomic

    data = {"machine": info, "runs": runs}
    write_atomic(REPORTS / "bench-cpu.json", json.dumps(data, indent=1) + "\n")
    results = [BenchResult.from_dict(run) for run in runs]
    plot_throughput(results, REPORTS / "bench-cpu.png")
    peaks = {run["peak"]["detail"]: run["peak"] for run in runs}  # type: ignore[index]
    moves = drift(runs)
    spread = sorted(v for _, v in moves)
    worst = max(moves, key=lambda kv: kv[1])
    broken = relations(runs)
    lines = [
        "# CPU baseline",
        "",
        f"Measured on {info['date']} with `python -m benchmarks.report --repeat {runs[0]['repeat']}`: {info['cpu']},",
        f"{info['logical_cpus']} logical CPUs, {info['threads']} threads, torch {info['torch']}, torchvision "
        f"{info['torchvision']}, Python {info['python']}.",
        "Peak for the % column: " + "; ".join(f"{p['tflops']:.3f} TFLOP/s ({p['source']}, {detail})"
                                               for detail, p in peaks.items()) + ".",
        "",
        "Each median comes from `cnnprobe bench`: warm-up steps, then torch.utils.benchmark runs repeated until the",
        "median is stable (IQR under 10% of it) or the time budget ends; the whole sweep ran "
        f"{runs[0]['repeat']} times and each",
        "median here is the median of the repeats' medians. fwd, bwd and opt are the medians of each phase, timed",
        "inside the same steps. Peak memory is the most tensor memory live at once in a steady-state step, counted",
        "storage by storage. The JSON beside this file is a baseline `cnnprobe bench --compare reports/bench-cpu.json`",
        "reads for one model and batch at a time.",
        "",
        "| model | batch | mode | median ms | IQR ms | fwd ms | bwd ms | opt ms | samples/s | TFLOP/s | % peak | "
        "peak memory | of it activations | predicted (cnnprobe memory) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        for m in run["results"]:  # type: ignore[union-attr]
            lines.append(
                f"| {run['model']} | {run['batch']} | {m['mode']} | {m['median_ms']:.3f} | {m['iqr_ms']:.3f} | "
                f"{_blank(m['forward_ms'])} | {_blank(m['backward_ms'])} | {_blank(m['optimizer_ms'])} | "
                f"{m['samples_per_s']:,.1f} | {m['tflops']:.4f} | {100 * m['peak_share']:.1f}% | "
                f"{nbytes(m['peak_memory_bytes'])} | {nbytes(m['memory_breakdown']['activations'])} | "
                f"{nbytes(m['predicted_peak_bytes'])} (×{m['predicted_peak_bytes'] / m['peak_memory_bytes']:.3f}) |"
            )
    lines += [
        "",
        "![throughput against batch size](bench-cpu.png)",
        "",
        "## Checks",
        "",
        "- No share of peak above 100%, and peak memory ordered by mode in every run (forward ≤ forward_backward;",
        "  train_step ≥ forward_backward less the gradients zero_grad frees): "
        + ("all hold." if not broken else "**broken**: " + "; ".join(broken)),
        "",
        "## Run-to-run drift",
        "",
        f"Between the repeats of the sweep, medians lay {100 * spread[len(spread) // 2]:.1f}% apart at the median and",
        f"{100 * worst[1]:.1f}% at most ({worst[0]}). `bench --compare` takes this drift into account: its",
        "interval on new/old resamples the repeats as well as the samples inside them (README, \"Tracking",
        "regressions\").",
        "",
        "| step | repeats apart |",
        "|---|---:|",
    ] + [f"| {name} | {100 * v:.1f}% |" for name, v in moves]
    write_atomic(REPORTS / "bench-cpu.md", "\n".join(lines) + "\n")
    if broken:
        raise SystemExit("broken: " + "; ".join(broken))


def _blank(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-time", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    info = machine()
    write(run_sweep(args.min_time, args.repeat), info)
    print(f"wrote {REPORTS / 'bench-cpu.md'}, .json and .png")


if __name__ == "__main__":
    main()
