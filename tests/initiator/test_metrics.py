"""Initiator metrics: the collector over a Host (a path killed under load against an in-process
target on two ports), the failover-time histogram on the socket-free rig with a mock clock, the
/metrics HTTP responder, and ``nvmeof bench --metrics``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import cast

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry, generate_latest

from initiator import commands
from initiator.cli import build_parser
from initiator.controller import ControllerOptions
from initiator.host import Host, open_host
from initiator.metrics import initiator_registry, serve_metrics
from initiator.multipath import MultipathHead
from initiator.queue import HOST_ABORTED
from nvmeof.constants import AnaState
from target.config import NamespaceConfig, PortConfig, SubsystemConfig, TargetConfig
from target.daemon import Target
from tests.initiator.fakes import NQN as RIG_NQN, NSID as RIG_NSID, FakeSession, make_rig

HOST = "127.0.0.1"
NQN = "nqn.2026-11.io.nvmeof-emu:initiator-metrics"
BLOCK = 512


def config() -> TargetConfig:
    sub = SubsystemConfig(nqn=NQN, namespaces=(NamespaceConfig(nsid=1, size=1 << 20),))
    return TargetConfig(
        subsystems=(sub,),
        ports=(
            PortConfig(id=1, port=0, subsystems=(NQN,), ana_states=((1, AnaState.OPTIMIZED),)),
            PortConfig(id=2, port=0, subsystems=(NQN,),
                       ana_states=((1, AnaState.NON_OPTIMIZED),)),
        ),
    )  # fmt: skip


@pytest.fixture
async def target(nursery: trio.Nursery) -> AsyncIterator[Target]:
    with trio.fail_after(5):
        served: Target = await nursery.start(Target(config()).serve)
    yield served
    served.stop()


def options() -> ControllerOptions:
    return ControllerOptions(io_queues=1, queue_size=32, reconnect_delay=0.2, command_timeout=5)


def sampler(registry: CollectorRegistry) -> Callable[..., float | None]:
    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    return value


async def until(condition: Callable[[], bool]) -> None:
    """Poll state that the host's own tasks change (the caller bounds the wait)."""
    while not condition():  # noqa: ASYNC110 - no event to wait on
        await trio.sleep(0.005)


async def write_load(head: MultipathHead, count: int, qd: int = 16) -> int:
    """``count`` 4 KiB writes through a ring, ``qd`` in flight; returns how many failed."""
    ring = head.ring(qd)
    data = bytes(4096)
    units = head.nlbas * head.block_size // len(data)
    submitted = done = failed = 0
    while done < count:
        while submitted < count and (slot := ring.get_sqe()) is not None:
            slot.prep_write(submitted % units * 8, 8, data)
            submitted += 1
        await ring.submit_and_wait(1)
        for cqe in ring.completions():
            done += 1
            failed += not cqe.ok
    return failed


# -- a path killed under load ----------------------------------------------------------------------------


async def test_failover_requeue_and_per_path_counters(target: Target) -> None:
    async with open_host(options()) as host:
        with trio.fail_after(5):
            for port_id in (1, 2):
                await host.connect(HOST, target.ports[port_id].bound_port, NQN)
        head = host.namespace(NQN, 1)
        registry = initiator_registry(host)
        value = sampler(registry)
        first, second = (f"{HOST}:{target.ports[i].bound_port}" for i in (1, 2))
        one = {"path": first, "subsystem": NQN, "nsid": "1"}
        two = {"path": second, "subsystem": NQN, "nsid": "1"}
        ns = {"subsystem": NQN, "nsid": "1"}
        assert value("nvmeof_initiator_path_ana_state", **one, state="optimized") == 1
        assert value("nvmeof_initiator_path_ana_state", **two, state="non-optimized") == 1
        assert value("nvmeof_initiator_path_ana_state_code", **two) == AnaState.NON_OPTIMIZED
        assert value("nvmeof_initiator_path_state", **one, state="live") == 1
        assert value("nvmeof_initiator_failover_seconds_count", **ns) == 0

        failed: list[int] = []
        with trio.fail_after(15):
            async with trio.open_nursery() as load:

                async def run() -> None:
                    failed.append(await write_load(head, 3000))

                load.start_soon(run)
                optimized = head.paths[0]
                await until(lambda: optimized.stats.ios > 200 and optimized.inflight > 0)
                killed = [c for c in target.connections if c.port.id == 1]
                for conn in killed:  # the path dies with commands in flight
                    conn.close("killed by the test")
                assert killed
            assert failed == [0]
            session = host.sessions[0]
            await until(lambda: session.live and session.reconnects >= 1)

        assert (value("nvmeof_initiator_failovers_total", **ns) or 0) >= 1
        requeued = value("nvmeof_initiator_requeued_total", **ns)
        assert requeued == head.stats.requeued >= 1
        assert (value("nvmeof_initiator_path_failovers_total", **one) or 0) >= 1
        assert value("nvmeof_initiator_failed_total", **ns) == 0
        assert value("nvmeof_initiator_no_path_queued_total", **ns) == 0
        assert value("nvmeof_initiator_queued_commands", **ns) == 0
        ios = [value("nvmeof_initiator_path_ios_total", **labels) or 0 for labels in (one, two)]
        assert all(n > 0 for n in ios) and sum(ios) == 3000
        assert value("nvmeof_initiator_path_bytes_total", **two) == ios[1] * 4096
        for labels, n in zip((one, two), ios, strict=True):
            assert value("nvmeof_initiator_path_io_latency_seconds_count", **labels) == n
            assert value("nvmeof_initiator_path_inflight", **labels) == 0
        count = value("nvmeof_initiator_failover_seconds_count", **ns) or 0
        assert count >= 1
        assert value("nvmeof_initiator_failover_seconds_bucket", **ns, le="+Inf") == count
        assert 0 < (value("nvmeof_initiator_failover_seconds_sum", **ns) or 0) < 15
        assert (value("nvmeof_initiator_reconnects_total", path=first, subsystem=NQN) or 0) >= 1
        assert value("nvmeof_initiator_reconnects_total", path=second, subsystem=NQN) == 0
        assert value("nvmeof_initiator_path_state", **one, state="live") == 1
        assert value("nvmeof_initiator_controller_state", path=first, subsystem=NQN,
                     state="live") == 1  # fmt: skip
        # a loss per path, their sum per head: two families, two names (one name twice is
        # invalid exposition text, which Prometheus refuses)
        losses = [value("nvmeof_initiator_path_lost_total", **labels) or 0 for labels in (one, two)]
        assert losses[0] >= 1 and value("nvmeof_initiator_path_losses_total", **ns) == sum(losses)
        text = generate_latest(registry).decode()
        types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
        assert len(types) == len(set(types)), sorted(t for t in types if types.count(t) > 1)


