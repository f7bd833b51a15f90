"""Reservation Register, Report, Acquire and Release (NVM opcodes 0x0D, 0x0E, 0x11, 0x15).

The rules live in :mod:`target.reservations`; here: nvmet's checks before the rules run (field
checks, then the data copy: ``nvmet_copy_from_sgl`` fails short data with Data SGL Length
Invalid at DPTR), the notifications to every controller of the hosts concerned, persistence
(PTPL) before the command completes, and preempt-and-abort's wait for the preempted hosts'
commands that are already running.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING

import trio

from nvmeof.status import StatusCode
from nvmeof.wire.reservations import (
    ACQUIRE_DATA_SIZE,
    REGISTER_DATA_SIZE,
    RELEASE_DATA_SIZE,
    STATUS_EXT_HEADER_SIZE,
    AcquireAction,
    Cptpl,
    build_reservation_status,
    parse_cdw10,
    parse_keys,
)
from target.commands.io import namespace_of
from target.commands.request import (
    LOC_CDW10,
    LOC_DPTR,
    ExecuteResult,
    QueueContext,
    Reply,
    Request,
    fail,
)
from target.reservations import Outcome, Reservations, check_acquire_fields

if TYPE_CHECKING:
    from target.controller import Controller
    from target.subsystem import Namespace

_LOC_CDW11 = 44
#: How long preempt-and-abort waits for the preempted hosts' running commands (storage I/O in a
#: worker thread) before it completes anyway; nvmet waits without a bound.
ABORT_DRAIN_TIMEOUT = 30.0
_OK = Reply()


def _context(q: QueueContext, req: Request) -> tuple[Controller, Namespace, Reservations]:
    ctrl, ns = namespace_of(q, req)
    resv = ns.reservations
    assert resv is not None  # dispatch routes here only for namespaces with reservations
    return ctrl, ns, resv


def _data(req: Request, need: int) -> bytes | bytearray:
    data = req.data
    if data is None or len(data) < need:
        raise fail(StatusCode.SGL_INVALID_DATA,
                   f"{0 if data is None else len(data)} bytes of data, the command reads {need}",
                   loc=LOC_DPTR)  # fmt: skip
    return data


def execute_register(q: QueueContext, req: Request) -> ExecuteResult:
    ctrl, ns, resv = _context(q, req)
    fields = parse_cdw10(req.dword(10))
    crkey, nrkey = parse_keys(_data(req, REGISTER_DATA_SIZE))
    if q.port.strict and (fields.cptpl == Cptpl.RESERVED
                          or (fields.cptpl == Cptpl.PERSIST and not resv.can_persist)):  # fmt: skip
        # nvmet ignores CPTPL; SPDK refuses what it cannot do: a conformance checker should
        raise fail(StatusCode.INVALID_FIELD, f"CPTPL {fields.cptpl} here", loc=LOC_CDW10)
    out = resv.register(ctrl.hostid, fields.action, crkey, nrkey, iekey=fields.iekey,
                        cptpl=fields.cptpl)  # fmt: skip
    return _finish(q, ctrl, ns, out, "register")


def execute_acquire(q: QueueContext, req: Request) -> ExecuteResult:
    ctrl, ns, resv = _context(q, req)
    fields = parse_cdw10(req.dword(10))
    refused = check_acquire_fields(fields.iekey, fields.rtype)
    if refused:
        raise fail(refused, f"acquire with IEKEY {int(fields.iekey)} type {fields.rtype}")
    crkey, prkey = parse_keys(_data(req, ACQUIRE_DATA_SIZE))
    out = resv.acquire(ctrl.hostid, fields.action, fields.rtype, crkey, prkey)
    result = _finish(q, ctrl, ns, out, "acquire")
    if out.aborted and fields.action == AcquireAction.PREEMPT_AND_ABORT:
        return _drain(resv, out.aborted)
    return result


def execute_release(q: QueueContext, req: Request) -> ExecuteResult:
    ctrl, ns, resv = _context(q, req)
    fields = parse_cdw10(req.dword(10))
    if fields.iekey:  # nvmet_execute_pr_release: IEKEY is refused before the data is read
        raise fail(StatusCode.INVALID_FIELD, "release with IEKEY")
    crkey, _ = parse_keys(_data(req, RELEASE_DATA_SIZE))
    out = resv.release(ctrl.hostid, fields.action, fields.rtype, crkey)
    return _finish(q, ctrl, ns, out, "release")


def execute_report(q: QueueContext, req: Request) -> ExecuteResult:
    """nvmet_execute_pr_report: EDS must be set (over Fabrics the Host ID is 128 bits: Host
    Identifier Inconsistent Format otherwise, as the spec, nvmet and SPDK answer), at least the
    64-byte header must be asked for, and the SGL must hold what is asked for."""
    _, _, resv = _context(q, req)
    length = (((req.dword(10) + 1) & 0xFFFFFFFF) * 4) & 0xFFFFFFFF
    if not req.dword(11) & 1:
        raise fail(StatusCode.HOST_ID_INCONSIST, "report without EDS: Host IDs are 128 bits",
                   loc=_LOC_CDW11)  # fmt: skip
    if length < STATUS_EXT_HEADER_SIZE:
        raise fail(StatusCode.INVALID_FIELD, f"report of {length} bytes", loc=LOC_CDW10)
    if req.transfer_length < length:
        raise fail(StatusCode.SGL_INVALID_DATA,
                   f"SGL of {req.transfer_length} bytes for a report of {length}", loc=LOC_DPTR)  # fmt: skip
    report = build_reservation_status(resv.report(extended=True))[:length]
    return Reply(data=report.ljust(req.transfer_length, b"\0"))


def _finish(q: QueueContext, ctrl: Controller, ns: Namespace, out: Outcome,
            what: str) -> ExecuteResult:  # fmt: skip
    """Persist, notify, then answer: a registration is durable before its completion."""
    if out.changed:
        ns.persist_reservations()
    if out.notices:
        notify(ctrl, ns, out)
    if out.aborted:
        resv = ns.reservations
        assert resv is not None
        now = perf_counter()
        for hostid in out.aborted:
            resv.aborted[hostid] = now
    if out.status:
        raise fail(out.status, f"reservation {what} refused", loc=out.loc)
    return _OK


def notify(ctrl: Controller, ns: Namespace, out: Outcome) -> None:
    """Every controller of each host told (nvmet_pr_send_event_to_host)."""
    sub = ctrl.subsystem
    assert sub is not None
    for notice in out.notices:
        for other in list(sub.controllers.values()):
            if other.hostid == notice.hostid:
                other.notify_reservation(notice.type, ns.nsid)


async def _drain(resv: Reservations, hosts: list[bytes]) -> Reply:
    """Complete once the preempted hosts' running commands on this namespace are done
    (nvmet_pr_do_abort waits for their per-controller references); the ones not yet running
    find themselves aborted (:func:`target.commands.io.namespace_of`)."""
    with trio.move_on_after(ABORT_DRAIN_TIMEOUT):
        while any(resv.inflight.get(h) for h in hosts):
            finished = trio.Event()
            resv.idle_waiters.append(finished.set)
            await finished.wait()
    return _OK


RESERVATION_HANDLERS = {
    0x0D: (None, execute_register),
    0x0E: (None, execute_report),
    0x11: (None, execute_acquire),
    0x15: (None, execute_release),
}
