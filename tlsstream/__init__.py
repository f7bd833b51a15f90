"""TLS 1.3 PSK streams on Trio, for both wings: a :class:`nvmeof.tls.TlsEngine` over a
``trio.SocketStream`` (docs/TLS.md).

Shared by the target and the initiator (like ``logfmt``); imports only ``nvmeof`` and Trio. The
plaintext path never comes here: a connection without TLS keeps its ``trio.SocketStream``.

The wings' hot loops call ``stream.socket.recv_into(buffer)`` on plain streams; on a TLS stream
they call :meth:`TlsStream.receive_into`, which decrypts straight into their buffer. Sending
encrypts the whole of each ``send_all`` and hands the records to the socket in one write (a
write per record was 3x slower in the study, scripts/tls_study/trio_stream.py).
"""

from __future__ import annotations

from contextlib import suppress

import trio

from nvmeof.tls.engine import Lookup, TlsClosed, TlsEngine, TlsError
from nvmeof.tls.psk import TlsPsk

#: Ciphertext taken from the socket per receive: 16 records.
RECEIVE_SIZE = 1 << 18
#: What receive_some returns at most when not told.
DEFAULT_RECEIVE = 1 << 16
TLS_HANDSHAKE_RECORD = 0x16

__all__ = [
    "TlsStream",
    "client_handshake",
    "peek_is_tls",
    "server_handshake",
]


class TlsStream(trio.abc.Stream):
    """A TLS connection on a socket stream. One task may receive while another sends; two
    concurrent sends (or receives) are the caller's problem and raise BusyResourceError. TLS
    failures and transport failures both surface as ``trio.BrokenResourceError`` (the
    :class:`nvmeof.tls.TlsError` chained), the peer's close_notify or EOF as a 0-byte read."""

    #: How long aclose() and a failed handshake try to get the close_notify / alert out.
    close_timeout = 1.0

    def __init__(self, transport: trio.SocketStream, engine: TlsEngine) -> None:
        self.transport = transport
        self._engine = engine
        # Whoever holds it writes the engine's ciphertext to the socket, in the order the engine
        # produced it: a send and a receive (whose TLS bookkeeping may answer the peer) share it.
        self._write_lock = trio.Lock()
        self._incoming = bytearray(RECEIVE_SIZE)
        self._receiving = self._sending = False
        self._closed = self._eof = self._handshook = False

    @property
    def socket(self) -> trio.socket.SocketType:
        """The transport's socket (getpeername, SO_LINGER); never read or write it directly."""
        return self.transport.socket

    @property
    def cipher(self) -> str | None:
        return self._engine.cipher

    @property
    def version(self) -> str | None:
        return self._engine.version

    @property
    def peer_identity(self) -> bytes | None:
        """The PSK identity of the handshake (on a target: the one the host sent)."""
        return self._engine.peer_identity

    # --- moving ciphertext -----------------------------------------------------------------

    async def _flush(self) -> bool:
        """Write out all ciphertext the engine holds; False if there was none."""
        lock = self._write_lock
        try:
            lock.acquire_nowait()  # the common case costs no trip through the scheduler
        except trio.WouldBlock:
            await lock.acquire()
        sent = False
        try:
            while data := self._engine.bytes_to_send():  # again: the other task may add some
                await self.transport.send_all(data)
                sent = True
        finally:
            lock.release()
        return sent

    async def _flush_if_idle(self) -> None:
        """A receive's answer to the peer (a KeyUpdate): never wait behind a blocked send, which
        takes these bytes along since it loops until the engine is empty."""
        if not self._write_lock.locked():
            await self._flush()

    async def _receive_ciphertext(self) -> bool:
        """Feed the engine what the socket has; False at EOF."""
        if self._closed:
            raise trio.ClosedResourceError("the TLS stream was closed")
        try:
            n = await self.transport.socket.recv_into(self._incoming)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise
        except OSError as exc:
            raise trio.BrokenResourceError(f"TLS transport: {exc}") from exc
        if not n:
            self._eof = True
            return False
        self._engine.receive_bytes(memoryview(self._incoming)[:n])
        return True

    async def _send_alert(self) -> None:
        with trio.move_on_after(self.close_timeout), suppress(trio.BrokenResourceError,
                                                              trio.ClosedResourceError):  # fmt: skip
            await self._flush_if_idle()

    # --- trio.abc.Stream -------------------------------------------------------------------

    async def do_handshake(self) -> None:
        """Run the TLS handshake (callers bound it with a timeout). A refused or failed
        handshake raises ``trio.BrokenResourceError`` saying why, after the alert is sent."""
        if self._handshook:
            await trio.lowlevel.checkpoint()
            return
        while True:
            try:
                done = self._engine.handshake()
            except TlsError as exc:
                await self._send_alert()
                raise trio.BrokenResourceError(str(exc)) from exc
            await self._flush()
            if done:
                self._handshook = True
                await trio.lowlevel.checkpoint()
                return
            if not await self._receive_ciphertext():
                raise trio.BrokenResourceError(
                    "the peer closed the connection in the TLS handshake"
                )

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the TLS stream was closed")
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this TLS stream")
        self._sending = True
        try:
            try:
                self._engine.write(data)
            except TlsError as exc:
                raise trio.BrokenResourceError(f"TLS: {exc}") from exc
            if not await self._flush():
                await trio.lowlevel.checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def receive_into(self, buffer: bytearray | memoryview) -> int:
        """Decrypt into ``buffer`` what has arrived (at least one byte, waiting for it if need
        be); 0 when the peer has closed (close_notify or EOF)."""
        if self._closed:
            raise trio.ClosedResourceError("the TLS stream was closed")
        if not len(buffer):
            raise ValueError("receive_into needs a buffer of at least one byte")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this TLS stream")
        self._receiving = True
        waited = False  # a socket receive is a checkpoint: one per call is what Trio asks
        try:
            while True:
                try:
                    n = self._engine.read_into(buffer)
                except TlsClosed:
                    n = 0
                    self._eof = True
                except TlsError as exc:
                    await self._send_alert()
                    raise trio.BrokenResourceError(f"TLS: {exc}") from exc
                if n or self._eof:
                    if not waited:
                        await trio.lowlevel.checkpoint()
                    return n
                await self._flush_if_idle()
                await self._receive_ciphertext()
                waited = True
        finally:
            self._receiving = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        size = DEFAULT_RECEIVE if max_bytes is None else max_bytes
        if size < 1:
            raise ValueError("max_bytes must be at least 1")
        buffer = bytearray(size)
        n = await self.receive_into(buffer)
        return bytes(memoryview(buffer)[:n])

    async def aclose(self) -> None:
        """Send close_notify (best effort, at most ``close_timeout``), close the socket."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            self._engine.close()
            await self._send_alert()
        finally:
            await self.transport.aclose()


async def client_handshake(stream: trio.SocketStream, psk: TlsPsk) -> TlsStream:
    """The host's side: TLS over ``stream`` with ``psk``. On any failure (or cancellation)
    ``stream`` is closed and the error raised (``TlsUnavailable`` without the extra)."""
    try:
        tls = TlsStream(stream, TlsEngine.client(psk))
        await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return tls


async def server_handshake(stream: trio.SocketStream, lookup: Lookup, *,
                           r02_any_suite: bool = True) -> TlsStream:  # fmt: skip
    """The target's side: ``lookup(identity)`` gives the PSK of a host's identity or None
    (``r02_any_suite``: :meth:`nvmeof.tls.TlsEngine.server`). On any failure (or cancellation)
    ``stream`` is closed and the error raised."""
    try:
        tls = TlsStream(stream, TlsEngine.server(lookup, r02_any_suite=r02_any_suite))
        await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return tls


async def peek_is_tls(stream: trio.SocketStream) -> bool | None:
    """Does the connection start with a TLS handshake record (0x16)? Reads nothing away
    (MSG_PEEK, as nvmet_tcp_try_peek_pdu): False for anything else (a plaintext ICReq starts
    with 0x00), None if the peer closed without sending. Waits for the first byte: callers
    bound it with a timeout."""
    try:
        first = await stream.socket.recv(1, trio.socket.MSG_PEEK)
    except ConnectionResetError:
        return None
    except OSError as exc:
        raise trio.BrokenResourceError(f"peek: {exc}") from exc
    if not first:
        return None
    return first[0] == TLS_HANDSHAKE_RECORD
