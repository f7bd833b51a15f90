"""What command handlers receive and return.

Handlers follow nvmet's parse -> execute split: ``prepare`` validates a command before any data
moves (so a bad write is failed without an R2T), ``execute`` runs it once its data is there.
``execute`` returns a :class:`Reply`, :data:`PENDING` (completed later, e.g. an AER), or an
awaitable of a Reply for storage that must not block the connection (the file backend).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from nvmeof.errors import CommandError
from nvmeof.status import Status, StatusCode

if TYPE_CHECKING:
    from nvmeof.auth.controller import QueueAuth
    from target.control.faults import FaultRule
    from target.controller import Controller
    from target.port import Port
    from target.state import TargetState


class Request:
    """One command being served on a queue."""

    __slots__ = ("cid", "data", "data_digest_ok", "fault", "nsid", "opcode", "received_at",
                 "sqe", "transfer_length")  # fmt: skip

    def __init__(self, cid: int, sqe: bytes, data: bytes | bytearray | None, length: int) -> None:
        self.cid = cid
        self.sqe = sqe
        self.opcode = sqe[0]
        self.nsid = int.from_bytes(sqe[4:8], "little")
        self.data = data
        self.transfer_length = length
        self.data_digest_ok = True
        self.fault: FaultRule | None = None
        self.received_at = 0.0  # perf_counter() of the receive batch (latency histogram)

    def dword(self, index: int) -> int:
        """CDW``index`` (10..15 are the command-specific ones)."""
        off = index * 4
        return int.from_bytes(self.sqe[off : off + 4], "little")


@dataclass(slots=True)
class Reply:
    """A command's completion: status word, result dwords and, for reads, the data."""

    status: int = 0
    dw0: int = 0
    dw1: int = 0
    data: memoryview | bytes | bytearray | None = None


class Pending:
    def __repr__(self) -> str:
        return "PENDING"


#: Returned by a handler whose completion is sent later by someone else.
PENDING = Pending()

ExecuteResult = Reply | Pending | Awaitable[Reply]


class QueueContext(Protocol):
    """The queue a command arrived on, as handlers see it."""

    qid: int
    controller: Controller | None
    port: Port
    state: TargetState
    sqsize: int
    sq_flow_control: bool
    #: The address the host connected to (for wildcard-bound ports in the discovery log).
    local_addr: str
    #: The one command slot of a queue before Connect has been used (target.dispatch).
    precommand_used: bool
    #: The queue's DH-HMAC-CHAP transaction when its controller authenticates (target.commands
    #: .auth), and when that transaction's timer runs out.
    auth: QueueAuth | None
    auth_deadline: float

    def now(self) -> float: ...
    def fatal(self, reason: str) -> None: ...
    def attach(
        self, controller: Controller, qid: int, sqsize: int, sq_flow_control: bool
    ) -> None: ...


Prepare = Callable[[QueueContext, Request], None]
Execute = Callable[[QueueContext, Request], ExecuteResult]


def fail(code: int, message: str = "", *, dnr: bool = True, result: int = 0,
         loc: int | None = None) -> CommandError:  # fmt: skip
    """A CommandError for ``code`` (kernel encoding), DNR set unless asked otherwise; ``loc``:
    the SQE byte offset of the field at fault, where nvmet records one (the More bit)."""
    return CommandError(Status(code, dnr=dnr), message, result=result, loc=loc)


# SQE byte offsets nvmet uses as error locations (offsetof(struct nvme_common_command, ...)).
LOC_OPCODE, LOC_FLAGS, LOC_FCTYPE, LOC_NSID, LOC_DPTR, LOC_CDW10 = 0, 1, 4, 4, 24, 40


def check_transfer_len(req: Request, expected: int) -> None:
    """nvmet_check_transfer_len: the SGL must describe exactly what the command moves."""
    if req.transfer_length != expected:
        raise fail(StatusCode.SGL_INVALID_DATA,
                   f"SGL of {req.transfer_length} bytes, the command moves {expected}",
                   loc=LOC_DPTR)  # fmt: skip


INVALID_FIELD = StatusCode.INVALID_FIELD
