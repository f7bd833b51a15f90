"""Reservation commands and their data, declared once with ``construct``.

NVMe Base Specification 2.0, "Reservations" and the NVM Command Set's Reservation
Register / Report / Acquire / Release (opcodes 0x0D, 0x0E, 0x11, 0x15). Field names follow the
Linux kernel's ``include/linux/nvme.h`` (the opcodes are ``IoOpcode.RESERVATION_*``) (``struct nvme_reservation_status[_ext]``,
``struct nvme_registered_ctrl[_ext]``, ``struct nvme_pr_log``):

* ``REGISTER_DATA`` - Reservation Register's 16 bytes: CRKEY, NRKEY.
* ``ACQUIRE_DATA`` - Reservation Acquire's 16 bytes: CRKEY, PRKEY.
* ``RELEASE_DATA`` - Reservation Release's 8 bytes: CRKEY.
* ``STATUS_HEADER`` / ``REGISTERED_CTRL`` - Report with EDS = 0: a 24-byte header and 24-byte
  entries with a 64-bit Host ID.
* ``STATUS_EXT_HEADER`` / ``REGISTERED_CTRL_EXT`` - Report with EDS = 1: a 64-byte header and
  64-byte entries with the 128-bit Host ID (the only kind over Fabrics: Connect's Host ID is
  128 bits).
* ``NOTIFICATION_LOG`` - log page 0x80, one 64-byte notification per read.

The command dwords are plain integers: :func:`register_cdw10` and friends pack them,
:func:`parse_cdw10` unpacks the shared layout (action 2:0, IEKEY 3, type 15:8, CPTPL 31:30).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

from construct import Bytes, Default, Int8ul, Int16ul, Int32ul, Int64ul, Struct

from nvmeof.wire.fields import Reserved, build_strict, parse_strict

REGISTER_DATA_SIZE = ACQUIRE_DATA_SIZE = 16
RELEASE_DATA_SIZE = 8
STATUS_HEADER_SIZE = REGISTERED_CTRL_SIZE = 24
STATUS_EXT_HEADER_SIZE = REGISTERED_CTRL_EXT_SIZE = 64
NOTIFICATION_LOG_SIZE = 64
#: Report's dynamic-controller CNTLID (a registrant is a host, not one controller).
CNTLID_DYNAMIC = 0xFFFF


class ReservationType(IntEnum):
    """RTYPE (Figure "Reservation Type Encoding")."""

    WRITE_EXCLUSIVE = 1
    EXCLUSIVE_ACCESS = 2
    WRITE_EXCLUSIVE_REG_ONLY = 3
    EXCLUSIVE_ACCESS_REG_ONLY = 4
    WRITE_EXCLUSIVE_ALL_REGS = 5
    EXCLUSIVE_ACCESS_ALL_REGS = 6


class RegisterAction(IntEnum):
    REGISTER = 0
    UNREGISTER = 1
    REPLACE = 2


class AcquireAction(IntEnum):
    ACQUIRE = 0
    PREEMPT = 1
    PREEMPT_AND_ABORT = 2


class ReleaseAction(IntEnum):
    RELEASE = 0
    CLEAR = 1


class Cptpl(IntEnum):
    """Register's Change Persist Through Power Loss State (CDW10 31:30)."""

    NO_CHANGE = 0
    RESERVED = 1
    CLEAR = 2  # registrations and the reservation are lost on power loss
    PERSIST = 3  # they persist through power loss


class NotificationType(IntEnum):
    """Reservation Notification log page's type (and the mask bit of feature 0x82)."""

    EMPTY = 0
    REGISTRATION_PREEMPTED = 1
    RESERVATION_RELEASED = 2
    RESERVATION_PREEMPTED = 3


#: RESCAP (Identify Namespace byte 31): bit 0 PTPL, bits 1-6 the six types, bit 7 "IEKEY as in
#: revision 1.3 and later".
RESCAP_PTPL = 1 << 0
RESCAP_ALL_TYPES = 0x7E
RESCAP_IEKEY_1_3 = 1 << 7
#: ONCS bit 5 (Identify Controller): reservations supported.
ONCS_RESERVATIONS = 1 << 5
#: Feature identifiers.
FEATURE_NOTIFICATION_MASK = 0x82
FEATURE_PERSISTENCE = 0x83
#: Log page identifier of the Reservation Notification log.
LOG_RESERVATION_NOTIFICATION = 0x80
#: Asynchronous event information (type 6, I/O command specific): "reservation log page
#: available".
AEN_INFO_RESERVATION_LOG = 0x00

