"""The namespace head: one shared namespace reached through several paths, with failover.

Rules (the Linux host's drivers/nvme/host/multipath.c, docs/PROTOCOL.md §8):

- :meth:`MultipathHead.submit` is the single submission path, for first attempts, retries and
  failovers alike. It picks a path with the I/O policy and hands the slot's stable command copy
  to one of that path's queues.
- A completion's fate is :func:`~initiator.policy.decide_disposition`. FAILOVER clears the
  cached path, marks the path ANA-pending on ANA statuses (its controller then re-reads the ANA
  log) and parks the slot on the head's requeue list. One requeue task per head resubmits
  parked slots through :meth:`submit` when a usable path exists.
- No usable path but a controller still connecting: slots stay parked, bounded by
  ``fast_io_fail_tmo`` (and by ``ctrl_loss_tmo``, after which the controller is gone). No path
  can come back: parked slots fail with Host Path Error + DNR ("no available path").
- A write failed over from a path whose controller reports a Command Quiesce Time (CQT) is not
  resent before CQT has passed since the path error, so a copy still executing on the dead
  path cannot land after the retry (the ghost-write hazard).
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from initiator.errors import IoError
from initiator.pathstats import (  # re-exported: the stats lived here
    FAILOVER_BOUNDS,
    LATENCY_BOUNDS,
    Buckets as Buckets,
    HeadStats as HeadStats,
    PathStats as PathStats,
)
from initiator.policy import (
    COMPLETE,
    IOPOLICIES,
    SELECTORS,
    USABLE_ANA_STATES,
    Disposition,
    decide_disposition,
    retry_delay,
    select_numa,
)
from initiator.reservations import ReservationCommands
from initiator.ring import Ring, Slot, SlotState
from initiator.session import DEFAULT_MAX_TRANSFER, SESSION_LIVE
from logfmt.aggregate import Aggregator
from nvmeof.constants import AnaState
from nvmeof.status import StatusCode, status_word

if TYPE_CHECKING:
    from initiator.queue import HostQueue
    from initiator.session import Session

log = logging.getLogger("nvmeof.initiator")

_PREPARED = SlotState.PREPARED  # module constants: an enum member on its class costs ~0.2 us
_INFLIGHT = SlotState.INFLIGHT
_OPTIMIZED = AnaState.OPTIMIZED
#: Completion status of I/O that no path can ever serve again.
NO_PATH_STATUS = status_word(StatusCode.HOST_PATH_ERROR, dnr=True)
_ANA_CODES = {StatusCode.ANA_PERSISTENT_LOSS, StatusCode.ANA_INACCESSIBLE,
              StatusCode.ANA_TRANSITION}  # fmt: skip


def _status_name(code: int) -> str:
    try:
        return StatusCode(code).name
    except ValueError:
        return f"status {code:#x}"


class Path:
    """One namespace as seen through one controller (``nvmeXcYnZ`` in Linux)."""

    def __init__(self, session: Session, nsid: int) -> None:
        self.session = session
        self.nsid = nsid
        self.ana_state = AnaState.OPTIMIZED
        self.ana_group = 0
        self.ana_pending = False
        self.inflight = 0
        self.failed_at = -math.inf  # when an outstanding command last failed over from it
        self.stats = PathStats()
        self.last_good = -math.inf  # the last successful completion on the path
        self.was_usable = False  # as of the head's last look (see MultipathHead.check_paths)
        self.head: MultipathHead | None = None
        #: The head's list of queues with commands to send (MultipathHead.ring_doorbells).
        self.doorbells: list[HostQueue] = []
        self._next_queue = 0

    @property
    def label(self) -> str:
        return self.session.label

    @property
    def usable(self) -> bool:
        # session.live and ana_state.usable without their calls: this runs for every I/O
        return (self.session.state is SESSION_LIVE and not self.ana_pending
                and self.ana_state in USABLE_ANA_STATES)  # fmt: skip

    @property
    def state(self) -> str:
        return self.session.state.value

    def detach(self) -> None:
        """Leave the head: the namespace is gone from this path's controller."""
        if self.head is not None:
            self.head.remove_path(self)

    def send(self, slot: Slot) -> bool:
        """Hand ``slot`` to one of this path's I/O queues; False if none can take it now."""
        queues = self.session.io_queues
        count = len(queues)
        if not count:
            return False
        first = self._next_queue % count
        queue = queues[first]
        if queue.send_slot(slot):  # the usual case, without the loop
            self._next_queue = (first + 1) % count
        else:
            for step in range(1, count):
                queue = queues[(self._next_queue + step) % count]
                if queue.send_slot(slot):
                    self._next_queue = (self._next_queue + step + 1) % count
                    break
            else:
                return False
        if not queue.bell_pending:  # the head rings it at the end of the batch
            queue.bell_pending = True
            self.doorbells.append(queue)
        return True

    def __repr__(self) -> str:
        return f"Path({self.label}, nsid={self.nsid}, {self.ana_state.label}, {self.state})"


