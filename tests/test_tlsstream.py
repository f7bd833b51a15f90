"""TLS streams on Trio (tlsstream) over real loopback TCP."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Awaitable

import pytest
import trio

from nvmeof.tls import InterchangeKey, PskIdentity, TlsError, TlsPsk, host_psk, target_psk
from tlsstream import TlsStream, client_handshake, peek_is_tls, server_handshake

H, S = "nqn.2014-08.org.nvmexpress:uuid:0d0d0d0d-1111", "nqn.2026-12.io.nvmeof-emu:tls"
KEY = InterchangeKey.generate(1, os.urandom(32))
PSK = host_psk(KEY, H, S)
ICREQ = bytes([0, 0, 128, 0, 128, 0, 0, 0]) + bytes(120)


def lookup(raw: bytes) -> TlsPsk | None:
    identity = PskIdentity.parse(raw)
    return None if identity is None else target_psk(identity, KEY)


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    return client, server


async def tls_pair(psk: TlsPsk = PSK) -> tuple[TlsStream, TlsStream]:
    client_tcp, server_tcp = await tcp_pair()
    out: dict[str, TlsStream] = {}

    async def serve() -> None:
        out["server"] = await server_handshake(server_tcp, lookup)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        out["client"] = await client_handshake(client_tcp, psk)
    return out["client"], out["server"]


async def receive_exactly(stream: TlsStream, n: int) -> bytes:
    buffer = bytearray(n)
    view, got = memoryview(buffer), 0
    while got < n:
        read = await stream.receive_into(view[got:])
        assert read, "EOF"
        got += read
    return bytes(buffer)


def reset(stream: trio.SocketStream | TlsStream) -> None:
    """Close with SO_LINGER 0: the peer gets a RST."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


async def test_handshake_both_ways_and_icreq_inside() -> None:
    with trio.fail_after(10):
        client, server = await tls_pair()
        assert client.cipher == server.cipher == "TLS_AES_128_GCM_SHA256"
        assert client.version == "TLSv1.3"
        assert server.peer_identity == client.peer_identity == f"NVMe0R01 {H} {S}".encode()
        assert server.socket.getpeername() == client.socket.getsockname()
        await client.send_all(ICREQ)
        assert await receive_exactly(server, 128) == ICREQ
        await server.send_all(b"ICResp")
        assert await client.receive_some(100) == b"ICResp"
        await client.aclose()
        assert await server.receive_some() == b""  # close_notify
        assert await server.receive_into(bytearray(8)) == 0
        await server.aclose()


async def test_r02_key_under_sha384_over_tcp() -> None:
    key = InterchangeKey.generate(2, os.urandom(48))
    psk = host_psk(key, H, S, identity_version=1, r02_sha256=False)
    client_tcp, server_tcp = await tcp_pair()

    def lookup384(raw: bytes) -> TlsPsk | None:
        identity = PskIdentity.parse(raw)
        return None if identity is None else target_psk(identity, key, r02_sha256=False)

    servers: list[TlsStream] = []

    async def serve() -> None:
        servers.append(await server_handshake(server_tcp, lookup384))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            client = await client_handshake(client_tcp, psk)
        assert client.cipher == servers[0].cipher == "TLS_AES_256_GCM_SHA384"
        await client.aclose()
        await servers[0].aclose()


async def test_bulk_both_ways_at_once_into_the_callers_buffer() -> None:
    # Each side sends 8 MiB while it receives 8 MiB: a send and a receive run concurrently on
    # each stream, with the socket buffers full most of the time.
    size = 8 << 20
    data = {"client": os.urandom(size), "server": os.urandom(size)}
    client, server = await tls_pair()
    got: dict[str, bytes] = {}

    async def sender(stream: TlsStream, payload: bytes) -> None:
        view = memoryview(payload)
        for offset in range(0, size, 128 << 10):
            await stream.send_all(view[offset : offset + (128 << 10)])

    async def receiver(name: str, stream: TlsStream) -> None:
        got[name] = await receive_exactly(stream, size)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender, client, data["client"])
            nursery.start_soon(sender, server, data["server"])
            nursery.start_soon(receiver, "server", server)
            nursery.start_soon(receiver, "client", client)
    assert got == {"server": data["client"], "client": data["server"]}
    await client.aclose()
    await server.aclose()


async def test_peek_is_tls() -> None:
    with trio.fail_after(10):
        client_tcp, server_tcp = await tcp_pair()
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                assert await peek_is_tls(server_tcp) is True
                assert await peek_is_tls(server_tcp) is True  # nothing was taken away
                await (await server_handshake(server_tcp, lookup)).aclose()

            nursery.start_soon(serve)
            await (await client_handshake(client_tcp, PSK)).aclose()

        client_tcp, server_tcp = await tcp_pair()
        await client_tcp.send_all(ICREQ)  # a plaintext ICReq starts with 0x00
        assert await peek_is_tls(server_tcp) is False
        received = b""
        while len(received) < 128:
            received += await server_tcp.receive_some(128)
        assert received == ICREQ

        client_tcp2, server_tcp2 = await tcp_pair()
        await client_tcp2.aclose()
        assert await peek_is_tls(server_tcp2) is None
        client_tcp3, server_tcp3 = await tcp_pair()
        reset(client_tcp3)
        assert await peek_is_tls(server_tcp3) is None
        for stream in (client_tcp, server_tcp, server_tcp2, server_tcp3):
            await stream.aclose()