REGISTER_DATA = Struct("crkey" / Default(Int64ul, 0), "nrkey" / Default(Int64ul, 0))
ACQUIRE_DATA = Struct("crkey" / Default(Int64ul, 0), "prkey" / Default(Int64ul, 0))
RELEASE_DATA = Struct("crkey" / Default(Int64ul, 0))

#: ``struct nvme_reservation_status`` without its entries.
STATUS_HEADER = Struct(
    "gen" / Default(Int32ul, 0),  # 0
    "rtype" / Default(Int8ul, 0),  # 4
    "regctl" / Default(Int16ul, 0),  # 5, unaligned
    Reserved(2),  # 7
    "ptpls" / Default(Int8ul, 0),  # 9
    Reserved(14),  # 10
)
#: ``struct nvme_registered_ctrl``.
REGISTERED_CTRL = Struct(
    "cntlid" / Default(Int16ul, 0),  # 0
    "rcsts" / Default(Int8ul, 0),  # 2
    Reserved(5),  # 3
    "hostid" / Default(Int64ul, 0),  # 8
    "rkey" / Default(Int64ul, 0),  # 16
)
#: ``struct nvme_reservation_status_ext`` without its entries.
STATUS_EXT_HEADER = Struct(
    "gen" / Default(Int32ul, 0),  # 0
    "rtype" / Default(Int8ul, 0),  # 4
    "regctl" / Default(Int16ul, 0),  # 5
    Reserved(2),  # 7
    "ptpls" / Default(Int8ul, 0),  # 9
    Reserved(54),  # 10
)
#: ``struct nvme_registered_ctrl_ext``.
REGISTERED_CTRL_EXT = Struct(
    "cntlid" / Default(Int16ul, 0),  # 0
    "rcsts" / Default(Int8ul, 0),  # 2
    Reserved(5),  # 3
    "rkey" / Default(Int64ul, 0),  # 8
    "hostid" / Default(Bytes(16), bytes(16)),  # 16
    Reserved(32),  # 32
)
#: ``struct nvme_pr_log``.
NOTIFICATION_LOG = Struct(
    "count" / Default(Int64ul, 0),  # 0
    "type" / Default(Int8ul, 0),  # 8
    "nr_pages" / Default(Int8ul, 0),  # 9, notifications still available
    Reserved(2),  # 10
    "nsid" / Default(Int32ul, 0),  # 12
    Reserved(48),  # 16
)


# -- command dwords -----------------------------------------------------------------------------


def register_cdw10(action: int, *, iekey: bool = False, cptpl: int = 0) -> int:
    return (action & 7) | (int(iekey) << 3) | ((cptpl & 3) << 30)


def acquire_cdw10(action: int, rtype: int, *, iekey: bool = False) -> int:
    return (action & 7) | (int(iekey) << 3) | ((rtype & 0xFF) << 8)


def release_cdw10(action: int, rtype: int, *, iekey: bool = False) -> int:
    return (action & 7) | (int(iekey) << 3) | ((rtype & 0xFF) << 8)


def report_dwords(length: int, *, eds: bool = True) -> tuple[int, int]:
    """(CDW10 NUMD, CDW11) of a Report reading ``length`` bytes (a multiple of 4)."""
    return length // 4 - 1, int(eds)


@dataclass(frozen=True, slots=True)
class Cdw10:
    """The shared layout of the reservation commands' CDW10."""

    action: int
    iekey: bool
    rtype: int
    cptpl: int


def parse_cdw10(cdw10: int) -> Cdw10:
    return Cdw10(cdw10 & 7, bool(cdw10 >> 3 & 1), cdw10 >> 8 & 0xFF, cdw10 >> 30 & 3)


# -- data ---------------------------------------------------------------------------------------


def build_register_data(crkey: int = 0, nrkey: int = 0) -> bytes:
    return build_strict(REGISTER_DATA, {"crkey": crkey, "nrkey": nrkey})


def build_acquire_data(crkey: int = 0, prkey: int = 0) -> bytes:
    return build_strict(ACQUIRE_DATA, {"crkey": crkey, "prkey": prkey})


def build_release_data(crkey: int = 0) -> bytes:
    return build_strict(RELEASE_DATA, {"crkey": crkey})


