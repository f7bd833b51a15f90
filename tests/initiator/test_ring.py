# mypy: disable-error-code="comparison-overlap"
# (slot.state is changed by the calls between two checks; mypy narrows it as if it could not)
"""The io_uring-like ring: slot state machine, SQE building, buffers, submission and reaping.

The ring runs over :class:`fakes.FakeRingHead` (no multipath head, no sockets): ``submit``
moves the slot to INFLIGHT and records it; ``complete`` fills the completion and posts it.
"""

from __future__ import annotations

import itertools
from array import array

import pytest
import trio
import trio.testing
from hypothesis import given, settings, strategies as st

from initiator.ring import TRANSITIONS, Ring, Slot, SlotState
from nvmeof.constants import SQE_SIZE, IoOpcode
from nvmeof.errors import LocalProtocolError
from nvmeof.status import Status, StatusCode, status_word
from nvmeof.wire.sqe import RW_COMMAND, SQE
from tests.initiator.fakes import BLOCK, NSID, FakeRingHead, fake_ring

S = SlotState


def rw_bytes(opcode: int, slba: int, nblocks: int, nsid: int = NSID) -> bytes:
    """The reference SQE: SGL descriptor left zero (the transport fills it per send)."""
    return bytes(RW_COMMAND.build(dict(opcode=opcode, flags=0x40, cid=0, nsid=nsid,
                                       sgl=dict(addr=0, length=0, type=0), slba=slba,
                                       nlb=nblocks - 1)))  # fmt: skip


# -- the state machine -------------------------------------------------------------------------


def test_transition_table() -> None:
    expected = {
        S.FREE: {S.PREPARED},
        S.PREPARED: {S.INFLIGHT, S.REQUEUED, S.DONE, S.FREE},
        S.INFLIGHT: {S.DONE, S.REQUEUED, S.INFLIGHT},
        S.REQUEUED: {S.INFLIGHT, S.REQUEUED, S.DONE},
        S.DONE: {S.FREE},
    }
    assert expected == TRANSITIONS
    assert set(TRANSITIONS) == set(SlotState)


@pytest.mark.parametrize(("old", "new"), list(itertools.product(SlotState, SlotState)),
                         ids=lambda s: s.name)  # fmt: skip
def test_every_pair(old: SlotState, new: SlotState) -> None:
    ring, _ = fake_ring(1)
    slot = ring.slots[0]
    slot.state = old
    if new in TRANSITIONS[old]:
        slot.move(new)
        assert slot.state is new
    else:
        with pytest.raises(LocalProtocolError, match=f"{old.name} -> {new.name}"):
            slot.move(new)
        assert slot.state is old


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(SlotState)), max_size=30))
def test_random_walks_follow_the_table(walk: list[SlotState]) -> None:
    ring, _ = fake_ring(1)
    slot = ring.slots[0]
    for new in walk:
        old = slot.state
        try:
            slot.move(new)
        except LocalProtocolError:
            assert new not in TRANSITIONS[old] and slot.state is old
        else:
            assert new in TRANSITIONS[old] and slot.state is new


@pytest.mark.parametrize("state", [S.INFLIGHT, S.REQUEUED, S.DONE])
def test_prep_refused_while_busy(state: SlotState) -> None:
    ring, _ = fake_ring(1)
    slot = ring.slots[0]
    slot.state = state
    with pytest.raises(LocalProtocolError):
        slot.prep_flush()
    with pytest.raises(LocalProtocolError):
        slot.prep_read(0, 1, bytearray(BLOCK))
    with pytest.raises(LocalProtocolError):
        slot.prep_cmd(bytes(64))
    assert slot.state is state


# -- get_sqe / submit / reap -------------------------------------------------------------------


def test_ring_needs_entries() -> None:
    with pytest.raises(ValueError, match="at least one"):
        fake_ring(0)


def test_get_sqe_none_when_all_slots_busy() -> None:
    ring, _ = fake_ring(3)
    got = [ring.get_sqe() for _ in range(3)]
    assert [s.index for s in got if s is not None] == [0, 1, 2]
    assert ring.get_sqe() is None
    assert ring.get_sqe() is None


