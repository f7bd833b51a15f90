"""Controller properties (CAP, VS, CC, CSTS) as a pure state machine (docs/PROTOCOL.md §4.4, §4.5).

CC.EN 0->1 with a valid configuration sets CSTS.RDY at once (what nvmet does; the Linux host
polls CSTS right after); an invalid one sets CSTS.CFS. A shutdown request sets CSTS.SHST to
"complete" immediately.
"""

from __future__ import annotations

from nvmeof.constants import Property
from nvmeof.errors import CommandError
from nvmeof.status import Status, StatusCode

CC_EN = 1 << 0
CC_CSS_MASK = 0x7 << 4
CC_MPS_MASK = 0xF << 7
CC_AMS_MASK = 0x7 << 11
CC_SHN_MASK = 0x3 << 14
CC_IOSQES_SHIFT = 16
CC_IOCQES_SHIFT = 20
CSTS_RDY = 1 << 0
CSTS_CFS = 1 << 1
CSTS_SHST_COMPLETE = 0x2 << 2
CSTS_SHST_MASK = 0x3 << 2

CAP_CQR = 1 << 16
CAP_CSS_NVM = 1 << 37

_INVALID_FIELD = Status(StatusCode.INVALID_FIELD, dnr=True)


def build_cap(*, mqes: int, timeout_500ms: int = 15) -> int:
    """CAP: MQES (0's based), CQR, TO, CSS = NVM, MPSMIN = MPSMAX = 0 (4 KiB)."""
    return (mqes & 0xFFFF) | CAP_CQR | ((timeout_500ms & 0xFF) << 24) | CAP_CSS_NVM


def version(major: int, minor: int, tertiary: int = 0) -> int:
    return (major << 16) | (minor << 8) | tertiary


class ControllerRegisters:
    """CAP/VS/CC/CSTS of one controller.

    Args:
        cap: the CAP value.
        vs: the VS value.
        io_controller: False for discovery controllers (nvmet skips the IOSQES/IOCQES check).
    """

    def __init__(self, *, cap: int, vs: int, io_controller: bool = True) -> None:
        self.cap = cap
        self.vs = vs
        self.cc = 0
        self.csts = 0
        self.io_controller = io_controller

    @property
    def ready(self) -> bool:
        return bool(self.csts & CSTS_RDY)

    def get(self, offset: int, size8: bool) -> int:
        """Property Get; ``size8`` is ATTRIB = 1 (8-byte access).

        Raises:
            CommandError: Invalid Field for unknown offsets or a wrong access size.
        """
        # nvmet_execute_prop_get: the error location is OFFSET for an 8-byte access, else
        # ATTRIB.
        if size8:
            if offset == Property.CAP:
                return self.cap
            raise CommandError(_INVALID_FIELD, f"8-byte read of property {offset:#x}", loc=44)
        if offset == Property.CAP:
            raise CommandError(_INVALID_FIELD, "CAP must be read with an 8-byte access", loc=40)
        if offset == Property.VS:
            return self.vs
        if offset == Property.CC:
            return self.cc
        if offset == Property.CSTS:
            return self.csts
        raise CommandError(_INVALID_FIELD, f"unsupported property {offset:#x}", loc=40)

    def set(self, offset: int, size8: bool, value: int) -> None:
        """Property Set; only CC (4 bytes) is writable."""
        if size8:  # nvmet_execute_prop_set
            raise CommandError(_INVALID_FIELD, "8-byte property write", loc=40)
        if offset != Property.CC:
            raise CommandError(_INVALID_FIELD, f"property {offset:#x} is not writable", loc=44)
        self.update_cc(value & 0xFFFFFFFF)

    def update_cc(self, new: int) -> None:
        old = self.cc
        self.cc = new
        if new & CC_EN and not old & CC_EN:
            if self._valid_cc(new):
                self.csts = (self.csts | CSTS_RDY) & ~CSTS_SHST_MASK
            else:
                self.csts |= CSTS_CFS
        elif old & CC_EN and not new & CC_EN:
            self.csts &= ~(CSTS_RDY | CSTS_CFS)
        if new & CC_SHN_MASK and not old & CC_SHN_MASK:
            # nvmet_update_cc: a shutdown clears the controller (CC = 0, CSTS.RDY = 0).
            self.cc = 0
            self.csts = (self.csts & ~CSTS_RDY) | CSTS_SHST_COMPLETE
        elif not new & CC_SHN_MASK and old & CC_SHN_MASK:
            self.csts &= ~CSTS_SHST_MASK

    def _valid_cc(self, cc: int) -> bool:
        if cc & (CC_MPS_MASK | CC_AMS_MASK):
            return False
        if (cc & CC_CSS_MASK) >> 4 not in (0, 0b110):
            return False
        if self.io_controller:
            return (cc >> CC_IOSQES_SHIFT) & 0xF == 6 and (cc >> CC_IOCQES_SHIFT) & 0xF == 4
        return True

    @property
    def shutdown_complete(self) -> bool:
        return self.csts & CSTS_SHST_MASK == CSTS_SHST_COMPLETE
