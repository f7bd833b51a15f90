"""The io_uring-like ring: fixed submission slots, each owning a stable copy of its command.

Every slot preallocates a 64-byte command buffer. ``prep_*`` writes the command into it once;
the first submission and every retry or failover send that same buffer through the same
submission path ("do the exact same thing again"), so a retried passthrough command is
byte-identical to the original and nothing is allocated per I/O. A slot is its own completion
entry (like CQE32: status, DW0, DW1, and which path served it) until :meth:`Ring.cqe_seen`
returns it to the free list.

Slot states (one transition table, checked on every move):

- FREE: owned by the ring, may be handed out by :meth:`Ring.get_sqe`.
- PREPARED: the caller filled it in; :meth:`Ring.submit` will send it.
- INFLIGHT: sent on a path, waiting for its completion.
- REQUEUED: its path failed; parked on the namespace head's requeue list.
- DONE: completed; visible to the caller as a completion until ``cqe_seen``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from enum import IntEnum
from typing import Any, Protocol

import trio

from nvmeof.constants import SQE_SIZE, IoOpcode
from nvmeof.errors import LocalProtocolError
from nvmeof.status import Status
from nvmeof.wire.fast import RW_TAIL, RW_TAIL_OFFSET

_NSID = slice(4, 8)
_FLAGS_SGL = 0x40


class SlotState(IntEnum):
    FREE = 0
    PREPARED = 1
    INFLIGHT = 2
    REQUEUED = 3
    DONE = 4


#: Legal slot transitions; anything else is a bug (LocalProtocolError).
TRANSITIONS: dict[SlotState, frozenset[SlotState]] = {
    SlotState.FREE: frozenset({SlotState.PREPARED}),
    SlotState.PREPARED: frozenset({SlotState.INFLIGHT, SlotState.REQUEUED, SlotState.DONE,
                                   SlotState.FREE}),
    SlotState.INFLIGHT: frozenset({SlotState.DONE, SlotState.REQUEUED, SlotState.INFLIGHT}),
    SlotState.REQUEUED: frozenset({SlotState.INFLIGHT, SlotState.REQUEUED, SlotState.DONE}),
    SlotState.DONE: frozenset({SlotState.FREE}),
}  # fmt: skip


class RingHead(Protocol):
    """What a ring needs of the namespace head it submits to (:class:`initiator.multipath.
    MultipathHead`, which sits above this module and completes slots by :meth:`Ring.post`)."""

    @property
    def nsid_bytes(self) -> bytes: ...
    @property
    def block_size(self) -> int: ...
    def submit(self, slot: Slot) -> None: ...


class Slot:
    """One submission slot; doubles as its completion entry once DONE.

    Completion fields: ``user_data``, ``status_word`` (CQE status), ``dw0``/``dw1``,
    ``path_label`` (the path that completed it), ``failovers``, ``retries``.
    """

    __slots__ = (
        "cid",
        "cmd",
        "data_in",
        "data_out",
        "dw0",
        "dw1",
        "failovers",
        "generation",
        "index",
        "kind",
        "not_before",
        "path",
        "path_label",
        "pinned",
        "retries",
        "ring",
        "sent_at",
        "state",
        "status_word",
        "submitted_at",
        "user_data",
        "view",
    )  # fmt: skip

    def __init__(self, ring: Ring, index: int) -> None:
        self.ring = ring
        self.index = index
        self.state = SlotState.FREE
        self.cmd = bytearray(SQE_SIZE)  # the stable copy, reused for every attempt
        self.view = memoryview(self.cmd)
        self.data_out: memoryview | None = None
        self.data_in: memoryview | None = None
        self.user_data: Any = None
        self.kind = ""
        #: The :class:`initiator.multipath.Path` it was last sent on: set and read by the head
        #: (readers annotate it), opaque here so the ring need not import the head's module.
        self.path: Any = None
        self.path_label = ""
        self.cid = -1
        self.status_word = 0
        self.dw0 = 0
        self.dw1 = 0
        self.retries = 0
        self.failovers = 0
        self.not_before = 0.0
        self.submitted_at = 0.0
        self.sent_at = 0.0
        self.generation = 0  # completions so far (tells a reused slot's new completion apart)
        self.pinned = False  # a same-path retry waiting for its CRD delay

    def move(self, new: SlotState) -> None:
        if new not in TRANSITIONS[self.state]:
            raise LocalProtocolError(f"slot {self.index}: {self.state.name} -> {new.name}")
        self.state = new

    # -- preparation -------------------------------------------------------------------------------

    def _prep(self, kind: str, user_data: Any) -> None:
        if self.state is not SlotState.FREE and self.state is not SlotState.PREPARED:
            raise LocalProtocolError(f"slot {self.index} is {self.state.name}")
        self.kind = kind
        self.user_data = user_data
        self.data_out = self.data_in = None
        self.retries = self.failovers = 0
        self.status_word = self.dw0 = self.dw1 = 0
        self.path = None
        self.path_label = ""
        self.not_before = 0.0
        self.pinned = False
        if self.state is SlotState.FREE:
            self.move(SlotState.PREPARED)

    def _rw(self, opcode: int, slba: int, nblocks: int) -> None:
        cmd = self.cmd
        cmd[:40] = _ZERO_HEAD
        cmd[0] = opcode
        cmd[1] = _FLAGS_SGL
        cmd[_NSID] = self.ring.head.nsid_bytes
        RW_TAIL.pack_into(cmd, RW_TAIL_OFFSET, slba, nblocks - 1, 0, 0, 0, 0, 0)

    def prep_read(self, slba: int, nblocks: int, buffer: memoryview | bytearray | int,
                  user_data: Any = None) -> Slot:  # fmt: skip
        """Read ``nblocks`` logical blocks at ``slba`` into ``buffer`` (or registered buffer
        index ``buffer``)."""
        view = self.ring.buffer(buffer)
        self._check_length(view, nblocks)
        self._prep("read", user_data)
        self._rw(IoOpcode.READ, slba, nblocks)
        self.data_in = view
        return self

    def prep_write(self, slba: int, nblocks: int, data: memoryview | bytes | bytearray | int,
                   user_data: Any = None) -> Slot:  # fmt: skip
        """Write ``nblocks`` logical blocks at ``slba`` from ``data`` (or a registered buffer).
        The data must stay unchanged until the completion: a retry resends it."""
        view = self.ring.buffer(data)
        self._check_length(view, nblocks)
        self._prep("write", user_data)
        self._rw(IoOpcode.WRITE, slba, nblocks)
        self.data_out = view
        return self

    def prep_flush(self, user_data: Any = None) -> Slot:
        self._prep("flush", user_data)
        cmd = self.cmd
        cmd[:] = _ZERO_CMD
        cmd[0] = IoOpcode.FLUSH
        cmd[1] = _FLAGS_SGL
        cmd[_NSID] = self.ring.head.nsid_bytes
        return self

    def prep_cmd(self, cmd64: bytes | bytearray | memoryview, *,
                 data_out: memoryview | bytes | bytearray | int | None = None,
                 data_in: memoryview | bytearray | int | None = None,
                 user_data: Any = None) -> Slot:  # fmt: skip
        """A raw 64-byte NVMe I/O command (like ``IORING_OP_URING_CMD`` on ``/dev/ngXnY``).

        The command is copied into the slot as given; its CID and SGL are set by the transport
        at each (re)submission. ``data_out``/``data_in`` are the host-to-controller and
        controller-to-host buffers.
        """
        if len(cmd64) != SQE_SIZE:
            raise ValueError("a passthrough command is exactly 64 bytes")
        if data_out is not None and data_in is not None:
            raise ValueError("NVMe/TCP moves data in one direction per command")
        out = self.ring.buffer(data_out) if data_out is not None else None
        into = self.ring.buffer(data_in) if data_in is not None else None
        self._check_transfer(len(out) if out is not None else len(into) if into is not None else 0)
        self._prep("passthru", user_data)
        self.cmd[:] = cmd64
        self.data_out, self.data_in = out, into
        return self

    def _check_length(self, view: memoryview, nblocks: int) -> None:
        expected = nblocks * self.ring.head.block_size
        if nblocks < 1 or nblocks > 0x10000 or len(view) != expected:
            raise ValueError(f"{nblocks} blocks need a {expected}-byte buffer, got {len(view)}")
        self._check_transfer(expected)

    def _check_transfer(self, length: int) -> None:
        limit = getattr(self.ring.head, "max_transfer", None)
        if limit is not None and length > limit:
            raise ValueError(f"a {length}-byte transfer exceeds the controller limit (MDTS) of "
                             f"{limit} bytes: split it")  # fmt: skip

    # -- completion view ----------------------------------------------------------------------------

    @property
    def status(self) -> Status:
        return Status.from_word(self.status_word)

    @property
    def ok(self) -> bool:
        return self.status_word & 0xFFFE == 0

    def __repr__(self) -> str:
        return (f"Slot({self.index}, {self.state.name}, {self.kind}, status={self.status_word:#x}, "
                f"path={self.path_label!r})")  # fmt: skip


_ZERO_HEAD = bytes(40)
_ZERO_CMD = bytes(SQE_SIZE)


class Ring:
    """A submission/completion ring over one namespace head.

    Args:
        head: the multipath namespace head the ring submits to.
        entries: number of slots (the maximum in flight plus unreaped completions).
    """

    def __init__(self, head: RingHead, entries: int) -> None:
        if entries < 1:
            raise ValueError("a ring needs at least one entry")
        self.head = head
        self.entries = entries
        self.slots = [Slot(self, i) for i in range(entries)]
        self._free: deque[Slot] = deque(self.slots)
        self._prepared: deque[Slot] = deque()
        self._done: deque[Slot] = deque()
        self._buffers: list[memoryview] = []
        self._lot = trio.lowlevel.ParkingLot()
        self._wanted = 0
        self._reaping: Slot | None = None  # the completion completions() is yielding
        self.inflight = 0

    # -- buffers -------------------------------------------------------------------------------

    def register_buffers(self, buffers: list[bytearray | memoryview]) -> None:
        """Preallocated buffers referred to by index in ``prep_*`` (I/O lands in them directly)."""
        self._buffers = [memoryview(b).cast("B") for b in buffers]

    def buffer(self, ref: memoryview | bytes | bytearray | int) -> memoryview:
        if isinstance(ref, int):
            return self._buffers[ref]
        return ref if isinstance(ref, memoryview) else memoryview(ref)

    # -- submission ----------------------------------------------------------------------------

    def get_sqe(self) -> Slot | None:
        """A free slot to prepare, or None when every slot is busy (submit or reap first)."""
        if not self._free:
            return None
        slot = self._free.popleft()
        self._prepared.append(slot)
        return slot

    def submit(self) -> int:
        """Send every prepared slot to the head; returns how many were submitted."""
        count = 0
        prepared = self._prepared
        head = self.head
        while prepared:
            slot = prepared.popleft()
            if slot.state is not SlotState.PREPARED:  # get_sqe() without a prep_*
                slot.state = SlotState.FREE
                self._free.append(slot)
                continue
            self.inflight += 1
            slot.submitted_at = trio.current_time()
            head.submit(slot)
            count += 1
        return count

    async def submit_and_wait(self, wait_nr: int = 1) -> int:
        """Submit, then wait until at least ``wait_nr`` completions are ready."""
        count = self.submit()
        await self.wait(wait_nr)
        return count

    async def wait(self, wait_nr: int = 1) -> None:
        """Wait until at least ``wait_nr`` completions are ready (bounded by what is in flight)."""
        wanted = min(wait_nr, len(self._done) + self.inflight)
        while len(self._done) < wanted:
            self._wanted = wanted
            await self._lot.park()

    # -- completion ----------------------------------------------------------------------------

    def post(self, slot: Slot) -> None:
        """Called by the head when ``slot`` completed for good."""
        slot.move(SlotState.DONE)
        slot.generation += 1
        self.inflight -= 1
        self._done.append(slot)
        if len(self._done) >= self._wanted and self._lot:
            self._lot.unpark_all()

    def peek_cqe(self) -> Slot | None:
        return self._done[0] if self._done else None

    def cqe_seen(self, slot: Slot) -> None:
        """Release a completion (and its slot) back to the ring."""
        if self._done and self._done[0] is slot:
            self._done.popleft()
        elif slot is not self._reaping:
            self._done.remove(slot)
        self._release(slot)

    def _release(self, slot: Slot) -> None:
        if slot is self._reaping:
            self._reaping = None
        slot.move(SlotState.FREE)
        slot.data_in = slot.data_out = None  # drop references to the caller's objects
        slot.user_data = None
        self._free.append(slot)

    def completions(self) -> Iterator[Slot]:
        """Every ready completion, each released after the loop body ran (unless the body
        already released it with :meth:`cqe_seen`)."""
        done = self._done
        while done:
            slot = done.popleft()
            generation = slot.generation
            self._reaping = slot
            yield slot
            if slot is self._reaping and slot.generation == generation:
                self._release(slot)
            self._reaping = None

    @property
    def ready(self) -> int:
        return len(self._done)
