"""Ctrl-C, SIGTERM and a launcher's death.

Ctrl-C is remembered: some libraries swallow KeyboardInterrupt while they import (numpy's typing, under
torch), so the command line asks at the end whether one was seen, not only whether one reached it. SIGTERM
(what a CI job's timeout sends first) raises `Terminated`, so the command cleans up and exits 143. A rank
of a distributed bench dies with the process that started it, whatever kills that: the kernel's
parent-death signal where there is one (Linux), and a watch on the parent either way.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from types import FrameType

_seen = False
_terminated = False
TERMINATED_EXIT = 128 + signal.SIGTERM  # 143, as a shell reports a process SIGTERM ended
PR_SET_PDEATHSIG = 1
LAUNCHER_PID_ENV = "CNNPROBE_LAUNCHER_PID"  # set by `bench --nproc` for the ranks it starts
_guarded = False


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, so that no `except Exception` on the way swallows it."""


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    global _seen
    _seen = True
    raise KeyboardInterrupt


def _on_terminate(signum: int, frame: FrameType | None) -> None:
    global _terminated
    _terminated = True
    raise Terminated()


def install() -> None:
    """Take over Ctrl-C where Python's default handler has it (not where a parent chose to ignore it), and
    SIGTERM in a process that is not itself a rank (a rank blocked in a collective could not run a Python
    handler, and its launcher stops it with SIGTERM: there the default, immediate death, is right)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_interrupt)
    if "TORCHELASTIC_RUN_ID" not in os.environ and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_terminate)


def seen() -> bool:
    return _seen


def terminated() -> bool:
    """SIGTERM arrived, even where an import turned `Terminated` into another error."""
    return _terminated


def raise_pending() -> None:
    """Act now on a Ctrl-C or SIGTERM that some library swallowed on the way (a handler's exception caught by
    an `except BaseException` in an import): before work starts, and again before the command exits 0."""
    if _terminated:
        raise Terminated()
    if _seen:
        raise KeyboardInterrupt


def _set_parent_death_signal(signum: int) -> bool:
    """prctl(PR_SET_PDEATHSIG): the kernel sends `signum` to this process when its parent thread ends."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def guard_rank(launcher: int | None = None, poll: float = 0.5) -> None:
    """Make this rank die with its launcher: SIGKILL from the kernel when the parent dies (set again on every
    call: torch's spawn wrapper sets its own, SIGINT, which a rank blocked in a collective would not act on),
    and a thread that leaves when the parent is gone (a launcher that died before this ran, or no prctl).
    `launcher`: the pid the parent must have; None: any parent but init."""
    global _guarded
    _set_parent_death_signal(signal.SIGKILL)
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C reaches every rank with its launcher, and the launcher's agent passes it on: a rank ends at
        # once and silently (no traceback from a half-done import, no wait on a blocked collective); the
        # launcher alone says "interrupted"
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    parent = os.getppid()
    if (launcher is not None and parent != launcher) or parent == 1:
        os._exit(1)  # orphaned before we could ask to die with the parent
    if _guarded:
        return
    _guarded = True

    def watch() -> None:
        while True:
            time.sleep(poll)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="cnnprobe-parent-watch", daemon=True).start()


def guard_spawned_rank() -> None:
    """In a process `bench --nproc` spawned: guard it, as early as the package is imported (before torch), and
    take the variable out of the environment so that processes this rank starts are not taken for ranks."""
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    if launcher and launcher.isdigit() and int(launcher) != os.getpid():
        os.environ.pop(LAUNCHER_PID_ENV, None)
        guard_rank(int(launcher))


def raise_on_terminate() -> None:
    """SIGTERM raises `Terminated` here: a rank the launcher stops (because another rank died) still says
    which rank that was before it leaves."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_terminate)


def defer_terminate() -> list[bool]:
    """From now on SIGTERM is only noted (the returned flag), not acted on: a rank that is reporting a failure
    finishes its one line before it leaves."""
    flag = [False]

    def note(signum: int, frame: FrameType | None) -> None:
        flag[0] = True

    try:
        signal.signal(signal.SIGTERM, note)
    except ValueError:  # not the main thread
        pass
    return flag
