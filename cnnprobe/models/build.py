"""Construct a model by name (or take the user's module) on meta or a real device."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.nn.parameter import is_lazy

from ..core import cache
from ..core.enums import Source, Task
from ..core.errors import ForwardError, HeadError, InputSizeError, UsageError
from . import backbone, meta, taskheads
from .head import HeadSpec, find_head, mark_new, parse_head, replace_head
from .inputs import DEFAULT_IMAGE, InputSpec, inferred_inputs, resolve_inputs, stated_inputs
from .loading import WeightsLoad, build_with_weights, load_into
from .quantized import QuantizedParams, float_model_name, is_quantized, quantized_params, registered_params
from .registry import ModelSpec, resolve
from .tasks import arguments, task_sizes

COUNTS = "param_counts.json"
MAX_CLASSES = 1 << 24
MAX_BATCH = 1 << 30
MODELS = Path(__file__).resolve().parent  # the source that builds models: the registry, the builders, classics/


@dataclass
class Built:
    """A constructed model and how it was made."""

    module: "nn.Module"
    spec: ModelSpec
    inputs: tuple[InputSpec, ...]  # what the model is fed, without the batch
    input_source: str  # "weights", "default", "inferred", "stated" (by the model) or "user"
    device: str  # "meta" or a real device
    note: str | None = None  # why the model is not where it was asked to be
    num_classes: int | None = None  # what the caller asked for, if anything
    weights: WeightsLoad | None = None  # when weights were loaded
    head: HeadSpec | None = None  # the new head, from --head or --num-classes
    materialized: str | None = None  # which input gave lazy layers their shapes, when the model has some
    head_notes: list[str] = field(default_factory=list)  # what a task's new heads leave as they were
    builder_options: dict[str, Any] = field(default_factory=dict)  # what went to the builder as it is

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The first input's shape, without the batch."""
        return self.inputs[0].shape

    @property
    def notes(self) -> list[str]:
        """What a report says about how the model was built: where it lives, which input sized lazy layers."""
        return [n for n in (self.note, self.materialized, *self.head_notes) if n]

    def quantized_params(self) -> QuantizedParams | None:
        """Both parameter counts of a quantized model (None for a float one): a registered one's total is its
        float twin's (models.quantized)."""
        return quantized_params(self.module, self.spec.name if self.spec.source is Source.TORCHVISION else None)

    def example_inputs(self, batch: int = 1, *, random: bool = False) -> tuple[torch.Tensor, ...]:
        """A batch of every input: storage-free on meta, zeros (or noise) and in-range integers otherwise."""
        return tuple(spec.make(batch, self.device, random=random) for spec in self.inputs)

    def arguments(self, xs: tuple[torch.Tensor, ...], targets: Any = None) -> tuple[Any, ...]:
        """How the model is called on the batch `xs` (and, for a detection model in training, its targets)."""
        return arguments(self.spec.task, xs, targets)


def _module_spec(module: "nn.Module") -> ModelSpec:
    return ModelSpec(
        name=type(module).__name__,
        source=Source.MODULE,
        builder=lambda: module,
        input_shape=None,
        num_classes=None,
        accepts_num_classes=False,
    )


def construct(spec: ModelSpec, num_classes: int | None, device: str,
              **kwargs: Any) -> tuple["nn.Module", str, str | None]:
    """Build `spec` on `device` ("meta" builds without storage); returns (module, device, note). `kwargs` go
    to the builder."""

    def make() -> "nn.Module":
        return spec.build(num_classes, **kwargs)

    if device == "meta" and not spec.on_meta:
        with torch.device("cpu"):
            module = make()
        return module, "cpu", f"built on the CPU: {spec.name} holds packed int8 weights, which meta tensors cannot"
    if device == "meta":
        try:
            module, note = meta.on_meta(make)
        except Exception as e:  # noqa: BLE001
            if not meta.is_meta_error(e):
                raise
            note = f"built for real on the CPU: {type(e).__name__}: {e}"
            with torch.device("cpu"):
                module = make()
            return module, "cpu", note
        if not meta.all_on(module, "meta"):
            module = module.to("meta")
        return module, "meta", None if note is None else "built with its tensors moved to meta"
    with torch.device(device):
        module = make()
    return module, device, None


