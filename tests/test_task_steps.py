"""Training steps with each task's own loss: synthetic targets, the losses against hand computations, the
model trainable as built, backward FLOPs, and bench and memory of one model per task family at tiny inputs."""

from __future__ import annotations

import math

import pytest
import torch

from cnnprobe.core.enums import Task
from cnnprobe.models.build import build_model
from cnnprobe.training.recipe import segmentation_loss, sequence_loss, task_loss
from cnnprobe.training.targets import class_count, make_targets

FAST = ("--min-time", "0.01", "--max-time", "0.05", "--warmup", "1")
SEGMENTATION = ("lraspp_mobilenet_v3_large", "3,64,64")
VIDEO = ("r3d_18", "3,2,32,32")
FLOW = ("raft_small", "3,128,128")
DETECTION = ("ssdlite320_mobilenet_v3_large", "3,96,96")


def _inputs(built, batch=2):
    return tuple(s.make(batch, "cpu", random=True) for s in built.inputs)


@pytest.mark.parametrize("name, masks, keypoints", [
    ("fasterrcnn_mobilenet_v3_large_320_fpn", False, None),
    ("maskrcnn_resnet50_fpn", True, None),
    ("keypointrcnn_resnet50_fpn", False, 17),
    ("retinanet_resnet50_fpn", False, None),
    ("ssdlite320_mobilenet_v3_large", False, None),
])
def test_detection_targets_are_valid(name, masks, keypoints):
    built = build_model(name, input_size="3,60,80")  # on meta: the targets read only the heads' widths
    targets = make_targets(built, _inputs(built, 3))
    classes = {"keypointrcnn_resnet50_fpn": 2}.get(name, 91)
    assert class_count(built) == classes and len(targets) == 3
    for t in targets:
        boxes, labels = t["boxes"], t["labels"]
        assert boxes.dtype == torch.float32 and boxes.shape[1] == 4 and labels.dtype == torch.int64
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= 80).all() and (boxes[:, 3] <= 60).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert ((labels >= 1) & (labels < classes)).all()
        assert ("masks" in t) is masks and ("keypoints" in t) is (keypoints is not None)
        if masks:
            m = t["masks"]
            assert m.shape == (len(boxes), 60, 80) and m.dtype == torch.uint8
            x1, y1, x2, y2 = boxes[0].tolist()  # the box filled: its area, to a pixel's rounding at each edge
            assert abs(m[0].sum().item() - (x2 - x1) * (y2 - y1)) <= 2 * (x2 - x1 + y2 - y1) + 4
        if keypoints:
            k = t["keypoints"]
            assert k.shape == (len(boxes), keypoints, 3) and (k[..., 2] == 2).all()
            assert (k[..., 0] >= boxes[:, None, 0]).all() and (k[..., 0] <= boxes[:, None, 2]).all()
            assert (k[..., 1] >= boxes[:, None, 1]).all() and (k[..., 1] <= boxes[:, None, 3]).all()
    again = make_targets(built, _inputs(built, 3))  # a fixed seed
    assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(targets, again))


def test_dense_and_class_targets_are_valid():
    seg = build_model("deeplabv3_mobilenet_v3_large", input_size="3,40,48")
    ids = make_targets(seg, _inputs(seg))
    assert ids.shape == (2, 40, 48) and ids.dtype == torch.int64 and ids.min() >= 0 and ids.max() < 21
    video = build_model("r3d_18", input_size="3,2,32,32")
    labels = make_targets(video, _inputs(video, 64))
    assert labels.shape == (64,) and labels.max() < 400 and labels.min() >= 0
    flow = build_model("raft_small", input_size=["3,32,48", "3,32,48"])
    gt = make_targets(flow, _inputs(flow))
    assert gt.shape == (2, 2, 32, 48) and gt.dtype == torch.float32
    narrow = build_model("resnet18", num_classes=7)
    assert make_targets(narrow, _inputs(narrow, 256)).max() < 7
    meta = make_targets(video, tuple(x.to("meta") for x in _inputs(video)))  # on the inputs' device
    assert meta.device.type == "meta"


