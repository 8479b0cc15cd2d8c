"""Answers on meta for operators whose output size depends on tensor values.

A meta tensor has a shape and no values, so `nonzero`, `unique`, `nms` and
`Tensor.item()` have nothing to decide with: torch raises, and a detection
model could only be inspected by building it for real. Here each gets the
answer that lets the model run to its own caps, the largest amount of work
it can do on any image: every element is nonzero (a score threshold keeps
every candidate), NMS keeps every box, and a mask keeps every element. The
model's own limits then decide how much reaches the next stage: the RPN's
`pre_nms_top_n`/`post_nms_top_n`, `detections_per_img`, a `topk`. `unique`
answers one value (all elements alike), which, with every mask keeping
everything, makes a per-value loop (torchvision's `batched_nms`) run once over
every box instead of once per box.

`Tensor.item()` on meta answers a stand-in scalar (False, 0, or 1.0 for a
float) so that Python control flow and the sizes torchvision's postprocessing
reads from box coordinates stay valid: each pasted mask and each keypoint
heatmap is then resized to one pixel. Only that postprocessing reads values
so; its interpolations are counted apart from the MACs (see
`formulas.SEPARATE`), at those stand-in sizes.

Each answer is a function of the operator's arguments returning its result;
the tracer calls it only when an argument lives on meta.
"""

from __future__ import annotations

from typing import Any

import torch

aten = torch.ops.aten

NOTE = "on meta, data-dependent selections keep every candidate up to the model's caps"

ANSWERS: dict[Any, Any] = {}  # operator overload -> answer(args, kwargs)
LABELS = {"_local_scalar_dense": "item()", "_unique2": "unique", "_unique": "unique"}  # names a reader knows


def _answer(*ops: Any) -> Any:
    def register(fn: Any) -> Any:
        for op in ops:
            if op is not None:
                ANSWERS[op] = fn
        return fn

    return register


def _op(namespace: Any, name: str, overload: str = "default") -> Any:
    packet = getattr(namespace, name, None)
    return getattr(packet, overload, None) if packet is not None else None


def _every_index(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty((x.numel(), x.dim()), dtype=torch.long)


@_answer(aten.nonzero.default, _op(aten, "argwhere"))
def _nonzero(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Every element is nonzero: one row of indices per element."""
    return _every_index(args[0])


@_answer(_op(aten, "nonzero_numpy"), _op(aten, "where"))  # where(condition): one index tensor per dim
def _nonzero_numpy(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x = args[0]
    return [x.new_empty((x.numel(),), dtype=torch.long) for _ in range(max(1, x.dim()))]


def _unique_like(x: torch.Tensor, inverse: bool, counts: bool, dim: int | None = None) -> Any:
    """One value: every element alike (inverse all zero, one count)."""
    if dim is None:
        values = x.new_empty((min(1, x.numel()),))
        inverse_shape: tuple[int, ...] = tuple(x.shape)
    else:
        shape = list(x.shape)
        shape[dim] = min(1, shape[dim])
        values = x.new_empty(shape)
        inverse_shape = (x.shape[dim],)
    return (values, x.new_empty(inverse_shape if inverse else (0,), dtype=torch.long),
            x.new_empty((values.shape[0 if dim is None else dim],) if counts else (0,), dtype=torch.long))


@_answer(aten._unique2.default)
def _unique2(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x = args[0]
    inverse = bool(args[2] if len(args) > 2 else kwargs.get("return_inverse", False))
    counts = bool(args[3] if len(args) > 3 else kwargs.get("return_counts", False))
    return _unique_like(x, inverse, counts)


@_answer(_op(aten, "_unique"))
def _unique(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    inverse = bool(args[2] if len(args) > 2 else kwargs.get("return_inverse", False))
    values, inv, _ = _unique_like(args[0], inverse, False)
    return values, inv


@_answer(aten.unique_dim.default)
def _unique_dim(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x, dim = args[0], int(args[1] if len(args) > 1 else kwargs["dim"]) % max(1, args[0].dim())
    inverse = bool(args[3] if len(args) > 3 else kwargs.get("return_inverse", False))
    counts = bool(args[4] if len(args) > 4 else kwargs.get("return_counts", False))
    return _unique_like(x, inverse, counts, dim)


@_answer(aten.unique_consecutive.default)
def _unique_consecutive(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    inverse = bool(args[1] if len(args) > 1 else kwargs.get("return_inverse", False))
    counts = bool(args[2] if len(args) > 2 else kwargs.get("return_counts", False))
    dim = args[3] if len(args) > 3 else kwargs.get("dim")
    return _unique_like(args[0], inverse, counts, None if dim is None else int(dim) % max(1, args[0].dim()))


@_answer(_op(torch.ops.torchvision, "nms"))
def _nms(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """NMS keeps every box (no two overlap enough to suppress one)."""
    boxes = args[0]
    return boxes.new_empty((boxes.shape[0],), dtype=torch.long)


@_answer(aten.masked_select.default)
def _masked_select(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x, mask = args[0], args[1]
    return x.new_empty((torch.broadcast_shapes(x.shape, mask.shape).numel(),))


def _long_indices(indices: Any) -> list[Any] | None:
    """Boolean masks among `indices` as the long indices of a mask that keeps everything; None if none."""
    if not any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices):
        return None
    out: list[Any] = []
    for i in indices:
        if isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8):
            out += [i.new_empty((i.numel(),), dtype=torch.long)] * max(1, i.dim())
        else:
            out.append(i)
    return out


@_answer(aten.index.Tensor)
def _index(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    indices = _long_indices(args[1])
    return None if indices is None else aten.index.Tensor(args[0], indices)


@_answer(aten.index_put_.default)
def _index_put_(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    indices = _long_indices(args[1])
    return None if indices is None else aten.index_put_.default(args[0], indices, *args[2:], **kwargs)


@_answer(aten.index_put.default)
def _index_put(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    indices = _long_indices(args[1])
    return None if indices is None else aten.index_put.default(args[0], indices, *args[2:], **kwargs)


@_answer(aten._local_scalar_dense.default)
def _item(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A stand-in scalar of the tensor's kind: False, 0, or 1.0 for a float (a size read from a float
    must be positive)."""
    x = args[0]
    if x.dtype is torch.bool:
        return False
    return 1.0 if x.is_floating_point() or x.is_complex() else 0


def answer(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *, fake: bool = False) -> Any:
    """The meta answer of a data-dependent operator, or None where `func` needs none (no meta argument, or
    nothing data-dependent in this call: an index without a mask). `fake`: the same answer for any argument
    (a fake tensor, which holds no values either, answered inside its FakeTensorMode)."""
    fn = ANSWERS.get(func)
    if fn is None or not (fake or any(_is_meta(a) for a in args)):
        return None
    return fn(args, kwargs)


def _is_meta(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.is_meta
    if isinstance(value, (list, tuple)):
        return any(isinstance(v, torch.Tensor) and v.is_meta for v in value)
    return False
