"""`--weights`: torchvision's published weights from the local hub cache, or a file, loaded strictly.

cnnprobe downloads nothing: weights missing from the cache fail at once,
naming the file expected. Hand-written models whose module names are
torchvision's take torchvision's weights. A fine-tuned file whose only misfit
is the classifier's width builds the head it was trained with.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models
from torchvision.models import _api  # private: the one place torchvision loads state

from ..core.enums import Source
from ..core.errors import CnnprobeError, WeightsError
from ..weights.safeload import safe_load
from ..weights.statedict import Compatibility, check_compatible, state_dict_of
from .head import find_head
from .registry import ModelSpec, eval_crop
from .shipped import weights_need


@functools.lru_cache(maxsize=1)
def _torchvision_files() -> dict[str, str]:
    """File name of every torchvision weights URL -> the weights' name, e.g. 'ResNet18_Weights.IMAGENET1K_V1'."""
    files: dict[str, str] = {}
    for name in models.list_models():
        try:
            enum = models.get_model_weights(name)
        except (ValueError, AttributeError, KeyError):
            continue
        for member in enum:
            files.setdefault(os.path.basename(member.url), str(member))
    return files


def torchvision_weights_of(path: Path) -> tuple[str, bool] | None:
    """(weights name, hash prefix matches) when the file is named like a torchvision weights file."""
    name = _torchvision_files().get(path.name)
    if name is None:
        return None
    stem = path.name.rsplit(".", 1)[0]
    prefix = stem.rsplit("-", 1)[-1] if "-" in stem else ""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return name, bool(prefix) and digest.hexdigest().startswith(prefix)


