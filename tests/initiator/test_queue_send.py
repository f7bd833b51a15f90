"""HostQueue._flush over plain TCP: one immediate ``send``, the stream's send_all for whatever the
socket did not take, in order; failures as trio's SocketStream reports them."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from initiator.queue import HOST_ABORTED, HostQueue, PeerClosed
from nvmeof.constants import PduType
from nvmeof.tcp.events import ConnectionEstablished
from nvmeof.tcp.host import HostConnection
from tests.pairs import build_pdu, cqe_psh, icresp, join, sqe

BIG = 4 << 20  # far more than a socket buffer holds


def established_queue(sock: trio.socket.SocketType) -> HostQueue:
    queue = HostQueue(trio.SocketStream(sock), qid=1, depth=4)
    conn = queue.conn
    conn.initiate()
    conn.data_to_send()
    conn.receive_data(icresp())
    assert isinstance(conn.next_event(), ConnectionEstablished)
    return queue


def queue_commands(conn: HostConnection, data: bytes) -> None:
    conn.send_command(sqe(0x01, 1, nsid=1), write_data=data, in_capsule_limit=BIG)
    conn.send_command(sqe(0x00, 2, nsid=1))


async def test_a_flush_larger_than_the_socket_takes_arrives_whole_and_in_order() -> None:
    a, b = trio.socket.socketpair()
    queue = established_queue(a)
    data = bytes(range(256)) * (BIG // 256)
    reference = established_queue(trio.socket.socket())  # never sends: only builds the bytes
    queue_commands(reference.conn, data)
    expected = join(reference.conn.data_to_send())
    queue_commands(queue.conn, data)
    taken: list[int] = []
    send_now = queue._send_now

    def recording_send_now(data: bytes) -> int:
        taken.append(send_now(data))
        return taken[-1]

    queue._send_now = recording_send_now  # type: ignore[method-assign]
    received = bytearray()

    async def read_all() -> None:
        while len(received) < len(expected):
            received.extend(await b.recv(1 << 20))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await queue._flush()
    assert bytes(received) == expected
    assert len(taken) == 1 and 0 < taken[0] < len(expected)  # the rest went by send_all
    assert queue.error is None
    await queue.aclose()
    await reference.aclose()
    b.close()


async def test_a_send_to_a_reset_connection_fails_the_queue_like_trio() -> None:
    a, b = trio.socket.socketpair()
    queue = established_queue(a)
    b.close()
    queue.conn.send_command(sqe(0x00, 1, nsid=1))
    await queue._flush()
    assert queue.closed
    assert isinstance(queue.error, trio.BrokenResourceError)  # what SocketStream.send_all raises
    assert isinstance(queue.error.__cause__, OSError)
    await queue.aclose()


async def test_a_closed_queue_leaves_the_descriptor_alone() -> None:
    """After aclose the descriptor number may be another socket's: nothing writes to it or
    reads from it any more."""
    a, b = trio.socket.socketpair()
    queue = established_queue(a)
    await queue.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await queue.stream.send_all(b"x")
    assert await b.recv(16) == b""  # the peer sees the connection end
    other, peer = socket.socketpair()  # likely on the number the queue's socket had
    assert queue.send_slot(_Slot(sqe(0x02, 0, nsid=1))) is False
    queue.doorbell()
    assert queue._send_now(b"x" * 8) == 0
    with pytest.raises(trio.ClosedResourceError):
        await queue._receive_into(memoryview(bytearray(8)))
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(1)  # nothing reached the socket that took the number
    other.close()
    peer.close()
    b.close()


async def test_closing_the_queue_ends_a_reader_waiting_for_data() -> None:
    """The reader waits on the descriptor itself: aclose from another task must wake it (as
    the stream's own close would), or the queue's tasks never end."""
    a, b = trio.socket.socketpair()
    queue = established_queue(a)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue._reader)
            await trio.testing.wait_all_tasks_blocked()
            await queue.aclose()
    assert queue.closed
    b.close()


async def test_the_reader_takes_what_arrives_and_sees_the_end() -> None:
    a, b = trio.socket.socketpair()
    queue = established_queue(a)
    queue.conn.send_command(sqe(0x00, 1, nsid=1))
    queue.conn.data_to_send()  # as if sent: the reader would send what is still queued
    completed: list[tuple[int, int]] = []
    queue.on_slot_complete = lambda ctx, status, dw0, dw1: completed.append((status, dw0))
    queue._contexts[1] = object()  # a ring slot's place
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue._reader)
            resp = build_pdu(PduType.CAPSULE_RESP, cqe_psh(1, 0, dw0=0x55))
            for i in range(len(resp)):  # a byte at a time: every receive is a partial PDU
                await b.send(resp[i : i + 1])
                await trio.testing.wait_all_tasks_blocked()
            assert completed == [(0, 0x55)]
            b.close()  # EOF
    assert isinstance(queue.error, PeerClosed)


class _Slot:
    """The part of a ring slot a queue needs (initiator.queue.QueuedSlot)."""

    def __init__(self, command: bytes, data_out: bytes | None = None) -> None:
        self.view = memoryview(bytearray(command))
        self.data_out = memoryview(data_out) if data_out is not None else None
        self.data_in: memoryview | None = None
        self.cid = -1
        self.sent_at = 0.0


async def test_the_doorbell_sends_from_the_submitting_task() -> None:
    """send_slot only queues; the doorbell sends the batch at once, with no checkpoint and no
    writer task: the peer can read every command before this task yields."""
    a, b = socket.socketpair()
    queue = established_queue(trio.socket.from_stdlib_socket(a))
    slots = [_Slot(sqe(0x02, 0, nsid=1)) for _ in range(3)]
    for slot in slots:
        assert queue.send_slot(slot)
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(1)  # nothing before the doorbell
    queue.doorbell()
    received = b.recv(1 << 16)
    assert len(received) == 3 * (8 + 64) and not queue._dirty  # the writer was not woken
    assert sorted(slot.cid for slot in slots) == [0, 1, 2]
    await queue.aclose()
    b.close()


async def test_what_the_doorbell_could_not_send_goes_first_and_in_order() -> None:
    a, b = trio.socket.socketpair()
    queue = established_queue(a)
    data = bytes(range(256)) * (BIG // 256)
    reference = established_queue(trio.socket.socket())  # never sends: only builds the bytes
    first, second = _Slot(sqe(0x01, 0, nsid=1), data), _Slot(sqe(0x00, 0, nsid=1))
    reference.conn.send_command(first.view, write_data=first.data_out, in_capsule_limit=BIG, cid=0)
    reference.conn.send_command(second.view, cid=1)
    expected = join(reference.conn.data_to_send())
    queue.in_capsule_limit = BIG
    assert queue.send_slot(first)
    queue.doorbell()  # the socket takes part of it: the writer sends the rest
    assert queue._unsent is not None and queue._dirty
    assert queue.send_slot(second)
    queue.doorbell()  # behind the rest: through the writer too, after it
    received = bytearray()

    async def read_all(cancel_scope: trio.CancelScope) -> None:
        while len(received) < len(expected):
            received.extend(await b.recv(1 << 20))
        cancel_scope.cancel()  # the writer's too

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all, nursery.cancel_scope)
            nursery.start_soon(queue._writer)
    assert bytes(received) == expected
    assert queue.error is None
    await queue.aclose()
    await reference.aclose()
    b.close()


async def test_a_doorbell_on_a_reset_connection_fails_the_queue_like_trio() -> None:
    a, b = trio.socket.socketpair()
    queue = established_queue(a)
    completed: list[int] = []
    queue.on_slot_complete = lambda ctx, status, dw0, dw1: completed.append(status)
    b.close()
    assert queue.send_slot(_Slot(sqe(0x02, 0, nsid=1)))
    queue.doorbell()
    assert queue.closed
    assert isinstance(queue.error, trio.BrokenResourceError)
    assert completed == [HOST_ABORTED]  # the slot completes as aborted, for failover
    await queue.aclose()
