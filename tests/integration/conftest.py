"""Shared fixtures for the loopback integration tests: a real Target on free ports plus hosts.

``loopback_target`` yields ``(target, ports)`` (port ID -> bound TCP port) for the standard
configuration below; ``lb`` wraps the same target with host-side helpers (connect, discovery,
raw queues and Connect commands). ``start_target`` starts any other configuration. Every target
is stopped at teardown and every host task runs in pytest-trio's ``nursery`` (cancelled after
the test).

Standard configuration (``itest_config``):

* subsystem ``NQN``: nsid 1 (16 MiB, 512 B, ANA group 1), nsid 2 (16 MiB, 4096 B, group 1),
  nsid 4 (1 MiB, 512 B, group 2); at most ``MAX_IO_QUEUES`` I/O queues;
* subsystem ``RESTRICTED_NQN`` (only ``ALLOWED_HOST``) on port 1, ``HIDDEN_NQN`` on no port;
* port 1: group 1 optimized, group 2 non-optimized, 8 KiB in-capsule data;
* port 2: group 1 non-optimized, group 2 optimized, 16 KiB in-capsule data;
* port 3: discovery only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from initiator.controller import ControllerOptions, HostController, connect_controller
from initiator.queue import Completion, HostQueue
from nvmeof.constants import CNTLID_DYNAMIC, DISCOVERY_NQN, AnaState, FabricsType
from nvmeof.wire.fabrics import CONNECT_COMMAND, CONNECT_DATA
from target.config import NamespaceConfig, PortConfig, SubsystemConfig, TargetConfig
from target.daemon import Target

HOST = "127.0.0.1"
MIB = 1 << 20
NQN = "nqn.2026-11.io.nvmeof-emu:itest"
RESTRICTED_NQN = "nqn.2026-11.io.nvmeof-emu:itest-restricted"
HIDDEN_NQN = "nqn.2026-11.io.nvmeof-emu:itest-hidden"
ALLOWED_HOST = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-00000000a11d"
MAX_IO_QUEUES = 3
QUEUE_SIZE = 128
INLINE = {1: 8192, 2: 16384}


def itest_config(*, extra_subsystems: int = 0) -> TargetConfig:
    """The standard configuration; ``extra_subsystems`` more RAM subsystems on ports 1 and 2."""
    extra = tuple(
        SubsystemConfig(nqn=f"{NQN}-extra{i}", namespaces=(NamespaceConfig(nsid=1, size=MIB),))
        for i in range(extra_subsystems)
    )
    main = SubsystemConfig(
        nqn=NQN,
        namespaces=(
            NamespaceConfig(nsid=1, size=16 * MIB, block_size=512, ana_group=1),
            NamespaceConfig(nsid=2, size=16 * MIB, block_size=4096, ana_group=1),
            NamespaceConfig(nsid=4, size=1 * MIB, block_size=512, ana_group=2),
        ),
        max_io_queues=MAX_IO_QUEUES,
        queue_size=QUEUE_SIZE,
    )
    restricted = SubsystemConfig(
        nqn=RESTRICTED_NQN,
        namespaces=(NamespaceConfig(nsid=1, size=MIB),),
        allow_any_host=False,
        allowed_hosts=(ALLOWED_HOST,),
    )
    hidden = SubsystemConfig(nqn=HIDDEN_NQN, namespaces=(NamespaceConfig(nsid=1, size=MIB),))
    extra_nqns = tuple(s.nqn for s in extra)
    return TargetConfig(
        subsystems=(main, restricted, hidden, *extra),
        ports=(
            PortConfig(id=1, port=0, subsystems=(NQN, RESTRICTED_NQN, *extra_nqns),
                       ana_states=((1, AnaState.OPTIMIZED), (2, AnaState.NON_OPTIMIZED)),
                       inline_data_size=INLINE[1]),
            PortConfig(id=2, port=0, subsystems=(NQN, *extra_nqns),
                       ana_states=((1, AnaState.NON_OPTIMIZED), (2, AnaState.OPTIMIZED)),
                       inline_data_size=INLINE[2]),
            PortConfig(id=3, port=0),
        ),
    )  # fmt: skip


@dataclass
class Loopback:
    """A running target and host-side helpers bound to the test's nursery."""

    target: Target
    ports: dict[int, int]
    nursery: trio.Nursery
    nqn: str = NQN
    restricted_nqn: str = RESTRICTED_NQN
    hidden_nqn: str = HIDDEN_NQN
    allowed_host: str = ALLOWED_HOST
    max_io_queues: int = MAX_IO_QUEUES
    queue_size: int = QUEUE_SIZE

    @staticmethod
    def inline(port_id: int) -> int:
        """In-capsule data size configured on a port."""
        return INLINE[port_id]

    @staticmethod
    async def wait_until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
        """Poll a condition for at most ``limit`` seconds (state owned by another task)."""
        with trio.fail_after(limit):
            while not predicate():  # noqa: ASYNC110
                await trio.sleep(0.005)

    async def connect(
        self, port_id: int = 1, subnqn: str | None = None, **options: Any
    ) -> HostController:
        """``nvme connect`` through port ``port_id`` (ControllerOptions given as keywords)."""
        return await connect_controller(self.nursery, HOST, self.ports[port_id],
                                        subnqn or self.nqn, ControllerOptions(**options))  # fmt: skip

    async def discovery(self, port_id: int = 3) -> HostController:
        """A non-persistent discovery controller (KATO 0, no I/O queues)."""
        return await self.connect(port_id, DISCOVERY_NQN, kato_ms=0, io_queues=0)

    async def queue(self, port_id: int = 1, qid: int = 0, depth: int = 32, **kw: Any) -> HostQueue:
        """A bare queue (ICReq/ICResp done, nothing else) through port ``port_id``."""
        return await HostQueue.connect(self.nursery, HOST, self.ports[port_id], qid=qid,
                                       depth=depth, **kw)  # fmt: skip

    async def raw_connect(
        self, queue: HostQueue, *, qid: int = 0, sqsize: int = 31, cntlid: int = CNTLID_DYNAMIC,
        subnqn: str | None = None, hostnqn: str = ALLOWED_HOST, kato: int = 0, recfmt: int = 0,
    ) -> Completion:  # fmt: skip
        """Send one Connect command (SQSIZE 0's based, as on the wire); returns its CQE."""
        sqe = CONNECT_COMMAND.build(dict(fctype=FabricsType.CONNECT, qid=qid, sqsize=sqsize,
                                         kato=kato, recfmt=recfmt))  # fmt: skip
        data = CONNECT_DATA.build(dict(hostid=bytes(range(16)), cntlid=cntlid,
                                       subsysnqn=subnqn or self.nqn, hostnqn=hostnqn))  # fmt: skip
        return await queue.submit(sqe, write=data, timeout=5)


