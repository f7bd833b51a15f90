"""The target daemon: a listener per port, one task per connection, operator actions, shutdown.

Connections live in the target's nursery, not under their port's listener, so a port can stop
accepting (``refuse``) while its established connections carry on.

A stop is graceful (docs/DURABILITY.md): the listeners close, the commands being executed
finish and their completions are sent, at most ``drain_timeout`` seconds; then every connection
closes. What was acknowledged was done; what was not, the host retries elsewhere.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from target.capture import ConnectionCapture, prepare_directory
from target.config import TargetConfig
from target.connection import QueueConnection
from target.control.actions import Operations
from target.port import Port
from target.state import TargetState

if TYPE_CHECKING:
    from tlsstream import TlsStream

log = logging.getLogger("nvmeof.target")

#: Seconds a graceful stop waits for the commands being executed (``--drain-timeout``).
DEFAULT_DRAIN_TIMEOUT = 5.0


class ListenError(OSError):
    """A port cannot listen; says which port and address ("[Errno 98]" alone does not)."""

    def __init__(self, port: Port, bind: int, err: OSError) -> None:
        super().__init__(err.errno, err.strerror or str(err))
        addr = f"[{port.addr}]" if ":" in port.addr else port.addr
        self.where = f"port {port.id} on {addr}:{bind}"

    def __str__(self) -> str:
        return f"{self.where}: {self.strerror}"


class Target(Operations):
    """An NVMe/TCP target serving a :class:`~target.config.TargetConfig`.

    Use ``await nursery.start(target.serve)``; the ports are bound when ``start`` returns (port 0
    in the configuration picks a free port: see ``port.bound_port``). The operator actions of
    :class:`~target.control.Operations` (port down/up, ANA changes, namespaces, faults) are
    methods of the target. With ``pcap_dir`` each connection's traffic is captured there
    (:meth:`capture_to`). :meth:`stop` drains for at most ``drain_timeout`` seconds.
    """

    def __init__(self, config: TargetConfig, *, advertise: str | None = None,
                 pcap_dir: str | os.PathLike[str] | None = None,
                 drain_timeout: float = DEFAULT_DRAIN_TIMEOUT) -> None:  # fmt: skip
        self.state = TargetState(config)
        self.drain_timeout = drain_timeout
        self._stop_requested = trio.Event()
        self._draining = False
        if advertise is not None:
            for port in self.state.ports.values():
                port.advertise = advertise
        self.connections: set[QueueConnection] = set()
        self._cancel: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._listeners: dict[int, tuple[trio.CancelScope, list[trio.SocketListener]]] = {}
        self.pcap_dir: Path | None = None
        self._connection_serial = itertools.count(1)
        if pcap_dir is not None:
            self.capture_to(pcap_dir)
        super().__init__()

    def capture_to(self, directory: str | os.PathLike[str] | None) -> None:
        """Capture every connection accepted from now on into ``directory`` (created if
        missing), one pcapng file per connection (:mod:`target.capture`); None stops capturing
        new connections. Connections already open are left as they are: those being captured
        go on until they close, the others are not captured."""
        self.pcap_dir = None if directory is None else prepare_directory(directory)
        log.info("packet capture %s", self.pcap_dir or "off")

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
                    self._nursery = nursery
                    for port in sorted(self.state.ports.values(), key=lambda p: p.id):
                        await self.open_listener(port)
                    task_status.started(self)
                    # Serve until stop(), even while every port is down and nothing is open.
                    await self._stop_requested.wait()
                    await self._drain()
                    for ctrl in self.state.controllers():
                        ctrl.close("target shutting down")
                    for queue in list(self.connections):
                        queue.close("target shutting down")
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self.state.close()
            log.info("target stopped")

    def stop(self) -> None:
        """Stop gracefully: accept nothing more, let the commands being executed finish and
        send their completions (for at most ``drain_timeout`` seconds), then close every
        controller, connection and listener. Returns at once, accepting no connection and
        starting no command from then on; ``serve`` returns when done."""
        self._stop_accepting()
        self._stop_requested.set()

    def _stop_accepting(self) -> None:
        self._draining = True
        for port in list(self.state.ports.values()):
            self.close_listener(port)
        for queue in self.connections:
            queue.draining = True

    async def _drain(self) -> None:
        """Wait, bounded, until every connection has answered the commands it started. A
        command still running at the deadline is not answered: its connection closes, and the
        host retries it on another path or after reconnecting."""
        self._stop_accepting()  # again: stop() may have come before the ports were open
        queues = list(self.connections)
        executing = sum(queue.executing for queue in queues)
        log.info("draining %s commands connections=%s drain_timeout=%s", executing, len(queues),
                 self.drain_timeout)  # fmt: skip
        began = trio.current_time()
        with trio.move_on_after(self.drain_timeout):
            async with trio.open_nursery() as nursery:
                for queue in queues:
                    nursery.start_soon(queue.drain)
        left = sum(queue.executing for queue in queues if not queue.ended)
        if left:
            log.warning("drain timeout: %s commands still executing after %s s are not "
                        "answered; their connections close (the host retries them)", left,
                        self.drain_timeout)  # fmt: skip
        log.info("stopped after draining %s commands in %.3f s, closing %s connections",
                 max(0, executing - left), trio.current_time() - began, len(queues))  # fmt: skip

    # -- listeners -------------------------------------------------------------------------------

    async def open_listener(self, port: Port) -> None:
        """Bind ``port`` (again, on the same TCP port once it was bound) and accept on it."""
        assert self._nursery is not None, "the target is not serving"
        bind = port.bound_port if port.bound_port else port.port
        try:
            listeners = await trio.open_tcp_listeners(bind, host=port.addr)
        except OSError as err:
            raise ListenError(port, bind, err) from err
        port.bound_port = listeners[0].socket.getsockname()[1]
        scope = trio.CancelScope()
        self._listeners[port.id] = (scope, listeners)
        self._nursery.start_soon(self._accept_loop, port, listeners, scope)
        log.info("listening port=%s addr=%s:%s subsystems=%s", port.id, port.addr,
                 port.bound_port, ",".join(port.subsystems) or "-")  # fmt: skip

    def close_listener(self, port: Port) -> None:
        """Stop accepting on ``port``: new connections are refused by the kernel."""
        entry = self._listeners.pop(port.id, None)
        if entry is not None:
            scope, listeners = entry
            for listener in listeners:
                listener.socket.close()  # now, so the port can be bound again at once
            scope.cancel()

    def listening(self, port: Port) -> bool:
        return port.id in self._listeners

    async def _accept_loop(self, port: Port, listeners: list[trio.SocketListener],
                           scope: trio.CancelScope) -> None:  # fmt: skip
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    for listener in listeners:
                        nursery.start_soon(self._accept, port, listener)
        finally:
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await listener.aclose()

    async def _accept(self, port: Port, listener: trio.SocketListener) -> None:
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                return  # close_listener() closed it: the port is down
            except OSError as err:  # e.g. EMFILE: log, breathe, carry on (serve_listeners)
                log.error("accept failed port=%s: %s", port.id, str(err))
                await trio.sleep(0.1)
                continue
            assert self._nursery is not None
            self._nursery.start_soon(self._handle, port, stream)

    async def _handle(self, port: Port, stream: trio.SocketStream) -> None:
        if not port.enabled or self._draining:
            await stream.aclose()
            return
        served: trio.SocketStream | TlsStream = stream
        if port.tls is not None:
            from target.tls import secure_channel  # OpenSSL is loaded for TLS ports only

            secured = await secure_channel(self.state, port, stream)
            if secured is None:
                return
            served = secured
        assert self._nursery is not None
        queue = QueueConnection(self.state, port, served, self._nursery.start_soon)
        serial = next(self._connection_serial)
        if self.pcap_dir is not None:
            queue.capture = ConnectionCapture.open(self.pcap_dir, port.id, stream.socket, serial)
        if port.mode == "blackhole":
            queue.blackhole(True)
        self.connections.add(queue)
        try:
            await queue.run()
        except Exception:
            # A bug serving one connection must not take the others down with it.
            log.exception("connection failed peer=%s port=%s", queue.peer, port.id)
        finally:
            self.connections.discard(queue)


async def run_until_signalled(target: Target) -> None:
    """Serve ``target`` until SIGINT or SIGTERM, then stop gracefully (:meth:`Target.stop`)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(target.serve)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log_stop_signal(target, signum)
                target.stop()
                break


def log_stop_signal(target: Target, signum: int) -> None:
    log.info("signal %s: shutting down, draining %s connections (drain timeout %s s)",
             signal.Signals(signum).name, len(target.connections), target.drain_timeout)  # fmt: skip
