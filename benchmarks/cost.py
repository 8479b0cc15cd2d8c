"""What inspection costs on top of importing torch and torchvision, measured in fresh processes.

Each measurement runs in its own interpreter: it imports torch and
torchvision, notes the time and resident memory, does one job, and reports
the seconds and the peak memory added. Jobs:

- `summary`: `cnnprobe.summary(MODEL)` (built on meta, torchinfo and the tracer in one pass);
- `flops`: `cnnprobe.flops(MODEL)`;
- `build`: the model built for real on the CPU, weights allocated, and nothing else (the least a real
  inspection costs);
- `real`: what inspection costs without meta: build the model for real and call torchinfo;
- `fvcore`, `flopcountermode`: the other counters, on real tensors as they need or are used.

    python -m benchmarks.cost vgg16 vit_h_14                 # summary, plus a real build of both
    python -m benchmarks.cost --all --out reports/inspect-cost.md
    python -m benchmarks.cost --counters --out reports/flop-counters.md
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from dataclasses import dataclass

_CHILD = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
import torch, torchvision
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
base_rss, base_t = rss(), time.perf_counter()
model, job = sys.argv[1], sys.argv[2]
gmacs = None

def real():
    from cnnprobe.models.registry import resolve
    spec = resolve(model)
    return spec.build().eval(), torch.zeros(1, *spec.input_shape)

if job == "summary":
    import cnnprobe
    gmacs = cnnprobe.summary(model).macs / 1e9
elif job == "flops":
    import cnnprobe
    gmacs = cnnprobe.flops(model).macs / 1e9
elif job == "build":  # the least a real inspection costs: the model built with its weights on the CPU
    m, x = real()
    gmacs = None
elif job == "real":  # inspection without meta: real weights, then torchinfo
    import torchinfo
    m, x = real()
    gmacs = torchinfo.summary(m, input_data=[x], verbose=0, device="cpu").total_mult_adds / 1e9
elif job == "fvcore":
    from fvcore.nn import FlopCountAnalysis
    m, x = real()
    with torch.no_grad():
        a = FlopCountAnalysis(m, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        gmacs = a.total() / 1e9
elif job == "flopcountermode":  # PyTorch's counter on real tensors, the usual way: under no_grad
    from torch.utils.flop_counter import FlopCounterMode
    m, x = real()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        m(x)
    gmacs = counter.get_total_flops() / 2 / 1e9
else:
    raise SystemExit(f"unknown job {job}")
seconds = time.perf_counter() - base_t
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork and exec
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "peak_mib": max(0, peak - base_rss) / 2**20,
                  "import_seconds": base_t - t0, "gmacs": gmacs}))
"""

JOBS = ("summary", "flops", "build", "real", "fvcore", "flopcountermode")


@dataclass
class Cost:
    model: str
    job: str
    seconds: float
    peak_mib: float
    import_seconds: float
    gmacs: float | None = None


def measure(model: str, job: str, threads: int = 1) -> Cost:
    """One job in a fresh interpreter; raises if it fails."""
    env = {"OMP_NUM_THREADS": str(threads), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", _CHILD, model, job], capture_output=True, text=True, env=env,
                            timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"{job} {model} failed: {result.stderr.strip().splitlines()[-1:]}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    return Cost(model, job, data["seconds"], data["peak_mib"], data["import_seconds"], data["gmacs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=["vgg16", "vit_h_14"])
    parser.add_argument("--all", action="store_true", help="every registered torchvision model")
    parser.add_argument("--jobs", default="summary", help="comma-separated: summary, flops, real")
    parser.add_argument("--real", default="vgg16,vit_h_14", help="models to also build for real with torchinfo")
    parser.add_argument("--counters", action="store_true",
                        help="compare FLOP counters: cnnprobe against fvcore, FlopCounterMode and torchinfo")
    parser.add_argument("--out", help="write a markdown report here")
    args = parser.parse_args()
    if args.counters:
        counters(args.models if args.models != parser.get_default("models") else COUNTER_MODELS, args.out)
        return

    models = args.models
    if args.all:
        from cnnprobe.models.registry import list_models

        models = [s.name for s in list_models("torchvision:*")]
    jobs = args.jobs.split(",")
    rows: list[Cost] = []
    for model in models:
        for job in jobs + (["real"] if model in args.real.split(",") else []):
            cost = measure(model, job)
            rows.append(cost)
            print(f"{model:22s} {job:16s} {cost.seconds:7.3f} s {cost.peak_mib:8.1f} MiB", flush=True)
    if args.out:
        write_report(rows, args.out)


