"""Host-side NVMe/TCP PDUs built from plain ``struct``, and the fields a mutation may change.

Deliberately independent of ``nvmeof/``: a bug in our own codecs must not hide a divergence.
Layouts: NVMe/TCP transport specification 1.0 (section 3.6, PDU formats) and the NVMe base
specification (Submission Queue Entry, Fabrics commands); the kernel's names are in
``include/linux/nvme-tcp.h`` and ``include/linux/nvme.h``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import crc32c as _crc32c

ICREQ, ICRESP, H2C_TERM, C2H_TERM, CAPSULE_CMD, CAPSULE_RESP, H2C_DATA, C2H_DATA, R2T = (
    0, 1, 2, 3, 4, 5, 6, 7, 9,
)  # fmt: skip
PDU_NAMES = {
    0: "ICReq", 1: "ICResp", 2: "H2CTermReq", 3: "C2HTermReq", 4: "CapsuleCmd",
    5: "CapsuleResp", 6: "H2CData", 7: "C2HData", 9: "R2T",
}  # fmt: skip
F_HDGST, F_DDGST, F_LAST, F_SUCCESS = 0x01, 0x02, 0x04, 0x08

SGL_TRANSPORT = 0x5A  # transport SGL data block, subtype A: data by R2T/H2CData (or none)
SGL_OFFSET = 0x01  # data block, address is an offset: in-capsule data
PSDT_SGL = 0x40

FABRICS = 0x7F
FCTYPE_PROPERTY_SET, FCTYPE_CONNECT, FCTYPE_PROPERTY_GET = 0x00, 0x01, 0x04
FCTYPE_AUTH_SEND, FCTYPE_AUTH_RECV, FCTYPE_DISCONNECT = 0x05, 0x06, 0x08
PROP_CAP, PROP_VS, PROP_CC, PROP_CSTS = 0x00, 0x08, 0x14, 0x1C
CC_ENABLE = 0x00460001  # EN, IOSQES 6, IOCQES 4 (what the Linux host writes)

DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"

_CH = struct.Struct("<BBBBI")


def crc(data: bytes | bytearray | memoryview) -> bytes:
    return (_crc32c.crc32c(bytes(data)) & 0xFFFFFFFF).to_bytes(4, "little")


@dataclass(frozen=True)
class Field:
    """A mutable field of a PDU: byte offset in the PDU, size, and what it holds."""

    name: str
    offset: int
    size: int
    kind: str = "int"  # int | bytes | nqn


@dataclass
class Pdu:
    """One host PDU as bytes plus where its digests live, so a mutation can re-digest it."""

    data: bytearray
    hlen: int
    hdgst: bool = False
    ddgst: bool = False
    fields: list[Field] = field(default_factory=list)

    @property
    def pdo(self) -> int:
        return self.data[3]

    def redigest(self) -> None:
        """Recompute the digests after a change (header digest over ``hlen`` bytes, data digest
        over the bytes between PDO and the end)."""
        if self.hdgst and len(self.data) >= self.hlen + 4:
            self.data[self.hlen : self.hlen + 4] = crc(self.data[: self.hlen])
        if self.ddgst and self.data[3] and len(self.data) > self.data[3] + 4:
            self.data[-4:] = crc(self.data[self.data[3] : -4])

    def copy(self) -> Pdu:
        return Pdu(bytearray(self.data), self.hlen, self.hdgst, self.ddgst, list(self.fields))


CH_FIELDS = [
    Field("ch.type", 0, 1), Field("ch.flags", 1, 1), Field("ch.hlen", 2, 1),
    Field("ch.pdo", 3, 1), Field("ch.plen", 4, 4),
]  # fmt: skip
ICREQ_FIELDS = [
    Field("icreq.pfv", 8, 2), Field("icreq.hpda", 10, 1), Field("icreq.dgst", 11, 1),
    Field("icreq.maxr2t", 12, 4), Field("icreq.reserved", 16, 112, "bytes"),
]  # fmt: skip
SQE_FIELDS = [
    Field("sqe.opcode", 8, 1), Field("sqe.flags", 9, 1), Field("sqe.cid", 10, 2),
    Field("sqe.nsid", 12, 4), Field("sqe.cdw2", 16, 4), Field("sqe.cdw3", 20, 4),
    Field("sqe.mptr", 24, 8), Field("sgl.addr", 32, 8), Field("sgl.length", 40, 4),
    Field("sgl.reserved", 44, 3, "bytes"), Field("sgl.type", 47, 1),
    Field("sqe.cdw10", 48, 4), Field("sqe.cdw11", 52, 4), Field("sqe.cdw12", 56, 4),
    Field("sqe.cdw13", 60, 4), Field("sqe.cdw14", 64, 4), Field("sqe.cdw15", 68, 4),
]  # fmt: skip
FABRICS_FIELDS = [Field("fabrics.fctype", 12, 1), Field("fabrics.reserved", 13, 11, "bytes")]
CONNECT_FIELDS = [
    Field("connect.recfmt", 48, 2), Field("connect.qid", 50, 2), Field("connect.sqsize", 52, 2),
    Field("connect.cattr", 54, 1), Field("connect.kato", 56, 4),
]  # fmt: skip
PROPERTY_FIELDS = [Field("property.attrib", 48, 1), Field("property.offset", 52, 4),
                   Field("property.value", 56, 8)]  # fmt: skip
H2C_FIELDS = [
    Field("h2c.cccid", 8, 2), Field("h2c.ttag", 10, 2), Field("h2c.datao", 12, 4),
    Field("h2c.datal", 16, 4), Field("h2c.reserved", 20, 4, "bytes"),
]  # fmt: skip


def icreq(*, hpda: int = 0, dgst: int = 0, maxr2t: int = 0, pfv: int = 0) -> Pdu:
    data = bytearray(128)
    _CH.pack_into(data, 0, ICREQ, 0, 128, 0, 128)
    struct.pack_into("<HBBI", data, 8, pfv, hpda, dgst, maxr2t)
    return Pdu(data, 128, fields=CH_FIELDS + ICREQ_FIELDS)


def sqe(
    opcode: int, cid: int, *, nsid: int = 0, flags: int = PSDT_SGL, sgl_type: int = SGL_TRANSPORT,
    sgl_length: int = 0, sgl_addr: int = 0, cdw: tuple[int, ...] = (), cdw2: int = 0,
    cdw3: int = 0, mptr: int = 0,
) -> bytearray:  # fmt: skip
    """A 64-byte submission queue entry with an SGL data pointer; ``cdw`` = CDW10..15."""
    out = bytearray(64)
    struct.pack_into("<BBHIIIQQIxxxB", out, 0, opcode, flags, cid, nsid, cdw2, cdw3, mptr,
                     sgl_addr, sgl_length, sgl_type)  # fmt: skip
    for i, value in enumerate(cdw):
        struct.pack_into("<I", out, 40 + 4 * i, value & 0xFFFFFFFF)
    return out


def capsule(
    entry: bytes | bytearray, data: bytes = b"", *, hdgst: bool = False, ddgst: bool = False,
    extra_fields: list[Field] | None = None,
) -> Pdu:  # fmt: skip
    """A CapsuleCmd carrying ``entry`` and in-capsule ``data`` (PDO right after the header, as
    the Linux host sends it)."""
    hd = 4 if hdgst else 0
    flags = F_HDGST if hdgst else 0
    pdo = 0
    plen = 72 + hd
    if data:
        pdo = 72 + hd
        plen = pdo + len(data) + (4 if ddgst else 0)
        flags |= F_DDGST if ddgst else 0
    out = bytearray(plen)
    _CH.pack_into(out, 0, CAPSULE_CMD, flags, 72, pdo, plen)
    out[8:72] = entry
    if data:
        out[pdo : pdo + len(data)] = data
    pdu = Pdu(out, 72, hdgst, ddgst and bool(data), CH_FIELDS + SQE_FIELDS + (extra_fields or []))
    pdu.redigest()
    return pdu


def h2c_data(cid: int, ttag: int, offset: int, data: bytes, *, last: bool = True,
             hdgst: bool = False, ddgst: bool = False) -> Pdu:  # fmt: skip
    hd = 4 if hdgst else 0
    pdo = 24 + hd
    plen = pdo + len(data) + (4 if ddgst else 0)
    flags = (F_LAST if last else 0) | (F_HDGST if hdgst else 0) | (F_DDGST if ddgst else 0)
    out = bytearray(plen)
    _CH.pack_into(out, 0, H2C_DATA, flags, 24, pdo, plen)
    struct.pack_into("<HHII", out, 8, cid, ttag, offset, len(data))
    out[pdo : pdo + len(data)] = data
    pdu = Pdu(out, 24, hdgst, ddgst, CH_FIELDS + H2C_FIELDS)
    pdu.redigest()
    return pdu


def h2c_term_req(fes: int = 1, fei: int = 0) -> Pdu:
    out = bytearray(24)
    _CH.pack_into(out, 0, H2C_TERM, 0, 24, 0, 24)
    struct.pack_into("<HI", out, 8, fes, fei)
    return Pdu(out, 24, fields=CH_FIELDS)


# -- commands ---------------------------------------------------------------------------------


def connect_data(hostnqn: str, subnqn: str, hostid: bytes, cntlid: int = 0xFFFF) -> bytes:
    out = bytearray(1024)
    out[0:16] = hostid
    struct.pack_into("<H", out, 16, cntlid)
    out[256 : 256 + len(subnqn)] = subnqn.encode()
    out[512 : 512 + len(hostnqn)] = hostnqn.encode()
    return bytes(out)


CONNECT_DATA_FIELDS = [
    Field("connect.hostid", 0, 16, "bytes"), Field("connect.cntlid", 16, 2),
    Field("connect.data_reserved", 18, 238, "bytes"), Field("connect.subnqn", 256, 256, "nqn"),
    Field("connect.hostnqn", 512, 256, "nqn"),
]  # fmt: skip


def connect(cid: int, *, qid: int, sqsize: int, hostnqn: str, subnqn: str, hostid: bytes,
            cntlid: int = 0xFFFF, kato: int = 0, cattr: int = 0, hdgst: bool = False,
            ddgst: bool = False) -> Pdu:  # fmt: skip
    """Connect with its 1 KiB data in the capsule (the Linux host's way)."""
    entry = sqe(FABRICS, cid, sgl_type=SGL_OFFSET, sgl_length=1024)
    entry[4] = FCTYPE_CONNECT
    struct.pack_into("<HHHBxI", entry, 40, 0, qid, sqsize, cattr, kato)
    data = connect_data(hostnqn, subnqn, hostid, cntlid)
    pdu = capsule(
        entry, data, hdgst=hdgst, ddgst=ddgst, extra_fields=FABRICS_FIELDS + CONNECT_FIELDS
    )
    pdo = pdu.pdo
    pdu.fields += [Field(f.name, pdo + f.offset, f.size, f.kind) for f in CONNECT_DATA_FIELDS]
    return pdu


def property_get(cid: int, offset: int, size8: bool = False, **dg: bool) -> Pdu:
    entry = sqe(FABRICS, cid)
    entry[4] = FCTYPE_PROPERTY_GET
    entry[40] = 1 if size8 else 0
    struct.pack_into("<I", entry, 44, offset)
    return capsule(entry, extra_fields=FABRICS_FIELDS + PROPERTY_FIELDS, **dg)


def property_set(cid: int, offset: int, value: int, size8: bool = False, **dg: bool) -> Pdu:
    entry = sqe(FABRICS, cid)
    entry[4] = FCTYPE_PROPERTY_SET
    entry[40] = 1 if size8 else 0
    struct.pack_into("<IQ", entry, 44, offset, value)
    return capsule(entry, extra_fields=FABRICS_FIELDS + PROPERTY_FIELDS, **dg)


def disconnect(cid: int, **dg: bool) -> Pdu:
    entry = sqe(FABRICS, cid)
    entry[4] = FCTYPE_DISCONNECT
    return capsule(entry, extra_fields=FABRICS_FIELDS, **dg)


def identify(cid: int, cns: int, nsid: int = 0, length: int = 4096, **dg: bool) -> Pdu:
    return capsule(sqe(0x06, cid, nsid=nsid, sgl_length=length, cdw=(cns,)), **dg)


def get_log_page(cid: int, lid: int, length: int, nsid: int = 0xFFFFFFFF, **dg: bool) -> Pdu:
    numd = length // 4 - 1
    cdw10 = lid | ((numd & 0xFFFF) << 16)
    return capsule(sqe(0x02, cid, nsid=nsid, sgl_length=length, cdw=(cdw10, numd >> 16)), **dg)


def set_features(cid: int, fid: int, value: int, **dg: bool) -> Pdu:
    return capsule(sqe(0x09, cid, cdw=(fid, value)), **dg)


def get_features(cid: int, fid: int, **dg: bool) -> Pdu:
    return capsule(sqe(0x0A, cid, cdw=(fid,)), **dg)


def keep_alive(cid: int, **dg: bool) -> Pdu:
    return capsule(sqe(0x18, cid), **dg)


def read(cid: int, slba: int, nlb: int, block: int = 512, nsid: int = 1, **dg: bool) -> Pdu:
    return capsule(sqe(0x02, cid, nsid=nsid, sgl_length=nlb * block,
                       cdw=(slba & 0xFFFFFFFF, slba >> 32, nlb - 1)), **dg)  # fmt: skip


def write_in_capsule(cid: int, slba: int, data: bytes, block: int = 512, nsid: int = 1,
                     **dg: bool) -> Pdu:  # fmt: skip
    nlb = len(data) // block
    entry = sqe(0x01, cid, nsid=nsid, sgl_type=SGL_OFFSET, sgl_length=len(data),
                cdw=(slba & 0xFFFFFFFF, slba >> 32, nlb - 1))  # fmt: skip
    return capsule(entry, data, **dg)


def write_r2t(cid: int, slba: int, nbytes: int, block: int = 512, nsid: int = 1,
              **dg: bool) -> Pdu:  # fmt: skip
    """A Write whose data will be asked for with an R2T."""
    entry = sqe(0x01, cid, nsid=nsid, sgl_length=nbytes,
                cdw=(slba & 0xFFFFFFFF, slba >> 32, nbytes // block - 1))  # fmt: skip
    return capsule(entry, **dg)


def flush(cid: int, nsid: int = 1, **dg: bool) -> Pdu:
    return capsule(sqe(0x00, cid, nsid=nsid), **dg)


def pattern(nbytes: int, seed: int) -> bytes:
    """Deterministic, non-zero test data."""
    return bytes((seed * 131 + i * 7 + (i >> 8)) & 0xFF or 1 for i in range(nbytes))
