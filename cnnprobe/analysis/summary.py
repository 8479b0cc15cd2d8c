"""`summary`: per-layer records from one pass on meta: torchinfo's per-module parameter records, the tracer's
calls for structure, output shapes and MACs.

Rows follow the calls of the pass, each under the module that called it: a
module shared by two parents appears under each caller, by the path that
caller knows it by, and a module that runs more than once (a reused layer)
says so, its parameters counted at its first call. A TorchScript submodule is
one row (its insides run where hooks cannot see). Modules the pass never
called come last, so that the rows add up to the totals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Unpack

import torch
import torchinfo

from ..core.formatting import first_few
from ..models.build import check_batch, check_depth
from ..models.meta import paused_gc
from ..models.quantized import is_packing, packed_by_module, packed_bytes
from ..models.request import ModelOptions, ModelRequest
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
    depth: int  # how deeply calls nest: 1 for what the model's forward calls
    output_shape: list[int] | None  # batch first; None for a module the pass did not call
    params: int  # this layer's parameters, its children's included; 0 on a repeated call (counted at the first)
    trainable_params: int
    macs: int  # multiply-accumulates in this call, children included
    is_leaf: bool
    call: int = 1  # the module's call-th call in the pass; 0 when it was not called
    calls: int = 1  # how often the module ran in the pass

    @property
    def repeated(self) -> bool:
        """A later call of a module already listed (a reused layer, or one shared by two parents)."""
        return self.call > 1

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
    task: str = "classification"  # core.enums.Task: what the model does, so how it is fed
    packed_params: int | None = None  # a quantized model's packed int8 values, which its layer rows show

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


def torchinfo_pass(module: "nn.Module", args: tuple[Any, ...]) -> Any:
    """torchinfo's records of one call with `args` (torchinfo passes a list's items as the arguments)."""
    return torchinfo.summary(
        module, input_data=list(args), depth=64, device=_device(args), mode="eval", verbose=0,
        col_names=("output_size", "num_params"),
    )


def _device(value: Any) -> Any:
    """The device of the first tensor in the arguments (a detection model's are a list of images)."""
    if isinstance(value, torch.Tensor):
        return value.device
    for item in value if isinstance(value, (list, tuple)) else ():
        found = _device(item)
        if found is not None:
            return found
    return None


def summarize(probe: "Probe", depth: int) -> Summary:
    """Records from one probe that ran torchinfo under the tracer."""
    tracer = probe.tracer
    module = probe.built.module
    infos = {id(info.module): info for info in probe.extra.summary_list}  # torchinfo's record of each module
    counts = tracer.times_called
    scripted = {id(m) for m in module.modules() if isinstance(m, torch.jit.ScriptModule)}
    quantized = probe.built.quantized_params()
    packed = packed_by_module(module) if quantized is not None else {}
    layers: list[LayerRecord] = []
    activation = 0
    for c in tracer.calls:
        if c.depth == 0 or not c.done:
            continue
        leaf = id(c.module) in scripted or not any(True for _ in c.module.children())
        if leaf:
            activation += c.output_bytes
        params, trainable = _params(c.module, infos, packed) if c.index == 1 else (0, 0)
        layers.append(LayerRecord(c.name, c.type, c.depth, c.output_shape, params, trainable, c.flops // 2, leaf,
                                  c.index, counts.get(id(c.module), 1)))
    layers += _uncalled(module, tracer, infos, scripted, packed)
    all_params = list(module.parameters())
    notes = list(probe.notes)
    if quantized is not None:
        notes.append(quantized.note())
    unseen = [r.name for r in layers if r.call == 0]
    if unseen:
        notes.append(f"not called in this pass: {first_few(unseen)} (listed last, with their parameters)")
    inside = [tracer.names[key] for key in scripted if key in counts]
    if inside:
        notes.append(f"TorchScript: {first_few(inside)} ran as single calls; their insides are not traced")
    if any(r.repeated for r in layers):
        notes.append("call N/M: a module that ran M times (reused, or shared by two parents); its parameters count "
                     "at its first call")
    return Summary(
        model=probe.built.name,
        source=probe.built.spec.source.value,
        task=probe.built.spec.task.value,
        input_size=probe.input_size,
        input_source=probe.built.input_source,
        device=probe.built.device,
        total_params=quantized.total if quantized is not None else sum(p.numel() for p in all_params),
        trainable_params=sum(p.numel() for p in all_params if p.requires_grad),
        param_bytes=tensor_bytes(all_params) + (packed_bytes(module) if quantized is not None else 0),
        buffer_bytes=tensor_bytes(module.buffers()),
        activation_bytes=activation,
        macs=tracer.total_flops // 2,
        depth=depth,
        layers=layers,
        shape_flow=shape_flow(probe),
        uncounted_ops=dict(tracer.uncounted.most_common()),
        notes=notes,
        inputs=[s.to_dict() for s in probe.built.inputs],
        packed_params=quantized.packed if quantized is not None else None,
    )


def _params(module: "nn.Module", infos: dict[int, Any], packed: dict[int, int]) -> tuple[int, int]:
    """(parameters, trainable parameters) of a module, its children's included: torchinfo's record of it,
    or counted here for a module torchinfo has no record of (inside TorchScript); plus, in a quantized model,
    the packed int8 values under it, which no gradient reaches."""
    extra = packed.get(id(module), 0)
    info = infos.get(id(module))
    if info is not None:
        return int(info.num_params) + extra, int(info.trainable_params)
    params = list(module.parameters())
    return sum(p.numel() for p in params) + extra, sum(p.numel() for p in params if p.requires_grad)


def _uncalled(model: "nn.Module", tracer: Any, infos: dict[int, Any], scripted: set[int],
              packed: dict[int, int]) -> list[LayerRecord]:
    """The outermost modules of which nothing ran (Inception's auxiliary head in eval mode), outside TorchScript."""
    called = set(tracer.times_called)
    ran_inside: set[int] = set()  # modules with a called descendant: containers such as ModuleList
    for name, m in model.named_modules():
        if id(m) in called:
            parts = name.split(".")
            ran_inside.update(id(model.get_submodule(".".join(parts[:i]))) for i in range(len(parts)))
    rows: list[LayerRecord] = []
    skipped: list[str] = []
    for name, m in model.named_modules():
        if not name or id(m) in called or id(m) in ran_inside or is_packing(m):
            continue  # a quantized linear's packed weights count in its own row
        if any(name.startswith(prefix + ".") for prefix in skipped):
            continue  # inside a module already listed, or inside TorchScript
        skipped.append(name)
        parent = name.rpartition(".")[0]
        if parent and id(model.get_submodule(parent)) in scripted:
            continue
        params, trainable = _params(m, infos, packed)
        rows.append(LayerRecord(name, type(m).__name__, name.count(".") + 1, None, params, trainable, 0,
                                not any(True for _ in m.children()), call=0, calls=0))
    return rows


def summary(model: "str | nn.Module | ModelRequest", *, depth: int = 3, **options: Unpack[ModelOptions]) -> Summary:
    """Per-layer output shapes, parameters and MACs, from one forward pass on the meta device.

    `model` is a registry name (`resnet18`, `cnnprobe:vgg16`, `file.py:Net`),
    an `nn.Module`, or a `ModelRequest`; the keywords are a ModelRequest's.
    Nothing is allocated for weights unless the model cannot run on meta, or
    `weights` are asked for (then they load strictly). `input_size`,
    `input_dtype` and `input_range` describe the inputs as `build_model` takes
    them: one or several, any rank, any dtype.
    """
    request = ModelRequest.of(model, **options)
    check_batch(request.batch)
    check_depth(depth)
    with paused_gc():
        return summarize(probe(request.build(), request.batch, torchinfo_pass), depth)
