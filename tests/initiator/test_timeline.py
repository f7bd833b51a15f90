"""The bench timeline: samples per path, events marked, HTML (inline SVG) and PNG output."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from initiator.timeline import Timeline, read_step_log
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


def test_scenario_steps_from_a_step_log_are_placed_by_the_wall_clock(tmp_path: Path) -> None:
    log = tmp_path / "steps.jsonl"
    log.write_text(
        '{"time": 1000.5, "step": 0, "what": "port-down port=1 mode=reset", "ok": true}\n'
        "\n"
        '{"time": 999.0, "step": 1, "action": "mark", "ok": true}\n'
        '{"time": 1001.25, "step": 2, "what": "ns-remove nqn=x nsid=9", "ok": false, '
        '"detail": "no subsystem x"}\n'
        '{"time": 1002, "step": 3, "wha'  # the runner is still writing this one
    )
    steps = read_step_log(log)
    assert steps == [(1000.5, "step[0] port-down port=1 mode=reset"), (999.0, "step[1] mark"),
                     (1001.25, "step[2] ns-remove nqn=x nsid=9 FAILED: no subsystem x")]  # fmt: skip
    timeline = Timeline(make_rig().head, wall_start=1000.0)
    timeline.times = [0.5, 1.0, 1.5]
    timeline.iops = {"a": [1.0, 2.0, 3.0]}
    assert timeline.add_steps(steps) == 2  # the one before the sampling started is left out
    assert timeline.steps == [(0.5, "step[0] port-down port=1 mode=reset"),
                              (1.25, "step[2] ns-remove nqn=x nsid=9 FAILED: no subsystem x")]  # fmt: skip
    page = timeline.html()
    assert page.count('stroke="#e377c2"') == 2 and "Scenario steps" in page
    assert "step[0] port-down port=1 mode=reset" in page
    png = tmp_path / "t.png"
    timeline.write(png)
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(("text", "message"), [
    ("not json\n", r"steps\.jsonl: line 1: not JSON"),
    ('{"what": "x"}\n', r'steps\.jsonl: line 1: no Unix "time" in the record'),
    ('{"time": 1}\n[1]\n', r'steps\.jsonl: line 2: no Unix "time"'),
])  # fmt: skip
def test_a_bad_step_log_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    log = tmp_path / "steps.jsonl"
    log.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_step_log(log)
    with pytest.raises(ValueError, match=r"nowhere\.jsonl: cannot read"):
        read_step_log(tmp_path / "nowhere.jsonl")
