"""The host's ANATT timer (``nvme_anatt_timeout``): an ANA group left in the change state for
more than 2 x ANATT seconds resets the controller; leaving the change state disarms it."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from initiator.session import SessionState
from tests.initiator.fakes import FakeSession


def association(anatt: int) -> Any:
    return SimpleNamespace(identify=SimpleNamespace(anatt=anatt))


async def test_anatt_expiry_resets_the_controller(autojump_clock: trio.testing.MockClock) -> None:
    session = FakeSession("a")
    session.assoc = None  # no queues to abort in this fake
    session._arm_anatt(association(3), in_change=True)
    deadline = session.anatt_deadline
    assert deadline == pytest.approx(trio.current_time() + 6)
    await trio.sleep(1)
    session._arm_anatt(association(3), in_change=True)  # still in change: not pushed back
    assert session.anatt_deadline == deadline
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session._anatt_watch)
        await trio.sleep(4.9)
        assert session.live
        await trio.sleep(0.2)
        assert session.state is SessionState.CONNECTING
        nursery.cancel_scope.cancel()


async def test_leaving_change_disarms(autojump_clock: trio.testing.MockClock) -> None:
    session = FakeSession("a")
    session._arm_anatt(association(1), in_change=True)
    assert session.anatt_deadline < math.inf
    session._arm_anatt(association(1), in_change=False)
    assert session.anatt_deadline == math.inf
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session._anatt_watch)
        await trio.sleep(10)
        assert session.live
        nursery.cancel_scope.cancel()
