"""Command routing: which handlers serve a command on this queue, or which status refuses it.

Queue-level checks come first, as in nvmet's ``nvmet_req_init``: PSDT/FUSE, Connect before any
other command, CC.EN before non-fabrics admin commands, admin vs I/O opcode tables, and the
in-capsule data rules (PROTOCOL.md 2.3).
"""

from __future__ import annotations

from nvmeof.constants import (
    ADMIN_IN_CAPSULE_SIZE,
    AdminOpcode,
    FabricsType,
    SglType,
    is_host_to_controller,
)
from nvmeof.status import StatusCode
from nvmeof.wire.fast import SGL, SGL_OFFSET
from target.commands.admin import ADMIN_HANDLERS, DISCOVERY_ADMIN_OPCODES
from target.commands.fabrics import FABRICS_HANDLERS
from target.commands.io import IO_HANDLERS
from target.commands.request import Execute, Prepare, QueueContext, Request, fail

_PSDT_SGL = 0x40


def route(q: QueueContext, req: Request) -> tuple[Prepare | None, Execute]:
    """The (prepare, execute) pair for ``req``.

    Raises:
        CommandError: the command is refused with the returned status.
    """
    sqe = req.sqe
    opcode = req.opcode
    fabrics = opcode == AdminOpcode.FABRICS
    fctype = sqe[4] if fabrics else 0
    if not fabrics and sqe[1] & 0xC3 != _PSDT_SGL:
        raise fail(StatusCode.INVALID_FIELD, f"FLAGS {sqe[1]:#x}: only PSDT 01b, no FUSE")
    _check_data(q, req, opcode, fctype)
    ctrl = q.controller
    if fabrics:
        handler = FABRICS_HANDLERS.get(fctype)  # type: ignore[call-overload]
        if handler is None:
            raise fail(StatusCode.INVALID_OPCODE, f"fabrics command type {fctype:#x}")
        if ctrl is None and fctype != FabricsType.CONNECT:
            raise fail(StatusCode.CMD_SEQ_ERROR, "command before Connect")
        return None, handler
    if ctrl is None:
        raise fail(StatusCode.CMD_SEQ_ERROR, "command before Connect")
    if q.qid == 0:
        if ctrl.discovery and opcode not in DISCOVERY_ADMIN_OPCODES:
            raise fail(StatusCode.INVALID_OPCODE, f"admin opcode {opcode:#x} on discovery")
        admin = ADMIN_HANDLERS.get(opcode)  # type: ignore[call-overload]
        if admin is None:
            raise fail(StatusCode.INVALID_OPCODE, f"admin opcode {opcode:#x}")
        if not ctrl.regs.ready:
            raise fail(StatusCode.CMD_SEQ_ERROR, "admin command before CC.EN")
        return None, admin
    io = IO_HANDLERS.get(opcode)  # type: ignore[call-overload]
    if io is None:
        raise fail(StatusCode.INVALID_OPCODE, f"I/O opcode {opcode:#x}")
    if not ctrl.regs.ready:
        raise fail(StatusCode.CMD_SEQ_ERROR, "I/O before CC.EN")
    return io  # type: ignore[no-any-return]


def _check_data(q: QueueContext, req: Request, opcode: int, fctype: int) -> None:
    _, length, sgl_type = SGL.unpack_from(req.sqe, SGL_OFFSET)
    if sgl_type not in (SglType.TRANSPORT_DATA_BLOCK, SglType.DATA_BLOCK_OFFSET):
        raise fail(StatusCode.SGL_INVALID_TYPE, f"SGL type {sgl_type:#x}")
    if req.data is None:
        if sgl_type == SglType.DATA_BLOCK_OFFSET and length:
            raise fail(StatusCode.SGL_INVALID_DATA, "in-capsule SGL without in-capsule data")
        return
    if not is_host_to_controller(opcode, fctype):
        raise fail(StatusCode.INVALID_FIELD, "in-capsule data for a controller-to-host command")
    if sgl_type != SglType.DATA_BLOCK_OFFSET or len(req.data) != length:
        raise fail(StatusCode.SGL_INVALID_DATA, f"{len(req.data)} in-capsule bytes, SGL {length}")
    limit = (
        ADMIN_IN_CAPSULE_SIZE
        if q.qid <= 0 or opcode == AdminOpcode.FABRICS
        else max(q.port.inline_data_size, 0)
    )
    if length > limit:
        raise fail(StatusCode.SGL_INVALID_OFFSET, f"{length} in-capsule bytes exceed {limit}")
