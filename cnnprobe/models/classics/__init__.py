"""The hand-written classics, after the tutorial this project grew from.

Each builder registers itself in `catalog.BUILDERS` under its bare name with
the metadata the registry needs; importing this package imports them all.
"""

from __future__ import annotations

from . import alexnet, lenet, resnet, vgg  # noqa: F401 - importing registers the builders
from .catalog import BUILDERS, Entry, register

__all__ = ["BUILDERS", "Entry", "register"]
