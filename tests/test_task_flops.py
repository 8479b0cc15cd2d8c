"""Every task's models on meta: parameters against `num_params`, MACs against `_ops` (or the named
exception), each task's outputs, the data-dependent answers, and the formulas of the operators
torchvision's figures leave out, each against a hand formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import MultiScaleRoIAlign, nms, roi_align

import cnnprobe
from cnnprobe.analysis.flops import within_published
from cnnprobe.analysis.parity import EXCEPTIONS
from cnnprobe.analysis.probe import probe
from cnnprobe.core.enums import Task
from cnnprobe.models.build import build_model
from cnnprobe.models.registry import list_models, resolve
from cnnprobe.trace import datadependent
from cnnprobe.trace.tracer import Tracer

_SLOW_TASKS = {Task.CLASSIFICATION, Task.QUANTIZED}  # 92 models, several of them large: CI's slow run
_TASK_MODELS = [s.name for s in list_models("torchvision:*") if s.task not in _SLOW_TASKS]


def _cases() -> list[object]:
    return [pytest.param(s.name, marks=[pytest.mark.slow] if s.task in _SLOW_TASKS else [], id=s.name)
            for s in list_models("torchvision:*")]


@pytest.mark.parametrize("name", _cases())
def test_macs_match_published_ops(name):
    """Every torchvision model of every task at its default input, in one summary pass: total parameters
    equal `num_params`, and MACs are within 1% of `_ops` (or its rounding), or the model is one of the named
    exceptions, whose count really differs there."""
    spec = resolve(name)
    s = cnnprobe.summary(spec, depth=0)
    assert s.total_params == spec.published_params
    gmacs = s.macs / 1e9
    if name in EXCEPTIONS:
        assert not within_published(gmacs, spec.published_gmacs), f"{name} agrees now: drop its exception"
    else:
        assert within_published(gmacs, spec.published_gmacs), f"{name}: {gmacs:.4f} vs published {spec.published_gmacs}"
    if spec.on_meta:
        assert s.device == "meta"  # no fallback to a real run: nothing allocated


@pytest.mark.parametrize("name", sorted(EXCEPTIONS))
def test_each_exception_reproduces_the_published_figure_at_the_caps_it_names(name):
    """The reason of each exception, checked: with the caps it names (the candidates torchvision's one
    image let through), our count is torchvision's figure."""
    spec = resolve(name)
    why = EXCEPTIONS[name]
    built = build_model(spec, builder_options=why.reproduce)
    p = probe(built)
    assert built.device == "meta"
    assert within_published(p.tracer.total_flops / 2e9, spec.published_gmacs)
    full = probe(build_model(spec)).tracer
    differs = {op for op in full.flops_by_op if full.flops_by_op[op] != p.tracer.flops_by_op.get(op, 0)}
    assert differs == set(why.operators)


def test_exceptions_are_a_handful_of_registered_models():
    assert len(EXCEPTIONS) <= 5
    assert all(resolve(name).published_gmacs for name in EXCEPTIONS)


def _output(name: str) -> object:
    return probe(build_model(name), run=lambda module, args: module(*args)).extra


@pytest.mark.parametrize("name", [s.name for s in list_models(task=Task.DETECTION)])
def test_detection_outputs_stay_within_the_models_caps(name):
    """On meta every selection keeps every candidate, so a detection model returns as many detections as it
    can: its own `detections_per_img` (SSD: `detections_per_img` too), boxes in xyxy."""
    (out,) = _output(name)
    module = build_model(name).module
    cap = getattr(module, "roi_heads", module).detections_per_img
    n = out["boxes"].shape[0]
    assert out["boxes"].shape == (n, 4) and out["scores"].shape == (n,) and out["labels"].shape == (n,)
    assert n == cap
    side = resolve(name).input_shape[-1]
    if "masks" in out:
        assert tuple(out["masks"].shape) == (n, 1, side, side)
    if "keypoints" in out:
        assert tuple(out["keypoints"].shape) == (n, 17, 3)


@pytest.mark.parametrize("name", [s.name for s in list_models(task=Task.SEGMENTATION)])
def test_segmentation_outputs_are_21_classes_at_520(name):
    out = _output(name)
    assert tuple(out["out"].shape) == (1, 21, 520, 520)
    if "aux" in out:
        assert tuple(out["aux"].shape) == (1, 21, 520, 520)


