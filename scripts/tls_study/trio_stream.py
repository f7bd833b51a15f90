"""Proof that the pyOpenSSL PSK path fits Trio: a minimal memory-BIO Stream (study, not product).

`PskTlsStream` wraps a trio Stream and a pyOpenSSL Connection(ctx, None) and pumps records the way
trio.SSLStream pumps ssl.MemoryBIO. Run: python scripts/tls_study/trio_stream.py
It does host<->target over a real loopback TCP socket (ICReq/ICResp), then measures bulk
throughput (128 KiB writes) TLS vs plain over the same kind of socket pair.
"""

from __future__ import annotations

import os
import sys
import time

import trio
from OpenSSL import SSL

sys.path.insert(0, os.path.dirname(__file__))
from nvme_psk import export_interchange, identity_and_tls_psk, parse_interchange
from psk_handshake import icreq, icresp
from psk_session_cb import client_context, server_context


class PskTlsStream(trio.abc.Stream):
    def __init__(self, transport: trio.abc.Stream, conn: SSL.Connection):
        self.transport, self.conn = transport, conn
        self._send_lock = trio.Lock()

    async def _flush(self) -> None:
        out = bytearray()  # one transport write per flush, not one per TLS record
        while True:
            try:
                data = self.conn.bio_read(1 << 18)
            except SSL.WantReadError:
                break
            if not data:
                break
            out += data
        if out:
            await self.transport.send_all(out)

    async def _feed(self) -> bool:
        data = await self.transport.receive_some(1 << 18)
        if not data:
            self.conn.bio_shutdown()
            return False
        self.conn.bio_write(data)
        return True

    async def do_handshake(self) -> None:
        while True:
            try:
                self.conn.do_handshake()
                await self._flush()
                return
            except SSL.WantReadError:
                await self._flush()
                if not await self._feed():
                    raise trio.BrokenResourceError("EOF during TLS handshake") from None

    async def send_all(self, data) -> None:
        async with self._send_lock:
            view = memoryview(data)
            while view:
                n = self.conn.send(view[: 1 << 18])  # SSL_write: all of it, as 16 KiB records
                view = view[n:]
            await self._flush()

    async def receive_some(self, max_bytes=None) -> bytes:
        limit = max_bytes or 1 << 18
        while True:
            out = bytearray()  # drain every record already decryptable, up to limit
            try:
                while len(out) < limit:
                    out += self.conn.recv(
                        min(limit - len(out), 1 << 14)
                    )  # a record holds <= 16 KiB
            except SSL.WantReadError:
                pass
            except SSL.ZeroReturnError:
                return bytes(out)
            if out:
                return bytes(out)
            await self._flush()
            if not await self._feed():
                return b""

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.transport.aclose()


async def recv_exact(s: trio.abc.Stream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        d = await s.receive_some(n - len(buf))
        if not d:
            raise EOFError
        buf += d
    return bytes(buf)


async def main() -> None:
    host = "nqn.2014-08.org.nvmexpress:uuid:0d0d0d0d-1111-2222-3333-444444444444"
    sub = "nqn.2014-08.org.nvmexpress:linuxvm-tls"
    total = 256 << 20
    for keylen in (32, 48):
        ident, psk = identity_and_tls_psk(
            parse_interchange(export_interchange(os.urandom(keylen))), host, sub, 0, True
        )
        seen: list[str] = []
        sctx, sref = server_context({ident: psk}, seen)
        cctx, cref = client_context(ident, psk)
        result = {}

        async def server(tcp, *, _sctx=sctx, result=result):
            s = SSL.Connection(_sctx, None)
            s.set_accept_state()
            st = PskTlsStream(tcp, s)
            await st.do_handshake()
            assert await recv_exact(st, 128) == icreq()
            await st.send_all(icresp())
            got = 0
            t0 = time.perf_counter()
            while got < total:
                got += len(await st.receive_some())
            result["tls"] = total / (time.perf_counter() - t0) / 1e6
            result["cipher"] = s.get_cipher_name()
            await st.send_all(b"k")

        async with trio.open_nursery() as n:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]

            async def accept_one(listeners=listeners):
                tcp = await listeners[0].accept()
                await server(tcp)
                await listeners[0].aclose()

            n.start_soon(accept_one)
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            c = SSL.Connection(cctx, None)
            c.set_connect_state()
            ct = PskTlsStream(tcp, c)
            await ct.do_handshake()
            await ct.send_all(icreq())
            assert await recv_exact(ct, 128) == icresp()
            chunk = os.urandom(128 << 10)
            for _ in range(total // len(chunk)):
                await ct.send_all(chunk)
            await recv_exact(ct, 1)
            await ct.aclose()
        print(
            f"trio TLS {len(psk) * 8}-bit PSK: handshake + ICReq/ICResp ok, {result['cipher']}, "
            f"server saw {seen[0][:8]}..., bulk {result['tls']:.0f} MB/s"
        )
        del sref, cref

    # plain TCP, same shape
    async with trio.open_nursery() as n:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        res = {}

        async def sink():
            tcp = await listeners[0].accept()
            got = 0
            t0 = time.perf_counter()
            while got < total:
                got += len(await tcp.receive_some(1 << 18))
            res["plain"] = total / (time.perf_counter() - t0) / 1e6
            await tcp.send_all(b"k")
            await listeners[0].aclose()

        n.start_soon(sink)
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        chunk = os.urandom(128 << 10)
        for _ in range(total // len(chunk)):
            await tcp.send_all(chunk)
        await tcp.receive_some(1)
        await tcp.aclose()
    print(f"trio plain TCP: bulk {res['plain']:.0f} MB/s")


if __name__ == "__main__":
    trio.run(main)
