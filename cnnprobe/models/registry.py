"""One registry: names -> builders and their metadata.

Three sources feed it: the hand-written classics (`cnnprobe:`), every
torchvision model of every task (`torchvision:`: classification, detection,
segmentation, video, optical flow and quantized), and a user's
`path/to/file.py:ClassOrFactory`. A bare name means torchvision's model where
torchvision has one and the hand-written one otherwise.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import hashlib
import importlib.util
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from torchvision import models

from ..core.enums import Source, Task
from ..core.errors import UnknownModelError, UserFileError
from .classics import BUILDERS
from .inputs import DEFAULT_IMAGE, InputSpec
from .shipped import build_shipped, default_weights
from .tasks import default_inputs

DEFAULT_INPUT = DEFAULT_IMAGE


@dataclass(frozen=True)
class ModelSpec:
    """A buildable model and what is known about it before building."""

    name: str
    source: Source
    builder: Callable[..., "nn.Module"] = field(repr=False, compare=False)
    input_shape: tuple[int, ...] | None
    num_classes: int | None
    accepts_num_classes: bool = True
    weights: str | None = None  # torchvision DEFAULT weights, e.g. "ResNet18_Weights.IMAGENET1K_V1"
    published_params: int | None = None  # torchvision's meta["num_params"]
    published_gmacs: float | None = None  # torchvision's meta["_ops"] (GMACs, though labelled GFLOPS)
    doc: str = ""
    example: Any = field(default=None, repr=False, compare=False)  # a user's class or factory stating example_input
    task: Task = Task.CLASSIFICATION
    inputs: tuple[InputSpec, ...] | None = None  # every input, where there is more than `input_shape` to say
    on_meta: bool = True  # False: the model cannot be built on meta (packed int8 weights), so it is built on the CPU

    @property
    def qualified(self) -> str:
        """`source:name`, which always resolves to this spec."""
        return self.name if self.source is Source.FILE else f"{self.source.value}:{self.name}"

    def build(self, num_classes: int | None = None, **kwargs: Any) -> "nn.Module":
        """Call the builder; `num_classes` only where the builder takes it; `kwargs` (a torchvision builder's
        own arguments, such as `trainable_backbone_layers`) as they are."""
        if num_classes is not None and self.accepts_num_classes:
            return self.builder(num_classes=num_classes, **kwargs)
        return self.builder(**kwargs)


# --------------------------------------------------------------------------- hand-written


@functools.cache
def _handwritten() -> dict[str, ModelSpec]:
    return {
        e.name: ModelSpec(
            name=e.name,
            source=Source.CNNPROBE,
            builder=e.builder,
            input_shape=e.input_shape,
            num_classes=e.num_classes,
            doc=e.doc,
        )
        for e in BUILDERS.values()
    }


# --------------------------------------------------------------------------- torchvision


def shipped_kwargs(name: str, weights: Any) -> dict[str, Any]:
    """Constructor arguments that reproduce the architecture torchvision ships with its weights.

    torchvision's builders override some arguments when weights are given:
    ViTs take the weights' resolution (518 px for vit_h_14's SWAG weights) and
    the Inception-style nets switch `transform_input` on. GoogLeNet's weights
    drop the auxiliary heads after loading; Inception v3's keep them. With
    these the parameter counts equal the published `num_params`.
    """
    kwargs: dict[str, Any] = {}
    if name.startswith("vit_"):
        kwargs["image_size"] = int(weights.meta["min_size"][0])
    elif name == "googlenet":
        kwargs.update(aux_logits=False, transform_input=True, init_weights=False)
    elif name == "inception_v3":
        kwargs.update(aux_logits=True, transform_input=True, init_weights=False)
    return kwargs


def _build_classifier(name: str, num_classes: int = 1000) -> "nn.Module":
    weights = models.get_model_weights(name).DEFAULT
    return models.get_model(name, weights=None, num_classes=num_classes, **shipped_kwargs(name, weights))


def _tasks() -> dict[str, Task]:
    """Every torchvision model's task, by the module torchvision lists it under."""
    tasks = {}
    for task, module in ((Task.DETECTION, models.detection), (Task.SEGMENTATION, models.segmentation),
                         (Task.VIDEO, models.video), (Task.OPTICAL_FLOW, models.optical_flow),
                         (Task.QUANTIZED, models.quantization)):
        tasks.update(dict.fromkeys(models.list_models(module=module), task))
    return tasks


