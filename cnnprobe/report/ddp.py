"""`cnnprobe bench --nproc`: the data-parallel step against one process, rank by rank, and the all-reduce."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text

from ..core.formatting import count, first_few, inputs, ms, nbytes, share
from .tables import Col, Fitted, marked, mode_label

if TYPE_CHECKING:
    from ..benchmark.distributed.result import DistResult


def ddp_lines(d: DistResult) -> list[Any]:
    run = d.run
    pieces: list[Any] = [
        Text.assemble((run.model, "bold"), f" ({run.source}) · batch {run.batch} per rank, {d.global_batch} in all · "
                      f"input {inputs(run.input_size, run.inputs)}"),
        Text(f"DistributedDataParallel · {d.world_size} rank{'s' if d.world_size != 1 else ''} · {d.backend} · "
             f"{run.device_name} ({run.device}) · {run.dtype} · optimizer {run.settings.get('optimizer')}"
             + (f" · buckets of {d.bucket_mb:g} MB" if d.bucket_mb else "")),
        step_table(d), rank_table(d),
    ]
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


def step_table(d: DistResult) -> Fitted:
    table = Fitted([Col("mode", "left", key=True), *(Col(c) for c in (
        "step ms", "IQR", "samples/s", "1-process ms", "efficiency", "exposed comm ms", "no_sync ms", "peak mem"))],
        collapse_padding=True)
    by_mode = {r.mode: r for r in d.run.results}
    for mode, f in d.modes.items():
        r = by_mode[mode]
        table.add_row(mode_label(mode), ms(f["median_ms"]), marked(ms(r.iqr_ms), r.noisy),
                      f"{f['aggregate_samples_per_s']:,.1f}", ms(f["single_process_ms"]), efficiency(f),
                      exposed(f), ms(f["no_sync_ms"]), nbytes(r.peak_memory_bytes) if r.memory_method else "-")
    return table


def rank_table(d: DistResult) -> Fitted:
    table = Fitted([Col("rank", key=True), Col("host", "left", text=True), Col("device", "left"), Col("threads"),
                    *(Col(f"{mode_label(m)} ms") for m in d.modes), Col("peak mem")])
    for pr in d.per_rank:
        cells = [str(pr.rank), pr.host, pr.device, str(pr.threads)]
        cells += [f"{ms(pr.modes[m]['median_ms'])} ± {ms(pr.modes[m]['iqr_ms'])}" if m in pr.modes else "-"
                  for m in d.modes]
        cells.append(nbytes(max((v["peak_memory_bytes"] for v in pr.modes.values()), default=0)))
        table.add_row(*cells)
    return table


def efficiency(f: dict[str, Any]) -> str:
    low, high = f.get("scaling_efficiency_interval") or (None, None)
    span = f" [{100 * low:.0f}–{100 * high:.0f}%]" if low is not None and high is not None else ""
    if f.get("scaling_efficiency_noise"):
        return marked(f"noise{span}", True)
    return "-" if f.get("scaling_efficiency") is None else share(f["scaling_efficiency"]) + span


def exposed(f: dict[str, Any]) -> str:
    low, high = f.get("comm_exposed_interval_ms") or (None, None)
    span = f" [{ms(low)}, {ms(high)}]" if low is not None and high is not None else ""
    if f.get("comm_exposed_noise"):
        return marked(f"noise{span}", True)
    return f"{ms(f['comm_exposed_ms'])}{span}"
