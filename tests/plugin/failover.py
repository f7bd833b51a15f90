"""The failover story both failover tests tell, whichever way the target runs: I/O verified
through a multipath head while the optimized path is reset, then proven from metrics."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import trio

from nvmeof_emu import ConnectedHost, IoResult, Metrics

NQN = "nqn.2026-12.io.test:plugin"
#: Two I/O ports: ANA group 1 optimized on port 1, non-optimized on port 2; no discovery port.
TWO_PATHS = {
    "subsystem": [{"nqn": NQN, "namespace": [{"nsid": 1, "size": "8M"}]}],
    "port": [
        {"id": 1, "port": 0, "subsystems": [NQN], "ana": {"1": "optimized"}},
        {"id": 2, "port": 0, "subsystems": [NQN], "ana": {"1": "non-optimized"}},
    ],
}


@dataclass
class Load:
    """Verified I/O in rounds until told to stop, with the totals."""

    host: ConnectedHost
    total: IoResult
    stopping: trio.Event

    async def run(self) -> None:
        while not self.stopping.is_set():
            done = await self.host.verified_io(units=64, depth=8)
            self.total.ok += done.ok
            self.total.failed += done.failed
            self.total.errors += done.errors
            self.total.paths |= done.paths


def path_ios(host: ConnectedHost, port: int) -> float:
    return host.metrics().value("nvmeof_initiator_path_ios_total", path=f"127.0.0.1:{port}")


async def until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 - counters the host's tasks update, no event
        await trio.sleep(0.01)


async def fail_over_under_load(
    host: ConnectedHost,
    ports: dict[int, tuple[str, int]],
    path_down: Callable[[], AbstractAsyncContextManager[int]],
) -> IoResult:
    """Run verified I/O, reset port 1 (the optimized path) while it runs, keep going on port 2
    for a while, bring port 1 back; the totals."""
    port1, port2 = ports[1][1], ports[2][1]
    load = Load(host, IoResult(), trio.Event())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(load.run)
        await until(lambda: path_ios(host, port1) >= 100)
        async with path_down() as affected:
            assert affected > 0, "the reset should have cut the host's connections"
            moved = path_ios(host, port2)
            await until(lambda: path_ios(host, port2) >= moved + 200)
        load.stopping.set()
    return load.total


def assert_failed_over_cleanly(total: IoResult, initiator: Metrics, target: Metrics,
                               ports: dict[int, tuple[str, int]]) -> None:  # fmt: skip
    assert total.failed == 0, total.errors[:5]
    assert total.ok > 100
    # The host's view: commands caught on the dead path went elsewhere, none failed.
    assert initiator.value("nvmeof_initiator_failed_total") == 0
    assert initiator.value("nvmeof_initiator_requeued_total") > 0
    assert initiator.value("nvmeof_initiator_path_ios_total", path=f"127.0.0.1:{ports[2][1]}") > 0
    # The target's view: reads and writes completed on both ports, none failed on port 2.
    for port in ("1", "2"):
        for opcode in ("read", "write"):
            done = target.value("nvmeof_target_commands_total", port=port, opcode=opcode,
                                status="success")  # fmt: skip
            assert done > 0, (port, opcode)
    port2_io = [s for s in target.select("nvmeof_target_commands_total", port="2")
                if s.labels["opcode"] in ("read", "write")]  # fmt: skip
    assert all(s.labels["status"] == "success" for s in port2_io if s.value)