# -- the failover-time histogram, deterministically ----------------------------------------------------


async def test_failover_time_is_path_error_to_first_success(
    mock_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    a, b = FakeSession("a"), FakeSession("b")
    rig = make_rig(a, b, entries=4, nbuffers=2)
    head = rig.head
    rig.paths[1].ana_state = AnaState.NON_OPTIMIZED
    nursery.start_soon(head.run_requeue)
    host = cast("Host", SimpleNamespace(heads={(RIG_NQN, RIG_NSID): head}, sessions=[a, b]))
    value = sampler(initiator_registry(host))
    ns = {"subsystem": RIG_NQN, "nsid": str(RIG_NSID)}

    rig.read(buf=0)
    rig.read(buf=1)
    mock_clock.jump(1.0)
    a.lose()
    rig.queue(0).abort_all(head, HOST_ABORTED)  # the path error: both fail over to b
    await trio.testing.wait_all_tasks_blocked()
    assert len(rig.queue(1).pending) == 2
    mock_clock.jump(0.2)
    rig.queue(1).complete_next(head)  # the first success after the error ends the failover
    mock_clock.jump(5.0)
    rig.queue(1).complete_next(head)  # later completions do not count again
    assert head.failover_latency.count == 1
    assert head.failover_latency.sum == pytest.approx(0.2)
    assert value("nvmeof_initiator_failover_seconds_count", **ns) == 1
    assert value("nvmeof_initiator_failover_seconds_bucket", **ns, le="0.1") == 0
    assert value("nvmeof_initiator_failover_seconds_bucket", **ns, le="0.25") == 1
    assert value("nvmeof_initiator_requeued_total", **ns) == 2
    assert value("nvmeof_initiator_path_failovers_total", path="a", **ns) == 2
    assert value("nvmeof_initiator_path_ios_total", path="b", **ns) == 2
    assert value("nvmeof_initiator_path_state", path="a", **ns, state="connecting") == 1
    assert value("nvmeof_initiator_path_state", path="a", **ns, state="live") == 0


async def test_failed_io_ends_the_failover_without_a_sample(
    mock_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    a = FakeSession("a")
    rig = make_rig(a, entries=2, nbuffers=1)
    head = rig.head
    nursery.start_soon(head.run_requeue)
    slot = rig.read()
    a.delete()  # no path can come back: the failed-over command fails
    rig.queue(0).abort_all(head, HOST_ABORTED)
    await trio.testing.wait_all_tasks_blocked()
    assert slot.status_word and head.stats.failed == 1
    assert head.failover_latency.count == 0 and head.failover_started is None


# -- the /metrics responder --------------------------------------------------------------------------------


async def http(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """One request on a fresh connection; (status line, headers, body) of the answer."""
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(HOST, port)
        async with stream:
            await stream.send_all(request)
            data = bytearray()
            while chunk := await stream.receive_some(65536):
                data += chunk
                assert len(data) < 1 << 22
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status, {k.lower(): v for k, v in headers.items()}, body


async def test_serve_metrics_answers_get(nursery: trio.Nursery, target: Target) -> None:
    async with open_host(options()) as host:
        with trio.fail_after(5):
            await host.connect(HOST, target.ports[1].bound_port, NQN)
            port = await nursery.start(serve_metrics, initiator_registry(host), HOST, 0)
        status, headers, body = await http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"
        assert headers["content-type"].startswith("text/plain; version=")
        assert headers["connection"] == "close" and int(headers["content-length"]) == len(body)
        text = body.decode()
        assert "# TYPE nvmeof_initiator_path_ios_total counter" in text
        label = f'path="{HOST}:{target.ports[1].bound_port}"'
        live = f'nvmeof_initiator_path_state{{nsid="1",{label},state="live",subsystem="{NQN}"}}'
        assert f"{live} 1.0" in text

        status, headers, body = await http(port, b"HEAD /metrics?x=1 HTTP/1.1\r\n\r\n")
        assert status == "HTTP/1.1 200 OK" and body == b"" and int(headers["content-length"]) > 0
        assert (await http(port, b"GET / HTTP/1.1\r\n\r\n"))[0] == "HTTP/1.1 404 Not Found"
        status, headers, _ = await http(port, b"POST /metrics HTTP/1.1\r\n\r\n")
        assert status == "HTTP/1.1 405 Method Not Allowed" and headers["allow"] == "GET, HEAD"
        assert (await http(port, b"nonsense\r\n\r\n"))[0] == "HTTP/1.1 400 Bad Request"
        huge = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
        assert (await http(port, huge))[0].startswith("HTTP/1.1 431")
        # A client that connects and says nothing is dropped, and the server carries on.
        with trio.fail_after(5):
            async with await trio.open_tcp_stream(HOST, port):
                pass
        assert (await http(port, b"GET /metrics HTTP/1.0\r\n\r\n"))[0] == "HTTP/1.1 200 OK"


# -- nvmeof bench --metrics ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


async def test_bench_serves_metrics_while_it_runs(target: Target,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    port = free_port()
    path = f"{HOST}:{target.ports[1].bound_port}"
    args = build_parser().parse_args([
        "bench", "--path", path, "-n", NQN, "--rw", "randwrite", "--runtime", "1.5",
        "--iodepth", "4", "--size", "256k", "--json", "--metrics", f"{HOST}:{port}",
    ])  # fmt: skip
    result: list[int] = []
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:

            async def bench() -> None:
                result.append(await commands.run(args))

            nursery.start_soon(bench)
            sample = f'nvmeof_initiator_path_ios_total{{nsid="1",path="{path}"'
            while True:
                try:
                    status, _, body = await http(port, b"GET /metrics HTTP/1.1\r\n\r\n")
                except OSError:  # not listening yet
                    await trio.sleep(0.02)
                    continue
                if sample in body.decode():
                    break
                await trio.sleep(0.02)  # the paths are not connected yet
            assert status == "HTTP/1.1 200 OK"
    assert result == [0]
    report = json.loads(capsys.readouterr().out)
    assert report["paths"][0]["ios"] > 0
    with pytest.raises(OSError, match="connect"):  # the listener went away with the bench
        await http(port, b"GET /metrics HTTP/1.1\r\n\r\n")


async def test_bench_metrics_linger_serves_the_final_values(
    target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--metrics-linger``: after the report, the listener still answers, with the values the
    report has (a soak compares the two: every requeue accounted for)."""
    port = free_port()
    path = f"{HOST}:{target.ports[1].bound_port}"
    args = build_parser().parse_args([
        "bench", "--path", path, "-n", NQN, "--rw", "randwrite", "--runtime", "0.5",
        "--iodepth", "4", "--size", "256k", "--json", "--metrics", f"{HOST}:{port}",
        "--metrics-linger", "1.5",
    ])  # fmt: skip
    result: list[int] = []
    finished = trio.Event()
    scrapes: list[tuple[float, str]] = []  # (time, body) of every answer
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:

            async def bench() -> None:
                result.append(await commands.run(args))
                finished.set()

            nursery.start_soon(bench)
            while not finished.is_set():
                try:
                    _, _, body = await http(port, b"GET /metrics HTTP/1.1\r\n\r\n")
                except OSError:  # not listening yet, or gone
                    pass
                else:
                    scrapes.append((trio.current_time(), body.decode()))
                await trio.sleep(0.05)
    assert result == [0]
    out, errors = capsys.readouterr()
    report = json.loads(out)
    assert "metrics: final values served for 1.5 s" in errors
    ios = report["paths"][0]["ios"]
    sample = f'nvmeof_initiator_path_ios_total{{nsid="1",path="{path}",subsystem="{NQN}"}}'
    last = [line for line in scrapes[-1][1].splitlines() if line.startswith(sample)]
    assert ios > 0 and last == [f"{sample} {float(ios)}"]
    # the final value was there for most of the linger, not just at the last moment
    final = [t for t, body in scrapes if f"{sample} {float(ios)}" in body]
    assert final[-1] - final[0] >= 1.0
