"""Other work on the machine, on purpose: busy-loop processes that tests start and always stop."""

from __future__ import annotations

import subprocess
import sys
from typing import Self


class Load:
    """`with Load() as load: load.set(2)` keeps two busy-loop processes running until the block ends."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def set(self, n: int) -> None:
        while len(self.procs) < n:
            self.procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        while len(self.procs) > n:
            self._stop(self.procs.pop())

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes]) -> None:
        proc.kill()
        proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.set(0)
