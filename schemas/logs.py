"""clipforge's logging: one `clipforge` logger tree, and the console format the CLI shows.

Every module logs through `get_logger(__name__)` (a child of the `clipforge` logger) instead of
printing, so a library user routes, silences or formats clipforge's progress like any other
library's. Importing a clipforge module changes no logging set-up; the `clipforge` command (and
`python -m trainer`) calls `console()` once when a subcommand starts, which shows the lines users
have always seen: progress and summaries on stdout, warnings and errors on stderr, no prefixes.
"""
from __future__ import annotations

import logging
import sys

ROOT = "clipforge"
# `log.info(line, extra=PROGRESS)`: a progress line, shown on stderr so stdout keeps the summaries
# (`clipforge ingest > summary.txt` still shows progress on the terminal).
PROGRESS = {"progress": True}
# Third-party warnings that are wrong for clipforge, dropped from the console: it uses no BigQuery,
# it frames TFRecord shards itself (schemas/tfrecord.py, CRC32C from google-crc32c), and Beam's
# RunInference only loses a memory metric when its optional ModelManager cannot be imported.
KNOWN_NOISE = ("apitools not found", "python-snappy or google-crc32c", "Resource module is not available")


def get_logger(name: str) -> logging.Logger:
    """The logger for module `name` (`pipelines.ingest` -> `clipforge.pipelines.ingest`)."""
    return logging.getLogger(name if name == ROOT or name.startswith(ROOT + ".") else f"{ROOT}.{name}")


class _Console(logging.Handler):
    """Writes a record's message alone: INFO and below to stdout, WARNING and above (and progress
    lines, logged with `extra=PROGRESS`) to stderr.

    The streams are looked up at each record, not kept, so output follows `sys.stdout`/`sys.stderr`
    when something (pytest's capsys, a caller's redirect_stdout) replaces them.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            to_stderr = record.levelno >= logging.WARNING or getattr(record, "progress", False)
            stream = sys.stderr if to_stderr else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never end the run (logging.Handler's contract)
            self.handleError(record)


class _KnownNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in record.getMessage() for n in KNOWN_NOISE)


def console(level: int = logging.INFO) -> None:
    """Shows clipforge's log on the console in its plain format, once per process (idempotent).

    Also hides KNOWN_NOISE on the root logger's handlers and on Beam's TFRecord logger, which log
    those lines themselves. Called by the CLI entry points, never at import.
    """
    logger = logging.getLogger(ROOT)
    logger.setLevel(level)
    if not any(isinstance(h, _Console) for h in logger.handlers):
        handler = _Console()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False  # the root logger's handlers (absl's, Beam's) would print it twice
    for name in ("", "apache_beam.io.tfrecordio"):  # a filter sees only its own logger's records
        target = logging.getLogger(name)
        if not any(isinstance(f, _KnownNoise) for f in target.filters):
            target.addFilter(_KnownNoise())
