"""Repeated log lines folded into one per interval (5 s by default), with a count (the kernel's rate-limited
messages, ``printk_ratelimited`` with "callbacks suppressed", made to add up).

The first occurrence of a key is logged at once; later ones within ``interval`` seconds are
counted, and the next occurrence after the interval (or :meth:`Aggregator.flush`) logs one line
with how many there were and the last one's details. No task or timer: whoever logs calls
:meth:`note`, and whoever owns the aggregator flushes it when it stops, so nothing is lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Seconds between two lines of one key: printk_ratelimit's default interval.
DEFAULT_INTERVAL = 5.0


@dataclass
class _Pending:
    count: int
    since: float  # monotonic time of the last line logged for the key
    last: str  # the latest occurrence's details


class Aggregator:
    """Fold repeated messages per key into one line per ``interval`` seconds."""

    def __init__(self, logger: logging.Logger, interval: float = DEFAULT_INTERVAL, *,
                 level: int = logging.INFO,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.logger = logger
        self.interval = interval
        self.level = level
        self.clock = clock
        self._pending: dict[str, _Pending] = {}

    def note(self, key: str, details: str) -> None:
        """One occurrence of ``key`` (e.g. ``fault fired rule=3 action=delay``) with its
        ``details`` (e.g. ``peer=... cid=...``)."""
        now = self.clock()
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = _Pending(0, now, details)
            self.logger.log(self.level, "%s %s", key, details)
            return
        pending.count += 1
        pending.last = details
        if now - pending.since >= self.interval:
            self._emit(key, pending, now)

    def flush(self) -> None:
        """Log what is still counted (at shutdown, or when the source of the lines goes)."""
        now = self.clock()
        for key, pending in list(self._pending.items()):
            if pending.count:
                self._emit(key, pending, now)
        self._pending.clear()

    def _emit(self, key: str, pending: _Pending, now: float) -> None:
        self.logger.log(self.level, "%s repeated=%d in_s=%.1f last: %s", key, pending.count,
                        now - pending.since, pending.last)  # fmt: skip
        pending.count = 0
        pending.since = now
