"""bench's progress bar: on stderr, and only for a terminal."""

from __future__ import annotations

import sys
from typing import Any


class progress:
    """A rich progress bar on stderr, only for a terminal (with --json too: stdout keeps the JSON alone).
    The callable it gives takes a description; `advance=False` says what is happening without counting a
    step (a batch search's probes)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.total = total

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda description, advance=True: None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), TimeElapsedColumn(),
                            console=Console(stderr=True, markup=False, emoji=False), transient=True)
        self.bar.__enter__()
        task = self.bar.add_task("starting", total=self.total)
        first = [True]

        def advance(description: str, advance: bool = True) -> None:
            if advance and not first[0]:
                self.bar.advance(task)
            first[0] = first[0] and not advance
            self.bar.update(task, description=description)

        return advance

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)