def build_model(
    model: "str | nn.Module | ModelSpec",
    *,
    num_classes: int | None = None,
    input_size: Any = None,
    input_dtype: Any = None,
    input_range: Any = None,
    device: str = "meta",
    weights: str | None = None,
    trust: bool = False,
    inputs: tuple[InputSpec, ...] | None = None,
    head: "str | HeadSpec | None" = None,
    builder_options: dict[str, Any] | None = None,
) -> Built:
    """Resolve and construct a model, and settle its inputs.

    `num_classes` goes to the builder where it takes one; otherwise the final
    classifier layer is replaced, or a detection, segmentation or video model's
    task heads (models/taskheads). `weights` (DEFAULT, a torchvision weights
    name, or a file) are loaded strictly; they need a real device, so `meta`
    becomes the CPU. `input_size` is one size (`"3,224,224"`) or a list of
    them, one per input; `input_dtype` one dtype for all or one per input;
    `input_range` the `(low, high)` integer inputs draw from. `inputs` states
    them outright (rebuilding a model elsewhere). Lazy layers are materialised
    with one pass of the example input, before the head is replaced. `head`
    (`dropout(0.3),linear(10)`) replaces the final classifier; it and a head
    built for `num_classes` are new heads, which freezing leaves trainable. `builder_options` go to a
    registered model's builder as they are (`trainable_backbone_layers` for a detection model).
    """
    head_spec = head_of(head, num_classes)
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or not 0 < num_classes <= MAX_CLASSES):
        raise InputSizeError(f"--num-classes must be a positive integer up to {MAX_CLASSES:,}, got {num_classes}")
    if weights is not None and not str(weights).strip():
        raise InputSizeError("--weights is empty: give DEFAULT, a weights name or a file")
    loaded = None
    options = builder_options or {}
    if isinstance(model, nn.Module):
        spec, module, where, note = _module_spec(model), model, _device_of(model), None
        backbone.check(spec, options)
        if weights:
            loaded = load_into(module, weights, trust=trust)
            note = loaded.describe()
    else:
        spec = model if isinstance(model, ModelSpec) else resolve(model)
        backbone.check(spec, options)
        if weights and options.get(backbone.KEY) is not None:
            raise UsageError(f"{backbone.OPTION} with --weights is not supported yet: the weights are loaded "
                             "into the model as shipped; freeze its stages with --freeze instead")
        if weights:
            where = "cpu" if device == "meta" else device
            module, loaded = build_with_weights(spec, weights, num_classes if spec.accepts_num_classes else None, where,
                                                trust=trust)
            note = loaded.describe()
        else:
            try:
                module, where, note = construct(spec, num_classes, device, **options)
            except (ValueError, AssertionError) as e:
                refused = backbone.range_error(spec, options, e)
                if refused is None:
                    raise
                raise refused from None
    if inputs is not None:
        settled, source = inputs, "user"
    else:
        defaults, source = _default_inputs(spec, module, loaded)
        given = input_size is not None or input_dtype is not None or input_range is not None
        input_size = task_sizes(spec.task, spec.name, defaults, input_size)
        known = spec.input_shape is not None or source != "default"  # not the generic fallback
        settled = resolve_inputs(defaults, input_size, input_dtype, input_range, complete=known)
        source = "user" if given else source
    built = Built(module, spec, settled, source, where, note, num_classes, loaded, builder_options=dict(options))
    _materialize(built)
    if head_spec is not None:  # a builder that takes num_classes made the head at that width
        new_head(built, head_spec, replace=head is not None or not spec.accepts_num_classes)
    return built


