"""tlsstream.direct: plain TCP through a SocketStream's descriptor, as trio's own calls behave."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tlsstream import direct


async def test_receive_into_reads_what_arrived_and_sees_the_end() -> None:
    a, b = trio.socket.socketpair()
    stream = trio.SocketStream(a)
    buffer = memoryview(bytearray(16))
    await b.send(b"hello")
    assert await direct.receive_into(stream, buffer) == 5 and bytes(buffer[:5]) == b"hello"
    b.close()
    assert await direct.receive_into(stream, buffer) == 0  # EOF
    await stream.aclose()


async def test_a_waiting_receive_wakes_on_data_and_on_the_streams_close() -> None:
    a, b = trio.socket.socketpair()
    stream = trio.SocketStream(a)
    buffer = memoryview(bytearray(16))
    got: list[int] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: _receive(stream, buffer, got))
            await trio.testing.wait_all_tasks_blocked()
            await b.send(b"x")
        assert got == [1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: _receive(stream, buffer, got))
            await trio.testing.wait_all_tasks_blocked()
            await stream.aclose()  # trio's notify_closing wakes the waiter
    assert got == [1, -1]
    b.close()


async def _receive(stream: trio.SocketStream, buffer: memoryview, got: list[int]) -> None:
    try:
        got.append(await direct.receive_into(stream, buffer))
    except trio.ClosedResourceError:
        got.append(-1)


async def test_a_closed_stream_gives_ebadf_not_another_sockets_data() -> None:
    a, b = trio.socket.socketpair()
    stream = trio.SocketStream(a)
    await stream.aclose()
    with pytest.raises(OSError, match="Bad file descriptor"):
        await direct.receive_into(stream, memoryview(bytearray(8)))
    with pytest.raises(trio.ClosedResourceError):
        direct.send_now(stream, b"x")
    b.close()


async def test_send_now_takes_what_the_socket_takes_and_fails_like_trio() -> None:
    a, b = trio.socket.socketpair()
    stream = trio.SocketStream(a)
    big = bytes(8 << 20)
    sent = direct.send_now(stream, big)
    assert 0 < sent < len(big)  # the rest is for send_all
    assert direct.send_now(stream, big) == 0  # full: nothing, no error
    b.close()  # with unread data: the peer resets
    with pytest.raises(trio.BrokenResourceError):
        direct.send_now(stream, b"x")
    await stream.aclose()