def write_report(rows: list[Cost], path: str) -> None:
    import datetime

    import torch
    import torchvision

    from cnnprobe.training.devices import cpu_name as cpu_model

    jobs = sorted({r.job for r in rows})
    lines = [
        "# What inspection costs",
        "",
        "Seconds and peak resident memory added on top of importing torch and torchvision, each job in a",
        "fresh interpreter (`python -m benchmarks.cost`). `summary` builds on the meta device and runs",
        "torchinfo and the FLOP tracer in one pass; `real` builds the model with its weights and calls torchinfo.",
        "",
        f"- date: {datetime.date.today().isoformat()}",
        f"- machine: {cpu_model()}, {__import__('os').cpu_count()} logical CPUs, one thread",
        f"- torch {torch.__version__}, torchvision {torchvision.__version__}, Python {platform.python_version()}",
        "",
    ]
    by_model: dict[str, dict[str, Cost]] = {}
    for r in rows:
        by_model.setdefault(r.model, {})[r.job] = r
    header = "| model | " + " | ".join(f"{j} s | {j} MiB" for j in jobs) + " |"
    lines += [header, "|---" * (1 + 2 * len(jobs)) + "|"]
    for model, costs in by_model.items():
        cells = []
        for j in jobs:
            c = costs.get(j)
            cells += [f"{c.seconds:.3f}", f"{c.peak_mib:.0f}"] if c else ["", ""]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    summaries = [r for r in rows if r.job == "summary"]
    if summaries:
        over = [r for r in summaries if r.seconds > 0.5 or r.peak_mib > 100]
        lines += ["", f"summary: {len(summaries) - len(over)} of {len(summaries)} models within 0.5 s and 100 MiB; "
                  f"slowest {max(summaries, key=lambda r: r.seconds).model} at {max(r.seconds for r in summaries):.2f} s, "
                  f"most memory {max(r.peak_mib for r in summaries):.0f} MiB."]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


COUNTER_MODELS = ["resnet50", "mobilenet_v2", "efficientnet_b0", "vit_b_16", "vit_h_14"]


def counters(models: list[str], out: str | None) -> None:
    """Each counter's total, time and memory per model, against torchvision's published `_ops`."""
    from cnnprobe.models.registry import resolve

    jobs = ["flops", "fvcore", "flopcountermode", "real"]
    names = {"flops": "cnnprobe (meta)", "fvcore": "fvcore (real)", "flopcountermode": "FlopCounterMode (real, no_grad)",
             "real": "torchinfo (real)"}
    lines = [
        "# FLOP counters compared",
        "",
        "GMACs (multiply-accumulates, the unit of torchvision's `_ops`), seconds and peak memory above importing",
        "torch and torchvision, each counter in a fresh interpreter on the model at its default input.",
        "FlopCounterMode counts 2 per MAC; its figure is halved here. On real CPU tensors under `no_grad`,",
        "`nn.MultiheadAttention` takes its fused fast path (`_native_multi_head_attention`), which neither fvcore nor",
        "FlopCounterMode sees, so the ViTs lose their attention and projections; torchinfo counts no matmuls at all.",
        "Regenerate with `python -m benchmarks.cost --counters --out reports/flop-counters.md`.",
        "",
        "| model | published | " + " | ".join(names[j] for j in jobs) + " |",
        "|---|---:|" + "---:|" * len(jobs),
    ]
    for model in models:
        published = resolve(model).published_gmacs
        cells = []
        for job in jobs:
            c = measure(model, job)
            print(f"{model:18s} {job:16s} {c.gmacs:10.3f} GMACs {c.seconds:7.2f} s {c.peak_mib:8.0f} MiB", flush=True)
            err = f" ({100 * (c.gmacs - published) / published:+.1f}%)" if published and c.gmacs is not None else ""
            cells.append(f"{c.gmacs:.3f}{err}<br>{c.seconds:.2f} s, {c.peak_mib:.0f} MiB")
        lines.append(f"| {model} | {published:.3f} | " + " | ".join(cells) + " |")
    if out:
        with open(out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
