"""Fault rules on the reservation commands (Register 0x0D, Acquire 0x11): they match by opcode
like any other I/O command, so a scenario can make a fencing step fail or lag.

A ``status`` rule answers in the command's place: the reservation rules never run, so the
state is untouched and the namespace's reservation conflict counter (answers of the rules)
does not move, while the command counters do count the answer. A ``delay`` rule runs the
command at once and holds its completion back.
"""

from __future__ import annotations

import time

import pytest
import trio

from initiator.controller import HostController
from nvmeof.constants import IoOpcode
from nvmeof.status import StatusCode
from nvmeof.wire.reservations import ReservationType
from target.control.metrics import target_registry
from tests.integration.conftest import Loopback
from tests.resv_commands import CONFLICT, acquire, register, report

HOST_A = "nqn.2014-08.org.nvmexpress:uuid:0d9c5e2a-6f43-4c52-9a53-1b5c3d4e5f60"
HOST_B = "nqn.2014-08.org.nvmexpress:uuid:7e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b"
KEY = 0x5EED
NSID = 1
DELAY_MS = 300
REGISTER, ACQUIRE = int(IoOpcode.RESERVATION_REGISTER), int(IoOpcode.RESERVATION_ACQUIRE)


async def connect(lb: Loopback, hostnqn: str = HOST_A) -> HostController:
    return await lb.connect(1, hostnqn=hostnqn, io_queues=1, kato_ms=5000, command_timeout=5)


async def run(ctrl: HostController, opcode: int) -> tuple[int, float]:
    """Register (0x0D), or Acquire (0x11) after a registration; (status code, seconds)."""
    if opcode == ACQUIRE:
        assert await register(ctrl, nrkey=KEY, nsid=NSID) == 0
    started = time.perf_counter()
    if opcode == REGISTER:
        done = await register(ctrl, nrkey=KEY, nsid=NSID)
    else:
        done = await acquire(ctrl, 0, ReservationType.WRITE_EXCLUSIVE, KEY, nsid=NSID)
    return (done >> 1) & 0x7FF, time.perf_counter() - started


@pytest.mark.parametrize("opcode", [REGISTER, ACQUIRE], ids=["register", "acquire"])
async def test_a_status_rule_answers_a_reservation_command_in_its_place(
    lb: Loopback, opcode: int
) -> None:
    with trio.fail_after(10):
        ctrl = await connect(lb)
        rule = lb.target.fault_add({"action": "status", "opcode": opcode,
                                    "status": StatusCode.RESERVATION_CONFLICT, "dnr": True})  # fmt: skip
        sqe_status, _ = await run(ctrl, opcode)
        assert sqe_status == StatusCode.RESERVATION_CONFLICT
        assert rule.fired == 1
        resv = lb.target.state.subsystems[lb.nqn].namespaces[NSID].reservations
        assert resv is not None
        # Nothing happened on the namespace: the rules never saw the command.
        assert resv.holder is None and resv.conflicts == 0
        assert len(resv.registrants) == (1 if opcode == ACQUIRE else 0)
        registry = target_registry(lb.target)
        name = "reservation_register" if opcode == REGISTER else "reservation_acquire"
        assert registry.get_sample_value("nvmeof_target_commands_total", {
            "port": "1", "opcode": name, "status": "reservation_conflict"}) == 1  # fmt: skip
        assert registry.get_sample_value("nvmeof_target_reservation_conflicts_total",
                                         {"subsystem": lb.nqn, "nsid": str(NSID)}) == 0  # fmt: skip
        # Without the rule, the same command goes through.
        lb.target.fault_clear()
        if opcode == REGISTER:
            assert await register(ctrl, nrkey=KEY, nsid=NSID) == 0
        else:
            assert await acquire(ctrl, 0, ReservationType.WRITE_EXCLUSIVE, KEY, nsid=NSID) == 0
            assert resv.holder == ctrl.options.hostid


@pytest.mark.parametrize("opcode", [REGISTER, ACQUIRE], ids=["register", "acquire"])
async def test_a_delay_rule_holds_a_reservation_command_back(lb: Loopback, opcode: int) -> None:
    with trio.fail_after(10):
        ctrl = await connect(lb)
        lb.target.fault_add({"action": "delay", "opcode": opcode, "delay_ms": DELAY_MS})
        sqe_status, elapsed = await run(ctrl, opcode)
        assert sqe_status == 0 and elapsed >= DELAY_MS / 1000
        seen = await report(ctrl, nsid=NSID)  # another opcode: not delayed, and the change is there
        assert seen.regctl == 1
        assert seen.rtype == (ReservationType.WRITE_EXCLUSIVE if opcode == ACQUIRE else 0)


async def test_a_rule_for_one_host_fails_only_that_hosts_acquire(lb: Loopback) -> None:
    """A fencing race made one-sided: B's acquire is refused by the rule, A's goes through."""
    with trio.fail_after(10):
        a, b = await connect(lb, HOST_A), await connect(lb, HOST_B)
        for ctrl in (a, b):
            assert await register(ctrl, nrkey=KEY, nsid=NSID) == 0
        lb.target.fault_add({"action": "status", "opcode": ACQUIRE, "host": HOST_B,
                             "status": StatusCode.RESERVATION_CONFLICT, "dnr": True})  # fmt: skip
        refused = await acquire(b, 0, ReservationType.EXCLUSIVE_ACCESS, KEY, nsid=NSID)
        assert refused == CONFLICT
        assert await acquire(a, 0, ReservationType.EXCLUSIVE_ACCESS, KEY, nsid=NSID) == 0
        seen = await report(a, nsid=NSID)
        assert seen.rtype == ReservationType.EXCLUSIVE_ACCESS
        assert [r.holds for r in seen.registrants] == [True, False]
