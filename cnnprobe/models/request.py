"""What a user asks to be built, said once: the model, its inputs and head, its weights, and what to freeze.

The command line parses its options into these records, and every API function takes them: `summary`,
`flops`, `trainable`, `compare_models`, `inspect_checkpoint`, `memory` and `BenchConfig`. The keyword API
(`cnnprobe.summary("resnet18", input_size="3,128,128")`) builds the same records from its keywords in one
place, `requested`, so that a keyword means the same thing in every function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, TypedDict

from . import build as _build
from .freezing import FreezePlan

if TYPE_CHECKING:
    from torch import nn

    from .build import Built
    from .inputs import InputSpec

__all__ = ["FreezeOptions", "FreezePlan", "ModelOptions", "ModelRequest", "RequestOptions", "requested"]


class ModelOptions(TypedDict, total=False):
    """The keywords a ModelRequest is made of (see its fields)."""

    input_size: Any
    input_dtype: Any
    input_range: Any
    batch: int
    num_classes: int | None
    head: str | None
    weights: str | None
    trust: bool
    trainable_backbone_layers: int | None


class FreezeOptions(TypedDict, total=False):
    """The keywords a FreezePlan is parsed from."""

    freeze_all: bool
    freeze_except: str | Sequence[str] | None
    freeze: str | Sequence[str] | None


class RequestOptions(ModelOptions, FreezeOptions, total=False):
    """Both: what a function that builds and freezes a model takes as keywords."""


FREEZE_KEYS = tuple(FreezeOptions.__annotations__)
MODEL_KEYS = tuple(ModelOptions.__annotations__)


@dataclass(frozen=True)
class ModelRequest:
    """One model as asked for: a registered name, `file.py:Class` or an `nn.Module`, with its inputs (as
    `build_model` takes them: one size or several, any rank and dtype), the batch of its example input, a
    new head (`num_classes`, or `head` layers such as `dropout(0.3),linear(10)`), and weights to load.
    `model` is None where the model is given beside the request (a bench sweep over several)."""

    model: "str | nn.Module | None" = None
    input_size: Any = None
    input_dtype: Any = None
    input_range: Any = None
    batch: int = 1
    num_classes: int | None = None
    head: str | None = None
    weights: str | None = None
    trust: bool = False
    trainable_backbone_layers: int | None = None  # a detection builder's own: how many backbone stages train

    @classmethod
    def of(cls, model: "str | nn.Module | ModelRequest | None", **options: Any) -> "ModelRequest":
        """A request for `model`, or `model` itself (a request already) with `options` over it."""
        if isinstance(model, ModelRequest):
            return replace(model, **options) if options else model
        return cls(model, **options)

    def given(self) -> dict[str, Any]:
        """The options as keywords, without the model."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}

    def build(self, model: "str | nn.Module | None" = None, *, device: str = "meta", weights: bool = True,
              head: bool = True, inputs: "tuple[InputSpec, ...] | None" = None) -> "Built":
        """Build the model (or `model` in its place) on `device` ("meta": no storage). `weights=False` leaves
        the weights out (shapes do not depend on them), `head=False` the new head, `num_classes`'s too
        (trainable makes it itself, to report the change); `inputs` states the inputs outright (another build's)."""
        target = self.model if model is None else model
        if target is None:
            raise TypeError("ModelRequest.build needs a model")
        return _build.build_model(
            target, num_classes=self.num_classes if head else None, input_size=self.input_size,
            input_dtype=self.input_dtype, input_range=self.input_range, device=device,
            weights=self.weights if weights else None, trust=self.trust, inputs=inputs,
            head=self.head if head else None, builder_options=self.builder_options())

    def builder_options(self) -> dict[str, Any]:
        """What goes to the model's builder as it is."""
        if self.trainable_backbone_layers is None:
            return {}
        return {"trainable_backbone_layers": self.trainable_backbone_layers}


def requested(model: "str | nn.Module | ModelRequest | None", plan: FreezePlan | None = None,
              **options: Any) -> tuple[ModelRequest, FreezePlan]:
    """The records behind a keyword call: `model` and the keywords as a ModelRequest, the freeze keywords
    parsed into a FreezePlan once (or `plan` as given). A keyword no record has is a TypeError, as for
    any function."""
    freezing = {k: options.pop(k) for k in FREEZE_KEYS if k in options}
    if plan is not None and freezing:
        raise TypeError("give a FreezePlan or the freeze keywords, not both")
    return ModelRequest.of(model, **options), plan if plan is not None else FreezePlan.from_options(**freezing)
