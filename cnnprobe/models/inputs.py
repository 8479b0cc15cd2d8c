"""What a model is fed: one input or several, of any rank and dtype.

An image model takes one float `C×H×W` tensor, but a Conv1d takes `C×L`, a
Conv3d `C×D×H×W`, a text model token ids (an integer tensor whose values must
lie below its embedding's size), and some models take several tensors. Each
input is an `InputSpec` (its shape without the batch, its dtype, and for
integer dtypes the range its values are drawn from), as torchinfo's
`input_data`/`dtypes` describe them. A user's model may state its own example
input: an `example_input` attribute or method on its class or factory, giving a
tensor or a tuple of tensors, batch first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.errors import InputSizeError, UserFileError

MAX_SIDE = 1 << 20  # no real input has a side this long; larger ones are typos or overflows
MAX_DIMS = 6
MAX_ELEMENTS = 1 << 36  # in one sample: 256 GiB of float32; a product above is an overflow, not an input
MAX_BYTES = 1 << 60  # a batch whose bytes pass this overflows torch's storage size (a signed 64-bit count)
DEFAULT_IMAGE = (3, 224, 224)
# Customary inputs for user models whose first layer says only the channels: a second of 16 kHz audio for a
# Conv1d, a 16-frame clip for a Conv3d, and a sequence of 128 tokens for an Embedding.
DEFAULT_SPATIAL = {1: (16000,), 2: DEFAULT_IMAGE[1:], 3: (16, 112, 112)}
DEFAULT_TOKENS = 128
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float": torch.float32, "float64": torch.float64, "double": torch.float64,
    "float16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
    "int64": torch.int64, "long": torch.int64, "int32": torch.int32, "int": torch.int32, "int16": torch.int16,
    "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}


@dataclass(frozen=True)
class InputSpec:
    """One input, without its batch dimension."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    low: int = 0  # integer inputs draw their values from [low, high)
    high: int = 2

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def integer(self) -> bool:
        return not (self.torch_dtype.is_floating_point or self.torch_dtype.is_complex)

    def make(self, batch: int, device: str, *, random: bool = False) -> torch.Tensor:
        """A batch of this input: storage-free on meta; values in range for integers; zeros, or normal
        noise when `random`, for floats."""
        size = (batch, *self.shape)
        total = math.prod(size) * self.torch_dtype.itemsize
        what = f"an input of {'×'.join(map(str, size))} {self.dtype} ({total / 2**30:,.1f} GiB)"
        if total > MAX_BYTES:
            raise InputSizeError(f"{what} overflows a tensor's storage: use a smaller --input-size or --batch")
        if device == "meta":
            return torch.empty(size, dtype=self.torch_dtype, device="meta")
        try:
            if self.integer:
                return torch.randint(self.low, self.high, size, dtype=self.torch_dtype, device=device)
            if random:
                return torch.randn(size, device=device).to(self.torch_dtype)
            return torch.zeros(size, dtype=self.torch_dtype, device=device)
        except (RuntimeError, MemoryError) as e:  # torch.OutOfMemoryError is a RuntimeError
            if "alloc" not in str(e).lower() and "out of memory" not in str(e).lower():
                raise
            raise InputSizeError(f"{what} cannot be allocated on {device}: use a smaller --input-size or "
                                 "--batch") from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"shape": list(self.shape), "dtype": self.dtype}
        if self.integer:
            out["range"] = [self.low, self.high]
        return out


