"""Reservations across a path loss: a registration and a reservation belong to the host (its
Host ID), not to the controller or path that made them, so when the optimized path dies the
host's I/O moves to the other path and the reservation is still its own. A reservation command
caught in flight by the loss fails over like any passthrough command and runs exactly once.

The standard loopback configuration: namespace 1 is in ANA group 1, optimized on port 1 and
non-optimized on port 2; every phase is bounded with ``fail_after``.
"""

from __future__ import annotations

import pytest
import trio

from initiator import (
    ControllerOptions,
    IoError,
    ReservationError,
    is_reservation_conflict,
    open_host,
)
from initiator.reservations import build_command
from nvmeof.constants import IoOpcode
from nvmeof.status import StatusCode
from nvmeof.wire.reservations import (
    AcquireAction,
    RegisterAction,
    ReservationType,
    acquire_cdw10,
    build_acquire_data,
    build_register_data,
    register_cdw10,
)
from tests.integration.conftest import HOST, Loopback

NSID = 1
BLOCK = 512
HOSTNQN_A = "nqn.2014-08.org.nvmexpress:uuid:0000000a-0000-4000-8000-0000000000fa"
HOSTNQN_B = "nqn.2014-08.org.nvmexpress:uuid:0000000b-0000-4000-8000-0000000000fb"
WE = ReservationType.WRITE_EXCLUSIVE


def options(hostnqn: str) -> ControllerOptions:
    return ControllerOptions(hostnqn=hostnqn, io_queues=2, queue_size=32, reconnect_delay=0.2,
                             command_timeout=10.0)  # fmt: skip


async def test_the_reservation_survives_the_loss_of_the_optimized_path(lb: Loopback) -> None:
    async with open_host(options(HOSTNQN_A)) as host:
        with trio.fail_after(10):
            for port_id in (1, 2):
                await host.connect(HOST, lb.ports[port_id], lb.nqn)
            head = host.namespace(lb.nqn, NSID)
            optimized, other = head.paths
            assert optimized.session.port == lb.ports[1]
            await head.reservation_register(RegisterAction.REGISTER, nrkey=0xFEED)
            await head.reservation_acquire(AcquireAction.ACQUIRE, WE, crkey=0xFEED)
            await head.write(0, b"\x11" * BLOCK)
            assert optimized.stats.ios > 0 and other.stats.ios == 0  # numa: the optimized path

        written = 0

        async def keep_writing(stop: trio.Event) -> None:
            nonlocal written
            while not stop.is_set():
                await head.write(written % 64, bytes([written & 0xFF]) * BLOCK)
                written += 1

        with trio.fail_after(30):
            stop = trio.Event()
            async with trio.open_nursery() as writers:
                writers.start_soon(keep_writing, stop)
                await lb.wait_until(lambda: written >= 20)
                assert await lb.target.port_down(1, mode="reset") > 0
                before = written
                await lb.wait_until(lambda: written >= before + 50, limit=20)
                stop.set()
            assert not optimized.usable and other.stats.ios >= 50  # the rest went through port 2

            status = await head.reservation_report()
            (mine,) = status.registrants
            assert status.rtype == WE
            assert mine.hostid == host.options.hostid and mine.holds and mine.rkey == 0xFEED

        async with open_host(options(HOSTNQN_B)) as intruder:
            with trio.fail_after(20):
                await intruder.connect(HOST, lb.ports[2], lb.nqn)  # port 1 refuses: it is down
                theirs = intruder.namespace(lb.nqn, NSID)
                with pytest.raises(IoError) as refused:
                    await theirs.write(0, b"\x22" * BLOCK)
                assert is_reservation_conflict(refused.value)
                await theirs.read(0, 1)  # Write Exclusive: reads are anyone's
                await head.write(1, b"\x33" * BLOCK)  # and the holder still writes


async def test_a_reservation_command_in_flight_at_the_loss_runs_exactly_once(
    lb: Loopback,
) -> None:
    """A Register (replace key 1 by 2) is on the optimized path when that connection dies: the
    target closes it as the command arrives, before running it. The host fails the command
    over; it completes once, on the other path, and ran once (run twice, the second copy would
    have found key 2 and failed with Reservation Conflict; the generation counts one change)."""
    async with open_host(options(HOSTNQN_A)) as host:
        with trio.fail_after(30):
            for port_id in (1, 2):
                await host.connect(HOST, lb.ports[port_id], lb.nqn)
            head = host.namespace(lb.nqn, NSID)
            await head.reservation_register(RegisterAction.REGISTER, nrkey=1)
            before = await head.reservation_report()
            rule = lb.target.fault_add({"action": "close", "port": 1,
                                        "opcode": IoOpcode.RESERVATION_REGISTER, "count": 1})  # fmt: skip

            ring = head.ring(4)
            slot = ring.get_sqe()
            assert slot is not None
            cmd = build_command(IoOpcode.RESERVATION_REGISTER, NSID,
                                register_cdw10(RegisterAction.REPLACE))  # fmt: skip
            slot.prep_cmd(cmd, data_out=build_register_data(crkey=1, nrkey=2), user_data="replace")
            await ring.submit_and_wait(1)
            done = ring.peek_cqe()
            assert done is slot and done.user_data == "replace"
            assert done.ok, done.status
            assert done.failovers == 1 and done.generation == 1
            assert done.path_label == head.paths[1].label
            assert rule.fired == 1
            ring.cqe_seen(done)
            await trio.sleep(0.5)  # the lost path reconnects meanwhile: nothing else arrives
            assert ring.peek_cqe() is None and slot.generation == 1

            after = await head.reservation_report()
            assert [r.rkey for r in after.registrants] == [2]
            assert after.gen == before.gen + 1  # one Register ran, not two


