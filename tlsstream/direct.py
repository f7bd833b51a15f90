"""Plain TCP through a ``trio.SocketStream``'s own descriptor, for the data paths of both wings.

trio's ``socket.recv_into`` and ``SocketStream.send_all`` wrap each call in about five layers of
coroutines and context managers, and ``send_all`` yields to the scheduler even when the socket
took everything at once: a pass of the run loop per flush. These do the same system calls
(``readv`` and ``write`` on the descriptor: ``recv_into`` and ``send`` without flags) with the
checkpoints trio makes, and nothing more. The descriptor is read from the stream at each call,
so a closed stream gives EBADF, never another socket's data.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio


def receiver(stream: Any) -> Callable[[memoryview], Awaitable[int]]:
    """The receive a data path uses for ``stream``: :func:`receive_into` on plain TCP, the TLS
    stream's decrypting ``receive_into`` on TLS (tlsstream.TlsStream), the socket's
    ``recv_into`` for anything else (the test harnesses' streams)."""
    if isinstance(stream, trio.SocketStream):
        return partial(receive_into, stream)
    receive: Callable[[memoryview], Awaitable[int]] | None = getattr(stream, "receive_into", None)
    return receive if receive is not None else stream.socket.recv_into


async def receive_into(stream: trio.SocketStream, buffer: memoryview) -> int:
    """``stream.socket.recv_into(buffer)``: the byte count, 0 at EOF. Checkpoints as trio's: one
    if cancelled before, one after a receive that did not have to wait; ``wait_readable``
    otherwise (trio's close wakes it with ClosedResourceError)."""
    await trio.lowlevel.checkpoint_if_cancelled()
    fd = stream.socket.fileno()
    try:
        nbytes = os.readv(fd, (buffer,))
    except BlockingIOError:
        while True:
            await trio.lowlevel.wait_readable(fd)
            try:
                return os.readv(fd, (buffer,))
            except BlockingIOError:
                pass
    await trio.lowlevel.cancel_shielded_checkpoint()
    return nbytes


def send_now(stream: trio.SocketStream, data: bytes | memoryview) -> int:
    """How much of ``data`` one non-blocking send took (0 when the socket is full). Errors are
    raised as trio's SocketStream raises them (BrokenResourceError, ClosedResourceError)."""
    try:
        return os.write(stream.socket.fileno(), data)
    except BlockingIOError:
        return 0
    except OSError as exc:
        raise stream_error(exc) from exc


def stream_error(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    """What trio's SocketStream raises for a socket error (its
    ``_translate_socket_errors_to_stream_errors``), so callers see the same kinds."""
    if exc.errno in (errno.EBADF, errno.ENOTSOCK):
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")
