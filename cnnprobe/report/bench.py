"""`cnnprobe bench`: the machine and its switches, the timing table, freezing's saving, where the memory went,
the prediction beside the measurement, and the rows of the CSV."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text

from ..core.formatting import inputs, ms, nbytes, share
from .memory import category_label
from .tables import Col, Fitted, marked, marks_legend, mode_label, note_lines, weights_cell

if TYPE_CHECKING:
    from ..benchmark.result import BenchResult, ModeResult, Sweep

BENCH_COLUMNS = [
    "model", "device", "batch", "dtype", "mode", "frozen", "median_ms", "iqr_ms", "runs", "samples_per_s",
    "tflops", "peak_share", "datasheet_share", "peak_memory_bytes", "memory_method", "forward_ms", "forward_iqr_ms",
    "backward_ms", "backward_iqr_ms", "optimizer_ms", "optimizer_iqr_ms", "noisy", "threads", "repeat",
    "blocks", "steps_per_block", "few_blocks", "reference_n", "reference_ms", "step_per_reference",
]


def bench_rows(runs: list[BenchResult]) -> list[dict[str, Any]]:
    """Flat rows, one per model, batch and mode: what the CSV holds."""
    rows = []
    for run in runs:
        for r in run.results:
            rows.append({"model": run.model, "device": run.device, "batch": run.batch, "dtype": run.dtype,
                         "threads": run.threads, "repeat": run.repeat,
                         **{k: getattr(r, k) for k in BENCH_COLUMNS if hasattr(r, k)}})
    return rows


def bench_lines(sweep: Sweep) -> list[Any]:
    if not sweep.runs:
        return []
    several = len(sweep.runs) > 1
    results = [r for run in sweep.runs for r in run.results]
    frozen_any = any(r.frozen for r in results)
    pieces = header_lines(sweep.runs[0], several)
    pieces.append(timing_table(sweep, several, frozen_any))
    pieces += freezing_lines(sweep)
    pieces += int8_lines(sweep)
    line = memory_line(sweep.runs[0]) if not several else None
    if line is not None:
        pieces.append(line)
    pieces += prediction_lines(sweep, several, frozen_any)
    pieces += marks_legend(results)
    pieces.append(_footnote(results))
    pieces += [Text(f"--batch auto: {model} fits batch {batch}") for model, batch in sweep.auto.items()]
    return pieces + note_lines(sorted({n for run in sweep.runs for n in run.notes}))


def int8_lines(sweep: Sweep) -> list[Any]:
    """What int8 saves: each quantized run's forward pass against its float twin's."""
    lines = []
    for run in sweep.runs:
        q = run.int8
        if not q:
            continue
        faster = f"{q['speedup']:.2f}× as fast" if q["speedup"] >= 1 else f"{1 / q['speedup']:.2f}× slower"
        lines.append(Text(f"int8 vs float32: {run.model} b{run.batch} forward {ms(q['int8_median_ms'])} ms, "
                          f"{q['float_model']} {ms(q['float_median_ms'])} ms{'!' if q['float_noisy'] else ''}: "
                          f"int8 runs {faster}"))
    return lines


def _switches(first: BenchResult) -> list[str]:
    """The settings a timing depends on, as the header line says them."""
    s = first.settings
    switches = [f"{first.threads} thread{'s' if first.threads != 1 else ''}",
                f"{first.dtype}" + (" (autocast)" if s.get("autocast") else "")]
    if s.get("channels_last"):
        switches.append("channels_last")
    if s.get("compile"):
        switches.append("torch.compile")
    if "cudnn_benchmark" in s:
        on = {True: "on", False: "off"}
        switches.append(f"cudnn.benchmark {on[bool(s['cudnn_benchmark'])]}")
        switches.append(f"TF32 matmul {on[bool(s['tf32_matmul'])]}, cuDNN {on[bool(s['tf32_cudnn'])]}")
    switches.append(f"optimizer {s.get('optimizer')}")
    if first.repeat > 1:
        switches.append(f"{first.repeat} repeats")
    return switches


def header_lines(first: BenchResult, several: bool) -> list[Any]:
    pieces: list[Any] = []
    if not several:
        pieces.append(Text.assemble((first.model, "bold"), f" ({first.source}) · batch {first.batch} · input "
                                    f"{inputs(first.input_size, first.inputs)}"))
    pieces.append(Text.assemble((first.device_name, "bold"), f" ({first.device}) · " + " · ".join(_switches(first))))
    if first.peak:
        line = f"peak {first.peak['tflops']:.3g} TFLOP/s: {first.peak['source']}, {first.peak['detail']}"
        sheet = first.peak.get("datasheet")
        if sheet:
            line += f"; datasheet {sheet['tflops']:.4g} TFLOP/s ({sheet['detail']})"
        pieces.append(Text(line))
    return pieces


def _key_columns(several: bool, frozen_any: bool) -> list[Col]:
    """The columns that name a row: model and batch when there are several, the mode, the weights."""
    columns = [Col("model", "left", key=True), Col("batch", key=True)] if several else []
    return columns + [Col("mode", "left", key=True)] + ([Col("weights", "left", key=True)] if frozen_any else [])


def _key_cells(run: BenchResult, r: ModeResult, several: bool, frozen_any: bool) -> list[str]:
    cells = ([run.model, str(run.batch)] if several else []) + [mode_label(r.mode)]
    return cells + ([weights_cell(r.mode, r.frozen)] if frozen_any else [])


def timing_table(sweep: Sweep, several: bool, frozen_any: bool) -> Fitted:
    mfu = any(r.datasheet_share is not None for run in sweep.runs for r in run.results)
    figures = ["median ms", "IQR", "samples/s", "fwd", "bwd", "opt", "TFLOP/s", "% peak", *(["MFU"] if mfu else []),
               "peak mem"]
    table = Fitted(_key_columns(several, frozen_any) + [Col(f) for f in figures], collapse_padding=True)
    for run in sweep.runs:
        for r in run.results:
            cells = [ms(r.median_ms), marked(ms(r.iqr_ms), r.noisy, r.few_blocks), f"{r.samples_per_s:,.1f}",
                     ms(r.forward_ms), ms(r.backward_ms), ms(r.optimizer_ms),
                     "-" if r.tflops is None else f"{r.tflops:.3f}",
                     "-" if r.peak_share is None else share(r.peak_share)]
            if mfu:
                cells.append("-" if r.datasheet_share is None else share(r.datasheet_share))
            cells.append(nbytes(r.peak_memory_bytes) if r.memory_method else "-")
            table.add_row(*_key_cells(run, r, several, frozen_any), *cells)
    return table


def freezing_lines(sweep: Sweep) -> list[Text]:
    """How much faster each trained mode ran with the freezing plan than without."""
    pieces = []
    for run in sweep.runs:
        for mode in ("forward_backward", "train_step"):
            saving = run.frozen_saving(mode)
            frozen, full = run.result(mode, True), run.result(mode, False)
            if saving is None or frozen is None or full is None:  # frozen_saving is None unless both ran
                continue
            verdict = (f"freezing saves {share(saving)} of a {mode}" if saving >= 0
                       else f"freezing did not make {mode} faster here (see the IQR)")
            pieces.append(Text(f"{run.model} b{run.batch}: {verdict} ({ms(frozen.median_ms)} ms frozen, "
                               f"{ms(full.median_ms)} ms with all params trainable)"))
    return pieces


def memory_line(run: BenchResult) -> Text | None:
    """Where the largest peak of a run goes, category by category."""
    heaviest = run.heaviest()
    if heaviest is None or not heaviest.memory_breakdown:
        return None
    parts = ", ".join(f"{category_label(k)} {nbytes(v)}" for k, v in heaviest.memory_breakdown.items() if v)
    what = f"{mode_label(heaviest.mode)}{' frozen' if heaviest.frozen else ''}"
    counted = "counted tensor by tensor" if heaviest.memory_method == "tensors" else "allocator peak; tensors"
    return Text(f"{run.model} b{run.batch} peak memory {nbytes(heaviest.peak_memory_bytes)} in {what} "
                f"({counted}): {parts}")


def prediction_lines(sweep: Sweep, several: bool, frozen_any: bool) -> list[Any]:
    """Peak memory and step time as measured and as `cnnprobe memory` and `cnnprobe predict` predicted them,
    where known."""
    predicted = [(run, r) for run in sweep.runs for r in run.results
                 if r.prediction_ratio is not None or r.time_ratio is not None]
    if not predicted:
        return []
    memory = any(r.prediction_ratio is not None for _, r in predicted)
    time = any(r.time_ratio is not None for _, r in predicted)
    columns = _key_columns(several, frozen_any)
    if memory:
        columns += [Col("measured"), Col("predicted"), Col("predicted/measured")]
    if time:
        columns += [Col("step ms"), Col("pred. ms"), Col("ratio")]
    check = Fitted(columns)
    for run, r in predicted:
        cells = _key_cells(run, r, several, frozen_any)
        if memory:
            cells += [nbytes(r.peak_memory_bytes), nbytes(r.predicted_peak_bytes or 0),
                      f"{r.prediction_ratio:.3f}" if r.prediction_ratio is not None else "-"]
        if time:
            cells += [ms(r.median_ms), ms(r.predicted_ms), f"{r.time_ratio:.2f}" if r.time_ratio is not None else "-"]
        check.add_row(*cells)
    what = " and ".join(w for w, on in (("peak memory", memory), ("step time", time)) if on)
    by = " and ".join(w for w, on in (("cnnprobe memory", memory), ("cnnprobe predict", time)) if on)
    return [Text(f"{what}, measured and predicted on fake tensors ({by}):"), check]


def _least(values: list[int]) -> str:
    known = [v for v in values if v]
    return str(min(known)) if known else "-"


def _footnote(results: list[ModeResult]) -> Text:
    blocks, steps = _least([r.blocks for r in results]), _least([r.steps_per_block for r in results])
    return Text(f"times in ms, each the median over timed blocks (at least {blocks} blocks of at least {steps} "
                "steps; per mode in the JSON); fwd, bwd, opt: the step's median split in each phase's share of the "
                "same blocks; TFLOP/s from counted FLOPs; peak mem: the allocator's peak over a steady-state step",
                style="dim")