async def test_a_register_whose_completion_was_lost_is_retried_and_may_conflict(
    lb: Loopback,
) -> None:
    """The hazard of retrying a command that is not idempotent: the target ran the Replace
    (key 1 -> 2) but its completion never came (dropped); the host times the command out,
    resets the path and sends the same command on the other path, where key 1 is gone: the
    caller sees Reservation Conflict for a Replace that took effect, flagged ``resent``. The
    Linux host fails a passthrough command on a path error instead of retrying it."""
    opts = ControllerOptions(hostnqn=HOSTNQN_A, io_queues=1, queue_size=32, reconnect_delay=0.2,
                             command_timeout=1.0)  # fmt: skip
    async with open_host(opts) as host:
        with trio.fail_after(30):
            for port_id in (1, 2):
                await host.connect(HOST, lb.ports[port_id], lb.nqn)
            head = host.namespace(lb.nqn, NSID)
            await head.reservation_register(RegisterAction.REGISTER, nrkey=1)
            lb.target.fault_add({"action": "drop", "port": 1,
                                 "opcode": IoOpcode.RESERVATION_REGISTER, "count": 1})  # fmt: skip
            with pytest.raises(ReservationError) as retried:
                await head.reservation_register(RegisterAction.REPLACE, crkey=1, nrkey=2)
            assert retried.value.conflict and retried.value.resent
            assert "the first copy may have run" in str(retried.value)
            assert [r.rkey for r in (await head.reservation_report()).registrants] == [2]


async def test_preempt_and_abort_ends_the_old_holders_writes_without_failover(
    lb: Loopback,
) -> None:
    """Host B preempts and aborts A while A has writes in flight on both of its paths: each of
    A's writes completes once — done, aborted (0x1B) or refused (Reservation Conflict), all
    with DNR — and none is retried or failed over (they are not path errors)."""
    async with open_host(options(HOSTNQN_A)) as host_a, open_host(options(HOSTNQN_B)) as host_b:
        with trio.fail_after(30):
            for port_id in (1, 2):
                await host_a.connect(HOST, lb.ports[port_id], lb.nqn)
            await host_b.connect(HOST, lb.ports[2], lb.nqn)
            a, b = host_a.namespace(lb.nqn, NSID), host_b.namespace(lb.nqn, NSID)
            await a.reservation_register(RegisterAction.REGISTER, nrkey=0xA)
            await a.reservation_acquire(AcquireAction.ACQUIRE, WE, crkey=0xA)
            await b.reservation_register(RegisterAction.REGISTER, nrkey=0xB)

            outcomes: list[int] = []
            without_dnr: list[IoError] = []

            async def writer(lba: int) -> None:
                while True:
                    try:
                        await a.write(lba, b"\x44" * BLOCK)
                        outcomes.append(0)
                    except IoError as failed:
                        outcomes.append(failed.status.code)
                        if not failed.status.dnr:
                            without_dnr.append(failed)
                        if is_reservation_conflict(failed):
                            return

            async with trio.open_nursery() as writers:
                for lba in range(16):
                    writers.start_soon(writer, lba)
                await lb.wait_until(lambda: len(outcomes) >= 100)
                await b.reservation_acquire(AcquireAction.PREEMPT_AND_ABORT, WE, crkey=0xB,
                                            prkey=0xA)  # fmt: skip
            assert set(outcomes) <= {0, StatusCode.ABORTED_PREEMPT_ABORT,
                                     StatusCode.RESERVATION_CONFLICT}  # fmt: skip
            assert outcomes.count(StatusCode.RESERVATION_CONFLICT) == 16  # every writer ended
            assert not without_dnr
            assert a.stats.failovers == 0 and a.stats.retries == 0
            status = await b.reservation_report()
            assert [(r.rkey, r.holds) for r in status.registrants] == [(0xB, True)]


async def test_a_reservation_command_sent_into_a_blackholed_path_runs_once_elsewhere(
    lb: Loopback,
) -> None:
    """The optimized port goes silent (``port_down`` blackhole: nothing is read or answered)
    just before an Acquire is sent on it; the host finds the path dead by its timeouts, sends
    the Acquire on the other path and gets its one answer from there (the silent port never
    read the first copy)."""
    opts = ControllerOptions(hostnqn=HOSTNQN_A, io_queues=1, queue_size=32, kato_ms=1000,
                             reconnect_delay=0.2, command_timeout=1.0)  # fmt: skip
    async with open_host(opts) as host:
        with trio.fail_after(30):
            for port_id in (1, 2):
                await host.connect(HOST, lb.ports[port_id], lb.nqn)
            head = host.namespace(lb.nqn, NSID)
            await head.reservation_register(RegisterAction.REGISTER, nrkey=5)
            await lb.target.port_down(1, mode="blackhole")
            slot = await head.passthru(
                build_command(IoOpcode.RESERVATION_ACQUIRE, NSID,
                              acquire_cdw10(AcquireAction.ACQUIRE, WE)),
                data_out=build_acquire_data(crkey=5),
            )  # fmt: skip
            assert slot.ok, slot.status
            assert slot.failovers == 1 and slot.path_label == head.paths[1].label
            status = await head.reservation_report()
            assert status.rtype == WE and status.registrants[0].holds
            await lb.target.port_up(1)