def test_segmentation_loss_is_the_reference_criterion():
    """cross-entropy (255 ignored) on out + 0.5 × on aux, against the log-softmax written out."""
    torch.manual_seed(1)
    out, aux = torch.randn(2, 5, 3, 4), torch.randn(2, 5, 3, 4)
    target = torch.randint(0, 5, (2, 3, 4))
    target[0, 0, :2] = 255

    def by_hand(logits):
        terms = [-torch.log_softmax(logits[n, :, i, j], 0)[target[n, i, j]]
                 for n in range(2) for i in range(3) for j in range(4) if target[n, i, j] != 255]
        return sum(terms) / len(terms)

    loss = segmentation_loss({"out": out, "aux": aux}, target)
    assert loss.item() == pytest.approx((by_hand(out) + 0.5 * by_hand(aux)).item(), rel=1e-5)
    assert task_loss(Task.SEGMENTATION, {"out": out}, target).item() == pytest.approx(by_hand(out).item(), rel=1e-5)


def test_sequence_loss_is_rafts_weighted_sum():
    """gamma^(n-1-i) × the mean L1 distance of prediction i, pixels moving 400 or more left out (zero)."""
    torch.manual_seed(2)
    gt = torch.randn(2, 2, 3, 4)
    gt[1, :, 2, 3] = 500.0  # one pixel past max_flow
    predictions = [torch.randn(2, 2, 3, 4) for _ in range(4)]
    total = 0.0
    for i, p in enumerate(predictions):
        distance = 0.0
        for n in range(2):
            for y in range(3):
                for x in range(4):
                    if math.hypot(gt[n, 0, y, x].item(), gt[n, 1, y, x].item()) < 400:
                        distance += sum(abs(p[n, c, y, x].item() - gt[n, c, y, x].item()) for c in range(2))
        total += 0.8 ** (3 - i) * distance / p.numel()
    assert sequence_loss(predictions, gt).item() == pytest.approx(total, rel=1e-5)
    assert task_loss(Task.OPTICAL_FLOW, predictions, gt).item() == pytest.approx(total, rel=1e-5)


