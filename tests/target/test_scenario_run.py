"""Scenarios run against an in-process target through its control API: a 10-step scenario twice
with one seed (the same schedule, the same step results, each step in the audit trail and the
metrics) while our initiator does verified I/O through both paths; refused steps; the ctl
command and its dry run."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from initiator import ControllerOptions, open_host
from initiator.cli import main as bench_main
from initiator.multipath import IoError, MultipathHead
from target.cli import main
from target.config import DEMO_NQN
from target.control.clientbase import Metrics, TargetStatus, format_endpoint
from target.control.scenario import parse_scenario
from target.control.scenario_run import ScenarioRunner, StepResult, run_scenario
from tests.target.test_live_config import HOST, live

EXTRA_NQN = "nqn.2026-12.io.test:scenario-extra"

#: Ten steps, one of each kind that changes the target (port down and ANA undo themselves).
TEN_STEPS = f'''
name = "ten"
seed = 11

[[step]]
at = "100ms"
action = "port-down"
port = 1
mode = "reset"
duration = "150ms"
jitter = "30ms"

[[step]]
at = "350ms"
action = "ana"
port = 2
group = 1
state = "inaccessible"
duration = "150ms"

[[step]]
at = "550ms"
action = "fault-add"
name = "slow"
fault = {{ action = "delay", port = 1, delay_ms = 5 }}
jitter = "30ms"

[[step]]
at = "650ms"
action = "fault-remove"
name = "slow"

[[step]]
at = "700ms"
action = "ns-add"
nqn = "{DEMO_NQN}"
nsid = 2
size = "4M"

[[step]]
at = "750ms"
action = "ns-resize"
nqn = "{DEMO_NQN}"
nsid = 2
size = "8M"

[[step]]
at = "800ms"
action = "ns-remove"
nqn = "{DEMO_NQN}"
nsid = 2

[[step]]
at = "850ms"
action = "subsystem-add"
nqn = "{EXTRA_NQN}"
ports = [1, 2]
namespace = [{{ nsid = 1, size = "1M" }}]

[[step]]
at = "900ms"
action = "subsystem-remove"
nqn = "{EXTRA_NQN}"

[[step]]
at = "950ms"
action = "restart"
'''

ACTIONS_DONE = {"port-down": 1, "port-up": 1, "ana": 2, "fault-add": 1, "fault-remove": 1,
                "ns-add": 1, "ns-resize": 1, "ns-remove": 1, "subsystem-add": 1,
                "subsystem-remove": 1, "restart": 1}  # fmt: skip


def host_options() -> ControllerOptions:
    # Generous: a path may be down, inaccessible or restarting, never both for long.
    return ControllerOptions(io_queues=1, queue_size=32, reconnect_delay=0.05,
                             command_timeout=10.0, ctrl_loss_tmo=60.0)  # fmt: skip


def block(lba: int, generation: int, size: int) -> bytes:
    return (lba.to_bytes(8, "little") + generation.to_bytes(8, "little")) * (size // 16)


class VerifiedIo:
    """Writes then reads back its own blocks until stopped; counts every I/O and failure."""

    def __init__(self, head: MultipathHead, worker: int) -> None:
        self.head = head
        self.base = worker * 64
        self.done = 0
        self.failed: list[str] = []
        self.stopping = False

    async def run(self) -> None:
        size = self.head.block_size
        generation = 0
        while not self.stopping:
            generation += 1
            lba = self.base + generation % 64
            data = block(lba, generation, size)
            try:
                await self.head.write(lba, data)
                back = await self.head.read(lba, 1)
            except IoError as err:
                self.failed.append(str(err))
                continue
            if bytes(back) != data:
                self.failed.append(f"LBA {lba}: read back other data")
            self.done += 2


Outcome = tuple[list[list[StepResult]], list[list[str]], TargetStatus, Metrics, list[str]]


async def run_twice_under_io() -> Outcome:
    scenario = parse_scenario(TEN_STEPS, "ten.toml")
    async with live() as env, open_host(host_options(), iopolicy="round-robin") as host:
        for port_id in (1, 2):
            await host.connect(HOST, env.port(port_id), DEMO_NQN)
        head = host.namespace(DEMO_NQN, 1)
        workers = [VerifiedIo(head, index) for index in range(4)]
        runs, schedules = [], []
        async with trio.open_nursery() as io:
            for worker in workers:
                io.start_soon(worker.run)
            for _ in range(2):
                runner = ScenarioRunner(env.client, scenario)
                schedules.append([f"{o.time} {o.describe()}" for o in runner.schedule])
                runs.append(await runner.run())
            await trio.sleep(0.3)  # I/O after the restart, through the reconnected paths
            for worker in workers:
                worker.stopping = True
        assert [w.failed for w in workers] == [[]] * 4
        assert all(w.done > 0 for w in workers)
        assert all(path.stats.ios > 0 for path in head.paths) and len(head.paths) == 2
        assert head.stats.failed == 0
        status = await env.client.status()
        metrics = await env.client.metrics()
        # The whole audit trail (status shows the last 50 lines only).
        trail = [change.what for change in env.target.changes]
        return runs, schedules, status, metrics, trail


async def test_ten_steps_replay_identically_twice_under_verified_io() -> None:
    with trio.fail_after(60):
        runs, schedules, status, metrics, trail = await run_twice_under_io()
    first, second = runs
    assert schedules[0] == schedules[1] and len(first) == 12
    assert [r.replay_key() for r in first] == [r.replay_key() for r in second]
    assert all(r.ok for r in first + second), [r.line() for r in first + second if not r.ok]
    assert Counter(r.action for r in first) == ACTIONS_DONE
    assert [r.t for r in first] == sorted(r.t for r in first)
    markers = [what for what in trail if what.startswith("scenario ten: ")]
    assert len(markers) == 24 and markers[0].startswith("scenario ten: step[0]#0 port-down")
    for action, count in ACTIONS_DONE.items():
        value = metrics.value("nvmeof_target_scenario_steps_total", scenario="ten", action=action)
        assert value == 2 * count, action
    # The target did what the steps asked (and the reverse steps put it back).
    ports = {p["id"]: p for p in status["ports"]}
    assert ports[1]["mode"] == ports[2]["mode"] == "up" and ports[2]["ana"] == {"1": "optimized"}
    assert status["faults"] == [] and [s["nqn"] for s in status["subsystems"]] == [DEMO_NQN]


async def test_a_refused_step_stops_the_run_unless_keep_going(tmp_path: Path) -> None:
    scenario = parse_scenario('''
        name = "bad"
        [[step]]
        at = 0
        action = "port-down"
        port = 9
        [[step]]
        at = "50ms"
        action = "mark"
        label = "after"
    ''', "bad.toml")  # fmt: skip
    log = tmp_path / "steps.jsonl"
    with trio.fail_after(15):
        async with live() as env:
            stopped = await run_scenario(env.control, scenario, log_path=log)
            going = await run_scenario(env.control, scenario, keep_going=True)
            changes = [c["what"] for c in (await env.client.status())["changes"]]
    assert [(r.action, r.ok) for r in stopped] == [("port-down", False)]
    assert stopped[0].detail == "no port 9 (ports: [1, 2])"
    assert [(r.action, r.ok) for r in going] == [("port-down", False), ("mark", True)]
    assert "scenario bad: step[0]#0 port-down port=9 mode=reset: failed: no port 9 (ports: " \
           "[1, 2])" in changes  # fmt: skip
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["ok"] is False and record["action"] == "port-down" and record["t"] == 0
    assert record["scenario"] == "bad" and record["time"] > 1.7e9


async def test_fault_steps_remove_what_they_added_and_only_that() -> None:
    scenario = parse_scenario('''
        [[step]]
        at = 0
        action = "fault-add"
        fault = { action = "delay", delay_ms = 1 }
        duration = "100ms"
        [[step]]
        at = 0
        action = "fault-add"
        name = "kept"
        fault = { action = "status", status = "0x370", count = 1 }
        repeat = 2
        every = "10ms"
        [[step]]
        at = "50ms"
        action = "fault-remove"
        name = "kept"
        [[step]]
        at = "60ms"
        action = "fault-remove"
        name = "kept"
    ''', "faults.toml")  # fmt: skip
    with trio.fail_after(15):
        async with live() as env:
            await env.client.fault_add("drop", port=2, count=0)  # not the scenario's
            results = await run_scenario(env.control, scenario, keep_going=True)
            left = await env.client.faults()
    assert [(r.action, r.ok) for r in results] == [
        ("fault-add", True), ("fault-add", True), ("fault-add", True), ("fault-remove", True),
        ("fault-remove", False), ("fault-remove", True),
    ]  # fmt: skip
    kept = [r.detail.removeprefix("rule ") for r in results[1:3]]
    assert results[3].detail == f"rules {kept[0]}, {kept[1]} removed"
    assert results[5].detail == f"rules {results[0].detail.removeprefix('rule ')} removed"
    assert "no fault rule added under the name 'kept'" in results[4].detail
    assert [rule["action"] for rule in left] == ["drop"]


@pytest.fixture
def root_logging() -> Iterator[None]:
    """``nvmeof`` (main) points the root logger at the stderr of the moment: put it back, or
    later tests log into a closed capture."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("root_logging")
