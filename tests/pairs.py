"""Test helpers: a HostConnection and a ControllerConnection joined in memory.

Modelled on h11's ``ConnectionPair`` and aioquic's ``client_and_server``: nothing moves until a
test calls :meth:`ProtocolPair.transfer`, so every byte on the "wire" can be inspected, mutated or
dropped. Also here: SQE builders, a PDU splitter and a recorded command script used by the
flow and fuzz tests.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import crc32c as _crc32c

from nvmeof.constants import PduType
from nvmeof.tcp.controller import ControllerConnection, Event as ControllerEvent
from nvmeof.tcp.events import CommandReceived, ConnectionEstablished, DataReceived
from nvmeof.tcp.host import Event as HostEvent, HostConnection

Conn = HostConnection | ControllerConnection
AnyEvent = ControllerEvent | HostEvent

CH = struct.Struct("<BBBBI")
TERM_REQ = struct.Struct("<BBBBIHI10x")


def join(buffers: Iterable[bytes | bytearray | memoryview]) -> bytes:
    return b"".join(bytes(b) for b in buffers)


def drain(conn: Conn) -> list[AnyEvent]:
    """Every event ``conn`` can produce from what it has buffered (may raise TransportError)."""
    out: list[AnyEvent] = []
    while (event := conn.next_event()) is not None:
        out.append(event)
    return out


def feed_bytewise(conn: Conn, data: bytes) -> list[AnyEvent]:
    """Feed ``data`` one byte at a time, draining events after each byte."""
    out: list[AnyEvent] = []
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
        out.extend(drain(conn))
    return out


def feed_chunks(conn: Conn, data: bytes, sizes: Sequence[int]) -> list[AnyEvent]:
    """Feed ``data`` in chunks of the given sizes (cycled), draining events after each."""
    out: list[AnyEvent] = []
    pos = i = 0
    while pos < len(data):
        n = max(1, sizes[i % len(sizes)]) if sizes else len(data)
        conn.receive_data(data[pos : pos + n])
        out.extend(drain(conn))
        pos += n
        i += 1
    return out


def digest(data: bytes | bytearray | memoryview) -> bytes:
    """CRC32C as it appears on the wire (computed with the ``crc32c`` package directly, not
    through :mod:`nvmeof.digest`, so the tests do not trust the code under test)."""
    return int(_crc32c.crc32c(bytes(data))).to_bytes(4, "little")


def build_pdu(
    pdu_type: int,
    psh: bytes,
    data: bytes = b"",
    *,
    hd: bool = False,
    dd: bool = False,
    flags: int = 0,
    pad: int = 0,
    hlen: int | None = None,
    pdo: int | None = None,
    plen: int | None = None,
    corrupt_hdgst: bool = False,
    corrupt_ddgst: bool = False,
) -> bytes:
    """A PDU laid out as docs/PROTOCOL.md §1.4 describes: CH + ``psh``, optional header digest,
    ``pad`` zero bytes, ``data``, optional data digest. HDGSTF/DDGSTF are set from ``hd``/``dd``
    (DDGSTF only with data); ``hlen``/``pdo``/``plen`` override the computed values."""
    real_hlen = 8 + len(psh)
    hdg = 4 if hd else 0
    ddg = 4 if dd and data else 0
    flags |= (0x01 if hd else 0) | (0x02 if ddg else 0)
    calc_pdo = real_hlen + hdg + pad if data else 0
    calc_plen = real_hlen + hdg + (pad + len(data) + ddg if data else 0)
    header = (
        CH.pack(
            pdu_type,
            flags,
            real_hlen if hlen is None else hlen,
            calc_pdo if pdo is None else pdo,
            calc_plen if plen is None else plen,
        )
        + psh
    )
    out = bytearray(header)
    if hd:
        hdig = bytearray(digest(header))
        if corrupt_hdgst:
            hdig[0] ^= 0xFF
        out += hdig
    if data:
        out += bytes(pad) + data
        if ddg:
            ddig = bytearray(digest(data))
            if corrupt_ddgst:
                ddig[0] ^= 0xFF
            out += ddig
    return bytes(out)


def data_psh(cid: int, ttag: int, offset: int, length: int) -> bytes:
    """PSH of H2CData/C2HData/R2T: CCCID, TTAG, DATAO/R2TO, DATAL/R2TL, 4 reserved."""
    return struct.pack("<HHII4x", cid, ttag, offset, length)


def cqe_psh(
    cid: int, status: int = 0, *, dw0: int = 0, dw1: int = 0, sqhd: int = 0, sqid: int = 0
) -> bytes:
    return struct.pack("<IIHHHH", dw0, dw1, sqhd, sqid, cid, status)


def icresp(*, digest_bits: int = 0, cpda: int = 0, maxh2cdata: int = 131072, pfv: int = 0) -> bytes:
    """An ICResp built by hand (docs/PROTOCOL.md §1.5)."""
    buf = bytearray(128)
    CH.pack_into(buf, 0, 0x01, 0, 128, 0, 128)
    struct.pack_into("<HBBI", buf, 8, pfv, cpda, digest_bits, maxh2cdata)
    return bytes(buf)


def icreq(*, digest_bits: int = 0, hpda: int = 0, maxr2t: int = 0, pfv: int = 0) -> bytes:
    buf = bytearray(128)
    CH.pack_into(buf, 0, 0x00, 0, 128, 0, 128)
    struct.pack_into("<HBBI", buf, 8, pfv, hpda, digest_bits, maxr2t)
    return bytes(buf)


def split_pdus(stream: bytes) -> list[bytes]:
    """Cut a well-formed stream into PDUs by their PLEN."""
    pdus = []
    pos = 0
    while pos < len(stream):
        plen = CH.unpack_from(stream, pos)[4]
        assert plen >= 8, f"PLEN {plen} at {pos}"
        pdus.append(stream[pos : pos + plen])
        pos += plen
    assert pos == len(stream), "trailing partial PDU"
    return pdus


def term_req(pdu: bytes) -> tuple[int, int, bytes]:
    """(FES, FEI, echoed header) of a TermReq PDU, after checking its framing."""
    pdu_type, flags, hlen, pdo, plen, fes, fei = TERM_REQ.unpack_from(pdu)
    assert pdu_type in (PduType.H2C_TERM_REQ, PduType.C2H_TERM_REQ)
    assert (flags, hlen, pdo) == (0, 24, 0)
    assert 24 <= plen <= 152
    assert plen == len(pdu)
    return fes, fei, pdu[24:plen]


def sqe(
    opcode: int,
    cid: int = 0,
    *,
    nsid: int = 0,
    fctype: int | None = None,
    cdw: dict[int, int] | None = None,
    raw: dict[int, int] | None = None,
) -> bytes:
    """A 64-byte SQE: FLAGS 0x40, CID, NSID (or FCTYPE for fabrics), CDWn from ``cdw``
    (index 10..15 -> value), and single bytes from ``raw`` (offset -> byte)."""
    buf = bytearray(64)
    buf[0] = opcode
    buf[1] = 0x40
    buf[2:4] = cid.to_bytes(2, "little")
    if fctype is not None:
        buf[4] = fctype
    else:
        buf[4:8] = nsid.to_bytes(4, "little")
    for index, value in (cdw or {}).items():
        buf[index * 4 : index * 4 + 4] = value.to_bytes(4, "little")
    for offset, value in (raw or {}).items():
        buf[offset] = value
    return bytes(buf)


def rw_sqe(opcode: int, cid: int, nsid: int, slba: int, nlb: int) -> bytes:
    """Read/Write SQE; ``nlb`` is a block count (converted to 0's based)."""
    return sqe(opcode, cid, nsid=nsid, cdw={10: slba & 0xFFFFFFFF, 11: slba >> 32, 12: nlb - 1})


class ProtocolPair:
    """A host and a controller connection joined by an in-memory wire.

    ``wire["h2c"]`` / ``wire["c2h"]`` record every byte moved in each direction.
    """

    def __init__(
        self,
        *,
        header_digest: bool = False,
        data_digest: bool = False,
        max_h2c_data: int = 131072,
        max_in_capsule: int = 8192,
        max_c2h_data: int = 131072,
        host_max_c2h_data: int = 1 << 20,
    ) -> None:
        self.host = HostConnection(
            header_digest=header_digest, data_digest=data_digest, max_c2h_data=host_max_c2h_data
        )
        self.ctrl = ControllerConnection(
            max_h2c_data=max_h2c_data, max_in_capsule=max_in_capsule, max_c2h_data=max_c2h_data
        )
        self.wire: dict[str, bytearray] = {"h2c": bytearray(), "c2h": bytearray()}

    def peer(self, conn: Conn) -> Conn:
        return self.ctrl if conn is self.host else self.host

    def transfer(self, src: Conn, dst: Conn | None = None) -> bytes:
        """Move everything ``src`` queued into ``dst`` (default: its peer); returns the bytes."""
        dst = dst if dst is not None else self.peer(src)
        data = join(src.data_to_send())
        self.wire["h2c" if src is self.host else "c2h"] += data
        if data:
            dst.receive_data(data)
        return data

    def events(self, conn: Conn) -> list[AnyEvent]:
        return drain(conn)

    def h2c(self) -> list[AnyEvent]:
        """Host -> controller, then the controller's events."""
        self.transfer(self.host)
        return self.events(self.ctrl)

    def c2h(self) -> list[AnyEvent]:
        """Controller -> host, then the host's events."""
        self.transfer(self.ctrl)
        return self.events(self.host)

    def establish(
        self, header_digest: bool | None = None, data_digest: bool | None = None
    ) -> tuple[ConnectionEstablished, ConnectionEstablished]:
        """ICReq/ICResp; returns the (controller, host) ConnectionEstablished events."""
        if header_digest is not None:
            self.host.want_header_digest = header_digest
        if data_digest is not None:
            self.host.want_data_digest = data_digest
        self.host.initiate()
        ctrl_events = self.h2c()
        host_events = self.c2h()
        assert len(ctrl_events) == 1 and isinstance(ctrl_events[0], ConnectionEstablished)
        assert len(host_events) == 1 and isinstance(host_events[0], ConnectionEstablished)
        return ctrl_events[0], host_events[0]


# -- a recorded session: the commands a host sends and how a controller answers -------------


@dataclass(frozen=True)
class ScriptedCommand:
    sqe: bytes
    write: bytes | None = None
    read_len: int = 0
    in_capsule_limit: int = 0

    @property
    def cid(self) -> int:
        return self.sqe[2] | (self.sqe[3] << 8)


def connect_data() -> bytes:
    data = bytearray(1024)
    data[16:18] = (0xFFFF).to_bytes(2, "little")
    data[256 : 256 + 9] = b"nqn.sub:1"
    data[512 : 512 + 10] = b"nqn.host:1"
    return bytes(data)


#: ICReq is implied. Connect (1024 B in-capsule), Property Get CAP, Property Set CC, a write with
#: in-capsule data, a write through R2T (two H2CData with MAXH2CDATA 4096), a read (two
#: C2HData), a read completed with the SUCCESS flag.
SCRIPT: tuple[ScriptedCommand, ...] = (
    ScriptedCommand(
        sqe(0x7F, 0, fctype=0x01, raw={44: 31}), write=connect_data(), in_capsule_limit=8192
    ),
    ScriptedCommand(sqe(0x7F, 1, fctype=0x04, raw={40: 1})),
    ScriptedCommand(sqe(0x7F, 2, fctype=0x00, raw={44: 0x14, 48: 1, 50: 0x46})),
    ScriptedCommand(rw_sqe(0x01, 3, 1, 0, 1), write=bytes(range(256)) * 2, in_capsule_limit=8192),
    ScriptedCommand(rw_sqe(0x01, 4, 1, 8, 16), write=bytes([0xA5]) * 8192),
    ScriptedCommand(rw_sqe(0x02, 5, 1, 8, 16), read_len=8192),
    ScriptedCommand(rw_sqe(0x02, 6, 1, 0, 1), read_len=512),
)


def submit_script(
    host: HostConnection, script: Sequence[ScriptedCommand] = SCRIPT
) -> dict[int, bytearray]:
    """Queue every scripted command on ``host``; returns the read buffers by CID."""
    buffers: dict[int, bytearray] = {}
    for cmd in script:
        read = bytearray(cmd.read_len) if cmd.read_len else None
        if read is not None:
            buffers[cmd.cid] = read
        host.send_command(
            cmd.sqe, write_data=cmd.write, read_buffer=read, in_capsule_limit=cmd.in_capsule_limit
        )
    return buffers


class ScriptedController:
    """Answers controller events the way a target would, for the scripted session (and for
    anything a fuzzer turns it into): writes via R2T get their data requested, reads get
    C2HData, everything else a CapsuleResp."""

    #: Never ask for more than this in one R2T (a fuzzed SGL length can be anything).
    MAX_R2T = 1 << 16

    def __init__(self, ctrl: ControllerConnection, read_pattern: int = 0x3C) -> None:
        self.ctrl = ctrl
        self.read_pattern = read_pattern
        self.received: dict[int, bytes] = {}
        self._buffers: dict[int, bytearray] = {}

    def handle(self, event: AnyEvent) -> None:
        ctrl = self.ctrl
        if isinstance(event, CommandReceived):
            opcode = event.sqe[0]
            fctype = event.sqe[4] if opcode == 0x7F else 0
            write = bool((fctype if opcode == 0x7F else opcode) & 1)
            if event.data is not None:
                self.received[event.cid] = event.data
                ctrl.send_response(event.cid)
            elif write and 0 < event.transfer_length <= self.MAX_R2T:
                if event.cid in self._buffers:  # a fuzzed duplicate CID: refuse it
                    ctrl.send_response(event.cid, 0x8006)
                    return
                buf = bytearray(event.transfer_length)
                self._buffers[event.cid] = buf
                ctrl.request_data(event.cid, buf)
            elif not write and 0 < event.transfer_length <= self.MAX_R2T:
                ctrl.send_data(
                    event.cid,
                    bytes([self.read_pattern]) * event.transfer_length,
                    success=event.cid == 6,
                )
                if event.cid != 6:
                    ctrl.send_response(event.cid)
            else:
                ctrl.send_response(event.cid, dw0=0x1234 if opcode == 0x7F else 0)
        elif isinstance(event, DataReceived):
            self.received[event.cid] = bytes(self._buffers.pop(event.cid))
            ctrl.send_response(event.cid, 0 if event.data_digest_ok else 0x0044)


def record_session(
    *, header_digest: bool = False, data_digest: bool = False
) -> tuple[bytes, bytes, ProtocolPair]:
    """Run :data:`SCRIPT` through a pair (MAXH2CDATA 4096, max C2HData 4096); returns the
    host->controller bytes, the controller->host bytes and the pair."""
    pair = ProtocolPair(
        header_digest=header_digest, data_digest=data_digest, max_h2c_data=4096, max_c2h_data=4096
    )
    pair.establish()
    responder = ScriptedController(pair.ctrl)
    buffers = submit_script(pair.host)
    for _ in range(10):
        for event in pair.h2c():
            responder.handle(event)
        pair.c2h()
        if pair.host.outstanding == 0:
            break
    assert pair.host.outstanding == 0, "the scripted session did not complete"
    assert all(set(buf) == {responder.read_pattern} for buf in buffers.values())
    return bytes(pair.wire["h2c"]), bytes(pair.wire["c2h"]), pair
