"""nvmeof-emu initiator: an NVMe/TCP host library with an io_uring-like ring and ANA multipath.

async with open_host(ControllerOptions(io_queues=2)) as host:
    await host.connect_all("127.0.0.1", 8009)
    head = host.namespace()
    ring = head.ring(32)
    sqe = ring.get_sqe()
    sqe.prep_read(0, 8, bytearray(8 * head.block_size), user_data="first")
    await ring.submit_and_wait(1)
    for cqe in ring.completions():
        print(cqe.user_data, cqe.status, cqe.path_label)
"""

from initiator.controller import ControllerOptions, HostController, connect_controller
from initiator.errors import IoError
from initiator.host import Host, open_host
from initiator.multipath import MultipathHead, Path
from initiator.policy import IOPOLICIES, Disposition, decide_disposition
from initiator.reservations import ReservationError, is_reservation_conflict
from initiator.ring import Ring, Slot, SlotState
from initiator.session import Session, SessionState

__all__ = [
    "IOPOLICIES",
    "ControllerOptions",
    "Disposition",
    "Host",
    "HostController",
    "IoError",
    "MultipathHead",
    "Path",
    "ReservationError",
    "Ring",
    "Session",
    "SessionState",
    "Slot",
    "SlotState",
    "connect_controller",
    "decide_disposition",
    "is_reservation_conflict",
    "open_host",
]
