"""The CUDA checks, as one script: writes reports/bench-cuda-<gpu>.md (and its JSON).

    python -m benchmarks.cuda_report                 # the whole matrix, about 6 to 9 minutes on an H100/H200
    python -m benchmarks.cuda_report --quick         # resnet18 only, batch 64: a smoke test

Matrix: resnet18 and resnet50; forward, forward_backward and train_step;
batch 64 and 256; float32, bfloat16, bfloat16 + channels_last, and
bfloat16 + channels_last + torch.compile. Each row gives samples/s, achieved
TFLOP/s and its share of the measured peak (the best bf16 or fp32 matmul on the
same GPU), with the share of the datasheet's dense peak (MFU) beside it where
the GPU is known; the phases (forward, backward, optimizer) are CUDA-event
medians inside the same steps; peak memory is `max_memory_allocated`.

It needs torch with CUDA, torchvision, rich, typer, torchinfo and fvcore
(`cnnprobe` imports the last two lazily; carry them as wheels where missing).
Run the CUDA tests alongside: `python -m pytest -m cuda tests benchmarks`.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

REPORTS = Path(__file__).resolve().parent.parent / "reports"
CONFIGS = [
    ("float32", False, False),
    ("bfloat16", False, False),
    ("bfloat16", True, False),
    ("bfloat16", True, True),
]


def main() -> None:
    import torch

    from cnnprobe.benchmark.sweep import sweep
    from cnnprobe.core.formatting import nbytes
    from cnnprobe.training.config import BenchConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--min-time", type=float, default=0.5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device here")
    gpu = torch.cuda.get_device_name()
    models = ["resnet18"] if args.quick else ["resnet18", "resnet50"]
    batches = [64] if args.quick else [64, 256]
    rows, runs, started = [], [], time.time()
    for dtype, channels_last, compiled in CONFIGS[: 2 if args.quick else None]:
        config = BenchConfig(device="cuda", dtype=dtype, channels_last=channels_last, compile=compiled,
                             min_time=args.min_time, max_time=4 * args.min_time)
        result = sweep(models, batches, config, on_phase=lambda text: print(f"  {text}", flush=True))
        label = dtype + (" + channels_last" if channels_last else "") + (" + compile" if compiled else "")
        for f in result.failures:
            rows.append(f"| {f.model} | {f.batch} | {label} | out of memory: {f.reason} | | | | | | |")
        for run in result.runs:
            runs.append({**run.to_dict(), "config": label})
            sheet = (run.peak or {}).get("datasheet") or {}
            for m in run.results:
                phases = " / ".join("-" if v is None else f"{v:.2f}" for v in (m.forward_ms, m.backward_ms, m.optimizer_ms))
                rows.append(
                    f"| {run.model} | {run.batch} | {label} | {m.mode} | {m.median_ms:.3f} ± {m.iqr_ms:.3f} | {phases} | "
                    f"{m.samples_per_s:,.0f} | {m.tflops or 0:.1f} | {100 * (m.peak_share or 0):.1f}% of "
                    f"{run.peak['tflops']:.0f} measured" + (f", MFU {100 * (m.datasheet_share or 0):.1f}% of "
                    f"{sheet['tflops']:.0f} datasheet" if sheet else "") + f" | {nbytes(m.peak_memory_bytes)} |"
                )
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
    first = runs[0] if runs else {}
    settings = first.get("settings", {})
    lines = [
        f"# CUDA benchmarks: {gpu}",
        "",
        f"`python -m benchmarks.cuda_report{' --quick' if args.quick else ''}` on {time.strftime('%Y-%m-%d')}, "
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, cudnn.benchmark {settings.get('cudnn_benchmark')}, "
        f"TF32 matmul {settings.get('tf32_matmul')}, cuDNN TF32 {settings.get('tf32_cudnn')}; "
        f"{time.time() - started:.0f} s in all.",
        "",
        "Medians and IQRs from torch.utils.benchmark (synchronised) after warm-up; lower precisions under autocast;",
        "TFLOP/s from the counted FLOPs of each step (forward, plus the counted backward).",
        "",
        "| model | batch | precision | mode | median ± IQR ms | fwd / bwd / opt ms | samples/s | TFLOP/s | share of peak |"
        " peak memory |",
        "|---|---:|---|---|---:|---:|---:|---:|---|---:|",
        *rows,
    ]
    out = REPORTS / f"bench-cuda-{slug}.md"
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"gpu": gpu, "runs": runs}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
