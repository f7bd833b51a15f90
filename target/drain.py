"""One queue's part in a graceful stop (:meth:`target.daemon.Target.stop`, docs/DURABILITY.md).

A mixin of :class:`target.connection.QueueConnection`. Once :meth:`QueueDrain.drain` is called,
commands received are not started (Keep Alive excepted: the host keeps its controller while the
rest finish); they end unanswered with the connection and the host retries them elsewhere. The
drain returns when every command started before has been answered and the answers are sent.
"""

from __future__ import annotations

import math

import trio


class QueueDrain:
    """Drain state of a queue: what it started and has not answered yet."""

    #: Set by :meth:`drain`: commands received from now on are not started.
    draining = False
    #: Commands received that will never be answered: not started while draining, or dropped
    #: by a fault rule. A drain does not wait for them.
    unanswered = 0
    _idle: trio.Event | None = None  # set when a drain has nothing left to wait for
    ended_at: float

    @property
    def inflight(self) -> int:
        raise NotImplementedError  # the connection's

    @property
    def blackholed(self) -> bool:
        raise NotImplementedError  # the connection's

    async def _flush(self) -> None: ...

    @property
    def executing(self) -> int:
        """Commands started and not answered yet: what a graceful stop waits for."""
        return self.inflight - self.unanswered

    @property
    def ended(self) -> bool:
        return self.ended_at != math.inf

    async def drain(self) -> None:
        """Start no more commands, wait until every command started has been answered, and
        send what is queued. Unbounded here: the caller bounds it, then closes the connection.
        A blackholed connection sends nothing, so there is nothing to wait for."""
        self.draining = True
        if self.blackholed or self.ended:
            return
        if self.executing > 0:
            self._idle = trio.Event()
            await self._idle.wait()
        if not self.ended:
            await self._flush()

    def _never_answered(self) -> None:
        self.unanswered += 1
        self._check_idle()

    def _check_idle(self) -> None:
        """Called as commands are answered and when the connection ends."""
        if self._idle is not None and (self.executing <= 0 or self.ended):
            self._idle.set()
