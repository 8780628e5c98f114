"""How the CLI reports failures: one line on stderr, a non-zero exit, never a traceback (unless debugging)."""

from __future__ import annotations

import logging
import sys

try:  # typer >= 0.20 vendors click as typer._click; older typer uses click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions

EXIT_USAGE = 2  # bad flags, bad config
EXIT_FAILURE = 1  # the command could not do its job


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def report(exc: BaseException) -> int:
    """Print `error: ...` for exc and return the exit code."""
    from maxcli.config import ConfigError
    from maxcli.interfaces import InputError

    if type(exc).__name__ == "NoArgsIsHelpError" and getattr(exc, "ctx", None) is not None:
        print(exc.ctx.get_help())  # `maxcli` or a group alone: show help, not an error
        return 0
    if isinstance(exc, click_exceptions.UsageError):
        msg, code = exc.format_message(), EXIT_USAGE
        ctx = exc.ctx
        if ctx is not None:
            msg = f"{msg} (see '{ctx.command_path} --help')"
    elif isinstance(exc, ConfigError):
        msg, code = str(exc), EXIT_USAGE
    elif isinstance(exc, (InputError, ValueError, FileNotFoundError, PermissionError, OSError, RuntimeError, ImportError)):
        msg, code = str(exc) or type(exc).__name__, EXIT_FAILURE
        if isinstance(exc, (OSError,)) and getattr(exc, "filename", None) and str(exc.filename) not in msg:
            msg = f"{msg}: {exc.filename}"
    else:
        msg, code = f"internal error: {type(exc).__name__}: {exc}", EXIT_FAILURE
    if logging.getLogger("maxcli").isEnabledFor(logging.DEBUG):
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    print(f"error: {_first_line(msg)}", file=sys.stderr)
    return code
