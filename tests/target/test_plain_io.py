"""The plain I/O short cut (target.plainio) answers exactly as the general path does.

Two identical targets, each with an admin queue and an I/O queue brought up through the general
path (ICReq, Connect, CC.EN), are driven without sockets (bench/queue_harness.py): the same
bytes go into both I/O queues, one serves its receive batches with the short cut allowed, the
other without it. The bytes they queue for the host, the counters they keep and the namespace
contents must agree, for Read and Write capsules in the shapes the short cut takes and in every
near miss (other flags, lengths, SGLs, namespaces, ranges, partial PDUs), which it must leave to
the general path.
"""

from __future__ import annotations

import contextlib
import itertools
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bench.queue_harness import NQN, capsule, io_queue, rw_sqe, serve_batch
from nvmeof.wire.fast import RW_CAPSULE
from target.connection import QueueConnection
from target.daemon import Target

NLBAS = 64  # 4 KiB blocks in namespace 1
CAPSULE = RW_CAPSULE  # CH + the SQE fields the cases vary


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
    sqe = rw_sqe(0x01 if write else 0x02, cid, nsid, slba, nlb)
    raw = bytearray(capsule(sqe, data, read=0 if write else length))
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
        "keep-alive traffic": ctrl.traffic_seen,
        "buffered": queue.conn.reader.buffered,
    }  # fmt: skip


@pytest.mark.parametrize("sqflow_off", [True, False], ids=["sqflow-off", "sqflow-on"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(commands(), min_size=1, max_size=6), min_size=1, max_size=4),
       cut=st.integers(0, 200))  # fmt: skip
def test_plain_io_answers_like_the_general_path(
    sqflow_off: bool, batches: list[list[bytes]], cut: int
) -> None:
    general, general_q = io_queue(NLBAS, sqflow_off=sqflow_off)
    plain, plain_q = io_queue(NLBAS, sqflow_off=sqflow_off)
    stream = b"".join(b"".join(batch) for batch in batches)
    # The same stream, split into receives at the same places (one cut inside a PDU).
    bounds = sorted({0, len(stream), min(cut, len(stream))}
                    | {sum(len(c) for b in batches[:i] for c in b) for i in range(len(batches))})  # fmt: skip
    for lo, hi in itertools.pairwise(bounds):
        for queue in (general_q, plain_q):  # as the keep-alive watcher leaves it when it looks
            assert queue.controller is not None
            queue.controller.traffic_seen = False
        want = serve_batch(general_q, stream[lo:hi], plain=False)
        got = serve_batch(plain_q, stream[lo:hi], plain=True)
        assert got == want
        assert _state(plain, plain_q) == _state(general, general_q)


def test_the_short_cut_takes_linux_shaped_reads_and_writes() -> None:
    """Not vacuous: a Linux-shaped Read and in-capsule Write are served by the short cut
    (the general path is never asked for an event)."""
    _, queue = io_queue(NLBAS)
    write = capsule(rw_sqe(0x01, 1, 1, 3, 0), b"\xab" * 4096)
    read = capsule(rw_sqe(0x02, 2, 1, 3, 0), read=4096)
    queue.conn.receive_data(write + read)
    assert queue._plain_io_ready()
    queue._serve_plain_io()
    assert queue.conn.reader.buffered == 0
    out = b"".join(bytes(b) for b in queue.conn.data_to_send())
    assert out[:8] == bytes([5, 0, 24, 0, 24, 0, 0, 0])  # CapsuleResp for the write
    assert out[24:26] == bytes([7, 0x0C])  # C2HData, LAST_PDU | SUCCESS: no response follows
    assert out[-4096:] == b"\xab" * 4096


@pytest.mark.parametrize("state", ["fault rule", "draining", "strict port", "not ready"])
def test_the_short_cut_stands_aside(state: str) -> None:
    """What the short cut does not cover sends the whole batch to the general path."""
    target, queue = io_queue(NLBAS)
    assert queue._plain_io_ready()
    if state == "fault rule":
        target.state.faults.rules.append(object())  # type: ignore[arg-type]
    elif state == "draining":
        queue.draining = True
    elif state == "strict port":
        queue.port.strict = True
    else:
        assert queue.controller is not None
        queue.controller.regs.csts = 0
    assert not queue._plain_io_ready()
