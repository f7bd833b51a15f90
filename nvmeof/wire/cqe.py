"""The 16-byte completion queue entry (``struct nvme_completion``; docs/PROTOCOL.md §3.2, §3.3)."""

from __future__ import annotations

from construct import Default, Int16ul, Int32ul, Struct

CQE = Struct(
    "dw0" / Default(Int32ul, 0),
    "dw1" / Default(Int32ul, 0),
    "sqhd" / Default(Int16ul, 0),
    "sqid" / Default(Int16ul, 0),
    "cid" / Int16ul,
    #: phase tag (bit 0, always 0 on fabrics), SC, SCT, CRD, More, DNR; see nvmeof.status.
    "status" / Default(Int16ul, 0),
)