StartTarget = Callable[..., Awaitable[Loopback]]


@pytest.fixture
async def start_target(nursery: trio.Nursery) -> AsyncIterator[StartTarget]:
    """``await start_target(config=None, advertise=None, serve_in=None, extra_subsystems=0)``.

    The target serves in ``serve_in`` when given (so a test can see ``serve`` return after
    ``stop()``), else in the test's nursery; hosts always use the test's nursery.
    """
    started: list[Target] = []

    async def start(
        config: TargetConfig | None = None, advertise: str | None = None,
        serve_in: trio.Nursery | None = None, extra_subsystems: int = 0,
    ) -> Loopback:  # fmt: skip
        config = config or itest_config(extra_subsystems=extra_subsystems)
        target = Target(config, advertise=advertise)
        with trio.fail_after(5):
            await (serve_in or nursery).start(target.serve)
        started.append(target)
        ports = {pid: port.bound_port for pid, port in target.ports.items()}
        return Loopback(target, ports, nursery)

    yield start
    for target in started:
        target.stop()


@pytest.fixture
async def lb(start_target: StartTarget) -> Loopback:
    """The standard configuration, running."""
    return await start_target()


@pytest.fixture
def loopback_target(lb: Loopback) -> tuple[Target, dict[int, int]]:
    """``(target, ports)`` of the standard configuration (port ID -> bound TCP port)."""
    return lb.target, lb.ports