async def test_submit_reap_cycle() -> None:
    ring, head = fake_ring(2)
    a, b = ring.get_sqe(), ring.get_sqe()
    assert a is not None and b is not None
    a.prep_flush(user_data="a")
    b.prep_flush(user_data="b")
    assert (a.state, b.state) == (S.PREPARED, S.PREPARED)
    assert ring.submit() == 2
    assert ring.submit() == 0
    assert ring.inflight == 2 and head.submitted == [a, b]
    assert ring.get_sqe() is None  # INFLIGHT slots are not free
    assert ring.peek_cqe() is None and ring.ready == 0

    head.complete(b, status_word(StatusCode.INTERNAL, dnr=True), 5, 6)
    assert ring.inflight == 1 and ring.ready == 1
    assert ring.peek_cqe() is b and b.state is S.DONE
    assert not b.ok and b.status == Status(StatusCode.INTERNAL, dnr=True)
    assert (b.dw0, b.dw1, b.user_data) == (5, 6, "b")
    assert ring.get_sqe() is None  # DONE until reaped
    ring.cqe_seen(b)
    assert b.state is S.FREE and b.user_data is None and ring.ready == 0

    head.complete(a)
    seen = []
    for cqe in ring.completions():
        assert cqe.state is S.DONE and cqe.ok
        seen.append(cqe.user_data)
    assert seen == ["a"]
    assert a.state is S.FREE and ring.inflight == 0 and ring.peek_cqe() is None
    # Both slots are free again, in release order.
    assert ring.get_sqe() is b
    assert ring.get_sqe() is a


async def test_completions_releases_each_after_the_body_and_tolerates_cqe_seen() -> None:
    ring, head = fake_ring(3)
    slots = [ring.get_sqe() for _ in range(3)]
    for i, slot in enumerate(slots):
        assert slot is not None
        slot.prep_flush(user_data=i)
    ring.submit()
    for slot in reversed(slots):
        assert slot is not None
        head.complete(slot)
    order = []
    for cqe in ring.completions():
        assert cqe.state is S.DONE  # not released before the body ran
        order.append(cqe.user_data)
        if cqe.user_data == 1:
            ring.cqe_seen(cqe)  # releasing it in the body is fine too
    assert order == [2, 1, 0]
    assert all(s is not None and s.state is S.FREE for s in slots)


async def test_cqe_seen_out_of_order() -> None:
    ring, head = fake_ring(3)
    slots = []
    for _ in range(3):
        slot = ring.get_sqe()
        assert slot is not None
        slots.append(slot.prep_flush())
    ring.submit()
    for slot in slots:
        head.complete(slot)
    ring.cqe_seen(slots[1])
    assert slots[1].state is S.FREE and ring.ready == 2
    assert ring.peek_cqe() is slots[0]
    with pytest.raises(LocalProtocolError):  # FREE -> FREE
        slots[1].move(S.FREE)


async def test_submit_of_unprepared_slot_returns_it() -> None:
    ring, head = fake_ring(2)
    a = ring.get_sqe()
    b = ring.get_sqe()
    assert a is not None and b is not None
    b.prep_flush()
    assert ring.submit() == 1
    assert head.submitted == [b] and a.state is S.FREE and ring.inflight == 1
    assert ring.get_sqe() is a  # back on the free list
    assert ring.get_sqe() is None


async def test_failed_prep_leaves_the_slot_free() -> None:
    ring, head = fake_ring(1)
    slot = ring.get_sqe()
    assert slot is not None
    with pytest.raises(ValueError, match="need a"):
        slot.prep_read(0, 2, bytearray(BLOCK))
    assert slot.state is S.FREE
    assert ring.submit() == 0 and head.submitted == []
    assert ring.get_sqe() is slot


