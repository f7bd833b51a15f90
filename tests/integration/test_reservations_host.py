"""The host's reservation API (``head.reservation_*``) against our real target over loopback.

Every action of Register, Acquire and Release once, the conflicts two hosts (different host
NQNs, so different Host IDs) run into, and Report: parsed with EDS, refused without it, and cut
to the bytes asked for. Each host connects both ports of the standard configuration, so every
command goes through the multipath head.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from initiator import (
    ControllerOptions,
    Host,
    IoError,
    MultipathHead,
    ReservationError,
    is_reservation_conflict,
    open_host,
)
from nvmeof.status import StatusCode
from nvmeof.wire.reservations import (
    AcquireAction,
    RegisterAction,
    ReleaseAction,
    ReservationType,
)
from tests.integration.conftest import HOST, Loopback

NSID = 1  # 512-byte blocks, ANA group 1: optimized on port 1, non-optimized on port 2
BLOCK = 512
HOSTNQN_A = "nqn.2014-08.org.nvmexpress:uuid:0000000a-0000-4000-8000-00000000000a"
HOSTNQN_B = "nqn.2014-08.org.nvmexpress:uuid:0000000b-0000-4000-8000-00000000000b"
WE = ReservationType.WRITE_EXCLUSIVE


@asynccontextmanager
async def attached(lb: Loopback, hostnqn: str, ports: tuple[int, ...] = (1, 2)
                   ) -> AsyncIterator[tuple[Host, MultipathHead]]:  # fmt: skip
    opts = ControllerOptions(hostnqn=hostnqn, io_queues=2, queue_size=32, reconnect_delay=0.2,
                             command_timeout=10.0)  # fmt: skip
    async with open_host(opts) as host:
        for port_id in ports:
            await host.connect(HOST, lb.ports[port_id], lb.nqn)
        yield host, host.namespace(lb.nqn, NSID)


async def test_every_action_through_the_head(lb: Loopback) -> None:
    with trio.fail_after(30):
        async with attached(lb, HOSTNQN_A) as (host, head):
            empty = await head.reservation_report()
            assert (empty.rtype, empty.regctl, empty.registrants) == (0, 0, ())
            await head.reservation_register(RegisterAction.REGISTER, nrkey=0xA1)
            status = await head.reservation_report()
            (me,) = status.registrants
            assert me.hostid == host.options.hostid and me.rkey == 0xA1 and not me.holds
            assert status.rtype == 0 and status.extended and status.gen > empty.gen

            await head.reservation_register(RegisterAction.REPLACE, crkey=0xA1, nrkey=0xA2)
            await head.reservation_acquire(AcquireAction.ACQUIRE, WE, crkey=0xA2)
            status = await head.reservation_report()
            assert status.rtype == WE and status.registrants[0].holds
            assert status.registrants[0].rkey == 0xA2
            await head.write(0, b"\x5a" * BLOCK)  # the holder writes

            # preempting our own reservation changes its type (spec: holder preempts itself)
            await head.reservation_acquire(AcquireAction.PREEMPT,
                                           ReservationType.EXCLUSIVE_ACCESS, crkey=0xA2,
                                           prkey=0xA2)  # fmt: skip
            assert (await head.reservation_report()).rtype == ReservationType.EXCLUSIVE_ACCESS

            await head.reservation_release(ReleaseAction.RELEASE,
                                           ReservationType.EXCLUSIVE_ACCESS, crkey=0xA2)  # fmt: skip
            status = await head.reservation_report()
            assert status.rtype == 0 and not status.registrants[0].holds

            await head.reservation_acquire(AcquireAction.ACQUIRE, WE, crkey=0xA2)
            await head.reservation_release(ReleaseAction.CLEAR, 0, crkey=0xA2)
            cleared = await head.reservation_report()
            assert (cleared.rtype, cleared.regctl) == (0, 0)

            await head.reservation_register(RegisterAction.REGISTER, nrkey=0xA3)
            await head.reservation_register(RegisterAction.UNREGISTER, crkey=0xA3)
            assert (await head.reservation_report()).regctl == 0


async def test_iekey_replaces_and_unregisters_without_the_current_key(lb: Loopback) -> None:
    with trio.fail_after(30):
        async with attached(lb, HOSTNQN_A) as (_, head):
            await head.reservation_register(RegisterAction.REGISTER, nrkey=1)
            with pytest.raises(ReservationError) as wrong:
                await head.reservation_register(RegisterAction.REPLACE, crkey=7, nrkey=2)
            assert wrong.value.conflict and wrong.value.command == "register"
            await head.reservation_register(RegisterAction.REPLACE, crkey=7, nrkey=2, iekey=True)
            assert (await head.reservation_report()).registrants[0].rkey == 2
            await head.reservation_register(RegisterAction.UNREGISTER, crkey=99, iekey=True)
            assert (await head.reservation_report()).regctl == 0


async def test_conflicts_between_two_hosts(lb: Loopback) -> None:
    with trio.fail_after(30):
        async with attached(lb, HOSTNQN_A) as (host_a, a), attached(lb, HOSTNQN_B) as (host_b, b):
            await a.reservation_register(RegisterAction.REGISTER, nrkey=0xAA)
            await a.reservation_acquire(AcquireAction.ACQUIRE, WE, crkey=0xAA)

            with pytest.raises(IoError) as write:  # a plain write of a non-holder
                await b.write(8, b"\x01" * BLOCK)
            assert is_reservation_conflict(write.value)
            assert write.value.status.code == StatusCode.RESERVATION_CONFLICT
            assert write.value.status.dnr
            await b.read(8, 1)  # Write Exclusive: anyone reads

            await b.reservation_register(RegisterAction.REGISTER, nrkey=0xBB)
            with pytest.raises(ReservationError) as taken:
                await b.reservation_acquire(AcquireAction.ACQUIRE, WE, crkey=0xBB)
            assert taken.value.conflict and is_reservation_conflict(taken.value)
            assert not taken.value.resent  # answered on the first path it went to
            assert "RESERVATION_CONFLICT" in str(taken.value)
            with pytest.raises(ReservationError) as not_mine:  # wrong key for B
                await b.reservation_release(ReleaseAction.RELEASE, WE, crkey=0xAA)
            assert not_mine.value.conflict

            # B preempts A: A's registration goes, B holds, A's writes now conflict
            await b.reservation_acquire(AcquireAction.PREEMPT, WE, crkey=0xBB, prkey=0xAA)
            status = await a.reservation_report()
            (holder,) = status.registrants
            assert holder.hostid == host_b.options.hostid and holder.holds
            assert host_a.options.hostid not in {r.hostid for r in status.registrants}
            await b.write(8, b"\x02" * BLOCK)
            with pytest.raises(IoError) as lost:
                await a.write(8, b"\x03" * BLOCK)
            assert is_reservation_conflict(lost.value)

            # A comes back and takes it; B preempts it again, with abort this time
            await b.reservation_release(ReleaseAction.RELEASE, WE, crkey=0xBB)
            await a.reservation_register(RegisterAction.REGISTER, nrkey=0xAA)
            await a.reservation_acquire(AcquireAction.ACQUIRE, WE, crkey=0xAA)
            await b.reservation_acquire(AcquireAction.PREEMPT_AND_ABORT, WE, crkey=0xBB,
                                        prkey=0xAA)  # fmt: skip
            assert [r.rkey for r in (await b.reservation_report()).registrants] == [0xBB]
            await b.reservation_release(ReleaseAction.CLEAR, 0, crkey=0xBB)
            await a.write(8, b"\x04" * BLOCK)  # nobody holds it any more


async def test_report_needs_eds_and_is_cut_to_the_bytes_asked_for(lb: Loopback) -> None:
    with trio.fail_after(30):
        async with attached(lb, HOSTNQN_A) as (_, a), attached(lb, HOSTNQN_B) as (_, b):
            await a.reservation_register(RegisterAction.REGISTER, nrkey=1)
            await b.reservation_register(RegisterAction.REGISTER, nrkey=2)
            with pytest.raises(ReservationError) as refused:
                await a.reservation_report(eds=False)
            assert refused.value.status.code == StatusCode.HOST_ID_INCONSIST
            assert not refused.value.conflict and refused.value.command == "report"

            header_only = await a.reservation_report(length=64)
            assert header_only.regctl == 2 and header_only.registrants == ()
            one = await a.reservation_report(length=128)
            assert one.regctl == 2 and [r.rkey for r in one.registrants] == [1]
            both = await a.reservation_report()
            assert [r.rkey for r in both.registrants] == [1, 2]

            with pytest.raises(ReservationError) as short:  # shorter than the 64-byte header
                await a.reservation_report(length=32)
            assert short.value.status.code == StatusCode.INVALID_FIELD


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda h: h.reservation_register(9), "register action must be 0..7"),
        (lambda h: h.reservation_register(0, nrkey=-1), "nrkey must be a 64-bit"),
        (lambda h: h.reservation_register(0, cptpl=4), "cptpl must be 0..3"),
        (lambda h: h.reservation_acquire(0, 256), "rtype must be 0..255"),
        (lambda h: h.reservation_release(0, 1, crkey=1 << 64), "crkey must be a 64-bit"),
        (lambda h: h.reservation_report(length=10), "multiple of 4"),
    ],
)
async def test_bad_arguments_are_refused_before_sending(lb: Loopback, call: object,
                                                        needle: str) -> None:  # fmt: skip
    with trio.fail_after(30):
        async with attached(lb, HOSTNQN_A, ports=(1,)) as (_, head):
            with pytest.raises(ValueError, match=needle):
                await call(head)  # type: ignore[operator]
