# mypy: disable-error-code="comparison-overlap"
# (slot.state is changed by the calls between two checks; mypy narrows it as if it could not)
"""No per-I/O allocation in steady state on the ring + head submission/completion path.

What is measured
----------------
A loop drives the real :class:`~initiator.ring.Ring`, :class:`~initiator.multipath.MultipathHead`
and :class:`~initiator.multipath.Path` over socket-free fakes (``fakes.FakeSession`` /
``fakes.FakeQueue`` with recording off): per iteration it prepares I/O into *registered*
buffers (``prep_read``/``prep_write`` with a buffer index), submits it (``Ring.submit`` ->
``MultipathHead.submit`` -> ``Path.send`` -> ``FakeQueue.send_slot``), completes it the way a
queue's reader task does (``MultipathHead.complete``, which posts to the ring) and reaps it
(``Ring.completions()`` and ``peek_cqe``/``cqe_seen``). The fake queue cannot complete inside
``send_slot``: the head marks the slot INFLIGHT only after ``send_slot`` returned (as with the
real transport, whose completions come from the reader task), so the loop completes right
after ``submit()`` returns, still synchronously.

After a warm-up (which fills free lists, deque blocks, the head's one-off event log entry,
interned strings, ...) a :mod:`tracemalloc` snapshot is taken, the loop runs again many times,
and a second snapshot is compared with the first. Only allocations with a frame in a file
under ``initiator/`` or ``nvmeof/`` are counted (``all_frames=True``, so e.g. a float that
``trio.current_time()`` creates for ``Ring.submit`` counts too, but pytest, Trio's scheduler
and the fakes on their own do not).

Why net growth and not "zero allocations"
------------------------------------------
CPython allocates short-lived objects all the time: bound methods, keyword-argument dicts,
ints above 256 for the counters (``stats.ios += 1``), floats for timestamps, slice objects,
generator frames for ``completions()``. Those are freed at once (or replace the previous value
of the same attribute), so they do not show up as growth. What must not happen is *retained*
per-I/O memory (a list or log that grows with every command, a per-command event or closure
that is kept) or per-I/O buffers/objects for the command: every slot owns one 64-byte
``bytearray`` (``slot.cmd``) and one memoryview over it for its whole life, and a registered
buffer is the same memoryview every time. Both properties are asserted: the memory bound
(< 4 KiB in total, no single traceback growing by 1 KiB or more, over 2,000 to 20,000 I/Os:
one retained object of 16 bytes or more per I/O would exceed it) and the identity of the
slots, their command copies and the buffer views before and after. A control run (the head's
event log, which does retain entries) proves that the measurement sees retained growth.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path as FsPath

import trio
import trio.testing

from initiator.queue import HOST_ABORTED
from initiator.ring import SlotState
from initiator.session import SessionState
from nvmeof.constants import AnaState
from tests.initiator.fakes import FakeSession, Rig, make_rig

ROOT = FsPath(__file__).resolve().parents[2]
WATCHED = [str(ROOT / "initiator" / "*"), str(ROOT / "nvmeof" / "*")]
TOTAL_BOUND = 4096
PER_TRACEBACK_BOUND = 1024
WARMUP = 2_000
MEASURED = 20_000
BATCH_WARMUP = 100  # batches of 8
BATCH_MEASURED = 1_000
FAILOVER_WARMUP = 300
FAILOVER_MEASURED = 2_000


@contextmanager
def tracing(nframes: int = 3) -> Iterator[None]:
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start(nframes)
    try:
        yield
    finally:
        if not was_tracing:
            tracemalloc.stop()


def snapshot() -> tracemalloc.Snapshot:
    gc.collect()
    filters = [tracemalloc.Filter(True, pattern, all_frames=True) for pattern in WATCHED]
    return tracemalloc.take_snapshot().filter_traces(filters)


def growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> tuple[int, int, str]:
    """Net bytes gained under initiator/ and nvmeof/, the worst traceback's gain, and a report."""
    stats = after.compare_to(before, "traceback")
    total = sum(s.size_diff for s in stats)
    worst = max((s.size_diff for s in stats), default=0)
    report = "\n".join(
        f"{s.size_diff:+d} B ({s.count_diff:+d}) at " + " <- ".join(
            f"{FsPath(f.filename).name}:{f.lineno}" for f in s.traceback
        )
        for s in sorted(stats, key=lambda s: -s.size_diff)[:8]
        if s.size_diff
    )  # fmt: skip
    return total, worst, report


def assert_no_growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> None:
    total, worst, report = growth(before, after)
    assert total < TOTAL_BOUND, f"retained {total} B:\n{report}"
    assert worst < PER_TRACEBACK_BOUND, f"one traceback retained {worst} B:\n{report}"


def identities(rig: Rig) -> list[object]:
    """Every object the data path must reuse: slots, their command copies and views."""
    ring = rig.ring
    return [*ring.slots, *(s.cmd for s in ring.slots), *(s.view for s in ring.slots),
            *(ring.buffer(i) for i in range(len(rig.buffers)))]  # fmt: skip


def steady_rig() -> Rig:
    rig = make_rig(FakeSession("a", record=False), FakeSession("b", record=False), entries=8,
                   nbuffers=2, buffer_blocks=8)  # fmt: skip
    return rig


