"""Fault injection on a queue's command path (the rules of target.control.faults).

A mixin of :class:`target.connection.QueueConnection`: matching a command against the fault
rules, then answering with a status, closing, stalling, holding a write back as a ghost, or
delaying, dropping or corrupting the completion.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import trio

from nvmeof.constants import DISCOVERY_NQN, AdminOpcode, is_host_to_controller
from nvmeof.errors import CommandError
from nvmeof.status import status_word
from nvmeof.tcp.controller import ConnState, ControllerConnection
from target.commands.request import Execute, QueueContext, Reply, Request

if TYPE_CHECKING:
    from target.control.faults import FaultRule
    from target.controller import Controller
    from target.port import Port
    from target.state import TargetState

log = logging.getLogger("nvmeof.target")


class FaultInjection:
    """What a queue does when a fault rule matches one of its commands."""

    state: TargetState
    port: Port
    controller: Controller | None
    qid: int
    peer: str
    conn: ControllerConnection
    spawn_detached: Callable[..., object] | None
    _nursery: trio.Nursery | None
    _cancel: trio.CancelScope
    _rx_resume_at: float
    _tx_resume_at: float
    ended_at: float

    def _account(self, req: Request, status: int) -> None: ...
    def _respond(self, cid: int, status: int, dw0: int, dw1: int,
                 corrupt: bool = False) -> None: ...  # fmt: skip
    def _complete(self, req: Request, reply: Reply) -> None: ...
    def _fail(self, req: Request, err: CommandError) -> None: ...
    def _never_answered(self) -> None: ...
    def reset(self, reason: str) -> None: ...
    def _kick(self) -> None: ...
    async def _flush(self) -> None: ...

    def _fault(self, req: Request, execute: Execute) -> bool:
        """Match the fault rules; True when a fault took the command over."""
        ctrl = self.controller
        assert ctrl is not None
        rule = self.state.faults.match(
            port=self.port.id, subsystem=ctrl.subsystem.nqn if ctrl.subsystem else DISCOVERY_NQN,
            nsid=req.nsid, opcode=req.opcode, host=ctrl.hostnqn, qid=self.qid,
            fctype=req.sqe[4] if req.opcode == AdminOpcode.FABRICS else None,
        )  # fmt: skip
        if rule is None:
            return False
        self.state.fault_fired(rule, f"peer={self.peer} qid={self.qid} cid={req.cid} "
                               f"opcode={req.opcode:#x}")  # fmt: skip
        req.fault = rule
        action = rule.action
        if action == "status":
            word = status_word(rule.status, dnr=rule.dnr)
            self._account(req, word)
            self._respond(req.cid, word, 0, 0)
            return True
        if action == "close":
            self.reset(f"fault rule {rule.id}: close")
            return True
        if action == "stall":
            resume = trio.current_time() + rule.duration_ms / 1000
            if rule.direction == "rx":
                self._rx_resume_at = resume
            else:
                self._tx_resume_at = resume
            return False
        if action == "ghost-write" and is_write(req) and self.spawn_detached is not None:
            self.spawn_detached(self._ghost_write, req, execute, rule.delay_ms / 1000)
            return True
        return False  # delay, drop and corruption apply when the command completes

    def _complete_with_fault(self, req: Request, reply: Reply, fault: FaultRule) -> bool:
        if fault.action == "drop":
            self._never_answered()
            return True
        if fault.action == "delay" and self._nursery is not None:
            req.fault = None
            self._nursery.start_soon(self._complete_after, req, reply, fault.delay_ms / 1000)
            return True
        return False

    async def _complete_after(self, req: Request, reply: Reply, delay: float) -> None:
        await trio.sleep(delay)
        self._complete(req, reply)
        await self._flush()

    async def _ghost_write(self, req: Request, execute: Execute, delay: float) -> None:
        """A write held back, then executed even if its connection is gone by now."""
        await trio.sleep(delay)
        try:
            result = execute(cast("QueueContext", self), req)  # the queue it came from
            reply = result if isinstance(result, Reply) else await result  # type: ignore[misc]
        except CommandError as err:  # refused when it finally ran (e.g. preempted and aborted)
            log.info("ghost write cid=%s refused: %s", req.cid, str(err))
            if not self._cancel.cancel_called and self.conn.state is ConnState.ESTABLISHED:
                req.fault = None
                self._fail(req, err)
                self._kick()
            return
        except Exception as err:  # a ghost must never take the target down
            log.warning("ghost write cid=%s failed: %s", req.cid, str(err))
            return
        alive = not self._cancel.cancel_called and self.conn.state is ConnState.ESTABLISHED
        log.info("ghost write landed peer=%s qid=%s cid=%s connection=%s", self.peer, self.qid,
                 req.cid, "alive" if alive else "gone")  # fmt: skip
        ctrl, late = self.controller, trio.current_time() - self.ended_at
        cqt_ms = ctrl.subsystem.cqt_ms if ctrl is not None and ctrl.subsystem is not None else 0
        if late > cqt_ms / 1000:  # ended_at is +inf while the connection lives
            # Everything else a lost connection was executing is done when it ends (its tasks
            # are cancelled, file I/O is awaited): only this fault outlives the promise.
            log.warning("ghost write landed %.0f ms after its connection was lost, beyond the "
                        "command quiesce time of %s ms it advertises: a deliberate violation "
                        "(fault rule ghost-write)", late * 1000, cqt_ms)  # fmt: skip
        if alive:
            req.fault = None
            self._complete(req, reply)
            self._kick()


def is_write(req: Request) -> bool:
    """A command that carries data to the controller (a write, Connect, Property Set...)."""
    opcode = req.opcode
    return is_host_to_controller(opcode, req.sqe[4] if opcode == AdminOpcode.FABRICS else 0)
