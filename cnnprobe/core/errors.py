"""Errors users see. Each carries its whole message; the CLI prints it as one line."""

from __future__ import annotations


class CnnprobeError(Exception):
    """Base class: a problem with the user's input or model, not a bug in cnnprobe."""

    exit_code = 2


class UnknownModelError(CnnprobeError):
    """A model name the registry does not know."""

    def __init__(self, name: str, suggestions: list[str]) -> None:
        self.name = name
        self.suggestions = suggestions
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else "; see `cnnprobe list`"
        super().__init__(f"unknown model '{name}'{hint}")


class UsageError(CnnprobeError):
    """An option value that cannot be used: a negative depth, a zero time budget."""


class InputSizeError(UsageError):
    """A malformed or impossible input size or batch."""


class PatternError(CnnprobeError):
    """A freeze or learning-rate pattern that is malformed or matches nothing."""


class HeadError(CnnprobeError):
    """A head specification that cannot be parsed or applied."""


class UserFileError(CnnprobeError):
    """A user's `file.py:Name` that does not exist, import or build."""


class ForwardError(CnnprobeError):
    """The model's forward pass failed; names the layer and the shapes involved."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        layer: str | None = None,
        layer_type: str | None = None,
        input_shapes: list[list[int]] | None = None,
        expected: str | None = None,
    ) -> None:
        self.layer = layer
        self.layer_type = layer_type
        self.input_shapes = input_shapes or []
        self.expected = expected
        super().__init__(message)


class InputTooSmallError(ForwardError):
    """The input shrinks to nothing before the model's last layer."""

    exit_code = 2


class RunError(CnnprobeError):
    """A run that could not complete: out of memory, interrupted, or regressed."""

    exit_code = 1


class OutOfMemory(RunError):
    """A batch did not fit; the memory has been freed."""

    def __init__(self, model: str, batch: int, device: str, detail: str) -> None:
        self.model, self.batch, self.device, self.detail = model, batch, device, detail
        super().__init__(f"{model} at batch {batch} ran out of memory on {device}: {detail}")


class WeightsError(CnnprobeError):
    """A weights or checkpoint file that is missing, unreadable, unsafe or does not fit."""
