"""``struct`` codecs for the data path, each derived from a declaration in this package.

construct is ~30-200x slower than ``struct`` per header (PERFORMANCE.md), so everything that
runs once per I/O packs and unpacks with the precompiled ``struct.Struct`` objects below.
``tests/nvmeof/test_wire_fast.py`` proves each agrees byte for byte with its declaration
(:data:`DECLARATIONS` pairs them).
"""

from __future__ import annotations

import struct
from typing import Any

from nvmeof.wire import cqe as _cqe, pdu as _pdu, sqe as _sqe

#: Common header: type, flags, hlen, pdo, plen.
CH = struct.Struct("<BBBBI")
#: CapsuleResp: CH + CQE (dw0, dw1, sqhd, sqid, cid, status).
CAPSULE_RESP = struct.Struct("<BBBBIIIHHHH")
#: H2CData / C2HData: CH + cccid, ttag, datao, datal, 4 reserved.
DATA_PDU = struct.Struct("<BBBBIHHII4x")
#: R2T: CH + cccid, ttag, r2to, r2tl, 4 reserved.
R2T = struct.Struct("<BBBBIHHII4x")
#: TermReq: CH + fes, fei, 10 reserved.
TERM_REQ = struct.Struct("<BBBBIHI10x")
#: SQE: opcode, flags, cid, nsid, cdw2, cdw3, mptr, sgl addr, sgl length, sgl type, cdw10-15.
SQE = struct.Struct("<BBHIIIQQI3xB6I")
#: CQE: dw0, dw1, sqhd, sqid, cid, status.
CQE = struct.Struct("<IIHHHH")
#: Read/Write/Compare/Write Zeroes command-specific part (SQE bytes 40-63).
RW_TAIL = struct.Struct("<QHHIIHH")
RW_TAIL_OFFSET = 40
#: SGL descriptor (SQE bytes 24-39): addr, length, type.
SGL = struct.Struct("<QI3xB")
SGL_OFFSET = 24
#: A Read or Write CapsuleCmd as the target's plain I/O path reads it, parse only: CH (type,
#: flags, hlen, pdo, plen), then the SQE's opcode, flags, cid, nsid, SGL length and type, SLBA,
#: NLB and control (CDW12). ``tests/nvmeof/test_wire_fast.py`` checks it against CAPSULE_CMD.
RW_CAPSULE = struct.Struct("<BBBBIBBHI24xI3xBQHH")
#: CID inside the SQE.
CID = struct.Struct("<H")
CID_OFFSET = 2


def _flatten_sqe(c: Any) -> tuple[int, ...]:
    return (
        c.opcode, c.flags, c.cid, c.nsid, c.cdw2, c.cdw3, c.mptr,
        c.sgl.addr, c.sgl.length, c.sgl.type,
        c.cdw10, c.cdw11, c.cdw12, c.cdw13, c.cdw14, c.cdw15,
    )  # fmt: skip


def _flatten_ch(c: Any) -> tuple[int, ...]:
    return (c.type, c.flags, c.hlen, c.pdo, c.plen)


def _flatten_cqe(c: Any) -> tuple[int, ...]:
    return (c.dw0, c.dw1, c.sqhd, c.sqid, c.cid, c.status)


def _flatten_resp(c: Any) -> tuple[int, ...]:
    return _flatten_ch(c.ch) + _flatten_cqe(c.cqe)


def _flatten_data(c: Any) -> tuple[int, ...]:
    return (*_flatten_ch(c.ch), c.cccid, c.ttag, c.datao, c.datal)


def _flatten_r2t(c: Any) -> tuple[int, ...]:
    return (*_flatten_ch(c.ch), c.cccid, c.ttag, c.r2to, c.r2tl)


def _flatten_term(c: Any) -> tuple[int, ...]:
    return (*_flatten_ch(c.ch), c.fes, c.fei)


def _flatten_rw(c: Any) -> tuple[int, ...]:
    return (c.slba, c.nlb, c.control, c.dsmgmt, c.reftag, c.lbat, c.lbatm)


#: (fast codec, construct declaration, parsed-container -> tuple, byte offset inside the
#: declaration where the fast codec applies). Used by the equality tests.
DECLARATIONS: dict[str, tuple[struct.Struct, Any, Any, int]] = {
    "CH": (CH, _pdu.COMMON_HEADER, _flatten_ch, 0),
    "CAPSULE_RESP": (CAPSULE_RESP, _pdu.CAPSULE_RESP, _flatten_resp, 0),
    "DATA_PDU": (DATA_PDU, _pdu.DATA_PDU, _flatten_data, 0),
    "R2T": (R2T, _pdu.R2T, _flatten_r2t, 0),
    "TERM_REQ": (TERM_REQ, _pdu.TERM_REQ, _flatten_term, 0),
    "SQE": (SQE, _sqe.SQE, _flatten_sqe, 0),
    "CQE": (CQE, _cqe.CQE, _flatten_cqe, 0),
    "RW_TAIL": (RW_TAIL, _sqe.RW_COMMAND, _flatten_rw, RW_TAIL_OFFSET),
}
