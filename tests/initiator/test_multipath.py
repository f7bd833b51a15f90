# mypy: disable-error-code="comparison-overlap"
# (slot.state is changed by the calls between two checks; mypy narrows it as if it could not)
"""The namespace head: submission, completion disposition, failover and the requeue task.

Real :class:`~initiator.multipath.MultipathHead` and :class:`~initiator.multipath.Path`
objects over :class:`fakes.FakeSession` controllers whose :class:`fakes.FakeQueue` queues
record what was sent (time, slot, command bytes and the command object). No sockets: a test
completes commands with ``FakeQueue.complete_next`` exactly as a queue's reader task would.
Time-based tests use the ``autojump_clock`` fixture; the requeue task runs in pytest-trio's
``nursery`` fixture and is cancelled after the test.
"""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from initiator.multipath import NO_PATH_STATUS, HeadStats, IoError, MultipathHead
from initiator.policy import MAX_RETRIES
from initiator.queue import HOST_ABORTED
from initiator.ring import SlotState
from initiator.session import SessionState
from nvmeof.constants import AnaState
from nvmeof.status import Status, StatusCode, status_word
from tests.initiator.fakes import BLOCK, NSID, FakeSession, Rig, make_path, make_rig

S = SlotState
ANA_INACCESSIBLE = 0x0604
ANA_TRANSITION = 0x0606
INTERNAL = status_word(StatusCode.INTERNAL)  # 0x000C, a generic error without DNR
INVALID_FIELD_DNR = 0x8004
PASSTHRU = bytes([0x02, 0x40, 0, 0, *NSID.to_bytes(4, "little")]) + bytes(range(8, 64))


async def settle() -> None:
    """Let the requeue task (and anything else) run until everything is blocked."""
    await trio.testing.wait_all_tasks_blocked()


#: The requeue task may look at its list this many times without the clock moving; more means
#: it spins (a wake-up time in the past), which would hang an autojump-clock test forever.
SPIN_LIMIT = 1000


def requeue(rig: Rig, nursery: trio.Nursery) -> Rig:
    """Start the head's requeue task, failing the test if it busy-loops."""
    head = rig.head
    drain = head._drain
    state = {"now": math.nan, "count": 0, "wake": math.inf}

    def guarded(now: float) -> float:
        state["count"] = state["count"] + 1 if now == state["now"] else 1
        state["now"] = now
        if state["count"] > SPIN_LIMIT:
            raise AssertionError(f"requeue task spins at t={now} (wakes at {state['wake']})")
        state["wake"] = drain(now)
        return state["wake"]

    head._drain = guarded  # type: ignore[method-assign]
    nursery.start_soon(head.run_requeue)
    return rig


def test_no_path_status_is_host_path_error_with_dnr() -> None:
    assert NO_PATH_STATUS == 0x86E0
    assert Status.from_word(NO_PATH_STATUS) == Status(StatusCode.HOST_PATH_ERROR, dnr=True)
    assert HOST_ABORTED == 0x06E2


async def test_path_usable() -> None:
    session = FakeSession("a")
    path = make_path(session)
    assert path.usable and path.label == "a" and path.state == "live" and path.nsid == NSID
    for state in (AnaState.INACCESSIBLE, AnaState.PERSISTENT_LOSS, AnaState.CHANGE):
        path.ana_state = state
        assert not path.usable
    path.ana_state = AnaState.NON_OPTIMIZED
    assert path.usable
    path.ana_pending = True
    assert not path.usable
    path.ana_pending = False
    session.lose()
    assert not path.usable and path.state == "connecting"
    session.reconnect()
    assert path.usable


# -- submission and completion -------------------------------------------------------------


async def test_numa_submits_on_the_first_optimized_path() -> None:
    rig = make_rig(FakeSession("a"), FakeSession("b"), FakeSession("c"))
    rig.paths[0].ana_state = AnaState.NON_OPTIMIZED
    slots = [rig.read(buf=i) for i in range(3)]
    assert [len(rig.sent(i)) for i in range(3)] == [0, 3, 0]
    assert all(s.state is S.INFLIGHT and s.path is rig.paths[1] for s in slots)
    assert [p.inflight for p in rig.paths] == [0, 3, 0]
    assert rig.ring.inflight == 3
    for sent, slot in zip(rig.sent(1), slots, strict=True):
        assert sent.slot is slot and sent.cmd_obj is slot.cmd and sent.cmd == bytes(slot.cmd)
        assert sent.data_in is not None and sent.data_in.obj is rig.buffers[slot.index]


