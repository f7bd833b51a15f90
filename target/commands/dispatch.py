"""Command routing: which handlers serve a command on this queue, or which status refuses it.

The rule (docs/TOLERANCE.md): refuse exactly what the Linux target refuses, with its status and
in its order, and accept the rest. The order is nvmet's ``nvmet_req_init`` (FUSE, PSDT, then
``nvmet_parse_connect_cmd`` / ``nvmet_parse_io_cmd`` / ``nvmet_parse_admin_cmd``), preceded by
what nvmet-tcp's receive path decides before a command is parsed (``nvmet_tcp_done_recv_pdu``,
``nvmet_tcp_map_data``, ``nvmet_tcp_handle_req_failure``): whether the capsule's in-capsule data
is read at all. A port with ``strict = true`` adds the specification's checks that nvmet does
not make (see :func:`_strict_checks`).
"""

from __future__ import annotations

import logging

from nvmeof.constants import AdminOpcode, FabricsType, SglType, is_host_to_controller
from nvmeof.status import StatusCode
from nvmeof.wire.fast import SGL, SGL_OFFSET
from target.commands.admin import ADMIN_HANDLERS, DISCOVERY_ADMIN_OPCODES
from target.commands.auth import AUTH_HANDLERS, check_authenticated
from target.commands.fabrics import FABRICS_HANDLERS
from target.commands.io import IO_HANDLERS, check_namespace
from target.commands.request import (
    LOC_FCTYPE,
    LOC_FLAGS,
    LOC_OPCODE,
    Execute,
    Prepare,
    QueueContext,
    Request,
    fail,
)
from target.commands.reservation import RESERVATION_HANDLERS

log = logging.getLogger("nvmeof.target")

_PSDT_MASK, _PSDT_SGL, _FUSE_MASK = 0xC0, 0x40, 0x03
_ADMIN_FABRICS = frozenset({FabricsType.PROPERTY_GET, FabricsType.PROPERTY_SET})
_AUTH = frozenset({0x05, 0x06})  # Authentication Send / Receive
_LOC_AUTH_SECP = 41
#: nvmet-tcp refuses a transfer above 4 MiB (Data SGL Length Invalid, nothing logged), before
#: the command runs: observed on Linux 6.1 and 6.12 by the differential cases "Property Get
#: with an SGL of ..." and "Read of ..." (4 MiB passes, 4 MiB + 512 does not).
MAX_SGL_LENGTH = 4 << 20


class CloseQueue(Exception):
    """The connection ends without an answer to this capsule (nvmet: a fatal queue error)."""


def route(q: QueueContext, req: Request) -> tuple[Prepare | None, Execute]:
    """The (prepare, execute) pair for ``req``.

    Raises:
        CommandError: the command is refused with the returned status.
        CloseQueue: the connection (and its controller) must be closed without a response.
    """
    sqe = req.sqe
    opcode = req.opcode
    fabrics = opcode == AdminOpcode.FABRICS
    fctype = sqe[4] if fabrics else 0
    if q.controller is None:
        # nvmet-tcp owns one command for a queue that is not connected yet, and only a
        # successful Connect gives it more (nvmet_tcp_put_cmd never frees the connect command).
        if q.precommand_used:
            raise CloseQueue("a second command on a queue that is not connected")
        q.precommand_used = True
    if q.port.strict:
        _strict_checks(q, req, opcode, fctype)
    handlers = _parse(q, req, opcode, fabrics, fctype)
    _map_data(q, req, opcode, fctype)
    return handlers


