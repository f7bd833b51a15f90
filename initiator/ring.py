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

import struct
from collections import deque
from collections.abc import Callable, Iterator
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


# An enum member looked up on its class costs ~0.2 us in CPython 3.11 (EnumType.__getattr__),
# and Slot.move a dict and a set lookup more: the per-I/O code compares against these module
# constants and makes its one common transition itself, leaving every other one to move().
_FREE = SlotState.FREE
_PREPARED = SlotState.PREPARED
_INFLIGHT = SlotState.INFLIGHT
_DONE = SlotState.DONE

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
    def ring_doorbells(self) -> None: ...


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
        state = self.state
        if state is not _FREE and state is not _PREPARED:
            raise LocalProtocolError(f"slot {self.index} is {state.name}")
        self.kind = kind
        self.user_data = user_data
        self.data_out = self.data_in = None
        self.retries = self.failovers = 0
        self.status_word = self.dw0 = self.dw1 = 0
        self.path = None
        self.path_label = ""
        self.not_before = 0.0
        self.pinned = False
        if state is _FREE:
            self.state = _PREPARED  # a legal move (TRANSITIONS), made without the lookups

    def _prep_rw(self, kind: str, opcode: int, slba: int, nblocks: int,
                 buffer: memoryview | bytes | bytearray | int, user_data: Any) -> memoryview:  # fmt: skip
        """Check and prepare a Read or Write; returns the data buffer's view."""
        ring = self.ring
        # ring.buffer(), with the registered buffer index (what a loop like the bench's gives)
        # taken without a call
        view = ring._buffers[buffer] if type(buffer) is int else ring.buffer(buffer)
        self._check_length(view, nblocks)
        self._prep(kind, user_data)
        _RW_COMMAND.pack_into(self.cmd, 0, opcode, _FLAGS_SGL, ring.head.nsid_bytes, slba,
                              nblocks - 1, 0, 0, 0, 0, 0)  # fmt: skip
        return view

    def prep_read(self, slba: int, nblocks: int, buffer: memoryview | bytearray | int,
                  user_data: Any = None) -> Slot:  # fmt: skip
        """Read ``nblocks`` logical blocks at ``slba`` into ``buffer`` (or registered buffer
        index ``buffer``)."""
        self.data_in = self._prep_rw("read", _READ, slba, nblocks, buffer, user_data)
        return self

    def prep_write(self, slba: int, nblocks: int, data: memoryview | bytes | bytearray | int,
                   user_data: Any = None) -> Slot:  # fmt: skip
        """Write ``nblocks`` logical blocks at ``slba`` from ``data`` (or a registered buffer).
        The data must stay unchanged until the completion: a retry resends it."""
        self.data_out = self._prep_rw("write", _WRITE, slba, nblocks, data, user_data)
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
        head = self.ring.head
        expected = nblocks * head.block_size
        if nblocks < 1 or nblocks > 0x10000 or len(view) != expected:
            raise ValueError(f"{nblocks} blocks need a {expected}-byte buffer, got {len(view)}")
        limit = getattr(head, "max_transfer", None)
        if limit is not None and expected > limit:
            self._check_transfer(expected)  # raises

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


_ZERO_CMD = bytes(SQE_SIZE)
_READ = int(IoOpcode.READ)
_WRITE = int(IoOpcode.WRITE)
#: A whole Read/Write command in one pack: opcode, flags, CID 0, NSID, zeros up to CDW10 (the
#: transport sets the SGL), then the command-specific part (RW_TAIL: SLBA, NLB, control,
#: DSM, reference tag, application tag and mask).
_RW_COMMAND = struct.Struct("<BB2x4s32x" + RW_TAIL.format.lstrip("<"))
assert _RW_COMMAND.size == SQE_SIZE and RW_TAIL_OFFSET == 40


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
        #: Someone may be parked in wait() (set before parking, cleared by the unpark):
        #: post() tests this flag instead of ParkingLot.__bool__, a Python call per I/O.
        self._waiting = False
        self._wanted = 0
        self._reaping: Slot | None = None  # the completion completions() is yielding
        self.inflight = 0
        try:  # the run's clock itself: trio.current_time() is four calls deep
            self._now: Callable[[], float] = trio.lowlevel.current_clock().current_time
        except RuntimeError:  # made outside a Trio run
            self._now = trio.current_time

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
        """Send every prepared slot to the head; returns how many were submitted. They are
        submitted at one moment (``submitted_at``), as one ``io_uring_enter`` would."""
        count = 0
        prepared = self._prepared
        head = self.head
        now = self._now()
        while prepared:
            slot = prepared.popleft()
            if slot.state is not _PREPARED:  # get_sqe() without a prep_*
                slot.state = _FREE
                self._free.append(slot)
                continue
            self.inflight += 1
            slot.submitted_at = now
            head.submit(slot)
            count += 1
        head.ring_doorbells()  # the batch goes out now, from this task
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
            self._waiting = True
            await self._lot.park()

    # -- completion ----------------------------------------------------------------------------

    def post(self, slot: Slot) -> None:
        """Called by the head when ``slot`` completed for good."""
        if slot.state is _INFLIGHT:
            slot.state = _DONE  # the common legal move, without move()'s lookups
        else:
            slot.move(SlotState.DONE)
        slot.generation += 1
        self.inflight -= 1
        done = self._done
        done.append(slot)
        if self._waiting and len(done) >= self._wanted:
            self._waiting = False
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
        if slot.state is _DONE:
            slot.state = _FREE  # the common legal move, without move()'s lookups
        else:
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
