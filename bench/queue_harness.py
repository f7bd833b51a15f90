"""A target's I/O queue driven without sockets or Trio: bytes in, bytes out, synchronously.

Two users: ``bench/datapath.py`` (CPU per command of the target's data path, the general path
against the plain I/O short cut, in the same run) and ``tests/target/test_plain_io.py`` (both
paths give the same bytes). :func:`io_queue` builds a target with a RAM namespace and brings an
admin queue and an I/O queue up through the general path (ICReq, Connect, CC.EN, Connect);
:func:`serve_batch` serves one receive batch the way ``QueueConnection._receive_and_serve``
does, without its awaits (the flush is the caller's: the returned bytes).
"""

from __future__ import annotations

from nvmeof.constants import FabricsType
from nvmeof.errors import TransportError
from nvmeof.tcp.host import HostConnection
from nvmeof.wire.fabrics import (
    CATTR_DISABLE_SQFLOW,
    CONNECT_COMMAND,
    CONNECT_DATA,
    PROPERTY_SET_COMMAND,
)
from target.config import NamespaceConfig, PortConfig, SubsystemConfig, TargetConfig
from target.connection import QueueConnection
from target.daemon import Target

NQN = "nqn.2026-12.io.nvmeof-emu:harness"
HOSTNQN = "nqn.2026-12.io.nvmeof-emu:harness-host"
BLOCK = 4096
_ICREQ = bytes([0, 0, 128, 0, 128, 0, 0, 0]) + bytes(120)
_CC_ENABLE = 1 | (6 << 16) | (4 << 20)  # EN, IOSQES 6 (64 bytes), IOCQES 4 (16 bytes)


class _Socket:
    recv_into = None

    @staticmethod
    def getpeername() -> tuple[str, int]:
        return ("127.0.0.1", 40000)

    @staticmethod
    def getsockname() -> tuple[str, int]:
        return ("127.0.0.1", 4420)


class _Stream:
    socket = _Socket()


class HarnessQueue(QueueConnection):
    def now(self) -> float:
        return 0.0  # no Trio run here; only the keep-alive timer reads it


def serve_batch(queue: QueueConnection, data: bytes, *, plain: bool) -> bytes:
    """Serve ``data`` as one receive batch; the bytes queued for the host. ``plain`` allows the
    short cut (target.plainio) where the connection would take it."""
    conn = queue.conn
    conn.receive_data(data)
    queue._batch_base = queue.completed
    use_plain = plain and queue._plain_io_ready()
    try:
        while True:
            if use_plain:
                queue._serve_plain_io()
            if (event := conn.next_event()) is None:
                break
            if not queue._on_event(event) or queue._fatal_reason:
                break
    except TransportError:
        pass  # the C2HTermReq is queued, as the connection would send it
    finally:
        queue._end_batch()
    return b"".join(bytes(b) for b in conn.data_to_send())


def capsule(sqe: bytes, data: bytes = b"", read: int = 0) -> bytes:
    """The CapsuleCmd a host sends for ``sqe`` (in-capsule ``data``, or ``read`` bytes back)."""
    host = HostConnection()
    host.initiate()
    host.data_to_send()
    icresp = bytearray(128)
    icresp[0], icresp[2], icresp[4] = 1, 128, 128
    icresp[12:16] = (131072).to_bytes(4, "little")
    host.receive_data(bytes(icresp))
    host.next_event()
    host.send_command(sqe, write_data=data or None, read_buffer=bytearray(read) if read else None,
                      in_capsule_limit=8192)  # fmt: skip
    return b"".join(bytes(b) for b in host.data_to_send())


def rw_sqe(opcode: int, cid: int, nsid: int, slba: int, nlb: int) -> bytes:
    """A Read (0x02) or Write (0x01) SQE; NLB is 0's based."""
    sqe = bytearray(64)
    sqe[0] = opcode
    sqe[2:4] = cid.to_bytes(2, "little")
    sqe[4:8] = nsid.to_bytes(4, "little")
    sqe[40:48] = slba.to_bytes(8, "little")
    sqe[48:50] = nlb.to_bytes(2, "little")
    return bytes(sqe)


def io_queue(nlbas: int, *, sqflow_off: bool = True) -> tuple[Target, QueueConnection]:
    """A target with namespace 1 (``nlbas`` 4 KiB blocks, RAM) and a disabled namespace 2, and
    its I/O queue 1, connected (SQ flow control off, as Linux asks, unless ``sqflow_off`` is
    False)."""
    namespaces = (NamespaceConfig(nsid=1, size=nlbas * BLOCK, block_size=BLOCK),
                  NamespaceConfig(nsid=2, size=1 << 20, enabled=False))  # fmt: skip
    config = TargetConfig(
        subsystems=(SubsystemConfig(nqn=NQN, namespaces=namespaces, allow_any_host=True),),
        ports=(PortConfig(id=1, port=0, subsystems=(NQN,)),),
    )
    target = Target(config)
    port = target.ports[1]
    admin = HarnessQueue(target.state, port, _Stream())  # type: ignore[arg-type]
    io = HarnessQueue(target.state, port, _Stream())  # type: ignore[arg-type]
    cattr = CATTR_DISABLE_SQFLOW if sqflow_off else 0

    def connect(qid: int, cntlid: int) -> bytes:
        sqe = CONNECT_COMMAND.build(dict(fctype=FabricsType.CONNECT, qid=qid, sqsize=31,
                                         cattr=cattr, kato=0 if qid else 30000))  # fmt: skip
        data = CONNECT_DATA.build(dict(hostid=bytes(range(16)), cntlid=cntlid, subsysnqn=NQN,
                                       hostnqn=HOSTNQN))  # fmt: skip
        return capsule(sqe, data)

    serve_batch(admin, _ICREQ + connect(0, 0xFFFF), plain=False)
    assert admin.controller is not None, "admin Connect failed"
    enable = PROPERTY_SET_COMMAND.build(dict(fctype=FabricsType.PROPERTY_SET, offset=0x14,
                                             value=_CC_ENABLE))  # fmt: skip
    serve_batch(admin, capsule(bytes(enable)), plain=False)
    assert admin.controller.regs.ready, "CC.EN did not make the controller ready"
    serve_batch(io, _ICREQ + connect(1, admin.controller.cntlid), plain=False)
    assert io.qid == 1, "I/O queue Connect failed"
    return target, io
