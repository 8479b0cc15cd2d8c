"""The CPU allocator's own count of what a step allocates, read from torch.profiler's memory events.

No dispatch mode is active: the step runs exactly as a training loop runs it
(a mode changes the program slightly: autograd cannot steal a gradient under
one). torch's CPU allocator reports every allocation and free to the profiler
with its running total, whichever thread made it, so memory an operator
allocates inside itself (oneDNN reorders and scratchpads, a backward kernel's
temporaries), which is never a tensor, is in it.

The allocator knows only blocks allocated while the profiler ran: a block
allocated before and freed during the session is not counted as freed. So a
window is measured after a first step inside the same session, which makes
everything the window can free (the last step's gradients) under the
profiler's eye; what is live when the window starts comes from the caller.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

WINDOW = "cnnprobe.memory.allocator.window"


@dataclass
class AllocatorWindow:
    """What the allocator did inside one window: its peak and its net change, relative to the start."""

    peak_bytes: int  # most bytes allocated at once above the window's start
    net_bytes: int  # allocated at the end minus at the start
    allocations: int  # how many allocations the window made


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """The profiler's C++ side logs to file descriptor 2 (kineto's start and stop lines, the allocator's
    warning about blocks older than the session): silenced while it runs, restored after."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real descriptor 2 (a captured stream): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _events(prof: torch.profiler.profile) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
    """(time ns, size, running total after) of every CPU allocation (+) and free (−), in time order; and
    the (start, end) ns of every window."""
    from torch._C._profiler import _EventType

    out: list[tuple[int, int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())  # type: ignore[union-attr]
    windows: list[tuple[int, int]] = []
    while stack:
        event = stack.pop()
        if event.tag == _EventType.Allocation:
            fields = event.typed[1]
            if fields.device.type == "cpu":
                out.append((event.start_time_ns, int(fields.alloc_size), int(fields.total_allocated)))
        elif event.name == WINDOW:
            windows.append((event.start_time_ns, event.end_time_ns))
        stack.extend(event.children)
    out.sort(key=lambda e: e[0])
    return out, sorted(windows)


def windows(prof: torch.profiler.profile) -> list[AllocatorWindow]:
    """Each `window()` range the session recorded, in order, measured from the allocator's running total."""
    events, ranges = _events(prof)
    result = []
    for start, end in ranges:
        before = [e for e in events if e[0] < start]
        inside = [e for e in events if start <= e[0] <= end]
        if not inside:
            result.append(AllocatorWindow(0, 0, 0))
            continue
        base = before[-1][2] if before else inside[0][2] - inside[0][1]
        peak = max(e[2] for e in inside) - base
        result.append(AllocatorWindow(max(peak, 0), inside[-1][2] - base, sum(1 for e in inside if e[1] > 0)))
    return result


def window() -> contextlib.AbstractContextManager[object]:
    """Marks one measured range inside `session()`."""
    return torch.profiler.record_function(WINDOW)


@contextlib.contextmanager
def session() -> Iterator[torch.profiler.profile]:
    """A profiler session recording only the CPU allocator's events (no shapes, no stacks); file
    descriptor 2 is silent throughout (the allocator warns, from C++, about every block older than it)."""
    with quiet_stderr(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                profile_memory=True, record_shapes=False, with_stack=False) as prof:
        yield prof


def step_peak(step: Callable[[], object]) -> AllocatorWindow:
    """One steady-state step's allocator peak above its start: a first step inside the session (so that
    what the measured step frees was allocated under the profiler), then the measured one."""
    with session() as prof:
        step()
        with window():
            step()
    return windows(prof)[0]


def live_bytes(tensors: Iterable[object]) -> int:
    """Bytes the allocator holds for these tensors: each storage once, by its address."""
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and not t.is_sparse and t.device.type != "meta":
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
    return sum(seen.values())
