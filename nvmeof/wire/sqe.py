"""The 64-byte submission queue entry and the per-command views of it.

``struct nvme_common_command`` and its per-command variants in ``include/linux/nvme.h``;
docs/PROTOCOL.md §2.2, §3.1, §5 and §6. Every command shares bytes 0-39 (opcode, flags, CID,
NSID, CDW2/3, MPTR, SGL1); bytes 40-63 (CDW10-15) are command specific.
"""

from __future__ import annotations

from typing import Any

from construct import Default, Int8ul, Int16ul, Int32ul, Int64ul, Padding, Struct

#: SGL Data Block descriptor (``struct nvme_sgl_desc``), SQE bytes 24-39.
SGL_DESCRIPTOR = Struct(
    "addr" / Default(Int64ul, 0),
    "length" / Default(Int32ul, 0),
    Padding(3),
    "type" / Default(Int8ul, 0x5A),
)

#: Bytes 0-39 common to every NVMe (non-fabrics) command.
_COMMON_HEAD = (
    "opcode" / Int8ul,
    "flags" / Default(Int8ul, 0x40),
    "cid" / Default(Int16ul, 0),
    "nsid" / Default(Int32ul, 0),
    "cdw2" / Default(Int32ul, 0),
    "cdw3" / Default(Int32ul, 0),
    "mptr" / Default(Int64ul, 0),
    "sgl" / Default(SGL_DESCRIPTOR, {}),
)

#: Generic view: the command-specific dwords as CDW10-CDW15.
SQE = Struct(
    *_COMMON_HEAD,
    "cdw10" / Default(Int32ul, 0),
    "cdw11" / Default(Int32ul, 0),
    "cdw12" / Default(Int32ul, 0),
    "cdw13" / Default(Int32ul, 0),
    "cdw14" / Default(Int32ul, 0),
    "cdw15" / Default(Int32ul, 0),
)


def _command(*tail: Any) -> Any:
    """A command view: the common 40 bytes plus its own 24 bytes of CDW10-15."""
    sqe = Struct(*_COMMON_HEAD, *tail)
    assert sqe.sizeof() == 64, sqe.sizeof()
    return sqe


#: Read (0x02), Write (0x01), Compare (0x05), Write Zeroes (0x08) (``struct nvme_rw_command``).
RW_COMMAND = _command(
    "slba" / Default(Int64ul, 0),
    "nlb" / Default(Int16ul, 0),  # 0's based
    "control" / Default(Int16ul, 0),  # bit 15 LR, bit 14 FUA, bit 9 DEAC (write zeroes)
    "dsmgmt" / Default(Int32ul, 0),
    "reftag" / Default(Int32ul, 0),
    "lbat" / Default(Int16ul, 0),
    "lbatm" / Default(Int16ul, 0),
)

RW_CONTROL_FUA = 1 << 14
RW_CONTROL_LR = 1 << 15
WZ_CONTROL_DEAC = 1 << 9

#: Dataset Management (0x09) (``struct nvme_dsm_cmd``).
DSM_COMMAND = _command(
    "nr" / Default(Int32ul, 0),  # bits 7:0, 0's based number of ranges
    "attributes" / Default(Int32ul, 0),  # bit 2 AD (deallocate)
    Padding(16),
)
DSM_ATTR_DEALLOCATE = 1 << 2

#: One Dataset Management range (16 bytes; NLB is NOT 0's based).
DSM_RANGE = Struct(
    "cattr" / Default(Int32ul, 0),
    "nlb" / Int32ul,
    "slba" / Int64ul,
)

#: Identify (0x06) (``struct nvme_identify``).
IDENTIFY_COMMAND = _command(
    "cns" / Default(Int8ul, 0),
    Padding(1),
    "ctrlid" / Default(Int16ul, 0),
    "cnssid" / Default(Int16ul, 0),
    Padding(1),
    "csi" / Default(Int8ul, 0),
    Padding(16),
)

#: Get Log Page (0x02) (``struct nvme_get_log_page_command``).
GET_LOG_PAGE_COMMAND = _command(
    "lid" / Default(Int8ul, 0),
    "lsp" / Default(Int8ul, 0),  # bits 6:0 LSP, bit 7 RAE
    "numdl" / Default(Int16ul, 0),
    "numdu" / Default(Int16ul, 0),
    "lsi" / Default(Int16ul, 0),
    "lpol" / Default(Int32ul, 0),
    "lpou" / Default(Int32ul, 0),
    "uuid_index" / Default(Int8ul, 0),
    Padding(2),
    "csi" / Default(Int8ul, 0),
    Padding(4),
)
LOG_RAE = 0x80

#: Get/Set Features (0x0A/0x09) (``struct nvme_features``).
FEATURES_COMMAND = _command(
    "fid" / Default(Int32ul, 0),  # bits 7:0 FID; Set: bit 31 SV; Get: bits 10:8 SEL
    "dword11" / Default(Int32ul, 0),
    "dword12" / Default(Int32ul, 0),
    "dword13" / Default(Int32ul, 0),
    "dword14" / Default(Int32ul, 0),
    "dword15" / Default(Int32ul, 0),
)

#: Abort (0x08): SQID and CID of the command to abort.
ABORT_COMMAND = _command(
    "sqid" / Default(Int16ul, 0),
    "abort_cid" / Default(Int16ul, 0),
    Padding(20),
)

#: Keep Alive (0x18) and Asynchronous Event Request (0x0C) have no command-specific fields.
NO_FIELDS_COMMAND = _command(Padding(24))

__all__ = [
    "ABORT_COMMAND",
    "DSM_ATTR_DEALLOCATE",
    "DSM_COMMAND",
    "DSM_RANGE",
    "FEATURES_COMMAND",
    "GET_LOG_PAGE_COMMAND",
    "IDENTIFY_COMMAND",
    "LOG_RAE",
    "NO_FIELDS_COMMAND",
    "RW_COMMAND",
    "RW_CONTROL_FUA",
    "RW_CONTROL_LR",
    "SGL_DESCRIPTOR",
    "SQE",
    "WZ_CONTROL_DEAC",
]