async def test_bench_draws_the_steps_a_scenario_runs_meanwhile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = parse_scenario('''
        name = "drawn"
        [[step]]
        at = "300ms"
        action = "port-down"
        port = 1
        duration = "300ms"
        [[step]]
        at = "900ms"
        action = "mark"
        label = "halfway"
    ''', "drawn.toml")  # fmt: skip
    steps, page = tmp_path / "steps.jsonl", tmp_path / "t.html"
    with trio.fail_after(40):
        async with live() as env:
            argv = ["bench", "--path", f"{HOST}:{env.port(1)}", "--path", f"{HOST}:{env.port(2)}",
                    "-n", DEMO_NQN, "-c", "0.1", "--rw", "randrw", "--bs", "4k", "--iodepth",
                    "4", "--size", "4M", "--runtime", "2.5", "--verify", "--json",
                    "--timeline", str(page), "--events", str(steps)]  # fmt: skip
            async with trio.open_nursery() as nursery:
                done: list[int] = []

                async def bench() -> None:
                    done.append(await trio.to_thread.run_sync(bench_main, argv))

                nursery.start_soon(bench)
                await trio.sleep(0.5)  # the bench connects and starts sampling
                results = await run_scenario(env.control, scenario, log_path=steps)
    out, err = capsys.readouterr()
    assert done == [0], err
    assert all(r.ok for r in results) and len(results) == 3
    assert "events: 3 scenario steps from" in err
    job = json.loads(out)["jobs"][0]
    assert job["error"] == 0 and job["verify_errors"] == 0
    text = page.read_text()
    assert "step[0] port-down port=1 mode=reset" in text and "step[1] mark halfway" in text


