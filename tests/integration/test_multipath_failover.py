"""Initiator acceptance over real loopback sockets: ring I/O across both demo ports, paths
killed mid-load, ANA flips, passthrough failover, and what happens when no path is left.

Rules: every test runs against an in-process target bound to free ports (the demo's subsystem
and namespaces), every phase is bounded with ``fail_after``, and servers stop at teardown.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import AsyncIterator, Callable

import pytest
import trio

from initiator import ControllerOptions, Host, MultipathHead, open_host
from initiator.multipath import NO_PATH_STATUS
from initiator.ring import Ring
from nvmeof.constants import AnaState, IoOpcode
from target.config import DEMO_NQN, default_config, with_free_ports
from target.daemon import Target

HOST = "127.0.0.1"
MIB = 1 << 20


@pytest.fixture
async def target(nursery: trio.Nursery) -> AsyncIterator[Target]:
    served: Target = await nursery.start(Target(with_free_ports(default_config())).serve)
    yield served
    served.stop()


def options(**overrides: float) -> ControllerOptions:
    values: dict[str, float] = {"reconnect_delay": 0.2, "command_timeout": 10.0}
    values.update(overrides)
    return ControllerOptions(io_queues=2, queue_size=64, **values)  # type: ignore[arg-type]


async def connect_both(host: Host, target: Target) -> MultipathHead:
    for port_id in (1, 2):
        await host.connect(HOST, target.ports[port_id].bound_port, DEMO_NQN)
    return host.namespace(DEMO_NQN, 1)


def kill_port(target: Target, port_id: int) -> int:
    """Close every connection of a port from the target side (the path dies)."""
    victims = [c for c in target.connections if c.port.id == port_id]
    for conn in victims:
        conn.close("killed by the test")
    return len(victims)


async def until(condition: Callable[[], bool]) -> None:
    """Poll a condition the host updates from its own tasks (bounded by the caller)."""
    while not condition():  # noqa: ASYNC110 - state changed by background tasks, no event
        await trio.sleep(0.01)


def pattern(unit: int, size: int, generation: int = 1) -> bytes:
    seed = hashlib.sha256(struct.pack("<QQ", unit, generation)).digest()
    return (seed * (size // len(seed) + 1))[:size]


async def pump(ring: Ring, head: MultipathHead, *, op: str, units: int, unit_bytes: int,
               qd: int, base_lba: int = 0) -> tuple[int, int, set[str]]:  # fmt: skip
    """Keep ``qd`` ring slots busy until ``units`` I/Os completed; returns (ok, failed, paths)."""
    nblocks = unit_bytes // head.block_size
    submitted = completed = failed = 0
    paths: set[str] = set()
    buffers = {}
    while completed < units:
        while submitted < units:
            slot = ring.get_sqe()
            if slot is None:
                break
            lba = base_lba + submitted * nblocks
            if op == "write":
                slot.prep_write(lba, nblocks, pattern(submitted, unit_bytes), user_data=submitted)
            else:
                buffers[submitted] = bytearray(unit_bytes)
                slot.prep_read(lba, nblocks, buffers[submitted], user_data=submitted)
            submitted += 1
        await ring.submit_and_wait(1)
        for cqe in ring.completions():
            completed += 1
            paths.add(cqe.path_label)
            expected = pattern(cqe.user_data, unit_bytes) if op == "read" else b""
            if not cqe.ok or (op == "read" and buffers.pop(cqe.user_data) != expected):
                failed += 1
    assert ring.inflight == 0 and ring.ready == 0
    return completed - failed, failed, paths  # fmt: skip


async def test_256mib_verified_through_the_ring_with_a_path_killed_mid_load(
    target: Target, nursery: trio.Nursery
) -> None:
    unit = 64 * 1024
    units = 256 * MIB // unit
    async with open_host(options()) as host:
        head = await connect_both(host, target)
        ring = head.ring(32)

        async def kill_after(delay: float) -> None:
            await trio.sleep(delay)
            assert kill_port(target, 1) > 0

        with trio.fail_after(120):
            nursery.start_soon(kill_after, 0.3)
            ok, failed, _ = await pump(ring, head, op="write", units=units, unit_bytes=unit, qd=32)
            assert (ok, failed) == (units, 0)
            requeued = head.stats.requeued
            assert requeued > 0, "the kill should have caught commands in flight"
            assert head.stats.failed == 0
            ok, failed, _ = await pump(ring, head, op="read", units=units, unit_bytes=unit, qd=32)
            assert (ok, failed) == (units, 0)
        # Every command is accounted for: completions per path add up to what was issued.
        assert sum(p.stats.ios for p in head.paths) == 2 * units
        assert head.queued == 0


async def test_ana_inaccessible_moves_io_to_the_other_path(target: Target) -> None:
    async with open_host(options()) as host:
        head = await connect_both(host, target)
        optimized, other = head.paths
        assert optimized.ana_state is AnaState.OPTIMIZED
        ring = head.ring(16)
        with trio.fail_after(30):
            await pump(ring, head, op="write", units=200, unit_bytes=4096, qd=16)
            assert optimized.stats.ios == 200 and other.stats.ios == 0
            target.state.set_ana_state(1, 1, AnaState.INACCESSIBLE)
            ok, failed, _ = await pump(ring, head, op="read", units=200, unit_bytes=4096, qd=16)
            assert (ok, failed) == (200, 0)
            # The AEN (or the first ANA error) made the host re-read the log: I/O moved.
            assert other.stats.ios > 0
            await until(lambda: optimized.ana_state is AnaState.INACCESSIBLE)
            before = optimized.stats.ios
            await pump(ring, head, op="read", units=100, unit_bytes=4096, qd=16)
            assert optimized.stats.ios == before
            # Back to optimized: the head returns to the first path (numa policy).
            target.state.set_ana_state(1, 1, AnaState.OPTIMIZED)
            await until(lambda: optimized.ana_state is AnaState.OPTIMIZED)
            await pump(ring, head, op="read", units=100, unit_bytes=4096, qd=16)
            assert optimized.stats.ios > before


async def test_passthrough_command_fails_over_like_a_read(target: Target) -> None:
    async with open_host(options()) as host:
        head = await connect_both(host, target)
        data = pattern(7, 8 * 512)
        await head.write(100, data)
        ring = head.ring(8)
        with trio.fail_after(30):
            # A raw Read SQE; the target answers ANA Inaccessible on port 1 -> failover. The
            # state is changed without an AEN so that only the I/O status tells the host.
            target.ports[1].ana[1] = AnaState.INACCESSIBLE
            cmd = bytearray(64)
            cmd[0] = IoOpcode.READ
            cmd[4:8] = (1).to_bytes(4, "little")
            struct.pack_into("<QH", cmd, 40, 100, 7)
            original = bytes(cmd)
            buffer = bytearray(len(data))
            slot = ring.get_sqe()
            assert slot is not None
            slot.prep_cmd(cmd, data_in=buffer, user_data="raw")
            copy = slot.cmd
            await ring.submit_and_wait(1)
            cqe = ring.peek_cqe()
            assert cqe is slot and cqe.ok and buffer == data
            assert cqe.failovers == 1 and cqe.path_label == head.paths[1].label
            assert slot.cmd is copy and bytes(slot.cmd) == original  # the stable copy
            ring.cqe_seen(cqe)


async def test_no_usable_path_fails_only_after_ctrl_loss_tmo(target: Target) -> None:
    opts = options(ctrl_loss_tmo=1.0, reconnect_delay=0.2)
    async with open_host(opts) as host:
        head = await connect_both(host, target)
        for port in target.ports.values():
            port.enabled = False  # reconnects are refused from now on
        kill_port(target, 1)
        kill_port(target, 2)
        ring = head.ring(4)
        slot = ring.get_sqe()
        assert slot is not None
        slot.prep_read(0, 1, bytearray(512))
        started = trio.current_time()
        with trio.fail_after(20):
            await ring.submit_and_wait(1)
        waited = trio.current_time() - started
        assert slot.status_word == NO_PATH_STATUS
        assert head.stats.failed == 1
        assert waited >= 0.5  # queued while a controller could still come back
        assert all(not s.may_recover for s in host.sessions)


async def test_round_robin_uses_both_optimized_paths(target: Target) -> None:
    target.state.set_ana_state(2, 1, AnaState.OPTIMIZED)
    async with open_host(options(), iopolicy="round-robin") as host:
        head = await connect_both(host, target)
        ring = head.ring(16)
        with trio.fail_after(30):
            _, failed, paths = await pump(ring, head, op="write", units=400, unit_bytes=4096,
                                          qd=16)  # fmt: skip
        assert failed == 0 and len(paths) == 2
        head.set_iopolicy("numa")
        before = [p.stats.ios for p in head.paths]
        await pump(ring, head, op="read", units=100, unit_bytes=4096, qd=16)
        deltas = [p.stats.ios - b for p, b in zip(head.paths, before, strict=True)]
        assert sorted(deltas) == [0, 100]
