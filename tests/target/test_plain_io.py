"""The plain I/O short cut (target.plainio) answers exactly as the general path does.

Two identical targets, each with an admin queue and an I/O queue brought up through the general
path (ICReq, Connect, CC.EN), are driven without sockets: the same bytes go into both I/O
queues, one serves its receive batches with the short cut allowed, the other without it. The
bytes they queue for the host, the counters they keep and the namespace contents must agree,
for Read and Write capsules in the shapes the short cut takes and in every near miss (other
flags, lengths, SGLs, namespaces, ranges, partial PDUs), which it must leave to the general
path.
"""

from __future__ import annotations

import contextlib
import itertools
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

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

NQN = "nqn.2026-12.io.nvmeof-emu:plain-io"
HOSTNQN = "nqn.2026-12.io.nvmeof-emu:host"
NLBAS = 64  # 4 KiB blocks in namespace 1
CAPSULE = struct.Struct("<BBBBIBBHI24xI3xBQHH")  # CH + the SQE fields the cases vary


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


class _Queue(QueueConnection):
    def now(self) -> float:
        return 0.0  # no Trio run here; only the keep-alive timer reads it


def _serve(queue: QueueConnection, data: bytes, *, plain: bool) -> bytes:
    """One receive batch, as QueueConnection._receive_and_serve serves it (without awaits)."""
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
        pass
    finally:
        queue._end_batch()
    return b"".join(bytes(b) for b in conn.data_to_send())


def _capsule(sqe: bytes, data: bytes = b"", read: int = 0) -> bytes:
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


def _target(sqflow_off: bool) -> tuple[Target, QueueConnection]:
    namespaces = (NamespaceConfig(nsid=1, size=NLBAS * 4096, block_size=4096),
                  NamespaceConfig(nsid=2, size=1 << 20, enabled=False))  # fmt: skip
    config = TargetConfig(
        subsystems=(SubsystemConfig(nqn=NQN, namespaces=namespaces, allow_any_host=True),),
        ports=(PortConfig(id=1, port=0, subsystems=(NQN,)),),
    )
    target = Target(config)
    port = target.ports[1]
    admin = _Queue(target.state, port, _Stream())  # type: ignore[arg-type]
    io = _Queue(target.state, port, _Stream())  # type: ignore[arg-type]
    icreq = bytes([0, 0, 128, 0, 128, 0, 0, 0]) + bytes(120)
    cattr = CATTR_DISABLE_SQFLOW if sqflow_off else 0

    def connect(qid: int, cntlid: int) -> bytes:
        sqe = CONNECT_COMMAND.build(dict(fctype=FabricsType.CONNECT, qid=qid, sqsize=31,
                                         cattr=cattr, kato=0 if qid else 30000))  # fmt: skip
        data = CONNECT_DATA.build(dict(hostid=bytes(range(16)), cntlid=cntlid, subsysnqn=NQN,
                                       hostnqn=HOSTNQN))  # fmt: skip
        return _capsule(sqe, data)

    _serve(admin, icreq + connect(0, 0xFFFF), plain=False)
    assert admin.controller is not None
    enable = PROPERTY_SET_COMMAND.build(dict(fctype=FabricsType.PROPERTY_SET, offset=0x14,
                                             value=1 | (6 << 16) | (4 << 20)))  # fmt: skip
    _serve(admin, _capsule(bytes(enable)), plain=False)
    assert admin.controller.regs.ready
    _serve(io, icreq + connect(1, admin.controller.cntlid), plain=False)
    assert io.qid == 1
    return target, io


def _sqe(opcode: int, cid: int, nsid: int, slba: int, nlb: int, length: int) -> bytes:
    sqe = bytearray(64)
    sqe[0] = opcode
    sqe[2:4] = cid.to_bytes(2, "little")
    sqe[4:8] = nsid.to_bytes(4, "little")
    sqe[40:48] = slba.to_bytes(8, "little")
    sqe[48:50] = nlb.to_bytes(2, "little")
    return bytes(sqe)


