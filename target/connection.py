"""Trio adapter for one TCP connection (= one NVMe queue) on the target.

One reader task per connection: it receives bytes, feeds the sans-IO
:class:`~nvmeof.tcp.controller.ControllerConnection`, serves every complete command inline
(RAM/null storage never awaits), and flushes all queued PDUs in one send. Only commands that
must wait (file I/O) get a task, in this connection's nursery. Sends go through one lock.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import TYPE_CHECKING

import trio

from nvmeof.constants import (
    AdminOpcode,
    IoOpcode,
)
from nvmeof.errors import CommandError, TransportError
from nvmeof.properties import CSTS_CFS
from nvmeof.status import MORE_BIT, StatusCode, status_word
from nvmeof.tcp.controller import ConnState, ControllerConnection
from nvmeof.tcp.events import (
    CommandReceived,
    ConnectionEstablished,
    DataReceived,
    TermReqReceived,
)
from target.backends import BackendClosed
from target.commands.admin import MAX_TRANSFER
from target.commands.dispatch import CloseQueue, route
from target.commands.request import Execute, Pending, Reply, Request, fail
from target.drain import QueueDrain
from target.faultpath import FaultInjection, is_write
from target.liveness import Liveness
from target.plainio import PlainIo
from target.state import IO_OPCODES
from tlsstream import TlsStream, direct

if TYPE_CHECKING:
    from nvmeof.auth.controller import QueueAuth
    from target.capture import ConnectionCapture
    from target.controller import Controller
    from target.port import Port
    from target.state import TargetState

log = logging.getLogger("nvmeof.target")

MAX_H2C_DATA = 128 * 1024
#: A connection must send its ICReq within this many seconds (the host waits 10 s for ICResp).
ICREQ_TIMEOUT = 30.0
_TRANSIENT_TRANSPORT_ERROR = status_word(StatusCode.TRANSIENT_TR_ERR)
_INTERNAL_ERROR = status_word(StatusCode.INTERNAL, dnr=True)
_AER = AdminOpcode.ASYNC_EVENT_REQUEST
_KEEP_ALIVE = AdminOpcode.KEEP_ALIVE
_READ = IO_OPCODES + IoOpcode.READ
_WRITE = IO_OPCODES + IoOpcode.WRITE
_MOVES_DATA = frozenset({_READ, _WRITE})
_NO_BATCH = float("nan")  # _batch_at between batches: no request's arrival time is this object


class QueueConnection(Liveness, QueueDrain, FaultInjection, PlainIo):
    """Serves one queue: implements the handlers' :class:`~target.commands.request.QueueContext`
    and the controller's :class:`~target.controller.QueueHandle`. (Liveness implements the
    ``blackholed`` that QueueDrain only declares, so it comes first; FaultInjection and PlainIo
    only declare what they call, and must not shadow QueueDrain's methods.)"""

    def __init__(self, state: TargetState, port: Port, stream: trio.SocketStream | TlsStream,
                 spawn_detached: Callable[..., object] | None = None) -> None:  # fmt: skip
        self.state = state
        #: Starts a task that outlives this connection (ghost writes).
        self.spawn_detached = spawn_detached
        self.port = port
        self.stream = stream
        # Receives go straight into the framer's buffer; plain TCP through the descriptor.
        self._recv_into = direct.receiver(stream)
        self._plain_stream = stream if isinstance(stream, trio.SocketStream) else None
        #: The TLS PSK identity the host used, None on plaintext.
        self.tls_identity = (
            (stream.peer_identity or b"").decode("utf-8", "replace")
            if isinstance(stream, TlsStream)
            else None
        )
        self.qid = -1
        self.controller: Controller | None = None
        self.sqsize = 0
        self.sq_flow_control = True
        self.conn = ControllerConnection(
            max_h2c_data=MAX_H2C_DATA,
            # nvmet reads in-capsule data up to the port's size, on every queue.
            max_in_capsule=port.inline_data_size,
            strict=port.strict,
        )
        #: nvmet-tcp has one command for a queue until Connect succeeds (target.dispatch).
        self.precommand_used = False
        self.auth: QueueAuth | None = None  # target.commands.auth
        self.auth_deadline = float("inf")
        self._fatal_reason = ""
        self._deaf = False
        try:
            host, port_number = stream.socket.getpeername()[:2]
            self.peer = f"{host}:{port_number}"
            self.local_addr = str(stream.socket.getsockname()[0])
        except OSError:
            self.peer, self.local_addr = "?", ""
        self._sqhd = 0
        self._awaiting_data: dict[int, tuple[Request, Execute]] = {}
        self._send_lock = trio.Lock()
        self._cancel = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self.close_reason = ""
        self.ended_at = math.inf  # when the connection ended (every command quiesced by then)
        self.commands = 0
        # Metrics counters (target.control.metrics reads when scraped); ``commands`` counts those
        # received. The commands of a receive batch completed while it is served are timed
        # together by _end_batch: ``completed - _batch_base`` of them.
        self.stats = state.port_stats(port.id)
        self.completed = 0
        self._received_at = 0.0
        self._batch_at = _NO_BATCH  # _received_at while the batch is being served
        self._batch_base = 0
        self._opbase = 0
        self._read_bytes: dict[int, int] = {}
        self._written_bytes: dict[int, int] = {}
        self._flowing = trio.Event()  # cleared while the port is blackholed
        self._flowing.set()
        self._rx_resume_at = 0.0
        self._tx_resume_at = 0.0
        self._keepalive_sleep: trio.CancelScope | None = None  # the watcher's, admin queue only
        #: Packet capture of this connection (target.capture), None when not capturing.
        self.capture: ConnectionCapture | None = None

    # -- QueueContext --------------------------------------------------------------------------

    def now(self) -> float:
        return trio.current_time()

    def attach(self, controller: Controller, qid: int, sqsize: int, sq_flow_control: bool) -> None:
        self.controller = controller
        self.qid = qid
        self.sqsize = sqsize
        self.sq_flow_control = sq_flow_control
        controller.queues[qid] = self
        if qid and controller.subsystem is not None:
            self._opbase = IO_OPCODES
            counts = self.state.subsystem_bytes(controller.subsystem.nqn)
            self._read_bytes, self._written_bytes = counts.read, counts.written
        if qid == 0 and self._nursery is not None:
            controller.keepalive_rearmed = self._rearm_keepalive
            self._nursery.start_soon(self._watch_keepalive, controller)

    # -- QueueHandle ---------------------------------------------------------------------------

    def complete_async_event(self, cid: int, dw0: int) -> None:
        if self.conn.state is ConnState.ESTABLISHED:
            self.stats.ok[_AER] += 1
            self.completed += 1
            self._batch_base += 1  # AERs wait by design: no latency sample
            self._respond(cid, 0, dw0, 0)
            self._kick()

    def close(self, reason: str) -> None:
        if not self.close_reason:
            self.close_reason = reason
        self._cancel.cancel()

    @property
    def inflight(self) -> int:
        """Commands received and not completed yet (outstanding AERs left out: they wait by
        design)."""
        ctrl = self.controller
        waiting = ctrl.aen.outstanding if ctrl is not None and self.qid == 0 else 0
        return max(0, self.commands - self.completed - waiting)

    # -- tasks ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until the host disconnects, a fatal error, or :meth:`close`."""
        try:
            with self._cancel:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    await self._receive_loop()
                    nursery.cancel_scope.cancel()
        finally:
            self.ended_at = trio.current_time()
            self._check_idle()  # a drain waiting on this connection has nothing left to wait for
            self._detach()
            if self.capture is not None:
                self.capture.close(self.stream.socket, target_closed=bool(self.close_reason))
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
            log.debug("queue closed peer=%s qid=%s reason=%s", self.peer, self.qid,
                      self.close_reason or "peer closed")  # fmt: skip

    async def _receive_loop(self) -> None:
        conn = self.conn
        with trio.move_on_after(ICREQ_TIMEOUT) as icreq_wait:
            while conn.state is ConnState.AWAIT_ICREQ:
                if not await self._receive_and_serve():
                    return
        if icreq_wait.cancelled_caught:
            self.close_reason = "no ICReq"
            return
        while await self._receive_and_serve():
            pass
        while self._deaf:  # read nothing more, but notice when the host hangs up
            try:
                if not (discarded := await self.stream.receive_some(65536)):
                    return
                if self.capture is not None:
                    self.capture.received(discarded)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    async def _receive_and_serve(self) -> bool:
        conn = self.conn
        if not self._flowing.is_set():
            await self._flowing.wait()
        if self._rx_resume_at and self._rx_resume_at > trio.current_time():  # a stall fault
            await trio.sleep_until(self._rx_resume_at)
        try:
            # Straight into the framer's preallocated buffer: no per-receive allocation.
            buffer = conn.reader.get_buffer()
            nbytes = await self._recv_into(buffer)
        except (OSError, trio.ClosedResourceError):
            return False
        if not nbytes:
            return False
        if self.capture is not None:
            self.capture.received(buffer[:nbytes])
        self._received_at = self._batch_at = perf_counter()  # when this batch arrived
        self._batch_base = self.completed
        conn.reader.commit(nbytes)
        plain = self._plain_io_ready()
        try:
            while True:
                if plain:
                    self._serve_plain_io()  # the common Reads and Writes (target.plainio)
                if (event := conn.next_event()) is None:
                    break
                if not self._on_event(event):
                    return False
                if self._fatal_reason:  # what was answered before it still goes out
                    await self._flush()
                    self._end_association(self._fatal_reason)
                    return False
        except TransportError as err:
            log.warning("protocol error peer=%s qid=%s: %s", self.peer, self.qid, str(err))
            if conn.state is ConnState.TERMINATED:  # a C2HTermReq is queued
                self.state.termreqs_sent += 1
            self.close_reason = f"protocol error: {err}"
            await self._flush()
            self._end_association(self.close_reason)
            return False
        finally:
            self._end_batch()
        await self._flush()
        return True

    def _on_event(self, event: object) -> bool:
        if isinstance(event, CommandReceived):
            self._serve(event)
        elif isinstance(event, DataReceived):
            req, execute = self._awaiting_data.pop(event.ttag)
            if not event.data_digest_ok:
                self._account(req, _TRANSIENT_TRANSPORT_ERROR)
                self._respond(req.cid, _TRANSIENT_TRANSPORT_ERROR, 0, 0)
            else:
                self._execute(req, execute)
        elif isinstance(event, ConnectionEstablished):
            log.debug("icreq peer=%s port=%s hdgst=%s ddgst=%s", self.peer, self.port.id,
                      event.header_digest, event.data_digest)  # fmt: skip
        elif isinstance(event, TermReqReceived):
            log.warning("H2CTermReq peer=%s fes=%#x fei=%#x", self.peer, event.fes, event.fei)
            self.close_reason = "host sent a TermReq"
            return False
        return True

    # -- commands ------------------------------------------------------------------------------

    def _serve(self, event: CommandReceived) -> None:
        self.commands += 1
        if self.controller is not None:
            self.controller.traffic_seen = True  # keep-alive (target.liveness)
        req = Request(event.cid, event.sqe, event.data, event.transfer_length)
        req.received_at = self._received_at
        if self.sq_flow_control and self.sqsize:
            self._sqhd = (self._sqhd + 1) % self.sqsize
        if self.draining and not (self.qid == 0 and req.opcode == _KEEP_ALIVE):
            # A graceful stop: not started, never answered; when the connection closes the
            # host retries it elsewhere. Keep Alive is answered so the host keeps the
            # controller while the commands started before finish.
            self._never_answered()
            return
        try:
            # nvmet keys a command's data by its TTAG and never checks CIDs for uniqueness.
            prepare, execute = route(self, req)
            if req.data is None and req.transfer_length and is_write(req):
                if self.port.strict:
                    _check_r2t_length(req)  # beyond MDTS (else the 4 MiB cap of dispatch)
                if prepare is not None and self.port.strict:
                    prepare(self, req)  # nvmet asks for the data first and checks it after
                buffer = bytearray(req.transfer_length)
                req.data = buffer
                ttag = self.conn.request_data(req.cid, buffer)
                self._awaiting_data[ttag] = (req, execute)
                return
        except CommandError as err:
            self._fail(req, err)
            return
        except CloseQueue as why:
            log.info("queue closed peer=%s qid=%s: %s", self.peer, self.qid, why)
            self._fatal(str(why))
            return
        if not event.data_digest_ok:
            self._account(req, _TRANSIENT_TRANSPORT_ERROR)
            self._respond(req.cid, _TRANSIENT_TRANSPORT_ERROR, 0, 0)
            return
        self._execute(req, execute)

    def _execute(self, req: Request, execute: Execute) -> None:
        faults = self.state.faults
        if faults.rules and self.controller is not None and self._fault(req, execute):
            return
        try:
            result = execute(self, req)
        except CommandError as err:
            self._fail(req, err)
            return
        except Exception:
            log.exception("handler failed peer=%s qid=%s opcode=%#x", self.peer, self.qid,
                          req.opcode)  # fmt: skip
            self._account(req, _INTERNAL_ERROR)
            self._respond(req.cid, _INTERNAL_ERROR, 0, 0)
            return
        if isinstance(result, Reply):
            self._complete(req, result)
        elif not isinstance(result, Pending):
            assert self._nursery is not None
            self._nursery.start_soon(self._complete_later, req, result)

    async def _complete_later(self, req: Request, work: Awaitable[Reply]) -> None:
        try:
            reply = await work
        except CommandError as err:
            self._fail(req, err)
        except BackendClosed as err:  # its namespace was removed while it ran: not an error
            log.debug("command raced a namespace removal peer=%s: %s", self.peer, str(err))
            self._fail(req, fail(StatusCode.INVALID_NS, str(err)))
        except OSError as err:
            log.error("storage error peer=%s qid=%s: %s", self.peer, self.qid, str(err))
            if self.controller is not None:
                self.controller.stats.media_errors += 1
            self._account(req, _INTERNAL_ERROR)
            self._respond(req.cid, _INTERNAL_ERROR, 0, 0)
        else:
            self._complete(req, reply)
        await self._flush()

    def _complete(self, req: Request, reply: Reply) -> None:
        fault = req.fault
        if fault is not None and self._complete_with_fault(req, reply, fault):
            return
        self._account(req, reply.status)
        if reply.data is not None and reply.status == 0:
            success = not self.sq_flow_control and not reply.dw0 and not reply.dw1
            corrupt = fault is not None and fault.action == "corrupt-ddgst"
            self.conn.send_data(req.cid, reply.data, success=success, corrupt_digest=corrupt)
            if success:
                return
        corrupt = fault is not None and fault.action == "corrupt-hdgst"
        self._respond(req.cid, reply.status, reply.dw0, reply.dw1, corrupt)
        if reply.status and self.controller is not None:
            self.controller.record_error(self.qid, req.cid, reply.status, req.nsid)

    def fatal(self, reason: str) -> None:
        self._fatal(reason)

    def _fatal(self, reason: str) -> None:
        """Stop serving this connection once the current batch's answers are out."""
        self._fatal_reason = reason

    def _end_association(self, reason: str) -> None:
        """A fatal queue error ends the whole association, as nvmet_ctrl_fatal_error does."""
        self.close_reason = self.close_reason or reason
        ctrl = self.controller
        # nvmet_ctrl_fatal_error: the first fatal error sets CSTS.CFS and deletes the
        # controller; with CFS already set (a bad CC, say) nothing more happens to it.
        if ctrl is not None and not ctrl.closed:
            if ctrl.regs.csts & CSTS_CFS:
                # nvmet_tcp_fatal_error left the socket alone: the queue stops reading
                # (NVMET_TCP_RECV_ERR) until the host closes it or the controller goes.
                self._deaf = True
                return
            ctrl.regs.csts |= CSTS_CFS
            ctrl.close(f"fatal error on qid {self.qid}: {reason}")
        self.close(reason)

    def _fail(self, req: Request, err: CommandError) -> None:
        word = logged = err.status.word
        if err.loc is not None and self.controller is not None:
            word |= MORE_BIT  # logged in the error log page (nvmet_set_error)
        # str(err), here and in the other records: a handler that keeps records (pytest's, a
        # memory handler) must not keep the exception's frames, and this connection, alive.
        log.debug("command failed peer=%s qid=%s cid=%s opcode=%#x: %s", self.peer, self.qid,
                  req.cid, req.opcode, str(err))  # fmt: skip
        if self.controller is not None:
            self.controller.record_error(max(self.qid, 0), req.cid, logged, req.nsid,
                                         loc=0xFFFF if err.loc is None else err.loc)  # fmt: skip
        self._account(req, word)
        self._respond(req.cid, word, err.result, 0)

    def _account(self, req: Request, status: int) -> None:
        """Count a command being completed: latency, status, bytes (plain counters only)."""
        self.completed += 1
        if self._idle is not None:
            self._check_idle()
        if req.received_at is not self._batch_at:  # same float object: in this batch
            self.stats.observe(perf_counter() - req.received_at)
            self._batch_base += 1  # timed on its own, not with the batch being served
        index = self._opbase + req.opcode
        if status & 0xFFFE:
            self.stats.count_error(index, status)
            return
        self.stats.ok[index] += 1
        if index in _MOVES_DATA:  # Read or Write on an I/O queue
            moved = self._read_bytes if index == _READ else self._written_bytes
            moved[req.nsid] = moved.get(req.nsid, 0) + req.transfer_length

    def _end_batch(self) -> None:
        """Time the commands completed while their receive batch was served: their responses
        leave together in the flush that follows (one clock read per batch, not per command)."""
        self._batch_at = _NO_BATCH
        done = self.completed - self._batch_base
        if done:
            self.stats.observe(perf_counter() - self._received_at, done)

    def _respond(self, cid: int, status: int, dw0: int, dw1: int, corrupt: bool = False) -> None:
        sqhd = self._sqhd if self.sq_flow_control else 0xFFFF
        self.conn.send_response(cid, status, dw0=dw0, dw1=dw1, sqhd=sqhd, sqid=max(self.qid, 0),
                                corrupt_digest=corrupt)  # fmt: skip

    # -- output ----------------------------------------------------------------------------------

    async def _flush(self) -> None:
        lock = self._send_lock
        try:
            # Nearly always free: taken without the schedule point ``async with`` adds (one
            # more pass of Trio's run loop per receive batch); the receive checkpoints.
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            if not self._flowing.is_set():
                await self._flowing.wait()
            if self._tx_resume_at and self._tx_resume_at > trio.current_time():  # a stall fault
                await trio.sleep_until(self._tx_resume_at)
            buffers = self.conn.data_to_send()
            if not buffers:
                return
            data = b"".join(buffers)
            if self.capture is not None:
                self.capture.sent(data)
            try:
                # Plain TCP: one write straight away, send_all for what is left. A closed
                # connection (close() cancels us) sends nothing more, as with send_all.
                await trio.lowlevel.checkpoint_if_cancelled()
                plain = self._plain_stream
                sent = direct.send_now(plain, data) if plain is not None else 0
                if sent < len(data):
                    await self.stream.send_all(memoryview(data)[sent:])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.close("send failed")
        finally:
            lock.release()

    def _kick(self) -> None:
        """Flush soon from a task of our own (called from outside the reader task)."""
        if self._nursery is not None:
            self._nursery.start_soon(self._flush)

    def _detach(self) -> None:
        ctrl = self.controller
        if ctrl is None:
            return
        if self.qid == 0:
            if not ctrl.closed:
                log.info("controller removed cntlid=%s host=%s reason=%s", ctrl.cntlid,
                         ctrl.hostnqn, self.close_reason or "admin queue closed")  # fmt: skip
            ctrl.close(self.close_reason or "admin queue closed")
            if ctrl.discovery:
                self.state.discovery_controllers.pop(ctrl.cntlid, None)
        elif ctrl.queues.get(self.qid) is self:
            del ctrl.queues[self.qid]


def _check_r2t_length(req: Request) -> None:
    """Refuse a data length we would never accept before allocating a buffer for it."""
    if req.transfer_length > MAX_TRANSFER:
        raise fail(StatusCode.INVALID_FIELD, f"{req.transfer_length} bytes exceed MDTS")
