"""Regenerate reports/profile-cpu.md: how far to trust `cnnprobe profile` on this machine.

    python -m benchmarks.profile_report            # four models, a few minutes on 2 cores
    python -m benchmarks.profile_report --quick    # resnet18 alone

It also draws reports/profile-cpu-roofline.png: mobilenet_v3_small's leaves on this machine's roofline.

For resnet18, mobilenet_v3_small, convnext_tiny and vit_b_16 at small inputs, each check of
`benchmarks.profile_checks`: the rows against the unprofiled step and the hooks' cost; each top-level
module's forward against the module timed alone by torch.utils.benchmark; the rows' ranking against
torch.profiler's; the trace's structure and one span per module call. Then the synthetic one-convolution
net, resnet18 with a frozen prefix, and each model's rows.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import profile_checks as checks

REPORTS = Path(__file__).resolve().parent.parent / "reports"
CASES = [
    checks.Case("resnet18", "3,64,64", 4, 1),
    checks.Case("mobilenet_v3_small", "3,96,96", 4, 2),
    checks.Case("convnext_tiny", "3,64,64", 2, 2),
    checks.Case("vit_b_16", "3,224,224", 1, 4),
]
THREADS = 1  # one thread: the other core takes the machine's other work, which two threads on two cores would share
MIN_TIME = 1.0
ROUNDS = 3  # profiled-then-alone rounds for the alone check
RANKED = 0.01  # rows with at least this share of the forward are ranked


def _profile(model: Any, case: checks.Case, **options: Any) -> Any:
    from cnnprobe.benchmark.attribution.run import profile

    options = {"input_size": [case.input_size], "threads": THREADS, "min_time": MIN_TIME, **options}
    return profile(model, case.batch, **options)


def check_case(case: checks.Case) -> dict[str, Any]:
    """Every check of one model, as figures for the report's table."""
    from cnnprobe.report.chrometrace import check_trace, chrome_trace

    model, x = checks.build(case.name), checks.example(case)
    torch.set_num_threads(THREADS)
    step = _profile(model, case, depth=1, timeline=True)
    trace = chrome_trace(step)
    calls = checks.module_calls(model, x, max_depth=None)
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] in ("forward", "backward")]
    tops = [n for n, _ in model.named_children()]
    inputs = checks.inputs_of(model, x, tops)
    children = dict(model.named_children())
    rounds: dict[str, list[float]] = {}
    for _ in range(ROUNDS):  # profiled, then alone, a few times: a busy moment moves one round, not the median
        alone = _profile(model, case, depth=1, mode="forward_backward")
        forward = sum(m.forward_ms for m in alone.modules)
        for m in alone.modules:
            if m.forward_ms >= 0.05 * forward:
                rounds.setdefault(m.name, []).append(
                    m.forward_ms / checks.alone_ms(children[m.name], inputs[m.name], THREADS))
    ratios = {name: statistics.median(values) for name, values in rounds.items()}
    ranked = _profile(model, case, depth=case.rank_depth, mode="forward_backward")
    rows = [m for m in ranked.modules if m.forward_ms >= RANKED * sum(p.forward_ms for p in ranked.modules)]
    theirs = checks.profiler_ms(model, x, [m.name for m in rows])
    ours = [m.forward_ms for m in rows]
    other = [theirs[m.name] for m in rows]
    return {
        "case": case, "report": step,
        "sum": step.attributed_ms / step.unprofiled_step_ms - 1, "overhead": step.overhead,
        "alone": ratios, "rho": checks.spearman(ours, other), "r": checks.pearson(ours, other), "ranked": len(rows),
        "top": (rows[ours.index(max(ours))].name, rows[other.index(max(other))].name) if rows else ("-", "-"),
        "trace_problems": check_trace(trace), "spans": (sum(e["cat"] == "forward" for e in spans),
                                                        sum(e["cat"] == "backward" for e in spans)), "calls": calls,
    }


def synthetic() -> tuple[float, str]:
    """The share of the rows' time in the one convolution holding 97.7% of a net's MACs, and the slowest row."""
    case = checks.Case("one-big-conv", "3,32,32", 8, 1)
    r = _profile(checks.OneBigConv(), case)
    total = sum(m.total_ms for m in r.modules)
    big = next(m for m in r.modules if m.name == "big")
    return big.total_ms / total, max(r.modules, key=lambda m: m.total_ms).name


def frozen_prefix() -> Any:
    case = checks.Case("resnet18", "3,64,64", 4, 1)
    return _profile("resnet18", case, freeze_except="layer4,fc")


def roofline_plot(path: Path) -> None:
    """mobilenet_v3_small's leaves on the roofline: depthwise convolutions and elementwise operators under the
    bandwidth slope, the dense 1×1 convolutions nearer the compute roof."""
    from cnnprobe.report.roofline import plot_roofline

    case = checks.Case("mobilenet_v3_small", "3,96,96", 8, -1)
    plot_roofline(_profile("mobilenet_v3_small", case, depth=-1), path)


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}%"


