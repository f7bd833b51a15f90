"""Metrics a scraper can trust: one scrape of the target and one of the initiator, after traffic
of every kind (admin, I/O, Fabrics on admin and I/O queues, asynchronous events, statuses from a
fault rule and from the target itself, reservations, a path taken down and back), hold every
series once (Prometheus rejects a scrape with a duplicate sample), parse with the client
library's own parser, and pass ``promtool check metrics`` when it is installed."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from functools import partial

import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from initiator.controller import ControllerOptions, HostController, connect_controller
from initiator.host import Host, open_host
from initiator.metrics import initiator_registry, serve_metrics
from nvmeof.constants import AnaState, IoOpcode
from nvmeof.errors import CommandError
from nvmeof.wire.reservations import ReservationType
from target.config import NamespaceConfig, PortConfig, SubsystemConfig, TargetConfig
from target.control.httpapi import serve_control
from target.control.metrics import target_registry
from target.daemon import Target
from tests.resv_commands import acquire, register

HOST = "127.0.0.1"
NQN = "nqn.2026-11.io.nvmeof-emu:exposition"
HOST_A = "nqn.2014-08.org.nvmexpress:uuid:0e3c2a45-0000-4000-8000-00000000000a"
HOST_B = "nqn.2014-08.org.nvmexpress:uuid:0e3c2a45-0000-4000-8000-00000000000b"
PROMTOOL = shutil.which("promtool")


def config() -> TargetConfig:
    sub = SubsystemConfig(nqn=NQN, namespaces=(NamespaceConfig(nsid=1, size=1 << 20),
                                               NamespaceConfig(nsid=2, size=1 << 20)))  # fmt: skip
    return TargetConfig(
        subsystems=(sub,),
        ports=(
            PortConfig(id=1, port=0, subsystems=(NQN,), ana_states=((1, AnaState.OPTIMIZED),)),
            PortConfig(id=2, port=0, subsystems=(NQN,),
                       ana_states=((1, AnaState.NON_OPTIMIZED),)),
            PortConfig(id=3, port=0),
        ),
    )  # fmt: skip


@pytest.fixture
async def target(nursery: trio.Nursery) -> AsyncIterator[Target]:
    with trio.fail_after(5):
        served: Target = await nursery.start(Target(config()).serve)
    yield served
    served.stop()


async def controller(nursery: trio.Nursery, target: Target, port_id: int,
                     hostnqn: str) -> HostController:  # fmt: skip
    options = ControllerOptions(hostnqn=hostnqn, io_queues=2, command_timeout=5)
    return await connect_controller(nursery, HOST, target.ports[port_id].bound_port, NQN, options)


async def traffic(nursery: trio.Nursery, target: Target, host: Host) -> None:
    """Commands of every kind through both I/O ports, from two hosts and the multipath host."""
    a = await controller(nursery, target, 1, HOST_A)
    b = await controller(nursery, target, 2, HOST_B)
    for ctrl in (a, b):
        for queue in range(2):  # every I/O queue (Connect on admin and on I/O queues)
            assert (await ctrl.write(1, 8 * queue, bytes(4096), 512, queue=queue)).ok
            assert (await ctrl.read(1, 8 * queue, 8, 512, queue=queue))[0].ok
        assert (await ctrl.io(IoOpcode.FLUSH, 1, 0, 1)).ok
        await ctrl.namespace(1)
        with pytest.raises(CommandError):  # the target refuses it: Invalid Field
            await ctrl.identify_raw(0x7E)
    # a fault rule's status, on reads of both ports
    target.fault_add({"action": "status", "opcode": IoOpcode.READ, "status": 0x281, "dnr": True,
                      "count": 4})  # fmt: skip
    for ctrl in (a, b):
        for queue in range(2):
            assert not (await ctrl.read(1, 0, 1, 512, queue=queue))[0].ok
    # reservations on namespace 2: a holder and a conflict
    assert await register(a, nrkey=0xA, nsid=2) == 0
    assert await register(b, nrkey=0xB, nsid=2) == 0
    assert await acquire(a, 0, ReservationType.WRITE_EXCLUSIVE, 0xA, nsid=2) == 0
    assert not (await b.write(2, 0, bytes(512), 512)).ok
    # the multipath host: I/O on both namespaces, an ANA change (an AER completes on each
    # admin queue), a path taken down and back
    await host.connect(HOST, target.ports[1].bound_port, NQN)
    await host.connect(HOST, target.ports[2].bound_port, NQN)
    await host.connect(HOST, target.ports[2].bound_port, NQN)  # the same path twice (nvme -D)
    await host.namespace(NQN, 1).write(64, bytes(4096))
    for nsid in (1, 2):  # namespace 2 is write exclusive for host A: reads only
        assert await host.namespace(NQN, nsid).read(64, 8) == bytes(4096)
    target.set_ana(1, 1, AnaState.INACCESSIBLE)
    await target.port_down(1, "reset")
    await host.namespace(NQN, 1).write(72, bytes(512))
    await target.port_up(1)
    target.set_ana(1, 1, AnaState.OPTIMIZED)
    await host.namespace(NQN, 1).write(80, bytes(512))


def duplicates(text: str) -> list[str]:
    """Samples that appear more than once with the same name and labels, and metric names
    exposed as more than one family (two HELP lines: Prometheus' own parser refuses that)."""
    seen: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
    families: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        families[family.name] += 1
        for sample in family.samples:
            seen[(sample.name, tuple(sorted(sample.labels.items())))] += 1
    found = [f"{name}{dict(labels)} x{count}" for (name, labels), count in seen.items()
             if count > 1]  # fmt: skip
    return found + [f"family {name} x{count}" for name, count in families.items() if count > 1]


def scrape(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


async def test_every_series_appears_once_in_each_exposition(
    nursery: trio.Nursery, target: Target
) -> None:
    options = ControllerOptions(io_queues=2, reconnect_delay=0.1, command_timeout=5)
    async with open_host(options) as host:
        with trio.fail_after(30):
            await traffic(nursery, target, host)
        target_text = scrape(target_registry(target))
        initiator_text = scrape(initiator_registry(host))
    assert duplicates(target_text) == []
    assert duplicates(initiator_text) == []
    # the traffic reached what the test means to cover
    for line in ('opcode="fabrics",port="1",status="success"', 'opcode="async_event_request"',
                 'status="read_error"', 'status="reservation_conflict"',
                 'opcode="identify",port="2",status="invalid_field"'):  # fmt: skip
        assert line in target_text, line
    assert "nvmeof_initiator_path_losses_total" in initiator_text  # per head
    assert "nvmeof_initiator_path_lost_total" in initiator_text  # per path


def promtool_check(text: str) -> None:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    # 1: a scrape it cannot parse (a second HELP for a name, a duplicate...), 3: lint findings
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: apt-get install "
                    "prometheus; CI installs it)")  # fmt: skip
async def test_promtool_accepts_live_scrapes(nursery: trio.Nursery, target: Target) -> None:
    options = ControllerOptions(io_queues=2, reconnect_delay=0.1, command_timeout=5)
    async with open_host(options) as host:
        with trio.fail_after(30):
            await traffic(nursery, target, host)
            ends = await nursery.start(partial(serve_control, target, control=None,
                                               metrics=(HOST, 0)))  # fmt: skip
            initiator_port = await nursery.start(serve_metrics, initiator_registry(host), HOST, 0)
            async with httpx.AsyncClient() as client:
                assert ends.metrics is not None
                scrapes = [(await client.get(f"http://{HOST}:{port}/metrics")).text
                           for port in (ends.metrics[1], initiator_port)]  # fmt: skip
    for text in scrapes:
        assert duplicates(text) == []
        promtool_check(text)
