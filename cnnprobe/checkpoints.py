"""Reading weights and checkpoints safely.

Unpickling a `.pth` file can run any code the file names. Everything here
loads with `weights_only=True`; a file that needs full unpickling (a whole
pickled model) is refused, after listing the classes it would import, unless
the caller passes `trust=True`. Tensors are mapped to the CPU (or the device
asked for) while the device each was saved from is recorded.

Formats recognised: a plain state_dict, a training checkpoint
(`{'epoch', 'model_state_dict', 'optimizer_state_dict', 'loss'}` and the
common variants), a whole pickled model, and torchvision's published weights
(a state_dict whose file name and hash match a torchvision weights URL).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import pickle
import pickletools
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CnnprobeError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .registry import ModelSpec

SHOWN = 3  # mismatched keys shown by name; the rest are counted
STATE_KEYS = ("model_state_dict", "state_dict", "model", "net", "weights")
TRAINING_KEYS = ("epoch", "optimizer_state_dict", "optimizer", "loss", "step", "global_step")


class WeightsError(CnnprobeError):
    """A weights or checkpoint file that is missing, unreadable, unsafe or does not fit."""


# --------------------------------------------------------------------------- reading


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise WeightsError(f"{what} '{path}' does not exist")
    if path.is_dir():
        raise WeightsError(f"{what} '{path}' is a directory, not a file")
    if path.stat().st_size == 0:
        raise WeightsError(f"{what} '{path}' is empty")


def pickle_globals(path: str | Path) -> list[str]:
    """The classes and functions a torch.save file would import when unpickled, read without unpickling."""
    path = Path(path)
    streams: list[bytes] = []
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            streams = [archive.read(n) for n in archive.namelist() if n.endswith(".pkl")]
    else:
        streams = [path.read_bytes()]
    found: list[str] = []
    for data in streams:
        buffer = io.BytesIO(data)
        while buffer.tell() < len(data):  # legacy files hold several pickles back to back, then raw bytes
            memo: list[str] = []
            try:
                for op, arg, _ in pickletools.genops(buffer):
                    if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "SHORT_BINSTRING",
                                   "BINSTRING", "STRING"):
                        memo.append(str(arg))
                    elif op.name in ("GLOBAL", "INST"):
                        found.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL":
                        found.append(f"{memo[-2]}.{memo[-1]}" if len(memo) >= 2 else "(a global built at load time)")
                    if op.name == "STOP":
                        break
            except Exception:  # noqa: BLE001 - not a pickle any more: the tensor bytes of a legacy file
                break
    return list(dict.fromkeys(found))


def _allowed_globals() -> set[str]:
    """What torch's weights_only unpickler accepts; everything else in a file is worth naming."""
    try:
        from torch import _weights_only_unpickler

        return set(_weights_only_unpickler._get_allowed_globals())
    except Exception:  # noqa: BLE001 - private API; fall back to the basics
        return {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter"}


def _foreign(path: Path, names: list[str]) -> list[str]:
    """The imports a file needs beyond plain tensors: what full unpickling would run."""
    import torch

    if zipfile.is_zipfile(path) and hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        try:
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:  # noqa: BLE001 - fall back to our own scan
            pass
    allowed = _allowed_globals()
    return [n for n in names if n not in allowed]


@dataclass
class Loaded:
    """What a file held, and where its tensors were saved from."""

    obj: Any
    saved_on: Counter[str]
    trusted: bool  # unpickled fully
    zip_format: bool


def safe_load(path: str | Path, *, device: str = "cpu", trust: bool = False, mmap: bool = False,
              what: str = "checkpoint") -> Loaded:
    """torch.load with weights_only=True, tensors mapped to `device`, clear errors naming the file."""
    import torch

    path = Path(path).expanduser()
    _check_file(path, what)
    saved_on: Counter[str] = Counter()

    def place(storage: Any, location: str) -> Any:
        saved_on[location] += 1
        return storage if device == "cpu" else storage.to(device=device)

    zip_format = zipfile.is_zipfile(path)
    try:
        obj = torch.load(path, map_location=place, weights_only=True, mmap=mmap and zip_format)
        return Loaded(obj, saved_on, False, zip_format)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower() and "weights_only" not in str(e).lower():
            raise _unreadable(path, what, e) from None
        with path.open("rb") as f:
            is_pickle = zip_format or f.read(1) == b"\x80"  # a legacy torch file starts with pickle's PROTO
        names = _foreign(path, pickle_globals(path)) if is_pickle else []
        if not names:  # not refused for what it imports: it is broken, or not a torch file at all
            raise _unreadable(path, what, e) from None
        names.sort(key=lambda n: n.startswith(("torch.", "collections.", "builtins.", "__builtin__.")))
        if not trust:
            shown = first_few(names)
            raise WeightsError(
                f"{what} '{path}' needs full unpickling, which can run code from the file"
                + (f" (it imports {shown})" if shown else "")
                + "; refusing. Pass --trust only if you trust where it came from, or save model.state_dict() instead"
            ) from None
    except Exception as e:  # noqa: BLE001 - corrupt, truncated, or not a torch file
        raise _unreadable(path, what, e) from None
    saved_on.clear()
    try:  # --trust: the user has accepted running the file's code
        obj = torch.load(path, map_location=place, weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise _unreadable(path, what, e) from None
    return Loaded(obj, saved_on, True, zip_format)


def _unreadable(path: Path, what: str, error: BaseException) -> WeightsError:
    text = " ".join(str(error).split())[:160] or type(error).__name__
    return WeightsError(f"cannot read {what} '{path}': truncated, corrupted or not a PyTorch file ({text})")


# --------------------------------------------------------------------------- formats


def is_state_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) for k in obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def state_dict_of(obj: Any) -> tuple[dict[str, "torch.Tensor"], str]:
    """The model weights in a loaded object, and the format they came in."""
    from torch import nn

    if isinstance(obj, nn.Module):
        return obj.state_dict(), "pickled_model"
    if is_state_dict(obj):
        return dict(obj), "state_dict"
    if isinstance(obj, Mapping):
        for key in STATE_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return inner.state_dict(), "training_checkpoint"
            if is_state_dict(inner):
                return dict(inner), "training_checkpoint"
    raise WeightsError("the file holds no state_dict: expected a mapping of names to tensors, or a checkpoint with "
                       f"one of {', '.join(STATE_KEYS)}")


@functools.lru_cache(maxsize=1)
def _torchvision_files() -> dict[str, str]:
    """File name of every torchvision weights URL -> the weights' name, e.g. 'ResNet18_Weights.IMAGENET1K_V1'."""
    from torchvision import models

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


# --------------------------------------------------------------------------- inspection


@dataclass
class TensorStats:
    tensors: int
    params: int  # elements
    bytes: int
    dtypes: dict[str, int]


def tensor_stats(state: Mapping[str, Any]) -> TensorStats:
    import torch

    tensors = [v for v in state.values() if isinstance(v, torch.Tensor)]
    return TensorStats(
        tensors=len(tensors),
        params=sum(t.numel() for t in tensors),
        bytes=sum(t.numel() * t.element_size() for t in tensors),
        dtypes=dict(Counter(str(t.dtype).replace("torch.", "") for t in tensors).most_common()),
    )


@dataclass
class OptimizerInfo:
    type: str  # inferred from the hyper-parameters its groups carry
    param_groups: int
    params: int  # parameters with state
    state_tensors: int
    state_bytes: int
    lr: list[float]


def optimizer_type(groups: list[Mapping[str, Any]]) -> str:
    keys = set().union(*(g.keys() for g in groups)) if groups else set()
    if "betas" in keys:
        decoupled = any(g.get("decoupled_weight_decay") for g in groups)
        return "AdamW" if decoupled else ("Adam or AdamW" if "decoupled_weight_decay" not in keys else "Adam")
    if "nesterov" in keys or "dampening" in keys:
        return "SGD"
    if "alpha" in keys and "centered" in keys:
        return "RMSprop"
    if "lr_decay" in keys:
        return "Adagrad"
    return "unknown"


def optimizer_info(state: Any) -> OptimizerInfo | None:
    import torch

    if not isinstance(state, Mapping) or "param_groups" not in state:
        return None
    groups = list(state.get("param_groups") or [])
    per_param = state.get("state") or {}
    tensors = [v for s in per_param.values() if isinstance(s, Mapping) for v in s.values() if isinstance(v, torch.Tensor)]
    return OptimizerInfo(
        type=optimizer_type(groups),
        param_groups=len(groups),
        params=len(per_param),
        state_tensors=len(tensors),
        state_bytes=sum(t.numel() * t.element_size() for t in tensors),
        lr=[float(g["lr"]) for g in groups if "lr" in g],
    )


@dataclass
class Compatibility:
    """Whether a state_dict fits a model, key by key."""

    model: str
    compatible: bool
    matched: int
    missing: list[str]  # in the model, not in the file
    unexpected: list[str]  # in the file, not in the model
    mismatched: list[tuple[str, list[int], list[int]]]  # key, file shape, model shape
    stripped_prefix: str | None = None

    def describe(self, left: str = "file", right: str = "model") -> str:
        parts = []
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                parts.append(f"{len(items)} {label} ({first_few(items)})")
        if self.mismatched:
            shown = ", ".join(f"{k}: {left} {_shape(a)}, {right} {_shape(b)}" for k, a, b in self.mismatched[:SHOWN])
            more = f" and {len(self.mismatched) - SHOWN} more" if len(self.mismatched) > SHOWN else ""
            parts.append(f"{len(self.mismatched)} shape-mismatched ({shown}{more})")
        return "; ".join(parts) or "every key matches"


def first_few(items: list[str], shown: int = SHOWN) -> str:
    """`a, b, c and 4 more`."""
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def _shape(dims: list[int]) -> str:
    return "×".join(map(str, dims)) or "scalar"


def _strip_prefix(state: Mapping[str, Any], expected: set[str]) -> tuple[dict[str, Any], str | None]:
    """Keys saved from DataParallel or torch.compile carry a prefix; drop it when that makes them fit."""
    for prefix in ("module.", "_orig_mod.", "model."):
        if state and all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in expected):
            return {k[len(prefix):]: v for k, v in state.items()}, prefix
    return dict(state), None


