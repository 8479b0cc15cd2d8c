"""The profile's records rendered: the Chrome trace (and its structural check) and the roofline PNG.

The records are built by hand here, so that each figure in the output can be held to the one put in.
"""

from __future__ import annotations

import json

import pytest

from cnnprobe.benchmark.attribution.record import ModuleProfile, ProfileReport, Roof, Timeline, TraceEvent
from cnnprobe.core.errors import CnnprobeError
from cnnprobe.report.chrometrace import (
    EDGE_US,
    MEMORY_COUNTER,
    TRACKS,
    check_trace,
    chrome_trace,
    write_trace,
)
from cnnprobe.report.roofline import LABELLED, axis_ranges, plot_roofline, roof_line, roofline_points

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(name, depth=1, fwd=1.0, bwd=2.0, fmacs=10**6, bmacs=2 * 10**6, fbytes=10**5, bbytes=2 * 10**5, **kw):
    return ModuleProfile(name=name, type=kw.pop("type", "Conv2d"), depth=depth, calls=1, forward_ms=fwd,
                         forward_iqr_ms=0.01, backward_ms=bwd, backward_iqr_ms=None if bwd is None else 0.02,
                         forward_macs=fmacs, backward_macs=bmacs, forward_bytes=fbytes, backward_bytes=bbytes,
                         frozen=kw.pop("frozen", False), **kw)


def _span(name, category, track, start, dur, **args):
    return TraceEvent(name=name, category=category, track=track, start_us=start, duration_us=dur, args=args)


def _timeline() -> Timeline:
    phases = [_span("forward", "phase", "phases", 0.0, 400.0), _span("backward", "phase", "phases", 400.0, 600.0),
              _span("optimizer", "phase", "phases", 1000.0, 100.0)]
    forward = [_span("Net", "forward", "modules", 0.0, 390.0),
               _span("conv1", "forward", "modules", 10.0, 90.0, macs=10**6, bytes=10**5),
               _span("layer1", "forward", "modules", 100.0, 200.0, macs=4 * 10**6, bytes=3 * 10**5),
               _span("layer1.0", "forward", "modules", 100.0, 100.0),
               _span("layer1.1", "forward", "modules", 200.0, 100.0),
               _span("fc", "forward", "modules", 300.0, 80.0, macs=10**4, bytes=4 * 10**4)]
    backward = [_span("Net", "backward", "modules", 410.0, 580.0),
                _span("fc", "backward", "modules", 410.0, 70.0, macs=2 * 10**4),
                _span("layer1", "backward", "modules", 480.0, 320.0),
                _span("layer1.1", "backward", "modules", 480.0, 160.0),
                _span("layer1.0", "backward", "modules", 640.0, 160.0),
                _span("conv1", "backward", "modules", 800.0, 180.0)]
    operators = [_span("aten::conv2d", "operator", "operators", 12.0, 85.0),
                 _span("aten::convolution", "operator", "operators", 13.0, 80.0),
                 _span("aten::addmm", "operator", "operators", 301.5, 70.25)]
    memory = [(0.0, 1000), (150.0, 5000), (400.0, 9000), (990.0, 2000), (1100.0, 1500)]
    return Timeline(events=phases + forward + backward + operators, memory=memory, note="by hand")


def _report(timeline: Timeline | None = None, modules=None, unattributed=None) -> ProfileReport:
    roof = Roof(peak_tflops=2.0, bandwidth_gbps=50.0, peak_source="measured matmul", peak_detail="2048²",
                bandwidth_source="measured triad", bandwidth_detail="256 MiB")
    rows = modules if modules is not None else [
        _row("conv1", fwd=0.09, bwd=0.18),
        _row("layer1", fwd=0.2, bwd=0.32, fmacs=4 * 10**6, bmacs=8 * 10**6, fbytes=3 * 10**5, bbytes=6 * 10**5),
        _row("fc", type="Linear", fwd=0.08, bwd=0.07, fmacs=10**4, bmacs=2 * 10**4, fbytes=4 * 10**4, bbytes=8 * 10**4),
    ]
    extra = unattributed if unattributed is not None else {
        "outside modules": _row("outside modules", type="", fwd=0.01, bwd=0.01, fmacs=0, bmacs=0),
        "optimizer": _row("optimizer", type="", fwd=0.1, bwd=None, fmacs=0, bmacs=None, fbytes=10**6, bbytes=0),
    }
    return ProfileReport(model="Net", task="classification", batch=8, device="cpu", device_name="Test CPU",
                         dtype="float32", mode="train_step", frozen=False, threads=2, depth=1,
                         input_size=[3, 32, 32], step_ms=1.1, step_iqr_ms=0.05, unprofiled_step_ms=1.05,
                         unprofiled_iqr_ms=0.04, overhead=1.1 / 1.05 - 1, steps=10, roof=roof, modules=rows,
                         unattributed=extra, timeline=_timeline() if timeline is None else timeline)


