"""Building models without paying for their weights.

A model constructed on the `meta` device has shapes but no storage: it
allocates nothing and does no arithmetic, so a 600M-parameter ViT builds in a
tenth of a second. Weight initialisation on meta tensors is pure overhead
(torch runs it through Python reference kernels), so it is skipped.

Some constructors compute with tensors (regnet derives its widths with
`torch.arange(...).tolist()`), which meta tensors cannot do. For those, the
computation stays on the CPU and only the parameters and buffers move to meta
as they are registered.
"""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

T = TypeVar("T")

try:  # private, but stable since torch 2.0; without it we fall back to torch.device("meta")
    from torch.utils._device import _device_constructors

    _CONSTRUCTORS: set[Any] | None = set(_device_constructors())
except Exception:  # pragma: no cover - depends on the torch release
    _CONSTRUCTORS = None

_INIT_FUNCTIONS = {
    getattr(nn.init, name)
    for name in (
        "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
        "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_",
    )
    if hasattr(nn.init, name)
}
_T = torch.Tensor
# In-place tensor methods that only write values: on a meta tensor they are no-ops.
_VALUE_WRITERS = {
    getattr(_T, name)
    for name in (
        "normal_", "uniform_", "fill_", "zero_", "copy_", "exponential_", "random_", "bernoulli_",
        "erfinv_", "clamp_", "clamp_min_", "clamp_max_", "mul_", "add_", "sub_", "div_", "log_normal_",
        "geometric_", "cauchy_", "sqrt_", "abs_", "neg_",
    )
    if hasattr(_T, name)
}


def _first_is_meta(args: tuple[Any, ...]) -> bool:
    return bool(args) and isinstance(args[0], torch.Tensor) and args[0].is_meta


class MetaConstruction(TorchFunctionMode):
    """Factory functions default to `meta`; initialisers on meta tensors are skipped."""

    def __init__(self, place_factories: bool = True) -> None:
        super().__init__()
        self.place_factories = place_factories and _CONSTRUCTORS is not None

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if (func in _INIT_FUNCTIONS or func in _VALUE_WRITERS) and _first_is_meta(args):
            return args[0]
        if self.place_factories and func in _CONSTRUCTORS and kwargs.get("device") is None:  # type: ignore[operator]
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


@contextlib.contextmanager
def _factories_on_meta() -> Iterator[None]:
    if _CONSTRUCTORS is not None:
        with MetaConstruction():
            yield
    else:  # pragma: no cover - older torch
        with torch.device("meta"), MetaConstruction(place_factories=False):
            yield


@contextlib.contextmanager
def _registered_on_meta() -> Iterator[None]:
    """Move parameters and buffers to meta as modules register them; compute stays on the CPU."""
    register_parameter = nn.Module.register_parameter
    register_buffer = nn.Module.register_buffer

    def parameter_on_meta(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(self, name, param)

    def buffer_on_meta(self: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None:
        register_buffer(self, name, None if tensor is None else tensor.to("meta"), persistent)

    nn.Module.register_parameter = parameter_on_meta  # type: ignore[method-assign]
    nn.Module.register_buffer = buffer_on_meta  # type: ignore[method-assign]
    try:
        with MetaConstruction(place_factories=False):
            yield
    finally:
        nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
        nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]


def is_meta_error(error: BaseException) -> bool:
    """Whether an error comes from meta tensors having no data, rather than from the model.

    Torch's messages say so ("Tensor.item() cannot be called on meta tensors", "... from the 'Meta'
    backend", "found at least two devices, meta and cpu"; torch.nonzero's "register_meta ... no
    data-independent implementation"); paths are dropped first so that a user's
    folder called `meta` does not count.
    """
    words = " ".join(w for w in str(error).split() if "/" not in w and "\\" not in w)
    return re.search(r"(\b|_)meta\b|data-independent implementation", words, re.IGNORECASE) is not None


def on_meta(fn: Callable[[], T]) -> tuple[T, str | None]:
    """Run a constructor so that every tensor it registers lives on meta.

    Returns the result and, when the plain meta route failed, why.
    """
    try:
        with _factories_on_meta():
            return fn(), None
    except Exception as e:  # noqa: BLE001 - any failure: try the next route
        if not is_meta_error(e):
            raise
        first = f"{type(e).__name__}: {e}"
    with _registered_on_meta():
        return fn(), first


def all_on(module: nn.Module, device: str) -> bool:
    """Whether every parameter and buffer of `module` lives on `device`."""
    tensors = list(module.parameters()) + list(module.buffers())
    return all(t.device.type == device for t in tensors)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection while a pass runs.

    Building and tracing a model allocates hundreds of thousands of small
    objects; with torch's own million objects alive, each full collection
    they trigger costs a tenth of a second and frees nothing.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
