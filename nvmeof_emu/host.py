"""Our initiator as a test's host: connected to every path of an emulated target.

    async with nvmeof_host(target) as host:          # the first subsystem, every port
        result = await host.verified_io(units=256)   # write, read back, compare
        assert result.failed == 0
        assert host.metrics().value("nvmeof_initiator_failed_total") == 0

``target`` is either handle (:class:`~nvmeof_emu.process.TargetProcess` or
:class:`~nvmeof_emu.inprocess.InProcessTarget`): anything with ``ports``, ``port_subsystems``
and ``nqns``. The host is :func:`initiator.open_host` with one controller per port exposing
the subsystem, so each namespace is a multipath head (ANA-aware failover between paths).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import trio
from prometheus_client import generate_latest

from initiator import ControllerOptions, Host, IoError, MultipathHead, open_host
from initiator.metrics import initiator_registry
from target.control.clientbase import Endpoint, Metrics


class Reachable(Protocol):
    """What a host needs to know of a target: where its ports are and what they expose."""

    @property
    def ports(self) -> Mapping[int, Endpoint]: ...

    @property
    def port_subsystems(self) -> Mapping[int, Sequence[str]]: ...

    @property
    def nqns(self) -> Sequence[str]: ...


def host_options(**overrides: object) -> ControllerOptions:
    """Controller options for tests: quick reconnects, bounded command time, two I/O queues."""
    values: dict[str, object] = {"io_queues": 2, "queue_size": 64, "reconnect_delay": 0.2,
                                 "command_timeout": 10.0}  # fmt: skip
    values.update(overrides)
    return ControllerOptions(**values)  # type: ignore[arg-type]


@dataclass
class IoResult:
    """What :meth:`ConnectedHost.verified_io` did: units verified, units failed, paths used."""

    ok: int = 0
    failed: int = 0
    paths: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


def pattern(unit: int, size: int, generation: int) -> bytes:
    """The data written to a unit: distinct per unit and generation, so a stale or misplaced
    block cannot pass the comparison."""
    seed = hashlib.sha256(struct.pack("<QQ", unit, generation)).digest()
    return (seed * (size // len(seed) + 1))[:size]


@dataclass
class ConnectedHost:
    """A host connected to every path of one subsystem (from :func:`nvmeof_host`)."""

    host: Host
    nqn: str
    _generation: int = 0

    def namespace(self, nsid: int = 1) -> MultipathHead:
        """The multipath head of namespace ``nsid``."""
        return self.host.namespace(self.nqn, nsid)

    def metrics(self) -> Metrics:
        """The initiator's own metrics (:mod:`initiator.metrics`), parsed."""
        return Metrics(generate_latest(initiator_registry(self.host)).decode())

    async def verified_io(self, *, units: int = 64, unit_bytes: int = 4096, depth: int = 8,
                          nsid: int = 1, base_lba: int = 0) -> IoResult:  # fmt: skip
        """Write ``units`` units of ``unit_bytes`` at ``depth`` at once, read each back and
        compare; a unit that fails (an I/O error or different data) counts in ``failed``."""
        head = self.namespace(nsid)
        blocks = unit_bytes // head.block_size
        if blocks < 1 or blocks * head.block_size != unit_bytes:
            raise ValueError(f"unit_bytes must be a multiple of the block size {head.block_size}")
        self._generation += 1
        generation, result = self._generation, IoResult()
        todo = iter(range(units))
        before = {path.label: path.stats.ios for path in head.paths}

        async def worker() -> None:
            for unit in todo:
                data = pattern(unit, unit_bytes, generation)
                lba = base_lba + unit * blocks
                try:
                    await head.write(lba, data)
                    back = await head.read(lba, blocks)
                except IoError as err:
                    result.failed += 1
                    result.errors.append(str(err))
                    continue
                if back == data:
                    result.ok += 1
                else:
                    result.failed += 1
                    result.errors.append(f"unit {unit} at LBA {lba}: data differs")

        async with trio.open_nursery() as nursery:
            for _ in range(max(1, min(depth, units))):
                nursery.start_soon(worker)
        result.paths = {path.label for path in head.paths
                        if path.stats.ios > before.get(path.label, 0)}  # fmt: skip
        return result


@asynccontextmanager
async def nvmeof_host(
    target: Reachable,
    nqn: str | None = None,
    *,
    options: ControllerOptions | None = None,
    iopolicy: str = "numa",
) -> AsyncIterator[ConnectedHost]:
    """Our initiator connected to every port of ``target`` exposing ``nqn`` (default: the
    target's first subsystem); disconnected at the end of the block."""
    subnqn = nqn or target.nqns[0]
    paths = [target.ports[pid] for pid in sorted(target.ports)
             if subnqn in target.port_subsystems.get(pid, ())]  # fmt: skip
    if not paths:
        raise ValueError(f"no port of the target exposes {subnqn}")
    async with open_host(options or host_options(), iopolicy=iopolicy) as host:
        for addr, port in paths:
            await host.connect(addr, port, subnqn)
        yield ConnectedHost(host, subnqn)