async def test_reprepare_before_submit_overwrites() -> None:
    ring, head = fake_ring(1)
    slot = ring.get_sqe()
    assert slot is not None
    slot.prep_write(3, 1, bytes(BLOCK), user_data="first")
    slot.prep_read(9, 2, bytearray(2 * BLOCK), user_data="second")
    assert slot.kind == "read" and slot.data_out is None and slot.user_data == "second"
    assert ring.submit() == 1
    assert head.cmds == [rw_bytes(IoOpcode.READ, 9, 2)]


async def test_submit_and_wait(autojump_clock: trio.testing.MockClock) -> None:
    ring, head = fake_ring(4)
    for i in range(3):
        slot = ring.get_sqe()
        assert slot is not None
        slot.prep_flush(user_data=i)

    async def completer() -> None:
        for slot in list(head.submitted):
            await trio.sleep(0.1)
            head.complete(slot)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(completer)
        assert await ring.submit_and_wait(2) == 3
        assert ring.ready == 2 and trio.current_time() == pytest.approx(0.2)
    assert ring.ready == 3
    # wait() is bounded by what can still complete: nothing is in flight now.
    await ring.wait(10)


async def test_wait_bounded_by_inflight(autojump_clock: trio.testing.MockClock) -> None:
    ring, head = fake_ring(4)
    slot = ring.get_sqe()
    assert slot is not None
    slot.prep_flush()
    ring.submit()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ring.wait, 5)
        await trio.sleep(1)
        head.complete(slot)  # the waiter only ever gets one: it must wake now
    assert ring.ready == 1


# -- SQE bytes ---------------------------------------------------------------------------------


async def test_prep_read_write_bytes() -> None:
    ring, head = fake_ring(2)
    r = ring.get_sqe()
    w = ring.get_sqe()
    assert r is not None and w is not None
    r.prep_read(0x0123456789ABCDEF, 8, bytearray(8 * BLOCK))
    w.prep_write(42, 0x10000, bytes(0x10000 * BLOCK))
    assert bytes(r.cmd) == rw_bytes(IoOpcode.READ, 0x0123456789ABCDEF, 8)
    assert bytes(w.cmd) == rw_bytes(IoOpcode.WRITE, 42, 0x10000)
    assert r.cmd[0] == 0x02 and w.cmd[0] == 0x01
    assert r.cmd[1] == w.cmd[1] == 0x40
    assert r.cmd[4:8] == NSID.to_bytes(4, "little")
    assert r.cmd[40:48] == (0x0123456789ABCDEF).to_bytes(8, "little")
    assert r.cmd[48:50] == (7).to_bytes(2, "little")  # 0's based
    assert w.cmd[48:50] == b"\xff\xff"
    assert (r.kind, w.kind) == ("read", "write")
    ring.submit()
    assert head.cmds == [bytes(r.cmd), bytes(w.cmd)]


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    slba=st.integers(0, 2**64 - 1),
    nblocks=st.integers(1, 0x10000),
    nsid=st.integers(1, 0xFFFFFFFE),
    write=st.booleans(),
    junk=st.binary(min_size=64, max_size=64),
)
def test_prep_rw_matches_the_declaration(slba: int, nblocks: int, nsid: int, write: bool,
                                         junk: bytes) -> None:  # fmt: skip
    ring, _ = fake_ring(1, FakeRingHead(nsid=nsid, block_size=1))
    slot = ring.slots[0]
    slot.prep_cmd(junk)  # whatever the slot held before must not leak into the new command
    if write:
        slot.prep_write(slba, nblocks, bytes(nblocks))
        expected = rw_bytes(IoOpcode.WRITE, slba, nblocks, nsid)
    else:
        slot.prep_read(slba, nblocks, bytearray(nblocks))
        expected = rw_bytes(IoOpcode.READ, slba, nblocks, nsid)
    assert bytes(slot.cmd) == expected
    assert len(slot.cmd) == SQE_SIZE


