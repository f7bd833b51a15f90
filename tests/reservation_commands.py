"""Reservation commands from a host, as raw 64-byte SQEs on its first I/O queue (the initiator
has no reservation API of its own): Register, Acquire, Release, Report."""

from __future__ import annotations

import struct

from initiator.controller import HostController
from initiator.queue import Completion
from nvmeof.constants import IoOpcode
from nvmeof.wire.reservations import (
    AcquireAction,
    RegisterAction,
    ReleaseAction,
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

#: CDW0 byte 1: PSDT = SGL (what the target accepts over Fabrics).
FLAGS_SGL = 0x40
REPORT_LENGTH = 4096


def reservation_sqe(opcode: int, nsid: int, cdw10: int, cdw11: int = 0) -> bytes:
    """Opcode (byte 0), SGL flags (byte 1), NSID (bytes 4-7), CDW10/CDW11 (bytes 40-47); the
    queue fills in the CID and the data descriptor."""
    sqe = bytearray(64)
    sqe[0], sqe[1] = opcode, FLAGS_SGL
    struct.pack_into("<I", sqe, 4, nsid)
    struct.pack_into("<II", sqe, 40, cdw10 & 0xFFFFFFFF, cdw11 & 0xFFFFFFFF)
    return bytes(sqe)


async def register(ctrl: HostController, nsid: int, key: int, *,
                   action: int = RegisterAction.REGISTER, current: int = 0,
                   cptpl: int = 0) -> Completion:  # fmt: skip
    sqe = reservation_sqe(IoOpcode.RESERVATION_REGISTER, nsid,
                          register_cdw10(action, cptpl=cptpl))  # fmt: skip
    data = build_register_data(crkey=current, nrkey=key)
    return await ctrl.io_queues[0].submit(sqe, write=data, timeout=5)


async def acquire(ctrl: HostController, nsid: int, key: int, rtype: int, *,
                  action: int = AcquireAction.ACQUIRE,
                  preempt: int = 0) -> Completion:  # fmt: skip
    sqe = reservation_sqe(IoOpcode.RESERVATION_ACQUIRE, nsid, acquire_cdw10(action, rtype))
    data = build_acquire_data(crkey=key, prkey=preempt)
    return await ctrl.io_queues[0].submit(sqe, write=data, timeout=5)


async def release(ctrl: HostController, nsid: int, key: int, rtype: int, *,
                  action: int = ReleaseAction.RELEASE) -> Completion:  # fmt: skip
    sqe = reservation_sqe(IoOpcode.RESERVATION_RELEASE, nsid, release_cdw10(action, rtype))
    return await ctrl.io_queues[0].submit(sqe, write=build_release_data(key), timeout=5)


async def report(ctrl: HostController, nsid: int) -> ReservationStatus:
    numd, cdw11 = report_dwords(REPORT_LENGTH)
    buf = bytearray(REPORT_LENGTH)
    sqe = reservation_sqe(IoOpcode.RESERVATION_REPORT, nsid, numd, cdw11)
    done = await ctrl.io_queues[0].submit(sqe, read=buf, timeout=5)
    assert done.ok, done.status
    return parse_reservation_status(buf)
