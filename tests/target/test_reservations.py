"""The reservation rules of one namespace (target/reservations.py), without I/O.

The access table is the NVMe spec's "Command Behavior in the Presence of a Reservation", row by
row; the other cases follow nvmet's pr.c where the spec leaves room (see the module)."""

from __future__ import annotations

import pytest

from nvmeof.constants import IoOpcode
from nvmeof.status import StatusCode
from nvmeof.wire.reservations import NotificationType as N, ReservationType as T
from target.reservations import (
    NOTIFICATION_MASK_ALL,
    Notice,
    NotificationLog,
    Reservations,
    check_acquire_fields,
)

A, B, C = b"A" * 16, b"B" * 16, b"C" * 16
KA, KB, KC = 0xA1, 0xB2, 0xC3
CONFLICT, INVALID_FIELD = StatusCode.RESERVATION_CONFLICT, StatusCode.INVALID_FIELD
READ, WRITE = IoOpcode.READ, IoOpcode.WRITE
REGISTER, UNREGISTER, REPLACE = 0, 1, 2
ACQUIRE, PREEMPT, PREEMPT_ABORT = 0, 1, 2
RELEASE, CLEAR = 0, 1


def registered(*hosts: tuple[bytes, int]) -> Reservations:
    resv = Reservations()
    for hostid, key in hosts:
        assert resv.register(hostid, REGISTER, 0, key, iekey=False, cptpl=0).status == 0
    return resv


def held(rtype: int) -> Reservations:
    """A holds ``rtype``; B is registered; C is not."""
    resv = registered((A, KA), (B, KB))
    assert resv.acquire(A, ACQUIRE, rtype, KA, 0).status == 0
    return resv


# -- Register --------------------------------------------------------------------------------------


def test_register_unregister_replace() -> None:
    resv = registered((A, KA))
    assert resv.generation == 1
    assert resv.register(A, REGISTER, 0, KA, iekey=False, cptpl=0).status == 0  # same key: ok
    assert resv.generation == 2  # nvmet bumps the generation on every success
    assert resv.register(A, REGISTER, 0, KB, iekey=False, cptpl=0).status == CONFLICT
    assert resv.register(A, REPLACE, KB, KC, iekey=False, cptpl=0).status == CONFLICT
    assert resv.register(A, REPLACE, KA, KC, iekey=False, cptpl=0).status == 0
    assert resv.registrants[A].key == KC
    assert resv.register(A, REPLACE, 0, KA, iekey=True, cptpl=0).status == 0  # IEKEY skips CRKEY
    assert resv.register(B, REPLACE, 0, KB, iekey=True, cptpl=0).status == CONFLICT  # unknown
    assert resv.register(A, UNREGISTER, KB, 0, iekey=False, cptpl=0).status == CONFLICT
    assert resv.register(A, UNREGISTER, 0, 0, iekey=True, cptpl=0).status == 0
    assert not resv.registrants
    out = resv.register(A, 3, 0, 0, iekey=False, cptpl=0)
    assert (out.status, out.loc) == (StatusCode.INVALID_OPCODE, 40)  # nvmet: reserved action


def test_cptpl_only_where_it_can_persist() -> None:
    volatile, durable = Reservations(), Reservations(can_persist=True)
    for resv in (volatile, durable):
        assert resv.register(A, REGISTER, 0, KA, iekey=False, cptpl=3).status == 0
    assert (volatile.ptpl, durable.ptpl) == (False, True)  # nvmet ignores CPTPL: so, where RAM
    assert durable.register(A, REGISTER, 0, KA, iekey=False, cptpl=1).status == 0  # reserved
    assert durable.ptpl
    assert durable.register(A, REGISTER, 0, KA, iekey=False, cptpl=2).status == 0
    assert not durable.ptpl


# -- access ----------------------------------------------------------------------------------------

# (type, host, opcode) -> refused. The holder A is never refused; B is registered, C is not.
_REFUSED = {
    T.WRITE_EXCLUSIVE: {B: {WRITE}, C: {WRITE}},
    T.EXCLUSIVE_ACCESS: {B: {READ, WRITE}, C: {READ, WRITE}},
    T.WRITE_EXCLUSIVE_REG_ONLY: {B: set(), C: {WRITE}},
    T.EXCLUSIVE_ACCESS_REG_ONLY: {B: set(), C: {READ, WRITE}},
    T.WRITE_EXCLUSIVE_ALL_REGS: {B: set(), C: {WRITE}},
    T.EXCLUSIVE_ACCESS_ALL_REGS: {B: set(), C: {READ, WRITE}},
}
_GROUP = {READ: (IoOpcode.READ, IoOpcode.COMPARE),
          WRITE: (IoOpcode.WRITE, IoOpcode.FLUSH, IoOpcode.WRITE_ZEROES,
                  IoOpcode.DATASET_MANAGEMENT)}  # fmt: skip


