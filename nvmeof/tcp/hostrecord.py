"""What a host connection (:class:`nvmeof.tcp.host.HostConnection`) keeps: its state, and per
outstanding command its data buffers, transfer progress and the buffer its capsule is built in,
reused from one command to the next."""

from __future__ import annotations

from enum import Enum


class HostState(Enum):
    IDLE = "idle"
    AWAIT_ICRESP = "await-icresp"
    ESTABLISHED = "established"
    TERMINATED = "terminated"


class CommandRecord:
    """Data bookkeeping of one outstanding command, and the buffer its capsule is built in.

    Records are reused (the connection keeps a pool of them): one per outstanding command, so
    a queue of fixed depth allocates nothing per command once its records exist."""

    __slots__ = ("capsule", "digest_ok", "flush", "read", "received", "sent", "write")

    def __init__(self, capsule_size: int) -> None:
        self.capsule = bytearray(capsule_size)  # CH + SQE (+ header digest)
        self.flush = -1  # the data_to_send() call that will hand the capsule out
        self.write: memoryview | None = None
        self.read: memoryview | None = None
        self.sent = 0  # write bytes already sent (in-capsule or by H2CData)
        self.received = 0  # read bytes received
        self.digest_ok = True


def bytes_view(buffer: bytes | bytearray | memoryview) -> memoryview:
    """A flat byte view of ``buffer`` (no new view when it already is one: the common case)."""
    if type(buffer) is memoryview and buffer.format == "B" and buffer.c_contiguous:
        return buffer
    return memoryview(buffer).cast("B")