def test_prep_flush_bytes() -> None:
    ring, _ = fake_ring(1)
    slot = ring.slots[0]
    slot.prep_cmd(b"\xa5" * 64)
    slot.prep_flush(user_data="f")
    expected = SQE.build(dict(opcode=IoOpcode.FLUSH, flags=0x40, nsid=NSID,
                              sgl=dict(type=0)))  # fmt: skip
    assert bytes(slot.cmd) == expected
    assert slot.cmd[0] == 0 and slot.kind == "flush"
    assert slot.data_in is None and slot.data_out is None and slot.user_data == "f"


def test_prep_cmd_copies_exactly_the_64_bytes() -> None:
    ring, _ = fake_ring(1)
    slot = ring.slots[0]
    cmd = bytearray(range(64))
    cmd[0] = 0x05  # Compare
    slot.prep_cmd(cmd, data_out=bytes(BLOCK), user_data="pt")
    assert bytes(slot.cmd) == bytes(cmd) and slot.cmd is not cmd
    cmd[10] = 0xEE  # the caller's buffer is not referenced
    assert slot.cmd[10] == 10
    assert slot.kind == "passthru" and slot.data_in is None
    assert slot.data_out is not None and len(slot.data_out) == BLOCK
    slot.prep_cmd(memoryview(b"\x80" + bytes(63)), data_in=bytearray(7))
    assert bytes(slot.cmd) == b"\x80" + bytes(63)
    assert slot.data_out is None and slot.data_in is not None and len(slot.data_in) == 7


@pytest.mark.parametrize("size", [0, 1, 63, 65, 128])
def test_prep_cmd_rejects_other_lengths(size: int) -> None:
    ring, _ = fake_ring(1)
    slot = ring.slots[0]
    with pytest.raises(ValueError, match="64 bytes"):
        slot.prep_cmd(bytes(size))
    assert slot.state is S.FREE


def test_prep_cmd_rejects_two_data_directions() -> None:
    ring, _ = fake_ring(1)
    ring.register_buffers([bytearray(BLOCK)])
    slot = ring.slots[0]
    with pytest.raises(ValueError, match="one direction"):
        slot.prep_cmd(bytes(64), data_out=b"x", data_in=bytearray(1))
    with pytest.raises(ValueError, match="one direction"):
        slot.prep_cmd(bytes(64), data_out=0, data_in=0)
    assert slot.state is S.FREE


# -- lengths and buffers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nblocks", "size"),
    [
        (1, BLOCK - 1),
        (1, BLOCK + 1),
        (2, BLOCK),
        (8, 4096 - 512),
        (0, 0),
        (0, BLOCK),
        (0x10001, 0x10001 * BLOCK),
        (-1, BLOCK),
    ],
)
def test_length_checks(nblocks: int, size: int) -> None:
    ring, _ = fake_ring(1)
    slot = ring.slots[0]
    with pytest.raises(ValueError, match="byte buffer"):
        slot.prep_read(0, nblocks, bytearray(size))
    with pytest.raises(ValueError, match="byte buffer"):
        slot.prep_write(0, nblocks, bytes(size))
    assert slot.state is S.FREE


def test_buffer_length_counts_bytes_not_items() -> None:
    ring, _ = fake_ring(1)
    words = array("I", bytes(BLOCK))  # BLOCK // 4 items, BLOCK bytes
    ring.register_buffers([memoryview(words)])
    slot = ring.slots[0]
    slot.prep_read(0, 1, 0)
    assert slot.data_in is not None and slot.data_in.nbytes == BLOCK and len(slot.data_in) == BLOCK


def test_registered_buffers_by_index() -> None:
    ring, _ = fake_ring(2)
    buffers = [bytearray(BLOCK), bytearray(2 * BLOCK)]
    ring.register_buffers(list(buffers))
    slot = ring.slots[0]
    slot.prep_read(0, 2, 1)
    view = slot.data_in
    assert view is not None and view.obj is buffers[1] and len(view) == 2 * BLOCK
    view[0] = 0x77  # I/O lands directly in the registered buffer
    assert buffers[1][0] == 0x77
    slot.prep_write(0, 1, 0)
    assert slot.data_out is not None and slot.data_out.obj is buffers[0]
    assert slot.data_in is None
    # The same view object every time: no per-I/O memoryview for a registered buffer.
    slot.prep_read(5, 2, 1)
    assert slot.data_in is view
    with pytest.raises(ValueError, match="byte buffer"):
        slot.prep_read(0, 1, 1)  # wrong size for buffer 1
    with pytest.raises(IndexError):
        slot.prep_read(0, 1, 2)
    slot.prep_cmd(bytes(64), data_in=1)
    assert slot.data_in is view


