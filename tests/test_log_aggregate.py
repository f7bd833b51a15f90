"""Repeated log lines folded per key and interval (logfmt.aggregate), and the target's fired
fault rules logged that way under a rule that fires on every command."""

from __future__ import annotations

import logging

import pytest
import trio

from initiator import ControllerOptions, open_host
from logfmt.aggregate import DEFAULT_INTERVAL, Aggregator
from nvmeof.constants import IoOpcode
from target.config import DEMO_NQN, default_config, with_free_ports
from target.daemon import Target


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_first_line_at_once_then_one_line_per_interval_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    log = logging.getLogger("test.aggregate")
    folded = Aggregator(log, interval=1.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.aggregate"):
        folded.note("fault fired rule=1", "cid=1")
        for cid in range(2, 50):
            clock.now += 0.01
            folded.note("fault fired rule=1", f"cid={cid}")
        folded.note("fault fired rule=2", "cid=7")  # another key: at once
        clock.now += 1.0
        folded.note("fault fired rule=1", "cid=50")  # the interval is over: one summary line
        folded.note("fault fired rule=1", "cid=51")
        folded.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "fault fired rule=1 cid=1",
        "fault fired rule=2 cid=7",
        "fault fired rule=1 repeated=49 in_s=1.5 last: cid=50",
        "fault fired rule=1 repeated=1 in_s=0.0 last: cid=51",
    ]
    assert sum(int(line.split("repeated=")[1].split()[0]) for line in lines[2:]) + 1 == 51


async def test_a_rule_firing_on_every_command_logs_a_line_per_second(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    target: Target = await nursery.start(Target(with_free_ports(default_config())).serve)
    target.fault_add({"action": "delay", "delay_ms": 1, "opcode": IoOpcode.WRITE})
    with caplog.at_level(logging.INFO, logger="nvmeof"):
        async with open_host(ControllerOptions(io_queues=1)) as host:
            await host.connect("127.0.0.1", target.ports[1].bound_port, DEMO_NQN)
            head = host.namespace(DEMO_NQN, 1)
            writes = 0
            with trio.move_on_after(2.5):
                while True:
                    await head.write(0, bytes(512))
                    writes += 1
        target.fault_clear()
    fired = [r.getMessage() for r in caplog.records if "fault fired" in r.getMessage()]
    counted = 1 + sum(int(m.split("repeated=")[1].split()[0]) for m in fired if "repeated=" in m)
    assert writes > 100 and counted in (writes, writes + 1)  # the last one may be cut short
    assert len(fired) <= 5, fired
    target.stop()


async def test_a_delay_rule_and_a_no_path_error_storm_stay_readable(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """Every write delayed by a fault rule, then the only path gone for good while the host
    keeps issuing I/O: thousands of firings and failures, a few lines a second."""
    target: Target = await nursery.start(Target(with_free_ports(default_config())).serve)
    target.fault_add({"action": "delay", "delay_ms": 1, "opcode": IoOpcode.WRITE})
    options = ControllerOptions(io_queues=1, reconnect_delay=0.1, fast_io_fail_tmo=0.3,
                                kato_ms=1000)  # fmt: skip
    started = trio.current_time()
    writes = failures = 0
    with caplog.at_level(logging.INFO, logger="nvmeof"):
        async with open_host(options) as host:
            await host.connect("127.0.0.1", target.ports[1].bound_port, DEMO_NQN)
            head = host.namespace(DEMO_NQN, 1)
            with trio.move_on_after(1.5):
                while True:
                    await head.write(0, bytes(512))
                    writes += 1
            await target.port_down(1, "reset")  # gone for good: reconnects are refused
            with trio.move_on_after(2.5):
                while True:
                    try:
                        await head.read(0, 1)
                    except Exception:  # every failure is the point here
                        failures += 1
                        await trio.lowlevel.checkpoint()
        target.fault_clear()
    elapsed = trio.current_time() - started
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("nvmeof")]
    assert writes > 100 and failures > 1000
    # Three kinds repeat (the rule firing, the failed I/O, the refused reconnects): each gets
    # its first line and then one per 5 s (and one at the end); the rest are state changes,
    # one line each. Over a minute: 3 x 13 folded lines plus the state changes, far below 200.
    repeats = [line for line in lines if "repeated=" in line]
    assert len(repeats) <= 3 * (elapsed / DEFAULT_INTERVAL + 2), "\n".join(lines)
    assert len(lines) <= 25, "\n".join(lines)
    folded = sum(int(line.split("repeated=")[1].split()[0]) for line in repeats)
    assert folded > 1000  # what the lines stand for
    target.stop()