def parse_keys(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(first key, second key) of register/acquire data; release data has only the first."""
    first = int.from_bytes(data[0:8], "little")
    second = int.from_bytes(data[8:16], "little") if len(data) >= 16 else 0
    return first, second


@dataclass(frozen=True, slots=True)
class Registrant:
    """One entry of a Reservation Report: ``holds`` is RCSTS bit 0."""

    hostid: bytes
    rkey: int
    holds: bool
    cntlid: int = CNTLID_DYNAMIC


@dataclass(frozen=True, slots=True)
class ReservationStatus:
    """A whole Reservation Report: ``regctl`` counts every registrant, ``registrants`` holds
    those that fit in the bytes read; ``rtype`` 0 means no reservation."""

    gen: int
    rtype: int
    ptpls: bool
    regctl: int
    registrants: tuple[Registrant, ...]
    extended: bool = True


def build_reservation_status(status: ReservationStatus) -> bytes:
    """The report as the controller lays it out (every entry; truncate to what was asked)."""
    header = {"gen": status.gen, "rtype": status.rtype, "regctl": status.regctl,
              "ptpls": int(status.ptpls)}  # fmt: skip
    if status.extended:
        parts = [build_strict(STATUS_EXT_HEADER, header)]
        parts += [
            build_strict(REGISTERED_CTRL_EXT, {"cntlid": r.cntlid, "rcsts": int(r.holds),
                                               "rkey": r.rkey, "hostid": r.hostid})
            for r in status.registrants
        ]  # fmt: skip
    else:
        parts = [build_strict(STATUS_HEADER, header)]
        parts += [
            build_strict(REGISTERED_CTRL, {"cntlid": r.cntlid, "rcsts": int(r.holds),
                                           "rkey": r.rkey,
                                           "hostid": int.from_bytes(r.hostid[:8], "little")})
            for r in status.registrants
        ]  # fmt: skip
    return b"".join(parts)


def parse_reservation_status(data: bytes | bytearray | memoryview, *, extended: bool = True
                             ) -> ReservationStatus:  # fmt: skip
    """Parse a report; entries beyond the bytes given (REGCTL may count more) are left out."""
    header_size = STATUS_EXT_HEADER_SIZE if extended else STATUS_HEADER_SIZE
    entry_size = REGISTERED_CTRL_EXT_SIZE if extended else REGISTERED_CTRL_SIZE
    if len(data) < header_size:
        raise ValueError(f"reservation status of {len(data)} bytes, the header is {header_size}")
    header = parse_strict(STATUS_EXT_HEADER if extended else STATUS_HEADER, data[:header_size])
    fit = min(header.regctl, (len(data) - header_size) // entry_size)
    entries = []
    for i in range(fit):
        base = header_size + i * entry_size
        raw = parse_strict(REGISTERED_CTRL_EXT if extended else REGISTERED_CTRL,
                           data[base : base + entry_size])  # fmt: skip
        hostid = raw.hostid if extended else raw.hostid.to_bytes(8, "little")
        entries.append(Registrant(bytes(hostid), raw.rkey, bool(raw.rcsts & 1), raw.cntlid))
    return ReservationStatus(header.gen, header.rtype, bool(header.ptpls & 1), header.regctl,
                             tuple(entries), extended)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Notification:
    """One Reservation Notification log page (``type`` 0: nothing to report)."""

    count: int
    type: int
    nr_pages: int
    nsid: int


def build_notification_log(note: Notification) -> bytes:
    return build_strict(NOTIFICATION_LOG, {"count": note.count, "type": note.type,
                                           "nr_pages": note.nr_pages, "nsid": note.nsid})  # fmt: skip


def parse_notification_log(data: bytes | bytearray | memoryview) -> Notification:
    raw = parse_strict(NOTIFICATION_LOG, data[:NOTIFICATION_LOG_SIZE])
    return Notification(raw.count, raw.type, raw.nr_pages, raw.nsid)


def rescap(*, persist: bool) -> int:
    """RESCAP of a namespace with reservations: every type, IEKEY 1.3, PTPL where it can."""
    return RESCAP_ALL_TYPES | RESCAP_IEKEY_1_3 | (RESCAP_PTPL if persist else 0)


def describe_type(rtype: int) -> str:
    """nvme-cli's words for RTYPE (``nvme_show_resv_report``)."""
    return _TYPE_NAMES.get(rtype, "Reserved")


_TYPE_NAMES: Mapping[int, str] = {
    0: "Reservation not held",
    1: "Write Exclusive Reservation",
    2: "Exclusive Access Reservation",
    3: "Write Exclusive - Registrants Only Reservation",
    4: "Exclusive Access - Registrants Only Reservation",
    5: "Write Exclusive - All Registrants Reservation",
    6: "Exclusive Access - All Registrants Reservation",
}
