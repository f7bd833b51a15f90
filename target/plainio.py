"""The data path's short cut: Reads and in-capsule Writes served straight from the receive
buffer, for a queue in the state nearly every I/O queue is in.

The general path (``QueueConnection._serve``) builds an event, a Request, routes it, runs the
handler, builds a Reply and accounts for it: a dozen calls and as many objects per command, each
check there because some command somewhere needs it. A Read or Write on a connected, ready,
tolerant I/O queue of a RAM or null namespace, with no digests, no fault rules, no
authentication pending, no reservation holder and not draining, needs only these: the
namespace is active, its ANA group reachable through the controller's port, the SGL length is
what the LBA count moves, the range is inside the namespace. :meth:`PlainIo._serve_plain_io`
checks exactly that and serves the command; the first command it is not sure of goes to the
general path, which answers it (and every error) as before. Both leave the same bytes on the
wire and the same counters behind (tests/target/test_plain_io.py sends every shape both ways).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nvmeof.tcp.controller import ControllerConnection
from target.commands.dispatch import MAX_SGL_LENGTH
from target.commands.io import ANA_STATUS
from target.state import IO_OPCODES

if TYPE_CHECKING:
    import trio

    from target.controller import Controller
    from target.port import Port
    from target.state import CommandStats, TargetState

_READ = 0x02


class PlainIo:
    """Mixed into :class:`target.connection.QueueConnection`: what it declares here, the
    connection provides."""

    qid: int
    controller: Controller | None
    conn: ControllerConnection
    port: Port
    state: TargetState
    auth: object
    stats: CommandStats
    commands: int
    completed: int
    sq_flow_control: bool
    sqsize: int
    _sqhd: int
    _read_bytes: dict[int, int]
    _written_bytes: dict[int, int]
    draining: bool  # target.drain.QueueDrain's (which comes first: it is not shadowed here)
    _idle: trio.Event | None

    def _check_idle(self) -> None: ...

    def _plain_io_ready(self) -> bool:
        """Whether this receive batch may take the short cut: decided once per batch, as nothing
        it depends on changes while a batch is served (other tasks change them in between)."""
        ctrl = self.controller
        return (
            self.qid > 0
            and ctrl is not None
            and ctrl.subsystem is not None
            and ctrl.regs.ready
            and self.auth is None
            and not self.port.strict
            and not self.state.faults.rules
            and not self.draining
        )

    def _serve_plain_io(self) -> None:
        """Serve the plain Reads and Writes at the head of the input, up to the first command
        that is anything else (or not yet complete)."""
        conn = self.conn
        ctrl = self.controller
        assert ctrl is not None and ctrl.subsystem is not None
        namespaces = ctrl.subsystem.namespaces
        ana_state = ctrl.port.ana_state  # ANA belongs to the controller's port (namespace_of)
        inline_limit = self.port.inline_data_size
        ok = self.stats.ok
        ctrl_stats = ctrl.stats
        flow_control = self.sq_flow_control and self.sqsize
        success_flag = not self.sq_flow_control  # the C2HData carries the completion
        sqid = self.qid
        while (cmd := conn.peek_plain_rw()) is not None:
            opcode, cid, nsid, slba, nlb, _, length, data, size = cmd
            ns = namespaces.get(nsid)
            if ns is None or not ns.enabled or not ns.backend.synchronous:
                return
            resv = ns.reservations
            if resv is not None and (resv.holder is not None or resv.aborted):
                return
            if ana_state(ns.ana_group) in ANA_STATUS:
                return
            nblocks = nlb + 1
            shift = ns.lba_shift
            if length != nblocks << shift or slba + nblocks > ns.nlbas or length > MAX_SGL_LENGTH:
                return
            if data is not None and length > inline_limit:
                return
            conn.consume_plain_rw(size)
            self.commands += 1
            ctrl.traffic_seen = True  # keep-alive (target.liveness)
            if flow_control:
                self._sqhd = (self._sqhd + 1) % self.sqsize
            sqhd = self._sqhd if self.sq_flow_control else 0xFFFF
            if data is None:
                ctrl_stats.read_commands += 1
                ctrl_stats.bytes_read += length
                view = ns.backend.read_sync(slba << shift, length)
                moved = self._read_bytes
            else:
                ctrl_stats.write_commands += 1
                ctrl_stats.bytes_written += length
                ns.backend.write_sync(slba << shift, data)
                moved = self._written_bytes
            # QueueConnection._account: timed with the batch (_end_batch), counted, bytes.
            self.completed += 1
            if self._idle is not None:
                self._check_idle()
            ok[IO_OPCODES + opcode] += 1
            moved[nsid] = moved.get(nsid, 0) + length
            if data is None:
                conn.send_data(cid, view, success=success_flag)
                if success_flag:
                    continue
            conn.send_response(cid, 0, sqhd=sqhd, sqid=sqid)