def test_detection_and_video_losses():
    losses = {"classification": torch.tensor(1.5), "bbox_regression": torch.tensor(0.25)}
    assert task_loss(Task.DETECTION, losses, None).item() == 1.75
    logits, labels = torch.randn(4, 400), torch.tensor([0, 5, 399, 17])
    expected = -sum(torch.log_softmax(logits[i], 0)[labels[i]] for i in range(4)) / 4
    assert task_loss(Task.VIDEO, logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.slow
def test_a_detection_step_takes_the_models_own_losses():
    """ssdlite's train-mode call with the targets returns its loss dict; the step's loss is its sum."""
    from cnnprobe.training.config import BenchConfig
    from cnnprobe.training.setup import BenchSetup

    setup = BenchSetup(DETECTION[0], 2, BenchConfig(input_size=DETECTION[1], mode="train_step")).build()
    setup.raw.train()
    torch.manual_seed(0)
    losses = setup.raw(*setup.training_arguments())
    assert set(losses) == {"bbox_regression", "classification"}
    torch.manual_seed(0)
    loss = task_loss(Task.DETECTION, setup.raw(*setup.training_arguments()), setup.target)
    assert loss.item() == pytest.approx(sum(v.item() for v in losses.values()), rel=1e-5)


def test_all_trainable_is_the_model_as_built():
    """A detection model's frozen backbone stages (torchvision's trainable_backbone_layers) stay frozen when a
    comparison asks for everything trainable; the freezing plan still applies on top."""
    from cnnprobe.training.config import BenchConfig
    from cnnprobe.training.setup import BenchSetup

    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    shipped = {n: p.requires_grad for n, p in build_model(name).module.named_parameters()}  # on meta, as shipped
    assert 0 < sum(not v for v in shipped.values()) < len(shipped)
    setup = BenchSetup(name, 1, BenchConfig(input_size="3,64,64", freeze_except="roi_heads")).build()
    setup.set_frozen(True)
    assert all(p.requires_grad == n.startswith("roi_heads") for n, p in setup.raw.named_parameters())
    setup.set_frozen(False)
    assert {n: p.requires_grad for n, p in setup.raw.named_parameters()} == shipped


@pytest.mark.slow
@pytest.mark.parametrize("name, size", [DETECTION, SEGMENTATION, VIDEO, FLOW])
def test_backward_flops_ratio_per_task(name, size):
    """The backward of each task's loss costs between one and two forwards (the first layer needs no input
    gradient; frozen stages cost less, not more)."""
    from cnnprobe.analysis.flops import flops

    sizes = [size, size] if name == FLOW[0] else size
    report = flops(name, input_size=sizes, batch=2, backward=True)  # BatchNorm trains on 2 or more
    assert report.backward_macs > 0 and 1.0 <= report.backward_ratio <= 2.0, report.backward_ratio


@pytest.mark.slow
@pytest.mark.parametrize("name, size", [DETECTION, SEGMENTATION, VIDEO, FLOW])
def test_bench_runs_each_tasks_train_step(cli, name, size):
    sizes = ["--input-size", size] * (2 if name == FLOW[0] else 1)
    run = cli("bench", name, *sizes, "--batch", "2" if name != FLOW[0] else "1", "--mode", "train_step", *FAST,
              "--json")
    assert run.exit_code == 0, run.stderr
    result = run.json()["results"][0]
    assert result["mode"] == "train_step" and result["median_ms"] > 0 and result["peak_memory_bytes"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("name, size, batch", [(*SEGMENTATION, 2), (*VIDEO, 2), (*FLOW, 1), (*DETECTION, 2)])
def test_predicted_peaks_within_3_percent_of_measured(name, size, batch):
    """`memory` on fake tensors against bench's measured steady-state peak of a train_step (the heaviest mode;
    the others agree as closely), the same threads on both (operators' workspaces are per thread)."""
    from cnnprobe.benchmark import timing
    from cnnprobe.memory.predict import memory

    sizes = [size, size] if name == FLOW[0] else size
    measured = timing.bench(name, batch=batch, input_size=sizes, optimizer="adam", mode="train_step", predict=False,
                            min_time=0.01, max_time=0.05, warmup=1, count_flops=False, peak=False)
    predicted = memory(name, batch=batch, input_size=sizes, optimizer="adam", mode="train_step")
    assert [r.mode for r in predicted.results] == [r.mode for r in measured.results]
    for m, p in zip(measured.results, predicted.results):
        assert p.predicted_peak_bytes == pytest.approx(m.peak_memory_bytes, rel=0.03), m.mode


@pytest.mark.slow
def test_a_two_stage_detectors_prediction_is_an_upper_bound():
    """Faster R-CNN on fake tensors keeps every candidate its selections could keep: each RoI goes to every FPN
    level (a real step splits them), so its forward and backward is predicted above the measured peak, by one
    level's RoI features (about 11% here); its samplers keep their own batch (512 RoIs), as a real step does."""
    from cnnprobe.benchmark import timing
    from cnnprobe.memory.predict import memory

    name, size = "fasterrcnn_mobilenet_v3_large_320_fpn", "3,96,96"
    measured = timing.bench(name, batch=1, input_size=size, optimizer="adam", mode="forward_backward",
                            predict=False, min_time=0.01, max_time=0.05, warmup=1, count_flops=False, peak=False)
    predicted = memory(name, batch=1, input_size=size, optimizer="adam", mode="forward_backward")
    real, bound = measured.results[0].peak_memory_bytes, predicted.results[0].predicted_peak_bytes
    assert real <= bound <= 1.15 * real, bound / real
    assert any("upper bound" in n for n in predicted.notes)


@pytest.mark.slow
@pytest.mark.parametrize("name, size", [SEGMENTATION, VIDEO])
def test_memory_cli_predicts_each_tasks_step(cli, name, size):
    data = cli("memory", name, "--input-size", size, "--batch", "2", "--mode", "train_step", "--json").json()
    assert data["predicted_peak_bytes"]["train_step"] > data["breakdown"]["train_step"]["parameters"] > 0


@pytest.mark.slow
def test_memory_of_a_detection_model_runs_to_its_caps(cli):
    """Detection's step reads tensor values (NMS, score thresholds, the RoI sampler's masks): on fake tensors they
    keep every candidate up to the model's caps, and the output says the prediction is an upper bound."""
    run = cli("memory", DETECTION[0], "--input-size", DETECTION[1], "--batch", "1", "--mode", "forward")
    assert run.exit_code == 0, run.stderr
    assert "upper bound" in run.stdout and "nms" in run.stdout


def test_answers_on_fake_tensors():
    """Inside the fake mode: a selection keeps everything, NMS every box, a mask check answers False, and the
    transform's random training size (`torch_choice`) draws the low end of its range, index 0."""
    import torchvision
    from torch._subclasses.fake_tensor import FakeTensorMode

    from cnnprobe.memory.valued import Answering

    with FakeTensorMode(), Answering() as answering:
        x = torch.empty(7, 3)
        assert torch.nonzero(x).shape == (21, 2) and x[x > 0].shape == (21,)
        assert [i.shape for i in torch.where(x > 0)] == [(21,), (21,)]
        assert torchvision.ops.nms(torch.empty(5, 4), torch.empty(5), 0.5).shape == (5,)
        assert not bool((x > 0).any())
        assert int(torch.empty(1).uniform_(0.0, 3.0).item()) == 0
        assert torch.unique(torch.empty(9, dtype=torch.long)).shape == (1,)
    assert answering.answered == {"nonzero", "boolean masks", "nms", "item()", "unique"}
    assert "upper bound" in (answering.note() or "")


def test_memory_names_an_operator_it_cannot_answer():
    """An operator sized by values that has no answer (bincount) still gets the one line naming it and bench."""
    from torch import nn

    from cnnprobe.core.errors import CnnprobeError
    from cnnprobe.memory.predict import memory

    class Counts(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            y = self.conv(x)
            return y.sum() + torch.bincount((y > 0).flatten().long()).sum()

    with pytest.raises(CnnprobeError, match=r"aten\.bincount.*bench"):
        memory(Counts(), input_size="3,16,16", batch=2, mode="forward")


def test_a_users_model_that_reads_a_value_is_named_not_answered():
    """Stand-in answers are for registered models, whose value reads are known; a user's model that reads
    a value on fake tensors is named in one line and sent to bench, as the tracer does on meta."""
    from torch import nn

    from cnnprobe.core.errors import CnnprobeError
    from cnnprobe.memory.predict import memory

    class Reads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            y = self.conv(x)
            return y * float(y.mean().item())

    with pytest.raises(CnnprobeError, match=r"reads tensor values.*bench"):
        memory(Reads(), input_size="3,16,16", batch=2, mode="forward")


@pytest.mark.slow
def test_ddp_ranks_train_a_segmentation_model_with_its_loss(cli):
    """Each rank draws its own targets (its rank's seed) and takes the segmentation criterion; the all-reduce
    leaves every rank the same gradients, every trainable parameter reduced."""
    data = cli("bench", SEGMENTATION[0], "--input-size", SEGMENTATION[1], "--batch", "2", "--nproc", "2", "--mode",
               "forward_backward", *FAST, "--json").json()
    assert data["world_size"] == 2 and data["gradients_match"] and not data["unused_parameters"]
    assert data["allreduce_bytes"] == 4 * data["trainable_params"] > 0
