"""Renderers: rich tables and JSON over the records the API returns. Nothing here computes."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..benchmark.result import MIN_BLOCKS
from ..core.formatting import ARROW, brief, count, first_few, inputs, macs, ms, nbytes, shape, share

if TYPE_CHECKING:
    from ..analysis.checkpoint import CheckpointInfo
    from ..analysis.compare import ModelComparison
    from ..analysis.flops import FlopReport
    from ..analysis.summary import Summary
    from ..analysis.trainable import TrainableReport
    from ..benchmark.distributed.worker import DistResult
    from ..benchmark.regression import Comparison
    from ..benchmark.result import BenchResult, Sweep
    from ..memory.predict import MemoryReport
    from ..models.registry import ModelSpec
    from ..weights.statedict import Compatibility



def console(stderr: bool = False) -> Console:
    """A console that keeps its width when piped, so saved output reads like the terminal's. Markup and emoji
    codes are off: text from a file or a model (`[/bold]`, `[red]`, `:warning:`) prints literally, never
    restyling or hiding what cnnprobe prints; styles come from Text objects alone."""
    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not stream.isatty():
        columns = os.environ.get("COLUMNS", "")
        width = int(columns) if columns.isdigit() and int(columns) >= 40 else 120
    return Console(file=stream, width=width, highlight=False, soft_wrap=False, markup=False, emoji=False)


def json_text(data: Any) -> str:
    """The one JSON serialisation: what --json prints is what --save writes. Standard JSON only: a value JSON
    cannot hold (NaN, infinities, complex numbers) is written as a string, never as a bare `NaN`."""
    return json.dumps(_standard(data), default=_jsonable, allow_nan=False) + "\n"


def _standard(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, complex):
        return str(value)
    if isinstance(value, dict):  # keys a file chose (tuples, numbers) are written as text
        return {k if isinstance(k, str) else brief(k): _standard(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_standard(v) for v in value]
    return value


def emit_json(data: Any) -> None:
    """One JSON object on stdout, and nothing else."""
    sys.stdout.write(json_text(data))
    sys.stdout.flush()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "value"):  # enums
        return value.value
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def styled_table(title: str | None = None) -> Table:
    """The house style: no outer edge, a rule under the header, no vertical lines."""
    return Table(title=title, title_justify="left", show_edge=False, pad_edge=False, box=box.SIMPLE_HEAD)


# --------------------------------------------------------------------------- list


def list_table(specs: list["ModelSpec"], params: dict[str, int]) -> Table:
    table = styled_table(f"{len(specs)} models")
    table.add_column("source")
    table.add_column("name")
    table.add_column("params", justify="right")
    table.add_column("input", justify="right")
    for s in specs:
        table.add_row(s.source.value, s.name, count(params[s.qualified]), shape(list(s.input_shape or [])))
    return table


# --------------------------------------------------------------------------- summary


def summary_lines(s: "Summary") -> list[Any]:
    """The summary as printable pieces: header, layer table, totals, shape flow."""
    header = Text.assemble(
        (f"{s.model}", "bold"), f" ({s.source}) · input {inputs(s.input_size, s.inputs)}",
        f" ({s.input_source}) · built on {s.device}",
    )
    table = styled_table()
    table.add_column("layer")
    table.add_column("type")
    table.add_column("output shape", justify="right")
    table.add_column("params", justify="right")
    table.add_column("trainable")
    table.add_column("MACs", justify="right")
    for r in s.rows():
        trainable = "-" if r.params == 0 else ("yes" if r.trainable else ("partial" if r.trainable_params else "no"))
        params = f"call {r.call}/{r.calls}" if r.repeated else (count(r.params) if r.params else "-")
        table.add_row("  " * (r.depth - 1) + r.name, r.type, shape(r.output_shape), params, trainable, macs(r.macs))
    totals = Table.grid(padding=(0, 2))
    totals.add_column()
    totals.add_column(justify="right")
    totals.add_column(style="dim")
    totals.add_row("total params", count(s.total_params), "")
    totals.add_row("trainable params", count(s.trainable_params), "")
    totals.add_row("non-trainable params", count(s.non_trainable_params), "")
    totals.add_row("param "
                   "memory", nbytes(s.param_bytes), f"+ {nbytes(s.buffer_bytes)} of buffers" if s.buffer_bytes else "")
    totals.add_row("activations (est.)", nbytes(s.activation_bytes), "leaf-layer outputs of one forward pass")
    totals.add_row("MACs", macs(s.macs), f"FLOPs = 2 × MACs = {macs(s.flops)}")
    flow = Text("shape flow: " + ARROW.join(shape(f) for f in s.shape_flow))
    pieces: list[Any] = [header, table, totals, flow]
    pieces += [Text(f"note: {n}", style="dim") for n in s.notes]
    return pieces


# --------------------------------------------------------------------------- flops


def _operator_table(title: str, ops: list[Any]) -> Table:
    table = styled_table(title)
    table.add_column("operator")
    table.add_column("MACs", justify="right")
    table.add_column("FLOPs", justify="right")
    table.add_column("share", justify="right")
    for o in ops:
        table.add_row(o.op, macs(o.macs), macs(2 * o.macs), share(o.share))
    return table


def flops_lines(r: "FlopReport") -> list[Any]:
    header = Text.assemble((r.model, "bold"), f" ({r.source}) · input {inputs(r.input_size, r.inputs)} · counter "
                                              f"{r.counter}"
                           f" on {r.device}")
    total = Text.assemble("MACs ", (macs(r.macs), "bold"), " · FLOPs ", (macs(r.flops), "bold"),
                          "  (FLOPs = 2 × MACs)")
    pieces: list[Any] = [header, total]
    if r.published_gmacs is not None:
        pieces.append(Text(f"torchvision publishes {r.published_gmacs:.3f} G for this model under \"GFLOPS\": "
                           f"those are MACs; difference {100 * (r.published_difference or 0.0):+.2f}%"))
    modules = styled_table(f"by module (depth {r.depth})")
    modules.add_column("module")
    modules.add_column("type")
    modules.add_column("MACs", justify="right")
    modules.add_column("share", justify="right")
    for m in r.by_module:
        modules.add_row("  " * (m.depth - 1) + m.name, m.type, macs(m.macs), share(m.macs / r.macs) if m.macs else "-")
    if r.by_module:
        pieces.append(modules)
    pieces.append(_operator_table("by operator", r.by_operator))
    if r.uncounted_ops:
        listed = ", ".join(f"{op}×{n}" for op, n in r.uncounted_ops.items())
        pieces.append(Text(f"not counted (no MACs by convention, or no formula), with calls: {listed}"))
    if r.backward_macs is not None:
        pieces.append(Text.assemble("backward MACs ", (macs(r.backward_macs), "bold"), " · FLOPs ",
                                    (macs(2 * r.backward_macs), "bold"),
                                    f"  ({count(r.trainable_params or 0)} trainable params)"))
        train_macs = macs(r.train_forward_macs or 0)
        train = "" if r.train_forward_macs == r.macs else f", its forward in train mode {train_macs} MACs"
        ratio = f"{r.backward_ratio:.2f}" if r.backward_ratio is not None else "-"
        pieces.append(Text(f"forward + backward FLOPs {macs(r.training_flops or 0)} (backward/forward {ratio}{train})"))
        pieces.append(_operator_table("backward by operator", r.backward_by_operator))
    pieces += [Text(f"note: {n}", style="dim") for n in r.notes]
    return pieces


# --------------------------------------------------------------------------- bench

BENCH_COLUMNS = [
    "model", "device", "batch", "dtype", "mode", "frozen", "median_ms", "iqr_ms", "runs", "samples_per_s",
    "tflops", "peak_share", "datasheet_share", "peak_memory_bytes", "memory_method", "forward_ms", "forward_iqr_ms",
    "backward_ms", "backward_iqr_ms", "optimizer_ms", "optimizer_iqr_ms", "noisy", "threads", "repeat",
    "blocks", "steps_per_block", "few_blocks", "reference_n", "reference_ms", "step_per_reference",
]


def bench_rows(runs: list["BenchResult"]) -> list[dict[str, Any]]:
    """Flat rows, one per model, batch and mode: what the CSV holds."""
    rows = []
    for run in runs:
        for r in run.results:
            rows.append({"model": run.model, "device": run.device, "batch": run.batch, "dtype": run.dtype,
                         "threads": run.threads, "repeat": run.repeat,
                         **{k: getattr(r, k) for k in BENCH_COLUMNS if hasattr(r, k)}})
    return rows


_MODE_LABELS = {"forward": "forward", "forward_backward": "fwd+bwd", "train_step": "train_step"}
_MEMORY_LABELS = {"parameters": "parameters", "buffers": "buffers", "gradients": "gradients",
                  "optimizer_state": "optimizer state", "inputs": "inputs", "activations": "activations",
                  "temporaries": "temporaries", "workspace": "operators' workspaces"}


def _header(first: "BenchResult", several: bool) -> list[Any]:
    s = first.settings
    switches = [f"{first.threads} thread{'s' if first.threads != 1 else ''}",
                f"{first.dtype}" + (" (autocast)" if s.get("autocast") else "")]
    if s.get("channels_last"):
        switches.append("channels_last")
    if s.get("compile"):
        switches.append("torch.compile")
    if "cudnn_benchmark" in s:
        switches.append(f"cudnn.benchmark {'on' if s['cudnn_benchmark'] else 'off'}")
        on = {True: "on", False: "off"}
        switches.append(f"TF32 matmul {on[bool(s['tf32_matmul'])]}, cuDNN {on[bool(s['tf32_cudnn'])]}")
    switches.append(f"optimizer {s.get('optimizer')}")
    if first.repeat > 1:
        switches.append(f"{first.repeat} repeats")
    pieces: list[Any] = []
    if not several:
        pieces.append(Text.assemble((first.model, "bold"), f" ({first.source}) · batch {first.batch} · input "
                                    f"{inputs(first.input_size, first.inputs)}"))
    pieces.append(Text.assemble((first.device_name, "bold"), f" ({first.device}) · " + " · ".join(switches)))
    if first.peak:
        line = f"peak {first.peak['tflops']:.3g} TFLOP/s: {first.peak['source']}, {first.peak['detail']}"
        sheet = first.peak.get("datasheet")
        if sheet:
            line += f"; datasheet {sheet['tflops']:.4g} TFLOP/s ({sheet['detail']})"
        pieces.append(Text(line))
    return pieces


def _memory_line(run: "BenchResult") -> Text | None:
    """Where the largest peak of a run goes, category by category."""
    heaviest = run.heaviest()
    if heaviest is None or not heaviest.memory_breakdown:
        return None
    parts = ", ".join(f"{_MEMORY_LABELS.get(k, k)} {nbytes(v)}" for k, v in heaviest.memory_breakdown.items() if v)
    what = f"{_MODE_LABELS.get(heaviest.mode, heaviest.mode)}{' frozen' if heaviest.frozen else ''}"
    counted = "counted tensor by tensor" if heaviest.memory_method == "tensors" else "allocator peak; tensors"
    return Text(f"{run.model} b{run.batch} peak memory {nbytes(heaviest.peak_memory_bytes)} in {what} "
                f"({counted}): {parts}")


def bench_lines(sweep: "Sweep") -> list[Any]:
    pieces: list[Any] = []
    if not sweep.runs:
        return pieces
    several = len(sweep.runs) > 1
    pieces += _header(sweep.runs[0], several)
    results = [r for run in sweep.runs for r in run.results]
    frozen_any = any(r.frozen for r in results)
    mfu = any(r.datasheet_share is not None for r in results)
    table = styled_table()
    table.collapse_padding = True
    columns = ([("model", "left"), ("batch", "right")] if several else []) + [("mode", "left")] + (
        [("weights", "left")] if frozen_any else [])
    columns += [("median ms", "right"), ("IQR", "right"), ("samples/s", "right"), ("fwd", "right"),
                ("bwd", "right"), ("opt", "right"), ("TFLOP/s", "right"), ("% peak", "right")] + (
        [("MFU", "right")] if mfu else []) + [("peak mem", "right")]
    for col, justify in columns:
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for run in sweep.runs:
        for r in run.results:
            cells = ([run.model, str(run.batch)] if several else []) + [_MODE_LABELS.get(r.mode, r.mode)]
            if frozen_any:
                cells.append("-" if r.mode == "forward" else ("frozen" if r.frozen else "all"))
            cells += [ms(r.median_ms), ms(r.iqr_ms) + ("!" if r.noisy else "") + ("?" if r.few_blocks else ""),
                      f"{r.samples_per_s:,.1f}",
                      ms(r.forward_ms), ms(r.backward_ms), ms(r.optimizer_ms),
                      "-" if r.tflops is None else f"{r.tflops:.3f}",
                      "-" if r.peak_share is None else share(r.peak_share)]
            if mfu:
                cells.append("-" if r.datasheet_share is None else share(r.datasheet_share))
            cells.append(nbytes(r.peak_memory_bytes) if r.memory_method else "-")
            table.add_row(*cells)
    pieces.append(table)
    for run in sweep.runs:
        for mode in ("forward_backward", "train_step"):
            saving = run.frozen_saving(mode)
            if saving is not None:
                frozen, full = run.result(mode, True), run.result(mode, False)
                assert frozen is not None and full is not None  # frozen_saving is None unless both ran
                verdict = (f"freezing saves {share(saving)} of a {mode}" if saving >= 0
                           else f"freezing did not make {mode} faster here (see the IQR)")
                pieces.append(Text(f"{run.model} b{run.batch}: {verdict} ({ms(frozen.median_ms)} ms frozen, "
                                   f"{ms(full.median_ms)} ms with all params trainable)"))
    if not several:
        line = _memory_line(sweep.runs[0])
        if line is not None:
            pieces.append(line)
    predicted = [(run, r) for run in sweep.runs for r in run.results if r.prediction_ratio is not None]
    if predicted:
        pieces.append(Text("peak memory, measured and predicted on fake tensors (cnnprobe memory):"))
        check = styled_table()
        for col, justify in ([("model", "left"), ("batch", "right")] if several else []) + [
                ("mode", "left")] + ([("weights", "left")] if frozen_any else []) + [
                ("measured", "right"), ("predicted", "right"), ("predicted/measured", "right")]:
            check.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for run, r in predicted:
            cells = ([run.model, str(run.batch)] if several else []) + [_MODE_LABELS.get(r.mode, r.mode)]
            if frozen_any:
                cells.append("-" if r.mode == "forward" else ("frozen" if r.frozen else "all"))
            check.add_row(*cells, nbytes(r.peak_memory_bytes), nbytes(r.predicted_peak_bytes or 0),
                          f"{r.prediction_ratio:.3f}")
        pieces.append(check)
    if any(r.noisy for r in results):
        pieces.append(Text("!: noisy, IQR above 10% of the median; the machine is busy or --min-time is too short",
                           style="dim"))
    if any(r.few_blocks for r in results):
        pieces.append(Text(f"?: rests on fewer than {MIN_BLOCKS} timed blocks, too few to judge its spread; give "
                           "--max-time more seconds", style="dim"))
    blocks, steps = _least([r.blocks for r in results]), _least([r.steps_per_block for r in results])
    pieces.append(Text(f"times in ms, each the median over timed blocks (at least {blocks} "
                       f"blocks of at least {steps} steps; per mode in the "
                       "JSON); "
                       "fwd, bwd, opt: the step's median split "
                       "in each phase's share of the same blocks; TFLOP/s from counted FLOPs; peak mem: the "
                       "allocator's peak over a steady-state step", style="dim"))
    for model, batch in sweep.auto.items():
        pieces.append(Text(f"--batch auto: {model} fits batch {batch}"))
    notes = {n for run in sweep.runs for n in run.notes}
    pieces += [Text(f"note: {n}", style="dim") for n in sorted(notes)]
    return pieces


def _least(values: list[int]) -> str:
    known = [v for v in values if v]
    return str(min(known)) if known else "-"


_MEMORY_COLUMNS = ("parameters", "gradients", "optimizer_state", "inputs", "activations", "temporaries")


def memory_lines(r: "MemoryReport", depth: int, top: int) -> list[Any]:
    shown = inputs(r.input_size, r.inputs)
    header = Text.assemble((r.model, "bold"), f" ({r.source}) · batch {r.batch} · input {shown}")
    plan = r.plan
    what = ("freeze all" if plan["freeze_all"] else f"freeze all except {plan['freeze_except']}"
            if plan["freeze_except"] else f"freeze {plan['freeze']}" if plan["freeze"] else "nothing frozen")
    pieces: list[Any] = [header, Text(f"predicted for {r.device} · {r.dtype}" + (" (autocast)" if r.dtype != "float32"
                                      else "") + f" · optimizer {r.optimizer} · {what}"
                                      + (" · BatchNorm frozen" if plan["freeze_bn"] else ""))]
    pieces.append(Text("steady-state peak (the second step onward), and what its tensors hold at their own peak"))
    table = styled_table()
    table.collapse_padding = True
    columns = [("mode", "left")] + ([("weights", "left")] if r.freezing else []) + [("peak", "right")] + [
        (c.replace("_", " ").replace("optimizer state", "optimizer"), "right") for c in _MEMORY_COLUMNS]
    for col, justify in columns:
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for m in r.results:
        cells = [_MODE_LABELS.get(m.mode, m.mode)]
        if r.freezing:
            cells.append("-" if m.mode == "forward" else ("frozen" if m.frozen else "all"))
        cells.append(nbytes(m.predicted_peak_bytes))
        cells += [nbytes(m.breakdown.get(c, 0)) if m.breakdown.get(c) else "-" for c in _MEMORY_COLUMNS]
        table.add_row(*cells)
    pieces.append(table)
    above = [f"{_MODE_LABELS.get(m.mode, m.mode)}{' frozen' if m.frozen else ''} {nbytes(m.breakdown['workspace'])}"
             for m in r.results if m.breakdown.get("workspace")]
    if above:
        pieces.append(Text("operators' workspaces (their own allocations, calibrated on this machine) in the peak, "
                           "above the tensors: " + ", ".join(above)))
    for mode in ("forward_backward", "train_step"):
        saving = r.freezing_saves(mode)
        if saving is not None:
            pieces.append(Text(f"freezing saves {nbytes(saving['total'])} of a {mode}'s peak: "
                               f"{nbytes(saving['gradients_and_optimizer_state'])} of gradients and optimizer state, "
                               f"{nbytes(saving['saved_for_backward'])} of activations saved for backward"))
    modules = r.top_modules(depth, top)
    if modules:
        pieces.append(Text(f"activations saved for backward, by module (depth {depth}, top {top})"))
        saved = styled_table()
        for col, justify in (("module", "left"), ("saved", "right"), ("share", "right")):
            saved.add_column(col, justify=justify)  # type: ignore[arg-type]
        for name, size, part in modules:
            saved.add_row(name, nbytes(size), share(part))
        pieces.append(saved)
    if r.budget is not None:
        b = r.budget
        pieces.append(Text.assemble(
            f"--budget {nbytes(b.budget_bytes, 3)}: the largest batch whose {b.mode} fits is ", (str(b.batch), "bold"),
            f" (predicted {nbytes(b.peak_bytes, 3)}); batch {b.batch + 1} needs {nbytes(b.next_peak_bytes, 3)}"))
    pieces += [Text(f"note: {n}", style="dim") for n in r.notes]
    return pieces


def ddp_lines(d: "DistResult") -> list[Any]:
    run = d.run
    pieces: list[Any] = [
        Text.assemble((run.model, "bold"), f" ({run.source}) · batch {run.batch} per rank, {d.global_batch} in all · "
                      f"input {inputs(run.input_size, run.inputs)}"),
        Text(f"DistributedDataParallel · {d.world_size} rank{'s' if d.world_size != 1 else ''} · {d.backend} · "
             f"{run.device_name} ({run.device}) · {run.dtype} · optimizer {run.settings.get('optimizer')}"
             + (f" · buckets of {d.bucket_mb:g} MB" if d.bucket_mb else "")),
    ]
    table = styled_table()
    table.collapse_padding = True
    for col in ("mode", "step ms", "IQR", "samples/s", "1-process ms", "efficiency", "exposed comm ms",
                "no_sync ms", "peak mem"):
        table.add_column(col, justify="left" if col == "mode" else "right", no_wrap=True)
    by_mode = {r.mode: r for r in run.results}
    for mode, f in d.modes.items():
        r = by_mode[mode]
        table.add_row(_MODE_LABELS.get(mode, mode), ms(f["median_ms"]), ms(r.iqr_ms) + ("!" if r.noisy else ""),
                      f"{f['aggregate_samples_per_s']:,.1f}", ms(f["single_process_ms"]), _efficiency(f),
                      _exposed(f), ms(f["no_sync_ms"]), nbytes(r.peak_memory_bytes) if r.memory_method else "-")
    pieces.append(table)
    ranks = styled_table()
    for col in ("rank", "host", "device", "threads", *(f"{_MODE_LABELS.get(m, m)} ms" for m in d.modes), "peak mem"):
        ranks.add_column(col, justify="left" if col in ("host", "device") else "right", no_wrap=True)
    for pr in d.per_rank:
        cells = [str(pr.rank), pr.host, pr.device, str(pr.threads)]
        cells += [f"{ms(pr.modes[m]['median_ms'])} ± "
                  f"{ms(pr.modes[m]['iqr_ms'])}" if m in pr.modes else "-" for m in d.modes]
        cells.append(nbytes(max((v["peak_memory_bytes"] for v in pr.modes.values()), default=0)))
        ranks.add_row(*cells)
    pieces.append(ranks)
    bandwidth = f", {d.allreduce_gbps:.2f} GB/s" if d.allreduce_gbps and d.world_size > 1 else ""
    pieces.append(Text(f"all-reduce: {nbytes(d.allreduce_bytes)} of gradients per step (trainable parameters only; "
                       f"{count(run.trainable_params)} of {count(run.total_params)}), one all-reduce of that size "
                       f"{ms(d.allreduce_ms)} ms{bandwidth}"))
    pieces.append(Text("gradients after a synchronised step: " + (
        "identical on every rank" if d.gradients_match else "DIFFERENT between ranks in "
        + first_few(d.gradients_differ, 8))))
    if d.unused_parameters:
        pieces.append(Text(f"unused parameters (--find-unused-parameters): {first_few(d.unused_parameters, 8)}"))
    if d.ignored_parameters:
        pieces.append(Text(f"not all-reduced (DDP ignores them): {first_few(d.ignored_parameters, 8)}"))
    rounds = min((f.get("rounds", 0) for f in d.modes.values()), default=0)
    pieces.append(Text(f"step ms: the slowest rank's median; samples/s: the global batch over it; efficiency: against "
                       "one process at the same per-rank batch on rank 0's device; exposed comm: the step less the "
                       f"same step under no_sync(); the three timed in turn, {rounds} rounds, figures paired per round "
                       "with 95% intervals; 'noise': a figure noise alone could make (efficiency above 100%, "
                       "exposed comm below zero), not a result", style="dim"))
    return pieces


def _efficiency(f: dict[str, Any]) -> str:
    low, high = f.get("scaling_efficiency_interval") or (None, None)
    span = f" [{100 * low:.0f}–{100 * high:.0f}%]" if low is not None and high is not None else ""
    if f.get("scaling_efficiency_noise"):
        return f"noise{span}!"
    return "-" if f.get("scaling_efficiency") is None else share(f["scaling_efficiency"]) + span


def _exposed(f: dict[str, Any]) -> str:
    low, high = f.get("comm_exposed_interval_ms") or (None, None)
    span = f" [{ms(low)}, {ms(high)}]" if low is not None and high is not None else ""
    if f.get("comm_exposed_noise"):
        return f"noise{span}!"
    return f"{ms(f['comm_exposed_ms'])}{span}"


def comparison_lines(c: "Comparison") -> list[Any]:
    level = f"{100 * c.to_dict()['level']:.0f}%"
    table = styled_table(f"against the baseline (regression: the {level} interval of new/old lies above "
                         f"{1 + c.threshold / 100:.2f})")
    for col, justify in (("model", "left"), ("batch", "right"), ("mode", "left"), ("before ms", "right"),
                         ("after ms", "right"), ("new/old", "right"), (f"{level} interval", "right"),
                         ("verdict", "left")):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for ch in c.changes:
        verdict = "REGRESSED" if ch.regressed else ("cannot "
                                                    "tell" if ch.blind else ("faster" if ch.improved else "same"))
        table.add_row(ch.model, str(ch.batch), _MODE_LABELS.get(ch.mode, ch.mode) + (" frozen" if ch.frozen else ""),
                      ms(ch.before_ms), ms(ch.after_ms), f"×{ch.ratio:.3f}",
                      f"×{ch.ratio_low:.3f} to ×{ch.ratio_high:.3f}", verdict)
    pieces: list[Any] = [table]
    if any(ch.judged_on == "normalized" for ch in c.changes):
        pieces.append(Text("new/old: of each step ÷ a reference matrix product timed beside it, so that the "
                           "machine's own change of speed cancels; the step's own new/old is raw_ratio in the JSON",
                           style="dim"))
    return pieces + [Text(f"note: {n}", style="dim") for n in c.notes]


# --------------------------------------------------------------------------- checkpoints and comparisons


def compatibility_line(c: "Compatibility", what: str, left: str = "file", right: str = "model") -> Text:
    verdict = "fit" if c.compatible else "do not fit"
    prefix = f" (after dropping the '{c.stripped_prefix}' prefix)" if c.stripped_prefix else ""
    return Text(f"{what} {verdict} {c.model}{prefix}: {c.matched} keys match; {c.describe(left, right)}",
                style="" if c.compatible else "bold")


def checkpoint_lines(info: "CheckpointInfo") -> list[Any]:
    labels = {"state_dict": "state_dict", "training_checkpoint": "training checkpoint",
              "pickled_model": "whole pickled model", "torchvision_weights": "torchvision weights"}
    header = Text.assemble((info.path, "bold"), f" · {labels.get(info.format, info.format)} · "
                                                f"{nbytes(info.file_bytes)}")
    grid = Table.grid(padding=(0, 2))
    grid.add_column()
    grid.add_column()
    w = info.weights
    grid.add_row("tensors", f"{count(w.tensors)} holding {count(w.params)} values, {nbytes(w.bytes)}")
    grid.add_row("dtypes", ", ".join(f"{d} ×{n}" for d, n in w.dtypes.items()) or "-")
    if w.meta:
        grid.add_row("values", f"none in {count(w.meta)} meta tensors: shapes only, nothing to load")
    grid.add_row("saved on", ", ".join(f"{loc} ({n} storages)" for loc, n in info.saved_on.items()) or "-")
    if info.torchvision:
        grid.add_row("weights", f"{info.torchvision}; sha256 {'matches' if info.hash_ok else 'does NOT match'} the "
                                "file name")
    if info.pickled_class:
        grid.add_row("class", f"{info.pickled_class} (unpickled because of --trust)")
    if info.format == "training_checkpoint":
        grid.add_row("keys", ", ".join(info.keys))
        grid.add_row("epoch", str(info.epoch))
        grid.add_row("loss", str(info.loss))
        if info.optimizer:
            o = info.optimizer
            lrs = ", ".join(f"{x:g}" for x in o.lr)
            grid.add_row("optimizer", f"{o.type}, {o.param_groups} param groups (lr {lrs}), "
                                      f"state for {o.params} params: {o.state_tensors} tensors, "
                                      f"{nbytes(o.state_bytes)}")
    pieces: list[Any] = [header, grid]
    if info.compatibility:
        pieces.append(compatibility_line(info.compatibility, "these weights"))
    pieces += [Text(f"note: --model: {n}", style="dim") for n in info.model_notes]
    return pieces


def comparison_model_lines(c: "ModelComparison", depth: int) -> list[Any]:
    header = Text.assemble(("A "
                            "", "dim"), (c.a.model, "bold"), f" ({c.a.source}) · ", ("B ", "dim"), (c.b.model, "bold"),
                           f" ({c.b.source}) · input {shape(c.a.input_size)} · ",
                           ("identical" if c.identical else "different", "bold"))
    totals = styled_table()
    for col in ("", "A", "B", "B − A"):
        totals.add_column(col, justify="left" if not col else "right")
    totals.add_row("params", count(c.a.params), count(c.b.params), f"{c.params_change:+,}")
    totals.add_row("trainable", count(c.a.trainable_params), count(c.b.trainable_params), f"{c.trainable_change:+,}")
    totals.add_row("MACs", macs(c.a.macs), macs(c.b.macs),
                   f"{100 * c.macs_change:+.1f}%" if c.macs_change is not None else "-")
    pieces: list[Any] = [header, totals]
    shown = [d for d in c.layers if d.depth <= depth]
    if c.layers:
        table = styled_table(f"layers that differ ({len(c.layers)}; {len(shown)} down to depth {depth})")
        for col, justify in (("layer", "left"), ("", "left"), ("A", "left"), ("B", "left"), ("A params", "right"),
                             ("B params", "right")):
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        for d in shown:
            a = f"{d.a_type} {shape(d.a_shape)}" if d.a_type else "-"
            b = f"{d.b_type} {shape(d.b_shape)}" if d.b_type else "-"
            table.add_row("  " * (d.depth - 1) + d.name, d.status, a, b,
                          count(d.a_params) if d.a_params is not None else "-",
                          count(d.b_params) if d.b_params is not None else "-")
        pieces.append(table)
    else:
        pieces.append(Text("every layer matches: same names, types, output shapes and parameters"))
    pieces.append(compatibility_line(c.state_dict, "A's weights", "A", "B"))
    pieces += [Text(f"note: {n}", style="dim") for n in c.notes]
    return pieces


# --------------------------------------------------------------------------- trainable


def trainable_lines(r: "TrainableReport") -> list[Any]:
    header = Text.assemble((r.model, "bold"), f" ({r.source})")
    plan = []
    if r.plan["freeze_all"]:
        plan.append("freeze all")
    if r.plan["freeze_except"]:
        plan.append("freeze all except " + ",".join(r.plan["freeze_except"]))
    if r.plan["freeze"]:
        plan.append("freeze " + ",".join(r.plan["freeze"]))
    header.append(" · " + ("; ".join(plan) if plan else "nothing frozen"))
    if r.head:
        header.append(f"\nnew head {r.head.name}: {r.head.new}")

    table = styled_table()
    table.add_column("block")
    changed = any(b.params_before != b.params_after for b in r.blocks)
    table.add_column("params", justify="right")
    if changed:
        table.add_column("params after", justify="right")
    table.add_column("trainable before", justify="right")
    table.add_column("trainable after", justify="right")
    for b in r.blocks:
        if not (b.params_before or b.params_after):
            continue
        cells = [b.name, count(b.params_before)]
        if changed:
            cells.append(count(b.params_after))
        cells += [count(b.trainable_before), count(b.trainable_after)]
        table.add_row(*cells)

    totals = Table.grid(padding=(0, 2))
    totals.add_column()
    totals.add_column(justify="right")
    totals.add_column(justify="right")
    totals.add_row("", "before", "after")
    totals.add_row("total params", count(r.before.total_params), count(r.after.total_params))
    totals.add_row("trainable", count(r.before.trainable_params), count(r.after.trainable_params))
    totals.add_row("trainable share", share(r.before.trainable_share), share(r.after.trainable_share))
    totals.add_row("gradients", nbytes(r.before.grad_bytes), nbytes(r.after.grad_bytes))
    totals.add_row(f"{r.optimizer} "
                   "state", nbytes(r.before.optimizer_state_bytes), nbytes(r.after.optimizer_state_bytes))
    pieces: list[Any] = [header, table, totals,
                         Text(f"freezing saves {nbytes(r.saved_bytes)} of gradient and {r.optimizer} state memory")]
    if r.weights:
        pieces.append(Text(f"weights: {r.weights}", style="dim"))
    bn = r.batchnorm
    if bn.frozen:
        pieces.append(Text(f"--freeze-bn: {bn.layers} BatchNorm layers in eval mode; {bn.buffers} buffers "
                           "(running_mean, running_var, num_batches_tracked) stop updating"))
    if r.groups:
        groups = styled_table("optimizer parameter groups")
        for col in ("modules", "lr", "tensors", "trainable params", "frozen params"):
            groups.add_column(col, justify="left" if col == "modules" else "right")
        for g in r.groups:
            groups.add_row(g.modules, f"{g.lr:g}", str(g.tensors), count(g.params), count(g.frozen_params))
        pieces.append(groups)
    pieces += [Text(f"note: {n}", style="dim") for n in r.notes]
    return pieces


def print_pieces(pieces: list[Any]) -> None:
    out = console()
    for p in pieces:
        out.print(p)


def warn(message: str) -> None:
    """One line on stderr."""
    sys.stderr.write(f"warning: {message}\n")