def parse_size(text: str | Sequence[int | str] | None) -> tuple[int, ...] | None:
    """`3,224,224`, `3x224x224`, `224,224`, `224`, or any rank (`1,10` for a Conv1d, `3,16,112,112` for a
    Conv3d) -> a tuple of positive ints, batch excluded."""
    if text is None:
        return None
    parts = re.split(r"\s*[,x×]\s*", text.strip()) if isinstance(text, str) else [str(p) for p in text]
    usage = "expected sizes without the batch, such as 3,224,224 (or H,W, or one side)"
    if not 1 <= len(parts) <= MAX_DIMS or not all(p.isascii() and p.isdigit() for p in parts):
        raise InputSizeError(f"malformed --input-size '{text}': {usage}")
    sizes = tuple(int(p) for p in parts)
    if any(s <= 0 for s in sizes):
        raise InputSizeError(f"malformed --input-size '{text}': every size must be positive")
    if any(s > MAX_SIDE for s in sizes):
        raise InputSizeError(f"--input-size '{text}': a size above {MAX_SIDE:,} is not an input this can build")
    if math.prod(sizes) > MAX_ELEMENTS:
        raise InputSizeError(f"--input-size '{text}': {math.prod(sizes):,} values in one sample, above the "
                             f"{MAX_ELEMENTS:,} an input can hold")
    return sizes


def parse_dtype(text: str) -> str:
    name = str(text).strip().lower().removeprefix("torch.")
    if name not in DTYPES:
        raise InputSizeError(f"unknown --input-dtype '{text}'; use one of {', '.join(DTYPES)}")
    return next(k for k, v in DTYPES.items() if v is DTYPES[name])  # the canonical name: long -> int64


def parse_range(text: str | Sequence[int] | None) -> tuple[int, int] | None:
    """`LOW,HIGH` -> (low, high): integer inputs draw values from [low, high)."""
    if text is None:
        return None
    parts = [str(p).strip() for p in text] if isinstance(text, (tuple, list)) else str(text).split(",")
    try:
        low, high = (int(p) for p in parts)
    except ValueError:
        raise InputSizeError(f"malformed --input-range '{text}': expected LOW,HIGH such as 0,1000") from None
    if high <= low:
        raise InputSizeError(f"--input-range '{text}': HIGH must be above LOW (values are drawn from [LOW, HIGH))")
    return low, high


def _sizes(input_size: Any) -> list[tuple[int, ...]]:
    """One size (`"3,224,224"`, `(3, 224, 224)`) or several (`["1,10", "1,10"]`)."""
    if input_size is None:
        return []
    if isinstance(input_size, str) or (isinstance(input_size, (tuple, list)) and input_size
                                       and all(isinstance(v, int) for v in input_size)):
        return [parse_size(input_size)]  # type: ignore[list-item]
    if isinstance(input_size, (tuple, list)):
        if not input_size:
            raise InputSizeError("--input-size is empty")
        return [parse_size(v) for v in input_size]  # type: ignore[misc]
    raise InputSizeError(f"malformed --input-size {input_size!r}")


def given_sizes(input_size: Any) -> list[tuple[int, ...]]:
    """The sizes `--input-size` gave, parsed and checked, one per input (none when it gave none)."""
    return _sizes(input_size)


def _complete(sizes: tuple[int, ...], default: tuple[int, ...]) -> tuple[int, ...]:
    """Fewer sizes than the model's input has dimensions fill in from the front: channels, then equal sides."""
    if len(sizes) >= len(default):
        return sizes
    if len(sizes) == 1 and len(default) > 2:  # one side: every spatial side
        return (default[0], *([sizes[0]] * (len(default) - 1)))
    return (*default[: len(default) - len(sizes)], *sizes)


