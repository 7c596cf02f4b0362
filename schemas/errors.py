"""The root of every clipforge error, and the one place that turns an error into an exit status.

The contract of every subcommand: 0 ok, 1 the work failed, 2 a wrong set-up (flags, config, paths,
a missing tool), found before any work where it can be. Each error class says which it is.
"""
from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Callable, Optional

from schemas.logs import ROOT, console, get_logger


class ClipforgeError(Exception):
    """Every clipforge error derives from this.

    Attributes:
      exit_code: the status a subcommand exits with when this error ends it (1: the work failed).
      label: the word between the program and the message on stderr ("error", "failed", ...), or
        "" for none.
      hard_exit: True where the process must not run an ordinary interpreter shutdown after
        reporting (threads of a library stuck in a broken state): the subcommand leaves with
        os._exit once its line is written.
    """

    exit_code = 1
    label = "error"
    hard_exit = False


class SetupError(ClipforgeError):
    """A wrong set-up (a flag, a config value, a path, a missing tool): exit status 2."""

    exit_code = 2


def error_line(prog: str, error: ClipforgeError) -> str:
    """The one line a subcommand shows for ERROR: `PROG: LABEL: message` (no LABEL when it has none)."""
    return f"{prog}: {error.label}: {error}" if error.label else f"{prog}: {error}"


def exits(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorates a subcommand's `run(argv) -> int`: clipforge's log is shown on the console
    (schemas/logs.py), and a ClipforgeError it raises is printed on one line
    (`PROG: LABEL: message`, no traceback) and becomes the error's exit status.

    Args:
      prog: the program name shown, e.g. "clipforge ingest".
    """
    def wrap(run: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(run)
        def wrapped(argv: Optional[list[str]] = None, *args, **kwargs) -> int:
            console()
            try:
                return run(argv, *args, **kwargs)
            except ClipforgeError as e:
                get_logger(ROOT).error(error_line(prog, e))
                if e.hard_exit:
                    logging.shutdown()
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(e.exit_code)
                return e.exit_code
        return wrapped
    return wrap
