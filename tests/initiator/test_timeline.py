"""The bench timeline: samples per path, events marked, HTML (inline SVG) and PNG output."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from initiator.timeline import Timeline
from tests.initiator.fakes import make_rig


async def test_samples_rates_and_events(autojump_clock: trio.testing.MockClock,
                                        tmp_path: Path) -> None:  # fmt: skip
    rig = make_rig()
    head = rig.head
    timeline = Timeline(head, period=0.5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timeline.run)
        await trio.sleep(0.25)  # between samples, so each window sees one step
        for step in range(6):
            head.paths[0].stats.ios += 100 if step < 3 else 0
            head.paths[1].stats.ios += 0 if step < 3 else 50
            if step == 3:
                head.note("failover from a: HOST_ABORTED_CMD")
            await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    first, second = (timeline.iops[p.label] for p in head.paths)
    assert max(first) == pytest.approx(200.0)  # 100 completions per 0.5 s
    assert max(second) == pytest.approx(100.0)
    assert len(timeline.events) == 1 and "failover" in timeline.events[0][1]
    page = tmp_path / "t.html"
    timeline.write(page)
    text = page.read_text()
    assert "<svg" in text and "polyline" in text and "failover from a" in text
    png = tmp_path / "t.png"
    timeline.write(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"\.html or \.png"):
        timeline.write(tmp_path / "t.txt")


def test_session_recovers_only_from_transport_errors() -> None:
    """Trio wraps nursery errors in groups: the reconnect loop must look inside them."""
    from initiator.queue import QueueClosed
    from initiator.session import _recoverable

    closed = QueueClosed("reset by peer")
    assert _recoverable(closed) is closed
    assert _recoverable(ExceptionGroup("x", [ExceptionGroup("y", [closed])])) is closed
    assert _recoverable(ExceptionGroup("x", [OSError(104, "reset")])) is not None
    assert _recoverable(ExceptionGroup("x", [closed, KeyError("bug")])) is None
    assert _recoverable(KeyError("bug")) is None
