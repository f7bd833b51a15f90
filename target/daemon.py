"""The target daemon: listeners for every port, one task per connection, clean shutdown."""

from __future__ import annotations

import logging
import signal
from functools import partial

import trio

from target.config import TargetConfig
from target.connection import QueueConnection
from target.port import Port
from target.state import TargetState

log = logging.getLogger("nvmeof.target")


class Target:
    """An NVMe/TCP target serving a :class:`~target.config.TargetConfig`.

    Use ``await nursery.start(target.serve)``; the ports are bound when ``start`` returns (port 0
    in the configuration picks a free port: see ``port.bound_port``).
    """

    def __init__(self, config: TargetConfig, *, advertise: str | None = None) -> None:
        self.state = TargetState(config)
        if advertise is not None:
            for port in self.state.ports.values():
                port.advertise = advertise
        self.connections: set[QueueConnection] = set()
        self._cancel: trio.CancelScope | None = None

    @property
    def ports(self) -> dict[int, Port]:
        return self.state.ports

    async def serve(
        self, *, task_status: trio.TaskStatus[Target] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind every port and serve until cancelled (or :meth:`stop`)."""
        try:
            with trio.CancelScope() as self._cancel:
                async with trio.open_nursery() as nursery:
                    for port in sorted(self.state.ports.values(), key=lambda p: p.id):
                        listeners = await trio.open_tcp_listeners(port.port, host=port.addr)
                        port.bound_port = listeners[0].socket.getsockname()[1]
                        nursery.start_soon(self._serve_port, port, listeners)
                        log.info("listening port=%s addr=%s:%s subsystems=%s", port.id, port.addr,
                                 port.bound_port, ",".join(port.subsystems) or "-")  # fmt: skip
                    task_status.started(self)
        finally:
            self.state.close()
            log.info("target stopped")

    def stop(self) -> None:
        """Close every controller, connection and listener."""
        for ctrl in self.state.controllers():
            ctrl.close("target shutting down")
        if self._cancel is not None:
            self._cancel.cancel()

    async def _serve_port(self, port: Port, listeners: list[trio.SocketListener]) -> None:
        await trio.serve_listeners(partial(self._handle, port), listeners)

    async def _handle(self, port: Port, stream: trio.SocketStream) -> None:
        if not port.enabled:
            await stream.aclose()
            return
        queue = QueueConnection(self.state, port, stream)
        self.connections.add(queue)
        try:
            await queue.run()
        except Exception:
            # A bug serving one connection must not take the others down with it.
            log.exception("connection failed peer=%s port=%s", queue.peer, port.id)
        finally:
            self.connections.discard(queue)


async def run_until_signalled(target: Target) -> None:
    """Serve ``target`` until SIGINT or SIGTERM, then shut down cleanly."""
    async with trio.open_nursery() as nursery:
        await nursery.start(target.serve)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("signal %s: shutting down, closing %s connections",
                         signal.Signals(signum).name, len(target.connections))  # fmt: skip
                target.stop()
                break