@pytest.mark.parametrize("rtype", list(T))
def test_access_table(rtype: T) -> None:
    resv = held(rtype)
    for host in (A, B, C):
        for kind, opcodes in _GROUP.items():
            for opcode in opcodes:
                expected = kind in _REFUSED[rtype].get(host, set())
                assert resv.conflicts_with(host, opcode) is expected, (rtype, host, opcode)
        assert not resv.conflicts_with(host, IoOpcode.RESERVATION_REPORT)
    assert not registered((A, KA)).conflicts_with(C, WRITE)  # registrations alone restrict nothing


# -- Acquire ---------------------------------------------------------------------------------------


def test_acquire_rules() -> None:
    resv = held(T.WRITE_EXCLUSIVE)
    assert resv.acquire(A, ACQUIRE, T.WRITE_EXCLUSIVE, KA, 0).status == 0  # again: ok
    assert resv.acquire(A, ACQUIRE, T.EXCLUSIVE_ACCESS, KA, 0).status == CONFLICT
    assert resv.acquire(B, ACQUIRE, T.WRITE_EXCLUSIVE, KB, 0).status == CONFLICT
    assert resv.acquire(B, ACQUIRE, T.WRITE_EXCLUSIVE, KA, 0).status == CONFLICT  # wrong key
    assert resv.acquire(C, ACQUIRE, T.WRITE_EXCLUSIVE, 0, 0).status == CONFLICT  # unregistered
    assert check_acquire_fields(False, 0) == INVALID_FIELD
    assert check_acquire_fields(False, 7) == INVALID_FIELD
    assert check_acquire_fields(True, 1) == INVALID_FIELD  # nvmet refuses IEKEY on Acquire
    assert check_acquire_fields(False, 6) == 0


def test_all_registrants_every_registrant_holds() -> None:
    resv = held(T.WRITE_EXCLUSIVE_ALL_REGS)
    assert resv.is_holder(B) and not resv.is_holder(C)
    assert resv.acquire(B, ACQUIRE, T.WRITE_EXCLUSIVE_ALL_REGS, KB, 0).status == 0
    report = resv.report()
    assert [r.holds for r in report.registrants] == [True, True]
    # the holder nvmet points at leaves: the reservation passes to the first registrant left
    assert resv.register(A, UNREGISTER, KA, 0, iekey=False, cptpl=0).notices == []
    assert resv.holder == B and resv.rtype == T.WRITE_EXCLUSIVE_ALL_REGS
    resv.register(B, UNREGISTER, KB, 0, iekey=False, cptpl=0)
    assert resv.holder is None and resv.rtype == 0


def test_registrants_only_holder_leaving_releases() -> None:
    resv = held(T.EXCLUSIVE_ACCESS_REG_ONLY)
    out = resv.register(A, UNREGISTER, KA, 0, iekey=False, cptpl=0)
    assert resv.holder is None
    assert out.notices == [Notice(B, N.RESERVATION_RELEASED)]


# -- Preempt ---------------------------------------------------------------------------------------


def test_preempt_the_holder_by_its_key() -> None:
    resv = held(T.WRITE_EXCLUSIVE)
    resv.register(C, REGISTER, 0, KA, iekey=False, cptpl=0)  # C shares A's key
    gen = resv.generation
    out = resv.acquire(B, PREEMPT_ABORT, T.EXCLUSIVE_ACCESS, KB, KA)
    assert out.status == 0 and resv.holder == B and resv.rtype == T.EXCLUSIVE_ACCESS
    assert list(resv.registrants) == [B]
    assert out.aborted == [A, C]
    assert set(out.notices) == {Notice(A, N.REGISTRATION_PREEMPTED),
                                Notice(C, N.REGISTRATION_PREEMPTED)}  # fmt: skip
    assert resv.generation == gen + 1


def test_preempt_other_cases() -> None:
    resv = registered((A, KA), (B, KB))
    assert resv.acquire(B, PREEMPT, T.WRITE_EXCLUSIVE, KB, KC).status == CONFLICT  # no match
    out = resv.acquire(B, PREEMPT, T.WRITE_EXCLUSIVE, KB, KA)  # no holder: unregister by key
    assert out.status == 0 and list(resv.registrants) == [B] and resv.holder is None
    assert out.aborted == []  # plain preempt aborts nothing

    resv = held(T.WRITE_EXCLUSIVE)
    assert resv.acquire(B, PREEMPT, T.WRITE_EXCLUSIVE, KB, 0).status == INVALID_FIELD
    resv.register(C, REGISTER, 0, KC, iekey=False, cptpl=0)
    out = resv.acquire(B, PREEMPT, T.WRITE_EXCLUSIVE, KB, KC)  # a non-holder's key
    assert out.status == 0 and resv.holder == A and C not in resv.registrants

    out = resv.acquire(A, PREEMPT, T.WRITE_EXCLUSIVE_REG_ONLY, KA, KA)  # holder changes type
    assert resv.rtype == T.WRITE_EXCLUSIVE_REG_ONLY and B in resv.registrants
    assert out.notices == [Notice(B, N.RESERVATION_RELEASED)]


