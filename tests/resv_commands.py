"""Raw reservation commands from a host controller, for the tests that drive our target with
the exact bytes (independent of the initiator's reservation API): each returns the CQE's status
word without the phase bit (0 is success; DNR 0x8000 and More 0x4000 included)."""

from __future__ import annotations

import struct

from initiator.controller import HostController
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
)

MORE, DNR = 0x4000, 0x8000
CONFLICT = DNR | (StatusCode.RESERVATION_CONFLICT << 1)


def sqe(opcode: int, cdw10: int = 0, cdw11: int = 0, nsid: int = 1) -> bytearray:
    cmd = bytearray(64)
    cmd[0], cmd[1] = opcode, 0x40
    struct.pack_into("<I", cmd, 4, nsid)
    struct.pack_into("<II", cmd, 40, cdw10, cdw11)
    return cmd


async def word(ctrl: HostController, cmd: bytearray, *, write: bytes | None = None,
               read: int = 0) -> tuple[int, bytearray]:  # fmt: skip
    buffer = bytearray(read) if read else None
    done = await ctrl.io_queues[0].submit(cmd, write=write, read=buffer, timeout=10)
    return done.status_word & ~1, buffer if buffer is not None else bytearray()


async def register(ctrl: HostController, action: int = 0, crkey: int = 0, nrkey: int = 0,
                   *, iekey: bool = False, cptpl: int = 0, nsid: int = 1) -> int:  # fmt: skip
    cdw10 = register_cdw10(action, iekey=iekey, cptpl=cptpl)
    return (await word(ctrl, sqe(IoOpcode.RESERVATION_REGISTER, cdw10, nsid=nsid),
                       write=build_register_data(crkey, nrkey)))[0]  # fmt: skip


async def acquire(ctrl: HostController, action: int, rtype: int, crkey: int,
                  prkey: int = 0, *, nsid: int = 1) -> int:  # fmt: skip
    cmd = sqe(IoOpcode.RESERVATION_ACQUIRE, acquire_cdw10(action, rtype), nsid=nsid)
    return (await word(ctrl, cmd,
                       write=build_acquire_data(crkey, prkey)))[0]  # fmt: skip


async def release(ctrl: HostController, action: int, rtype: int, crkey: int) -> int:
    return (await word(ctrl, sqe(IoOpcode.RESERVATION_RELEASE, release_cdw10(action, rtype)),
                       write=build_release_data(crkey)))[0]  # fmt: skip


async def report(ctrl: HostController, length: int = 4096, eds: bool = True,
                 nsid: int = 1) -> ReservationStatus:  # fmt: skip
    cmd = sqe(IoOpcode.RESERVATION_REPORT, length // 4 - 1, int(eds), nsid=nsid)
    status, data = await word(ctrl, cmd, read=length)
    assert status == 0, hex(status)
    return parse_reservation_status(data)


async def write_status(ctrl: HostController, nsid: int = 1) -> int:
    return (await ctrl.write(nsid, 0, b"x" * 512, 512)).status_word & ~1


async def read_status(ctrl: HostController) -> int:
    return (await ctrl.read(1, 0, 1, 512))[0].status_word & ~1