def _x(data):
    return [e for e in data["traceEvents"] if e["ph"] == "X"]


# the trace


def test_trace_is_json_and_passes_its_own_check():
    data = chrome_trace(_report())
    again = json.loads(json.dumps(data, allow_nan=False))
    assert again == data
    assert check_trace(again) == []
    assert data["displayTimeUnit"] == "ms"


def test_one_complete_event_per_span_with_the_records_times_in_us():
    report = _report()
    assert report.timeline is not None
    spans = report.timeline.events
    events = _x(json.loads(json.dumps(chrome_trace(report))))
    assert len(events) == len(spans)
    for e, s in zip(events, spans):
        assert (e["name"], e["cat"], e["ts"], e["dur"], e["args"]) == (s.name, s.category, s.start_us,
                                                                        s.duration_us, s.args)
        assert e["pid"] == 1 and e["tid"] == TRACKS[s.track]
    conv1 = [e for e in events if e["name"] == "conv1" and e["cat"] == "forward"]
    assert conv1[0]["args"] == {"macs": 10**6, "bytes": 10**5}  # the counts travel in args


def test_tracks_are_named_and_ordered_by_metadata():
    data = chrome_trace(_report())
    meta = [e for e in data["traceEvents"] if e["ph"] == "M"]
    assert {e["args"]["name"] for e in meta if e["name"] == "process_name"} == {"Net"}
    names = {e["tid"]: e["args"]["name"] for e in meta if e["name"] == "thread_name"}
    assert names == {1: "phases", 2: "modules", 3: "operators"}
    order = {e["tid"]: e["args"]["sort_index"] for e in meta if e["name"] == "thread_sort_index"}
    assert sorted(names, key=order.__getitem__) == [1, 2, 3]
    assert {e["tid"] for e in _x(data)} == {1, 2, 3}


def test_an_unknown_track_gets_its_own_thread_after_the_known_ones():
    timeline = _timeline()
    timeline.events.append(_span("copy", "operator", "cuda stream 7", 5.0, 3.0))
    data = chrome_trace(_report(timeline))
    names = {e["tid"]: e["args"]["name"] for e in data["traceEvents"] if e.get("name") == "thread_name"}
    assert names[4] == "cuda stream 7"
    assert _x(data)[-1]["tid"] == 4
    assert check_trace(data) == []


def test_memory_is_a_counter_track_in_bytes():
    report = _report()
    assert report.timeline is not None
    counters = [e for e in chrome_trace(report)["traceEvents"] if e["ph"] == "C"]
    assert [(e["ts"], e["args"]["bytes"]) for e in counters] == report.timeline.memory
    assert {e["name"] for e in counters} == {MEMORY_COUNTER}
    assert all(e["pid"] == 1 for e in counters)


def test_other_data_carries_the_reports_figures():
    report = _report()
    other = chrome_trace(report)["otherData"]
    for key in ("model", "batch", "device", "dtype", "mode", "step_ms", "unprofiled_step_ms", "overhead"):
        assert other[key] == getattr(report, key)
    assert other["roof"]["peak_tflops"] == 2.0 and other["roof"]["bandwidth_gbps"] == 50.0
    assert other["roof"]["ridge_flops_per_byte"] == pytest.approx(2e12 / 50e9)


def test_write_trace_writes_what_chrome_trace_returns(tmp_path):
    report = _report()
    path = write_trace(report, tmp_path / "step.json")
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(chrome_trace(report)))
    assert check_trace(data) == []
    assert [p.name for p in tmp_path.iterdir()] == ["step.json"]  # no temporary file left