def _parse(q: QueueContext, req: Request, opcode: int, fabrics: bool,
           fctype: int) -> tuple[Prepare | None, Execute]:  # fmt: skip
    """nvmet_req_init: FUSE, PSDT, then the connect / I/O / admin parsers."""
    flags = req.sqe[1]
    if flags & _FUSE_MASK:
        raise fail(StatusCode.INVALID_FIELD, f"FUSE {flags & 3}", loc=LOC_FLAGS)
    if flags & _PSDT_MASK != _PSDT_SGL:
        raise fail(StatusCode.INVALID_FIELD, f"PSDT {flags >> 6}: SGLs only", loc=LOC_FLAGS)
    ctrl = q.controller
    if ctrl is None:  # nvmet_parse_connect_cmd
        if not fabrics:
            raise fail(StatusCode.INVALID_OPCODE, f"opcode {opcode:#x} before Connect",
                       loc=LOC_OPCODE)  # fmt: skip
        if fctype != FabricsType.CONNECT:
            raise fail(StatusCode.INVALID_OPCODE, f"fabrics type {fctype:#x} before Connect",
                       loc=LOC_FCTYPE)  # fmt: skip
        return None, FABRICS_HANDLERS[FabricsType.CONNECT]
    if fabrics and fctype in _AUTH:
        if q.auth is not None:  # this queue's controller authenticates its host
            return None, AUTH_HANDLERS[fctype]
        # No DH-HMAC-CHAP configured: nvmet_execute_auth_send/receive refuse the SECP.
        raise fail(StatusCode.INVALID_FIELD, f"authentication (type {fctype:#x}) not set up",
                   loc=_LOC_AUTH_SECP)  # fmt: skip
    if q.qid != 0:  # nvmet_parse_io_cmd
        if fabrics:
            raise fail(StatusCode.INVALID_OPCODE, f"fabrics type {fctype:#x} on an I/O queue",
                       loc=LOC_FCTYPE)  # fmt: skip
        if q.auth is not None:
            check_authenticated(q, f"I/O opcode {opcode:#x}")
        if not ctrl.regs.ready:
            raise fail(StatusCode.CMD_SEQ_ERROR, "I/O while the controller is not ready")
        ns = check_namespace(q, req)  # the namespace and its ANA state come before the opcode
        io = IO_HANDLERS.get(opcode)  # type: ignore[call-overload]
        resv = ns.reservations
        if io is None:
            io = RESERVATION_HANDLERS.get(opcode) if resv is not None else None
            if io is None:
                raise fail(StatusCode.INVALID_OPCODE, f"I/O opcode {opcode:#x}", loc=LOC_OPCODE)
        # nvmet_pr_check_cmd_access, once the opcode parsed: before any data moves.
        if resv and resv.holder is not None and resv.conflicts_with(ctrl.hostid, opcode):
            raise fail(StatusCode.RESERVATION_CONFLICT,
                       f"opcode {opcode:#x} against a type {resv.rtype} reservation", loc=LOC_OPCODE)  # fmt: skip
        return io  # type: ignore[no-any-return]
    # nvmet_parse_admin_cmd
    if fabrics:
        if fctype not in _ADMIN_FABRICS:
            raise fail(StatusCode.INVALID_OPCODE, f"fabrics type {fctype:#x} on a connected "
                       "admin queue", loc=LOC_FCTYPE)  # fmt: skip
        return None, FABRICS_HANDLERS[fctype]  # type: ignore[index]
    if q.auth is not None:
        check_authenticated(q, f"admin opcode {opcode:#x}")
    if ctrl.discovery:  # nvmet_parse_discovery_cmd
        if not ctrl.regs.ready or opcode not in DISCOVERY_ADMIN_OPCODES:
            raise fail(StatusCode.INVALID_OPCODE, f"admin opcode {opcode:#x} on discovery",
                       loc=LOC_OPCODE)  # fmt: skip
        return None, ADMIN_HANDLERS[opcode]  # type: ignore[index]
    if not ctrl.regs.ready:
        raise fail(StatusCode.CMD_SEQ_ERROR, "admin command while the controller is not ready")
    admin = ADMIN_HANDLERS.get(opcode)  # type: ignore[call-overload]
    if admin is None:
        raise fail(StatusCode.INVALID_OPCODE, f"admin opcode {opcode:#x}", loc=LOC_OPCODE)
    return None, admin


def _map_data(q: QueueContext, req: Request, opcode: int, fctype: int) -> None:
    """nvmet_tcp_map_data, once the command parsed: the transport's view of the SGL. (Whether
    in-capsule data was read at all, the framer decided the way nvmet does.)"""
    _, length, sgl_type = SGL.unpack_from(req.sqe, SGL_OFFSET)
    if not length:
        return
    if length > MAX_SGL_LENGTH and not q.port.strict:
        raise fail(StatusCode.SGL_INVALID_DATA, f"SGL of {length} bytes exceeds 4 MiB")
    if sgl_type == SglType.DATA_BLOCK_OFFSET:
        if not is_host_to_controller(opcode, fctype):
            raise fail(StatusCode.INVALID_FIELD, "in-capsule SGL on a read-direction command")
        if length > q.port.inline_data_size:
            raise fail(StatusCode.SGL_INVALID_OFFSET,
                       f"{length} in-capsule bytes exceed {q.port.inline_data_size}")  # fmt: skip


def _strict_checks(q: QueueContext, req: Request, opcode: int, fctype: int) -> None:
    """What the specification requires and nvmet does not check (a port's ``strict`` mode)."""
    _, length, sgl_type = SGL.unpack_from(req.sqe, SGL_OFFSET)
    if length and sgl_type not in (SglType.TRANSPORT_DATA_BLOCK, SglType.DATA_BLOCK_OFFSET):
        log.info("strict: SGL type %#x refused port=%s", sgl_type, q.port.id)
        raise fail(StatusCode.SGL_INVALID_TYPE, f"SGL type {sgl_type:#x}")
    fabrics = opcode == AdminOpcode.FABRICS
    if fabrics and fctype == FabricsType.CONNECT and q.controller is not None:
        log.info("strict: second Connect refused port=%s", q.port.id)
        raise fail(StatusCode.CMD_SEQ_ERROR, "queue already connected")