async def test_success_posts_to_the_ring_with_the_path_label() -> None:
    rig = make_rig()
    slot = rig.read(slba=5, user_data="r")
    rig.queue(0).complete_next(rig.head, 0, 0x11, 0x22)
    assert rig.ring.peek_cqe() is slot and slot.state is S.DONE
    assert slot.ok and slot.status_word == 0 and (slot.dw0, slot.dw1) == (0x11, 0x22)
    assert slot.path_label == "a" and slot.user_data == "r"
    assert (slot.retries, slot.failovers) == (0, 0)
    stats = rig.paths[0].stats
    assert (stats.ios, stats.bytes, stats.errors, stats.failovers, stats.retries) == (
        1,
        BLOCK,
        0,
        0,
        0,
    )
    assert rig.paths[0].inflight == 0 and rig.ring.inflight == 0
    assert rig.head.stats == HeadStats()


async def test_success_after_the_path_died_still_completes() -> None:
    rig = make_rig()
    slot = rig.read()
    rig.sessions[0].lose()
    rig.queue(0).complete_next(rig.head, 0)
    assert slot.state is S.DONE and slot.ok and slot.path_label == "a"


async def test_dnr_error_completes_with_that_status() -> None:
    rig = make_rig()
    slot = rig.read()
    rig.queue(0).complete_next(rig.head, INVALID_FIELD_DNR, 7, 0)
    assert slot.state is S.DONE and slot.status_word == INVALID_FIELD_DNR and slot.dw0 == 7
    assert not slot.ok and slot.path_label == "a" and slot.retries == 0
    assert rig.paths[0].stats.errors == 1 and rig.paths[0].stats.ios == 1
    assert rig.head.queued == 0 and rig.head.stats == HeadStats()
    assert len(rig.sent(0)) == 1 and len(rig.sent(1)) == 0
    # Even a path error with DNR is final (it does not fail over).
    slot2 = rig.read()
    rig.queue(0).complete_next(rig.head, ANA_INACCESSIBLE | 0x8000)
    assert slot2.state is S.DONE and slot2.status_word == 0x8604
    assert not rig.paths[0].ana_pending and rig.sessions[0].ana_rereads == 0


# -- failover ------------------------------------------------------------------------------


