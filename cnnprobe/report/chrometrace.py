"""`profile --trace`: the traced step in the Chrome Trace Event Format, what Perfetto and chrome://tracing open.

The same shape torch.profiler's `export_chrome_trace` writes: complete events (`ph: "X"`, µs) on one process
named after the model, a thread per track (phases, modules, operators) in a stable order, and the live tensor
memory as a counter track. `check_trace` is the structural check the tests hold a trace to.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..benchmark.attribution.record import ProfileReport
from ..core.errors import CnnprobeError
from .console import json_text
from .files import write_atomic

PID = 1
TRACKS = {"phases": 1, "modules": 2, "operators": 3}  # tid of each known track, top to bottom in the viewer
MEMORY_COUNTER = "live tensor memory"
PHASES = {"X", "C", "M", "i"}
METADATA = {"process_name", "process_labels", "process_sort_index", "thread_name", "thread_sort_index"}
EDGE_US = 0.5  # spans sharing an edge may disagree by float rounding of µs
MAX_OVERLAPS = 20  # overlaps listed one by one; the rest are counted


class NoTimelineError(CnnprobeError):
    """A trace asked of a profile that traced no step."""


def _track_ids(report: ProfileReport) -> dict[str, int]:
    """Known tracks keep their ids; any other track gets the next id, in order of first appearance."""
    tids = dict(TRACKS)
    assert report.timeline is not None
    for event in report.timeline.events:
        tids.setdefault(event.track, len(tids) + 1)
    return tids


def _metadata(report: ProfileReport, tids: dict[str, int]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": PID, "tid": 0, "args": {"name": report.model}},
        {"ph": "M", "name": "process_sort_index", "pid": PID, "tid": 0, "args": {"sort_index": 0}},
    ]
    for track, tid in tids.items():
        events.append({"ph": "M", "name": "thread_name", "pid": PID, "tid": tid, "args": {"name": track}})
        events.append({"ph": "M", "name": "thread_sort_index", "pid": PID, "tid": tid, "args": {"sort_index": tid}})
    return events


def chrome_trace(report: ProfileReport) -> dict[str, Any]:
    """The traced step as a Chrome trace: one complete event per span, a counter sample per memory reading."""
    timeline = report.timeline
    if timeline is None:
        raise NoTimelineError(f"the profile of {report.model} traced no step, so there is no trace to write")
    tids = _track_ids(report)
    events = _metadata(report, tids)
    for e in timeline.events:
        events.append({"ph": "X", "name": e.name, "cat": e.category, "ts": e.start_us, "dur": e.duration_us,
                       "pid": PID, "tid": tids[e.track], "args": dict(e.args)})
    for ts, live in timeline.memory:
        events.append({"ph": "C", "name": MEMORY_COUNTER, "ts": ts, "pid": PID, "args": {"bytes": live}})
    roof = asdict(report.roof)
    roof["ridge_flops_per_byte"] = report.roof.ridge
    other = {"model": report.model, "task": report.task, "batch": report.batch, "device": report.device,
             "device_name": report.device_name, "dtype": report.dtype, "mode": report.mode,
             "step_ms": report.step_ms, "unprofiled_step_ms": report.unprofiled_step_ms,
             "overhead": report.overhead, "roof": roof, "timeline_device": timeline.device,
             "timeline_note": timeline.note, "notes": list(report.notes)}
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": other}


def write_trace(report: ProfileReport, path: str | Path) -> Path:
    """The trace as standard JSON, written whole or not at all."""
    return write_atomic(path, json_text(chrome_trace(report)))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _event_problems(i: int, e: Any) -> list[str]:
    """What is wrong with one event on its own."""
    if not isinstance(e, dict):
        return [f"event {i} is not an object"]
    ph, name = e.get("ph"), e.get("name")
    where = f"event {i} ({name!r})"
    if ph not in PHASES:
        return [f"{where} has ph {ph!r}, not one of {', '.join(sorted(PHASES))}"]
    out = []
    if not isinstance(name, str):
        out.append(f"event {i} has no name")
    if not isinstance(e.get("pid"), int):
        out.append(f"{where} has no integer pid")
    if ph in ("X", "M", "i") and not isinstance(e.get("tid"), int):
        out.append(f"{where} has no integer tid")
    if "args" in e and not isinstance(e["args"], dict):
        out.append(f"{where} has args that are not an object")
    if ph == "M":
        if name not in METADATA:
            out.append(f"{where} is metadata of an unknown kind")
        return out
    fields = ("ts", "dur") if ph == "X" else ("ts",)
    for key in fields:
        if key not in e:
            out.append(f"{where} has no {key}")
        elif not _number(e[key]) or e[key] < 0:
            out.append(f"{where} has {key} {e[key]!r}, not a finite number ≥ 0")
    if ph == "C":
        values = e.get("args")
        if not isinstance(values, dict) or not values or not all(_number(v) for v in values.values()):
            out.append(f"{where} is a counter without numeric values in args")
    return out


def _overlaps(spans: list[tuple[float, float, str]], track: tuple[int, int]) -> list[str]:
    """Pairs on one track that overlap without nesting. Sorted by start, with a stack of the open spans, each
    inside the one below it: a span is pushed and popped once, except where float rounding sorted a child
    (starting within EDGE_US of its parent) first: the parent then goes beneath it."""
    out = []
    stack: list[tuple[float, float, str]] = []
    for start, end, name in sorted(spans, key=lambda s: (s[0], -s[1])):
        held = []
        while stack:
            top_start, top_end, top_name = stack[-1]
            if top_end <= start + EDGE_US:
                stack.pop()  # ended before this one starts
            elif end <= top_end + EDGE_US:
                break  # nested in it
            elif top_start >= start - EDGE_US:
                held.append(stack.pop())  # starts with this one and ends first: nested in this one
            else:
                out.append(f"on track pid {track[0]} tid {track[1]}, {top_name!r} ({top_start:g}–{top_end:g} µs) "
                           f"and {name!r} ({start:g}–{end:g} µs) overlap without nesting")
                break
        stack.append((start, end, name))
        stack.extend(reversed(held))
    return out


def check_trace(data: Any) -> list[str]:
    """The problems found in a Chrome trace (none: a valid one): each event well formed, with finite µs times
    ≥ 0, and every two complete events on one (pid, tid) track either nested or disjoint."""
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        return ["the trace is not an object with a traceEvents list"]
    problems = []
    if data.get("displayTimeUnit", "ms") not in ("ms", "ns"):
        problems.append(f"displayTimeUnit is {data['displayTimeUnit']!r}, not 'ms' or 'ns'")
    tracks: dict[tuple[int, int], list[tuple[float, float, str]]] = {}
    for i, e in enumerate(data["traceEvents"]):
        found = _event_problems(i, e)
        problems.extend(found)
        if not found and e["ph"] == "X":
            tracks.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"], e["name"]))
    overlaps = [p for track, spans in sorted(tracks.items()) for p in _overlaps(spans, track)]
    problems.extend(overlaps[:MAX_OVERLAPS])
    if len(overlaps) > MAX_OVERLAPS:
        problems.append(f"and {len(overlaps) - MAX_OVERLAPS} more overlapping pairs")
    return problems
