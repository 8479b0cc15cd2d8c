"""torchvision's models as torchvision ships them with their DEFAULT weights, without the weights' values.

A builder given weights changes the architecture, not only the values: a
detection backbone takes `FrozenBatchNorm2d` (buffers, not parameters, so
`num_params` counts fewer) and freezes its first stages
(`trainable_backbone_layers`), a quantized model is fused and converted to
int8, a ViT takes the weights' resolution. Building with `weights=DEFAULT`
lets torchvision's own code make every one of those choices; here the
weights' download and loading are answered with nothing, so the values stay
the builder's initialisation and nothing ever reaches the network.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torchvision import models
from torchvision.models._api import WeightsEnum

from ..core.errors import CnnprobeError


class _Unread(dict[str, Any]):
    """The state dict of weights nobody reads: loading it loads nothing."""


def _no_download(*args: Any, **kwargs: Any) -> Any:
    url = next((a for a in args if isinstance(a, str)), kwargs.get("url", "weights"))
    raise CnnprobeError(f"cnnprobe never downloads, and a builder asked for {url}: this is a bug in cnnprobe")


@contextlib.contextmanager
def unread_weights() -> Iterator[None]:
    """While a builder runs: its weights' `get_state_dict` gives an empty state that `load_state_dict` skips,
    and any download (a backbone's weights, say) fails loudly instead of reaching the network."""
    get_state_dict = WeightsEnum.get_state_dict
    load_state_dict = nn.Module.load_state_dict
    from_url = torch.hub.load_state_dict_from_url

    def unread(self: WeightsEnum, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return _Unread()

    def load(self: nn.Module, state: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(state, _Unread):
            return None
        return load_state_dict(self, state, *args, **kwargs)

    WeightsEnum.get_state_dict = unread
    nn.Module.load_state_dict = load  # type: ignore[method-assign,assignment]
    torch.hub.load_state_dict_from_url = _no_download
    try:
        yield
    finally:
        WeightsEnum.get_state_dict = get_state_dict
        nn.Module.load_state_dict = load_state_dict  # type: ignore[method-assign]
        torch.hub.load_state_dict_from_url = from_url


def default_weights(name: str) -> Any:
    """The DEFAULT weights of a torchvision model, or None where it has none."""
    try:
        return models.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError, KeyError):
        return None


@functools.cache
def _quantized_names() -> frozenset[str]:
    return frozenset(models.list_models(module=models.quantization))


def weights_need(name: str) -> dict[str, Any]:
    """Builder arguments a model's weights need besides themselves: int8 weights load only into the quantized
    model (`quantize=True`)."""
    return {"quantize": True} if name in _quantized_names() else {}


def build_shipped(name: str, **kwargs: Any) -> nn.Module:
    """`name` built as shipped with its DEFAULT weights (their architecture, not their values); `kwargs` go to
    the builder (`trainable_backbone_layers`, say). Quantized models are quantized, as their weights are."""
    weights = default_weights(name)
    with unread_weights():
        return models.get_model(name, weights=weights, **{**weights_need(name), **kwargs})
