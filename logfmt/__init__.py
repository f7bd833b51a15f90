"""Structured (logfmt) logging: ``ts=... level=... logger=... msg="..."`` lines on stderr.

Shared by both wings (the ``nvmeof-target`` daemon, the ``nvmeof`` CLI) and the demo, so it
lives beside them rather than in either; it imports nothing of ours.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

LEVELS = ("debug", "info", "warning", "error")
#: Exit status when stdout's reader went away: 128 + SIGPIPE, what a tool killed by it gives.
EXIT_BROKEN_PIPE = 128 + 13


class LogfmtFormatter(logging.Formatter):
    """One line per record, key=value pairs, quoted message."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        msg = record.getMessage().replace("\\", "\\\\").replace('"', '\\"')
        line = (f'ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} '
                f'logger={record.name} msg="{msg}"')  # fmt: skip
        if record.exc_info:
            exc = self.formatException(record.exc_info).replace("\n", "\\n")
            line += f' exc="{exc}"'
        return line


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes (as logging's own last-resort
    handler does), not the stream of the moment it was made: a program that swaps stderr (a
    test's capture, closed afterwards) must not leave a handler writing to a closed file."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always sys.stderr


def setup_logging(level: str) -> None:
    """Send logfmt records at ``level`` and above to stderr."""
    handler = StderrHandler()
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def first_leaf(error: BaseException) -> BaseException:
    """The first non-group exception inside (possibly nested) exception groups."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def reader_went_away() -> int:
    """stdout's reader closed the pipe (``nvmeof id-ctrl ... | head -1``): stop quietly, as a
    tool killed by SIGPIPE does. SIGPIPE itself stays ignored (Python's default), since a
    write to a reset TCP connection must raise, not kill the process; stdout is pointed at
    /dev/null so the interpreter's final flush has nothing to complain about."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE
