"""One host queue over TCP: the Trio adapter around :class:`~nvmeof.tcp.host.HostConnection`.

Two tasks per queue, in the caller's nursery: a reader that feeds received bytes to the sans-IO
connection and completes commands inline (a whole receive batch per wake-up, through
:meth:`~nvmeof.tcp.host.HostConnection.next_completion`), and a writer that sends everything
queued since it last ran at once. Over plain TCP both use the socket's descriptor directly
(``readv``/``write`` with trio's checkpoints, without its per-call layers: tlsstream.direct); TLS
goes through the stream. Commands come from two places:
:meth:`HostQueue.submit` (one awaiting caller per command, for admin work) and
:meth:`HostQueue.send_slot` (ring slots, completed through a callback: no task, no event, no
allocation per I/O), which only queues: :meth:`HostQueue.doorbell`, rung once per batch, sends
from the submitting task itself when the socket takes it all, and leaves the writer the rest.
When the connection dies, every outstanding command completes with the host-synthesized
status Host Aborted Command (0x371), as the Linux host does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import trio

from initiator.tls import PLAIN_REFUSED_HINT, client_handshake
from nvmeof.constants import SQE_SIZE
from nvmeof.errors import LocalProtocolError, NvmeofError, TransportError
from nvmeof.status import Status, StatusCode, status_word
from nvmeof.tcp.events import ConnectionEstablished, ResponseReceived, TermReqReceived
from nvmeof.tcp.host import HostConnection
from tlsstream.direct import receive_into, send_now

if TYPE_CHECKING:
    from nvmeof.tls.psk import TlsPsk
    from tlsstream import TlsStream

log = logging.getLogger("nvmeof.initiator")

ICRESP_TIMEOUT = 10.0  # what the Linux host allows
#: Status given to commands outstanding on a queue that died (``nvme_cancel_request``).
HOST_ABORTED = status_word(StatusCode.HOST_ABORTED_CMD)


class QueuedSlot(Protocol):
    """What a queue needs of a ring slot (:class:`initiator.ring.Slot`, which sits above this
    module): the stable command copy and buffers to send, and where to note the command ID."""

    view: memoryview
    data_out: memoryview | None
    data_in: memoryview | None
    cid: int
    sent_at: float


#: Called as ``(slot, status_word, dw0, dw1)`` with the very object given to ``send_slot``
#: (the queue keeps it untyped among its command contexts).
SlotCallback = Callable[[Any, int, int, int], None]


class QueueClosed(NvmeofError):
    """The queue's connection is gone; outstanding commands did not complete."""


class PeerClosed(QueueClosed):
    """The target ended the connection (EOF or a C2HTermReq): it knows the queue is gone."""


class _PeerEof(PeerClosed):
    """The target closed the TCP connection (no C2HTermReq)."""


#: How a target ends a connection it will not serve at all (nvmet: a plaintext ICReq to a port
#: that requires TLS is closed, or reset when bytes are left unread).
_CLOSED_BY_PEER = (_PeerEof, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True, slots=True)
class Completion:
    """A completed command: CQE status word and result dwords."""

    status_word: int
    dw0: int = 0
    dw1: int = 0

    @property
    def status(self) -> Status:
        return Status.from_word(self.status_word)

    @property
    def ok(self) -> bool:
        return self.status_word & 0xFFFE == 0


class _Waiter:
    __slots__ = ("completion", "event")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.completion: Completion | None = None