@st.composite
def commands(draw: Any) -> bytes:
    """A Read or Write capsule as a Linux host sends it, then perhaps one field changed."""
    write = draw(st.booleans())
    nlb = draw(st.sampled_from([0, 0, 1, 3]))
    slba = draw(st.sampled_from([0, 5, NLBAS - 1 - nlb, NLBAS - nlb, NLBAS + 3]))
    nsid = draw(st.sampled_from([1, 1, 1, 1, 1, 2, 3, 0xFFFFFFFF]))
    length = (nlb + 1) * 4096
    cid = draw(st.integers(0, 31))
    data = bytes([draw(st.integers(0, 255))]) * length if write and length <= 8192 else b""
    sqe = _sqe(0x01 if write else 0x02, cid, nsid, slba, nlb, length)
    raw = bytearray(_capsule(sqe, data, read=0 if write else length))
    fields = list(CAPSULE.unpack_from(raw))
    change = draw(st.sampled_from(["none"] * len(fields) + list(range(len(fields)))))
    if change != "none":
        fields[change] = draw(st.sampled_from([0, 1, 2, 0x40, 0x5A, 72, 4096, 0xFF]))
        with contextlib.suppress(struct.error):
            CAPSULE.pack_into(raw, 0, *fields)
    return bytes(raw)


def _state(target: Target, queue: QueueConnection) -> dict[str, Any]:
    ctrl = queue.controller
    assert ctrl is not None
    stats = target.state.port_stats(1)
    ns = target.state.subsystems[NQN].namespaces[1]
    return {
        "commands": queue.commands, "completed": queue.completed, "sqhd": queue._sqhd,
        "ok": list(stats.ok), "errors": dict(stats.errors), "latency": sum(stats.latency),
        "reads": (ctrl.stats.read_commands, ctrl.stats.bytes_read),
        "writes": (ctrl.stats.write_commands, ctrl.stats.bytes_written),
        "moved": (dict(queue._read_bytes), dict(queue._written_bytes)),
        "data": bytes(ns.backend.read_sync(0, NLBAS * 4096)),
        "closed": queue.close_reason, "fatal": queue._fatal_reason,
        "buffered": queue.conn.reader.buffered,
    }  # fmt: skip


@pytest.mark.parametrize("sqflow_off", [True, False], ids=["sqflow-off", "sqflow-on"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(commands(), min_size=1, max_size=6), min_size=1, max_size=4),
       cut=st.integers(0, 200))  # fmt: skip
def test_plain_io_answers_like_the_general_path(
    sqflow_off: bool, batches: list[list[bytes]], cut: int
) -> None:
    general, general_q = _target(sqflow_off)
    plain, plain_q = _target(sqflow_off)
    stream = b"".join(b"".join(batch) for batch in batches)
    # The same stream, split into receives at the same places (one cut inside a PDU).
    bounds = sorted({0, len(stream), min(cut, len(stream))}
                    | {sum(len(c) for b in batches[:i] for c in b) for i in range(len(batches))})  # fmt: skip
    for lo, hi in itertools.pairwise(bounds):
        want = _serve(general_q, stream[lo:hi], plain=False)
        got = _serve(plain_q, stream[lo:hi], plain=True)
        assert got == want
        assert _state(plain, plain_q) == _state(general, general_q)


def test_the_short_cut_takes_linux_shaped_reads_and_writes() -> None:
    """Not vacuous: a Linux-shaped Read and in-capsule Write are served by the short cut
    (the general path is never asked for an event)."""
    _, queue = _target(sqflow_off=True)
    write = _capsule(_sqe(0x01, 1, 1, 3, 0, 4096), b"\xab" * 4096)
    read = _capsule(_sqe(0x02, 2, 1, 3, 0, 4096), read=4096)
    queue.conn.receive_data(write + read)
    assert queue._plain_io_ready()
    queue._serve_plain_io()
    assert queue.conn.reader.buffered == 0
    out = b"".join(bytes(b) for b in queue.conn.data_to_send())
    assert out[:8] == bytes([5, 0, 24, 0, 24, 0, 0, 0])  # CapsuleResp for the write
    assert out[24:26] == bytes([7, 0x0C])  # C2HData, LAST_PDU | SUCCESS: no response follows
    assert out[-4096:] == b"\xab" * 4096
