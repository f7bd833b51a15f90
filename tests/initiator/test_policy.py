"""The pure multipath decisions of ``initiator.policy`` (docs/PROTOCOL.md §3.4 and §8.3).

``decide_disposition`` mirrors ``nvme_decide_disposition`` (drivers/nvme/host/core.c):
success, then DNR / retry budget, then path errors (SCT 3) or a dying queue, then retry.
The selectors mirror ``__nvme_find_path`` (numa without NUMA distances),
``nvme_round_robin_path`` and ``nvme_queue_depth_path`` (drivers/nvme/host/multipath.c).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings, strategies as st

from initiator.policy import (
    IOPOLICIES,
    MAX_RETRIES,
    SELECTORS,
    Disposition,
    PathView,
    decide_disposition,
    retry_delay,
    select_numa,
    select_queue_depth,
    select_round_robin,
)
from nvmeof.constants import AnaState
from nvmeof.status import CRD_SHIFT, DNR_BIT, MORE_BIT, Status, StatusCode, status_word

COMPLETE, RETRY, FAILOVER = Disposition.COMPLETE, Disposition.RETRY, Disposition.FAILOVER

PATH_CODES = [
    StatusCode.INTERNAL_PATH_ERROR,  # 0x300
    StatusCode.ANA_PERSISTENT_LOSS,  # 0x301
    StatusCode.ANA_INACCESSIBLE,  # 0x302
    StatusCode.ANA_TRANSITION,  # 0x303
    StatusCode.CTRL_PATH_ERROR,  # 0x360
    StatusCode.HOST_PATH_ERROR,  # 0x370
    StatusCode.HOST_ABORTED_CMD,  # 0x371
]
GENERIC_CODES = [
    StatusCode.INVALID_OPCODE,
    StatusCode.INVALID_FIELD,
    StatusCode.DATA_XFER_ERROR,
    StatusCode.INTERNAL,
    StatusCode.ABORT_REQ,
    StatusCode.CMD_INTERRUPTED,
    StatusCode.TRANSIENT_TR_ERR,
    StatusCode.LBA_RANGE,
    StatusCode.NS_NOT_READY,
    StatusCode.RESERVATION_CONFLICT,
    StatusCode.INVALID_PI,  # SCT 1
    StatusCode.AUTH_REQUIRED,  # SCT 1 (re-authentication is not modelled: a plain retry)
    StatusCode.WRITE_FAULT,  # SCT 2
    StatusCode.READ_ERROR,
    StatusCode.COMPARE_FAILED,
    0x7FF,  # SCT 7 vendor specific
]
ALL_KNOWN = sorted({int(c) for c in StatusCode} | {0x7FF})


def word(code: int, *, dnr: bool = False, crd: int = 0, more: bool = False, phase: int = 0) -> int:
    return Status(code, dnr=dnr, more=more, crd=crd).word | phase


# -- decide_disposition: the table -------------------------------------------------------------


@pytest.mark.parametrize("phase", [0, 1])
@pytest.mark.parametrize("alive", [True, False])
@pytest.mark.parametrize("retries", [0, MAX_RETRIES, 100])
def test_success_completes_whatever_else(phase: int, alive: bool, retries: int) -> None:
    assert decide_disposition(phase, retries=retries, path_alive=alive) is COMPLETE


def test_worked_words() -> None:
    assert decide_disposition(0x0000, retries=0) is COMPLETE
    assert decide_disposition(0x0001, retries=0) is COMPLETE  # phase tag only
    assert decide_disposition(0x0604, retries=0) is FAILOVER  # ANA Inaccessible
    assert decide_disposition(0x0606, retries=0) is FAILOVER  # ANA Transition
    assert decide_disposition(0x06E2, retries=0) is FAILOVER  # Host Aborted Command
    assert decide_disposition(0x06E0, retries=0) is FAILOVER  # Host Path Error
    assert decide_disposition(0x86E0, retries=0) is COMPLETE  # ... with DNR ("no path")
    assert decide_disposition(0x8004, retries=0) is COMPLETE  # Invalid Field + DNR
    assert decide_disposition(0x000C, retries=0) is RETRY  # Internal Error
    assert decide_disposition(0x100C, retries=0) is RETRY  # ... with CRD 1
    assert decide_disposition(0x000C, retries=0, path_alive=False) is FAILOVER


@pytest.mark.parametrize("code", ALL_KNOWN, ids=hex)
@pytest.mark.parametrize("alive", [True, False])
def test_dnr_always_completes(code: int, alive: bool) -> None:
    for crd in range(4):
        for more in (False, True):
            w = word(code, dnr=True, crd=crd, more=more)
            assert decide_disposition(w, retries=0, path_alive=alive) is COMPLETE


@pytest.mark.parametrize("code", [c for c in ALL_KNOWN if c], ids=hex)
@pytest.mark.parametrize("alive", [True, False])
def test_exhausted_retry_budget_completes(code: int, alive: bool) -> None:
    w = word(code)
    assert decide_disposition(w, retries=MAX_RETRIES, path_alive=alive) is COMPLETE
    assert decide_disposition(w, retries=MAX_RETRIES + 7, path_alive=alive) is COMPLETE
    assert decide_disposition(w, retries=2, path_alive=alive, max_retries=2) is COMPLETE
    # One short of the budget it is still retried or failed over.
    assert decide_disposition(w, retries=MAX_RETRIES - 1, path_alive=alive) is not COMPLETE


@pytest.mark.parametrize("code", PATH_CODES, ids=hex)
@pytest.mark.parametrize("alive", [True, False])
def test_path_errors_fail_over(code: int, alive: bool) -> None:
    for crd in range(4):
        for more in (False, True):
            for phase in (0, 1):
                w = word(code, crd=crd, more=more, phase=phase)
                assert decide_disposition(w, retries=0, path_alive=alive) is FAILOVER
                assert decide_disposition(w, retries=MAX_RETRIES - 1, path_alive=alive) is FAILOVER


@pytest.mark.parametrize("code", [c for c in ALL_KNOWN if c and c >> 8 != 3], ids=hex)
def test_any_error_on_a_dead_path_fails_over(code: int) -> None:
    assert decide_disposition(word(code), retries=0, path_alive=False) is FAILOVER
    assert decide_disposition(word(code, crd=2, more=True), retries=3, path_alive=False) is FAILOVER
    assert decide_disposition(word(code, dnr=True), retries=0, path_alive=False) is COMPLETE


@pytest.mark.parametrize("code", GENERIC_CODES, ids=hex)
def test_other_errors_retry_on_the_same_path(code: int) -> None:
    for retries in range(MAX_RETRIES):
        for crd in range(4):
            assert decide_disposition(word(code, crd=crd), retries=retries) is RETRY
            assert decide_disposition(word(code, more=True, phase=1), retries=retries) is RETRY


def reference(w: int, retries: int, alive: bool, max_retries: int) -> Disposition:
    """docs/PROTOCOL.md §3.4 rows 1, 2, 4 and 6, in that order (kernel status = word >> 1)."""
    if w >> 1 == 0:
        return COMPLETE
    if w & DNR_BIT or retries >= max_retries:
        return COMPLETE
    if Status.from_word(w).is_path_error or not alive:
        return FAILOVER
    return RETRY


def test_every_status_word_exhaustively() -> None:
    for w in range(0x10000):
        for retries, alive in ((0, True), (0, False), (MAX_RETRIES, True), (MAX_RETRIES, False)):
            got = decide_disposition(w, retries=retries, path_alive=alive)
            assert got is reference(w, retries, alive, MAX_RETRIES), (hex(w), retries, alive)


@settings(derandomize=True, max_examples=500, deadline=None)
@given(
    w=st.integers(0, 0xFFFF),
    retries=st.integers(0, 12),
    alive=st.booleans(),
    max_retries=st.integers(0, 10),
)
def test_ordering_rules(w: int, retries: int, alive: bool, max_retries: int) -> None:
    got = decide_disposition(w, retries=retries, path_alive=alive, max_retries=max_retries)
    assert got is reference(w, retries, alive, max_retries)
    # The phase tag never matters; nor does the More bit once the status code is an error
    # (with code 0, More/CRD/DNR alone make a non-zero kernel status, as in core.c).
    for other in (w ^ 1, w ^ MORE_BIT) if w & 0x0FFE else (w ^ 1,):
        assert decide_disposition(other, retries=retries, path_alive=alive,
                                  max_retries=max_retries) is got  # fmt: skip
    # 1. Success wins over everything.
    if w & 0xFFFE == 0:
        assert got is COMPLETE
    # 2. DNR, or an exhausted budget, beats path errors and dead queues.
    if w & DNR_BIT or retries >= max_retries:
        assert got is COMPLETE
    # A DNR error never leaves the path, whatever else is set.
    assert decide_disposition(w | DNR_BIT, retries=retries, path_alive=alive) is COMPLETE
    # 4. A failover needs a path error or a dead queue; a dead queue never retries in place.
    if got is FAILOVER:
        assert (w >> 9) & 7 == 3 or not alive
    if not alive:
        assert got is not RETRY
    # 6. Retry only for a live path and a non-path error.
    if got is RETRY:
        assert alive and (w >> 9) & 7 != 3 and not w & DNR_BIT and retries < max_retries


def test_failover_does_not_depend_on_crd_or_more() -> None:
    base = status_word(StatusCode.ANA_TRANSITION)
    for extra in range(16):
        w = base | (extra & 3) << CRD_SHIFT | (MORE_BIT if extra & 4 else 0) | (extra >> 3)
        assert decide_disposition(w, retries=0) is FAILOVER


# -- retry_delay -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("crd", "crdt", "seconds"),
    [
        (0, (10, 20, 30), 0.0),
        (1, (10, 20, 30), 1.0),
        (2, (10, 20, 30), 2.0),
        (3, (10, 20, 30), 3.0),
        (1, (5, 0, 0), 0.5),
        (1, (1, 0, 0), 0.1),
        (2, (5, 0, 0), 0.0),  # CRDT2 is 0: no delay
        (3, (0, 0, 0), 0.0),
        (1, (0xFFFF, 0, 0), 6553.5),
        (1, (), 0.0),  # no Identify data (yet)
        (3, (7, 8), 0.0),  # index beyond what the controller reported
        (2, (7, 8), 0.8),
    ],
)
def test_retry_delay(crd: int, crdt: tuple[int, ...], seconds: float) -> None:
    for code in (StatusCode.INTERNAL, StatusCode.NS_NOT_READY, StatusCode.ANA_TRANSITION):
        for dnr in (False, True):
            for more in (False, True):
                w = word(code, crd=crd, dnr=dnr, more=more)
                assert retry_delay(w, crdt) == pytest.approx(seconds)
                assert retry_delay(w | 1, list(crdt)) == pytest.approx(seconds)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.integers(0, 0xFFFF), st.tuples(*[st.integers(0, 0xFFFF)] * 3))
def test_retry_delay_is_crdt_times_100ms(w: int, crdt: tuple[int, int, int]) -> None:
    crd = (w >> 12) & 3
    expected = crdt[crd - 1] / 10 if crd else 0.0
    assert retry_delay(w, crdt) == pytest.approx(expected)


# -- selectors -------------------------------------------------------------------------------


@dataclass(frozen=True)
class P:
    """A PathView: usable = controller LIVE, not ANA-pending, namespace ready."""

    ana_state: AnaState = AnaState.OPTIMIZED
    usable: bool = True
    inflight: int = 0


OPT = P(AnaState.OPTIMIZED)
NONOPT = P(AnaState.NON_OPTIMIZED)
INACC = P(AnaState.INACCESSIBLE)
LOSS = P(AnaState.PERSISTENT_LOSS)
CHANGE = P(AnaState.CHANGE)
OPT_DOWN = P(AnaState.OPTIMIZED, usable=False)  # not live, or ANA pending
NONOPT_DOWN = P(AnaState.NON_OPTIMIZED, usable=False)
UNUSABLE = [INACC, LOSS, CHANGE, OPT_DOWN, NONOPT_DOWN]


def test_view_satisfies_the_protocol() -> None:
    view: PathView = OPT
    assert view.usable and view.inflight == 0


def test_policies_are_registered() -> None:
    assert IOPOLICIES == ("numa", "round-robin", "queue-depth")
    assert SELECTORS["numa"] is select_numa
    assert SELECTORS["round-robin"] is select_round_robin
    assert SELECTORS["queue-depth"] is select_queue_depth


@pytest.mark.parametrize("policy", IOPOLICIES)
@pytest.mark.parametrize("current", [None, 0, 1, 4, 99])
def test_nothing_usable(policy: str, current: int | None) -> None:
    select = SELECTORS[policy]
    assert select([], current) is None
    assert select(UNUSABLE, current) is None
    assert select([P(s, usable=False, inflight=0) for s in AnaState], current) is None


@pytest.mark.parametrize("policy", IOPOLICIES)
def test_only_optimized_and_non_optimized_are_ever_chosen(policy: str) -> None:
    select = SELECTORS[policy]
    for bad in UNUSABLE:
        for current in (None, 0, 1):
            assert select([bad, NONOPT], current) == 1
            assert select([bad, bad, OPT], current) == 2
            assert select([NONOPT_DOWN, bad, OPT_DOWN], current) is None


# numa ---------------------------------------------------------------------------------------


def test_numa_first_optimized_in_list_order() -> None:
    assert select_numa([OPT, OPT], None) == 0
    assert select_numa([NONOPT, OPT, OPT], None) == 1
    assert select_numa([INACC, OPT_DOWN, NONOPT, OPT], None) == 3


def test_numa_keeps_the_cached_optimized_path() -> None:
    assert select_numa([OPT, OPT, OPT], 2) == 2
    assert select_numa([NONOPT, OPT, OPT], 2) == 2
    # Load is irrelevant for numa.
    assert select_numa([OPT, P(inflight=1000)], 1) == 1


def test_numa_recomputes_when_the_cached_path_is_not_live_optimized() -> None:
    assert select_numa([OPT, OPT_DOWN], 1) == 0
    assert select_numa([OPT, NONOPT], 1) == 0  # cached non-optimized: an optimized one is back
    assert select_numa([NONOPT, OPT, INACC], 2) == 1
    assert select_numa([OPT, OPT], 5) == 0  # stale index (a path was removed)


def test_numa_falls_back_to_first_non_optimized() -> None:
    assert select_numa([INACC, NONOPT, NONOPT], None) == 1
    assert select_numa([OPT_DOWN, NONOPT_DOWN, NONOPT, NONOPT], 0) == 2
    # The cached non-optimized path is not "kept": the first one in list order is chosen.
    assert select_numa([NONOPT, NONOPT], 1) == 0


# round-robin --------------------------------------------------------------------------------


def rr_sequence(paths: Sequence[PathView], current: int | None, n: int) -> list[int | None]:
    out: list[int | None] = []
    for _ in range(n):
        current = select_round_robin(paths, current)
        out.append(current)
    return out


def test_rr_no_current_starts_at_first_optimized() -> None:
    assert select_round_robin([OPT, OPT], None) == 0
    assert select_round_robin([NONOPT, INACC, OPT, OPT], None) == 2
    assert select_round_robin([NONOPT, INACC], None) == 0


def test_rr_rotates_among_optimized_paths_only() -> None:
    assert rr_sequence([OPT, OPT], None, 4) == [0, 1, 0, 1]
    assert rr_sequence([OPT, NONOPT, OPT, INACC, OPT], None, 6) == [0, 2, 4, 0, 2, 4]
    assert rr_sequence([NONOPT, OPT, NONOPT, OPT], 3, 4) == [1, 3, 1, 3]


def test_rr_stays_on_the_only_optimized_path() -> None:
    assert rr_sequence([OPT, NONOPT, NONOPT], 0, 3) == [0, 0, 0]
    assert rr_sequence([NONOPT, OPT_DOWN, OPT], 2, 3) == [2, 2, 2]
    assert select_round_robin([OPT], 0) == 0


def test_rr_leaves_non_optimized_as_soon_as_an_optimized_path_is_usable() -> None:
    assert select_round_robin([NONOPT, OPT], 0) == 1
    assert select_round_robin([OPT, NONOPT], 1) == 0


def test_rr_current_unusable_moves_on() -> None:
    assert select_round_robin([OPT_DOWN, OPT, OPT], 0) == 1
    assert select_round_robin([OPT, INACC, OPT], 1) == 2
    assert select_round_robin([NONOPT, OPT_DOWN], 1) == 0
    assert select_round_robin([OPT_DOWN, NONOPT_DOWN], 0) is None


def test_rr_non_optimized_only_when_no_optimized_is_usable() -> None:
    assert select_round_robin([NONOPT, OPT_DOWN], 1) == 0
    assert select_round_robin([OPT_DOWN, CHANGE, NONOPT], 0) == 2
    # The only usable path is the current non-optimized one: stay there.
    assert rr_sequence([NONOPT, OPT_DOWN, INACC], 0, 3) == [0, 0, 0]


def test_rr_stale_current_index() -> None:
    assert select_round_robin([OPT, OPT], 7) == 0
    assert select_round_robin([NONOPT], 3) == 0


def test_rr_rotates_among_non_optimized_paths_when_none_is_optimized() -> None:
    assert select_round_robin([NONOPT, NONOPT], 0) == 1
    assert rr_sequence([NONOPT, INACC, NONOPT], 0, 4) == [2, 0, 2, 0]


# queue-depth --------------------------------------------------------------------------------


def test_qd_least_busy_optimized() -> None:
    paths = [P(inflight=5), P(inflight=2), P(inflight=9)]
    assert select_queue_depth(paths, None) == 1
    assert select_queue_depth(paths, 0) == 1  # the cached path is irrelevant


def test_qd_ties_go_to_the_first() -> None:
    assert select_queue_depth([P(inflight=3), P(inflight=3)], 1) == 0
    assert select_queue_depth([P(inflight=4), P(inflight=3), P(inflight=3)], None) == 1


def test_qd_idle_path_returns_immediately() -> None:
    class Tripwire:
        """A path that must not be looked at."""

        @property
        def usable(self) -> bool:
            raise AssertionError("looked past an idle optimized path")

        ana_state = AnaState.OPTIMIZED
        inflight = 0

    assert select_queue_depth([P(inflight=7), P(inflight=0), Tripwire()], None) == 1


def test_qd_prefers_any_optimized_over_idle_non_optimized() -> None:
    paths = [P(AnaState.NON_OPTIMIZED, inflight=0), P(inflight=100)]
    assert select_queue_depth(paths, None) == 1


def test_qd_ignores_unusable_paths_whatever_their_load() -> None:
    paths = [P(usable=False, inflight=0), P(AnaState.INACCESSIBLE, inflight=0), P(inflight=50)]
    assert select_queue_depth(paths, None) == 2


def test_qd_least_busy_non_optimized_when_no_optimized() -> None:
    paths = [OPT_DOWN, P(AnaState.NON_OPTIMIZED, inflight=4), INACC,
             P(AnaState.NON_OPTIMIZED, inflight=1), P(AnaState.NON_OPTIMIZED, inflight=1)]  # fmt: skip
    assert select_queue_depth(paths, None) == 3


@settings(derandomize=True, max_examples=400, deadline=None)
@given(
    st.lists(
        st.builds(P, st.sampled_from(list(AnaState)), st.booleans(), st.integers(0, 8)),
        max_size=6,
    ),
    st.one_of(st.none(), st.integers(0, 7)),
)
def test_selectors_agree_on_usability(paths: list[P], current: int | None) -> None:
    """Whatever the policy, a choice exists iff some path is usable and Optimized or
    Non-optimized; it is such a path, and an Optimized one whenever one is usable."""
    usable = [i for i, p in enumerate(paths) if p.usable and p.ana_state.usable]
    optimized = [i for i in usable if paths[i].ana_state == AnaState.OPTIMIZED]
    for select in SELECTORS.values():
        got = select(paths, current)
        if not usable:
            assert got is None
            continue
        assert got in usable
        if optimized:
            assert got in optimized
    qd = select_queue_depth(paths, current)
    if optimized:
        assert qd == min(optimized, key=lambda i: (paths[i].inflight, i))