def new_head(built: Built, spec: HeadSpec, *,
             replace: bool = True) -> list[tuple[str, "nn.Module", "nn.Module"]]:
    """Give `built` the head `spec`, the one way every command makes one, marked new, so that freezing leaves
    it trainable: a detection, segmentation or video model's task heads as torchvision's fine-tuning recipes
    replace them (models/taskheads), a classifier's final layer (or, with `replace=False`, the one the builder
    made at that width). Returns (name, old, new) for each head replaced."""
    if is_quantized(built.module):
        twin = float_model_name(built.name)
        raise HeadError(f"{built.name} is quantized: its int8 layers take no new head and no training; fine-tune "
                        f"its float model{f' ({twin})' if twin else ''} and quantize that")
    module = built.module
    recipe = taskheads.recipe_for(module)
    layers = not (len(spec.layers) == 1 and spec.layers[0].kind == "linear")  # more than a width
    if recipe is not None and not (layers and isinstance(module, taskheads.LAYER_HEADS)):
        if layers:
            with torch.device("meta"):
                paths = ", ".join(recipe(module, spec.num_classes).heads)
            raise HeadError(f"--head takes layers for a classifier's final Linear; {built.name} is a "
                            f"{type(module).__name__}: give --num-classes K, which replaces {paths}")
        replaced, built.head_notes = taskheads.replace_task_heads(module, spec.num_classes)
    elif replace:
        replaced = [replace_head(module, spec, built.spec.num_classes)]
    else:
        name, made = find_head(module, spec.num_classes)
        replaced = [(name, mark_new(made), made)]
    built.head = spec
    return replaced


def head_of(head: "str | HeadSpec | None", num_classes: int | None) -> HeadSpec | None:
    """The new head `--head` and `--num-classes` ask for (`--num-classes` alone: one linear layer)."""
    if isinstance(head, str) and not head.strip():
        raise HeadError("--head is empty: write layers like dropout(0.3),linear(256),relu,linear(10)")
    spec = parse_head(head) if isinstance(head, str) else head
    if spec is not None and num_classes is not None and spec.num_classes != num_classes:
        raise HeadError(f"--head ends with {spec.num_classes} classes but --num-classes says {num_classes}")
    return spec if spec is not None else HeadSpec.linear(num_classes) if num_classes is not None else None


def _default_inputs(spec: ModelSpec, module: nn.Module,
                    loaded: WeightsLoad | None) -> tuple[tuple[InputSpec, ...], str]:
    """The model's own inputs: the registry's, the loaded weights' resolution, what the model states, or
    what its first layer suggests."""
    if spec.inputs is not None and len(spec.inputs) > 1:
        return spec.inputs, "weights" if spec.source is Source.TORCHVISION else "default"
    if spec.input_shape is not None:
        shape = spec.input_shape
        if loaded is not None and loaded.input_side and len(shape) == 3:  # the loaded weights' own resolution
            return (InputSpec((shape[0], loaded.input_side, loaded.input_side)),), "weights"
        return (InputSpec(shape),), "weights" if spec.source is Source.TORCHVISION else "default"
    stated = stated_inputs(_example_source(spec, module))
    if stated is not None:
        return stated, "stated"
    inferred = inferred_inputs(module)
    if inferred is not None and inferred != (InputSpec(DEFAULT_IMAGE),):
        return inferred, "inferred"
    return (InputSpec(DEFAULT_IMAGE),), "default"


def _example_source(spec: ModelSpec, module: nn.Module) -> Any:
    """Where `example_input` is read: the model built from a class (as built, on meta where it was), so that
    an instance method or property gets its instance; a factory function states it itself."""
    example = spec.example
    if example is None or (isinstance(example, type) and isinstance(module, example)):
        return module
    return example


