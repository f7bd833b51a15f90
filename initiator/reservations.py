"""Reservation Register, Acquire, Release and Report from the host, through a namespace head.

Every command goes through the head's :meth:`~initiator.multipath.MultipathHead.passthru`, the
one submission path: a reservation command caught by a path loss fails over and is requeued
like a read. Registrations belong to the host (the target keys them by the Connect Host ID),
so every path of this host shares them and a failover keeps the reservation.

A failed status raises :class:`ReservationError`; ``err.conflict`` tells a Reservation Conflict
(someone else holds or is registered differently) from everything else.

    await head.reservation_register(RegisterAction.REGISTER, nrkey=0xABC)
    await head.reservation_acquire(AcquireAction.ACQUIRE, ReservationType.WRITE_EXCLUSIVE,
                                   crkey=0xABC)
    status = await head.reservation_report()
    await head.reservation_release(ReleaseAction.RELEASE, ReservationType.WRITE_EXCLUSIVE,
                                   crkey=0xABC)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from initiator.errors import IoError
from nvmeof.constants import IoOpcode
from nvmeof.status import StatusCode
from nvmeof.wire.reservations import (
    ReservationStatus,
    acquire_cdw10,
    build_acquire_data,
    build_register_data,
    build_release_data,
    parse_reservation_status,
    register_cdw10,
    release_cdw10,
    report_dwords,
)

if TYPE_CHECKING:
    from initiator.ring import Slot

SQE_SIZE = 64
#: What a Report reads unless told otherwise (nvme-cli's default: 4 KiB, 63 registrants).
DEFAULT_REPORT_LENGTH = 4096
_NSID = slice(4, 8)
_CDW10 = slice(40, 44)
_CDW11 = slice(44, 48)
_KEY_LIMIT = 1 << 64


class PassthruHead(Protocol):
    """What the reservation commands need of a head (a :class:`MultipathHead` has it)."""

    @property
    def subnqn(self) -> str: ...
    @property
    def nsid(self) -> int: ...
    async def passthru(self, cmd64: bytes | bytearray, *, data_out: bytes | None = None,
                       data_in: bytearray | None = None) -> Slot: ...  # fmt: skip


class ReservationError(IoError):
    """A reservation command completed with an error status (after failovers and retries).

    ``command`` is ``register``, ``acquire``, ``release`` or ``report``; :attr:`status` the
    parsed status; :attr:`conflict` whether it is a Reservation Conflict. ``resent``: the
    command was sent again after a path error, and the copy on the lost path may have run
    (a Replace that took effect there answers Conflict here: read a Report to know).
    """

    def __init__(self, command: str, status_word: int, message: str, *,
                 resent: bool = False) -> None:  # fmt: skip
        super().__init__(status_word, message)
        self.command = command
        self.resent = resent

    @property
    def conflict(self) -> bool:
        return self.status.code == StatusCode.RESERVATION_CONFLICT


def is_reservation_conflict(error: BaseException) -> bool:
    """Whether ``error`` is a command refused with Reservation Conflict (any I/O: a write of a
    non-holder fails with it too, as a plain :class:`IoError`)."""
    return isinstance(error, IoError) and error.status.code == StatusCode.RESERVATION_CONFLICT


def build_command(opcode: int, nsid: int, cdw10: int, cdw11: int = 0) -> bytes:
    """The 64-byte SQE of a reservation command (CID and SGL are the transport's)."""
    cmd = bytearray(SQE_SIZE)
    cmd[0] = opcode
    cmd[_NSID] = nsid.to_bytes(4, "little")
    cmd[_CDW10] = cdw10.to_bytes(4, "little")
    cmd[_CDW11] = cdw11.to_bytes(4, "little")
    return bytes(cmd)


def _check_key(name: str, value: int) -> None:
    if not 0 <= value < _KEY_LIMIT:
        raise ValueError(f"{name} must be a 64-bit unsigned key, got {value}")


def _check_field(name: str, value: int, limit: int) -> None:
    if not 0 <= value < limit:
        raise ValueError(f"{name} must be 0..{limit - 1}, got {value}")


async def _run(head: PassthruHead, command: str, cmd64: bytes, *, data_out: bytes | None = None,
               data_in: bytearray | None = None) -> Slot:  # fmt: skip
    slot = await head.passthru(cmd64, data_out=data_out, data_in=data_in)
    if not slot.ok:
        resent = slot.failovers > 0
        note = " (sent again after a path error: the first copy may have run)" if resent else ""
        raise ReservationError(command, slot.status_word,
                               f"reservation {command} failed on {head.subnqn} nsid "
                               f"{head.nsid}: {slot.status}{note}", resent=resent)  # fmt: skip
    return slot


async def register(head: PassthruHead, action: int = 0, *, crkey: int = 0, nrkey: int = 0,
                   iekey: bool = False, cptpl: int = 0) -> None:  # fmt: skip
    """Reservation Register: ``action`` is a :class:`RegisterAction` (register, unregister,
    replace), ``cptpl`` a :class:`Cptpl` (power-loss persistence: 0 leaves it as it is)."""
    _check_field("register action", action, 8)
    _check_field("cptpl", cptpl, 4)
    _check_key("crkey", crkey)
    _check_key("nrkey", nrkey)
    cdw10 = register_cdw10(action, iekey=iekey, cptpl=cptpl)
    await _run(head, "register", build_command(IoOpcode.RESERVATION_REGISTER, head.nsid, cdw10),
               data_out=build_register_data(crkey, nrkey))  # fmt: skip


async def acquire(head: PassthruHead, action: int, rtype: int, *, crkey: int = 0, prkey: int = 0,
                  iekey: bool = False) -> None:  # fmt: skip
    """Reservation Acquire: ``action`` an :class:`AcquireAction` (acquire, preempt, preempt and
    abort), ``rtype`` a :class:`ReservationType`; ``prkey`` is the key preempted."""
    _check_field("acquire action", action, 8)
    _check_field("rtype", rtype, 256)
    _check_key("crkey", crkey)
    _check_key("prkey", prkey)
    cdw10 = acquire_cdw10(action, rtype, iekey=iekey)
    await _run(head, "acquire", build_command(IoOpcode.RESERVATION_ACQUIRE, head.nsid, cdw10),
               data_out=build_acquire_data(crkey, prkey))  # fmt: skip


async def release(head: PassthruHead, action: int, rtype: int, *, crkey: int = 0,
                  iekey: bool = False) -> None:  # fmt: skip
    """Reservation Release: ``action`` a :class:`ReleaseAction` (release, clear)."""
    _check_field("release action", action, 8)
    _check_field("rtype", rtype, 256)
    _check_key("crkey", crkey)
    cdw10 = release_cdw10(action, rtype, iekey=iekey)
    await _run(head, "release", build_command(IoOpcode.RESERVATION_RELEASE, head.nsid, cdw10),
               data_out=build_release_data(crkey))  # fmt: skip


async def report_raw(head: PassthruHead, *, eds: bool = True,
                     length: int = DEFAULT_REPORT_LENGTH) -> bytearray:  # fmt: skip
    """The Reservation Status data as read (``length`` bytes, a multiple of 4)."""
    if length < 4 or length % 4:
        raise ValueError(f"a report reads whole dwords (a multiple of 4 bytes), got {length}")
    numd, cdw11 = report_dwords(length, eds=eds)
    buffer = bytearray(length)
    await _run(head, "report",
               build_command(IoOpcode.RESERVATION_REPORT, head.nsid, numd, cdw11),
               data_in=buffer)  # fmt: skip
    return buffer


async def report(head: PassthruHead, *, eds: bool = True,
                 length: int = DEFAULT_REPORT_LENGTH) -> ReservationStatus:  # fmt: skip
    """Reservation Report, parsed: ``regctl`` counts every registrant, ``registrants`` those
    that fit in ``length`` bytes. Over Fabrics only ``eds=True`` (128-bit Host IDs) works: a
    controller answers Host Identifier Inconsistent Format to the other."""
    data = await report_raw(head, eds=eds, length=length)
    try:
        return parse_reservation_status(data, extended=eds)
    except ValueError as problem:  # a report shorter than its header: no status to show
        raise ValueError(f"reservation report of {head.subnqn} nsid {head.nsid}: "
                         f"{problem}") from None  # fmt: skip


class ReservationCommands:
    """The reservation commands as methods of a head (mixed into ``MultipathHead``)."""

    async def reservation_register(self: PassthruHead, action: int = 0, crkey: int = 0,
                                   nrkey: int = 0, iekey: bool = False,
                                   cptpl: int = 0) -> None:  # fmt: skip
        """See :func:`register`."""
        await register(self, action, crkey=crkey, nrkey=nrkey, iekey=iekey, cptpl=cptpl)

    async def reservation_acquire(self: PassthruHead, action: int, rtype: int, crkey: int = 0,
                                  prkey: int = 0, iekey: bool = False) -> None:  # fmt: skip
        """See :func:`acquire`."""
        await acquire(self, action, rtype, crkey=crkey, prkey=prkey, iekey=iekey)

    async def reservation_release(self: PassthruHead, action: int, rtype: int, crkey: int = 0,
                                  iekey: bool = False) -> None:  # fmt: skip
        """See :func:`release`."""
        await release(self, action, rtype, crkey=crkey, iekey=iekey)

    async def reservation_report(self: PassthruHead, eds: bool = True,
                                 length: int = DEFAULT_REPORT_LENGTH) -> ReservationStatus:  # fmt: skip
        """See :func:`report`."""
        return await report(self, eds=eds, length=length)
