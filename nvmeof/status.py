"""NVMe completion status: codes, the 16-bit status field, and the kernel's classification.

A status *code* here uses the Linux kernel's encoding ``(SCT << 8) | SC`` (``NVME_SC_*`` in
``include/linux/nvme.h``). On the wire the CQE status field is that value shifted left by one
(bit 0 is the phase tag), with CRD in bits 13:12, More in bit 14 and DNR in bit 15.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Sct(IntEnum):
    """Status Code Type."""

    GENERIC = 0
    COMMAND_SPECIFIC = 1
    MEDIA = 2
    PATH = 3
    VENDOR = 7


class StatusCode(IntEnum):
    """Every status code the Linux kernel names, as ``(SCT << 8) | SC``.

    The 0x180-0x1BF range means different things for NVM I/O commands and fabrics commands;
    both spellings are listed (IntEnum keeps the second one as an alias of the first).
    """

    # Generic command status (SCT 0)
    SUCCESS = 0x000
    INVALID_OPCODE = 0x001
    INVALID_FIELD = 0x002
    CMDID_CONFLICT = 0x003
    DATA_XFER_ERROR = 0x004
    POWER_LOSS = 0x005
    INTERNAL = 0x006
    ABORT_REQ = 0x007
    ABORT_QUEUE = 0x008
    FUSED_FAIL = 0x009
    FUSED_MISSING = 0x00A
    INVALID_NS = 0x00B
    CMD_SEQ_ERROR = 0x00C
    SGL_INVALID_LAST = 0x00D
    SGL_INVALID_COUNT = 0x00E
    SGL_INVALID_DATA = 0x00F
    SGL_INVALID_METADATA = 0x010
    SGL_INVALID_TYPE = 0x011
    CMB_INVALID_USE = 0x012
    PRP_INVALID_OFFSET = 0x013
    ATOMIC_WU_EXCEEDED = 0x014
    OP_DENIED = 0x015
    SGL_INVALID_OFFSET = 0x016
    HOST_ID_INCONSIST = 0x018
    KA_TIMEOUT_EXPIRED = 0x019
    KA_TIMEOUT_INVALID = 0x01A
    ABORTED_PREEMPT_ABORT = 0x01B
    SANITIZE_FAILED = 0x01C
    SANITIZE_IN_PROGRESS = 0x01D
    SGL_INVALID_GRANULARITY = 0x01E
    CMD_NOT_SUP_CMB_QUEUE = 0x01F
    NS_WRITE_PROTECTED = 0x020
    CMD_INTERRUPTED = 0x021
    TRANSIENT_TR_ERR = 0x022
    ADMIN_COMMAND_MEDIA_NOT_READY = 0x024
    INVALID_IO_CMD_SET = 0x02C
    LBA_RANGE = 0x080
    CAP_EXCEEDED = 0x081
    NS_NOT_READY = 0x082
    RESERVATION_CONFLICT = 0x083
    FORMAT_IN_PROGRESS = 0x084

    # Command specific status (SCT 1)
    CQ_INVALID = 0x100
    QID_INVALID = 0x101
    QUEUE_SIZE = 0x102
    ABORT_LIMIT = 0x103
    ABORT_MISSING = 0x104
    ASYNC_LIMIT = 0x105
    FIRMWARE_SLOT = 0x106
    FIRMWARE_IMAGE = 0x107
    INVALID_VECTOR = 0x108
    INVALID_LOG_PAGE = 0x109
    INVALID_FORMAT = 0x10A
    FW_NEEDS_CONV_RESET = 0x10B
    INVALID_QUEUE = 0x10C
    FEATURE_NOT_SAVEABLE = 0x10D
    FEATURE_NOT_CHANGEABLE = 0x10E
    FEATURE_NOT_PER_NS = 0x10F
    FW_NEEDS_SUBSYS_RESET = 0x110
    FW_NEEDS_RESET = 0x111
    FW_NEEDS_MAX_TIME = 0x112
    FW_ACTIVATION_PROHIBITED = 0x113
    OVERLAPPING_RANGE = 0x114
    NS_INSUFFICIENT_CAP = 0x115
    NS_ID_UNAVAILABLE = 0x116
    NS_ALREADY_ATTACHED = 0x118
    NS_IS_PRIVATE = 0x119
    NS_NOT_ATTACHED = 0x11A
    THIN_PROV_NOT_SUPP = 0x11B
    CTRL_LIST_INVALID = 0x11C
    SELF_TEST_IN_PROGRESS = 0x11D
    BP_WRITE_PROHIBITED = 0x11E
    CTRL_ID_INVALID = 0x11F
    SEC_CTRL_STATE_INVALID = 0x120
    CTRL_RES_NUM_INVALID = 0x121
    RES_ID_INVALID = 0x122
    PMR_SAN_PROHIBITED = 0x123
    ANA_GROUP_ID_INVALID = 0x124
    ANA_ATTACH_FAILED = 0x125

    # I/O command set specific (NVM)
    BAD_ATTRIBUTES = 0x180
    INVALID_PI = 0x181
    READ_ONLY = 0x182
    CMD_SIZE_LIM_EXCEEDED = 0x183
    ZONE_BOUNDARY_ERROR = 0x1B8
    ZONE_FULL = 0x1B9
    ZONE_READ_ONLY = 0x1BA
    ZONE_OFFLINE = 0x1BB
    ZONE_INVALID_WRITE = 0x1BC
    ZONE_TOO_MANY_ACTIVE = 0x1BD
    ZONE_TOO_MANY_OPEN = 0x1BE
    ZONE_INVALID_TRANSITION = 0x1BF

    # Fabrics command specific (same numeric range, fabrics commands only)
    CONNECT_FORMAT = 0x180
    CONNECT_CTRL_BUSY = 0x181
    CONNECT_INVALID_PARAM = 0x182
    CONNECT_RESTART_DISC = 0x183
    CONNECT_INVALID_HOST = 0x184
    DISCOVERY_RESTART = 0x190
    AUTH_REQUIRED = 0x191

    # Media and data integrity errors (SCT 2)
    WRITE_FAULT = 0x280
    READ_ERROR = 0x281
    GUARD_CHECK = 0x282
    APPTAG_CHECK = 0x283
    REFTAG_CHECK = 0x284
    COMPARE_FAILED = 0x285
    ACCESS_DENIED = 0x286
    UNWRITTEN_BLOCK = 0x287

    # Path related status (SCT 3)
    INTERNAL_PATH_ERROR = 0x300
    ANA_PERSISTENT_LOSS = 0x301
    ANA_INACCESSIBLE = 0x302
    ANA_TRANSITION = 0x303
    CTRL_PATH_ERROR = 0x360
    HOST_PATH_ERROR = 0x370
    HOST_ABORTED_CMD = 0x371


DNR_BIT = 0x8000
MORE_BIT = 0x4000
CRD_SHIFT = 12

_ANA_CODES = frozenset(
    {StatusCode.ANA_PERSISTENT_LOSS, StatusCode.ANA_INACCESSIBLE, StatusCode.ANA_TRANSITION}
)


@dataclass(frozen=True, slots=True)
class Status:
    """A completion status: code (``(SCT << 8) | SC``), DNR, More and CRD.

    Build the wire word with :attr:`word`; parse one with :meth:`from_word`.
    """

    code: int = 0
    dnr: bool = False
    more: bool = False
    crd: int = 0

    @property
    def sct(self) -> int:
        return (self.code >> 8) & 0x7

    @property
    def sc(self) -> int:
        return self.code & 0xFF

    @property
    def word(self) -> int:
        """The 16-bit CQE status field (phase tag 0)."""
        w = (self.code & 0x7FF) << 1
        w |= (self.crd & 0x3) << CRD_SHIFT
        if self.more:
            w |= MORE_BIT
        if self.dnr:
            w |= DNR_BIT
        return w

    @classmethod
    def from_word(cls, word: int) -> Status:
        return cls(
            code=(word >> 1) & 0x7FF,
            dnr=bool(word & DNR_BIT),
            more=bool(word & MORE_BIT),
            crd=(word >> CRD_SHIFT) & 0x3,
        )

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def is_path_error(self) -> bool:
        """SCT 3: the kernel fails such a command over to another path (``nvme_is_path_error``)."""
        return self.sct == Sct.PATH

    @property
    def is_ana_error(self) -> bool:
        """ANA persistent loss, inaccessible or transition (``nvme_is_ana_error``)."""
        return self.code in _ANA_CODES

    @property
    def name(self) -> str:
        """The kernel's name for the code (fabrics names where the ranges overlap are aliases)."""
        try:
            return StatusCode(self.code).name
        except ValueError:
            return f"SCT{self.sct:x}_SC{self.sc:02x}"

    @property
    def fabrics_name(self) -> str:
        """The name a Fabrics command's status has: where 0x180-0x1BF means one thing for NVM
        I/O and another for Connect (0x182 READ_ONLY vs CONNECT_INVALID_PARAM), the latter."""
        return _FABRICS_NAMES.get(self.code, self.name)

    def describe(self, *, fabrics: bool = False) -> str:
        """``NAME (0xCCC DNR MORE CRDn)``; Fabrics names with ``fabrics``."""
        flags = "".join(f" {label}" for label, on in (("DNR", self.dnr), ("MORE", self.more)) if on)
        crd = f" CRD{self.crd}" if self.crd else ""
        name = self.fabrics_name if fabrics else self.name
        return f"{name} (0x{self.code:03x}{flags}{crd})"

    def __str__(self) -> str:
        return self.describe()


#: The Fabrics command-specific codes (Connect) by name: as enum members they are aliases of
#: the NVM codes defined first, whose names they would otherwise print.
_FABRICS_NAMES = {int(StatusCode.CONNECT_FORMAT): "CONNECT_FORMAT",
                  int(StatusCode.CONNECT_CTRL_BUSY): "CONNECT_CTRL_BUSY",
                  int(StatusCode.CONNECT_INVALID_PARAM): "CONNECT_INVALID_PARAM",
                  int(StatusCode.CONNECT_RESTART_DISC): "CONNECT_RESTART_DISC",
                  int(StatusCode.CONNECT_INVALID_HOST): "CONNECT_INVALID_HOST"}  # fmt: skip


def status_word(code: int, *, dnr: bool = False) -> int:
    """Wire status word for ``code`` (kernel encoding), with optional DNR."""
    return ((code & 0x7FF) << 1) | (DNR_BIT if dnr else 0)


SUCCESS = Status()
