"""The parameters of a quantized model: one definition for every command.

A quantized torchvision model holds no `nn.Parameter`: its convolutions and
linears keep int8 weights (and float biases) packed inside C++ objects, and
BatchNorm has been folded into the convolutions before converting. torchvision's
`num_params` for it is its float architecture's count (quantized_resnet18's is
resnet18's 11,689,512). So a quantized model's *total* parameters are those of
its float twin, the quantizable model before fusing and converting
(`quantize=False`, its float weights' architecture, built on meta), and the
packed int8 values (weights and biases of each quantized convolution and
linear, `m.weight()` and `m.bias()`) are said beside it: fewer, since folding
BatchNorm turns two parameters per channel into one bias.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchvision import models

from ..core.enums import Task
from . import meta
from .shipped import default_weights, unread_weights

# torch's own notices about the eager quantization API that torchvision's quantized builders use, and the
# observers' default scales (the weights' values are never read, so the observers never see data): not the
# user's doing, and nothing they can act on, printed on every command of a quantized model otherwise.
for _message, _category in ((r"torch\.quantize_per_tensor, torch\.quantize_per_channel", UserWarning),
                            (r"must run observer before calling calculate_qparams", UserWarning),
                            (r"torch\.ao\.quantization is deprecated", DeprecationWarning)):
    warnings.filterwarnings("ignore", message=_message, category=_category)

_PACKED_TYPES: tuple[type, ...] = tuple(
    t for t in (getattr(torch.ao.nn.quantized, n, None) for n in (
        "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Linear"))
    if isinstance(t, type)
)
_PACKING = tuple(t for t in (getattr(torch.ao.nn.quantized.modules.linear, "LinearPackedParams", None),)
                 if isinstance(t, type))

NOTE = ("quantized: total parameters are the float architecture's ({total:,}, torchvision's num_params); the int8 "
        "model holds {packed:,} packed values (weights and biases of its quantized convolutions and linears, "
        "BatchNorm folded in); the {rows} show those, so they add up to {packed:,}, not the total")


@dataclass(frozen=True)
class QuantizedParams:
    """How many parameters a quantized model has, in both senses."""

    total: int  # the float twin's parameters: what `num_params` counts
    packed: int  # int8 weights and float biases the converted model holds
    twin: str  # the float architecture counted: "QuantizableResNet (quantize=False)"
    dropped: str | None = None  # what the total counts that the int8 model no longer holds

    def note(self, rows: str = "layer rows") -> str:
        """What a report says of the two counts, whose `rows` show the packed ones."""
        text = NOTE.format(total=self.total, packed=self.packed, rows=rows)
        return text + (f"; the total counts {self.dropped}" if self.dropped else "")


def _packed(module: nn.Module) -> list[torch.Tensor]:
    """The weight and bias a quantized convolution or linear holds packed (none for any other module)."""
    if not isinstance(module, _PACKED_TYPES):
        return []
    return [t for t in (module.weight(), module.bias()) if t is not None]  # type: ignore[operator]


def packed_values(module: nn.Module) -> int:
    """Packed values a quantized convolution or linear holds itself (0 for any other module)."""
    return sum(int(t.numel()) for t in _packed(module))


def packed_bytes(model: nn.Module) -> int:
    """Bytes of the packed values as the modules hand them back: one per int8 weight, four per float bias."""
    return sum(t.numel() * t.element_size() for m in model.modules() for t in _packed(m))


def is_packing(module: nn.Module) -> bool:
    """The holder of a quantized linear's packed weights: counted with its linear, not as a layer of its own."""
    return isinstance(module, _PACKING)


def is_quantized(model: nn.Module) -> bool:
    """Whether the model holds packed int8 layers."""
    return any(isinstance(m, _PACKED_TYPES) for m in model.modules())


def packed_by_module(model: nn.Module) -> dict[int, int]:
    """Packed values under each module (by `id`), its descendants' included."""
    inclusive: dict[int, int] = {}
    for name, m in model.named_modules():
        count = packed_values(m)
        if not count:
            continue
        parts = name.split(".") if name else []
        for i in range(len(parts) + 1):
            key = id(model.get_submodule(".".join(parts[:i])))
            inclusive[key] = inclusive.get(key, 0) + count
    return inclusive


def packed_total(model: nn.Module) -> int:
    return sum(packed_values(m) for m in model.modules())


def float_weights(name: str) -> Any:
    """The float weights a quantized model's weights were quantized from (`ResNet18_Weights.IMAGENET1K_V1`)."""
    weights = default_weights(name)
    return None if weights is None else weights.meta.get("unquantized")


# torchvision's num_params for quantized_inception_v3 is the float inception_v3's, auxiliary head included
# (27,161,264); its builder drops that head from both the int8 model and the float one it loads weights into.
_TWIN_KWARGS: dict[str, dict[str, Any]] = {"quantized_inception_v3": {"aux_logits": True}}
_DROPPED = {"quantized_inception_v3": "the auxiliary head (AuxLogits), which the int8 model drops"}


@functools.cache
def twin_params(name: str) -> tuple[int, str]:
    """(parameters, architecture) of a registered quantized model's float twin, counted on meta."""

    def make() -> nn.Module:
        with unread_weights():
            return models.get_model(name, weights=float_weights(name), quantize=False, **_TWIN_KWARGS.get(name, {}))

    twin, _ = meta.on_meta(make)
    return sum(p.numel() for p in twin.parameters()), f"{type(twin).__name__} (quantize=False)"


def float_model_name(name: str) -> str | None:
    """torchvision's float model of the same architecture: `resnet18` for `quantized_resnet18`."""
    bare = name.removeprefix("quantized_")
    return bare if bare != name and bare in models.list_models() else None


def quantized_params(model: nn.Module, name: str | None = None) -> QuantizedParams | None:
    """Both counts of a quantized model (None for a float one). `name` is its registry name, whose float twin
    gives the total; a quantized module of no registered name counts its packed values as its total."""
    if not is_quantized(model):
        return None
    packed = packed_total(model)
    if name is not None and float_weights(name) is not None:
        total, twin = twin_params(name)
        return QuantizedParams(total, packed, twin, _DROPPED.get(name))
    return QuantizedParams(packed, packed, "none: the packed values themselves")


def registered_params(name: str) -> int:
    """A registered quantized model's total parameters without building it: its float twin's."""
    return twin_params(name)[0]


def quantized_name(model: Any) -> str | None:
    """The registry name of a quantized model given by name (None for anything else, or an unknown name, which
    is reported where the name is resolved)."""
    if not isinstance(model, str):
        return None
    from .registry import resolve  # the registry's specs build through this module's neighbours

    try:
        spec = resolve(model)
    except Exception:  # noqa: BLE001 - reported where the run resolves it
        return None
    return spec.name if spec.task is Task.QUANTIZED else None
