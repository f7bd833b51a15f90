"""A queue's liveness: the operator's path kills (reset, blackhole) and the keep-alive watch.

A mixin of :class:`target.connection.QueueConnection` (which provides what it declares).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from target.controller import Controller
    from target.state import TargetState
    from tlsstream import TlsStream

log = logging.getLogger("nvmeof.target")


class Liveness:
    """Path operations the control API applies to a queue, and the admin queue's keep-alive
    watch."""

    qid: int
    controller: Controller | None
    state: TargetState
    stream: trio.SocketStream | TlsStream
    _flowing: trio.Event
    _keepalive_sleep: trio.CancelScope | None

    def close(self, reason: str) -> None: ...

    def reset(self, reason: str) -> None:
        """Close with a TCP RST instead of a FIN (SO_LINGER 0)."""
        with contextlib.suppress(OSError):
            self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                          struct.pack("ii", 1, 0))  # fmt: skip
        self.close(reason)

    def blackhole(self, on: bool) -> None:
        """Stop (or resume) reading and answering; the connection itself stays open."""
        if on and self._flowing.is_set():
            self._flowing = trio.Event()
        elif not on:
            self._flowing.set()
            if self.qid == 0 and self.controller is not None:
                # The watcher kept the controller alive while nothing was read; the host gets
                # a whole KATO from now to be heard again.
                self.controller.touch(trio.current_time())

    @property
    def blackholed(self) -> bool:
        return not self._flowing.is_set()

    async def _watch_keepalive(self, ctrl: Controller) -> None:
        """End the association when the keep-alive timer runs out with no command seen on any of
        the controller's queues since it was armed (nvmet's keep-alive, traffic-based as
        nvmet_keep_alive_timer). Wakes only at the deadline (a Keep Alive moves it later:
        looked at then), or when a Set Features moves it earlier (Controller.keepalive_rearmed):
        an idle controller costs one wake-up per KATO."""
        while not ctrl.closed:
            now = trio.current_time()
            if self.blackholed:
                # A blackholed path reads nothing, keep-alives included: it is for the host to
                # notice (its keep-alive timeout), not for us to end the association.
                ctrl.touch(now)
            elif ctrl.keepalive_expired(now) and ctrl.traffic_seen:
                # nvmet_keep_alive_timer: commands seen since the timer was armed re-arm it.
                ctrl.traffic_seen = False
                ctrl.touch(now)
            elif ctrl.keepalive_expired(now):
                log.warning("keep-alive timeout cntlid=%s host=%s kato_ms=%s", ctrl.cntlid,
                            ctrl.hostnqn, ctrl.kato_ms)  # fmt: skip
                self.state.keepalive_expirations += 1
                ctrl.close("keep-alive timeout")
                return
            with trio.CancelScope(deadline=ctrl.keepalive_deadline) as self._keepalive_sleep:
                await trio.sleep_forever()
            self._keepalive_sleep = None

    def _rearm_keepalive(self) -> None:
        if self._keepalive_sleep is not None:
            self._keepalive_sleep.cancel()
