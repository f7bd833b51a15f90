"""Fabrics commands (opcode 0x7F) and the 1024-byte Connect data.

``struct nvmf_common_command``, ``nvmf_connect_command``, ``nvmf_connect_data``,
``nvmf_property_get_command``, ``nvmf_property_set_command`` in ``include/linux/nvme.h``;
docs/PROTOCOL.md §4.
"""

from __future__ import annotations

from typing import Any

from construct import Bytes, Default, Int8ul, Int16ul, Int32ul, Int64ul, Padding, Struct

from nvmeof.wire.fields import nqn_field
from nvmeof.wire.sqe import SGL_DESCRIPTOR

_FABRICS_HEAD = (
    "opcode" / Default(Int8ul, 0x7F),
    "flags" / Default(Int8ul, 0x40),
    "cid" / Default(Int16ul, 0),
    "fctype" / Int8ul,
    Padding(19),
    "sgl" / Default(SGL_DESCRIPTOR, {}),
)


def _fabrics(*tail: Any) -> Any:
    cmd = Struct(*_FABRICS_HEAD, *tail)
    assert cmd.sizeof() == 64, cmd.sizeof()
    return cmd


#: Generic fabrics command: FCTYPE plus 24 raw command-specific bytes.
FABRICS_COMMAND = _fabrics("specific" / Default(Bytes(24), bytes(24)))

CONNECT_COMMAND = _fabrics(
    "recfmt" / Default(Int16ul, 0),
    "qid" / Default(Int16ul, 0),
    "sqsize" / Default(Int16ul, 31),  # 0's based
    "cattr" / Default(Int8ul, 0),  # bit 2: disable SQ flow control
    Padding(1),
    "kato" / Default(Int32ul, 0),  # milliseconds
    Padding(12),
)
CATTR_DISABLE_SQFLOW = 1 << 2

CONNECT_DATA = Struct(
    "hostid" / Default(Bytes(16), bytes(16)),
    "cntlid" / Default(Int16ul, 0xFFFF),
    Padding(238),
    "subsysnqn" / nqn_field(256),
    "hostnqn" / nqn_field(256),
    Padding(256),
)

#: Offsets inside the Connect data, for Connect Invalid Parameters IPO/IATTR answers.
CONNECT_DATA_OFFSET_CNTLID = 16
CONNECT_DATA_OFFSET_SUBNQN = 256
CONNECT_DATA_OFFSET_HOSTNQN = 512

PROPERTY_GET_COMMAND = _fabrics(
    "attrib" / Default(Int8ul, 0),  # bits 2:0: 0 = 4 bytes, 1 = 8 bytes
    Padding(3),
    "offset" / Int32ul,
    Padding(16),
)

PROPERTY_SET_COMMAND = _fabrics(
    "attrib" / Default(Int8ul, 0),
    Padding(3),
    "offset" / Int32ul,
    "value" / Default(Int64ul, 0),
    Padding(8),
)

#: Disconnect (FCTYPE 0x08, NVMe-oF 1.1): RECFMT only.
DISCONNECT_COMMAND = _fabrics(
    "recfmt" / Default(Int16ul, 0),
    Padding(22),
)