def test_write_trace_to_a_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(CnnprobeError, match="does not exist"):
        write_trace(_report(), tmp_path / "nowhere" / "t.json")


def test_no_timeline_is_one_clear_error(tmp_path):
    report = _report()
    report.timeline = None
    with pytest.raises(CnnprobeError) as e:
        write_trace(report, tmp_path / "t.json")
    assert "\n" not in str(e.value) and "Net" in str(e.value)
    assert not (tmp_path / "t.json").exists()


# the check


def _trace(*spans, tid=1):
    return {"traceEvents": [{"ph": "X", "name": n, "ts": ts, "dur": dur, "pid": 1, "tid": tid} for n, ts, dur in spans]}


def test_the_check_finds_a_pair_that_overlaps_without_nesting():
    problems = check_trace(_trace(("a", 0.0, 10.0), ("b", 5.0, 10.0)))
    assert len(problems) == 1 and "'a'" in problems[0] and "'b'" in problems[0]


def test_the_check_finds_overlap_only_on_one_track():
    data = _trace(("a", 0.0, 10.0))
    data["traceEvents"] += _trace(("b", 5.0, 10.0), tid=2)["traceEvents"]
    assert check_trace(data) == []


def test_the_check_finds_an_overlap_deep_in_a_nest():
    spans = [("root", 0.0, 100.0), ("p", 10.0, 50.0), ("c1", 10.0, 20.0), ("c2", 30.0, 10.0), ("bad", 35.0, 30.0)]
    problems = check_trace(_trace(*spans))
    assert len(problems) == 1 and "'bad'" in problems[0]


@pytest.mark.parametrize(("event", "word"), [
    ({"ph": "X", "name": "a", "ts": 1.0, "dur": -1.0, "pid": 1, "tid": 1}, "dur"),
    ({"ph": "X", "name": "a", "dur": 1.0, "pid": 1, "tid": 1}, "no ts"),
    ({"ph": "X", "name": "a", "ts": "1", "dur": 1.0, "pid": 1, "tid": 1}, "ts"),
    ({"ph": "X", "name": "a", "ts": True, "dur": 1.0, "pid": 1, "tid": 1}, "ts"),
    ({"ph": "X", "name": "a", "ts": float("nan"), "dur": 1.0, "pid": 1, "tid": 1}, "ts"),
    ({"ph": "X", "name": "a", "ts": 1.0, "dur": 1.0, "pid": 1}, "tid"),
    ({"ph": "B", "name": "a", "ts": 1.0, "pid": 1, "tid": 1}, "ph"),
    ({"ph": "C", "name": "mem", "ts": 1.0, "pid": 1, "args": {"bytes": "many"}}, "counter"),
    ({"ph": "M", "name": "thread_colour", "pid": 1, "tid": 1, "args": {}}, "metadata"),
    ({"ph": "i", "name": "a", "pid": 1, "tid": 1}, "no ts"),
    ("X", "not an object"),
])
def test_the_check_finds_a_malformed_event(event, word):
    data = chrome_trace(_report())
    data["traceEvents"].append(event)
    problems = check_trace(data)
    assert len(problems) == 1 and word in problems[0]


def test_the_check_refuses_what_is_not_a_trace():
    assert check_trace([]) and check_trace({"traceEvents": {}}) and check_trace({"events": []})


def test_the_check_allows_float_rounding_at_shared_edges():
    e = EDGE_US * 0.6
    nested = _trace(("parent", 10.0, 100.0), ("child", 10.0 - e, 30.0 + e), ("last", 80.0, 30.0 + e),
                    ("next", 110.0, 5.0))
    assert check_trace(nested) == []
    # a child sorted before its parent by rounding still has its own overlaps found
    rounded = _trace(("parent", 10.0, 100.0), ("child", 10.0 - e, 30.0), ("bad", 30.0, 30.0))
    problems = check_trace(rounded)
    assert len(problems) == 1 and "'child'" in problems[0] and "'bad'" in problems[0]
    # beyond the tolerance it is an overlap
    assert check_trace(_trace(("a", 0.0, 10.0), ("b", 10.0 - 2 * EDGE_US, 5.0)))


