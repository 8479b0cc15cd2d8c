"""One model of a bench run, built on meta once for everything that needs no device: the memory
prediction beside each measurement, the check that a CPU batch fits, and the FLOP count of each step.

The device build (`training.setup`) is the only other one: a run builds each model twice, not once per
analysis and batch. Whoever changes the meta build's module (freezing for a FLOP count) takes a copy."""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING

from ..memory.predict import Predictor
from ..models.build import Built
from ..models.inputs import InputSpec
from ..training.config import BenchConfig

if TYPE_CHECKING:
    from torch import nn


class Prepared:
    """The meta build of one model under one configuration, made when first asked for; a build that
    failed fails the same way each time it is asked for, without building again."""

    def __init__(self, model: "str | nn.Module", config: BenchConfig) -> None:
        self.model = model
        self.config = config
        self._predictor: Predictor | None = None
        self._error: Exception | None = None

    def predictor(self) -> Predictor:
        """The memory prediction, on the meta build (built without weights: they change no shape)."""
        if self._error is not None:
            raise self._error.with_traceback(None)
        if self._predictor is None:
            try:
                self._predictor = Predictor(self.model, self.config)
            except Exception as e:
                self._error = e
                raise
        return self._predictor

    def built(self, inputs: tuple[InputSpec, ...] | None = None) -> Built | None:
        """A copy of the meta build to change, or None where it cannot stand for the device's: it failed, or
        the device build settled other `inputs` (weights evaluated at another resolution)."""
        try:
            meta = self.predictor().built
        except Exception:  # noqa: BLE001 - the device build reports the failure itself
            return None
        if inputs is not None and meta.inputs != inputs:
            return None
        return dataclasses.replace(meta, module=copy.deepcopy(meta.module))
