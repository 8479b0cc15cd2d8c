"""Regenerate reports/torchvision-parity.md: our counts against torchvision's published metadata.

    python -m benchmarks.parity            # writes reports/torchvision-parity.md

For every torchvision classification model at its default input (the eval
crop of its DEFAULT weights): parameters against `num_params`, and GMACs
against `_ops` (published as "GFLOPS", but counted as multiply-accumulates).
Beside them, the backward pass with everything trainable, at batch 2 (train-mode
BatchNorm needs two samples): its MACs over the train-mode forward's must lie
in [1, 2], since each layer's weight gradient costs its forward MACs and its
input gradient the same again, except the first layer's, which nothing needs.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

REPORT = Path(__file__).resolve().parent.parent / "reports" / "torchvision-parity.md"
RATIO_RANGE = (1.0, 2.0)


def rows() -> list[dict[str, object]]:
    import cnnprobe
    from cnnprobe.analysis.flops import within_published
    from cnnprobe.models.registry import list_models

    out = []
    for spec in list_models("torchvision:*"):
        start = time.perf_counter()
        report = cnnprobe.flops(spec.qualified)
        seconds = time.perf_counter() - start
        params = sum(p.numel() for p in cnnprobe.build_model(spec).module.parameters())
        backward = cnnprobe.flops(spec.qualified, batch=2, backward=True, depth=0)
        ratio = backward.backward_ratio or 0.0
        gmacs = report.macs / 1e9
        published = float(spec.published_gmacs or 0.0)
        out.append({
            "model": spec.name, "input": "×".join(map(str, spec.input_shape or ())), "params": params,
            "published_params": spec.published_params, "gmacs": gmacs, "published_gmacs": published,
            "error": (gmacs - published) / published if published else 0.0,
            "ok": params == spec.published_params and within_published(gmacs, published), "seconds": seconds,
            "backward_ratio": ratio, "ratio_ok": RATIO_RANGE[0] <= ratio <= RATIO_RANGE[1],
        })
    return out


def write(data: list[dict[str, object]], path: Path = REPORT) -> None:
    import torch
    import torchvision

    ok = sum(1 for r in data if r["ok"])
    ratios = sorted(float(r["backward_ratio"]) for r in data)  # type: ignore[arg-type]
    ratio_ok = sum(1 for r in data if r["ratio_ok"])
    worst = max(data, key=lambda r: abs(float(r["error"])))  # type: ignore[arg-type]
    lines = [
        "# torchvision parity",
        "",
        "Our parameter counts and MACs against the metadata torchvision publishes with each model's DEFAULT",
        "weights (`num_params`, and `_ops`, which torchvision's docs list as GFLOPS but counts as",
        "multiply-accumulates). MACs are counted by `cnnprobe flops` on the meta device at the eval resolution of",
        "the weights. Tolerance: 1%, or ±0.0005 GMACs (the rounding of the published three decimals) for the",
        "tiniest models.",
        "",
        "Regenerate with `python -m benchmarks.parity`.",
        "",
        f"- date: {datetime.date.today().isoformat()}; torch {torch.__version__}, torchvision {torchvision.__version__},"
        f" Python {platform.python_version()}",
        f"- {ok} of {len(data)} models within tolerance; largest relative difference {100 * float(worst['error']):+.3f}%"
        f" ({worst['model']}, the published figure being rounded to {float(worst['published_gmacs']):.3f})",
        f"- backward/forward MACs with everything trainable: {ratio_ok} of {len(data)} in [1, 2]; from "
        f"{ratios[0]:.3f} to {ratios[-1]:.3f}, {ratios[len(ratios) // 2]:.3f} at the median",
        f"- counting all {len(data)} forward passes took {sum(float(r['seconds']) for r in data):.1f} s",  # type: ignore[arg-type]
        "",
        "| model | input | params | published num_params | GMACs | published _ops | difference | within | backward/forward |",
        "|---|---|---:|---:|---:|---:|---:|:---:|---:|",
    ]
    for r in data:
        lines.append(
            f"| {r['model']} | {r['input']} | {r['params']:,} | {r['published_params']:,} | {float(r['gmacs']):.4f} | "  # type: ignore[arg-type]
            f"{float(r['published_gmacs']):.3f} | {100 * float(r['error']):+.3f}% | {'yes' if r['ok'] else '**no**'} | "  # type: ignore[arg-type]
            f"{float(r['backward_ratio']):.3f}{'' if r['ratio_ok'] else ' **out of [1, 2]**'} |"  # type: ignore[arg-type]
        )
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args()
    data = rows()
    write(data, args.out)
    bad = [r["model"] for r in data if not (r["ok"] and r["ratio_ok"])]
    print(f"wrote {args.out}: {len(data) - len(bad)} of {len(data)} within tolerance" + (f"; off: {bad}" if bad else ""))


if __name__ == "__main__":
    main()