def hub_checkpoints() -> Path:
    """Where torch.hub keeps downloaded weights: $TORCH_HOME/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints"


# Hand-written models whose module names are those of a torchvision model, so its weights load.


TWINS = {"resnet18": "resnet18", "resnet34": "resnet34", "vgg11": "vgg11_bn", "vgg13": "vgg13_bn",
         "vgg16": "vgg16_bn", "vgg19": "vgg19_bn"}


def is_weights_name(text: str) -> bool:
    """DEFAULT, IMAGENET1K_V1 or ResNet18_Weights.IMAGENET1K_V1, as opposed to a file path."""
    stem = text.rsplit(".", 1)[-1]
    return (text.upper() == "DEFAULT" or stem.isupper() or stem == "DEFAULT") and not Path(text).exists() \
        and "/" not in text and not text.endswith((".pth", ".pt", ".bin", ".ckpt"))


def weights_member(spec: "ModelSpec", name: str) -> Any:
    """The torchvision weights `name` means for `spec`."""
    twin = TWINS.get(spec.name) if spec.source is Source.CNNPROBE else None
    owner = spec.name if spec.source is Source.TORCHVISION else twin
    if owner is None:
        raise WeightsError(f"{spec.qualified} has no published weights; pass a weights file with --weights PATH")
    enum = models.get_model_weights(owner)
    prefix, _, wanted = name.rpartition(".")
    if prefix and prefix != enum.__name__:
        raise WeightsError(f"'{name}' are not {owner}'s weights, which are {enum.__name__}.*")
    if wanted.upper() == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[wanted]
    except KeyError:
        known = ", ".join(["DEFAULT", *(m.name for m in enum)])
        raise WeightsError(f"{owner} has no weights '{name}'; it has {known}") from None


def cached_file(member: Any) -> Path:
    """The local copy of torchvision weights, or an immediate error naming it: nothing is downloaded."""
    path = hub_checkpoints() / os.path.basename(member.url)
    if not path.is_file():
        raise WeightsError(
            f"{member} is not in the local cache: expected {path.name} in {path.parent} (set TORCH_HOME to use "
            f"another cache); cnnprobe downloads nothing, so fetch {member.url} there, or pass a file with --weights "
            "PATH"
        )
    return path


@contextlib.contextmanager
def _torchvision_reads(state: dict[str, Any], member: Any) -> Iterator[None]:
    """Let torchvision's own builder load `state` (already read safely) as `member` instead of downloading.
    Any other weights it asks for (a detection model's backbone, which its builders skip when given the
    whole model's weights) fail at once: nothing is downloaded, and no other weights get this state."""
    original = _api.WeightsEnum.get_state_dict

    def reads(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self is member:
            return state
        raise WeightsError(f"building with {member}, torchvision also asked for {self}, which cnnprobe does not "
                           f"download: place {os.path.basename(self.url)} in {hub_checkpoints()}")

    _api.WeightsEnum.get_state_dict = reads
    try:
        yield
    finally:
        _api.WeightsEnum.get_state_dict = original


@dataclass
class WeightsLoad:
    """Which weights went into a model, from where."""

    source: str  # a file path
    name: str | None  # torchvision weights name, when they are
    tensors: int
    saved_on: dict[str, int]
    stripped_prefix: str | None = None
    input_side: int | None = None  # the resolution torchvision's weights were evaluated at
    num_classes: int | None = None  # set when the head was built to the file's width

    def describe(self) -> str:
        what = self.name or "weights"
        extra = [f"{self.tensors} tensors"]
        if self.stripped_prefix:
            extra.append(f"'{self.stripped_prefix}' prefix dropped")
        if self.num_classes is not None:
            extra.append(f"head built with the file's {self.num_classes} classes")
        return f"{what} loaded strictly from {self.source} ({', '.join(extra)})"


def build_with_weights(spec: "ModelSpec", weights: str, num_classes: int | None, device: str,
                       trust: bool = False) -> tuple["nn.Module", WeightsLoad]:
    """Construct `spec` for real on `device` and load `weights` (a name or a file) into it, strictly."""
    if is_weights_name(weights):
        member = weights_member(spec, weights)
        path = cached_file(member)
        loaded = safe_load(path, device=device, what="weights file")
        state, _ = state_dict_of(loaded.obj)
        classes = len(member.meta.get("categories") or []) or None
        if num_classes is not None and num_classes != classes:
            raise WeightsError(f"{member} has {classes} classes; to train for {num_classes}, "
                               f"replace the head instead (cnnprobe trainable --num-classes {num_classes})")
        if spec.source is Source.TORCHVISION:
            with _torchvision_reads(state, member), torch.device(device):
                try:
                    module = models.get_model(spec.name, weights=member, **weights_need(spec.name))
                except RuntimeError as e:
                    raise WeightsError(f"{member} from {path} do not load into {spec.name}: "
                                       f"{' '.join(str(e).split())[:200]}") from None
            return module, WeightsLoad(str(path), str(member), len(state), dict(loaded.saved_on),
                                       input_side=_eval_side(member))
        module, load = _load_file_state(spec, state, num_classes, device, str(path), str(member), loaded.saved_on)
        load.input_side = _eval_side(member)
        return module, load
    loaded = safe_load(Path(weights).expanduser(), device=device, what="weights file", trust=trust)
    state, _ = state_dict_of(loaded.obj)
    return _load_file_state(spec, state, num_classes, device, weights, None, loaded.saved_on)


def load_into(module: "nn.Module", weights: str, trust: bool = False) -> WeightsLoad:
    """Load a weights file into a module the caller built, strictly."""
    device = next((t.device.type for t in module.parameters()), "cpu")
    if is_weights_name(weights):
        raise WeightsError(f"a module passed in has no published weights; '{weights}' needs a registered model name")
    loaded = safe_load(Path(weights).expanduser(), device=device, what="weights file", trust=trust)
    state, _ = state_dict_of(loaded.obj)
    compat, state = check_compatible(module, state, type(module).__name__)
    _load_strictly(module, state, compat, weights, type(module).__name__)
    return WeightsLoad(weights, None, len(state), dict(loaded.saved_on), compat.stripped_prefix)


def _load_strictly(module: "nn.Module", state: dict[str, Any], compat: Compatibility, source: str, name: str) -> None:
    """Load a state_dict whose fit `check_compatible` judged, or say which keys do not fit."""
    if not compat.compatible:
        raise WeightsError(f"weights in '{source}' do not fit {name}: {compat.describe()}")
    meta = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_meta]
    if meta:
        raise WeightsError(f"weights in '{source}' are meta tensors ({len(meta)} of them, {meta[0]} first): shapes "
                           "without values; save them from a model that holds real weights")
    module.load_state_dict(state, strict=True)


def _eval_side(member: Any) -> int | None:
    try:
        return eval_crop(member)
    except Exception:  # noqa: BLE001 - weights without a crop size
        return None


def _file_head_width(module: "nn.Module", compat: Compatibility) -> int | None:
    """When the only misfit is the classifier's output width (a fine-tuned head), that width."""
    if compat.missing or compat.unexpected or not compat.mismatched:
        return None
    try:
        name, _ = find_head(module)
    except CnnprobeError:
        return None
    if {k for k, _, _ in compat.mismatched} - {f"{name}.weight", f"{name}.bias"}:
        return None
    if any(file[1:] != model[1:] for _, file, model in compat.mismatched):
        return None
    widths = {file[0] for _, file, _ in compat.mismatched}
    return widths.pop() if len(widths) == 1 else None


def _load_file_state(spec: "ModelSpec", state: dict[str, Any], num_classes: int | None, device: str, source: str,
                     name: str | None, saved_on: Counter[str]) -> tuple["nn.Module", WeightsLoad]:
    with torch.device(device):
        module = spec.build(num_classes)
    compat, state = check_compatible(module, state, spec.name)
    rebuilt = None
    if not compat.compatible and num_classes is None and spec.accepts_num_classes:
        width = _file_head_width(module, compat)
        if width is not None:  # a fine-tuned checkpoint: build the head it was trained with
            with torch.device(device):
                module = spec.build(width)
            compat, state = check_compatible(module, state, spec.name)
            rebuilt = width
    _load_strictly(module, state, compat, source, spec.qualified)
    return module, WeightsLoad(source, name, len(state), dict(saved_on), compat.stripped_prefix, num_classes=rebuilt)
