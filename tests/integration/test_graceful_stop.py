"""A graceful stop (docs/DURABILITY.md): the target stops accepting, lets the commands it is
executing finish and sends their completions, then closes its connections; a command still
running at the drain timeout is not answered and its connection closes. Writes are held by a
delay fault rule (they are executed at once, their completions held back), so the stop comes
while they are in flight; the host is our initiator's controller, which does not retry: every
completion it returns is the one the target sent before closing."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from initiator.controller import ControllerOptions, HostController, connect_controller
from initiator.queue import QueueClosed
from nvmeof.constants import IoOpcode
from nvmeof_emu import TargetProcess
from target.config import NamespaceConfig, PortConfig, SubsystemConfig, TargetConfig
from target.daemon import Target

NQN = "nqn.2026-11.io.nvmeof-emu:drain"
BLOCK = 4096
WRITES = 8
HOLD_MS = 500  # each write's completion is held this long by the fault rule


def pattern(seed: int) -> bytes:
    blocks = (hashlib.sha256(f"{seed}/{i}".encode()).digest() for i in range(BLOCK // 32))
    return b"".join(blocks)


def config(image: Path) -> TargetConfig:
    ns = NamespaceConfig(nsid=1, size=1 << 20, block_size=BLOCK, backend="file", path=str(image))
    return TargetConfig(subsystems=(SubsystemConfig(nqn=NQN, namespaces=(ns,)),),
                        ports=(PortConfig(id=1, port=0, subsystems=(NQN,)),))  # fmt: skip


def hold_writes(target: Target, delay_ms: int) -> None:
    target.fault_add({"action": "delay", "opcode": IoOpcode.WRITE, "delay_ms": delay_ms})


async def connect(nursery: trio.Nursery, port: int) -> HostController:
    options = ControllerOptions(io_queues=1, command_timeout=30)
    return await connect_controller(nursery, "127.0.0.1", port, NQN, options)


async def write(ctrl: HostController, slba: int, results: dict[int, Any]) -> None:
    """One write; its completion status, or the error that ended it."""
    try:
        results[slba] = (await ctrl.write(1, slba, pattern(slba), BLOCK)).status_word & 0xFFFE
    except QueueClosed as err:
        results[slba] = err


def executing(target: Target) -> int:
    return sum(queue.executing for queue in target.connections)


async def until(condition: Any) -> None:
    while not condition():  # noqa: ASYNC110 - the target's own state, no event to wait on
        await trio.sleep(0.005)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "nvmeof.target"]


def block_in_file(image: Path, slba: int) -> bytes:
    with image.open("rb") as file:
        return os.pread(file.fileno(), BLOCK, slba * BLOCK)


async def test_stop_answers_every_write_in_flight_before_closing(
    tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nvmeof.target")
    image = tmp_path / "ns1.img"
    target = Target(config(image))
    results: dict[int, Any] = {}
    with trio.fail_after(20):
        async with trio.open_nursery() as serving:
            await serving.start(target.serve)
            hold_writes(target, HOLD_MS)
            ctrl = await connect(nursery, target.ports[1].bound_port)
            async with trio.open_nursery() as host:
                for slba in range(WRITES):
                    host.start_soon(write, ctrl, slba, results)
                await until(lambda: executing(target) == WRITES)
                target.stop()
                # sent after the stop: not started, never answered, the data never written
                host.start_soon(write, ctrl, WRITES, results)
        # serve() returned: everything is closed
    assert [results[slba] for slba in range(WRITES)] == [0] * WRITES
    assert isinstance(results[WRITES], QueueClosed) or results[WRITES] != 0
    assert ctrl.io_queues[0].closed and ctrl.admin.closed
    for slba in range(WRITES):
        assert block_in_file(image, slba) == pattern(slba)
    assert block_in_file(image, WRITES) == bytes(BLOCK)
    log = messages(caplog)
    assert f"draining {WRITES} commands connections=2 drain_timeout=5.0" in log
    assert any(m.startswith(f"stopped after draining {WRITES} commands in ") for m in log)
    assert not any(m.startswith("drain timeout") for m in log)


async def test_a_command_past_the_drain_timeout_is_not_answered_and_its_connection_closes(
    tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nvmeof.target")
    target = Target(config(tmp_path / "ns1.img"), drain_timeout=0.2)
    results: dict[int, Any] = {}
    with trio.fail_after(20):
        async with trio.open_nursery() as serving:
            await serving.start(target.serve)
            hold_writes(target, 60_000)  # far beyond the drain timeout
            ctrl = await connect(nursery, target.ports[1].bound_port)
            async with trio.open_nursery() as host:
                host.start_soon(write, ctrl, 3, results)
                await until(lambda: executing(target) == 1)
                target.stop()
    assert isinstance(results[3], QueueClosed) or results[3] != 0  # never acknowledged
    assert ctrl.io_queues[0].closed
    log = messages(caplog)
    assert "draining 1 commands connections=2 drain_timeout=0.2" in log
    assert any(m.startswith("drain timeout: 1 commands still executing after 0.2 s") for m in log)
    assert any(m.startswith("stopped after draining 0 commands in ") for m in log)


def process_config(image: Path) -> dict[str, Any]:
    return {
        "subsystem": [{"nqn": NQN, "namespace": [
            {"nsid": 1, "size": "1MiB", "block_size": BLOCK, "backend": "file",
             "path": str(image)},
        ]}],
        "port": [{"id": 1, "addr": "127.0.0.1", "port": 0, "subsystems": [NQN]}],
        "fault": [{"action": "delay", "opcode": int(IoOpcode.WRITE), "delay_ms": HOLD_MS}],
    }  # fmt: skip


async def test_sigterm_drains_the_daemon(tmp_path: Path, nursery: trio.Nursery) -> None:
    image = tmp_path / "ns1.img"
    results: dict[int, Any] = {}
    target = TargetProcess(process_config(image), workdir=tmp_path / "run", pcap=False)
    with target, trio.fail_after(60):
        ctrl = await connect(nursery, target.ports[1][1])
        async with trio.open_nursery() as host:
            for slba in range(WRITES):
                host.start_soon(write, ctrl, slba, results)

            def fired() -> float:
                return target.metrics().value("nvmeof_target_faults_fired_total", action="delay")

            while await trio.to_thread.run_sync(fired) < WRITES:  # noqa: ASYNC110 - another process
                await trio.sleep(0.01)
            await trio.to_thread.run_sync(target.stop)  # SIGTERM, then wait for the exit
        assert [results[slba] for slba in range(WRITES)] == [0] * WRITES
        log = target.log
        assert f"draining {WRITES} commands" in log
        assert f"stopped after draining {WRITES} commands" in log
    for slba in range(WRITES):
        assert block_in_file(image, slba) == pattern(slba)
