"""The keep-alive deadline a controller keeps, and the hook that reports each move of it (for a
watcher that waits on the deadline instead of polling it)."""

from __future__ import annotations

import math

from target.controller import Controller


def controller(kato_ms: int) -> Controller:
    # no subsystem and no port: the keep-alive timer needs neither
    return Controller(cntlid=1, subsystem=None, port=None, hostnqn="nqn.test:host",  # type: ignore[arg-type]
                      hostid=bytes(16), kato_ms=kato_ms, mqes=127)  # fmt: skip


def test_touch_reports_every_new_deadline() -> None:
    ctrl = controller(5000)
    moves: list[float] = []
    ctrl.touch(10.0)  # nobody listening yet
    ctrl.on_keepalive_moved = moves.append
    ctrl.touch(12.5)
    ctrl.kato_ms = 0  # Set Features KATO 0: the timer is off
    ctrl.touch(13.0)
    assert moves == [17.5, math.inf]
    assert ctrl.keepalive_deadline == math.inf and not ctrl.keepalive_expired(1e9)


def test_the_deadline_expires_kato_after_the_last_touch() -> None:
    ctrl = controller(2000)
    ctrl.touch(1.0)
    assert not ctrl.keepalive_expired(2.999) and ctrl.keepalive_expired(3.0)