# -- ctl ------------------------------------------------------------------------------------------


async def ctl(address: str, *argv: str) -> int:
    return await trio.to_thread.run_sync(main, ["ctl", "--control", address, *argv],
                                         abandon_on_cancel=True)  # fmt: skip


async def test_ctl_scenario_run_prints_each_step_and_logs_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "flap.toml"
    path.write_text('seed = 5\n[[step]]\nat = "50ms"\naction = "port-down"\nport = 2\n'
                    'mode = "close"\nduration = "100ms"\njitter = "20ms"\n'
                    '[[step]]\nat = "200ms"\naction = "mark"\nlabel = "done"\n')  # fmt: skip
    log = tmp_path / "steps.jsonl"
    with trio.fail_after(20):
        async with live() as env:
            address = format_endpoint(env.control)
            assert await ctl(address, "scenario", "run", str(path), "--log", str(log)) == 0
            out = capsys.readouterr().out.splitlines()
            assert out[0] == "scenario flap: 2 steps, 3 occurrences over 0.200s, seed 5"
            assert out[1].startswith("+0.0") and "port-down port=2 mode=close: ok" in out[1]
            assert "port-up port=2 (end of step[0]): ok" in out[2]
            assert out[3].startswith("+0.200s step[1]#0 mark done: ok")
            assert out[4] == "scenario flap: 3 steps done, 0 failed"
            assert [json.loads(line)["action"] for line in log.read_text().splitlines()] == [
                "port-down", "port-up", "mark"]  # fmt: skip

            path.write_text('[[step]]\nat = 0\naction = "ns-remove"\nnqn = "nqn.x:none"\n'
                            'nsid = 1\n')  # fmt: skip
            assert await ctl(address, "scenario", "run", str(path)) == 1
            err = capsys.readouterr().err
            assert err == ("nvmeof-target: scenario flap: step[0]#0 ns-remove nqn=nqn.x:none "
                           "nsid=1 at +0.000s failed: no subsystem 'nqn.x:none'\n")  # fmt: skip


async def test_ctl_dry_run_prints_the_schedule_without_a_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ten.toml"
    path.write_text(TEN_STEPS)
    nowhere = "127.0.0.1:9"  # nothing listens: a dry run must not try
    for seed in ("11", "11", "12"):
        assert await ctl(nowhere, "scenario", "run", str(path), "--dry-run", "--seed", seed) == 0
    first, again, other = capsys.readouterr().out.split("scenario ten: ")[1:]
    assert first == again and first != other
    lines = first.splitlines()
    assert lines[0] == "10 steps, 12 occurrences over 0.950s, seed 11 (dry run)"
    assert lines[1].startswith("+0.1") and lines[1].endswith("port-down port=1 mode=reset")
    assert lines[-1] == "+0.950s  step[9]#0  restart"
    path.write_text('[[step]]\nat = 0\naction = "port-down"\n')
    assert await ctl(nowhere, "scenario", "run", str(path), "--dry-run") == 1
    assert capsys.readouterr().err == f"nvmeof-target: {path}: step[0].port: missing\n"
