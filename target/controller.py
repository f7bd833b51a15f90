"""A controller association: registers, features, AERs, keep-alive, error log, its queues."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from nvmeof.aen import RESERVATION_LOG, AsyncEvent, AsyncEventQueue
from nvmeof.constants import OAES_ANA_CHANGE, OAES_DISCOVERY_CHANGE, OAES_NS_ATTR
from nvmeof.properties import ControllerRegisters, build_cap, version
from target.reservations import NotificationLog

if TYPE_CHECKING:
    from nvmeof.auth.controller import ControllerAuth
    from target.port import Port
    from target.subsystem import Subsystem

NVME_VERSION = version(1, 4)
#: Keep-alive timeout given to discovery controllers that asked for none (nvmet: 120 s).
DISCOVERY_KATO_MS = 120_000
ERROR_LOG_ENTRIES = 64
AERL = 3  # 0's based: four AERs may be outstanding
_SMART_CRITICAL_WARNINGS = 0x1F


class QueueHandle(Protocol):
    """What a controller needs from the connection serving one of its queues."""

    qid: int

    def complete_async_event(self, cid: int, dw0: int) -> None: ...
    def close(self, reason: str) -> None: ...


@dataclass(slots=True)
class ErrorEntry:
    error_count: int
    sqid: int
    cid: int
    status: int
    nsid: int
    lba: int = 0
    param_location: int = 0xFFFF


@dataclass(slots=True)
class ControllerStats:
    """Counters for SMART / Health (data units are 1000 x 512 bytes)."""

    bytes_read: int = 0
    bytes_written: int = 0
    read_commands: int = 0
    write_commands: int = 0
    media_errors: int = 0


class Controller:
    """One host association with a subsystem (or with the discovery service).

    Args:
        subsystem: the NVM subsystem, or None for a discovery controller.
        port: the port the admin queue connected through (its ANA states apply).
    """

    def __init__(
        self, *, cntlid: int, subsystem: Subsystem[Controller] | None, port: Port, hostnqn: str,
        hostid: bytes, kato_ms: int, mqes: int,
    ) -> None:  # fmt: skip
        self.cntlid = cntlid
        self.subsystem = subsystem
        self.port = port
        self.hostnqn = hostnqn
        self.hostid = hostid
        self.discovery = subsystem is None
        if self.discovery and kato_ms == 0:
            kato_ms = DISCOVERY_KATO_MS
        self.kato_ms = kato_ms
        self.mqes = mqes
        self.regs = ControllerRegisters(
            cap=build_cap(mqes=mqes), vs=NVME_VERSION, io_controller=not self.discovery
        )
        self.aen = AsyncEventQueue(limit=AERL + 1)
        # Set Features 0x0B value: which notices are enabled. nvmet_alloc_ctrl enables the
        # namespace-attribute and ANA-change notices before the host asks (a host that never
        # sends Set Features still hears of them); a discovery controller waits to be asked.
        self.aec = 0 if self.discovery else OAES_NS_ATTR | OAES_ANA_CHANGE
        max_q = subsystem.max_io_queues if subsystem else 0
        self.max_io_queues = max_q
        self.io_queues_granted = max_q
        self.queues: dict[int, QueueHandle] = {}
        self.changed_nsids: set[int] = set()
        self.changed_overflow = False
        self.errors: deque[ErrorEntry] = deque(maxlen=ERROR_LOG_ENTRIES)
        self.error_count = 0
        self.stats = ControllerStats()
        self.keepalive_deadline = float("inf")
        #: Called when :meth:`touch` moves the deadline earlier (a shorter KATO, or a first
        #: one): the admin queue's watcher sleeps until the deadline and must wake sooner.
        self.keepalive_rearmed: Callable[[], None] | None = None
        #: A command arrived on one of this controller's queues since the keep-alive timer was
        #: last looked at: as nvmet's reset_tbkas (set in nvmet_req_init), any command keeps the
        #: association alive, so a host busy setting its queues up is not timed out before it
        #: starts sending Keep Alive (nvme_start_ctrl, after the I/O queues connect).
        self.traffic_seen = False
        self.closed = False
        self.reservation_log = NotificationLog()
        #: DH-HMAC-CHAP state when the host must authenticate (target.commands.auth).
        self.auth: ControllerAuth | None = None

    @property
    def accepted_aen(self) -> int:
        """What Set Features Asynchronous Event Configuration accepts: nvmet also takes the
        SMART critical-warning bits (NVMET_AEN_CFG_ALL) although it never reports them."""
        return self.supported_aen | (0 if self.discovery else _SMART_CRITICAL_WARNINGS)

    @property
    def supported_aen(self) -> int:
        return OAES_DISCOVERY_CHANGE if self.discovery else OAES_NS_ATTR | OAES_ANA_CHANGE

    # -- keep-alive --------------------------------------------------------------------------

    def touch(self, now: float) -> None:
        """Restart the keep-alive timer (admin Connect, Keep Alive, Set Features KATO)."""
        deadline = now + self.kato_ms / 1000 if self.kato_ms else float("inf")
        earlier = deadline < self.keepalive_deadline
        self.keepalive_deadline = deadline
        if earlier and self.keepalive_rearmed is not None:
            self.keepalive_rearmed()

    def keepalive_expired(self, now: float) -> bool:
        return now >= self.keepalive_deadline

    # -- events ------------------------------------------------------------------------------

    def post_event(self, event: AsyncEvent, enable_bit: int) -> None:
        """Report ``event`` if the host enabled it; complete an outstanding AER if any."""
        if not self.aec & enable_bit or self.closed:
            return
        self._deliver(self.aen.post(event))

    def notify_reservation(self, kind: int, nsid: int) -> None:
        """Queue a Reservation Notification and announce it: nvmet sends the AEN whatever
        Asynchronous Event Configuration says (the mask of feature 0x82 decided already)."""
        if self.closed:
            return
        self.reservation_log.add(kind, nsid)
        self._deliver(self.aen.post(RESERVATION_LOG))

    def add_aer(self, cid: int) -> None:
        self._deliver(self.aen.add_request(cid))

    def _deliver(self, done: list[tuple[int, AsyncEvent]]) -> None:
        admin = self.queues.get(0)
        if admin is None:
            return
        for cid, event in done:
            admin.complete_async_event(cid, event.dw0)

    def record_error(self, sqid: int, cid: int, status: int, nsid: int, lba: int = 0,
                     loc: int = 0xFFFF) -> None:  # fmt: skip
        self.error_count += 1
        self.errors.appendleft(ErrorEntry(self.error_count, sqid, cid, status, nsid, lba, loc))

    def note_changed_ns(self, nsid: int) -> None:
        if nsid not in self.changed_nsids and len(self.changed_nsids) >= 1024:
            self.changed_overflow = True
        else:
            self.changed_nsids.add(nsid)

    def take_changed_ns(self, rae: bool) -> list[int]:
        nsids = [0xFFFFFFFF] if self.changed_overflow else sorted(self.changed_nsids)
        if not rae:
            self.changed_nsids.clear()
            self.changed_overflow = False
        return nsids

    # -- teardown ----------------------------------------------------------------------------

    def close(self, reason: str) -> None:
        """Tear the association down: every queue's connection is closed."""
        if self.closed:
            return
        self.closed = True
        for queue in list(self.queues.values()):
            queue.close(reason)
        self.queues.clear()
        if self.subsystem is not None:
            self.subsystem.controllers.pop(self.cntlid, None)

    def __repr__(self) -> str:
        kind = "discovery" if self.discovery else self.subsystem.nqn if self.subsystem else "?"
        return f"Controller({self.cntlid}, {kind}, host={self.hostnqn})"
