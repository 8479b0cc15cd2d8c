"""`summary`: per-layer records from torchinfo, FLOPs from the tracer, in one pass on meta."""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torchinfo

from .build import build_model, check_batch, check_depth
from .meta import paused_gc
from .probe import probe

if TYPE_CHECKING:
    from torch import nn

    from .probe import Probe

FLOPS_CONVENTION = "flops = 2 * macs (one multiply-accumulate is two floating-point operations)"
MAX_FLOW = 12  # stages in the shape-flow line before it moves up a level


@dataclass
class LayerRecord:
    """One call of one layer."""

    name: str  # qualified, as in state_dict keys: "layer4.0.conv1"
    type: str
    depth: int
    output_shape: list[int] | None  # batch first
    params: int  # this layer's parameters, its children's included
    trainable_params: int
    macs: int  # multiply-accumulates in this call, children included
    is_leaf: bool

    @property
    def trainable(self) -> bool:
        """True when the layer has parameters and all of them are trainable."""
        return self.params > 0 and self.trainable_params == self.params


@dataclass
class Summary:
    """What `cnnprobe summary` reports."""

    model: str
    source: str
    input_size: list[int]  # the first input's, batch first
    input_source: str
    device: str
    total_params: int
    trainable_params: int
    param_bytes: int
    buffer_bytes: int
    activation_bytes: int  # outputs of the leaf layers of one forward pass
    macs: int
    depth: int
    layers: list[LayerRecord]
    shape_flow: list[list[int]]  # batch dimension dropped
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)  # every input: shape without batch, dtype

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def rows(self) -> list[LayerRecord]:
        """Layers down to `depth`."""
        return [r for r in self.layers if r.depth <= self.depth]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = [dict(asdict(r), trainable=r.trainable) for r in self.rows()]
        data.update(
            non_trainable_params=self.non_trainable_params,
            flops=self.flops,
            convention=FLOPS_CONVENTION,
        )
        return data


def tensor_bytes(tensors: Any) -> int:
    """Bytes held by distinct tensors."""
    seen: dict[int, int] = {}
    for t in tensors:
        seen[id(t)] = t.numel() * t.element_size()
    return sum(seen.values())


def shape_flow(probe: "Probe") -> list[list[int]]:
    """The main stages of the pass: LeNet reads 1×28×28 → 6×28×28 → 6×14×14 → … → 10.

    Takes the deepest module level whose distinct consecutive output shapes
    fit on one line (at most MAX_FLOW), counting leaves that sit higher up.
    """
    calls = [c for c in probe.tracer.calls if c.depth > 0 and c.output_shape is not None]
    leaves = {id(c.module) for c in calls if not any(True for _ in c.module.children())}
    start = [list(probe.input_size[1:])]
    best: list[list[int]] = start
    for level in range(max((c.depth for c in calls), default=0), 0, -1):
        flow = list(start)
        for c in calls:
            if c.depth == level or (c.depth < level and id(c.module) in leaves):
                shape = list(c.output_shape[1:]) if c.output_shape else []
                if shape and shape != flow[-1]:
                    flow.append(shape)
        best = flow
        if len(flow) <= MAX_FLOW:
            break
    return best


def torchinfo_pass(module: "nn.Module", xs: tuple[Any, ...]) -> Any:
    return torchinfo.summary(
        module, input_data=list(xs), depth=64, device=xs[0].device, mode="eval", verbose=0,
        col_names=("output_size", "num_params"),
    )


def summarize(probe: "Probe", depth: int) -> Summary:
    """Records from one probe that ran torchinfo under the tracer."""
    stats = probe.extra
    tracer = probe.tracer
    module = probe.built.module
    calls: dict[int, deque[Any]] = defaultdict(deque)
    for c in tracer.calls:
        calls[id(c.module)].append(c)
    layers: list[LayerRecord] = []
    activation = 0
    for info in stats.summary_list:
        if info.depth == 0:
            continue
        call = calls[id(info.module)].popleft() if calls[id(info.module)] and info.executed else None
        name = tracer.names.get(id(info.module), info.var_name)
        shape = list(info.output_size) if info.executed and info.output_size else None
        if info.executed and info.is_leaf_layer:
            activation += int(info.output_bytes)
        layers.append(
            LayerRecord(
                name=name,
                type=info.class_name,
                depth=info.depth,
                output_shape=shape,
                params=int(info.num_params),
                trainable_params=int(info.trainable_params),
                macs=(call.flops // 2) if call else 0,
                is_leaf=info.is_leaf_layer,
            )
        )
    params = list(module.parameters())
    notes = [probe.built.note] if probe.built.note else []
    return Summary(
        model=probe.built.name,
        source=probe.built.spec.source.value,
        input_size=probe.input_size,
        input_source=probe.built.input_source,
        device=probe.built.device,
        total_params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        param_bytes=tensor_bytes(params),
        buffer_bytes=tensor_bytes(module.buffers()),
        activation_bytes=activation,
        macs=tracer.total_flops // 2,
        depth=depth,
        layers=layers,
        shape_flow=shape_flow(probe),
        uncounted_ops=dict(tracer.uncounted.most_common()),
        notes=notes,
        inputs=[s.to_dict() for s in probe.built.inputs],
    )


def summary(
    model: "str | nn.Module",
    *,
    input_size: Any = None,
    input_dtype: Any = None,
    input_range: Any = None,
    batch: int = 1,
    depth: int = 3,
    num_classes: int | None = None,
    weights: str | None = None,
    trust: bool = False,
) -> Summary:
    """Per-layer output shapes, parameters and MACs, from one forward pass on the meta device.

    `model` is a registry name (`resnet18`, `cnnprobe:vgg16`, `file.py:Net`)
    or an `nn.Module`. Nothing is allocated for weights unless the model
    cannot run on meta, or `weights` are asked for (then they load strictly).
    `input_size`, `input_dtype` and `input_range` describe the inputs as
    `build_model` takes them: one or several, any rank, any dtype.
    """
    check_batch(batch)
    check_depth(depth)
    with paused_gc():
        built = build_model(model, num_classes=num_classes, input_size=input_size, input_dtype=input_dtype,
                            input_range=input_range, weights=weights, trust=trust)
        return summarize(probe(built, batch, torchinfo_pass), depth)
