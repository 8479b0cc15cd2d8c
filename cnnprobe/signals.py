"""Ctrl-C, remembered: some libraries swallow KeyboardInterrupt while they import (numpy's typing, under
torch), so the command line asks at the end whether one was seen, not only whether one reached it."""

from __future__ import annotations

import signal
from types import FrameType

_seen = False


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    global _seen
    _seen = True
    raise KeyboardInterrupt


def install() -> None:
    """Take over Ctrl-C where Python's default handler has it (not where a parent chose to ignore it)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_interrupt)


def seen() -> bool:
    return _seen