def test_holder_preempting_another_registrants_key_keeps_its_reservation() -> None:
    resv = held(T.WRITE_EXCLUSIVE)
    out = resv.acquire(A, PREEMPT, T.EXCLUSIVE_ACCESS, KA, KB)  # spec: B goes, nothing else
    assert out.status == 0 and list(resv.registrants) == [A]
    assert resv.holder == A and resv.rtype == T.WRITE_EXCLUSIVE
    assert out.notices == [Notice(B, N.REGISTRATION_PREEMPTED)]


def test_preempt_all_registrants() -> None:
    resv = held(T.EXCLUSIVE_ACCESS_ALL_REGS)
    resv.register(C, REGISTER, 0, KC, iekey=False, cptpl=0)
    out = resv.acquire(B, PREEMPT, T.EXCLUSIVE_ACCESS_ALL_REGS, KB, KC)  # key: remove C only
    assert out.status == 0 and list(resv.registrants) == [A, B] and resv.holder == A
    out = resv.acquire(B, PREEMPT_ABORT, T.WRITE_EXCLUSIVE, KB, 0)  # key 0: take it over
    assert resv.holder == B and resv.rtype == T.WRITE_EXCLUSIVE and list(resv.registrants) == [B]
    assert out.aborted == [A] and out.notices == [Notice(A, N.REGISTRATION_PREEMPTED)]


# -- Release and clear -----------------------------------------------------------------------------


@pytest.mark.parametrize("rtype", list(T))
def test_release(rtype: T) -> None:
    resv = held(rtype)
    assert resv.release(C, RELEASE, rtype, 0).status == CONFLICT  # not registered
    assert resv.release(B, RELEASE, rtype, KA).status == CONFLICT  # wrong key
    other = T.WRITE_EXCLUSIVE if rtype != T.WRITE_EXCLUSIVE else T.EXCLUSIVE_ACCESS
    if rtype not in (T.WRITE_EXCLUSIVE_ALL_REGS, T.EXCLUSIVE_ACCESS_ALL_REGS):
        assert resv.release(B, RELEASE, rtype, KB).status == 0  # not the holder: nothing
        assert resv.holder == A
    assert resv.release(A, RELEASE, other, KA).status == CONFLICT  # nvmet: wrong type conflicts
    out = resv.release(A, RELEASE, rtype, KA)
    assert out.status == 0 and resv.holder is None and list(resv.registrants) == [A, B]
    told = rtype not in (T.WRITE_EXCLUSIVE, T.EXCLUSIVE_ACCESS)
    assert out.notices == ([Notice(B, N.RESERVATION_RELEASED)] if told else [])


def test_clear_and_masks() -> None:
    resv = held(T.WRITE_EXCLUSIVE)
    resv.register(C, REGISTER, 0, KC, iekey=False, cptpl=0)
    assert not resv.set_notify_mask(1 << 4)
    assert resv.set_notify_mask(1 << N.RESERVATION_PREEMPTED)
    out = resv.release(B, CLEAR, 0, KB)
    assert out.status == 0 and not resv.registrants and resv.holder is None
    assert out.notices == []  # masked
    resv = held(T.WRITE_EXCLUSIVE)
    out = resv.release(B, CLEAR, 0, KB)
    assert out.notices == [Notice(A, N.RESERVATION_PREEMPTED)]
    assert NOTIFICATION_MASK_ALL == 0b1110


def test_snapshot_round_trip() -> None:
    resv = held(T.WRITE_EXCLUSIVE_REG_ONLY)
    resv.ptpl = True
    again = Reservations(can_persist=True)
    again.restore(resv.snapshot())
    assert again.snapshot() == resv.snapshot()
    assert again.holder == A and list(again.registrants) == [A, B]
    for broken in ({}, {"version": 9}, {**resv.snapshot(), "holder": C.hex()}):
        with pytest.raises(ValueError, match=r"snapshot|holder"):
            Reservations().restore(broken)


def test_notification_log_counts_losses() -> None:
    log = NotificationLog(capacity=2)
    assert log.take().count == 0  # empty: all zeros
    for _ in range(4):
        log.add(N.RESERVATION_RELEASED, 1)
    first = log.take()
    assert (first.count, first.type, first.nr_pages, first.nsid) == (1, 2, 1, 1)
    second = log.take()
    assert second.count == 4 and second.nr_pages == 0  # two lost after it: count jumps
    assert log.take().count == 0
