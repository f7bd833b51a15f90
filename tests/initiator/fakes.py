"""Socket-free stand-ins for what the ring and the multipath head talk to.

* :class:`FakeRingHead`: the three things :class:`~initiator.ring.Ring` needs from a head
  (``nsid_bytes``, ``block_size``, ``submit``); it records submitted slots and can complete them.
* :class:`FakeSession`: a real :class:`~initiator.session.Session` (so ``live``,
  ``may_recover``, ``io_queues``... are the real properties) that never connects; its
  association is a list of :class:`FakeQueue` I/O queues. The tests drive real ``Path`` and
  ``MultipathHead`` objects over it.

A :class:`FakeQueue` never completes inside ``send_slot``: like the real
:class:`~initiator.queue.HostQueue`, it only queues the slot (the head marks the slot INFLIGHT
after ``send_slot`` returns). Tests complete it later with :meth:`FakeQueue.complete_next`,
which calls ``head.complete`` the way the queue's reader task does.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import trio

from initiator.controller import ControllerOptions
from initiator.multipath import MultipathHead, Path
from initiator.ring import Ring, Slot, SlotState
from initiator.session import Session, SessionState

if TYPE_CHECKING:
    from initiator.controller import HostController
    from initiator.host import Host

NSID = 7
BLOCK = 512
NQN = "nqn.2026-11.io.nvmeof-emu:unit"


class FakeRingHead:
    """The head side of a :class:`Ring`: records submissions, completes them on demand."""

    def __init__(self, nsid: int = NSID, block_size: int = BLOCK) -> None:
        self.nsid_bytes = nsid.to_bytes(4, "little")
        self.block_size = block_size
        self.submitted: list[Slot] = []
        self.cmds: list[bytes] = []
        self.doorbells = 0  # Ring.submit rings once per batch

    def ring_doorbells(self) -> None:
        self.doorbells += 1

    def submit(self, slot: Slot) -> None:
        slot.move(SlotState.INFLIGHT)
        self.submitted.append(slot)
        self.cmds.append(bytes(slot.cmd))

    def complete(self, slot: Slot, status: int = 0, dw0: int = 0, dw1: int = 0) -> None:
        slot.status_word, slot.dw0, slot.dw1 = status, dw0, dw1
        slot.ring.post(slot)


def fake_ring(entries: int = 4, head: FakeRingHead | None = None) -> tuple[Ring, FakeRingHead]:
    head = head or FakeRingHead()
    return Ring(cast("MultipathHead", head), entries), head


@dataclass
class Sent:
    """One ``send_slot`` call: when, which slot, the command bytes and the command object."""

    at: float
    slot: Slot
    cmd: bytes
    cmd_obj: bytearray
    data_in: memoryview | None
    data_out: memoryview | None


class FakeQueue:
    """An I/O queue: ``send_slot`` accepts (or refuses, like a queue without a free tag)."""

    def __init__(self, name: str, *, record: bool = True) -> None:
        self.name = name
        self.record = record
        self.refuse = False
        self.refused = 0
        self.sent: list[Sent] = []
        self.pending: deque[Slot] = deque()
        self.last_cmd: bytearray | None = None
        self.bell_pending = False
        self.doorbells = 0  # how often the head rang this queue

    def doorbell(self) -> None:
        assert self.bell_pending, "rung without commands since the last ring"
        self.bell_pending = False
        self.doorbells += 1

    def send_slot(self, slot: Slot) -> bool:
        if self.refuse:
            self.refused += 1
            return False
        slot.sent_at = trio.current_time()  # as HostQueue.send_slot does
        self.pending.append(slot)
        self.last_cmd = slot.cmd
        if self.record:
            self.sent.append(Sent(trio.current_time(), slot, bytes(slot.cmd), slot.cmd,
                                  slot.data_in, slot.data_out))  # fmt: skip
        return True

    def complete_next(self, head: MultipathHead, status: int = 0, dw0: int = 0,
                      dw1: int = 0) -> Slot:  # fmt: skip
        """Complete the oldest outstanding slot, as the queue's reader would."""
        slot = self.pending.popleft()
        head.complete(slot, status, dw0, dw1)
        return slot

    def abort_all(self, head: MultipathHead, status: int) -> None:
        """Connection loss: every outstanding slot completes with ``status`` (0x371)."""
        while self.pending:
            self.complete_next(head, status)


@dataclass
class FakeIdentify:
    ctratt: int = 0


@dataclass
class FakeAssociation:
    """The part of a HostController a Session hands out: its I/O queues (and CTRATT)."""

    io_queues: list[FakeQueue]
    cntlid: int = 1
    identify: FakeIdentify = field(default_factory=FakeIdentify)


