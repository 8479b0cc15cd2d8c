"""Regenerate the committed CPU baseline: reports/bench-cpu.{md,json,png}.

    python -m benchmarks.report                  # the baseline, about five minutes on 2 cores
    python -m benchmarks.report --repeat 2       # also measure run-to-run noise (twice as long)

The sweep is the one pytest-benchmark tracks (benchmarks/test_training.py):
lenet, resnet18 and mobilenet_v3_small at small batches, every mode, all
threads. With --repeat, the sweep runs again and the report states how much
each median moved between runs: the noise that regression thresholds must clear.
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

    from cnnprobe.peak import device_name

    return {
        "date": datetime.date.today().isoformat(), "cpu": device_name("cpu"), "logical_cpus": os.cpu_count(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "torchvision": __import__("torchvision").__version__, "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run_sweep(min_time: float) -> list[dict[str, object]]:
    from cnnprobe.timing import BenchConfig, sweep

    runs = []
    for model, batches in SWEEP.items():
        result = sweep([model], batches, BenchConfig(min_time=min_time),
                       on_phase=lambda text: print(f"  {text}", flush=True))
        if result.failures or result.interrupted:
            raise SystemExit(f"sweep of {model} did not complete: {result.failures}")
        runs += [r.to_dict() for r in result.runs]
    return runs


def noise(first: list[dict], second: list[dict]) -> list[tuple[str, float]]:
    """Relative change of every median between two runs of the same sweep."""
    out = []
    for a, b in zip(first, second):
        for ra, rb in zip(a["results"], b["results"]):
            out.append((f"{a['model']} b{a['batch']} {ra['mode']}", rb["median_ms"] / ra["median_ms"] - 1))
    return out


def write(runs: list[dict], info: dict[str, object], moves: list[tuple[str, float]]) -> None:
    from cnnprobe.output import plot_throughput, write_atomic
    from cnnprobe.render import nbytes
    from cnnprobe.timing import BenchResult, ModeResult

    data = {"machine": info, "runs": runs}
    if moves:
        data["noise"] = dict(moves)
    write_atomic(REPORTS / "bench-cpu.json", json.dumps(data, indent=1) + "\n")
    results = [BenchResult(**{**r, "results": [ModeResult(**m) for m in r["results"]]})  # type: ignore[arg-type]
               for r in ({k: v for k, v in run.items() if k != "frozen_saving"} for run in runs)]
    plot_throughput(results, REPORTS / "bench-cpu.png")
    peak = runs[0]["peak"]
    lines = [
        "# CPU baseline",
        "",
        f"Measured on {info['date']} with `python -m benchmarks.report`: {info['cpu']}, {info['logical_cpus']} logical CPUs,",
        f"{info['threads']} threads, torch {info['torch']}, torchvision {info['torchvision']}, Python {info['python']}.",
        f"Peak for the % column: {peak['tflops']:.3f} TFLOP/s ({peak['source']}, {peak['detail']}).",  # type: ignore[index]
        "",
        "Each median comes from `cnnprobe bench`: warm-up steps, then torch.utils.benchmark runs repeated until the",
        "median is stable (IQR under 10% of it) or the time budget ends. The JSON beside this file is what",
        "`cnnprobe bench --compare reports/bench-cpu.json` reads for one model and batch at a time.",
        "",
        "| model | batch | mode | median ms | IQR ms | runs | samples/s | bwd ms | TFLOP/s | % peak | peak memory |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        for m in run["results"]:  # type: ignore[union-attr]
            lines.append(
                f"| {run['model']} | {run['batch']} | {m['mode']} | {m['median_ms']:.3f} | {m['iqr_ms']:.3f} | {m['runs']} | "
                f"{m['samples_per_s']:,.1f} | {_blank(m['backward_ms'])} | "
                f"{m['tflops']:.4f} | {100 * m['peak_share']:.1f}% | {nbytes(m['peak_memory_bytes'])} |"
            )
    lines += ["", "![throughput against batch size](bench-cpu.png)"]
    if moves:
        worst = max(moves, key=lambda kv: abs(kv[1]))
        spread = sorted(abs(v) for _, v in moves)
        lines += [
            "",
            "## Run-to-run noise",
            "",
            f"The same sweep, run twice back to back: the medians moved by {100 * spread[len(spread) // 2]:.1f}% at the",
            f"median and {100 * abs(worst[1]):.1f}% at most ({worst[0]}). Regression thresholds sit above this: see",
            "the README, \"Tracking regressions\".",
            "",
            "| step | change |",
            "|---|---:|",
        ] + [f"| {name} | {100 * v:+.1f}% |" for name, v in moves]
    write_atomic(REPORTS / "bench-cpu.md", "\n".join(lines) + "\n")


def _blank(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-time", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=1, choices=(1, 2))
    args = parser.parse_args()
    info = machine()
    runs = run_sweep(args.min_time)
    moves = noise(runs, run_sweep(args.min_time)) if args.repeat == 2 else []
    write(runs, info, moves)
    print(f"wrote {REPORTS / 'bench-cpu.md'}, .json and .png")


if __name__ == "__main__":
    main()
