"""Module spans forward and backward from autograd's nodes: nested, one per call, none where autograd never runs."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from cnnprobe.trace.spans import BACKWARD, FORWARD, Span, Spans, frontier


class Recorder:
    """Checks LIFO order as it goes, and keeps (name, direction, event) in order."""

    def __init__(self) -> None:
        self.stack: list[tuple[Span, str]] = []
        self.events: list[tuple[str, str, str]] = []
        self.misnested = 0

    def begin(self, span: Span, direction: str) -> None:
        self.stack.append((span, direction))
        self.events.append((span.name, direction, "begin"))

    def end(self, span: Span, direction: str) -> None:
        if not self.stack or self.stack.pop() != (span, direction):
            self.misnested += 1
        self.events.append((span.name, direction, "end"))

    def spans(self, direction: str) -> list[str]:
        return [n for n, d, e in self.events if d == direction and e == "begin"]


def _step(model: nn.Module, x: torch.Tensor, recorder: Recorder, depth: int | None = None) -> Spans:
    spans = Spans(model, recorder, max_depth=depth)
    with spans:
        out = model(x)
        (out if torch.is_tensor(out) else out[0]).sum().backward()
    return spans


@pytest.mark.parametrize("name,size", [("resnet18", 64), ("mobilenet_v3_small", 64), ("convnext_tiny", 64),
                                       ("vit_b_16", 224)])
def test_spans_nest_in_both_directions_and_backward_runs_in_reverse(name: str, size: int) -> None:
    model = torchvision.models.get_model(name).train()
    recorder = Recorder()
    _step(model, torch.randn(2, 3, size, size), recorder)
    assert recorder.misnested == 0 and not recorder.stack
    forward, backward = recorder.spans(FORWARD), recorder.spans(BACKWARD)
    # every module that computes something with a gradient has a backward span; backward visits the top-level
    # modules in the reverse of the order forward ran them
    top = [n for n in dict.fromkeys(forward) if n and "." not in n]
    top_back = [n for n in dict.fromkeys(backward) if n and "." not in n]
    assert top_back == [n for n in reversed(top) if n in top_back]
    assert len(backward) >= 0.7 * len(forward)


def test_a_residual_add_and_inplace_relu_break_nothing() -> None:
    """Full backward hooks fail on ResNet (`out += identity` on a hooked output); node hooks do not, and the
    gradients are those of a run without them."""
    model = torchvision.models.resnet18().train()
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    recorder = Recorder()
    _step(model, x, recorder)
    for p, g in zip(model.parameters(), plain):
        torch.testing.assert_close(p.grad, g)


def test_a_frozen_prefix_has_no_backward_spans() -> None:
    model = torchvision.models.resnet18().train()
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(("layer4", "fc")))
    recorder = Recorder()
    _step(model, torch.randn(2, 3, 64, 64), recorder, depth=1)
    backward = set(recorder.spans(BACKWARD))
    assert backward == {"", "layer4", "avgpool", "fc"}
    assert recorder.misnested == 0


def test_no_backward_spans_under_no_grad() -> None:
    model = torchvision.models.resnet18().eval()
    recorder = Recorder()
    spans = Spans(model, recorder, max_depth=1)
    with spans, torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert recorder.spans(BACKWARD) == []
    assert len(recorder.spans(FORWARD)) == 11  # the model and its 10 top-level modules
    assert not any(s.has_backward for s in spans.roots[0].walk())


def test_shared_and_repeated_modules_have_one_span_per_call() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.conv(self.act(self.conv(x))))

    recorder = Recorder()
    spans = _step(Twice(), torch.randn(1, 3, 8, 8, requires_grad=True), recorder)
    root = spans.roots[0]
    assert [(s.name, s.index) for s in root.children] == [("conv", 1), ("act", 1), ("conv", 2), ("act", 2)]
    assert recorder.spans(BACKWARD) == ["", "act", "conv", "act", "conv"]
    assert recorder.misnested == 0


def test_the_frontier_partitions_the_call_tree() -> None:
    model = torchvision.models.resnet18().eval()
    recorder = Recorder()
    spans = Spans(model, recorder)
    with spans, torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    root = spans.roots[0]
    assert [s.name for s in frontier(root, 1)] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                                                   "layer4", "avgpool", "fc"]
    depth2 = [s.name for s in frontier(root, 2)]
    assert depth2[:6] == ["conv1", "bn1", "relu", "maxpool", "layer1.0", "layer1.1"]
    leaves = frontier(root, -1)
    assert all(not s.children for s in leaves)
    # each leaf lies under exactly one depth-2 row, and every depth-2 row holds at least one leaf
    rows = frontier(root, 2)
    for leaf in leaves:
        assert sum(1 for r in rows if leaf in list(r.walk())) == 1
    assert all(any(leaf in list(r.walk()) for leaf in leaves) for r in rows)