async def test_wrong_key_fails_both_handshakes_and_closes_the_transports() -> None:
    wrong = TlsPsk(PSK.identity, os.urandom(32), PSK.cipher)
    client_tcp, server_tcp = await tcp_pair()
    errors: dict[str, BaseException] = {}

    async def run(name: str, handshake: Awaitable[TlsStream]) -> None:
        try:
            await handshake
        except trio.BrokenResourceError as exc:
            errors[name] = exc

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "server", server_handshake(server_tcp, lookup))
            nursery.start_soon(run, "client", client_handshake(client_tcp, wrong))
    assert "binder does not verify" in str(errors["server"])
    assert "alert decrypt error" in str(errors["client"])
    assert isinstance(errors["server"].__cause__, TlsError)
    assert client_tcp.socket.fileno() == -1 and server_tcp.socket.fileno() == -1


async def test_unknown_identity_and_a_plaintext_host() -> None:
    stranger = TlsPsk(b"Client_identity", os.urandom(32), PSK.cipher)
    client_tcp, server_tcp = await tcp_pair()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                expect_broken, client_handshake(client_tcp, stranger), "handshake failure"
            )
            await expect_broken(server_handshake(server_tcp, lookup), "unknown PSK identity")

    client_tcp, server_tcp = await tcp_pair()
    with trio.fail_after(10):
        await client_tcp.send_all(ICREQ)  # a plain host on a TLS-only port
        await expect_broken(server_handshake(server_tcp, lookup), "TLS handshake failed")
        await client_tcp.aclose()


async def expect_broken(handshake: Awaitable[TlsStream], message: str) -> None:
    with pytest.raises(trio.BrokenResourceError, match=message):
        await handshake


async def test_peer_gone_during_the_handshake() -> None:
    client_tcp, server_tcp = await tcp_pair()
    with trio.fail_after(10):
        await client_tcp.aclose()
        await expect_broken(server_handshake(server_tcp, lookup), "closed the connection")


async def test_broken_peers_surface_as_broken_resource_error() -> None:
    with trio.fail_after(10):
        # Reset under a receive.
        client, server = await tls_pair()
        reset(client)
        with pytest.raises(trio.BrokenResourceError):
            await server.receive_into(bytearray(16))
        await server.aclose()

        # Garbage instead of a record: the TlsError is chained.
        client, server = await tls_pair()
        await client.transport.send_all(b"\x17\x03\x03\x00\x20" + bytes(32))
        with pytest.raises(trio.BrokenResourceError) as info:
            await server.receive_some()
        assert isinstance(info.value.__cause__, TlsError)
        with pytest.raises(trio.BrokenResourceError):  # stays broken
            await server.send_all(b"x")
        await server.aclose()
        await client.aclose()

        # Sending to a peer that reset: the socket error, not an OSError, reaches the caller.
        client, server = await tls_pair()
        reset(server)

        async def keep_sending() -> None:
            for _ in range(100):
                await client.send_all(bytes(1 << 16))
                await trio.sleep(0.01)

        with pytest.raises(trio.BrokenResourceError):
            await keep_sending()
        await client.aclose()


async def test_tcp_eof_without_close_notify_reads_as_eof() -> None:
    client, server = await tls_pair()
    with trio.fail_after(10):
        await server.send_all(b"bye")
        await server.transport.aclose()  # no close_notify
        assert await client.receive_some() == b"bye"
        assert await client.receive_some() == b""
        await client.aclose()


async def test_aclose_is_bounded_when_the_peer_does_not_read() -> None:
    client, server = await tls_pair()
    client.close_timeout = 0.3
    with trio.fail_after(10):
        with trio.move_on_after(0.5):  # fill both socket buffers; the peer never reads
            while True:
                await client.send_all(bytes(1 << 16))
        start = trio.current_time()
        await client.aclose()
        assert trio.current_time() - start < 2
        assert client.socket.fileno() == -1
        with pytest.raises(trio.ClosedResourceError):
            await client.send_all(b"x")
        await client.aclose()  # twice is fine
        await server.aclose()


async def test_aclose_while_another_task_is_stuck_sending() -> None:
    client, server = await tls_pair()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def send_forever() -> None:
                while True:
                    await client.send_all(bytes(1 << 16))

            async def stuck() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await send_forever()

            nursery.start_soon(stuck)
            await trio.sleep(0.3)
            await client.aclose()  # does not queue behind the blocked send
        await server.aclose()


async def test_one_receiver_at_a_time() -> None:
    client, server = await tls_pair()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.receive_some)
            await trio.sleep(0.1)
            with pytest.raises(trio.BusyResourceError):
                await server.receive_some()
            with pytest.raises(ValueError, match="at least one byte"):
                await server.receive_into(bytearray())
            await client.send_all(b"x")
        await client.aclose()
        await server.aclose()
