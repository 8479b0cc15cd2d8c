"""`compare`: two models side by side, layer by layer, and whether their weights are interchangeable."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Unpack

from ..core.errors import UsageError
from ..core.formatting import shape
from ..models.build import Built, check_batch
from ..models.meta import paused_gc
from ..models.request import ModelOptions, ModelRequest
from ..weights.statedict import check_compatible
from .probe import probe
from .summary import summarize, torchinfo_pass

if TYPE_CHECKING:
    from torch import nn

    from ..weights.statedict import Compatibility
    from .summary import LayerRecord, Summary


@dataclass
class Side:
    """One of the two models."""

    model: str
    source: str
    params: int
    trainable_params: int
    macs: int
    input_size: list[int]
    task: str = "classification"  # core.enums.Task


@dataclass
class LayerDiff:
    """A layer present in only one model, or present in both but different."""

    name: str
    status: str  # "added" (only in B), "removed" (only in A) or "changed"
    depth: int
    a_type: str | None = None
    b_type: str | None = None
    a_shape: list[int] | None = None
    b_shape: list[int] | None = None
    a_params: int | None = None
    b_params: int | None = None


@dataclass
class ModelComparison:
    """What `cnnprobe compare` reports."""

    a: Side
    b: Side
    layers: list[LayerDiff]
    state_dict: "Compatibility"  # loading A's state_dict into B
    identical: bool
    notes: list[str] = field(default_factory=list)

    @property
    def params_change(self) -> int:
        """B's parameters less A's."""
        return self.b.params - self.a.params

    @property
    def trainable_change(self) -> int:
        return self.b.trainable_params - self.a.trainable_params

    @property
    def macs_change(self) -> float | None:
        """B's MACs relative to A's, as a share (None when A has none)."""
        return (self.b.macs - self.a.macs) / self.a.macs if self.a.macs else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _side(s: "Summary") -> Side:
    return Side(s.model, s.source, s.total_params, s.trainable_params, s.macs, s.input_size, s.task)


def _occurrences(layers: list["LayerRecord"]) -> dict[tuple[str, int], "LayerRecord"]:
    """Layers keyed by name and call number, so a module called twice is compared call by call."""
    seen: dict[str, int] = defaultdict(int)
    out = {}
    for r in layers:
        out[(r.name, seen[r.name])] = r
        seen[r.name] += 1
    return out


def diff_layers(a: list["LayerRecord"], b: list["LayerRecord"]) -> list[LayerDiff]:
    """Added, removed and changed layers, in A's order with B's additions where they occur."""
    left, right = _occurrences(a), _occurrences(b)
    diffs: list[LayerDiff] = []
    for key, ra in left.items():
        rb = right.get(key)
        if rb is None:
            diffs.append(LayerDiff(ra.name, "removed", ra.depth, a_type=ra.type, a_shape=ra.output_shape,
                                   a_params=ra.params))
        elif (ra.type, ra.output_shape, ra.params) != (rb.type, rb.output_shape, rb.params):
            diffs.append(LayerDiff(ra.name, "changed", ra.depth, ra.type, rb.type, ra.output_shape, rb.output_shape,
                                   ra.params, rb.params))
    for key, rb in right.items():
        if key not in left:
            diffs.append(LayerDiff(rb.name, "added", rb.depth, b_type=rb.type, b_shape=rb.output_shape,
                                   b_params=rb.params))
    return diffs


def check_one_input_kind(a: Built, b: Built) -> None:
    """Both models run at A's inputs: refuse, in one line, two whose inputs are of different kinds (a video
    clip and an image, RAFT's two images and one), which no single input serves."""
    spec = b.spec
    own = [i.shape for i in spec.inputs] if spec.inputs else [spec.input_shape] if spec.input_shape else None
    if own is None:  # a user's model says nothing before it runs: let the pass judge
        return
    if [len(i.shape) for i in a.inputs] != [len(s) for s in own]:
        takes_a = " and ".join(shape(i.shape) for i in a.inputs)
        raise UsageError(f"cannot compare {a.name} with {b.name} at one input: {a.name} ({a.spec.task.value}) "
                         f"takes {takes_a}, {b.name} ({spec.task.value}) {' and '.join(shape(s) for s in own)}")


def compare_models(
    a: "str | nn.Module | ModelRequest",
    b: "str | nn.Module | ModelRequest",
    *,
    weights_a: str | None = None,
    weights_b: str | None = None,
    **options: Unpack[ModelOptions],
) -> ModelComparison:
    """Compare two models at one input size (A's default unless given), on meta unless weights are loaded.
    The keywords are a ModelRequest's, for A; B is built as A is, with its own weights, at A's inputs."""
    request_a = ModelRequest.of(a, **options)
    if weights_a is not None:
        request_a = replace(request_a, weights=weights_a)
    request_b = b if isinstance(b, ModelRequest) else replace(request_a, model=b, weights=weights_b)
    check_batch(request_a.batch)
    with paused_gc():
        built_a = request_a.build()
        built_b = request_b.build(inputs=built_a.inputs)
        check_one_input_kind(built_a, built_b)
        sa = summarize(probe(built_a, request_a.batch, torchinfo_pass), 99)
        sb = summarize(probe(built_b, request_a.batch, torchinfo_pass), 99)
    notes = [f"{b.name}: {b.materialized}" for b in (built_a, built_b) if b.materialized]
    notes += [f"{q.model}: quantized: params are its float architecture's (torchvision's num_params); its layer rows "
              f"count its {q.packed_params:,} packed int8 values" for q in (sa, sb) if q.packed_params is not None]
    if request_a.input_size is None and built_b.spec.input_shape not in (None, built_a.input_shape):
        notes.append(f"both at {built_a.name}'s input {shape(built_a.input_shape)}; "
                     f"{built_b.name} defaults to {shape(built_b.spec.input_shape)}")
    compat, _ = check_compatible(built_b.module, built_a.module.state_dict(), built_b.name)
    layers = diff_layers(sa.layers, sb.layers)
    identical = not layers and compat.compatible and sa.total_params == sb.total_params and sa.macs == sb.macs
    return ModelComparison(_side(sa), _side(sb), layers, compat, identical, notes)