def check_compatible(model: "nn.Module", state: Mapping[str, Any], name: str) -> tuple[Compatibility, dict[str, Any]]:
    """Compare a state_dict with a model's, key by key and shape by shape."""
    own = model.state_dict()
    state, prefix = _strip_prefix(state, set(own))
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [(k, list(state[k].shape), list(own[k].shape)) for k in own
                  if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    matched = len(own) - len(missing) - len(mismatched)
    ok = not (missing or unexpected or mismatched)
    return Compatibility(name, ok, matched, missing, unexpected, mismatched, prefix), state


@dataclass
class CheckpointInfo:
    """What `cnnprobe checkpoint` reports."""

    path: str
    format: str  # state_dict, training_checkpoint, pickled_model or torchvision_weights
    file_bytes: int
    weights: TensorStats
    saved_on: dict[str, int]  # storage location tag -> storages: where the tensors were saved from
    keys: list[str] = field(default_factory=list)  # top-level keys of a checkpoint dict
    epoch: Any = None
    loss: Any = None
    optimizer: OptimizerInfo | None = None
    torchvision: str | None = None  # the weights' name
    hash_ok: bool | None = None
    pickled_class: str | None = None
    trusted: bool = False
    compatibility: Compatibility | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _plain(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else list(value.shape)
    return value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)[:80]


def inspect_checkpoint(path: str | Path, *, model: "str | nn.Module | None" = None, num_classes: int | None = None,
                       trust: bool = False) -> CheckpointInfo:
    """Detect a file's format and describe what it holds; with `model`, check it fits that model."""
    p = Path(path).expanduser()
    loaded = safe_load(p, trust=trust, mmap=True)
    state, kind = state_dict_of(loaded.obj)
    info = CheckpointInfo(
        path=str(p), format=kind, file_bytes=p.stat().st_size, weights=tensor_stats(state),
        saved_on=dict(loaded.saved_on.most_common()), trusted=loaded.trusted,
    )
    obj = loaded.obj
    if kind == "pickled_model":
        info.pickled_class = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if kind == "training_checkpoint":
        info.keys = [str(k) for k in obj]
        info.epoch = _plain(obj.get("epoch", obj.get("step", obj.get("global_step"))))
        info.loss = _plain(obj.get("loss"))
        info.optimizer = optimizer_info(obj.get("optimizer_state_dict", obj.get("optimizer")))
    if kind == "state_dict":
        found = torchvision_weights_of(p)
        if found is not None:
            info.format = "torchvision_weights"
            info.torchvision, info.hash_ok = found
    if model is not None:
        from .build import build_model

        built = build_model(model, num_classes=num_classes)
        info.compatibility = check_compatible(built.module, state, built.name)[0]
    return info


# --------------------------------------------------------------------------- --weights


def hub_checkpoints() -> Path:
    """Where torch.hub keeps downloaded weights: $TORCH_HOME/hub/checkpoints."""
    import torch

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
    from torchvision import models

    from .enums import Source

    owner = spec.name if spec.source is Source.TORCHVISION else TWINS.get(spec.name) if spec.source is Source.CNNPROBE else None
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
            f"another cache); cnnprobe downloads nothing, so fetch {member.url} there, or pass a file with --weights PATH"
        )
    return path


@contextlib.contextmanager
def _torchvision_reads(state: dict[str, Any]) -> Iterator[None]:
    """Let torchvision's own builder load `state` (already read safely) instead of downloading."""
    from torchvision.models import _api

    original = _api.WeightsEnum.get_state_dict
    _api.WeightsEnum.get_state_dict = lambda self, *a, **k: state  # type: ignore[method-assign]
    try:
        yield
    finally:
        _api.WeightsEnum.get_state_dict = original  # type: ignore[method-assign]


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
    import torch

    from .enums import Source

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
            from torchvision import models

            with _torchvision_reads(state), torch.device(device):
                try:
                    module = models.get_model(spec.name, weights=member)
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
    module.load_state_dict(state, strict=True)


def _eval_side(member: Any) -> int | None:
    from .registry import _eval_crop

    try:
        return _eval_crop(member)
    except Exception:  # noqa: BLE001 - weights without a crop size
        return None


def _file_head_width(module: "nn.Module", compat: Compatibility) -> int | None:
    """When the only misfit is the classifier's output width (a fine-tuned head), that width."""
    from .head import find_head

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
    import torch

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
