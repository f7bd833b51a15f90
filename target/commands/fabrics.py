"""Fabrics command handlers: Connect, Property Get/Set, Disconnect (docs/PROTOCOL.md §4).

Connect validation follows nvmet (``nvmet_execute_admin_connect``/``_io_connect``): failures
name the bad parameter with IPO/IATTR in DW0 so the host logs exactly what was wrong.
"""

from __future__ import annotations

import logging

from nvmeof.constants import (
    CNTLID_DYNAMIC,
    CONNECT_DATA_SIZE,
    DISCOVERY_NQN,
    FabricsType,
)
from nvmeof.errors import CommandError
from nvmeof.status import StatusCode
from nvmeof.wire.fabrics import (
    CATTR_DISABLE_SQFLOW,
    CONNECT_DATA_OFFSET_CNTLID,
    CONNECT_DATA_OFFSET_HOSTNQN,
    CONNECT_DATA_OFFSET_SUBNQN,
)
from target.commands.admin import kato_seconds
from target.commands.auth import connect_result, setup_controller_auth
from target.commands.request import (
    PENDING,
    ExecuteResult,
    QueueContext,
    Reply,
    Request,
    check_transfer_len,
    fail,
)
from target.controller import Controller

log = logging.getLogger("nvmeof.target")

# Offsets inside the Connect SQE, for IPO with IATTR = 0.
_SQE_OFFSET_RECFMT = 40
_SQE_OFFSET_QID = 42
_SQE_OFFSET_SQSIZE = 44
_IATTR_DATA = 1 << 16
#: Discovery controllers accept the host's default queue size (128) without clamping.
DISCOVERY_MQES = 127


def invalid_param(offset: int, in_data: bool, message: str) -> CommandError:
    """Connect Invalid Parameters with IPO/IATTR pointing at the bad field."""
    result = offset | (_IATTR_DATA if in_data else 0)
    return fail(StatusCode.CONNECT_INVALID_PARAM, message, result=result)


def execute_connect(q: QueueContext, req: Request) -> ExecuteResult:
    """nvmet_execute_admin_connect / nvmet_execute_io_connect, checks in their order."""
    sqe = req.sqe
    recfmt = int.from_bytes(sqe[40:42], "little")
    qid = int.from_bytes(sqe[42:44], "little")
    sqsize = int.from_bytes(sqe[44:46], "little")
    cattr = sqe[46]
    kato = int.from_bytes(sqe[48:52], "little")
    check_transfer_len(req, CONNECT_DATA_SIZE)
    if recfmt != 0:
        raise fail(StatusCode.CONNECT_FORMAT, f"Connect RECFMT {recfmt}", loc=_SQE_OFFSET_RECFMT)
    assert req.data is not None
    raw = bytes(req.data)
    # nvmet NUL-terminates both NQN fields and compares them as C strings.
    subnqn = _c_string(raw[CONNECT_DATA_OFFSET_SUBNQN : CONNECT_DATA_OFFSET_SUBNQN + 255])
    hostnqn = _c_string(raw[CONNECT_DATA_OFFSET_HOSTNQN : CONNECT_DATA_OFFSET_HOSTNQN + 255])
    hostid, cntlid = raw[0:16], int.from_bytes(raw[16:18], "little")
    # nvmet_alloc_ctrl keeps KATO in whole seconds, rounded up (in a u32).
    kato = kato_seconds(kato) * 1000
    flow_control = not cattr & CATTR_DISABLE_SQFLOW
    if q.port.strict and not hostnqn:
        raise invalid_param(CONNECT_DATA_OFFSET_HOSTNQN, True, "empty host NQN")
    if qid == 0:
        if cntlid != CNTLID_DYNAMIC:
            raise invalid_param(CONNECT_DATA_OFFSET_CNTLID, True,
                                f"admin Connect with CNTLID {cntlid:#x}")  # fmt: skip
        ctrl = _create_controller(q, subnqn, hostnqn, hostid, kato)
        if sqsize == 0:  # nvmet_install_queue
            _drop(q, ctrl)
            raise invalid_param(_SQE_OFFSET_SQSIZE, False, "SQSIZE 0")
        q.attach(ctrl, 0, sqsize + 1, flow_control)
        ctrl.touch(q.now())
        setup_controller_auth(q, ctrl, hostnqn)
        log.info("controller created cntlid=%s subsystem=%s host=%s port=%s kato_ms=%s%s",
                 ctrl.cntlid, subnqn, hostnqn, q.port.id, ctrl.kato_ms,
                 " authentication=required" if ctrl.auth is not None else "")  # fmt: skip
        return Reply(dw0=connect_result(q, ctrl, 0))
    ctrl = _find_controller(q, subnqn, hostnqn, cntlid)
    if q.port.strict and not ctrl.regs.ready:
        raise fail(StatusCode.CMD_SEQ_ERROR, "I/O queue Connect before CC.EN")
    limit = ctrl.io_queues_granted if q.port.strict else ctrl.max_io_queues
    if qid > limit:
        raise invalid_param(_SQE_OFFSET_QID, False, f"QID {qid} above {limit}")
    if sqsize == 0:
        raise invalid_param(_SQE_OFFSET_SQSIZE, False, "SQSIZE 0")
    if qid in ctrl.queues:
        raise fail(StatusCode.CMD_SEQ_ERROR, f"QID {qid} already connected", loc=_SQE_OFFSET_QID)
    if sqsize > ctrl.mqes:
        raise invalid_param(_SQE_OFFSET_SQSIZE, False, f"SQSIZE {sqsize} above MQES {ctrl.mqes}")
    q.attach(ctrl, qid, sqsize + 1, flow_control)
    return Reply(dw0=connect_result(q, ctrl, qid))


