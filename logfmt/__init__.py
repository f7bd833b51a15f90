"""Structured (logfmt) logging: ``ts=... level=... logger=... msg="..."`` lines on stderr.

Shared by both wings (the ``nvmeof-target`` daemon, the ``nvmeof`` CLI) and the demo, so it
lives beside them rather than in either; it imports nothing of ours.
"""

from __future__ import annotations

import logging
import time

LEVELS = ("debug", "info", "warning", "error")


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


def setup_logging(level: str) -> None:
    """Send logfmt records at ``level`` and above to stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def first_leaf(error: BaseException) -> BaseException:
    """The first non-group exception inside (possibly nested) exception groups."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
