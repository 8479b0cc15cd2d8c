"""Finding the largest batch size for which something holds, in few tries: each try may run a model."""

from __future__ import annotations

from collections.abc import Callable


def search_batch(fits: Callable[[int], bool], start: int, limit: int, step: int | None = None) -> int:
    """The largest batch for which `fits` holds, searched from a good first guess: steps that double away
    from `start` (the first one `step`, by default a sixteenth of it) until the answer is bracketed, then
    bisection. 0 when not even batch 1 fits."""
    start = max(1, min(start, limit))
    step = step or max(1, start // 16)
    if fits(start):
        good, bad = start, None
        while bad is None:
            trial = min(good + step, limit)
            if trial == good:
                return good
            if fits(trial):
                good, step = trial, step * 2
            else:
                bad = trial
    else:
        good, bad = None, start
        while good is None:
            if bad == 1:
                return 0
            trial = max(1, bad - step)
            if fits(trial):
                good = trial
            else:
                bad, step = trial, step * 2
    assert good is not None and bad is not None  # each branch loops until both ends are bracketed
    while bad - good > 1:
        middle = (good + bad) // 2
        if fits(middle):
            good = middle
        else:
            bad = middle
    return good