async def test_steady_state_read_write_loop(mock_clock: trio.testing.MockClock) -> None:
    """One I/O per iteration: even iterations a read reaped with ``completions()``, odd ones a
    write reaped with ``peek_cqe``/``cqe_seen``."""
    rig = steady_rig()
    ring, head, queue = rig.ring, rig.head, rig.queue(0)
    read_view, write_view = ring.buffer(0), ring.buffer(1)

    def loop(n: int) -> None:
        for i in range(n):
            slot = ring.get_sqe()
            assert slot is not None
            if i & 1:
                slot.prep_write(i & 0xFFF, 8, 1)
            else:
                slot.prep_read(i & 0xFFF, 8, 0)
            ring.submit()
            assert queue.last_cmd is slot.cmd  # the slot's own copy went to the queue
            queue.complete_next(head, 0, 0, 0)
            if i & 1:
                cqe = ring.peek_cqe()
                assert cqe is slot and cqe.ok and cqe.data_out is write_view
                ring.cqe_seen(cqe)
            else:
                for cqe in ring.completions():
                    assert cqe is slot and cqe.ok and cqe.data_in is read_view

    objects = identities(rig)
    with tracing():
        loop(WARMUP)
        before = snapshot()
        loop(MEASURED)
        after = snapshot()
    assert_no_growth(before, after)
    assert all(a is b for a, b in zip(objects, identities(rig), strict=True))
    stats = rig.paths[0].stats
    assert stats.ios == WARMUP + MEASURED and stats.errors == 0
    assert stats.bytes == stats.ios * 8 * 512
    assert rig.paths[1].stats.ios == 0 and rig.ring.inflight == 0
    assert all(s.state is SlotState.FREE for s in ring.slots)


async def test_steady_state_full_ring_batches(mock_clock: trio.testing.MockClock) -> None:
    """Batches that fill the ring (get_sqe() -> None), on both paths (round-robin)."""
    rig = steady_rig()
    ring, head = rig.ring, rig.head
    head.set_iopolicy("round-robin")
    queues = [rig.queue(0), rig.queue(1)]

    def loop(n: int) -> None:
        for i in range(n):
            while (slot := ring.get_sqe()) is not None:
                slot.prep_read(i, 8, slot.index & 1, user_data=None)
            assert ring.submit() == ring.entries
            for queue in queues:
                while queue.pending:
                    queue.complete_next(head, 0, 0, 0)
            for cqe in ring.completions():
                assert cqe.ok

    objects = identities(rig)
    with tracing():
        loop(BATCH_WARMUP)
        before = snapshot()
        loop(BATCH_MEASURED)
        after = snapshot()
    assert_no_growth(before, after)
    assert all(a is b for a, b in zip(objects, identities(rig), strict=True))
    assert rig.paths[0].stats.ios == rig.paths[1].stats.ios > 0


async def test_failover_round_trip(mock_clock: trio.testing.MockClock,
                                   nursery: trio.Nursery) -> None:  # fmt: skip
    """Each I/O: sent on a, connection lost (0x06E2), failed over by the requeue task to b
    (non-optimized), completed there; then a comes back for the next one."""
    a, b = FakeSession("a", record=False), FakeSession("b", record=False)
    rig = make_rig(a, b, entries=4, nbuffers=1, buffer_blocks=1)
    ring, head = rig.ring, rig.head
    rig.paths[1].ana_state = AnaState.NON_OPTIMIZED
    qa, qb = rig.queue(0), rig.queue(1)
    nursery.start_soon(head.run_requeue)
    await trio.testing.wait_all_tasks_blocked()

    async def loop(n: int) -> None:
        for i in range(n):
            a.state = SessionState.LIVE
            slot = ring.get_sqe()
            assert slot is not None
            slot.prep_read(i & 0xFF, 1, 0)
            ring.submit()
            assert qa.last_cmd is slot.cmd
            a.state = SessionState.CONNECTING
            qa.complete_next(head, HOST_ABORTED, 0, 0)
            assert slot.state is SlotState.REQUEUED
            await trio.testing.wait_all_tasks_blocked()
            assert qb.last_cmd is slot.cmd and slot.state is SlotState.INFLIGHT
            qb.complete_next(head, 0, 0, 0)
            cqe = ring.peek_cqe()
            assert cqe is slot and cqe.ok and cqe.failovers == 1 and cqe.path_label == "b"
            ring.cqe_seen(cqe)

    objects = identities(rig)
    with tracing():
        await loop(FAILOVER_WARMUP)
        before = snapshot()
        await loop(FAILOVER_MEASURED)
        after = snapshot()
    assert_no_growth(before, after)
    assert all(x is y for x, y in zip(objects, identities(rig), strict=True))
    total = FAILOVER_WARMUP + FAILOVER_MEASURED
    assert head.stats.requeued == total and rig.paths[1].stats.ios == total
    assert head.queued == 0 and ring.inflight == 0


async def test_the_measurement_sees_retained_growth(mock_clock: trio.testing.MockClock) -> None:
    """Control: the head's event log keeps up to 1000 entries (allocated in initiator/)."""
    rig = steady_rig()
    with tracing():
        before = snapshot()
        for i in range(200):
            rig.head.note(f"event {i}")
        after = snapshot()
    total, worst, _ = growth(before, after)
    assert total > TOTAL_BOUND and worst > PER_TRACEBACK_BOUND