@pytest.mark.parametrize("name", [s.name for s in list_models(task=Task.VIDEO)])
def test_video_outputs_are_400_kinetics_classes_of_16_frame_clips(name):
    assert resolve(name).input_shape[:2] == (3, 16)
    assert tuple(_output(name).shape) == (1, 400)


@pytest.mark.parametrize("name", [s.name for s in list_models(task=Task.OPTICAL_FLOW)])
def test_raft_returns_one_flow_per_update_at_the_published_512_square(name):
    """torchvision's `_ops` for both RAFTs are reproduced to the last digit at two 512×512 images."""
    spec = resolve(name)
    assert [i.shape for i in spec.inputs] == [(3, 512, 512), (3, 512, 512)]
    flows = _output(name)
    assert len(flows) == 12 and all(tuple(f.shape) == (1, 2, 512, 512) for f in flows)


# ---------------------------------------------------------------- data-dependent answers on meta


def test_selections_on_meta_keep_every_candidate():
    x = torch.empty(5, 3, device="meta")
    scores = torch.empty(5, device="meta")
    with Tracer(nn.Identity()) as t:
        assert tuple(torch.nonzero(x).shape) == (15, 2)
        assert tuple(torch.where(scores > 0.5)[0].shape) == (5,)
        assert tuple(x[scores > 0.5].shape) == (5, 3)
        assert tuple(nms(x[:, :2].repeat(1, 2), scores, 0.5).shape) == (5,)
        assert tuple(torch.unique(scores).shape) == (1,)  # one value: a per-value loop runs once over all
        assert tuple(torch.masked_select(x, x > 0).shape) == (15,)
        # item(): stand-ins of the tensor's kind (a size read from a float must be positive)
        assert int(scores.long()[0]) == 0 and bool(scores[0] > 0) is False and float(scores[0]) == 1.0
    assert {"nonzero", "nms", "_unique2", "_local_scalar_dense"} <= set(t.bounded)
    assert datadependent.NOTE in " ".join(t.notes())


def test_real_tensors_get_real_answers():
    x = torch.tensor([0.0, 2.0, 0.0, 3.0])
    with Tracer(nn.Identity()) as t:
        assert torch.nonzero(x).flatten().tolist() == [1, 3]
        assert torch.unique(torch.tensor([3, 1, 3])).tolist() == [1, 3]
    assert not t.bounded


def test_detection_summary_notes_the_caps_and_stays_on_meta():
    s = cnnprobe.summary("fasterrcnn_mobilenet_v3_large_320_fpn", depth=1)
    assert s.device == "meta"
    assert any(datadependent.NOTE in n for n in s.notes)
    r = cnnprobe.flops("maskrcnn_resnet50_fpn", depth=0)
    assert any("box_detections_per_img=0" in n for n in r.notes)  # the parity exception, said where it shows
    assert {o.op for o in r.separate_by_operator} >= {"roi_align"}
    assert "roi_align" not in {o.op for o in r.by_operator}


# ---------------------------------------------------------------- formulas counted apart from the total


