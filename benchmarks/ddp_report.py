"""Regenerate reports/ddp-cpu.md: `cnnprobe bench --nproc` on this machine's CPU, gloo, one thread a rank.

    python -m benchmarks.ddp_report              # resnet18 and mobilenet_v3_small at 1 and 2 ranks, ~5 min

Each row is one `launch()` (what `bench --nproc N` runs): train_step timed across the ranks, the same step
under no_sync(), rank 0 alone on its device for the efficiency, and one all-reduce of the gradients.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
from pathlib import Path

REPORTS = Path(__file__).resolve().parent.parent / "reports"
MODELS = {"resnet18": 8, "mobilenet_v3_small": 16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-time", type=float, default=1.0)
    args = parser.parse_args()

    import torch

    from cnnprobe.benchmark.distributed.group import DistOptions
    from cnnprobe.benchmark.distributed.launcher import launch
    from cnnprobe.core.formatting import nbytes
    from cnnprobe.report.files import write_atomic
    from cnnprobe.training.config import BenchConfig
    from cnnprobe.training.devices import cpu_name

    rows = []
    for model, batch in MODELS.items():
        for ranks in (1, 2):
            config = BenchConfig(mode="train_step", threads=1, min_time=args.min_time, predict=False)
            print(f"  {model} b{batch} × {ranks} rank(s)", flush=True)
            result = launch(model, batch, config, ranks, DistOptions())
            rows.append((model, batch, ranks, result))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Data-parallel on the CPU (gloo)",
        "",
        f"`python -m benchmarks.ddp_report` on {datetime.date.today().isoformat()}: {cpu_name()}, "
        f"{os.cpu_count()} logical CPUs, torch {torch.__version__}, Python {platform.python_version()}; each rank one "
        "thread, started by torch's elastic launcher (`cnnprobe bench MODEL --nproc N --threads 1`); load average "
        f"{load:.1f} at the end of the run. Rows with fewer than 5 rounds (cut by `--max-time`) rest on too few "
        "rounds to judge and are marked noisy.",
        "",
        "| model | batch per rank | ranks | rounds | train_step ms (slowest rank) | IQR ms | one process ms | "
        "samples/s in all | efficiency [95% interval] | exposed comm ms [95% interval] | gradients all-reduced | "
        "all-reduce ms | GB/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, batch, ranks, r in rows:
        f = r.modes["train_step"]
        lines.append(
            f"| {model} | {batch} | {ranks} | {f['rounds']} | {f['median_ms']:.1f} | "
            f"{r.run.result('train_step').iqr_ms:.1f} | {f['single_process_ms']:.1f} | "
            f"{f['aggregate_samples_per_s']:.1f} | {_efficiency(f)} | {_exposed(f)} | {nbytes(r.allreduce_bytes)} | "
            + (f"{r.allreduce_ms:.1f} | {r.allreduce_gbps or 0:.2f} |" if ranks > 1 else "- | - |"))
    two = [r.modes["train_step"] for _, _, ranks, r in rows if ranks == 2]
    flagged = sum(f["scaling_efficiency_noise"] + f["comm_exposed_noise"] for _, _, _, r in rows
                  for f in [r.modes["train_step"]])
    lines += [
        "",
        "How it is measured: in each round the ranks time one block of the synchronised step, one of the same step "
        "under `no_sync()`, and rank 0 one block of the plain model alone while the others wait; efficiency (the "
        "plain step over the synchronised one) and exposed communication (the synchronised step less the no_sync "
        "one) are paired within each round, so load that moves between rounds moves both sides alike. The "
        "interval is a bootstrap of the median over rounds. A figure noise alone could make (efficiency above "
        "100%, exposed communication below zero) is printed as `noise`, never as a result: "
        f"{flagged} such figure(s) in these rows.",
        "",
        "What two cores can show. Each rank has a core of its own, so the 2-rank rows can scale: efficiency "
        + " and ".join(_efficiency(f) for f in two) + " of twice one process's throughput. The 1-rank rows show "
        "what DDP itself costs over the plain step (its wrapper and reducer, with nothing to talk to). The "
        "all-reduce column is one all-reduce of the gradients' size, timed alone; at one rank there is nothing to "
        "reduce. Every run checks that after a synchronised step all ranks hold identical gradients.",
        "",
        "What they cannot show: more than two ranks, a real network (loopback TCP has no wire), NCCL on GPUs, or "
        "contention between ranks for memory bandwidth on a larger machine. On a multi-GPU node or across nodes "
        "the same command (`--nproc`, or torchrun with `--ddp`) measures what matters there; these rows are not a "
        "forecast of it.",
    ]
    out = REPORTS / "ddp-cpu.md"
    write_atomic(out, "\n".join(lines) + "\n")
    print(f"wrote {out}")


def _efficiency(f: dict) -> str:
    low, high = f["scaling_efficiency_interval"]
    value = "noise" if f["scaling_efficiency_noise"] else f"{100 * f['scaling_efficiency']:.0f}%"
    return f"{value} [{100 * low:.0f}–{100 * high:.0f}%]"


def _exposed(f: dict) -> str:
    low, high = f["comm_exposed_interval_ms"]
    value = "noise" if f["comm_exposed_noise"] else f"{f['comm_exposed_ms']:.1f} ({100 * f['comm_exposed_share']:.0f}%)"
    return f"{value} [{low:.1f}, {high:.1f}]"


if __name__ == "__main__":
    main()
