"""Regenerate reports/torchvision-parity.md: our counts against torchvision's published metadata.

    python -m benchmarks.parity            # writes reports/torchvision-parity.md

For every torchvision model of every task at its default input (the input
torchvision's own figure used: the weights' eval crop, 16-frame clips, a
detection model's 800×800 transform size, two 512×512 images for RAFT):
parameters against `num_params`, and GMACs against `_ops` (published as
"GFLOPS", but counted as multiply-accumulates). Where the figure cannot be
reproduced the report gives the reason kept in `cnnprobe.analysis.parity`,
and our count at the caps that reproduce it. Beside them, the backward pass
with everything trainable, at batch 2 (train-mode BatchNorm needs two samples),
for the models whose train step the tracer runs without targets: its MACs over
the train-mode forward's must lie in [1, 2], since each layer's weight
gradient costs its forward MACs and its input gradient the same again, except
the first layer's, which nothing needs.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from collections import Counter
from pathlib import Path

REPORT = Path(__file__).resolve().parent.parent / "reports" / "torchvision-parity.md"
RATIO_RANGE = (1.0, 2.0)
_BACKWARD_TASKS = ("classification", "detection", "optical_flow", "segmentation", "video")  # int8 does not train


def _inputs(report: object) -> str:
    """`3×224×224`, or `2× 3×512×512` for two inputs alike."""
    shapes = ["×".join(map(str, i["shape"])) for i in report.inputs]  # type: ignore[attr-defined]
    if len(shapes) > 1 and len(set(shapes)) == 1:
        return f"{len(shapes)}× {shapes[0]}"
    return " + ".join(shapes)


def _row(spec: object) -> dict[str, object]:
    import cnnprobe
    from cnnprobe.analysis.flops import within_published
    from cnnprobe.analysis.parity import exception
    from cnnprobe.analysis.probe import probe

    start = time.perf_counter()
    report = cnnprobe.flops(spec.qualified, depth=0)  # type: ignore[attr-defined]
    seconds = time.perf_counter() - start
    params = cnnprobe.summary(spec.qualified, depth=0).total_params  # type: ignore[attr-defined]  # as commands say
    ratio = None
    if spec.task.value in _BACKWARD_TASKS:  # type: ignore[attr-defined]
        ratio = cnnprobe.flops(spec.qualified, batch=2, backward=True, depth=0).backward_ratio  # type: ignore[attr-defined]
    gmacs = report.macs / 1e9
    published = float(spec.published_gmacs or 0.0)  # type: ignore[attr-defined]
    why = exception(spec.name)  # type: ignore[attr-defined]
    at_caps = None
    if why is not None:
        at_caps = probe(cnnprobe.build_model(spec, builder_options=why.reproduce)).tracer.total_flops / 2e9
    within = within_published(gmacs, published) if published else False
    return {
        "model": spec.name, "task": spec.task.value, "input": _inputs(report),  # type: ignore[attr-defined]
        "params": params, "published_params": spec.published_params,  # type: ignore[attr-defined]
        "gmacs": gmacs, "published_gmacs": published, "apart": sum(o.macs for o in report.separate_by_operator) / 1e9,
        "error": (gmacs - published) / published if published else 0.0, "within": within,
        "ok": params == spec.published_params and (within or why is not None),  # type: ignore[attr-defined]
        "exception": why, "at_caps": at_caps, "seconds": seconds, "backward_ratio": ratio,
        "ratio_ok": ratio is None or RATIO_RANGE[0] <= ratio <= RATIO_RANGE[1],
    }


def rows() -> list[dict[str, object]]:
    from cnnprobe.models.registry import list_models

    return [_row(spec) for spec in sorted(list_models("torchvision:*"), key=lambda s: (s.task.value, s.name))]


def _table(data: list[dict[str, object]]) -> list[str]:
    lines = [
        "| task | model | input | params | published num_params | GMACs | published _ops | difference | within |"
        " apart | backward/forward |",
        "|---|---|---|---:|---:|---:|---:|---:|:---:|---:|---:|",
    ]
    for r in data:
        within = "yes" if r["within"] else ("exception" if r["exception"] else "**no**")
        ratio = r["backward_ratio"]
        ratio_text = "-" if ratio is None else f"{float(ratio):.3f}" + ("" if r["ratio_ok"] else " **out of [1, 2]**")  # type: ignore[arg-type]
        params_text = f"{r['params']:,}" if r["params"] == r["published_params"] else f"**{r['params']:,}**"
        lines.append(
            f"| {r['task']} | {r['model']} | {r['input']} | {params_text} | {r['published_params']:,} | "
            f"{float(r['gmacs']):.4f} | {float(r['published_gmacs']):.3f} | {100 * float(r['error']):+.3f}% | "  # type: ignore[arg-type]
            f"{within} | {float(r['apart']):.3f} | {ratio_text} |"  # type: ignore[arg-type]
        )
    return lines


def _exceptions(data: list[dict[str, object]]) -> list[str]:
    lines = ["", "## Exceptions", "",
             "Counted on meta, every data-dependent selection keeps every candidate up to the model's caps (the most",
             "work it can do on any image). torchvision's figures are of one real image, on which a few models kept",
             "fewer candidates than their caps allow. Each reason is kept in `cnnprobe/analysis/parity.py`, which",
             "`tests/test_task_flops.py` checks: with the caps named, our count is the published figure.", ""]
    for r in data:
        why = r["exception"]
        if why is None:
            continue
        lines.append(f"- **{r['model']}**: {why.describe()} At those caps: "  # type: ignore[attr-defined]
                     f"{float(r['at_caps']):.4f} GMACs against {float(r['published_gmacs']):.3f} published.")  # type: ignore[arg-type]
    return lines


def write(data: list[dict[str, object]], path: Path = REPORT) -> None:
    import torch
    import torchvision

    ok = sum(1 for r in data if r["ok"])
    within = sum(1 for r in data if r["within"])
    same_params = sum(1 for r in data if r["params"] == r["published_params"])
    excepted = sum(1 for r in data if r["exception"] is not None)
    ratios = sorted(float(r["backward_ratio"]) for r in data if r["backward_ratio"] is not None)  # type: ignore[arg-type]
    ratio_ok = sum(1 for r in data if r["backward_ratio"] is not None and r["ratio_ok"])
    agreeing = [r for r in data if r["within"]]
    worst = max(agreeing, key=lambda r: abs(float(r["error"])))  # type: ignore[arg-type]
    tasks = Counter(str(r["task"]) for r in data)
    lines = [
        "# torchvision parity",
        "",
        "Our parameter counts and MACs against the metadata torchvision publishes with each model's DEFAULT",
        "weights (`num_params`, and `_ops`, which torchvision's docs list as GFLOPS but counts as",
        "multiply-accumulates). MACs are counted by `cnnprobe flops` on the meta device (quantized models: on the",
        "CPU) at each model's default input, the one torchvision's own figure used. Tolerance: 1%, or ±0.0005",
        "GMACs (the rounding of the published three decimals) for the tiniest models. `apart`: GMACs of",
        "operators counted apart from the total (RoIAlign, interpolation, grid_sampler), which torchvision's",
        "figures leave out.",
        "",
        "Regenerate with `python -m benchmarks.parity`.",
        "",
        f"- date: {datetime.date.today().isoformat()}; torch {torch.__version__}, torchvision {torchvision.__version__},"
        f" Python {platform.python_version()}",
        f"- {len(data)} models ({', '.join(f'{task} {n}' for task, n in tasks.items())})",
        f"- parameters equal to `num_params`: {same_params} of {len(data)}",
        f"- MACs within tolerance of `_ops`: {within} of {len(data)}; {excepted} named exceptions (below); {ok} of"
        f" {len(data)} agree or are explained; largest difference among those within"
        f" {100 * float(worst['error']):+.3f}% ({worst['model']}, published {float(worst['published_gmacs']):.3f})",
        f"- backward/forward MACs with everything trainable ({', '.join(_BACKWARD_TASKS)}): {ratio_ok} of"
        f" {len(ratios)} in [1, 2]; from {ratios[0]:.3f} to {ratios[-1]:.3f}, {ratios[len(ratios) // 2]:.3f} at the median",
        f"- counting all {len(data)} forward passes took {sum(float(r['seconds']) for r in data):.1f} s",  # type: ignore[arg-type]
        "",
        *_table(data),
        *_exceptions(data),
    ]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args()
    data = rows()
    write(data, args.out)
    bad = [r["model"] for r in data if not (r["ok"] and r["ratio_ok"])]
    print(f"wrote {args.out}: {len(data) - len(bad)} of {len(data)} within tolerance or explained"
          + (f"; off: {bad}" if bad else ""))


if __name__ == "__main__":
    main()