class HostQueue:
    """A connected NVMe/TCP queue (admin when ``qid`` is 0). Create with :meth:`connect`.

    Attributes:
        on_slot_complete: called as ``(slot, status_word, dw0, dw1)`` for ring slots.
        on_close: called once with the error when the connection is lost.
    """

    def __init__(self, stream: trio.SocketStream | TlsStream, *, qid: int, depth: int,
                 header_digest: bool = False, data_digest: bool = False) -> None:  # fmt: skip
        self.stream = stream
        #: Reads into a buffer, returns the byte count (0 at EOF): the socket's own
        #: ``recv_into`` for plain TCP, the TLS stream's decrypting one otherwise.
        self._recv_into: Callable[[memoryview], Awaitable[int]]
        #: Plain TCP: the stream doorbell and _flush write to at once and _receive_into reads
        #: from, through its descriptor (tlsstream.direct). Used only while the queue is open:
        #: the stream's close, in aclose, comes after.
        self._plain: trio.SocketStream | None = None
        if isinstance(stream, trio.SocketStream):
            self._plain = stream
            self._recv_into = self._receive_into
            self.tls_cipher: str | None = None
        else:
            self._recv_into = stream.receive_into
            self.tls_cipher = stream.cipher
        self.qid = qid
        self.depth = depth
        self.conn = HostConnection(header_digest=header_digest, data_digest=data_digest)
        self.in_capsule_limit = 8192 if qid == 0 else 0
        self._contexts: list[Any] = [None] * depth
        self._free_cids = list(range(depth - 1, -1, -1))
        self._send_lock = trio.Lock()
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._dirty = False
        #: What a :meth:`doorbell` send left over, for the writer to send before anything else.
        self._unsent: memoryview | None = None
        #: Commands went in by :meth:`send_slot` since the last :meth:`doorbell` (the head
        #: keeps the list of queues to ring).
        self.bell_pending = False
        self._established = trio.Event()
        self._closed = False
        self.error: BaseException | None = None
        self.on_slot_complete: SlotCallback | None = None
        self.on_close: Callable[[BaseException], None] | None = None
        self.commands = 0
        try:  # the run's clock itself: trio.current_time() is four calls deep
            self._now: Callable[[], float] = trio.lowlevel.current_clock().current_time
        except RuntimeError:  # made outside a Trio run (tests)
            self._now = trio.current_time

    @classmethod
    async def connect(
        cls, nursery: trio.Nursery, host: str, port: int, *, qid: int, depth: int,
        header_digest: bool = False, data_digest: bool = False,
        timeout: float = ICRESP_TIMEOUT,  # noqa: ASYNC109 - a protocol timer (ICResp wait)
        tls: TlsPsk | None = None,
    ) -> HostQueue:  # fmt: skip
        """Open the TCP connection, do the TLS handshake when ``tls`` gives a PSK (raises
        :class:`~initiator.tls.TlsHandshakeError`), exchange ICReq/ICResp and start the
        reader and writer. Each step is bounded by ``timeout``."""
        with trio.fail_after(timeout):
            tcp = await trio.open_tcp_stream(host, port)
        stream: trio.SocketStream | TlsStream = tcp
        if tls is not None:
            stream = await client_handshake(tcp, tls, f"{host}:{port}", timeout)
            log.debug("qid %d %s:%s: tls %s", qid, host, port, stream.cipher)
        queue = cls(stream, qid=qid, depth=depth, header_digest=header_digest,
                    data_digest=data_digest)  # fmt: skip
        nursery.start_soon(queue._reader)
        nursery.start_soon(queue._writer)
        queue.conn.initiate()
        await queue._flush()
        try:
            with trio.fail_after(timeout):
                await queue._established.wait()
        except trio.TooSlowError:
            await queue.aclose()
            raise
        if queue.error is not None:
            hint = ""
            if tls is None and isinstance(queue.error, _CLOSED_BY_PEER):
                hint = f"; {PLAIN_REFUSED_HINT}"  # nvmet closes a plaintext ICReq so
            raise QueueClosed(f"ICReq to {host}:{port} failed: {queue.error}{hint}")
        return queue

    @property
    def max_h2c_data(self) -> int:
        return self.conn.max_h2c_data

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def free_tags(self) -> int:
        return len(self._free_cids)

    @property
    def outstanding(self) -> int:
        return self.depth - len(self._free_cids)

    def oldest_slot_sent_at(self) -> float:
        """When the oldest ring slot still outstanding here was sent (inf if none)."""
        times = [c.sent_at for c in self._contexts if c is not None and type(c) is not _Waiter]
        return min(times, default=float("inf"))

    # -- ring slots ------------------------------------------------------------------------------

    def send_slot(self, slot: QueuedSlot) -> bool:
        """Queue ``slot``'s command (its stable 64-byte copy) for sending; False when the queue
        is closed or has no free command ID. Nothing goes out before :meth:`doorbell`."""
        if self._closed or not self._free_cids:
            return False
        cid = self._free_cids.pop()
        try:
            self.conn.send_command(slot.view, write_data=slot.data_out, read_buffer=slot.data_in,
                                   in_capsule_limit=self.in_capsule_limit, cid=cid)  # fmt: skip
        except LocalProtocolError:
            self._free_cids.append(cid)
            return False
        self._contexts[cid] = slot
        slot.cid = cid
        slot.sent_at = self._now()
        self.commands += 1
        return True

    def doorbell(self) -> None:
        """Send the commands :meth:`send_slot` queued, as one write of an NVMe doorbell after a
        batch of SQEs: from the submitting task, in one non-blocking ``send``, when no flush is
        under way and the socket takes it all (the usual case); through the writer task
        otherwise. Sending here saves the writer's wake-up, a pass of trio's run loop, per
        submission batch."""
        self.bell_pending = False
        if self._closed:
            return
        plain = self._plain
        if plain is None or self._unsent is not None or self._send_lock.locked():
            self._wake_writer()  # TLS, or behind bytes a flush has yet to send
            return
        buffers = self.conn.data_to_send()
        if not buffers:
            return
        data = b"".join(buffers)  # a copy: capsule buffers are reused once sent
        try:
            sent = send_now(plain, data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as err:
            self._fail(err)
            return
        if sent < len(data):
            self._unsent = memoryview(data)[sent:]
            self._wake_writer()

    # -- awaited commands ------------------------------------------------------------------------

    async def submit(
        self, sqe: bytes | bytearray, *, write: bytes | bytearray | memoryview | None = None,
        read: bytearray | memoryview | None = None,
        timeout: float = 30.0,  # noqa: ASYNC109 - the per-command I/O timeout, like io_timeout
    ) -> Completion:  # fmt: skip
        """Send a 64-byte command (its CID is chosen here) and wait for its completion.

        A command that times out makes the queue unusable (closed), like the Linux host's
        error recovery; ``timeout=inf`` suits an Asynchronous Event Request.
        """
        if self._closed:
            raise QueueClosed(f"queue {self.qid} is closed: {self.error}")
        if not self._free_cids:
            raise NvmeofError(f"queue {self.qid} is full")
        if len(sqe) != SQE_SIZE:
            raise ValueError("an SQE is 64 bytes")
        cid = self._free_cids.pop()
        waiter = _Waiter()
        self._contexts[cid] = waiter
        self.conn.send_command(sqe, write_data=write, read_buffer=read,
                               in_capsule_limit=self.in_capsule_limit, cid=cid)  # fmt: skip
        self.commands += 1
        try:
            await self._flush()
            with trio.fail_after(timeout):
                await waiter.event.wait()
        except trio.TooSlowError:
            self._fail(QueueClosed(f"command timed out after {timeout} s"))
            await self.aclose()
            raise
        if waiter.completion is None:
            raise QueueClosed(f"queue {self.qid} closed with the command outstanding: "
                              f"{self.error}")  # fmt: skip
        return waiter.completion

    # -- tasks -----------------------------------------------------------------------------------

    def _wake_writer(self) -> None:
        if not self._dirty:
            self._dirty = True
            self._writer_lot.unpark()

    async def _writer(self) -> None:
        while not self._closed:
            if not self._dirty:
                await self._writer_lot.park()
                continue
            self._dirty = False
            await self._flush()

    async def _flush(self) -> None:
        """Send everything the connection queued. Plain TCP: in one ``send`` straight away when
        the socket takes it all (the usual case); the stream's send_all only for what is left.
        Through the lock and send_all, trio yields to the scheduler twice per flush, with
        nothing to wait for: each costs a pass of the run loop."""
        lock = self._send_lock
        try:
            lock.acquire_nowait()  # free: taken without a checkpoint
        except trio.WouldBlock:
            await lock.acquire()  # another flush is sending: after it, in order
        try:
            buffers = self.conn.data_to_send()
            unsent = self._unsent
            if unsent is not None:  # first what a doorbell's send left
                self._unsent = None
                buffers = [unsent, *buffers]
            if buffers:
                data = b"".join(buffers)
                try:
                    sent = self._send_now(data)
                    if sent < len(data):
                        await self.stream.send_all(memoryview(data)[sent:])
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as err:
                    self._fail(err)
        finally:
            lock.release()

    def _send_now(self, data: bytes) -> int:
        """How much of ``data`` one non-blocking ``send`` took (0 for TLS or a full socket).
        Errors become what trio's SocketStream.send_all raises for them."""
        plain = self._plain
        if plain is None or self._closed:
            return 0
        return send_now(plain, data)

    async def _receive_into(self, buffer: memoryview) -> int:
        """tlsstream.direct's receive (trio's ``socket.recv_into`` and its checkpoints, without
        its layers), once per receive batch, and only while the queue is open."""
        if self._closed:  # the descriptor may be closed, its number another socket's
            await trio.lowlevel.checkpoint()
            raise trio.ClosedResourceError("the queue is closed")
        assert self._plain is not None  # plain TCP only
        return await receive_into(self._plain, buffer)

    async def _reader(self) -> None:
        conn = self.conn
        reader = conn.reader
        contexts = self._contexts
        free = self._free_cids
        recv_into = self._recv_into
        next_completion = conn.next_completion
        try:
            while not self._closed:
                nbytes = await recv_into(reader.get_buffer())
                if not nbytes:
                    raise _PeerEof("connection closed by the target")
                reader.commit(nbytes)
                while (event := next_completion()) is not None:
                    if type(event) is ResponseReceived:  # the one object, refilled
                        cid = event.cid
                        ctx = contexts[cid]
                        contexts[cid] = None
                        free.append(cid)
                        if type(ctx) is _Waiter:
                            self._complete(ctx, event.status, event.dw0, event.dw1)
                        elif ctx is not None and self.on_slot_complete is not None:
                            # a ring slot: straight to its head (_complete, inlined)
                            self.on_slot_complete(ctx, event.status, event.dw0, event.dw1)
                    elif isinstance(event, ConnectionEstablished):
                        self._established.set()
                    elif isinstance(event, TermReqReceived):
                        raise PeerClosed(f"target sent C2HTermReq FES {event.fes:#x}")
                if conn.has_output:  # H2CData answering R2Ts: sent from here, as a doorbell
                    self.doorbell()
        except (QueueClosed, TransportError, OSError, trio.BrokenResourceError,
                trio.ClosedResourceError) as err:  # fmt: skip
            self._fail(err)
            await self._flush()  # an H2CTermReq, if the core queued one
        finally:
            await self.aclose()

    def _complete(self, ctx: Any, status: int, dw0: int, dw1: int) -> None:
        if type(ctx) is _Waiter:
            ctx.completion = Completion(status, dw0, dw1)
            ctx.event.set()
        elif ctx is not None and self.on_slot_complete is not None:
            self.on_slot_complete(ctx, status, dw0, dw1)

    def _fail(self, err: BaseException) -> None:
        if self._closed:
            return
        self.error = err
        self._closed = True
        self._established.set()
        self._writer_lot.unpark_all()
        self.conn.abort_all()
        if self.on_close is not None:
            self.on_close(err)  # first, so aborted commands see the path as gone
        outstanding = [(cid, ctx) for cid, ctx in enumerate(self._contexts) if ctx is not None]
        for cid, _ in outstanding:
            self._contexts[cid] = None
            self._free_cids.append(cid)
        for _, ctx in outstanding:
            if type(ctx) is _Waiter:
                ctx.event.set()  # completion stays None: the submitter raises QueueClosed
            else:
                self._complete(ctx, HOST_ABORTED, 0, 0)

    async def aclose(self) -> None:
        """Close the connection; outstanding commands complete as aborted."""
        self._fail(QueueClosed("closed by the host"))
        # The stream's close wakes a reader waiting on the descriptor (trio's notify_closing)
        # and ends the connection; nothing uses the descriptor after it (_closed is set).
        with trio.CancelScope(shield=True):
            await self.stream.aclose()
