"""Persistent reservations of one namespace: registrants, the holder, its type, the generation.

Pure bookkeeping (no I/O, no clock): :mod:`target.commands.reservation` turns commands into
calls here and :class:`Outcome` into completions, notifications and persistence. Registrants
are hosts, identified by the Host ID of Connect, so a registration and a reservation belong to
every controller of that host, on every path, across resets and reconnects.

References, in order: the NVMe Base Specification 2.0 "Reservations" and the NVM
Command Set's reservation commands; where the specification leaves a corner open, Linux nvmet's
``drivers/nvme/target/pr.c`` (6.13 and later; the 6.1 and 6.12 referees have no reservations),
then SPDK's ``lib/nvmf/ctrlr.c`` / ``subsystem.c``. Each choice below names its source.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from nvmeof.constants import IoOpcode
from nvmeof.status import StatusCode
from nvmeof.wire.reservations import (
    AcquireAction,
    Cptpl,
    Notification,
    NotificationType,
    RegisterAction,
    Registrant as ReportEntry,
    ReleaseAction,
    ReservationStatus,
    ReservationType,
)

#: The spec's command groups ("Command Behavior in the Presence of a Reservation"). nvmet's
#: nvmet_is_req_read/write_cmd_group have no Compare (nvmet has no Compare at all); the spec and
#: SPDK (nvmf_ns_reservation_request_check) put it with the reads.
READ_GROUP = frozenset({IoOpcode.READ, IoOpcode.COMPARE})
WRITE_GROUP = frozenset({IoOpcode.WRITE, IoOpcode.FLUSH, IoOpcode.WRITE_ZEROES,
                         IoOpcode.DATASET_MANAGEMENT})  # fmt: skip
_ALL_REGISTRANTS = frozenset({ReservationType.WRITE_EXCLUSIVE_ALL_REGS,
                              ReservationType.EXCLUSIVE_ACCESS_ALL_REGS})  # fmt: skip
_REGISTRANTS_ONLY = frozenset({ReservationType.WRITE_EXCLUSIVE_REG_ONLY,
                               ReservationType.EXCLUSIVE_ACCESS_REG_ONLY})  # fmt: skip
_WRITE_TYPES = frozenset({ReservationType.WRITE_EXCLUSIVE, ReservationType.WRITE_EXCLUSIVE_REG_ONLY,
                          ReservationType.WRITE_EXCLUSIVE_ALL_REGS})  # fmt: skip
#: Feature 0x82's mask bits: bit N masks notification type N.
NOTIFICATION_MASK_ALL = sum(1 << t for t in NotificationType if t)
SNAPSHOT_VERSION = 1


@dataclass(slots=True)
class Registrant:
    hostid: bytes
    key: int


class Notice(NamedTuple):
    """Tell every controller of ``hostid`` (a Reservation Notification log page + AEN)."""

    hostid: bytes
    type: NotificationType


@dataclass(slots=True)
class Outcome:
    """What a reservation command did: its status (0: success; always with DNR), where nvmet
    records the error, whom to notify, and the hosts whose registrations preempt-and-abort
    removed (their commands still on the way are aborted)."""

    status: int = 0
    loc: int | None = None
    notices: list[Notice] = field(default_factory=list)
    aborted: list[bytes] = field(default_factory=list)
    changed: bool = False


_LOC_CDW10, _LOC_CDW11 = 40, 44


def _refused(code: int, loc: int | None = None) -> Outcome:
    return Outcome(status=code, loc=loc)


class Reservations:
    """The reservation state of one namespace.

    Args:
        can_persist: the namespace can keep its state through a power loss (PTPL; a file
            backend can, RAM and null cannot).
    """

    def __init__(self, *, can_persist: bool = False) -> None:
        #: By Host ID, in registration order (nvmet's list order: Report lists them so, and an
        #: All Registrants reservation passes to the first one left).
        self.registrants: dict[bytes, Registrant] = {}
        #: The holder's Host ID (for an All Registrants type: the registrant nvmet points at;
        #: every registrant holds it). None: no reservation.
        self.holder: bytes | None = None
        self.rtype = 0
        self.generation = 0
        self.can_persist = can_persist
        self.ptpl = False
        #: Feature 0x82: nvmet keeps one mask per namespace (ns->pr.notify_mask).
        self.notify_mask = 0
        self.conflicts = 0
        #: Host ID -> perf_counter() of the preempt-and-abort that removed it: its commands
        #: received before then are aborted when they come to run.
        self.aborted: dict[bytes, float] = {}
        #: Host ID -> its commands running storage I/O on this namespace right now.
        self.inflight: dict[bytes, int] = {}
        #: Called (then forgotten) whenever one of those finishes.
        self.idle_waiters: list[Callable[[], None]] = []

    # -- access ------------------------------------------------------------------------------

    def is_holder(self, hostid: bytes) -> bool:
        if self.holder is None:
            return False
        if self.rtype in _ALL_REGISTRANTS:
            return hostid in self.registrants
        return hostid == self.holder

    def conflicts_with(self, hostid: bytes, opcode: int) -> bool:
        """Whether ``opcode`` from ``hostid`` is refused (nvmet_pr_check_cmd_access, spec
        table "Command Behavior in the Presence of a Reservation"). Reservation commands are
        judged when they run, not here."""
        holder = self.holder
        if holder is None or holder == hostid:
            return False
        write = opcode in WRITE_GROUP
        if not write and opcode not in READ_GROUP:
            return False
        rtype = self.rtype
        if rtype == ReservationType.WRITE_EXCLUSIVE:
            refused = write
        elif rtype == ReservationType.EXCLUSIVE_ACCESS:
            refused = True
        elif rtype in _WRITE_TYPES:  # the registrants-only and all-registrants write types
            refused = write and hostid not in self.registrants
        else:
            refused = hostid not in self.registrants
        if refused:
            self.conflicts += 1
        return refused

    # -- Reservation Register ------------------------------------------------------------------

    def register(self, hostid: bytes, action: int, crkey: int, nrkey: int, *, iekey: bool,
                 cptpl: int) -> Outcome:  # fmt: skip
        """nvmet_execute_pr_register: IEKEY skips the CRKEY check of unregister and replace;
        a successful command bumps the generation, even one that changed nothing."""
        reg = self.registrants.get(hostid)
        if action == RegisterAction.REGISTER:
            # Registering again with the same key succeeds; with another key it conflicts.
            if reg is not None and reg.key != nrkey:
                return self._conflict()
            if reg is None:
                self.registrants[hostid] = Registrant(hostid, nrkey)
            out = Outcome()
        elif action == RegisterAction.UNREGISTER:
            if reg is None or not (iekey or reg.key == crkey):
                return self._conflict()
            out = Outcome(notices=self._unregister(reg))
        elif action == RegisterAction.REPLACE:
            # nvmet: a host that is not registered conflicts, IEKEY or not.
            if reg is None or not (iekey or reg.key == crkey):
                return self._conflict()
            reg.key = nrkey
            out = Outcome()
        else:  # nvmet answers a reserved action Invalid Opcode, logged at CDW10
            return _refused(StatusCode.INVALID_OPCODE, _LOC_CDW10)
        # CPTPL: nvmet ignores it (no PTPL); SPDK refuses PTPL where it cannot persist. We keep
        # nvmet's tolerance where we cannot persist (RESCAP says so) and persist where we can.
        if cptpl == Cptpl.PERSIST and self.can_persist:
            self.ptpl = True
        elif cptpl == Cptpl.CLEAR:
            self.ptpl = False
        self.generation = (self.generation + 1) & 0xFFFFFFFF
        out.changed = True
        return out

    def _unregister(self, reg: Registrant) -> list[Notice]:
        """nvmet_pr_unregister_one: an All Registrants reservation passes to the first
        registrant left; a Registrants Only one is released (others are told)."""
        del self.registrants[reg.hostid]
        if self.holder != reg.hostid:
            return []
        if self.rtype in _ALL_REGISTRANTS:
            self.holder = next(iter(self.registrants), None)
            if self.holder is None:
                self.rtype = 0
            return []
        released = self.rtype in _REGISTRANTS_ONLY
        self.holder, self.rtype = None, 0
        return self._released(reg.hostid) if released else []

    # -- Reservation Acquire -------------------------------------------------------------------

    def acquire(self, hostid: bytes, action: int, rtype: int, crkey: int, prkey: int) -> Outcome:
        """nvmet_execute_pr_acquire, after its IEKEY and RTYPE checks (see
        :func:`check_acquire_fields`): the host must be registered with CRKEY."""
        reg = self.registrants.get(hostid)
        if reg is None or reg.key != crkey:
            return self._conflict()
        if action == AcquireAction.ACQUIRE:
            if self.holder is not None:
                # The spec: a holder acquiring its own type again succeeds. Every registrant of
                # an All Registrants reservation is a holder (spec, SPDK); nvmet 6.13 refuses all
                # but the one it points at, a difference noted in docs/TOLERANCE.md.
                if self.is_holder(hostid) and self.rtype == rtype:
                    return Outcome()
                return self._conflict()
            self.holder, self.rtype = hostid, rtype
            return Outcome(changed=True)
        if action in (AcquireAction.PREEMPT, AcquireAction.PREEMPT_AND_ABORT):
            out = self._preempt(
                hostid, rtype, prkey, abort=action == AcquireAction.PREEMPT_AND_ABORT
            )
            if not out.status:
                self.generation = (self.generation + 1) & 0xFFFFFFFF
                out.changed = True
            return out
        return _refused(StatusCode.INVALID_OPCODE, _LOC_CDW10)

    def _preempt(self, hostid: bytes, rtype: int, prkey: int, *, abort: bool) -> Outcome:
        """The spec's preempt rules case by case, in nvmet_pr_preempt's order. One difference:
        a holder preempting with another registrant's key removes those registrants and keeps
        its reservation, as the spec says (nvmet 6.13 only changes the holder's type)."""
        if self.holder is None:
            return self._unregister_by_key(hostid, prkey, abort, others_only=False)
        if self.rtype in _ALL_REGISTRANTS:
            if prkey == 0:  # take the reservation over and remove every other registrant
                self.holder, self.rtype = hostid, rtype
                return self._unregister_others(hostid, abort)
            return self._unregister_by_key(hostid, prkey, abort, others_only=False)
        holder_key = self.registrants[self.holder].key
        if prkey == holder_key:
            # The holder's key: the sender holds the reservation now, with the type asked for,
            # and the others registered with that key go. The holder naming its own key just
            # changes the type (nvmet_pr_preempt's holder == reg case).
            original = self.rtype
            self.holder, self.rtype = hostid, rtype  # the new holder first, as nvmet
            out = self._unregister_by_key(hostid, prkey, abort, others_only=True)
            if original != rtype:
                out.notices += self._released(hostid)
            return out
        if prkey:
            return self._unregister_by_key(hostid, prkey, abort, others_only=False)
        return _refused(StatusCode.INVALID_FIELD)

    def _unregister_by_key(self, sender: bytes, prkey: int, abort: bool, *,
                           others_only: bool) -> Outcome:  # fmt: skip
        """Remove the registrants holding ``prkey`` (nvmet_pr_unreg_all_host_by_prkey /
        _others_by_prkey); none found conflicts unless only others were asked for."""
        out = Outcome()
        found = False
        for reg in [r for r in self.registrants.values() if r.key == prkey]:
            if others_only and reg.hostid == sender:
                continue
            found = True
            out.notices += self._remove(reg, sender, abort, out)
        if not found and not others_only:
            return self._conflict()
        return out

    def _unregister_others(self, sender: bytes, abort: bool) -> Outcome:
        out = Outcome()
        for reg in [r for r in self.registrants.values() if r.hostid != sender]:
            out.notices += self._remove(reg, sender, abort, out)
        return out

    def _remove(self, reg: Registrant, sender: bytes, abort: bool, out: Outcome) -> list[Notice]:
        if abort:
            out.aborted.append(reg.hostid)
        notices = self._unregister(reg)
        if reg.hostid != sender:
            notices += self._notice(reg.hostid, NotificationType.REGISTRATION_PREEMPTED)
        return notices

    # -- Reservation Release -------------------------------------------------------------------

    def release(self, hostid: bytes, action: int, rtype: int, crkey: int) -> Outcome:
        """nvmet_execute_pr_release, after its IEKEY check."""
        reg = self.registrants.get(hostid)
        if reg is None or reg.key != crkey:
            return self._conflict()
        if action == ReleaseAction.RELEASE:
            if not self.is_holder(hostid):  # nothing to release is not an error (spec)
                return Outcome()
            if self.rtype != rtype:  # nvmet: conflict (SPDK answers Invalid Field)
                return self._conflict()
            original = self.rtype
            self.holder, self.rtype = None, 0
            # nvmet_pr_release tells the other registrants unless the type was WE or EA
            released = original not in (ReservationType.WRITE_EXCLUSIVE,
                                        ReservationType.EXCLUSIVE_ACCESS)  # fmt: skip
            return Outcome(notices=self._released(hostid) if released else [], changed=True)
        if action == ReleaseAction.CLEAR:
            notices: list[Notice] = []
            for other in self.registrants:
                if other != hostid:
                    notices += self._notice(other, NotificationType.RESERVATION_PREEMPTED)
            self.registrants.clear()
            self.holder, self.rtype = None, 0
            self.generation = (self.generation + 1) & 0xFFFFFFFF
            return Outcome(notices=notices, changed=True)
        return _refused(StatusCode.INVALID_OPCODE, _LOC_CDW10)

    # -- Reservation Report ----------------------------------------------------------------------

    def report(self, *, extended: bool = True) -> ReservationStatus:
        """The whole report (nvmet_execute_pr_report): RCSTS set for the holder, for every
        registrant of an All Registrants type; CNTLID FFFFh (dynamic controllers, as nvmet
        and SPDK)."""
        entries = tuple(
            ReportEntry(reg.hostid, reg.key, self.is_holder(reg.hostid))
            for reg in self.registrants.values()
        )
        return ReservationStatus(self.generation, self.rtype, self.ptpl, len(entries), entries,
                                 extended)  # fmt: skip

    # -- notifications ---------------------------------------------------------------------------

    def set_notify_mask(self, mask: int) -> bool:
        """Feature 0x82; False if ``mask`` has bits nvmet does not know."""
        if mask & ~NOTIFICATION_MASK_ALL:
            return False
        self.notify_mask = mask
        return True

    def _notice(self, hostid: bytes, kind: NotificationType) -> list[Notice]:
        return [] if self.notify_mask & (1 << kind) else [Notice(hostid, kind)]

    def _released(self, releaser: bytes) -> list[Notice]:
        """nvmet_pr_resv_released: every other registrant hears of it."""
        notices: list[Notice] = []
        for hostid in self.registrants:
            if hostid != releaser:
                notices += self._notice(hostid, NotificationType.RESERVATION_RELEASED)
        return notices

    def _conflict(self) -> Outcome:
        self.conflicts += 1
        return Outcome(status=StatusCode.RESERVATION_CONFLICT)

    # -- operator and persistence -----------------------------------------------------------------

    def clear(self) -> list[Notice]:
        """The operator's clear: like Release with the clear action from no registrant."""
        notices: list[Notice] = []
        for hostid in self.registrants:
            notices += self._notice(hostid, NotificationType.RESERVATION_PREEMPTED)
        self.registrants.clear()
        self.holder, self.rtype = None, 0
        self.generation = (self.generation + 1) & 0xFFFFFFFF
        return notices

    def snapshot(self) -> dict[str, Any]:
        """What persists through a power loss (and what a gateway group would share)."""
        return {
            "version": SNAPSHOT_VERSION, "generation": self.generation, "ptpl": self.ptpl,
            "holder": self.holder.hex() if self.holder is not None else None,
            "rtype": self.rtype,
            "registrants": [{"hostid": r.hostid.hex(), "key": r.key}
                            for r in self.registrants.values()],
        }  # fmt: skip

    def restore(self, snap: dict[str, Any]) -> None:
        """Load a :meth:`snapshot` (raises ValueError if it is not one)."""
        try:
            if snap["version"] != SNAPSHOT_VERSION:
                raise ValueError(f"snapshot version {snap['version']}")
            registrants = {
                bytes.fromhex(r["hostid"]): Registrant(bytes.fromhex(r["hostid"]), int(r["key"]))
                for r in snap["registrants"]
            }
            holder = bytes.fromhex(snap["holder"]) if snap["holder"] is not None else None
            rtype = int(snap["rtype"])
            if holder is not None and (holder not in registrants or not 1 <= rtype <= 6):
                raise ValueError("holder is not a registrant or its type is invalid")
            generation, ptpl = int(snap["generation"]) & 0xFFFFFFFF, bool(snap["ptpl"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a reservation snapshot: {exc!r}") from None
        self.registrants, self.holder = registrants, holder
        self.rtype = rtype if holder is not None else 0
        self.generation, self.ptpl = generation, ptpl


def check_acquire_fields(iekey: bool, rtype: int) -> int:
    """nvmet_execute_pr_acquire refuses IEKEY (obsolete since 1.3 for Acquire) and a type
    outside 1..6 before reading the data: Invalid Field, nothing logged."""
    if (
        iekey
        or not ReservationType.WRITE_EXCLUSIVE <= rtype <= ReservationType.EXCLUSIVE_ACCESS_ALL_REGS
    ):
        return StatusCode.INVALID_FIELD
    return 0


#: nvmet's per-controller log queue (NVMET_PR_LOG_QUEUE_SIZE).
NOTIFICATION_LOG_CAPACITY = 64
_U64 = (1 << 64) - 1


class NotificationLog:
    """One controller's Reservation Notification log (page 0x80), nvmet's way
    (nvmet_pr_add_resv_log, nvmet_execute_get_log_page_resv): a 64-entry queue, a u64 counter
    that skips 0, one entry per read, COUNT jumping over notifications that were lost."""

    def __init__(self, capacity: int = NOTIFICATION_LOG_CAPACITY) -> None:
        self.capacity = capacity
        self.queue: deque[tuple[int, int, int]] = deque()  # (count, type, nsid)
        self.counter = 0
        self.lost = 0

    def add(self, kind: int, nsid: int) -> bool:
        """Queue a notification; False if the queue was full (it is counted as lost)."""
        self.counter = (self.counter + 1) & _U64 or 1
        if len(self.queue) >= self.capacity:
            self.lost += 1
            return False
        self.queue.append((self.counter, kind, nsid))
        return True

    def take(self) -> Notification:
        """The oldest notification (all zeros when there is none), removed."""
        if not self.queue:
            return Notification(0, 0, 0, 0)
        count, kind, nsid = self.queue.popleft()
        if self.queue:
            following = self.queue[0][0]
            lost = following - count - 1 if following > count else _U64 - count + following - 1
        else:
            lost = self.lost
        self.lost = max(0, self.lost - lost)
        return Notification((count + lost) & _U64 or 1, kind, len(self.queue), nsid)