def _separate(fn, *tensors: torch.Tensor, backward: bool = False) -> tuple[dict[str, int], int]:
    """MACs by operator counted apart, and the total's, of `fn(*tensors)` (and its backward)."""
    with Tracer(nn.Identity()) as t:
        out = fn(*tensors)
        if backward:
            t.backward = True
            out.sum().backward()
    sep = t.separate_backward_flops_by_op if backward else t.separate_flops_by_op
    return {op: f // 2 for op, f in sep.items()}, t.total_flops // 2


def test_roi_align_is_four_macs_per_bilinear_sample():
    """K boxes × C channels × PH × PW bins × sampling_ratio² samples × 4 neighbours."""
    x = torch.rand(1, 8, 32, 32)
    boxes = torch.tensor([[0, 1.0, 1.0, 20.0, 20.0], [0, 4.0, 2.0, 30.0, 9.0], [0, 0.0, 0.0, 5.0, 5.0]])
    sep, total = _separate(lambda a: roi_align(a, boxes, (7, 7), 0.5, sampling_ratio=2), x)
    assert sep == {"roi_align": 3 * 8 * 7 * 7 * 2 * 2 * 4} and total == 0
    sep, _ = _separate(lambda a: roi_align(a, boxes, (7, 7), 0.5, sampling_ratio=-1), x)
    assert sep == {"roi_align": 3 * 8 * 7 * 7 * 1 * 4}  # adaptive: one sample per bin, the least it takes


def test_roi_align_backward_scatters_the_forwards_macs():
    x = torch.rand(1, 4, 16, 16, requires_grad=True)
    boxes = torch.tensor([[0, 1.0, 1.0, 12.0, 12.0]])
    sep, _ = _separate(lambda a: roi_align(a, boxes, (5, 5), 1.0, sampling_ratio=2), x, backward=True)
    assert sep == {"_roi_align_backward": 1 * 4 * 5 * 5 * 2 * 2 * 4}


def test_multiscale_roi_align_of_a_detection_head_on_meta():
    pool = MultiScaleRoIAlign(["0"], 7, 2)
    features = {"0": torch.empty(1, 256, 50, 50, device="meta")}
    boxes = [torch.empty(30, 4, device="meta")]
    sep, _ = _separate(lambda: pool(features, boxes, [(200, 200)]))
    assert sep == {"roi_align": 30 * 256 * 7 * 7 * 4 * 4}


@pytest.mark.parametrize("mode, size, taps, op", [
    ("linear", (3, 10), 2, "upsample_linear1d"), ("bilinear", (3, 10, 12), 4, "upsample_bilinear2d"),
    ("bicubic", (3, 10, 12), 16, "upsample_bicubic2d"), ("trilinear", (3, 4, 6, 6), 8, "upsample_trilinear3d")])
def test_interpolation_weighs_its_taps_into_each_output_element(mode, size, taps, op):
    """Output elements × taps (linear 2, bilinear 4, trilinear 8, bicubic 16); nearest copies, no MACs."""
    x = torch.rand(2, *size)
    out_spatial = [2 * s + 1 for s in size[1:]]
    sep, total = _separate(lambda a: F.interpolate(a, size=out_spatial, mode=mode, align_corners=False), x)
    elements = 2 * size[0] * torch.Size(out_spatial).numel()
    assert sep == {op: elements * taps} and total == 0
    grad, _ = _separate(lambda a: F.interpolate(a, size=out_spatial, mode=mode), x.requires_grad_(),
                        backward=True)
    assert grad == {op + "_backward": elements * taps}
    nearest, _ = _separate(lambda a: F.interpolate(a, scale_factor=2, mode="nearest"), x.detach())
    assert nearest == {}


@pytest.mark.parametrize("mode, taps", [("bilinear", 4), ("nearest", 0), ("bicubic", 16)])
def test_grid_sample_weighs_its_taps_into_each_output_element(mode, taps):
    x, grid = torch.rand(2, 3, 9, 9), torch.rand(2, 5, 7, 2) * 2 - 1
    sep, total = _separate(lambda a: F.grid_sample(a, grid, mode=mode, align_corners=False), x)
    assert sep == {"grid_sampler_2d": 2 * 3 * 5 * 7 * taps} and total == 0


def test_grid_sample_backward_counts_the_input_and_each_grid_coordinate():
    x, grid = torch.rand(1, 2, 6, 6, requires_grad=True), (torch.rand(1, 4, 4, 2) * 2 - 1).requires_grad_()
    sep, _ = _separate(lambda a: F.grid_sample(a, grid, align_corners=False), x, backward=True)
    assert sep == {"grid_sampler_2d_backward": 1 * 2 * 4 * 4 * 4 * (1 + 2)}  # input grad + two coordinates
    x3, grid3 = torch.rand(1, 2, 4, 4, 4), torch.rand(1, 3, 3, 3, 3) * 2 - 1
    sep, _ = _separate(lambda a: F.grid_sample(a, grid3, align_corners=False), x3)
    assert sep == {"grid_sampler_3d": 1 * 2 * 27 * 8}


def test_raft_correlation_is_a_counted_matrix_product():
    """RAFT's all-pairs correlation is a bmm of the two feature maps at 1/8 resolution: counted in the total,
    as torchvision counted it: (H/8·W/8)² × 256 for raft_large's 256-channel features."""
    r = cnnprobe.flops("raft_large", depth=0)
    ops = {o.op: o.macs for o in r.by_operator}
    assert ops["bmm"] == (64 * 64) ** 2 * 256
    assert {o.op for o in r.separate_by_operator} == {"grid_sampler_2d"}
