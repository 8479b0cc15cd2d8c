"""Construct a model by name (or take the user's module) on meta or a real device."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from . import cache, meta
from .enums import Source
from .errors import InputSizeError, UsageError
from .head import HeadSpec, replace_head
from .registry import DEFAULT_INPUT, ModelSpec, resolve
from .weights import WeightsLoad, build_with_weights, load_into

COUNTS = "param_counts.json"
MODELS = Path(__file__).resolve().parent / "models"  # the hand-written builders' source
MAX_SIDE = 1 << 20  # no real input has a side this long; larger ones are typos or overflows
# Customary inputs for user models with 1-D and 3-D convolutions: a second of 16 kHz audio, a 16-frame clip.
DEFAULT_SPATIAL = {1: (16000,), 2: DEFAULT_INPUT[1:], 3: (16, 112, 112)}


@dataclass
class Built:
    """A constructed model and how it was made."""

    module: "nn.Module"
    spec: ModelSpec
    input_shape: tuple[int, ...]  # without the batch
    input_source: str  # "weights", "default", "inferred" or "user"
    device: str  # "meta" or a real device
    note: str | None = None  # why the model is not where it was asked to be
    num_classes: int | None = None  # what the caller asked for, if anything
    weights: WeightsLoad | None = None  # when weights were loaded

    @property
    def name(self) -> str:
        return self.spec.name

    def example_input(self, batch: int = 1, dtype: "torch.dtype | None" = None) -> "torch.Tensor":
        """Zeros (or storage-free meta tensors) of the model's input shape."""
        shape = (batch, *self.input_shape)
        if self.device == "meta":
            return torch.empty(shape, device="meta", dtype=dtype or torch.float32)
        return torch.zeros(shape, device=self.device, dtype=dtype or torch.float32)


def parse_input_size(text: str | tuple[int, ...] | list[int] | None) -> tuple[int, ...] | None:
    """`3,224,224`, `3x224x224`, `224,224`, `224`, or any rank (`1,10` for a Conv1d, `3,16,112,112` for a
    Conv3d) -> a tuple of positive ints, batch excluded."""
    if text is None:
        return None
    if isinstance(text, (tuple, list)):
        parts = [str(p) for p in text]
    else:
        parts = re.split(r"\s*[,x×]\s*", text.strip())
    usage = "expected sizes without the batch, such as 3,224,224 (or H,W, or one side)"
    if not 1 <= len(parts) <= 6 or not all(p.isascii() and p.isdigit() for p in parts):
        raise InputSizeError(f"malformed --input-size '{text}': {usage}")
    sizes = tuple(int(p) for p in parts)
    if any(s <= 0 for s in sizes):
        raise InputSizeError(f"malformed --input-size '{text}': every size must be positive")
    if any(s > MAX_SIDE for s in sizes):
        raise InputSizeError(f"--input-size '{text}': a size above {MAX_SIDE:,} is not an input this can build")
    return sizes


def _complete_shape(sizes: tuple[int, ...], default: tuple[int, ...]) -> tuple[int, ...]:
    """Fewer sizes than the model's input has dimensions fill in from the front: channels, then equal sides."""
    if len(sizes) >= len(default):
        return sizes
    if len(sizes) == 1 and len(default) > 2:  # one side: every spatial side
        return (default[0], *([sizes[0]] * (len(default) - 1)))
    return (*default[: len(default) - len(sizes)], *sizes)


def _inferred_input(module: "nn.Module") -> tuple[int, ...] | None:
    """An input shape for user models that do not say, from their first convolution: its input channels,
    and a 1-, 2- or 3-D signal of a customary size."""
    for m in module.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            spatial = len(m.kernel_size)
            channels = int(m.in_channels)
            return (channels, *DEFAULT_SPATIAL.get(spatial, (DEFAULT_INPUT[1],) * spatial))
    return None


def _module_spec(module: "nn.Module") -> ModelSpec:
    return ModelSpec(
        name=type(module).__name__,
        source=Source.MODULE,
        builder=lambda: module,
        input_shape=None,
        num_classes=None,
        accepts_num_classes=False,
    )


def construct(spec: ModelSpec, num_classes: int | None, device: str) -> tuple["nn.Module", str, str | None]:
    """Build `spec` on `device` ("meta" builds without storage); returns (module, device, note)."""

    def make() -> "nn.Module":
        return spec.build(num_classes)

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
    input_size: str | tuple[int, ...] | None = None,
    device: str = "meta",
    weights: str | None = None,
    trust: bool = False,
) -> Built:
    """Resolve and construct a model, and settle its input shape.

    `num_classes` goes to the builder where it takes one; otherwise the final
    classifier layer is replaced. `weights` (DEFAULT, a torchvision weights
    name, or a file) are loaded strictly; they need a real device, so `meta`
    becomes the CPU.
    """
    sizes = parse_input_size(input_size)
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes <= 0):
        raise InputSizeError(f"--num-classes must be a positive integer, got {num_classes}")
    loaded = None
    if isinstance(model, nn.Module):
        spec, module, where, note = _module_spec(model), model, _device_of(model), None
        if weights:
            loaded = load_into(module, weights, trust=trust)
            note = loaded.describe()
    else:
        spec = model if isinstance(model, ModelSpec) else resolve(model)
        if weights:
            where = "cpu" if device == "meta" else device
            module, loaded = build_with_weights(spec, weights, num_classes if spec.accepts_num_classes else None, where,
                                                trust=trust)
            note = loaded.describe()
        else:
            module, where, note = construct(spec, num_classes, device)
    if num_classes is not None and not spec.accepts_num_classes:
        replace_head(module, HeadSpec.linear(num_classes))

    default = spec.input_shape
    source = "weights" if spec.source is Source.TORCHVISION else "default"
    if loaded is not None and loaded.input_side and default is not None:  # the loaded weights' own resolution
        default = (default[0], loaded.input_side, loaded.input_side)
        source = "weights"
    if default is None:
        inferred = _inferred_input(module)
        default = inferred or DEFAULT_INPUT
        source = "inferred" if inferred not in (None, DEFAULT_INPUT) else "default"
    shape = default if sizes is None else _complete_shape(sizes, default)
    return Built(module, spec, shape, "user" if sizes is not None else source, where, note, num_classes, loaded)


def rebuild(built: Built, device: str) -> Built:
    """The same model, input and head built again on a real `device` (for what meta tensors cannot do)."""
    again = build_model(built.spec if built.spec.source is not Source.MODULE else built.module,
                        num_classes=built.num_classes, input_size=built.input_shape, device=device)
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
    """A batch must be a positive integer."""
    if not isinstance(batch, int) or batch <= 0:
        raise InputSizeError(f"--batch must be a positive integer, got {batch}")
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
            counts[s.qualified] = sum(p.numel() for p in build_model(s).module.parameters())
    if missing:
        cache.store(COUNTS, {keys[s.qualified]: counts[s.qualified] for s in missing})
    return counts


def _builder_version(spec: ModelSpec) -> str:
    """What a model's parameter count depends on: torchvision's release, or the hand-written source."""
    if spec.source is Source.TORCHVISION:
        return f"torchvision {torchvision.__version__}"
    return "cnnprobe " + hashlib.sha1(b"".join(p.read_bytes() for p in sorted(MODELS.glob("*.py")))).hexdigest()[:12]
