"""The per-I/O shortcuts of the ring, the head and the bench give what the general code gives:
the same units for the same seed, the same command bytes however dirty the slot was, the same
latency buckets."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from initiator.bench import BenchJob, BenchOptions, BenchResult
from initiator.latency import _MAJOR, _SUB, LatencyHistogram, _index
from initiator.multipath import MultipathHead
from initiator.policy import select_numa
from initiator.ring import SlotState
from initiator.session import SessionState
from nvmeof.constants import AnaState
from tests.initiator.fakes import BLOCK, FakeSession, fake_ring, make_rig


@pytest.mark.parametrize("units", [1, 2, 3, 7, 1000, 16384, 16385])
def test_random_picks_follow_randrange(units: int) -> None:
    """``_pick`` draws its units like ``Random.randrange(units)``: a seed picks the same ones."""
    head = MultipathHead("nqn.test", 1, block_size=BLOCK, nlbas=units * 8)
    opts = BenchOptions(bs=8 * BLOCK, iodepth=4, size=units * 8 * BLOCK, seed=11)
    job = BenchJob(head, opts, 0, BenchResult())
    reference = random.Random(11)
    for _ in range(300):
        assert job._pick(sequential=False) == reference.randrange(units)
    job.busy[:] = b"\x01" * units  # every unit busy: eight tries, each a randrange
    assert job._pick(sequential=False) is None
    job.busy[:] = bytes(units)
    for _ in range(8):
        reference.randrange(units)
    assert job._pick(sequential=False) == reference.randrange(units)


def test_sequential_picks_wrap_and_skip_busy_units() -> None:
    head = MultipathHead("nqn.test", 1, block_size=BLOCK, nlbas=4 * 8)
    opts = BenchOptions(bs=8 * BLOCK, iodepth=4, size=4 * 8 * BLOCK)
    job = BenchJob(head, opts, 0, BenchResult())
    job.busy[1] = 1
    assert [job._pick(sequential=True) for _ in range(4)] == [0, 2, 3, 0]


@given(
    dirt=st.binary(min_size=64, max_size=64),
    slba=st.integers(0, (1 << 64) - 1),
    nblocks=st.integers(1, 8),
    write=st.booleans(),
)
def test_read_write_commands_do_not_depend_on_what_the_slot_held(
    dirt: bytes, slba: int, nblocks: int, write: bool
) -> None:
    """``prep_read``/``prep_write`` pack the whole 64 bytes: a slot that last carried a raw
    command gives the bytes a fresh slot gives."""
    commands = []
    for prior in (None, dirt):
        ring, _ = fake_ring(1)
        slot = ring.slots[0]
        if prior is not None:
            slot.cmd[:] = prior
        buffer = bytearray(nblocks * BLOCK)
        if write:
            slot.prep_write(slba, nblocks, buffer)
        else:
            slot.prep_read(slba, nblocks, buffer)
        commands.append(bytes(slot.cmd))
    assert commands[0] == commands[1]
    assert commands[0][0] == (0x01 if write else 0x02) and commands[0][1] == 0x40


@given(ns=st.one_of(st.integers(-5, 5000), st.integers(0, 1 << 62)))
def test_latency_record_buckets_like_index(ns: int) -> None:
    hist = LatencyHistogram()
    hist.record(ns)
    expected = _index(max(ns, 0))
    assert hist.counts[expected] == 1 and sum(hist.counts) == 1
    assert 0 <= expected < _MAJOR * _SUB


_LIVE, _OPT, _NON = SessionState.LIVE, AnaState.OPTIMIZED, AnaState.NON_OPTIMIZED
_PATH_STATE = st.tuples(  # mostly usable paths, so that every rule of select_numa is reached
    st.sampled_from([_LIVE, _LIVE, _LIVE, *SessionState]),
    st.sampled_from([False, False, False, True]),
    st.sampled_from([_OPT, _OPT, _NON, _NON, *AnaState]),
)


@settings(max_examples=300)
@given(states=st.lists(_PATH_STATE, min_size=1, max_size=3),
       current=st.one_of(st.none(), st.integers(0, 3)))  # fmt: skip
async def test_submit_picks_the_path_select_numa_picks(
    states: list[tuple[SessionState, bool, AnaState]], current: int | None
) -> None:
    """The head's inline form of select_numa's first rule (keep the cached path while it is
    usable and optimized) picks what select_numa picks, whatever the paths' states."""
    sessions = [FakeSession(f"p{i}", record=False, state=state)
                for i, (state, _, _) in enumerate(states)]  # fmt: skip
    rig = make_rig(*sessions, entries=1, nbuffers=1)
    for path, (_, pending, ana) in zip(rig.paths, states, strict=True):
        path.ana_pending, path.ana_state = pending, ana
    rig.head._current = current
    expected = select_numa(rig.paths, current)
    slot = rig.read()
    if expected is None:
        assert slot.state is not SlotState.INFLIGHT and rig.head._current == current
    else:
        assert slot.state is SlotState.INFLIGHT and slot.path is rig.paths[expected]
        assert rig.head._current == expected