def test_the_check_handles_a_deep_and_a_wide_trace():
    deep = [(f"d{i}", float(i), 2.0 * (5000 - i)) for i in range(5000)]  # each inside the one before
    wide = [(f"w{i}", 20000.0 + 3.0 * i, 2.0) for i in range(5000)]
    assert check_trace(_trace(*deep, *wide)) == []
    broken = [*wide[:10], ("x", 20001.0, 3.0)]  # from inside w0 to inside w1
    problems = check_trace(_trace(*broken))
    assert len(problems) == 2 and "'w0'" in problems[0] and "'w1'" in problems[1]


# the roofline


def test_roof_line_is_the_bandwidth_slope_then_the_compute_roof():
    roof = _report().roof
    ridge = roof.ridge
    assert ridge == pytest.approx(40.0)  # 2 TFLOP/s over 50 GB/s
    intensities = [0.01, 1.0, ridge / 2, ridge, ridge * 2, 1e4]
    for i, y in zip(intensities, roof_line(roof, intensities)):
        assert y == pytest.approx(min(2.0, 50e9 * i / 1e12))
    assert roof_line(roof, [1.0]) == [pytest.approx(0.05)]  # 50 GB/s × 1 FLOP/B = 50 GFLOP/s
    assert roof_line(roof, [ridge])[0] == pytest.approx(roof.peak_tflops)


def test_roofline_points_one_per_row_and_direction_that_ran_and_counted():
    rows = [_row("both"), _row("forward only", bwd=None, bmacs=None),
            _row("no flops", fmacs=0, bmacs=0), _row("no bytes", fbytes=0, bbytes=0),
            _row("no time", fwd=0.0, bwd=0.0)]
    points = roofline_points(_report(modules=rows, unattributed={}))
    assert [(p.name, p.direction) for p in points] == [("both", "forward"), ("both", "backward"),
                                                       ("forward only", "forward")]
    fwd = points[0]
    assert fwd.intensity == pytest.approx(2 * 10**6 / 10**5)
    assert fwd.tflops == pytest.approx(2 * 10**6 / 1e-3 / 1e12)


def test_the_axes_hold_every_point_and_the_ridge():
    rows = [_row("dense", fwd=1e-3, fmacs=10**9, fbytes=10**3), _row("sparse", fwd=10.0, fmacs=1, fbytes=10**8)]
    report = _report(modules=rows, unattributed={})
    points = roofline_points(report)
    (x_lo, x_hi), (y_lo, y_hi) = axis_ranges(report.roof, points)
    for x in [p.intensity for p in points] + [report.roof.ridge]:
        assert x_lo < x < x_hi
    for y in [p.tflops for p in points] + [report.roof.peak_tflops]:
        assert y_lo < y < y_hi
    assert axis_ranges(report.roof, [])[0][0] < report.roof.ridge < axis_ranges(report.roof, [])[0][1]


@pytest.fixture
def figures(monkeypatch):
    """The figures plot_roofline draws, kept open to be read."""
    plt = pytest.importorskip("matplotlib.pyplot")
    kept: list = []
    monkeypatch.setattr(plt, "close", kept.append)
    yield kept
    monkeypatch.undo()
    for fig in kept:
        plt.close(fig)


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = plot_roofline(_report(), tmp_path / "roof.png")
    raw = path.read_bytes()
    assert raw[:8] == PNG_MAGIC and len(raw) > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["roof.png"]


