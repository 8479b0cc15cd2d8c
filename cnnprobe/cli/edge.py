"""The error edge of the command line: every error a user can cause ends as one line on stderr (and, in
--json mode, one JSON object on stdout) and an exit code; Ctrl-C is 130, SIGTERM 143, a crash 3."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import Any, NoReturn, cast

import typer
from typer.core import TyperCommand, TyperGroup

from ..core import signals
from ..core.errors import CnnprobeError

# typer vendors click in recent releases and depends on it in older ones. Found, not imported, so mypy sees a
# bare `type`: cast to an exception class (click's, with format_message() and exit_code).
ClickException = cast("type[Any]", next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"))


class Interrupted(Exception):
    """Ctrl-C, carried past typer (which would turn it into a silent exit 130)."""


class ModelExited(Exception):
    """A user's model called sys.exit(): its failure, not cnnprobe's exit."""


def _fail(message: str, code: int, json_mode: bool = False, prefix: str = "cnnprobe: error: ") -> NoReturn:
    """One line on stderr (none for an empty message: help was printed) and, in --json mode, one JSON object
    on stdout, so that a script reading stdout always gets JSON."""
    text = " ".join(str(message).split())
    if text:
        sys.stderr.write(f"{prefix}{text}\n")
    if json_mode and text:
        import json

        sys.stdout.write(json.dumps({"error": text, "exit_code": code}) + "\n")
    sys.stdout.flush()
    sys.exit(code)


def _output_failed(error: OSError | UnicodeEncodeError, json_mode: bool) -> NoReturn:
    """Standard output could not take what was printed: a full disk, a closed pipe, an encoding without × or →."""
    if isinstance(error, OSError) and error.errno == errno.EPIPE:  # `cnnprobe list | head`: nothing to say
        _quiet_stdout()
        sys.exit(1)
    if isinstance(error, UnicodeEncodeError):
        encoding = getattr(sys.stdout, "encoding", None) or "unknown"
        message = (f"cannot print to standard output in its encoding ({encoding}); set PYTHONIOENCODING=utf-8 "
                   "or a UTF-8 locale, or use --json")
    else:
        message = f"cannot write to standard output: {error.strerror or error}"
    _quiet_stdout()
    sys.stderr.write(f"cnnprobe: error: {message}\n")
    sys.exit(2)


def _quiet_stdout() -> None:
    """Point standard output at /dev/null, so that the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


class _FlagHelp:
    """-h/--help shown as the flag it is, without a value placeholder."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None and option.metavar is None:
            option.metavar = ""
        return option


class Command(_FlagHelp, TyperCommand):
    """A command whose help shows its flags as flags."""


class OneLineErrors(_FlagHelp, TyperGroup):
    """Turns usage errors, user errors and crashes into one stderr line and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted() from None
        except SystemExit as e:  # typer's own exits are not SystemExit: this came from user code, or from rich
            if isinstance(e.__context__, BrokenPipeError):  # rich's answer to `cnnprobe ... | head`
                raise e.__context__ from None
            raise ModelExited(e.code) from None

    def main(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        argv = list(sys.argv[1:] if args is None else args)
        json_mode = "--json" in argv
        try:
            rv = super().main(args, *rest, **kwargs)
        except ClickException as e:
            _fail(e.format_message(), e.exit_code, json_mode)
        except (typer.Abort, Interrupted, KeyboardInterrupt) as e:
            detail = f": {e}" if isinstance(e, Interrupted) and str(e) else ""
            _fail(f"interrupted{detail}", 130, json_mode and not detail, prefix="cnnprobe: ")
        except signals.Terminated:
            _fail("terminated", signals.TERMINATED_EXIT, json_mode, prefix="cnnprobe: ")
        except ModelExited as e:
            _fail(f"the model called sys.exit({e.args[0]}) while cnnprobe was running it", 1, json_mode)
        except CnnprobeError as e:
            _fail(str(e), e.exit_code, json_mode and not getattr(e, "printed", False))
        except (OSError, UnicodeEncodeError) as e:
            if isinstance(e, UnicodeEncodeError) or e.errno in (errno.ENOSPC, errno.EPIPE, errno.EIO, errno.EBADF):
                _output_failed(e, json_mode)
            _internal(e, json_mode)
        except Exception as e:  # noqa: BLE001 - the last line of defence
            if signals.terminated():  # a SIGTERM some library turned into another error (an import half done)
                _fail("terminated", signals.TERMINATED_EXIT, json_mode, prefix="cnnprobe: ")
            if signals.seen():  # a Ctrl-C some library turned into another error (an import half done)
                _fail("interrupted", 130, json_mode, prefix="cnnprobe: ")
            _internal(e, json_mode)
        if signals.terminated():  # a SIGTERM an import swallowed whole
            _fail("terminated", signals.TERMINATED_EXIT, json_mode, prefix="cnnprobe: ")
        if rv == 130 or signals.seen():  # typer turns Ctrl-C into a silent exit 130; imports may swallow it
            _fail("interrupted", 130, json_mode, prefix="cnnprobe: ")
        try:
            sys.stdout.flush()
        except (OSError, UnicodeEncodeError) as e:
            _output_failed(e, json_mode)
        sys.exit(rv if isinstance(rv, int) else 0)


def _internal(error: BaseException, json_mode: bool) -> NoReturn:
    if os.environ.get("CNNPROBE_DEBUG"):
        raise error
    _fail(f"internal error: {type(error).__name__}: {error} (set CNNPROBE_DEBUG=1 for the traceback)", 3, json_mode)


def printed(error: CnnprobeError) -> CnnprobeError:
    """An error raised after the results were printed: with --json, stdout already holds its one object, which
    says what went wrong (failures, comparison, unwritten)."""
    error.printed = True  # type: ignore[attr-defined]
    return error


def model_output(json_mode: bool) -> contextlib.AbstractContextManager[Any]:
    """With --json, what a model prints goes to stderr: stdout holds the JSON object and nothing else."""
    return contextlib.redirect_stdout(sys.stderr) if json_mode else contextlib.nullcontext()