async def test_ana_inaccessible_fails_over(nursery: trio.Nursery,
                                           autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    rig = requeue(make_rig(), nursery)
    slot = rig.read(slba=77, user_data="x")
    cmd_obj, cmd_bytes = slot.cmd, bytes(slot.cmd)
    rig.queue(0).complete_next(rig.head, ANA_INACCESSIBLE)
    # Before the requeue task ran: parked, path marked ANA-pending, ANA log re-read requested.
    assert slot.state is S.REQUEUED and rig.head.queued == 1
    assert rig.paths[0].ana_pending and not rig.paths[0].usable
    assert rig.sessions[0].ana_rereads == 1 and rig.sessions[1].ana_rereads == 0
    assert rig.head.stats.failovers == 1 and rig.head.stats.requeued == 1
    assert rig.paths[0].stats.failovers == 1 and rig.paths[0].inflight == 0
    assert slot.failovers == 1 and slot.retries == 0
    assert rig.ring.inflight == 1 and rig.ring.ready == 0
    await settle()
    assert slot.state is S.INFLIGHT and slot.path is rig.paths[1] and rig.head.queued == 0
    [sent] = rig.sent(1)
    assert sent.slot is slot and sent.cmd_obj is cmd_obj and sent.cmd == cmd_bytes
    assert slot.cmd is cmd_obj and bytes(slot.cmd) == cmd_bytes
    assert rig.paths[1].inflight == 1
    rig.queue(1).complete_next(rig.head, 0)
    assert slot.state is S.DONE and slot.ok and slot.path_label == "b" and slot.user_data == "x"
    assert len(rig.sent(0)) == 1  # never resent on the ANA-pending path
    assert any("failover from a" in what for _, what in rig.head.events)
    assert any("path a lost" in what for _, what in rig.head.events)
    assert rig.head.stats.path_losses == 1 and rig.paths[0].stats.losses == 1


async def test_failover_events_coalesce_and_ana_reread_once(nursery: trio.Nursery,
                                                            autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    rig = requeue(make_rig(), nursery)
    slots = [rig.read(buf=i) for i in range(3)]
    for _ in slots:
        rig.queue(0).complete_next(rig.head, ANA_TRANSITION)
    assert rig.sessions[0].ana_rereads == 1  # once per path until the ANA log is re-read
    assert rig.head.stats.failovers == 1 and rig.head.stats.requeued == 3
    assert rig.paths[0].stats.failovers == 3
    await settle()
    assert [s.slot for s in rig.sent(1)] == slots
    assert all(s.state is S.INFLIGHT for s in slots)
    # A later path error (more than 0.5 s after the last one) is a new failover event.
    await trio.sleep(1)
    rig.paths[0].ana_pending = False  # the ANA log was re-read
    rig.paths[1].ana_state = AnaState.NON_OPTIMIZED  # numa leaves b for a again
    s4 = rig.read(buf=3)
    assert s4.path is rig.paths[0]
    rig.queue(0).complete_next(rig.head, ANA_TRANSITION)
    assert rig.head.stats.failovers == 2 and rig.sessions[0].ana_rereads == 2


@pytest.mark.parametrize(
    "status", [HOST_ABORTED, INTERNAL, ANA_TRANSITION, status_word(StatusCode.INVALID_OPCODE)]
)
async def test_connection_loss_fails_over(status: int, nursery: trio.Nursery,
                                          autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    """A dying queue fails over whatever the status (0x371 is what the transport reports)."""
    rig = requeue(make_rig(), nursery)
    slots = [rig.read(buf=i) for i in range(2)]
    rig.sessions[0].lose()
    rig.queue(0).abort_all(rig.head, status)
    assert all(s.state is S.REQUEUED for s in slots) and rig.head.queued == 2
    assert rig.head.stats.failovers == 1 and rig.head.stats.requeued == 2
    assert rig.paths[0].ana_pending == (status == ANA_TRANSITION)
    await settle()
    assert [s.slot for s in rig.sent(1)] == slots
    assert [bytes(s.cmd) for s in rig.sent(1)] == [s.cmd for s in rig.sent(0)]
    assert all(s.slot.cmd is s.cmd_obj for s in rig.sent(1))
    rig.queue(1).abort_all(rig.head, 0)
    assert all(s.state is S.DONE and s.ok and s.path_label == "b" for s in slots)
    assert all(s.retries == 0 and s.failovers == 1 for s in slots)


async def test_passthru_fails_over_exactly_like_a_read(nursery: trio.Nursery,
                                                      autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    rig = requeue(make_rig(), nursery)
    read = rig.read(buf=0)
    pt = rig.passthru(PASSTHRU, data_in=1, user_data="pt")
    assert bytes(pt.cmd) == PASSTHRU
    rig.queue(0).complete_next(rig.head, ANA_INACCESSIBLE)
    rig.queue(0).complete_next(rig.head, ANA_INACCESSIBLE)
    assert read.state is pt.state is S.REQUEUED
    await settle()
    sent = rig.sent(1)
    assert [s.slot for s in sent] == [read, pt]
    assert sent[1].cmd == PASSTHRU and sent[1].cmd_obj is pt.cmd
    assert sent[1].data_in is not None and sent[1].data_in.obj is rig.buffers[1]
    # A generic error retries it on the same path, a DNR error completes it: like a read.
    rig.queue(1).complete_next(rig.head, 0)
    rig.queue(1).complete_next(rig.head, INTERNAL)
    assert pt.state is S.INFLIGHT and pt.retries == 1 and rig.sent(1)[-1].cmd == PASSTHRU
    rig.queue(1).complete_next(rig.head, INVALID_FIELD_DNR, 0xABCD, 0)
    assert pt.state is S.DONE and pt.status_word == INVALID_FIELD_DNR and pt.dw0 == 0xABCD
    assert (pt.failovers, pt.retries, pt.path_label) == (read.failovers, 1, "b")


# -- same-path retries -----------------------------------------------------------------------


async def test_generic_error_retries_on_the_same_path() -> None:
    rig = make_rig()
    slot = rig.read()
    first = rig.sent(0)[0].cmd
    for n in range(1, MAX_RETRIES + 1):
        rig.queue(0).complete_next(rig.head, INTERNAL)
        assert slot.state is S.INFLIGHT and slot.path is rig.paths[0]
        assert slot.retries == n and rig.paths[0].stats.retries == n
        assert rig.head.stats.retries == n and rig.paths[0].inflight == 1
        assert rig.head.queued == 0 and rig.head.stats.requeued == 0
    assert [s.cmd for s in rig.sent(0)] == [first] * (MAX_RETRIES + 1)
    assert all(s.cmd_obj is slot.cmd for s in rig.sent(0)) and not rig.sent(1)
    # The budget is spent: the next error is the caller's.
    rig.queue(0).complete_next(rig.head, INTERNAL)
    assert slot.state is S.DONE and slot.status_word == INTERNAL and slot.retries == MAX_RETRIES
    assert rig.paths[0].stats.errors == 1 and rig.paths[0].inflight == 0


async def test_retry_waits_for_crd(nursery: trio.Nursery,
                                   autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    rig = requeue(make_rig(FakeSession("a", crdt=(5, 20, 0)), FakeSession("b")), nursery)
    slot = rig.read()
    start = trio.current_time()
    rig.queue(0).complete_next(rig.head, INTERNAL | 1 << 12)  # CRD 1: CRDT1 x 100 ms
    assert slot.state is S.REQUEUED and slot.retries == 1 and rig.head.stats.retries == 1
    await settle()
    await trio.sleep(0.49)
    assert len(rig.sent(0)) == 1 and slot.state is S.REQUEUED
    await trio.sleep(0.02)
    assert len(rig.sent(0)) == 2 and slot.state is S.INFLIGHT and slot.path is rig.paths[0]
    assert rig.sent(0)[1].at - start == pytest.approx(0.5)
    assert rig.sent(0)[1].cmd == rig.sent(0)[0].cmd
    # CRD 2 selects CRDT2 (2 s); CRD 3 with CRDT3 = 0 is an immediate retry.
    resend_at = trio.current_time()
    rig.queue(0).complete_next(rig.head, INTERNAL | 2 << 12)
    await trio.sleep(1.99)
    assert len(rig.sent(0)) == 2
    await trio.sleep(0.02)
    assert rig.sent(0)[2].at - resend_at == pytest.approx(2.0)
    rig.queue(0).complete_next(rig.head, INTERNAL | 3 << 12)
    assert len(rig.sent(0)) == 4 and slot.retries == 3 and slot.state is S.INFLIGHT
    assert not rig.sent(1)


async def test_crd_delayed_retry_stays_on_the_same_path(nursery: trio.Nursery,
                                                        autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    rig = requeue(make_rig(FakeSession("a", crdt=(5, 0, 0)), FakeSession("b", crdt=(5, 0, 0)),
                           iopolicy="round-robin"), nursery)  # fmt: skip
    slot = rig.read()
    assert slot.path is rig.paths[0]
    rig.queue(0).complete_next(rig.head, INTERNAL | 1 << 12)
    await trio.sleep(1)
    assert slot.state is S.INFLIGHT
    assert slot.path is rig.paths[0] and len(rig.sent(0)) == 2 and not rig.sent(1)


async def test_failover_gives_a_fresh_retry_budget(nursery: trio.Nursery,
                                                   autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    rig = requeue(make_rig(), nursery)
    slot = rig.read()
    for _ in range(MAX_RETRIES - 1):
        rig.queue(0).complete_next(rig.head, INTERNAL)
    rig.sessions[0].lose()
    rig.queue(0).abort_all(rig.head, HOST_ABORTED)
    await settle()
    assert slot.path is rig.paths[1]
    for _ in range(MAX_RETRIES):
        rig.queue(1).complete_next(rig.head, INTERNAL)
        assert slot.state is S.INFLIGHT
    assert len(rig.sent(1)) == MAX_RETRIES + 1


# -- no usable path ------------------------------------------------------------------------


async def test_no_usable_path_parks_until_one_comes_back(nursery: trio.Nursery,
                                                         autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    rig = requeue(make_rig(), nursery)
    for session in rig.sessions:
        session.lose()
    slot = rig.read()
    assert slot.state is S.REQUEUED and rig.head.queued == 1
    assert rig.head.stats.no_path_queued == 1 and rig.head.stats.failed == 0
    assert rig.ring.inflight == 1
    await trio.sleep(3600)  # no fast_io_fail_tmo: wait as long as a controller may come back
    assert slot.state is S.REQUEUED and rig.head.queued == 1
    assert not rig.sent(0) and not rig.sent(1)
    rig.sessions[1].reconnect()
    rig.head.kick()
    await settle()
    assert slot.state is S.INFLIGHT and slot.path is rig.paths[1] and rig.head.queued == 0
    [sent] = rig.sent(1)
    assert sent.slot is slot and sent.cmd_obj is slot.cmd
    rig.queue(1).complete_next(rig.head, 0)
    assert slot.ok and slot.path_label == "b"


async def test_no_path_can_recover_fails_with_no_path_status(nursery: trio.Nursery,
                                                             autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    rig = requeue(make_rig(), nursery)
    for session in rig.sessions:
        session.delete()
    slot = rig.read()
    assert slot.state is S.DONE and slot.status_word == NO_PATH_STATUS and not slot.ok
    assert rig.head.stats.failed == 1 and rig.head.stats.no_path_queued == 0
    assert rig.ring.inflight == 0 and rig.ring.peek_cqe() is slot


async def test_parked_io_fails_when_the_last_controller_is_deleted(nursery: trio.Nursery,
                                                                   autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    rig = requeue(make_rig(), nursery)
    inflight = rig.read(buf=0)
    rig.sessions[1].lose()
    rig.sessions[0].lose()
    rig.queue(0).abort_all(rig.head, HOST_ABORTED)  # fails over: nowhere to go, parked
    parked = rig.read(buf=1)
    await settle()
    assert inflight.state is parked.state is S.REQUEUED and rig.head.queued == 2
    rig.sessions[0].delete()
    rig.head.kick()
    await settle()
    assert rig.head.queued == 2  # b may still come back
    rig.sessions[1].delete()
    rig.head.kick()
    await settle()
    assert rig.head.queued == 0 and rig.head.stats.failed == 2
    assert inflight.status_word == parked.status_word == NO_PATH_STATUS
    assert inflight.state is parked.state is S.DONE and rig.ring.inflight == 0


async def test_fast_io_fail_tmo(nursery: trio.Nursery,
                                autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    sessions = [FakeSession(n, fast_io_fail_tmo=2) for n in "ab"]
    rig = requeue(make_rig(*sessions), nursery)
    for session in sessions:
        session.lose()
    start = trio.current_time()
    slot = rig.read()
    assert slot.state is S.REQUEUED
    await trio.sleep(1.99)
    assert slot.state is S.REQUEUED and rig.head.stats.failed == 0
    await rig.ring.wait(1)
    assert trio.current_time() - start == pytest.approx(2.0)
    assert slot.state is S.DONE and slot.status_word == NO_PATH_STATUS
    assert rig.head.stats.failed == 1 and rig.head.queued == 0


async def test_fast_io_fail_tmo_off_on_one_controller(nursery: trio.Nursery,
                                                      autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    """I/O keeps waiting while any controller may come back: -1 (off) never expires."""
    sessions = [FakeSession("a", fast_io_fail_tmo=-1), FakeSession("b", fast_io_fail_tmo=3)]
    rig = requeue(make_rig(*sessions), nursery)
    for session in sessions:
        session.lose()
    slot = rig.read()
    await trio.sleep(60)
    assert slot.state is S.REQUEUED and rig.head.stats.failed == 0
    sessions[0].reconnect()
    rig.head.kick()
    await settle()
    assert slot.state is S.INFLIGHT and slot.path is rig.paths[0]


async def test_reconnect_before_fast_io_fail_tmo(nursery: trio.Nursery,
                                                 autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    sessions = [FakeSession(n, fast_io_fail_tmo=2) for n in "ab"]
    rig = requeue(make_rig(*sessions), nursery)
    for session in sessions:
        session.lose()
    slot = rig.read()
    await trio.sleep(1.5)
    sessions[1].reconnect()
    rig.head.kick()
    await settle()
    assert slot.state is S.INFLIGHT and slot.path is rig.paths[1]
    await trio.sleep(10)
    assert slot.state is S.INFLIGHT and rig.head.stats.failed == 0


async def test_fast_io_fail_counts_from_the_connection_loss(nursery: trio.Nursery,
                                                            autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    sessions = [FakeSession(n, fast_io_fail_tmo=2) for n in "ab"]
    rig = requeue(make_rig(*sessions), nursery)
    slot = rig.read()
    await trio.sleep(5)  # a slow command
    lost = trio.current_time()
    for session in sessions:
        session.lose()
    rig.queue(0).abort_all(rig.head, HOST_ABORTED)
    await settle()
    assert slot.state is S.REQUEUED  # b only just started reconnecting
    await rig.ring.wait(1)
    assert trio.current_time() - lost == pytest.approx(2.0)


async def test_new_io_after_fast_io_fail_expired_fails_at_once(nursery: trio.Nursery,
                                                                autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    sessions = [FakeSession(n, fast_io_fail_tmo=2) for n in "ab"]
    rig = requeue(make_rig(*sessions), nursery)
    for session in sessions:
        session.lose()
    await trio.sleep(10)
    slot = rig.read()
    await settle()
    assert slot.state is S.DONE and slot.status_word == NO_PATH_STATUS


# -- CQT (ghost writes) ----------------------------------------------------------------------


async def test_cqt_delays_failed_over_writes_only(nursery: trio.Nursery,
                                                  autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    rig = requeue(make_rig(FakeSession("a", cqt=0.5), FakeSession("b")), nursery)
    write = rig.write(buf=0)
    read = rig.read(buf=1)
    pt_out = rig.passthru(bytes([0x01, 0x40]) + bytes(62), data_out=2)  # a passthrough write
    flush = rig.flush()
    start = trio.current_time()
    rig.sessions[0].lose()
    rig.queue(0).abort_all(rig.head, HOST_ABORTED)
    await settle()
    assert {s.slot.index for s in rig.sent(1)} == {read.index, flush.index}
    assert all(s.at == start for s in rig.sent(1))
    assert write.state is pt_out.state is S.REQUEUED and rig.head.queued == 2
    await trio.sleep(0.499)
    assert len(rig.sent(1)) == 2
    await trio.sleep(0.002)
    assert [s.slot for s in rig.sent(1)[2:]] == [write, pt_out]
    assert all(s.at - start == pytest.approx(0.5) for s in rig.sent(1)[2:])
    assert rig.sent(1)[2].cmd == rig.sent(0)[0].cmd and rig.sent(1)[2].cmd_obj is write.cmd


async def test_cqt_hold_counts_from_the_loss_not_from_the_retry(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    rig = requeue(make_rig(FakeSession("a", cqt=0.5), FakeSession("b")), nursery)
    write = rig.write()
    zeroes = rig.passthru(bytes([0x08]) + bytes(63))  # Write Zeroes: no data, changes media
    compare = rig.passthru(bytes([0x05]) + bytes(63), data_out=1)  # Compare: harmless
    start = trio.current_time()
    rig.sessions[0].lose()
    await trio.sleep(0.3)  # the aborts come later (the queues are torn down slowly)
    rig.queue(0).abort_all(rig.head, HOST_ABORTED)
    await settle()
    assert [s.slot for s in rig.sent(1)] == [compare]
    await trio.sleep(0.201)
    assert [s.slot for s in rig.sent(1)[1:]] == [write, zeroes]
    assert all(s.at - start == pytest.approx(0.5, abs=0.002) for s in rig.sent(1)[1:])
    assert rig.head.stats.quiesce_held == 2
    assert any("command quiesce time" in what for _, what in rig.head.events)


async def test_a_loss_found_by_timeout_adds_two_kato_to_cqt(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    rig = requeue(make_rig(FakeSession("a", cqt=0.5, kato_ms=1000), FakeSession("b")), nursery)
    write = rig.write()
    start = trio.current_time()
    rig.sessions[0].lose(peer_closed=False)  # the controller learns by its keep-alive timer
    rig.queue(0).abort_all(rig.head, HOST_ABORTED)
    await trio.sleep(2.49)
    assert write.state is S.REQUEUED
    await trio.sleep(0.02)
    (sent,) = rig.sent(1)
    assert sent.slot is write and sent.at - start == pytest.approx(2.5, abs=0.002)


async def test_completed_commands_are_never_held(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    rig = requeue(make_rig(FakeSession("a", cqt=5.0), FakeSession("b")), nursery)
    write = rig.write()
    rig.queue(0).complete_next(rig.head, ANA_INACCESSIBLE)  # the controller answered: done
    await settle()
    assert write.state is S.INFLIGHT and write.path is rig.paths[1]
    assert rig.head.stats.quiesce_held == 0


async def test_no_cqt_writes_fail_over_at_once(nursery: trio.Nursery,
                                               autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    rig = requeue(make_rig(FakeSession("a"), FakeSession("b", cqt=5.0)), nursery)
    write = rig.write()
    rig.queue(0).complete_next(rig.head, ANA_INACCESSIBLE)  # CQT of the *failed* path counts
    await settle()
    assert write.state is S.INFLIGHT and write.path is rig.paths[1]


# -- queues --------------------------------------------------------------------------------


async def test_queue_without_free_tag_parks_and_retries(nursery: trio.Nursery,
                                                        autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    rig = requeue(make_rig(FakeSession("a")), nursery)
    queue = rig.queue(0)
    queue.refuse = True
    slot = rig.read()
    assert slot.state is S.REQUEUED and rig.head.queued == 1
    assert rig.head.stats.no_path_queued == 0 and rig.paths[0].inflight == 0
    await trio.sleep(0.1)
    assert slot.state is S.REQUEUED and queue.refused > 2  # polled, not lost
    queue.refuse = False
    await trio.sleep(0.02)
    assert slot.state is S.INFLIGHT and rig.head.queued == 0 and rig.paths[0].inflight == 1
    [sent] = queue.sent
    assert sent.slot is slot and sent.cmd_obj is slot.cmd


async def test_path_spreads_over_its_queues_and_skips_full_ones() -> None:
    rig = make_rig(FakeSession("a", nqueues=3))
    q0, q1, q2 = rig.sessions[0].queues
    for i in range(4):
        rig.read(buf=i)
    assert [len(q.sent) for q in (q0, q1, q2)] == [2, 1, 1]
    q1.refuse = True
    for q in (q0, q1, q2):
        while q.pending:
            q.complete_next(rig.head, 0)
    for _ in rig.ring.completions():
        pass
    for i in range(4):
        rig.read(buf=i)
    assert [len(q.sent) for q in (q0, q1, q2)] == [4, 1, 3]


# -- I/O policy ----------------------------------------------------------------------------


async def test_set_iopolicy_at_run_time() -> None:
    rig = make_rig()
    assert rig.head.iopolicy == "numa"
    first = [rig.read(buf=i).path for i in range(2)]
    assert first == [rig.paths[0]] * 2
    rig.head.set_iopolicy("round-robin")
    assert rig.head.iopolicy == "round-robin"
    second = [rig.read(buf=i).path for i in range(2, 4)]
    for q in (0, 1):
        while rig.queue(q).pending:
            rig.queue(q).complete_next(rig.head, 0)
    for _ in rig.ring.completions():
        pass
    third = [rig.read(buf=i).path for i in range(4)]
    labels = [p.label if p else None for p in second + third]
    assert labels == ["a", "b", "a", "b", "a", "b"]
    with pytest.raises(ValueError, match="unknown iopolicy 'service-time'"):
        rig.head.set_iopolicy("service-time")
    assert rig.head.iopolicy == "round-robin"


async def test_queue_depth_policy_uses_path_inflight() -> None:
    rig = make_rig(iopolicy="queue-depth", entries=16)
    paths = [rig.read(buf=i % 4).path for i in range(4)]
    assert [p.label if p else None for p in paths] == ["a", "b", "a", "b"]
    rig.queue(1).complete_next(rig.head, 0)
    rig.queue(1).complete_next(rig.head, 0)
    assert [p.inflight for p in rig.paths] == [2, 0]
    assert rig.read(buf=0).path is rig.paths[1]


def test_unknown_iopolicy_at_construction() -> None:
    with pytest.raises(KeyError):
        MultipathHead("nqn.x", 1, block_size=512, nlbas=8, iopolicy="bogus")


async def test_remove_current_path_and_add_it_back() -> None:
    rig = make_rig()
    assert rig.read(buf=0).path is rig.paths[0]
    rig.head.remove_path(rig.paths[0])
    assert rig.read(buf=1).path is rig.paths[1]
    rig.head.add_path(rig.paths[0])
    rig.head.add_path(rig.paths[0])  # idempotent
    assert rig.head.paths == [rig.paths[1], rig.paths[0]]
    assert rig.read(buf=2).path is rig.paths[1]  # numa keeps the cached optimized path


# -- the plain async helpers ---------------------------------------------------------------


async def test_read_helper_raises_io_error(nursery: trio.Nursery) -> None:
    rig = make_rig()

    async def complete_soon(status: int) -> None:
        await settle()  # the helper's command was sent
        rig.queue(0).complete_next(rig.head, status)

    nursery.start_soon(complete_soon, INVALID_FIELD_DNR)
    with pytest.raises(IoError, match="read failed") as info:
        await rig.head.read(0, 2)
    assert info.value.status_word == INVALID_FIELD_DNR
    nursery.start_soon(complete_soon, 0)
    assert await rig.head.read(0, 2) == bytearray(2 * BLOCK)
    nursery.start_soon(complete_soon, INVALID_FIELD_DNR)
    slot = await rig.head.passthru(PASSTHRU)
    assert slot.status_word == INVALID_FIELD_DNR  # passthru returns the status unchecked


def test_session_state_values_used_by_path() -> None:
    assert {s.value for s in SessionState} == {"new", "live", "connecting", "deleted"}


# -- doorbells -------------------------------------------------------------------------------


def rung(rig: Rig) -> list[int]:
    """How often each queue of each path was rung; and none may be left with commands unsent."""
    queues = [q for session in rig.sessions for q in session.queues]
    assert not rig.head.doorbells and not any(q.bell_pending for q in queues)
    return [q.doorbells for q in queues]


async def test_every_batch_that_sends_rings_the_queues_it_used(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A queue sends what it took only at its doorbell (HostQueue.doorbell): the head must ring
    every queue it sent on, once per batch, whoever submitted: Ring.submit, an immediate retry
    from a completion, the requeue task's resubmissions."""
    rig = requeue(make_rig(FakeSession("a", nqueues=2), FakeSession("b", nqueues=2)), nursery)
    for _ in range(3):
        slot = rig._slot()
        slot.prep_read(0, 1, 0, None)
    rig.ring.submit()  # three commands over path a's two queues: each rung once
    assert rung(rig) == [1, 1, 0, 0]
    rig.queue(0, 0).complete_next(rig.head, INTERNAL)  # retried at once, on the same path
    assert rung(rig) == [1, 2, 0, 0]  # on the path's next queue
    rig.sessions[0].lose()
    for q in rig.sessions[0].queues:
        q.abort_all(rig.head, HOST_ABORTED)
    await settle()  # the requeue task resubmits all three on path b in one batch
    assert rung(rig) == [1, 2, 1, 1]
    assert [s.path for s in rig.ring.slots if s.state is S.INFLIGHT] == [rig.paths[1]] * 3