def test_plot_draws_the_roofs_where_the_roof_says_and_every_point(tmp_path, figures):
    report = _report()
    plot_roofline(report, tmp_path / "roof.png")
    ax = figures[0].axes[0]
    (x_lo, x_hi), (y_lo, y_hi) = ax.get_xlim(), ax.get_ylim()
    bandwidth, compute = [line for line in ax.get_lines() if line.get_label().endswith(")")]
    ridge = 2e12 / 50e9
    assert list(bandwidth.get_xdata()) == pytest.approx([x_lo, ridge])
    assert list(bandwidth.get_ydata()) == pytest.approx([50e9 * x_lo / 1e12, 2.0])  # by hand, not roof_line
    assert list(compute.get_xdata()) == pytest.approx([ridge, x_hi]) and list(compute.get_ydata()) == [2.0, 2.0]
    assert "50.0 GB/s" in bandwidth.get_label() and "measured triad" in bandwidth.get_label()
    assert "2 TFLOP/s" in compute.get_label() and "measured matmul" in compute.get_label()
    drawn = {c.get_label(): [float(v) for o in c.get_offsets() for v in o] for c in ax.collections}
    expected = roofline_points(report)
    assert len(expected) == 6  # 3 modules × 2 directions; the unattributed rows count no FLOPs
    for direction in ("forward", "backward"):
        assert drawn[direction] == pytest.approx([v for p in expected if p.direction == direction
                                                  for v in (p.intensity, p.tflops)])
    xs, ys = drawn["forward"][0::2] + drawn["backward"][0::2], drawn["forward"][1::2] + drawn["backward"][1::2]
    assert all(x_lo < x < x_hi for x in xs) and all(y_lo < y < y_hi for y in ys)
    title = ax.get_title()
    assert all(part in title for part in ("Net", "batch 8", "Test CPU", "float32", "train_step"))
    labels = [t.get_text() for t in ax.texts]
    # each row once; the unattributed rows are among the longest but have no point to label
    assert sorted(n for n in labels if not n.startswith("ridge")) == ["conv1", "fc", "layer1"]


def test_plot_labels_only_the_longest_rows(tmp_path, figures):
    rows = [_row(f"m{i}", fwd=0.1 * (i + 1), bwd=0.1) for i in range(LABELLED + 3)]
    plot_roofline(_report(modules=rows, unattributed={}), tmp_path / "roof.png")
    labels = {t.get_text() for t in figures[0].axes[0].texts if not t.get_text().startswith("ridge")}
    assert labels == {f"m{i}" for i in range(3, LABELLED + 3)}


def test_plot_with_no_points_still_draws_the_roofs(tmp_path):
    pytest.importorskip("matplotlib")
    report = _report(modules=[_row("idle", fmacs=0, bmacs=0)], unattributed={})
    assert roofline_points(report) == []
    assert plot_roofline(report, tmp_path / "r.png").read_bytes()[:8] == PNG_MAGIC


def test_plot_refuses_a_roof_that_was_not_measured(tmp_path):
    report = _report()
    report.roof.bandwidth_gbps = 0.0
    with pytest.raises(CnnprobeError, match="bandwidth roof"):
        plot_roofline(report, tmp_path / "r.png")
    assert not (tmp_path / "r.png").exists()


# the table


def _rendered_table(width: int, top: int | None = None) -> str:
    import io

    from rich.console import Console

    from cnnprobe.benchmark.attribution.join import read_roofline
    from cnnprobe.report.profile import profile_lines

    report = _report()
    read_roofline([*report.modules, *report.unattributed.values()], report.roof, report.step_ms)
    out = io.StringIO()
    console = Console(file=out, width=width, highlight=False, soft_wrap=False, markup=False, emoji=False)
    for piece in profile_lines(report, top):
        console.print(piece)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()) + "\n"


def test_the_profile_table_snapshot(snapshot):
    text = _rendered_table(160)
    snapshot("profile_table", text)
    # the roofline's reading, by hand: conv1 moves 3e5 B and does 6e6 FLOPs in 0.27 ms; the roofline allows
    # max(6e6 / 2e12, 3e5 / 50e9) s = 6 µs: 2.2% of roof, bound by memory (intensity 20 < ridge 40)
    conv1 = next(line for line in text.splitlines() if line.startswith("conv1"))
    assert "memory" in conv1 and "2.2%" in conv1 and " 20 " in conv1


@pytest.mark.parametrize("width", [100, 80, 60])
def test_the_profile_table_cuts_no_figure_when_narrow(width):
    text = _rendered_table(width)
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= width
    for figure in ("0.090 ±0.010", "0.180 ±0.020", "2.2%", "293.0 KiB", "1.0 M", "memory"):
        assert figure in text


def test_top_folds_the_other_rows_into_one_line():
    text = _rendered_table(160, top=2)
    assert "(1 more rows)" in text and "fc " not in text and "layer1" in text