def _rows_table(r: Any) -> list[str]:
    from cnnprobe.core.formatting import macs, nbytes

    lines = ["| row | forward ms | backward ms | of step | fwd MACs | bwd MACs | moved | FLOP/B | GB/s | bound | of roof |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for m in [*r.modules, *r.unattributed.values()]:
        name = m.name if m.type else f"[{m.name}]"
        lines.append(
            f"| {name} | {m.forward_ms:.2f} | {'-' if m.backward_ms is None else f'{m.backward_ms:.2f}'} | "
            f"{100 * (m.share_of_step or 0):.1f}% | {macs(m.forward_macs)} | "
            f"{'-' if m.backward_macs is None else macs(m.backward_macs)} | {nbytes(m.bytes) if m.bytes else '-'} | "
            f"{'-' if m.intensity is None else f'{m.intensity:.3g}'} | "
            f"{'-' if not m.achieved_gbps else f'{m.achieved_gbps:.3g}'} | {m.bound or '-'} | "
            f"{'-' if m.roofline_share is None else f'{100 * m.roofline_share:.1f}%'} |")
    return lines


def write(results: list[dict[str, Any]], big: tuple[float, str], frozen: Any, seconds: float) -> str:
    from cnnprobe.training.devices import cpu_name

    first = results[0]["report"]
    lines = [
        "# How far to trust `cnnprobe profile` (CPU)",
        "",
        f"Written by `python -m benchmarks.profile_report` on {datetime.date.today()}, {cpu_name()}, {THREADS} "
        f"threads, torch {torch.__version__}, Python {platform.python_version()}, in {seconds:.0f} s. Each step is "
        f"train_step with SGD unless said; profiled blocks alternate with the same step unprofiled for at least "
        f"{MIN_TIME:g} s. The machine is shared: figures move from run to run, and the tests hold each check with "
        "a few attempts.",
        "",
        f"Roofs: compute {first.roof.peak_tflops:.3g} TFLOP/s ({first.roof.peak_source}: {first.roof.peak_detail}); "
        f"bandwidth {first.roof.bandwidth_gbps:.3g} GB/s ({first.roof.bandwidth_source}: "
        f"{first.roof.bandwidth_detail}).",
        "",
        "## The checks",
        "",
        "- **sum**: the rows of depth 1 plus the unattributed pieces, against the step timed without hooks, "
        "interleaved in the same run (aim: within 5%).",
        "- **hooks**: the profiled step against the unprofiled one, the median of their block-by-block ratios "
        "(aim: under 5%).",
        "- **alone**: each top-level module holding ≥ 5% of the forward, its profiled forward ÷ the module timed "
        "alone by `torch.utils.benchmark` on the input it gets in the step (train mode, gradients on), in a "
        f"forward_backward profile, the median of {ROUNDS} rounds (aim: within 20%). Timed alone in a loop, a small "
        "module's weights and input stay in cache; in the step they arrive cold.",
        "- **ranking**: the rows at the depth named (≥ 1% of the forward each), our forward ms against torch.profiler's "
        "CPU time inside a `record_function` range around each module's forward: Spearman's rank correlation ρ, "
        "the linear correlation r (rows of equal cost, such as a ViT's identical blocks, tie: their ranks are "
        "noise while their times still agree), and the slowest row by each.",
        "- **trace**: `check_trace`'s structural problems (valid events, µs times, every pair on a track nested or "
        "disjoint), and the trace's module spans against module calls counted by the check's own hooks "
        "(every call at any depth; backward: calls whose output has a gradient function of its own).",
        "",
        "| model | input | sum | hooks | alone (worst) | ranking (depth, rows) | slowest: ours / profiler | trace problems | "
        "spans fwd/bwd vs calls |",
        "|---|---|---:|---:|---|---|---|---:|---|",
    ]
    for res in results:
        case = res["case"]
        worst = max(res["alone"].items(), key=lambda kv: abs(kv[1] - 1), default=("-", 1.0))
        lines.append(
            f"| {case.name} | {case.batch}×{case.input_size.replace(',', '×')} | {_pct(res['sum'])} | "
            f"{_pct(res['overhead'])} | {worst[0]} {worst[1]:.2f} ({len(res['alone'])} modules) | "
            f"ρ = {res['rho']:.2f}, r = {res['r']:.2f} (depth {case.rank_depth}, {res['ranked']}) | {res['top'][0]} / {res['top'][1]} | "
            f"{len(res['trace_problems'])} | {res['spans'][0]}/{res['spans'][1]} vs {res['calls'][0]}/"
            f"{res['calls'][1]} |")
    frozen_rows = {m.name: m for m in frozen.modules}
    idle = [n for n, m in frozen_rows.items() if m.backward_ms is None]
    layer4 = frozen_rows["layer4"]
    lines += [
        "",
        f"**One convolution with 97.7% of the MACs** (a stem conv, the big conv, pooling, a linear head; batch 8 at "
        f"3×32×32): {100 * big[0]:.1f}% of the rows' time is in it; the slowest row is `{big[1]}`.",
        "",
        f"**resnet18 with `--freeze-except layer4,fc`**: no backward runs for {', '.join(idle)}; layer4's backward "
        f"takes {layer4.backward_ms:.2f} ms for {layer4.backward_macs / 1e6:.1f} M MACs (its forward: "
        f"{layer4.forward_macs / 1e6:.1f} M): weight gradients throughout, input gradients for all but its first "
        "convolutions, whose input needs none.",
        "",
    ]
    for res in results:
        r = res["report"]
        lines += [f"## {res['case'].name}, batch {r.batch} at {'×'.join(map(str, r.input_size[1:]))}, rows at depth 1", "",
                  f"Step {r.step_ms:.1f} ms profiled, {r.unprofiled_step_ms:.1f} ms without hooks.", "",
                  *_rows_table(r), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="resnet18 alone")
    parser.add_argument("--out", default=str(REPORTS / "profile-cpu.md"))
    args = parser.parse_args()
    start = time.perf_counter()
    results = [check_case(c) for c in (CASES[:1] if args.quick else CASES)]
    text = write(results, synthetic(), frozen_prefix(), time.perf_counter() - start)
    Path(args.out).write_text(text)
    if not args.quick:
        roofline_plot(REPORTS / "profile-cpu-roofline.png")
    print(text)


if __name__ == "__main__":
    main()
