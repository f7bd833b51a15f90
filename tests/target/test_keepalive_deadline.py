"""The keep-alive deadline a controller keeps, and the hook that reports a deadline moved
earlier (the admin queue's watcher sleeps until the deadline: a later one it finds when it
wakes, an earlier one must wake it)."""

from __future__ import annotations

import math

from target.controller import Controller


def controller(kato_ms: int) -> Controller:
    # no subsystem and no port: the keep-alive timer needs neither
    return Controller(cntlid=1, subsystem=None, port=None, hostnqn="nqn.test:host",  # type: ignore[arg-type]
                      hostid=bytes(16), kato_ms=kato_ms, mqes=127)  # fmt: skip


def test_only_an_earlier_deadline_wakes_the_watcher() -> None:
    ctrl = controller(5000)
    ctrl.kato_ms = 0  # Set Features KATO 0 before any touch
    wakes: list[float] = []
    ctrl.keepalive_rearmed = lambda: wakes.append(ctrl.keepalive_deadline)
    ctrl.touch(10.0)  # KATO 0: no timer, nothing moved
    ctrl.kato_ms = 5000  # Set Features KATO 5 s: a first deadline
    ctrl.touch(11.0)
    ctrl.touch(12.5)  # a Keep Alive: later, the watcher finds it when it wakes
    ctrl.kato_ms = 1000  # Set Features KATO 1 s: earlier than the last deadline
    ctrl.touch(13.0)
    assert wakes == [16.0, 14.0]
    ctrl.kato_ms = 0  # Set Features KATO 0: the timer is off
    ctrl.touch(13.5)
    assert wakes == [16.0, 14.0]
    assert ctrl.keepalive_deadline == math.inf and not ctrl.keepalive_expired(1e9)


def test_the_deadline_expires_kato_after_the_last_touch() -> None:
    ctrl = controller(2000)
    ctrl.touch(1.0)
    assert not ctrl.keepalive_expired(2.999) and ctrl.keepalive_expired(3.0)