class MultipathHead(ReservationCommands):
    """A shared namespace (``/dev/nvmeXnY``): its paths, I/O policy and requeue list; the
    ``reservation_*`` methods come from :class:`~initiator.reservations.ReservationCommands`.

    Args:
        subnqn / nsid: what identifies the namespace (its IDs must match on every path).
        block_size / nlbas: its format, from Identify Namespace.
        iopolicy: ``numa`` (default), ``round-robin`` or ``queue-depth``.
    """

    def __init__(self, subnqn: str, nsid: int, *, block_size: int, nlbas: int,
                 max_transfer: int = DEFAULT_MAX_TRANSFER,
                 ids: dict[str, object] | None = None, iopolicy: str = "numa") -> None:  # fmt: skip
        self.subnqn = subnqn
        self.nsid = nsid
        self.nsid_bytes = nsid.to_bytes(4, "little")
        self.block_size = block_size
        self.nlbas = nlbas
        #: Largest transfer per command: the smallest MDTS of the paths (set as they join).
        self.max_transfer = max_transfer
        self.ids = ids or {}
        self.paths: list[Path] = []
        self.iopolicy = iopolicy
        self._select = SELECTORS[iopolicy]
        self._current: int | None = None
        self._requeue: deque[Slot] = deque()
        #: Queues that took commands since the last ring_doorbells() (Path.send notes them).
        self.doorbells: list[HostQueue] = []
        self._lot = trio.lowlevel.ParkingLot()
        self._kicked = False
        self.stats = HeadStats()
        self.failure_log = Aggregator(log, level=logging.WARNING)
        self.events: list[tuple[float, str]] = []  # (time, what) for live views and plots
        #: Recovery: the loss of a path (when I/O on it stopped: its last good completion) to
        #: the first successful completion of a command sent after the loss was detected
        #: (from that command's submission when it came later than the loss).
        self.failover_latency = Buckets(FAILOVER_BOUNDS)
        #: Detection: a lost path's last good completion to the host marking it unusable.
        self.detection_latency = Buckets(FAILOVER_BOUNDS)
        self.failover_started: float | None = None  # when I/O stopped (the loss recovered from)
        self.loss_detected = -math.inf  # when the host noticed it
        try:  # the run's clock itself: cheaper than trio.current_time() on every completion
            self._now: Callable[[], float] = trio.lowlevel.current_clock().current_time
        except RuntimeError:  # made outside a Trio run
            self._now = trio.current_time

    # -- configuration ---------------------------------------------------------------------------

    def set_iopolicy(self, name: str) -> None:
        if name not in SELECTORS:
            raise ValueError(f"unknown iopolicy {name!r} (one of {', '.join(IOPOLICIES)})")
        self.iopolicy = name
        self._select = SELECTORS[name]
        self._current = None

    def add_path(self, path: Path, max_transfer: int = DEFAULT_MAX_TRANSFER) -> None:
        if path not in self.paths:
            self.max_transfer = min(self.max_transfer, max_transfer)
            path.head = self
            path.doorbells = self.doorbells
            self.paths.append(path)
            self.kick()

    def remove_path(self, path: Path) -> None:
        if path in self.paths:
            self.paths.remove(path)
            self._current = None
            self.kick()

    def ring(self, entries: int = 64) -> Ring:
        """A new submission/completion ring over this head."""
        return Ring(self, entries)

    # -- plain async helpers -----------------------------------------------------------------------

    async def read(self, slba: int, nblocks: int) -> bytearray:
        """Read ``nblocks`` blocks at ``slba``; raises :class:`IoError` on a failed status."""
        buffer = bytearray(nblocks * self.block_size)
        await self._one(lambda s: s.prep_read(slba, nblocks, buffer))
        return buffer

    async def write(self, slba: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` (a whole number of blocks) at ``slba``."""
        nblocks = len(data) // self.block_size
        await self._one(lambda s: s.prep_write(slba, nblocks, data))

    async def flush(self) -> None:
        await self._one(lambda s: s.prep_flush())

    async def passthru(self, cmd64: bytes | bytearray, *, data_out: bytes | None = None,
                       data_in: bytearray | None = None) -> Slot:  # fmt: skip
        """Run a raw 64-byte I/O command; returns the completed slot (status, DW0/DW1)."""
        return await self._one(lambda s: s.prep_cmd(cmd64, data_out=data_out, data_in=data_in),
                               check=False)  # fmt: skip

    async def _one(self, prep: Callable[[Slot], object], *, check: bool = True) -> Slot:
        ring = Ring(self, 1)
        slot = ring.get_sqe()
        assert slot is not None
        prep(slot)
        await ring.submit_and_wait(1)
        if check and not slot.ok:
            raise IoError(slot.status_word, f"{slot.kind} failed on {self.subnqn} nsid "
                          f"{self.nsid}: {slot.status}")  # fmt: skip
        return slot

    def note(self, what: str) -> None:
        self.events.append((trio.current_time(), what))
        del self.events[:-1000]

    # -- submission ------------------------------------------------------------------------------

    def submit(self, slot: Slot) -> None:
        """Send ``slot`` on the path the I/O policy picks, or park it."""
        paths = self.paths
        index = self._current
        if (
            self._select is select_numa
            and index is not None
            and index < len(paths)
            and (path := paths[index]).session.state is SESSION_LIVE
            and not path.ana_pending
            and path.ana_state == _OPTIMIZED
        ):
            pass  # select_numa's first rule (the cached path, usable and optimized), inline
        else:
            index = self._select(paths, index)
            if index is None:
                self._park(slot, no_path=True)
                return
            path = paths[index]
        self._current = index
        if not path.send(slot):
            self._park(slot, no_path=False)
            return
        if slot.state is _PREPARED:
            slot.state = _INFLIGHT  # the common legal move, without move()'s lookups
        else:
            slot.move(SlotState.INFLIGHT)
        slot.path = path
        path.inflight += 1

    def ring_doorbells(self) -> None:
        """Have every queue that took commands since the last call send them: after a batch
        of :meth:`submit` calls (Ring.submit) and of resubmissions (the requeue task, a retry)."""
        bells = self.doorbells
        while bells:  # a ring that fails a queue may resubmit on another: it is rung too
            bells.pop().doorbell()

    def _park(self, slot: Slot, *, no_path: bool) -> None:
        if no_path:
            if not self.may_recover():
                self._fail(slot, "no available path")
                return
            self.stats.no_path_queued += 1
        slot.move(SlotState.REQUEUED)
        self._requeue.append(slot)
        self.kick()

    def _fail(self, slot: Slot, why: str) -> None:
        self.stats.failed += 1
        self.failover_started = None  # that failover did not succeed
        # With no path left every I/O fails: one line per second with the count, not one each.
        self.failure_log.note(f"I/O failed on {self.subnqn} nsid {self.nsid}:", why)
        slot.status_word = NO_PATH_STATUS
        slot.dw0 = slot.dw1 = 0
        slot.ring.post(slot)

    def may_recover(self) -> bool:
        """Whether any path is usable or may become usable: a controller live, or reconnecting
        and within its ``fast_io_fail_tmo`` (``nvme_available_path``)."""
        return any(p.session.may_recover for p in self.paths)

    # -- completion ------------------------------------------------------------------------------

    def complete(self, slot: Slot, status: int, dw0: int, dw1: int) -> None:
        """A path's queue completed ``slot`` (status 0x371 if the connection died)."""
        path: Path | None = slot.path
        assert path is not None
        path.inflight -= 1
        stats = path.stats
        if status & 0xFFFE == 0:
            disposition = COMPLETE  # decide_disposition's first rule, without the call
        else:
            disposition = decide_disposition(status, retries=slot.retries,
                                             path_alive=path.session.live)  # fmt: skip
        if disposition is COMPLETE:
            stats.ios += 1
            stats.bytes += len(slot.data_in or slot.data_out or b"")
            now = self._now()
            elapsed = now - slot.sent_at
            latency = stats.latency  # Buckets.observe, inlined: this runs for every I/O
            latency.counts[bisect_right(LATENCY_BOUNDS, elapsed)] += 1
            latency.sum += elapsed
            if status & 0xFFFE:
                stats.errors += 1
            else:
                path.last_good = now
                started = self.failover_started
                if started is not None and slot.sent_at >= self.loss_detected:
                    # from the loss, or from the command's submission if nothing was waiting
                    # then (an idle path's loss costs the I/O that comes later nothing)
                    self.failover_latency.observe(now - max(started, slot.submitted_at))
                    self.failover_started = None
            slot.status_word = status
            slot.dw0 = dw0
            slot.dw1 = dw1
            slot.path_label = path.session.label  # path.label, without the property call
            slot.ring.post(slot)
        elif disposition is Disposition.RETRY:
            slot.retries += 1
            stats.retries += 1
            self.stats.retries += 1
            delay = retry_delay(status, path.session.crdt)
            slot.not_before = trio.current_time() + delay if delay else 0.0
            if delay or not path.send(slot):
                slot.pinned = True  # a retry goes to the same path, after the CRD delay
                slot.move(SlotState.REQUEUED)
                self._requeue.append(slot)
                self.kick()
            else:
                path.inflight += 1
                self.ring_doorbells()
        else:
            self._failover(slot, path, status)

    def _failover(self, slot: Slot, path: Path, status: int) -> None:
        path.failed_at = self._now()  # a loss this reveals is a busy path's, counted first
        self.check_paths()
        now = trio.current_time()
        code = (status >> 1) & 0x7FF
        if self.failover_started is None:  # a path error without a path loss
            self.failover_started = self.loss_detected = now
        if self._current is not None and self.paths[self._current] is path:
            self._current = None
        if code in _ANA_CODES and not path.ana_pending:
            path.ana_pending = True
            path.session.request_ana_reread()
        if path.stats.failovers == 0 or now - path.session.last_failover > 0.5:
            self.stats.failovers += 1
            self.note(f"failover from {path.label}: {_status_name(code)}")
        path.session.last_failover = now
        path.stats.failovers += 1
        self.stats.requeued += 1
        slot.failovers += 1
        slot.retries = 0  # a failed-over command is a fresh request (nvme_failover_req)
        slot.pinned = False
        slot.not_before = 0.0
        if code == StatusCode.HOST_ABORTED_CMD and may_change_media(slot.cmd[0]):
            # The lost controller may still be executing it (TP4129): not before it is quiet.
            until = path.session.quiesce_until
            if until > now:
                slot.not_before = until
                self.stats.quiesce_held += 1
                if path.session.quiesce_noted != until:
                    path.session.quiesce_noted = until
                    self.note(f"holding writes from {path.label} for {until - now:.3f} s "
                              "(command quiesce time)")  # fmt: skip
        slot.move(SlotState.REQUEUED)
        self._requeue.append(slot)
        self.kick()

    # -- requeue task ----------------------------------------------------------------------------

    def check_paths(self) -> None:
        """Count a loss for every path that was usable and is not any more (its controller
        lost, its ANA group inaccessible or being re-read), whether or not commands were in
        flight on it: the loss is when I/O on it stopped (its last good completion, when it
        had commands outstanding), the detection is now."""
        for path in self.paths:
            usable = path.usable
            if path.was_usable and not usable:
                now = self._now()
                self.stats.path_losses += 1
                path.stats.losses += 1
                stopped = now
                # busy: commands outstanding, or failed over since its last good completion
                busy = path.inflight or path.failed_at > path.last_good
                if busy and path.last_good > -math.inf:
                    stopped = path.last_good
                    self.detection_latency.observe(now - stopped)
                if self.failover_started is None:
                    self.failover_started, self.loss_detected = stopped, now
                self.note(f"path {path.label} lost (I/O stopped {now - stopped:.3f} s before)")
            path.was_usable = usable

    def kick(self) -> None:
        """Wake the requeue task (a path became usable, a slot was parked, a tag was freed)."""
        self.check_paths()
        if not self._kicked:
            self._kicked = True
            self._lot.unpark_all()

    async def run_requeue(self) -> None:
        """The head's requeue task: resubmit parked slots when a path can take them."""
        while True:
            self._kicked = False
            wake_at = self._drain(trio.current_time())
            if self._kicked:
                continue
            with trio.move_on_at(wake_at):
                await self._lot.park()

    def _drain(self, now: float) -> float:
        """Resubmit what can go now; returns when to look again."""
        wake_at = math.inf
        parked = self._requeue
        if not parked:
            return wake_at
        if not self.may_recover():
            while parked:
                self._fail(parked.popleft(), "no available path")
            return wake_at
        for _ in range(len(parked)):
            slot = parked.popleft()
            if slot.not_before > now:
                parked.append(slot)
                wake_at = min(wake_at, slot.not_before)
                continue
            path: Path | None = slot.path if slot.pinned else None
            if path is None or not path.usable:
                slot.pinned = False
                index = self._select(self.paths, self._current)
                if index is None:
                    parked.append(slot)
                    continue
                path = self.paths[index]
                self._current = index
            if not path.send(slot):
                parked.append(slot)  # no free tag: a completion will kick us
                wake_at = min(wake_at, now + 0.01)
                continue
            slot.pinned = False
            slot.move(SlotState.INFLIGHT)
            slot.path = path
            path.inflight += 1
        self.ring_doorbells()
        if parked:
            # Parked with no usable path: look again when a controller's fast_io_fail_tmo
            # expires (paths becoming usable kick us).
            for path in self.paths:
                deadline = path.session.failfast_deadline
                if now < deadline < wake_at:  # an expired deadline must not wake us at once
                    wake_at = deadline
        return wake_at

    @property
    def queued(self) -> int:
        return len(self._requeue)

    def queues(self) -> list[HostQueue]:
        return [q for p in self.paths for q in p.session.io_queues]

    def __repr__(self) -> str:
        return f"MultipathHead({self.subnqn}, nsid={self.nsid}, paths={len(self.paths)})"


#: NVM opcodes whose retry elsewhere cannot overwrite newer data: Flush, Read, Compare.
_HARMLESS_OPCODES = frozenset((0x00, 0x02, 0x05))


def may_change_media(opcode: int) -> bool:
    """Whether a command aborted with its connection must wait for the controller to quiesce
    before it runs on another path: anything but Flush, Read and Compare (a Write, Write
    Zeroes, a Dataset Management deallocate, a vendor passthrough...)."""
    return opcode not in _HARMLESS_OPCODES
