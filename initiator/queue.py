"""One host queue over TCP: the Trio adapter around :class:`~nvmeof.tcp.host.HostConnection`.

A single reader task feeds received bytes to the sans-IO connection and wakes the waiting
callers; sends go through one lock, several PDUs per send. Every wait is bounded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from nvmeof.constants import SQE_SIZE
from nvmeof.errors import NvmeofError, TransportError
from nvmeof.status import Status
from nvmeof.tcp.events import ConnectionEstablished, ResponseReceived, TermReqReceived
from nvmeof.tcp.host import HostConnection
from nvmeof.wire.fast import CID, CID_OFFSET

log = logging.getLogger("nvmeof.initiator")

ICRESP_TIMEOUT = 10.0  # what the Linux host allows


class QueueClosed(NvmeofError):
    """The queue's connection is gone; outstanding commands did not complete."""


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
    """A connected NVMe/TCP queue (admin when ``qid`` is 0).

    Create with :meth:`connect`; the reader task runs in the nursery passed there.
    """

    def __init__(self, stream: trio.SocketStream, *, qid: int, depth: int,
                 header_digest: bool = False, data_digest: bool = False) -> None:  # fmt: skip
        self.stream = stream
        self.qid = qid
        self.depth = depth
        self.conn = HostConnection(header_digest=header_digest, data_digest=data_digest)
        self.in_capsule_limit = 8192 if qid == 0 else 0
        self._waiters: dict[int, _Waiter] = {}
        self._free_cids = list(range(depth - 1, -1, -1))
        self._send_lock = trio.Lock()
        self._established = trio.Event()
        self._closed = False
        self.error: BaseException | None = None

    @classmethod
    async def connect(
        cls, nursery: trio.Nursery, host: str, port: int, *, qid: int, depth: int,
        header_digest: bool = False, data_digest: bool = False,
        timeout: float = ICRESP_TIMEOUT,  # noqa: ASYNC109 - a protocol timer (ICResp wait)
    ) -> HostQueue:  # fmt: skip
        """Open the TCP connection, exchange ICReq/ICResp and start the reader."""
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(host, port)
        queue = cls(stream, qid=qid, depth=depth, header_digest=header_digest,
                    data_digest=data_digest)  # fmt: skip
        nursery.start_soon(queue._reader)
        queue.conn.initiate()
        await queue._flush()
        try:
            with trio.fail_after(timeout):
                await queue._established.wait()
        except trio.TooSlowError:
            await queue.aclose()
            raise
        if queue.error is not None:
            raise QueueClosed(f"ICReq to {host}:{port} failed: {queue.error}")
        return queue

    @property
    def max_h2c_data(self) -> int:
        return self.conn.max_h2c_data

    async def submit(
        self, sqe: bytes | bytearray, *, write: bytes | bytearray | memoryview | None = None,
        read: bytearray | memoryview | None = None,
        timeout: float = 30.0,  # noqa: ASYNC109 - the per-command I/O timeout, like io_timeout
    ) -> Completion:  # fmt: skip
        """Send a 64-byte command (its CID is chosen here) and wait for its completion."""
        if self._closed:
            raise QueueClosed(f"queue {self.qid} is closed: {self.error}")
        if not self._free_cids:
            raise NvmeofError(f"queue {self.qid} is full")
        if len(sqe) != SQE_SIZE:
            raise ValueError("an SQE is 64 bytes")
        cid = self._free_cids.pop()
        command = bytearray(sqe)
        CID.pack_into(command, CID_OFFSET, cid)
        waiter = _Waiter()
        self._waiters[cid] = waiter
        try:
            self.conn.send_command(command, write_data=write, read_buffer=read,
                                   in_capsule_limit=self.in_capsule_limit)  # fmt: skip
            await self._flush()
            with trio.fail_after(timeout):
                await waiter.event.wait()
        except trio.TooSlowError:
            # Like the Linux host: a timed-out command means the queue is unusable.
            self._fail(QueueClosed(f"command timed out after {timeout} s"))
            await self.aclose()
            raise
        finally:
            self._waiters.pop(cid, None)
            if waiter.completion is not None:
                self._free_cids.append(cid)
        if waiter.completion is None:
            raise QueueClosed(f"queue {self.qid} closed with the command outstanding: "
                              f"{self.error}")  # fmt: skip
        return waiter.completion

    async def _flush(self) -> None:
        async with self._send_lock:
            buffers = self.conn.data_to_send()
            if buffers:
                try:
                    await self.stream.send_all(b"".join(buffers))
                except (trio.BrokenResourceError, trio.ClosedResourceError) as err:
                    self._fail(err)

    async def _reader(self) -> None:
        conn = self.conn
        try:
            while not self._closed:
                nbytes = await self.stream.socket.recv_into(conn.reader.get_buffer())
                if not nbytes:
                    raise QueueClosed("connection closed by the target")
                conn.reader.commit(nbytes)
                while (event := conn.next_event()) is not None:
                    if isinstance(event, ResponseReceived):
                        waiter = self._waiters.get(event.cid)
                        if waiter is not None:
                            waiter.completion = Completion(event.status, event.dw0, event.dw1)
                            waiter.event.set()
                    elif isinstance(event, ConnectionEstablished):
                        self._established.set()
                    elif isinstance(event, TermReqReceived):
                        raise QueueClosed(f"target sent C2HTermReq FES {event.fes:#x}")
                await self._flush()  # H2CData answering R2Ts
        except (QueueClosed, TransportError, OSError, trio.BrokenResourceError,
                trio.ClosedResourceError) as err:  # fmt: skip
            self._fail(err)
            await self._flush()  # an H2CTermReq, if the core queued one
        finally:
            await self.aclose()

    def _fail(self, err: BaseException) -> None:
        if self.error is None:
            self.error = err
        self._closed = True
        self._established.set()
        for waiter in self._waiters.values():
            waiter.event.set()

    async def aclose(self) -> None:
        """Close the connection; outstanding commands fail with :class:`QueueClosed`."""
        self._fail(QueueClosed("closed by the host"))
        with trio.CancelScope(shield=True):
            await self.stream.aclose()

    @property
    def closed(self) -> bool:
        return self._closed
