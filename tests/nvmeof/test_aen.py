"""AER slots, pending events and nvmet's masking rule (docs/PROTOCOL.md §5.4, §8.4)."""

from __future__ import annotations

import pytest

from nvmeof.aen import ANA_CHANGE, DISCOVERY_CHANGE, NS_CHANGED, AsyncEventQueue
from nvmeof.constants import LogPage


def test_dw0_values() -> None:
    assert ANA_CHANGE.dw0 == 0x000C0302
    assert NS_CHANGED.dw0 == 0x00040002
    assert DISCOVERY_CHANGE.dw0 == 0x0070F002


def test_event_waits_for_an_aer() -> None:
    queue = AsyncEventQueue()
    assert queue.post(ANA_CHANGE) == []
    assert queue.add_request(31) == [(31, ANA_CHANGE)]
    assert queue.outstanding == 0


def test_masked_until_log_read_without_rae() -> None:
    queue = AsyncEventQueue()
    queue.add_request(31)
    assert queue.post(ANA_CHANGE) == [(31, ANA_CHANGE)]
    queue.add_request(31)
    assert queue.post(ANA_CHANGE) == []  # masked
    queue.log_read(LogPage.ANA, rae=True)
    assert queue.post(ANA_CHANGE) == []  # still masked with RAE = 1
    queue.log_read(LogPage.ANA, rae=False)
    assert queue.post(ANA_CHANGE) == [(31, ANA_CHANGE)]


def test_other_kinds_are_independent() -> None:
    queue = AsyncEventQueue()
    queue.add_request(1)
    queue.add_request(2)
    assert queue.post(ANA_CHANGE) == [(1, ANA_CHANGE)]
    assert queue.post(NS_CHANGED) == [(2, NS_CHANGED)]


def test_limit() -> None:
    queue = AsyncEventQueue(limit=2)
    queue.add_request(1)
    queue.add_request(2)
    with pytest.raises(OverflowError):
        queue.add_request(3)
    assert queue.drain() == [1, 2]