def _materialize(built: Built) -> None:
    """Give lazy layers (`nn.LazyConv2d`, `nn.LazyLinear`) their shapes with one pass of the example input,
    so that counting and freezing see real parameters."""
    module = built.module
    if not any(is_lazy(t) for t in (*module.parameters(), *module.buffers())):
        return
    try:
        _size_lazy(module, built.example_inputs(1))
    except Exception as e:  # noqa: BLE001 - the model's own failure, reported as such
        if not (built.device == "meta" and meta.is_meta_error(e) and built.spec.source is not Source.MODULE):
            raise ForwardError(f"{built.name} has lazy layers, and the pass that gives them their shapes failed "
                               f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
        with torch.device("cpu"):  # it reads tensor values: size it on a real copy, then keep the shapes on meta
            real = built.spec.build(built.num_classes)
        _size_lazy(real, tuple(s.make(1, "cpu") for s in built.inputs))
        built.module = real.to("meta")
    built.materialized = (f"lazy layers took their shapes from an input of "
                          f"{', '.join(_described(s) for s in built.inputs)} ({_WHY.get(built.input_source, 'given')})")


def _size_lazy(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        module.train(was_training)


_WHY = {"user": "as given", "default": "the default; --input-size sets it",
        "inferred": "inferred from the first layer; --input-size sets it", "stated": "the model's example_input",
        "weights": "the weights' resolution"}


def _described(spec: InputSpec) -> str:
    text = "×".join(str(d) for d in spec.shape)
    return text if spec.dtype == "float32" else f"{text} {spec.dtype}"


def rebuild(built: Built, device: str) -> Built:
    """The same model, inputs and head built again on a real `device` (for what meta tensors cannot do)."""
    module = built.spec.source is Source.MODULE  # a module passed in already holds its head
    again = build_model(built.spec if not module else built.module, num_classes=None if module else built.num_classes,
                        inputs=built.inputs, device=device, head=None if module else built.head,
                        builder_options=None if module else built.builder_options)
    again.head = built.head
    again.materialized = built.materialized
    again.input_source = built.input_source
    return again


def _device_of(module: "nn.Module") -> str:
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device.type if t.device.type in ("meta", "cpu") else str(t.device)
    return "cpu"


def check_depth(depth: int) -> int:
    """Rows go down to this depth; 0 shows none."""
    if not isinstance(depth, int) or depth < 0:
        raise UsageError(f"--depth must be 0 or more, got {depth}")
    return depth


def check_batch(batch: int) -> int:
    """A batch must be a positive integer of a size a tensor can have."""
    if isinstance(batch, bool) or not isinstance(batch, int) or not 0 < batch <= MAX_BATCH:
        raise InputSizeError(f"--batch must be a positive integer up to {MAX_BATCH:,}, got {batch}")
    return batch


def param_counts(specs: list[ModelSpec]) -> dict[str, int]:
    """Parameters of registered models by qualified name, each counted on meta once and kept in the cache
    under the code it was counted from (torchvision's published `num_params` is what the tests hold these
    against, not what they are)."""
    keys = {s.qualified: f"{s.qualified}|{_builder_version(s)}" for s in specs}
    known = cache.load(COUNTS)
    counts = {name: known[key] for name, key in keys.items() if isinstance(known.get(key), int)}
    missing = [s for s in specs if s.qualified not in counts]
    with meta.paused_gc():
        for s in missing:
            counts[s.qualified] = (registered_params(s.name) if s.task is Task.QUANTIZED
                                   else sum(p.numel() for p in build_model(s).module.parameters()))
    if missing:
        cache.store(COUNTS, {keys[s.qualified]: counts[s.qualified] for s in missing})
    return counts


def _builder_version(spec: ModelSpec) -> str:
    """What a model's parameter count depends on: torchvision's release and the code that builds it here
    (how a task's model is built as shipped changes its count: FrozenBatchNorm2d, quantization)."""
    source = _source_digest()
    if spec.source is Source.TORCHVISION:
        return f"torchvision {torchvision.__version__} cnnprobe {source}"
    return f"cnnprobe {source}"


@functools.cache
def _source_digest() -> str:
    return hashlib.sha1(b"".join(p.read_bytes() for p in sorted(MODELS.rglob("*.py")))).hexdigest()[:12]