async def test_cqe_seen_drops_buffer_and_user_data_references() -> None:
    ring, head = fake_ring(1)
    data = bytearray(BLOCK)
    slot = ring.get_sqe()
    assert slot is not None
    slot.prep_read(0, 1, data, user_data=object())
    ring.submit()
    head.complete(slot)
    ring.cqe_seen(slot)
    assert slot.data_in is None and slot.data_out is None and slot.user_data is None


# -- the stable command copy -----------------------------------------------------------------


async def test_slot_cmd_is_stable_across_preps_retries_and_reuse() -> None:
    ring, head = fake_ring(1)
    slot = ring.slots[0]
    cmd, view = slot.cmd, slot.view
    assert view.obj is cmd and len(cmd) == SQE_SIZE

    got = ring.get_sqe()
    assert got is slot
    slot.prep_write(100, 1, bytes(BLOCK))
    ring.submit()
    first = bytes(slot.cmd)
    # A retry on the same path and a failover through the requeue list: the head resubmits the
    # very same slot, whose command copy is the same object with the same bytes.
    slot.move(S.INFLIGHT)
    slot.move(S.REQUEUED)
    slot.move(S.REQUEUED)
    head.submit(slot)
    assert head.submitted == [slot, slot]
    assert head.cmds == [first, first]
    assert slot.cmd is cmd and slot.view is view
    head.complete(slot)
    ring.cqe_seen(slot)

    for kind in ("read", "flush", "passthru"):
        got = ring.get_sqe()
        assert got is slot
        if kind == "read":
            slot.prep_read(1, 1, bytearray(BLOCK))
        elif kind == "flush":
            slot.prep_flush()
        else:
            slot.prep_cmd(bytes(range(64)))
        ring.submit()
        head.complete(slot)
        ring.cqe_seen(slot)
        assert slot.cmd is cmd and slot.view is view


def test_slots_are_fixed() -> None:
    ring, _ = fake_ring(5)
    assert [s.index for s in ring.slots] == list(range(5))
    assert all(type(s) is Slot and s.ring is ring and s.state is S.FREE for s in ring.slots)
    assert len({id(s.cmd) for s in ring.slots}) == 5
    with pytest.raises(AttributeError):
        ring.slots[0].unexpected = 1  # type: ignore[attr-defined]  # __slots__


def test_repr_and_status() -> None:
    ring, _ = fake_ring(1)
    slot = ring.slots[0].prep_flush()
    slot.status_word = 0x0604
    assert not slot.ok and slot.status.is_ana_error
    assert "PREPARED" in repr(slot) and "0x604" in repr(slot)
    slot.status_word = 0x0001  # phase tag only
    assert slot.ok


async def test_completions_never_drops_a_completion_of_a_reused_slot() -> None:
    head = FakeRingHead()

    def submit_and_fail(slot: Slot) -> None:  # a head with no path left fails it inline
        slot.status_word = 0x86E0
        slot.ring.post(slot)

    head.submit = submit_and_fail  # type: ignore[method-assign]
    ring = Ring(head, 1)  # type: ignore[arg-type]
    slot = ring.get_sqe()
    assert slot is not None
    slot.prep_flush(user_data="first")
    ring.submit()
    seen = []
    for cqe in ring.completions():
        tag = cqe.user_data
        seen.append(tag)
        ring.cqe_seen(cqe)
        if tag == "first":
            again = ring.get_sqe()
            assert again is not None
            again.prep_flush(user_data="second")
            ring.submit()
    assert seen == ["first", "second"]
