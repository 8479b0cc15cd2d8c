"""`cnnprobe predict`: each mode and plan's predicted step on a device, its band, throughput, epoch time, the
operator classes that take it, and whether it fits; `cnnprobe calibrate`: the fitted curves."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text

from ..core.formatting import ms, nbytes, share
from .tables import Col, Fitted, mode_label, note_lines, weights_cell

if TYPE_CHECKING:
    from ..runtime.predict import TimeReport
    from ..runtime.records import Calibration


def duration(seconds: float | None) -> str:
    """An epoch's time: 42.1 s, 12.3 min, 5.20 h."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def prediction_table(r: TimeReport) -> Fitted:
    freezing = any(x.frozen for x in r.results)
    epoch = r.dataset_size is not None
    columns = [Col("mode", "left", key=True), *([Col("weights", "left", key=True)] if freezing else []),
               Col("step ms"), Col("band ms"), Col("fwd"), Col("bwd"), Col("opt"), Col("samples/s"),
               *([Col("epoch" if r.epochs == 1 else f"{r.epochs} epochs")] if epoch else []), Col("peak mem"),
               Col("fits", "left"), Col("most time in", "left", text=True)]
    table = Fitted(columns, collapse_padding=True)
    for x in r.results:
        classes = ", ".join(f"{c} {share(s)}" for c, s in x.dominant(3))
        table.add_row(mode_label(x.mode), *([weights_cell(x.mode, x.frozen)] if freezing else []),
                      ms(x.predicted_ms), f"{ms(x.low_ms)}–{ms(x.high_ms)}", ms(x.forward_ms),
                      ms(x.backward_ms) if x.mode != "forward" else "-",
                      ms(x.optimizer_ms) if x.mode == "train_step" else "-", f"{x.samples_per_s:,.0f}",
                      *([duration(x.epoch_s)] if epoch else []), nbytes(x.predicted_peak_bytes),
                      "yes" if x.fits else Text("DOES NOT FIT", style="bold red"), classes)
    return table


def predict_lines(r: TimeReport) -> list[Any]:
    state = "calibrated" if r.calibrated else "UNCALIBRATED"
    pieces: list[Any] = [
        Text.assemble((r.model, "bold"), f" · batch {r.batch} · input {'×'.join(map(str, r.input_size))}"),
        Text(f"predicted for {r.device_name} ({r.device}, {nbytes(r.memory_bytes)}) · {r.dtype}"
             + (" (autocast)" if r.dtype != "float32" else "") + (" · channels_last" if r.channels_last else "")
             + f" · optimizer {r.optimizer} · {state} (×/÷ {1 + r.band:.2f}: {r.calibration})"),
        prediction_table(r),
    ]
    if r.dataset_size is not None:
        pieces.append(Text(f"epoch: {r.dataset_size:,} samples at batch {r.batch}"
                           + (f", {r.epochs} epochs" if r.epochs != 1 else "")))
    tight = [x for x in r.results if not x.fits]
    if tight:
        worst = max(tight, key=lambda x: x.predicted_peak_bytes)
        pieces.append(Text(f"does not fit: {mode_label(worst.mode)} needs {nbytes(worst.predicted_peak_bytes, 2)} "
                           f"of {r.device}'s {nbytes(r.memory_bytes, 2)} (cnnprobe memory's prediction, CUDA "
                           "rounding); try a smaller --batch, freezing, or bfloat16", style="bold red"))
    return pieces + note_lines(r.notes)


def calibration_lines(cal: Calibration) -> list[Any]:
    table = Fitted([Col("class", "left", key=True), Col("roof", "left"), Col("peak share"), Col("half at")])
    for kind, curves in (("compute", cal.compute), ("memory", cal.memory)):
        for op_class, curve in curves.items():
            unit = "FLOP" if kind == "compute" else "B"
            table.add_row(op_class.value, kind, share(curve.peak_share), f"{curve.half_work:.3g} {unit}")
    fit = f"; the grid's median |predicted/measured − 1| after the fit: {share(cal.fit_error)}" \
        if cal.fit_error is not None else ""
    rates = [f"{c.value} {gbps:.3g} GB/s" + (f" (backward {cal.backward_weights_gbps[c]:.3g})"
                                             if c in cal.backward_weights_gbps else "")
             for c, gbps in cal.weights_gbps.items()]
    extra = [Text("weights prepared at: " + ", ".join(rates))] if rates else []
    if cal.page_in_gbps:
        extra.append(Text(f"fresh pages faulted in at {cal.page_in_gbps:.3g} GB/s"))
    return [Text(f"{cal.device_name} ({cal.device_key}): {cal.source}"), table,
            Text(f"launch cost {cal.launch_us:.2f} µs per kernel{fit}"), *extra, *note_lines(cal.notes)]
