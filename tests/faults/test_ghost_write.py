"""The ghost-write fault: a write held on a path that dies lands on the media later and
overwrites what the host wrote since through another path — the hazard a host's failover must
respect (Command Quiesce Time). Also the fault kinds the matrix does not drive: drop, stall,
close-after-N and corrupt data digest."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from initiator import ControllerOptions, open_host
from nvmeof.constants import AnaState, IoOpcode
from target.config import DEMO_NQN, NamespaceConfig, PortConfig, SubsystemConfig, TargetConfig
from target.daemon import Target

HOST = "127.0.0.1"
BLOCKS = 8
SIZE = BLOCKS * 512


def config(cqt_ms: int = 0) -> TargetConfig:
    ns = NamespaceConfig(nsid=1, size=4 << 20, block_size=512)
    return TargetConfig(
        subsystems=(SubsystemConfig(nqn=DEMO_NQN, namespaces=(ns,), cqt_ms=cqt_ms),),
        ports=(
            PortConfig(id=1, port=0, subsystems=(DEMO_NQN,),
                       ana_states=((1, AnaState.OPTIMIZED),)),
            PortConfig(id=2, port=0, subsystems=(DEMO_NQN,),
                       ana_states=((1, AnaState.NON_OPTIMIZED),)),
        ),
    )  # fmt: skip


@pytest.fixture
async def target(nursery: trio.Nursery) -> AsyncIterator[Target]:
    served: Target = await nursery.start(Target(config()).serve)
    yield served
    served.stop()


def options(**extra: float) -> ControllerOptions:
    values: dict[str, float] = {"reconnect_delay": 0.2, "command_timeout": 2.0, "kato_ms": 1000}
    values.update(extra)
    return ControllerOptions(io_queues=1, **values)  # type: ignore[arg-type]


async def test_ghost_write_overwrites_the_retry_without_quiesce(target: Target,
                                                                nursery: trio.Nursery) -> None:  # fmt: skip
    target.fault_add({"action": "ghost-write", "port": 1, "opcode": IoOpcode.WRITE,
                      "delay_ms": 800, "count": 1})  # fmt: skip
    stale, fresh = b"\xaa" * SIZE, b"\x55" * SIZE
    async with open_host(options()) as host:
        for port_id in (1, 2):
            await host.connect(HOST, target.ports[port_id].bound_port, DEMO_NQN)
        head = host.namespace(DEMO_NQN, 1)
        with trio.fail_after(20):

            async def kill_path_soon() -> None:
                await trio.sleep(0.2)  # the first write is being held as a ghost
                await target.port_down(1, "reset")

            nursery.start_soon(kill_path_soon)
            await head.write(0, stale)  # held on port 1, the path dies, failed over to port 2
            assert head.stats.requeued >= 1
            await head.write(0, fresh)  # the host moves on: newer data through port 2
            assert await head.read(0, BLOCKS) == fresh
            await trio.sleep(1.0)  # ... until the ghost lands on the media
            assert await head.read(0, BLOCKS) == stale
        assert target.state.faults_fired.get("ghost-write") == 1


def write_command(slba: int, nblocks: int) -> bytes:
    """A raw NVM Write SQE for ring passthrough (NSID 1; the ring fills CID and SGL)."""
    sqe = bytearray(64)
    sqe[0] = IoOpcode.WRITE
    sqe[4:8] = (1).to_bytes(4, "little")
    sqe[40:48] = slba.to_bytes(8, "little")
    sqe[48:50] = (nblocks - 1).to_bytes(2, "little")
    return bytes(sqe)


@pytest.mark.parametrize("kind", ["block", "passthrough"])
async def test_cqt_above_the_ghost_delay_keeps_the_newer_data(
    kind: str, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    target: Target = await nursery.start(Target(config(cqt_ms=1500)).serve)
    target.fault_add({"action": "ghost-write", "port": 1, "opcode": IoOpcode.WRITE,
                      "delay_ms": 800, "count": 1})  # fmt: skip
    stale, fresh = b"\xaa" * SIZE, b"\x55" * SIZE
    async with open_host(options()) as host:
        for port_id in (1, 2):
            await host.connect(HOST, target.ports[port_id].bound_port, DEMO_NQN)
        head = host.namespace(DEMO_NQN, 1)
        assert [s.cqt for s in host.sessions] == [1.5, 1.5]  # read from Identify Controller
        with trio.fail_after(20):

            async def kill_path_soon() -> None:
                await trio.sleep(0.2)
                await target.port_down(1, "reset")

            nursery.start_soon(kill_path_soon)
            started = trio.current_time()
            if kind == "block":
                await head.write(0, stale)
            else:
                done = await head.passthru(write_command(0, BLOCKS), data_out=stale)
                assert done.status_word == 0
            # held until the lost controller's quiesce deadline (loss + CQT), not sent at once
            assert trio.current_time() - started >= 0.2 + 1.5 - 0.05
            assert head.stats.quiesce_held == 1
            await head.write(0, fresh)
            await trio.sleep(1.0)  # the ghost landed long ago, before the retry: nothing more
            assert await head.read(0, BLOCKS) == fresh
        assert target.state.faults_fired.get("ghost-write") == 1
        assert not [r for r in caplog.records if "deliberate violation" in r.getMessage()]
    target.stop()


async def test_a_ghost_beyond_the_advertised_cqt_says_it_is_a_violation(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    target: Target = await nursery.start(Target(config(cqt_ms=100)).serve)
    target.fault_add({"action": "ghost-write", "port": 1, "opcode": IoOpcode.WRITE,
                      "delay_ms": 600, "count": 1})  # fmt: skip
    async with open_host(options()) as host:
        await host.connect(HOST, target.ports[1].bound_port, DEMO_NQN)
        head = host.namespace(DEMO_NQN, 1)
        with trio.fail_after(20):
            async with trio.open_nursery() as writers:
                writers.start_soon(head.write, 0, b"\x01" * SIZE)
                await trio.sleep(0.2)
                await target.port_down(1, "reset")
                await trio.sleep(0.8)
                writers.cancel_scope.cancel()
    (warning,) = [r for r in caplog.records if "deliberate violation" in r.getMessage()]
    assert "command quiesce time of 100 ms" in warning.getMessage()
    target.stop()


async def test_drop_makes_the_host_time_out_and_fail_over(target: Target) -> None:
    target.fault_add({"action": "drop", "port": 1, "opcode": IoOpcode.READ, "count": 1})
    async with open_host(options(command_timeout=1.0)) as host:
        for port_id in (1, 2):
            await host.connect(HOST, target.ports[port_id].bound_port, DEMO_NQN)
        head = host.namespace(DEMO_NQN, 1)
        with trio.fail_after(20):
            await head.write(0, b"\x11" * SIZE)
            assert await head.read(0, BLOCKS) == b"\x11" * SIZE  # after the I/O timeout
        assert head.stats.requeued >= 1
        assert target.state.faults_fired.get("drop") == 1


async def test_stall_delays_but_does_not_lose(target: Target) -> None:
    target.fault_add({"action": "stall", "port": 1, "direction": "tx", "duration_ms": 400,
                      "count": 1})  # fmt: skip
    async with open_host(options()) as host:
        await host.connect(HOST, target.ports[1].bound_port, DEMO_NQN)
        head = host.namespace(DEMO_NQN, 1)
        with trio.fail_after(20):
            started = trio.current_time()
            await head.write(0, b"\x22" * SIZE)
            assert trio.current_time() - started >= 0.3
            assert await head.read(0, BLOCKS) == b"\x22" * SIZE
        assert head.stats.failed == 0


async def test_close_after_n_commands(target: Target) -> None:
    target.fault_add({"action": "close", "port": 1, "after": 5, "count": 1})
    async with open_host(options()) as host:
        for port_id in (1, 2):
            await host.connect(HOST, target.ports[port_id].bound_port, DEMO_NQN)
        head = host.namespace(DEMO_NQN, 1)
        with trio.fail_after(20):
            for lba in range(10):
                await head.write(lba * BLOCKS, bytes([lba]) * SIZE)
            for lba in range(10):
                assert await head.read(lba * BLOCKS, BLOCKS) == bytes([lba]) * SIZE
        assert head.stats.failed == 0
        assert head.paths[0].session.reconnects >= 1 or head.stats.requeued >= 1


async def test_corrupt_data_digest_is_retried(target: Target) -> None:
    target.fault_add({"action": "corrupt-ddgst", "port": 1, "opcode": IoOpcode.READ,
                      "count": 2})  # fmt: skip
    async with open_host(ControllerOptions(io_queues=1, header_digest=True,
                                           data_digest=True)) as host:  # fmt: skip
        await host.connect(HOST, target.ports[1].bound_port, DEMO_NQN)
        head = host.namespace(DEMO_NQN, 1)
        with trio.fail_after(20):
            await head.write(0, b"\x33" * SIZE)
            # Data Transfer Error (0x004, no DNR) -> retried on the same path, then good data.
            assert await head.read(0, BLOCKS) == b"\x33" * SIZE
        assert head.stats.retries == 2
        assert target.state.faults_fired.get("corrupt-ddgst") == 2