def resolve_inputs(defaults: tuple[InputSpec, ...], input_size: Any = None, input_dtype: Any = None,
                   input_range: Any = None, *, complete: bool = True) -> tuple[InputSpec, ...]:
    """The inputs a run uses: the model's defaults, overridden by what the user gave. Shorter sizes are
    completed from the defaults (`224` -> `3,224,224`) only where the model's input is known (`complete`);
    otherwise a size is taken as it is. One size for a model whose inputs share one shape sizes them all."""
    sizes = _sizes(input_size)
    if len(sizes) == 1 and len(defaults) > 1 and len({d.shape for d in defaults}) == 1:
        sizes = sizes * len(defaults)  # inputs of one shape (RAFT's two images): one size means every one
    dtypes = [parse_dtype(d) for d in ([input_dtype] if isinstance(input_dtype, str) else list(input_dtype or []))]
    value_range = parse_range(input_range)
    count = len(sizes) or len(defaults) or 1
    if len(dtypes) not in (0, 1, count):
        raise InputSizeError(f"{len(dtypes)} --input-dtype for {count} inputs: give one dtype for all inputs, or "
                             "one per input")
    out = []
    for i in range(count):
        base = defaults[i] if i < len(defaults) else InputSpec(DEFAULT_IMAGE)
        shape = (_complete(sizes[i], base.shape) if complete else sizes[i]) if sizes else base.shape
        dtype = dtypes[0 if len(dtypes) == 1 else i] if dtypes else base.dtype
        low, high = value_range or (base.low, base.high)
        out.append(InputSpec(shape, dtype, low, high))
    if value_range is not None and not any(s.integer for s in out):
        raise InputSizeError("--input-range applies to integer inputs; give --input-dtype long (or another integer "
                             "type) too")
    return tuple(out)


def inferred_inputs(module: nn.Module) -> tuple[InputSpec, ...] | None:
    """An input for a user's model that does not say, from its first convolution or embedding."""
    for m in module.modules():
        if isinstance(m, nn.Embedding):
            return (InputSpec((DEFAULT_TOKENS,), "int64", 0, int(m.num_embeddings)),)
        if isinstance(m, nn.modules.conv._ConvNd):
            spatial = len(m.kernel_size)
            channels = int(m.in_channels) or DEFAULT_IMAGE[0]  # a lazy convolution does not know yet
            return (InputSpec((channels, *DEFAULT_SPATIAL.get(spatial, (DEFAULT_IMAGE[1],) * spatial))),)
    return None


def stated_inputs(source: Any) -> tuple[InputSpec, ...] | None:
    """The example input a model or its factory states (`example_input`, a tensor or tuple of tensors,
    batch first, or a callable or property giving one), as specs; None when it states none. Pass the model
    itself where its class states it, so that an instance method or property has its instance."""
    name = getattr(source, "__name__", type(source).__name__)
    try:  # a property runs here; a method, classmethod or staticmethod comes back bound, ready to call
        example = getattr(source, "example_input", None)
        if callable(example) and not isinstance(example, torch.Tensor):
            example = example()
    except Exception as e:  # noqa: BLE001 - the user's code failed: say where, in one line
        raise UserFileError(f"example_input of {name} failed: {type(e).__name__}: {' '.join(str(e).split())[:200]}") \
            from None
    if example is None:
        return None
    if isinstance(example, torch.Tensor):
        tensors: tuple[Any, ...] = (example,)
    else:
        tensors = tuple(example) if isinstance(example, (tuple, list)) else ()
    if not tensors or not all(isinstance(t, torch.Tensor) and t.dim() >= 1 for t in tensors):
        raise InputSizeError(f"example_input of {name} must be a tensor "
                             "or a tuple of tensors, batch first")
    specs = []
    for t in tensors:
        dtype = next((k for k, v in DTYPES.items() if v is t.dtype), None)
        if dtype is None:
            raise InputSizeError(f"example_input of {name} is of dtype {str(t.dtype).removeprefix('torch.')}, which "
                                 f"cnnprobe cannot make inputs of; use one of {_dtype_names()}")
        spec = InputSpec(tuple(int(d) for d in t.shape[1:]), dtype)
        if spec.integer and t.numel() and t.device.type != "meta":
            spec = InputSpec(spec.shape, dtype, int(t.min()), int(t.max()) + 1)
        specs.append(spec)
    return tuple(specs)


def _dtype_names() -> str:
    """The dtypes an input can have, one name each."""
    return ", ".join({v: k for k, v in reversed(DTYPES.items())}.values())