def eval_crop(weights: Any) -> int:
    """The resolution the weights were evaluated at: the crop of their transforms."""
    keywords = getattr(weights.transforms, "keywords", {}) or {}
    crop = keywords.get("crop_size", DEFAULT_INPUT[1])
    return int(crop[0] if isinstance(crop, (list, tuple)) else crop)


@functools.cache
def _torchvision() -> dict[str, ModelSpec]:
    """Every model torchvision lists, of every task. Classifiers build from their architecture's arguments
    (so that `num_classes` makes the head at its width); the others as shipped with their DEFAULT weights,
    whose head a new class count replaces."""
    specs: dict[str, ModelSpec] = {}
    tasks = _tasks()
    for name in models.list_models():
        builder = models.get_model_builder(name)
        weights = default_weights(name)
        crop = eval_crop(weights) if weights is not None else DEFAULT_INPUT[1]
        meta = weights.meta if weights is not None else {}
        doc = (builder.__doc__ or "").strip().splitlines()[0] if builder.__doc__ else ""
        task = tasks.get(name, Task.CLASSIFICATION)
        inputs = default_inputs(task, name, crop)
        classifier = task is Task.CLASSIFICATION
        specs[name] = ModelSpec(
            name=name,
            source=Source.TORCHVISION,
            builder=functools.partial(_build_classifier if classifier else build_shipped, name),
            input_shape=inputs[0].shape,
            num_classes=len(meta.get("categories", [])) or (1000 if classifier else None),
            accepts_num_classes=classifier,
            weights=str(weights) if weights is not None else None,
            published_params=meta.get("num_params"),
            published_gmacs=meta.get("_ops"),
            doc=doc,
            task=task,
            inputs=inputs,
            on_meta=task is not Task.QUANTIZED,
        )
    return specs


# --------------------------------------------------------------------------- user files


def is_file_spec(name: str) -> bool:
    """`path/to/file.py:Name` (or a bare `file.py`, which then needs its name)."""
    path = name.rpartition(":")[0] if ":" in name else name
    return path.endswith(".py") or "/" in path


def _user_module(path: Path) -> Any:
    """Import a user's file under a private module name; sibling imports work."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"_cnnprobe_user_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    if path.suffix != ".py":
        raise UserFileError(f"cannot import '{path}': a model file must be Python source ending in .py")
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserFileError(f"cannot import '{path}': not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look their module up while it executes
    sys.path.insert(0, str(path.parent.resolve()))
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(module_name, None)
        raise UserFileError(f"cannot import '{path}': SyntaxError: {e.msg} (line {e.lineno})") from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - any failure in user code is reported, not raised
        sys.modules.pop(module_name, None)
        raise UserFileError(f"cannot import '{path}': {type(e).__name__}: {e}{_user_line(e, path)}") from None
    finally:
        sys.path.remove(str(path.parent.resolve()))
    return module


def _user_line(error: BaseException, path: Path) -> str:
    """` (line N)` for the deepest frame of the traceback that lies in the user's file."""
    lines = [f.lineno for f in traceback.extract_tb(error.__traceback__) if Path(f.filename) == path]
    return f" (line {lines[-1]})" if lines else ""


def _model_candidates(module: Any) -> list[str]:
    names = []
    for attr, value in vars(module).items():
        if attr.startswith("_") or getattr(value, "__module__", None) != module.__name__:
            continue
        if isinstance(value, type) and issubclass(value, nn.Module) or callable(value):
            names.append(attr)
    return names


