"""NVMe/TCP PDU headers (``include/linux/nvme-tcp.h``; docs/PROTOCOL.md §1).

Each PDU header is declared once here; the data path uses the ``struct`` codecs in
:mod:`nvmeof.wire.fast`, which tests prove byte-identical to these declarations.
"""

from __future__ import annotations

from construct import Default, Int8ul, Int16ul, Int32ul, Padding, Struct

from nvmeof.wire.cqe import CQE
from nvmeof.wire.sqe import SQE

COMMON_HEADER = Struct(
    "type" / Int8ul,
    "flags" / Default(Int8ul, 0),
    "hlen" / Int8ul,
    "pdo" / Default(Int8ul, 0),
    "plen" / Int32ul,
)

ICREQ = Struct(
    "ch" / COMMON_HEADER,
    "pfv" / Default(Int16ul, 0),
    "hpda" / Default(Int8ul, 0),
    "digest" / Default(Int8ul, 0),
    "maxr2t" / Default(Int32ul, 0),
    Padding(112),
)

ICRESP = Struct(
    "ch" / COMMON_HEADER,
    "pfv" / Default(Int16ul, 0),
    "cpda" / Default(Int8ul, 0),
    "digest" / Default(Int8ul, 0),
    "maxh2cdata" / Int32ul,
    Padding(112),
)

#: H2CTermReq and C2HTermReq share one layout; up to 128 bytes of error data follow.
TERM_REQ = Struct(
    "ch" / COMMON_HEADER,
    "fes" / Int16ul,
    "fei" / Default(Int32ul, 0),
    Padding(10),
)

CAPSULE_CMD = Struct(
    "ch" / COMMON_HEADER,
    "sqe" / SQE,
)

CAPSULE_RESP = Struct(
    "ch" / COMMON_HEADER,
    "cqe" / CQE,
)

#: H2CData and C2HData headers (ttag is reserved in C2HData).
DATA_PDU = Struct(
    "ch" / COMMON_HEADER,
    "cccid" / Int16ul,
    "ttag" / Default(Int16ul, 0),
    "datao" / Int32ul,
    "datal" / Int32ul,
    Padding(4),
)

R2T = Struct(
    "ch" / COMMON_HEADER,
    "cccid" / Int16ul,
    "ttag" / Int16ul,
    "r2to" / Int32ul,
    "r2tl" / Int32ul,
    Padding(4),
)