class FakeSession(Session):
    """A real :class:`~initiator.session.Session` that never connects.

    ``live``, ``may_recover``, ``failfast_deadline``, ``io_queues`` and the other properties
    are the real ones; the association is a :class:`FakeAssociation` over :class:`FakeQueue`
    queues, and state changes are made directly (:meth:`lose`, :meth:`reconnect`,
    :meth:`delete`) the way ``Session._lost``/``_associate``/``disconnect`` make them, without
    touching queues or tasks. ``request_ana_reread`` is counted.
    """

    def __init__(self, label: str, *, state: SessionState = SessionState.LIVE, nqueues: int = 1,
                 crdt: tuple[int, int, int] = (0, 0, 0), cqt: float = 0.0,
                 fast_io_fail_tmo: float | None = None, record: bool = True,
                 kato_ms: int = 5000) -> None:  # fmt: skip
        options = ControllerOptions(fast_io_fail_tmo=fast_io_fail_tmo, kato_ms=kato_ms)
        super().__init__(cast("Host", None), label, 4420, NQN, options)
        self.label = label
        self.state = state
        self.crdt = crdt
        self.cqt = cqt
        self.queues = [FakeQueue(f"{label}/q{i}", record=record) for i in range(nqueues)]
        self.assoc = cast("HostController", FakeAssociation(self.queues))
        self.ana_rereads = 0

    def request_ana_reread(self) -> None:
        self.ana_rereads += 1
        super().request_ana_reread()

    def lose(self, *, peer_closed: bool = True) -> None:
        """Connection lost (closed by the target, or given up by a timeout when not
        ``peer_closed``): CONNECTING (reconnecting) from now on."""
        if self.lost_at is None:
            self.lost_at = trio.current_time()
            self.quiesce_until = self._quiesce_deadline(self.lost_at, peer_closed)
        self.state = SessionState.CONNECTING

    def reconnect(self) -> None:
        self.lost_at = None
        self.state = SessionState.LIVE

    def delete(self) -> None:
        self.state = SessionState.DELETED

    @property
    def sent(self) -> list[Sent]:
        return [s for q in self.queues for s in q.sent]


def make_path(session: FakeSession, nsid: int = NSID) -> Path:
    path = Path(session, nsid)
    session.paths[nsid] = path
    return path


@dataclass
class Rig:
    """A real MultipathHead over real Paths over fake sessions, plus a ring."""

    head: MultipathHead
    sessions: list[FakeSession]
    paths: list[Path]
    ring: Ring
    buffers: list[bytearray]

    def sent(self, index: int) -> list[Sent]:
        return self.sessions[index].sent

    def queue(self, index: int, q: int = 0) -> FakeQueue:
        return self.sessions[index].queues[q]

    def _slot(self) -> Slot:
        slot = self.ring.get_sqe()
        assert slot is not None, "ring full"
        return slot

    def read(self, slba: int = 0, buf: int = 0, user_data: object = None) -> Slot:
        """Prepare and submit a read into registered buffer ``buf``."""
        slot = self._slot()
        slot.prep_read(slba, len(self.buffers[buf]) // self.head.block_size, buf, user_data)
        self.ring.submit()
        return slot

    def write(self, slba: int = 0, buf: int = 0, user_data: object = None) -> Slot:
        slot = self._slot()
        slot.prep_write(slba, len(self.buffers[buf]) // self.head.block_size, buf, user_data)
        self.ring.submit()
        return slot

    def passthru(self, cmd64: bytes, *, data_in: int | None = None, data_out: int | None = None,
                 user_data: object = None) -> Slot:  # fmt: skip
        slot = self._slot()
        slot.prep_cmd(cmd64, data_in=data_in, data_out=data_out, user_data=user_data)
        self.ring.submit()
        return slot

    def flush(self) -> Slot:
        slot = self._slot()
        slot.prep_flush()
        self.ring.submit()
        return slot


def make_rig(*sessions: FakeSession, iopolicy: str = "numa", entries: int = 8,
             nbuffers: int = 4, buffer_blocks: int = 1, block_size: int = BLOCK) -> Rig:  # fmt: skip
    head = MultipathHead(NQN, NSID, block_size=block_size,
                         nlbas=1 << 20, iopolicy=iopolicy)  # fmt: skip
    if not sessions:
        sessions = (FakeSession("a"), FakeSession("b"))
    paths = []
    for session in sessions:
        path = make_path(session)
        head.add_path(path)
        paths.append(path)
    ring = head.ring(entries)
    buffers = [bytearray(buffer_blocks * block_size) for _ in range(nbuffers)]
    ring.register_buffers(list(buffers))
    return Rig(head, list(sessions), paths, ring, buffers)