def _file_spec(name: str) -> ModelSpec:
    path_text, sep, attr = name.rpartition(":")
    if not sep:
        path_text, attr = name, ""
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise UserFileError(f"model file '{path_text}' does not exist")
    module = _user_module(path)
    if not attr:
        found = ", ".join(_model_candidates(module)) or "nothing callable"
        raise UserFileError(f"name the model to build as '{path_text}:Name'; the file defines {found}")
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        found = ", ".join(_model_candidates(module)) or "nothing callable"
        raise UserFileError(f"'{path_text}' has no class or function '{attr}'; it defines {found}")

    def build() -> "nn.Module":
        try:
            model = factory()
        except SystemExit as e:
            where = _user_line(e, path)
            raise UserFileError(f"{attr}() in '{path_text}' called sys.exit({e.code}) when built{where}") from None
        except Exception as e:  # noqa: BLE001 - user code
            raise UserFileError(
                f"{attr}() in '{path_text}' failed when built with no arguments: "
                f"{type(e).__name__}: {e}{_user_line(e, path)}"
            ) from None
        if not isinstance(model, nn.Module):
            raise UserFileError(f"{attr}() in '{path_text}' returned {type(model).__name__}, not an nn.Module")
        return model

    return ModelSpec(
        name=f"{path_text}:{attr}",
        source=Source.FILE,
        builder=build,
        input_shape=None,
        num_classes=None,
        accepts_num_classes=False,
        example=factory if getattr(factory, "example_input", None) is not None else None,
        doc=(getattr(factory, "__doc__", "") or "").strip().split("\n")[0],
    )


# --------------------------------------------------------------------------- lookup


def _by_source(source: Source) -> dict[str, ModelSpec]:
    return _handwritten() if source is Source.CNNPROBE else _torchvision()


def all_specs() -> list[ModelSpec]:
    """Every registered model: hand-written first, then torchvision, each sorted by name."""
    return sorted(_handwritten().values(), key=lambda s: s.name) + sorted(
        _torchvision().values(), key=lambda s: s.name
    )


def list_models(pattern: str | None = None, task: Task | str | None = None) -> list[ModelSpec]:
    """Models whose bare or qualified name matches `pattern` (a glob, or a plain substring), of `task` if given."""
    specs = all_specs()
    if task is not None:
        specs = [s for s in specs if s.task is Task(task)]
    if not pattern:
        return specs
    if any(ch in pattern for ch in "*?["):
        return [s for s in specs if fnmatch.fnmatch(s.name, pattern) or fnmatch.fnmatch(s.qualified, pattern)]
    return [s for s in specs if pattern in s.qualified]


def suggest(name: str, limit: int = 3) -> list[str]:
    """The closest registered names, bare ones preferred: `resnt18` -> `resnet18`."""
    bare = sorted({s.name for s in all_specs()})
    qualified = [s.qualified for s in all_specs()]
    target = name.rpartition(":")[2] if ":" in name else name
    close = difflib.get_close_matches(target, bare, n=limit, cutoff=0.6)
    return close or difflib.get_close_matches(name, qualified, n=limit, cutoff=0.6)


def resolve(name: str) -> ModelSpec:
    """The spec a name means; raises UnknownModelError with suggestions."""
    name = name.strip()
    if is_file_spec(name):
        return _file_spec(name)
    prefix, sep, rest = name.partition(":")
    if sep:
        try:
            source = Source(prefix.lower())
        except ValueError:
            raise UnknownModelError(name, suggest(rest)) from None
        if source not in (Source.CNNPROBE, Source.TORCHVISION):  # file: and module: name no registry
            raise UnknownModelError(name, suggest(rest))
        if rest in _by_source(source):
            return _by_source(source)[rest]
        qualified = [f"{source.value}:{s}" for s in suggest(rest) if s in _by_source(source)]
        raise UnknownModelError(name, qualified or suggest(rest))
    for source in (Source.TORCHVISION, Source.CNNPROBE):
        if name in _by_source(source):
            return _by_source(source)[name]
    raise UnknownModelError(name, suggest(name))
