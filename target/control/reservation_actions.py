"""Operator actions on a namespace's persistent reservations: look at them, clear them.

Mixed into :class:`~target.control.actions.Operations`; the rules themselves live in
:mod:`target.reservations`. Registrants are hosts, known by Host ID (the 16 bytes of Connect,
shown as UUID text); the host NQNs listed with each are those of its live controllers, which is
all the target knows of a host's name.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from nvmeof.wire.reservations import describe_type
from target.control.live import ControlError, NotFound

if TYPE_CHECKING:
    from target.controller import Controller
    from target.reservations import Reservations
    from target.state import TargetState
    from target.subsystem import Namespace, Subsystem


def host_id_text(hostid: bytes) -> str:
    """A Host ID as UUID text (nvme-cli's ``--hostid``); other lengths as plain hex."""
    return str(uuid.UUID(bytes=hostid)) if len(hostid) == 16 else hostid.hex()


def reservation_summary(ns: Namespace) -> dict[str, int] | None:
    """What ``GET /status`` shows of a namespace's reservations (None: it serves none)."""
    resv = ns.reservations
    if resv is None:
        return None
    return {"type": resv.rtype, "registrants": len(resv.registrants),
            "generation": resv.generation}  # fmt: skip


def reservation_view(sub: Subsystem[Controller], ns: Namespace,
                     resv: Reservations) -> dict[str, Any]:  # fmt: skip
    """``GET /subsystems/{nqn}/namespaces/{nsid}/reservations``: the state, JSON-ready."""
    hosts: dict[bytes, set[str]] = {}
    for ctrl in list(sub.controllers.values()):
        hosts.setdefault(ctrl.hostid, set()).add(ctrl.hostnqn)
    registrants = [
        {"hostid": host_id_text(reg.hostid), "key": reg.key, "holds": resv.is_holder(reg.hostid),
         "hosts": sorted(hosts.get(reg.hostid, ()))}
        for reg in resv.registrants.values()
    ]  # fmt: skip
    return {
        "nqn": sub.nqn, "nsid": ns.nsid, "generation": resv.generation, "type": resv.rtype,
        "type_name": describe_type(resv.rtype),
        "holder": None if resv.holder is None else host_id_text(resv.holder),
        "ptpl": resv.ptpl, "can_persist": resv.can_persist, "conflicts": resv.conflicts,
        "registrants": registrants,
    }  # fmt: skip


class ReservationActions:
    """Mixed into :class:`~target.control.actions.Operations`."""

    state: TargetState

    def record(self, what: str) -> None:  # pragma: no cover - Operations overrides
        raise NotImplementedError

    def _reservations_of(self, nqn: str,
                         nsid: int) -> tuple[Subsystem[Controller], Namespace, Reservations]:  # fmt: skip
        sub = self.state.subsystems.get(nqn)
        if sub is None:
            raise NotFound(f"no subsystem {nqn!r}")
        ns = sub.namespaces.get(nsid)
        if ns is None:
            raise NotFound(f"{nqn} has no namespace {nsid}")
        if ns.reservations is None:
            raise ControlError(f"namespace {nsid} of {nqn} does not serve reservations "
                               "(its configuration says reservations = false)")  # fmt: skip
        return sub, ns, ns.reservations

    def reservations(self, nqn: str, nsid: int) -> dict[str, Any]:
        """Registrants (Host ID, key, holding), holder, type, generation, PTPL, conflicts."""
        return reservation_view(*self._reservations_of(nqn, nsid))

    def reservations_clear(self, nqn: str, nsid: int) -> dict[str, Any]:
        """Drop every registration and the reservation (registrants are notified: Reservation
        Preempted); what was there before, and the audit trail's line."""
        _, _, resv = self._reservations_of(nqn, nsid)
        removed, released = len(resv.registrants), resv.rtype
        notified = self.state.clear_reservations(nqn, nsid)
        line = (f"reservations clear {nqn} nsid={nsid} registrants={removed} type={released} "
                f"generation={resv.generation} notified={len(notified)}")  # fmt: skip
        self.record(line)
        return {"nqn": nqn, "nsid": nsid, "removed": removed, "released_type": released,
                "notified": len(notified), "generation": resv.generation,
                "changes": [line]}  # fmt: skip