def _c_string(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("latin-1")


def _drop(q: QueueContext, ctrl: Controller) -> None:
    """Forget a controller whose admin queue could not be installed."""
    if ctrl.discovery:
        q.state.discovery_controllers.pop(ctrl.cntlid, None)
    ctrl.close("admin queue not installed")


def _create_controller(
    q: QueueContext, subnqn: str, hostnqn: str, hostid: bytes, kato: int
) -> Controller:
    state = q.state
    if subnqn in (DISCOVERY_NQN, state.discovery_nqn):  # nvmet_find_get_subsys
        cntlid = state.allocate_discovery_cntlid()
        ctrl = Controller(cntlid=cntlid, subsystem=None, port=q.port, hostnqn=hostnqn,
                          hostid=hostid, kato_ms=kato, mqes=DISCOVERY_MQES)  # fmt: skip
        state.discovery_controllers[cntlid] = ctrl
        return ctrl
    sub = state.subsystems.get(subnqn)
    if sub is None or not q.port.exposes(subnqn):
        raise invalid_param(CONNECT_DATA_OFFSET_SUBNQN, True, f"unknown subsystem {subnqn!r}")
    if not sub.host_allowed(hostnqn):
        raise fail(StatusCode.CONNECT_INVALID_HOST, f"host {hostnqn} not allowed",
                   result=CONNECT_DATA_OFFSET_HOSTNQN | _IATTR_DATA)  # fmt: skip
    free = sub.allocate_cntlid()
    if free is None:  # nvmet_alloc_ctrl: ida_alloc_range() failed
        raise fail(StatusCode.CONNECT_CTRL_BUSY,
                   f"no free controller ID in {sub.cntlid_min}..{sub.cntlid_max}")  # fmt: skip
    ctrl = Controller(cntlid=free, subsystem=sub, port=q.port, hostnqn=hostnqn,
                      hostid=hostid, kato_ms=kato, mqes=sub.queue_size - 1)  # fmt: skip
    sub.controllers[ctrl.cntlid] = ctrl
    return ctrl


def _find_controller(q: QueueContext, subnqn: str, hostnqn: str, cntlid: int) -> Controller:
    state = q.state
    if subnqn in (DISCOVERY_NQN, state.discovery_nqn):
        raise invalid_param(CONNECT_DATA_OFFSET_SUBNQN, True, "I/O queue on the discovery NQN")
    sub = state.subsystems.get(subnqn)
    if sub is None or not q.port.exposes(subnqn):
        raise invalid_param(CONNECT_DATA_OFFSET_SUBNQN, True, f"unknown subsystem {subnqn!r}")
    ctrl = sub.controllers.get(cntlid)
    if ctrl is None or ctrl.hostnqn != hostnqn or ctrl.closed:
        raise invalid_param(CONNECT_DATA_OFFSET_CNTLID, True, f"no controller {cntlid} for host")
    return ctrl


def execute_property_get(q: QueueContext, req: Request) -> ExecuteResult:
    ctrl = _admin_controller(q)
    check_transfer_len(req, 0)
    value = ctrl.regs.get(req.dword(11), bool(req.sqe[40] & 1))  # ATTRIB bit 0, as nvmet
    return Reply(dw0=value & 0xFFFFFFFF, dw1=value >> 32)


def execute_property_set(q: QueueContext, req: Request) -> ExecuteResult:
    ctrl = _admin_controller(q)
    check_transfer_len(req, 0)
    value = int.from_bytes(req.sqe[48:56], "little")
    was_ready = ctrl.regs.ready
    ctrl.regs.set(req.dword(11), bool(req.sqe[40] & 1), value)
    if was_ready and not ctrl.regs.ready:
        log.info("controller disabled cntlid=%s", ctrl.cntlid)
    if ctrl.regs.shutdown_complete:
        log.info("controller shutdown cntlid=%s host=%s", ctrl.cntlid, ctrl.hostnqn)
    return Reply()


def _admin_controller(q: QueueContext) -> Controller:
    if q.qid != 0 or q.controller is None:
        raise fail(StatusCode.INVALID_FIELD, "property access outside the admin queue")
    return q.controller


FABRICS_HANDLERS = {
    FabricsType.CONNECT: execute_connect,
    FabricsType.PROPERTY_GET: execute_property_get,
    FabricsType.PROPERTY_SET: execute_property_set,
}

__all__ = ["FABRICS_HANDLERS", "PENDING"]
