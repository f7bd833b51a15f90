"""Fault-injection matrix over real loopback: every fault the target knows x read, write and
passthrough I/O through the initiator's ring.

While a path is usable no I/O may fail and every read must verify; the counters on both sides
must show what happened. Rules: in-process target on free ports, short host timeouts so that
detection takes about a second, every test bounded by ``fail_after``. Recovery times are
measured by benchmarks, not asserted here.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from initiator import ControllerOptions, Host, MultipathHead, open_host
from initiator.multipath import NO_PATH_STATUS
from initiator.ring import Ring
from nvmeof.constants import AnaState, IoOpcode
from target.config import DEMO_NQN, NamespaceConfig, PortConfig, SubsystemConfig, TargetConfig
from target.daemon import Target

HOST = "127.0.0.1"
BLOCK = 512
UNIT = 8  # blocks per I/O (4 KiB)
UNITS = 240
QD = 16


def config(ports: tuple[int, int] = (0, 0), file: Path | None = None) -> TargetConfig:
    ns = NamespaceConfig(nsid=1, size=16 << 20, block_size=BLOCK,
                         backend="file" if file else "ram", path=str(file) if file else None)  # fmt: skip
    return TargetConfig(
        subsystems=(SubsystemConfig(nqn=DEMO_NQN, namespaces=(ns,)),),
        ports=(
            PortConfig(id=1, port=ports[0], subsystems=(DEMO_NQN,),
                       ana_states=((1, AnaState.OPTIMIZED),)),
            PortConfig(id=2, port=ports[1], subsystems=(DEMO_NQN,),
                       ana_states=((1, AnaState.NON_OPTIMIZED),)),
        ),
    )  # fmt: skip


def options(**extra: object) -> ControllerOptions:
    values: dict[str, object] = dict(io_queues=2, queue_size=32, kato_ms=1000,
                                     reconnect_delay=0.2, command_timeout=1.5,
                                     ctrl_loss_tmo=30.0)  # fmt: skip
    values.update(extra)
    return ControllerOptions(**values)  # type: ignore[arg-type]


def pattern(unit: int, generation: int) -> bytes:
    seed = hashlib.sha256(struct.pack("<II", unit, generation)).digest()
    return seed * (UNIT * BLOCK // len(seed))


def raw_command(opcode: int, slba: int) -> bytes:
    cmd = bytearray(64)
    cmd[0] = opcode
    cmd[4:8] = (1).to_bytes(4, "little")
    struct.pack_into("<QH", cmd, 40, slba, UNIT - 1)
    return bytes(cmd)


@dataclass
class Outcome:
    completed: int = 0
    failed: int = 0
    mismatched: int = 0
    statuses: tuple[int, ...] = ()


async def run_io(head: MultipathHead, op: str, generation: int, *, units: int = UNITS,
                 passthrough: bool = False,
                 midway: Callable[[], None] | None = None) -> Outcome:  # fmt: skip
    """``units`` I/Os of ``op`` at QD ``QD``; reads check the data of ``generation``.
    ``midway`` is called once, with I/O in flight, after a tenth of the I/Os completed."""
    ring = Ring(head, QD)
    out = Outcome()
    statuses = []
    submitted = 0
    while out.completed < units:
        while submitted < units:
            slot = ring.get_sqe()
            if slot is None:
                break
            unit = submitted % UNITS  # longer runs go over the same units again
            slba = unit * UNIT
            if op == "write":
                data = pattern(unit, generation)
                if passthrough:
                    slot.prep_cmd(raw_command(IoOpcode.WRITE, slba), data_out=data,
                                  user_data=unit)  # fmt: skip
                else:
                    slot.prep_write(slba, UNIT, data, user_data=unit)
            else:
                buffer = bytearray(UNIT * BLOCK)
                if passthrough:
                    slot.prep_cmd(raw_command(IoOpcode.READ, slba), data_in=buffer,
                                  user_data=(unit, buffer))  # fmt: skip
                else:
                    slot.prep_read(slba, UNIT, buffer, user_data=(unit, buffer))
            submitted += 1
        await ring.submit_and_wait(1)
        if midway is not None and out.completed >= units // 10:
            midway()
            midway = None
        for cqe in ring.completions():
            out.completed += 1
            if not cqe.ok:
                out.failed += 1
                statuses.append(cqe.status_word)
            elif op == "read":
                unit, buffer = cqe.user_data
                if buffer != pattern(unit, generation):
                    out.mismatched += 1
    out.statuses = tuple(statuses)
    return out


# -- the faults ----------------------------------------------------------------------------------

Fault = Callable[[Target], Awaitable[None]]
Restore = Callable[[Target], Awaitable[None]]


async def reset(t: Target) -> None:
    await t.port_down(1, "reset")


async def close(t: Target) -> None:
    await t.port_down(1, "close")


async def blackhole(t: Target) -> None:
    await t.port_down(1, "blackhole")


async def port_up(t: Target) -> None:
    await t.port_up(1)


async def ana_inaccessible(t: Target) -> None:
    t.set_ana(1, 1, AnaState.INACCESSIBLE)


async def ana_optimized(t: Target) -> None:
    t.set_ana(1, 1, AnaState.OPTIMIZED)


async def ana_change_then_optimized(t: Target) -> None:
    await t.set_ana_via_change(1, 1, AnaState.OPTIMIZED, after_ms=400)


async def path_error_status(t: Target) -> None:
    t.fault_add({"action": "status", "status": 0x370, "port": 1, "count": 40})


async def clear_faults(t: Target) -> None:
    t.fault_clear()


async def corrupt_header_digest(t: Target) -> None:
    t.fault_add({"action": "corrupt-hdgst", "port": 1, "count": 1})


async def delay_beyond_timeout(t: Target) -> None:
    t.fault_add({"action": "delay", "delay_ms": 3000, "port": 1, "count": 4})


async def nothing(t: Target) -> None:
    return None


FAULTS: dict[str, tuple[Fault, Restore, dict[str, object]]] = {
    "reset": (reset, port_up, {}),
    "close": (close, port_up, {}),
    "blackhole": (blackhole, port_up, {}),
    "ana-inaccessible": (ana_inaccessible, ana_optimized, {}),
    "ana-change-then-optimized": (ana_change_then_optimized, nothing, {}),
    "path-error-status": (path_error_status, clear_faults, {}),
    "digest-corruption": (corrupt_header_digest, clear_faults,
                          {"header_digest": True, "data_digest": True}),
    "delay-beyond-io-timeout": (delay_beyond_timeout, clear_faults, {}),
}  # fmt: skip
#: A path error status without an ANA change fails over through path selection, which (numa,
#: like the kernel) picks the same optimized path again: only connection-level faults and ANA
#: states move I/O to the other port.
EXPECT_OTHER_PATH = {"reset", "close", "blackhole", "digest-corruption", "delay-beyond-io-timeout",
                     "ana-inaccessible", "ana-change-then-optimized"}  # fmt: skip
#: Faults after which the host must have requeued commands.
EXPECT_FAILOVER = {"reset", "close", "blackhole", "path-error-status", "digest-corruption",
                   "delay-beyond-io-timeout"}  # fmt: skip


@pytest.fixture
async def target(nursery: trio.Nursery) -> AsyncIterator[Target]:
    served: Target = await nursery.start(Target(config()).serve)
    yield served
    served.stop()


async def connect(host: Host, target: Target) -> MultipathHead:
    for port_id in (1, 2):
        await host.connect(HOST, target.ports[port_id].bound_port, DEMO_NQN)
    return host.namespace(DEMO_NQN, 1)


@pytest.mark.parametrize("op", ["read", "write", "passthrough"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_fault_matrix(target: Target, fault: str, op: str, nursery: trio.Nursery) -> None:
    inject, restore, extra = FAULTS[fault]
    async with open_host(options(**extra)) as host:
        head = await connect(host, target)
        passthrough = op == "passthrough"
        with trio.fail_after(40):
            # Known data everywhere first (generation 1), so reads during the fault verify.
            assert (await run_io(head, "write", 1)).failed == 0
            io_op = "write" if op == "write" else "read"
            generation = 2 if io_op == "write" else 1

            outcome = await run_io(head, io_op, generation, units=UNITS * 4,
                                   passthrough=passthrough,
                                   midway=lambda: nursery.start_soon(inject, target))  # fmt: skip
            assert outcome.failed == 0, f"failed I/O: {[hex(s) for s in outcome.statuses]}"
            assert outcome.mismatched == 0
            await restore(target)
            # Everything written during the fault reads back, whichever path served it.
            check = await run_io(head, "read", generation, units=UNITS)
            assert (check.failed, check.mismatched) == (0, 0)
        stats = head.stats
        assert stats.failed == 0
        if fault in EXPECT_FAILOVER:
            assert stats.requeued > 0, f"{fault}: expected commands to fail over"
        if fault in EXPECT_OTHER_PATH:
            assert head.paths[1].stats.ios > 0, f"{fault}: I/O should have moved to port 2"
        if fault in ("path-error-status", "digest-corruption", "delay-beyond-io-timeout"):
            assert target.state.faults_fired, "the target counted the fault"
        if fault == "path-error-status":
            # Both sides agree: every status the target injected made the host requeue once.
            assert stats.requeued == target.state.faults_fired["status"] == 40


async def test_target_restart_with_file_namespace(tmp_path: Path) -> None:
    image = tmp_path / "ns1.img"
    async with trio.open_nursery() as nursery:
        first: Target = await nursery.start(Target(config(file=image)).serve)
        ports = (first.ports[1].bound_port, first.ports[2].bound_port)
        async with open_host(options()) as host:
            head = await connect(host, first)
            with trio.fail_after(40):
                assert (await run_io(head, "write", 7)).failed == 0
                first.stop()  # every path dies; the host keeps reconnecting

                async def restart() -> None:
                    await trio.sleep(0.5)
                    await nursery.start(Target(config(ports, file=image)).serve)

                nursery.start_soon(restart)
                outcome = await run_io(head, "read", 7)  # parked, then served after restart
                assert (outcome.failed, outcome.mismatched) == (0, 0)
                assert head.stats.no_path_queued > 0 or head.stats.requeued > 0
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("knob", ["ctrl_loss_tmo", "fast_io_fail_tmo"])
async def test_no_usable_path_fails_after_the_timeout(target: Target, knob: str) -> None:
    extra = {"ctrl_loss_tmo": 1.0} if knob == "ctrl_loss_tmo" else {"fast_io_fail_tmo": 1.0}
    async with open_host(options(**extra)) as host:
        head = await connect(host, target)
        await target.port_down(1, "reset")
        await target.port_down(2, "reset")
        ring = Ring(head, 4)
        slot = ring.get_sqe()
        assert slot is not None
        slot.prep_read(0, UNIT, bytearray(UNIT * BLOCK))
        started = trio.current_time()
        with trio.fail_after(20):
            await ring.submit_and_wait(1)
        assert slot.status_word == NO_PATH_STATUS  # Host Path Error + DNR: "no available path"
        assert trio.current_time() - started >= 0.5
        assert head.stats.failed == 1
