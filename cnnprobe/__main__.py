"""`cnnprobe` and `python -m cnnprobe`. Ctrl-C is answered from the first instant, while the command line
is still loading; once it runs, the command line answers it itself (bench prints what it measured)."""

from __future__ import annotations

import sys


def main() -> None:
    import os

    from .core import signals

    if "TORCHELASTIC_RUN_ID" in os.environ:  # a rank torchrun started: it dies with torchrun's agent
        signals.guard_rank()
    signals.install()
    try:
        from .cli.app import main as run

        run()
    except KeyboardInterrupt:
        sys.stderr.write("cnnprobe: interrupted\n")
        sys.exit(130)
    except signals.Terminated:
        sys.stderr.write("cnnprobe: terminated\n")
        sys.exit(signals.TERMINATED_EXIT)


if __name__ == "__main__":
    main()
