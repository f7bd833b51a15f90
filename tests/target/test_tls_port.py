"""TLS ports of the target over loopback, seen from a bare TLS client (tlsstream + the sans-IO
host connection): ``required`` serves TLS only and closes a plaintext ICReq, ``allowed`` serves
both, a wrong key or an unknown host is refused and counted, a key set live is used by the
next connection, and status and metrics say what happened."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from nvmeof.tcp.events import ConnectionEstablished
from nvmeof.tcp.host import HostConnection
from nvmeof.tls.engine import TlsError
from nvmeof.tls.psk import InterchangeKey, host_psk
from target import tls as target_tls
from target.config import HostConfig, PortConfig, SubsystemConfig, TargetConfig
from target.daemon import Target
from tlsstream import client_handshake

HOST = "nqn.2014-08.org.nvmexpress:uuid:0a0a0a0a-1111-2222-3333-444444444444"
STRANGER = "nqn.2014-08.org.nvmexpress:uuid:0b0b0b0b-1111-2222-3333-444444444444"
SUBNQN = "nqn.2026-12.io.test:tls"
KEY = InterchangeKey.generate(1, bytes(range(32)))
OTHER_KEY = InterchangeKey.generate(1, bytes(range(1, 33)))
KEY48 = InterchangeKey.generate(2, bytes(range(48)))
#: What the client sees when the target refuses its handshake.
REFUSED = (TlsError, trio.BrokenResourceError)


@asynccontextmanager
async def tls_target(**hosts: str) -> AsyncIterator[Target]:
    """Port 1 tls = required, port 2 tls = allowed, port 3 plaintext; ``HOST`` with ``KEY``."""
    keys = {HOST: KEY.export(), **hosts}
    config = TargetConfig(
        subsystems=(SubsystemConfig(nqn=SUBNQN),),
        ports=(PortConfig(id=1, port=0, subsystems=(SUBNQN,), tls="required"),
               PortConfig(id=2, port=0, subsystems=(SUBNQN,), tls="allowed"),
               PortConfig(id=3, port=0, subsystems=(SUBNQN,))),
        hosts=tuple(HostConfig(nqn=nqn, tls_key=key) for nqn, key in keys.items()),
    )  # fmt: skip
    target = Target(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(target.serve)
        try:
            yield target
        finally:
            nursery.cancel_scope.cancel()


def address(target: Target, port_id: int) -> tuple[str, int]:
    return "127.0.0.1", target.state.ports[port_id].bound_port


async def icreq(stream: trio.abc.Stream) -> bool:
    """Send an ICReq; True when an ICResp comes back, False when the target closes first."""
    conn = HostConnection()
    conn.initiate()
    await stream.send_all(b"".join(conn.data_to_send()))
    with trio.fail_after(5):
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return False
            buffer = conn.reader.get_buffer()
            buffer[: len(data)] = data
            conn.reader.commit(len(data))
            while (event := conn.next_event()) is not None:
                if isinstance(event, ConnectionEstablished):
                    return True


async def counted(target: Target, result: str, count: int) -> None:
    """Until the target has counted ``count`` handshakes with ``result`` (it closes the
    connection first, so the client may see the close before the count)."""
    with trio.fail_after(5):
        while target.state.tls_results.get(result) != count:  # noqa: ASYNC110 - model state
            await trio.sleep(0.01)


async def tls_icreq(target: Target, port_id: int, key: InterchangeKey = KEY,
                    hostnqn: str = HOST, **options: Any) -> bool:  # fmt: skip
    tcp = await trio.open_tcp_stream(*address(target, port_id))
    stream = await client_handshake(tcp, host_psk(key, hostnqn, SUBNQN, **options))
    async with stream:
        return await icreq(stream)


async def plain_icreq(target: Target, port_id: int) -> bool:
    async with await trio.open_tcp_stream(*address(target, port_id)) as stream:
        try:
            return await icreq(stream)
        except trio.BrokenResourceError:
            return False  # reset by the target


@pytest.mark.parametrize("options", [
    {}, {"identity_version": 1}, {"derivation": "compat"},
])  # fmt: skip
async def test_required_port_serves_nvme_tcp_inside_tls(options: dict[str, Any]) -> None:
    async with tls_target() as target:
        assert await tls_icreq(target, 1, **options)
        assert target.state.tls_results == {"ok": 1}


async def test_rfc8446_derivation_when_the_host_says_so() -> None:
    async with tls_target() as target:
        await target.host_set_key(HOST, tls_psk_derivation="rfc8446")
        assert await tls_icreq(target, 1, derivation="rfc8446")
        with pytest.raises(REFUSED):
            await tls_icreq(target, 1, derivation="compat")


@pytest.mark.parametrize("r02_sha256", [True, False])
async def test_sha384_key_under_either_suite(r02_sha256: bool) -> None:
    async with tls_target(**{STRANGER: KEY48.export()}) as target:
        assert await tls_icreq(target, 1, KEY48, STRANGER, r02_sha256=r02_sha256)


async def test_required_port_closes_a_plaintext_icreq(caplog: pytest.LogCaptureFixture) -> None:
    async with tls_target() as target:
        assert not await plain_icreq(target, 1)
        await counted(target, "failed", 1)
        assert target.state.tls_results == {"failed": 1}
        assert target.connections == set()
    assert "tls required port=1" in caplog.text and "sent plaintext" in caplog.text


async def test_allowed_port_serves_plaintext_and_tls() -> None:
    async with tls_target() as target:
        assert await plain_icreq(target, 2)
        assert await tls_icreq(target, 2)
        assert await plain_icreq(target, 3)  # a plaintext port never loads TLS
        assert target.state.tls_results == {"ok": 1}


@pytest.mark.parametrize(("key", "hostnqn"), [(OTHER_KEY, HOST), (KEY, STRANGER)])
async def test_wrong_key_or_unknown_host_is_refused_and_logged_once(
    key: InterchangeKey, hostnqn: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with tls_target() as target:
        with pytest.raises(REFUSED):
            await tls_icreq(target, 1, key, hostnqn)
        await counted(target, "failed", 1)
        assert target.connections == set()
    lines = [r for r in caplog.records if "tls handshake failed" in r.getMessage()]
    assert len(lines) == 1
    assert key.export() not in caplog.text


async def test_a_key_set_live_serves_the_next_connection() -> None:
    async with tls_target() as target:
        await target.host_set_key(HOST, tls_key=OTHER_KEY.export())
        assert await tls_icreq(target, 1, OTHER_KEY)
        with pytest.raises(REFUSED):  # the old key no longer works
            await tls_icreq(target, 1, KEY)
        await target.host_add(STRANGER, tls_key=KEY48.export())
        assert await tls_icreq(target, 1, KEY48, STRANGER)


async def test_status_and_metrics_count_tls() -> None:
    async with tls_target() as target:
        tcp = await trio.open_tcp_stream(*address(target, 1))
        stream = await client_handshake(tcp, host_psk(KEY, HOST, SUBNQN))
        async with stream:
            assert await icreq(stream)
            status = target.status()
            port1, port2 = status["ports"][0], status["ports"][1]
            assert (port1["tls"], port1["tls_connections"], port1["connections"]) == (
                "required",
                1,
                1,
            )
            assert (port2["tls"], port2["tls_connections"]) == ("allowed", 0)
            assert status["ports"][2]["tls"] is None
            assert status["host_tls"] == [HOST]
            (conn,) = target.connections
            assert conn.tls_identity == f"NVMe0R01 {HOST} {SUBNQN}"


async def test_a_silent_connection_is_dropped_after_the_handshake_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(target_tls, "TLS_HANDSHAKE_TIMEOUT", 0.2)
    async with tls_target() as target:
        for port_id in (1, 2):  # allowed: waiting for the first byte is bounded too
            async with await trio.open_tcp_stream(*address(target, port_id)) as stream:
                with trio.fail_after(5):
                    assert await stream.receive_some(100) == b""
        assert target.state.tls_results == {"timeout": 2}
