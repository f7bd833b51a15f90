"""Send a case to one target and record what came back, PDU by PDU, per connection."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import trio

from tests.differential import pdus as P
from tests.differential.cases import Case

#: Seconds without a new PDU after which a step is considered answered (nothing more comes).
QUIET = 0.35
#: Seconds to keep watching after the last step (late answers, the connection closing).
FINAL = 0.6
CONNECT_TIMEOUT = 10.0


@dataclass
class ConnResult:
    """What one connection saw: the PDUs received (summarised) and how it ended."""

    pdus: list[dict[str, Any]] = field(default_factory=list)
    closed: str = ""  # "" open at the end, "fin" or "reset"
    unsent: list[str] = field(default_factory=list)  # steps that could not be sent
    garbage: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"pdus": self.pdus, "closed": self.closed, "unsent": self.unsent,
                "garbage": self.garbage}  # fmt: skip


Observation = list[ConnResult]


class ConnectFailed(Exception):
    """The harness could not reach a target (not an answer of the target's)."""


def summarise(raw: bytes) -> dict[str, Any]:
    """The fields of a received PDU that the comparison may look at."""
    kind, flags, hlen, pdo, plen = struct.unpack_from("<BBBBI", raw)
    name = P.PDU_NAMES.get(kind, f"type{kind:#x}")
    out: dict[str, Any] = {"t": name}
    if kind == P.ICRESP and len(raw) >= 16:
        pfv, cpda, dgst, maxh2c = struct.unpack_from("<HBBI", raw, 8)
        out.update(pfv=pfv, cpda=cpda, dgst=dgst, maxh2cdata=maxh2c)
    elif kind == P.C2H_TERM and len(raw) >= 14:
        fes, fei = struct.unpack_from("<HI", raw, 8)
        out.update(fes=fes, fei=fei, echo=raw[hlen:plen].hex())
    elif kind == P.CAPSULE_RESP and len(raw) >= 24:
        dw0, dw1, sqhd, sqid, cid, status = struct.unpack_from("<IIHHHH", raw, 8)
        out.update(cid=cid, status=f"{status >> 1:#06x}", dw0=dw0, dw1=dw1, sqhd=sqhd, sqid=sqid)
    elif kind == P.C2H_DATA and len(raw) >= 20:
        cid, _, datao, datal = struct.unpack_from("<HHII", raw, 8)
        out.update(cid=cid, datao=datao, datal=datal, last=bool(flags & P.F_LAST),
                   success=bool(flags & P.F_SUCCESS), pdo=pdo, plen=plen)  # fmt: skip
    elif kind == P.R2T and len(raw) >= 20:
        cid, ttag, offset, length = struct.unpack_from("<HHII", raw, 8)
        out.update(cid=cid, ttag=ttag, offset=offset, length=length)
    else:
        out.update(raw=raw[:32].hex())
    return out


class _Conn:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.result = ConnResult()
        self.changed = trio.Event()
        self.ttag: int | None = None
        self.first_resp_dw0: int | None = None
        self.done = False
        self.keep_cids: set[int] = set()  # completions whose DW0/DW1 are compared

    async def reader(self) -> None:
        buf = bytearray()
        try:
            while True:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    self.result.closed = "fin"
                    return
                buf += chunk
                while len(buf) >= 8:
                    plen = int.from_bytes(buf[4:8], "little")
                    if plen < 8 or plen > (64 << 20):
                        self.result.garbage = bytes(buf[:32]).hex()
                        return
                    if len(buf) < plen:
                        break
                    raw = bytes(buf[:plen])
                    del buf[:plen]
                    summary = summarise(raw)
                    if summary["t"] == "CapsuleResp" and summary["cid"] in self.keep_cids:
                        summary["keep_dw0"] = True
                    self.result.pdus.append(summary)
                    if summary["t"] == "R2T":
                        self.ttag = summary["ttag"]
                    elif summary["t"] == "CapsuleResp" and self.first_resp_dw0 is None:
                        self.first_resp_dw0 = summary["dw0"]
                    self._poke()
        except (trio.BrokenResourceError, OSError):
            self.result.closed = "reset"
        except trio.ClosedResourceError:
            pass
        finally:
            self.done = True
            self._poke()

    def _poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


async def run_case(host: str, port: int, case: Case, *, quiet: float = QUIET,
                   final: float = FINAL) -> Observation:  # fmt: skip
    """Send ``case`` to ``host:port``; one connection per ``Step.conn``."""
    conns: dict[int, _Conn] = {}
    async with trio.open_nursery() as nursery:
        for step in case.steps:
            if step.pause:
                await trio.sleep(step.pause)
            conn = conns.get(step.conn)
            if conn is None:
                try:
                    with trio.fail_after(CONNECT_TIMEOUT):
                        stream = await trio.open_tcp_stream(host, port)
                except (OSError, trio.TooSlowError) as err:
                    raise ConnectFailed(f"{host}:{port}: {err!r}") from None
                conn = conns[step.conn] = _Conn(stream)
                nursery.start_soon(conn.reader)
            admin = conns.get(0)
            cntlid = admin.first_resp_dw0 & 0xFFFF if admin and admin.first_resp_dw0 else None
            data = step.render(cntlid, conn.ttag)
            if conn.done:
                conn.result.unsent.append(step.label)
                continue
            before = len(conn.result.pdus)
            if step.keep_dw0 and len(data) >= 12:
                conn.keep_cids.add(int.from_bytes(data[10:12], "little"))
            try:
                await conn.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                conn.result.unsent.append(step.label)
                continue
            await _wait(conn, before + step.expect, quiet)
        await trio.sleep(final + case.settle)
        for conn in conns.values():
            await conn.stream.aclose()
        nursery.cancel_scope.cancel()
    return [conns[i].result if i in conns else ConnResult() for i in range(case.connections)]


async def _wait(conn: _Conn, count: int, quiet: float) -> None:
    """Until ``count`` PDUs arrived or the connection ended, or nothing new for ``quiet`` s."""
    while len(conn.result.pdus) < count and not conn.done:
        with trio.move_on_after(quiet) as scope:
            await conn.changed.wait()
        if scope.cancelled_caught:
            return
