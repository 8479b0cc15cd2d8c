"""`cnnprobe` and `python -m cnnprobe`. Ctrl-C is answered from the first instant, while the command line
is still loading; once it runs, the command line answers it itself (bench prints what it measured)."""

from __future__ import annotations

import sys


def main() -> None:
    from . import signals

    signals.install()
    try:
        from .cli import main as run

        run()
    except KeyboardInterrupt:
        sys.stderr.write("cnnprobe: interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
