"""The Linux kernel's NVMe/TCP host (6.1, nvme-cli 2.3, fio 3.33 in ../shared/linuxvm) keeps
fio verify clean while the optimized path of nvmeof-target is broken and restored under it.

The target runs in this test's Trio loop (the demo configuration on free host ports, advertised
as 10.0.2.2); the guest (tests/interop/guest/chaos_fio.sh) connects both ports with short
timers (keep-alive 2 s, reconnect delay 1 s, ctrl-loss-tmo 60 s) and runs fio (io_uring, 4 KiB
randrw, 2 jobs x QD32, crc32c verify) on the multipath head. When fio starts, the test drives
the schedule below, twice, through the target's operator methods:

    reset port 1 (TCP RST) -> 4 s -> port up -> 6 s -> blackhole port 1 (the kernel must notice
    by its keep-alive timeout) -> 10 s -> port up -> 6 s -> ANA group 1: port 1 inaccessible, port 2
    optimized -> 5 s -> back: port 1 optimized, port 2 non-optimized -> 5 s

Asserted: fio exits 0 with error 0 in every job and no verify failure; both ports served I/O
commands; while port 1 was inaccessible, port 2 carried most I/O commands, and after the ANA
restore port 1 did again; likewise port 2 while port 1 was reset or blackholed, port 1 after
each port up (each once the kernel had 2-3 s to react); the target logged no ERROR record. Printed (run with ``-s``): the per
0.5 s I/O command counts of each port with the events, the same per phase, the kernel's view
of the paths (state/ANA, once per second) and its nvme log lines, on the fio clock.

One VM boot, about two minutes under TCG.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from interop_harness import (
    DEMO_NQN,
    FIO_VERIFY_FAILURE,
    GUEST_DIR,
    GUEST_HOST_IP,
    GuestRun,
    LinuxVM,
    StreamingVM,
)

from target.config import TargetConfig, default_config
from target.connection import QueueConnection
from target.daemon import Target

pytestmark = pytest.mark.interop

FIO_RUNTIME = 90  # s: covers the schedule (75 s) with room to spare
VM_TIMEOUT = 330  # s, `run -t`: bounds QEMU whatever happens
BOOT_TIMEOUT = 150.0  # s from `run` until fio starts (boot, connect, both paths live)
END_TIMEOUT = FIO_RUNTIME + 150.0  # s from fio start until the VM has powered off
STEP_TIMEOUT = 10.0  # s for one operator action
SAMPLE_EVERY = 0.5  # s between samples of the per-port command counts
ANA_SETTLE = 2.0  # s the kernel gets to act on an ANA change (AEN, ANA log, path switch)
PATH_SETTLE = 3.0  # s the kernel gets to fail over after a reset, or to reconnect
#: A blackholed path is detected by the kernel's own keep-alive (the target keeps quiet): with
#: a 2 s KATO, 6.1 needs up to ~6 s (KA period, request timeout, timer granularity).
BLACKHOLE_SETTLE = 7.0
BLACKHOLE_HOLD = 10.0  # s the port stays blackholed
CONNECT_ARGS = "-k 2 -c 1 -l 60"  # keep-alive 2 s, reconnect delay 1 s, ctrl-loss-tmo 60 s
OPTIMIZED_PORT, OTHER_PORT = 1, 2  # port ids in default_config(): ANA group 1
GROUP = 1

#: Event -> (the port that should carry most I/O afterwards, seconds the kernel gets to react).
EXPECTED_PORT = {
    "reset p1": (OTHER_PORT, PATH_SETTLE),
    "blackhole p1": (OTHER_PORT, BLACKHOLE_SETTLE),
    "up p1": (OPTIMIZED_PORT, PATH_SETTLE),
    "ANA p1 inacc, p2 opt": (OTHER_PORT, ANA_SETTLE),
    "ANA p1 opt, p2 non-opt": (OPTIMIZED_PORT, ANA_SETTLE),
}

KERNEL_TS = re.compile(r"^\[\s*(\d+\.\d+)\]\s*(.*)$")


# ---------------------------------------------------------------------------------------------
# the target


def chaos_config() -> TargetConfig:
    """default_config() (demo subsystem, ANA group 1 optimized on port 1, non-optimized on port
    2, discovery-only port 3), every port on a free TCP port (0: the OS picks)."""
    config = default_config()
    ports = tuple(dataclasses.replace(port, port=0) for port in config.ports)
    return dataclasses.replace(config, ports=ports)


class RecordingHandler(logging.Handler):
    """Keeps every record the target logs during the test."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at_least(self, level: int) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno >= level]


@contextlib.contextmanager
def recording_target_log() -> Any:
    logger = logging.getLogger("nvmeof.target")
    handler = RecordingHandler()
    previous = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


@dataclass
class Sample:
    t: float  # s since fio started
    io: dict[int, int]  # I/O queue commands per port since the previous sample
    admin: dict[int, int]
    connections: dict[int, int]  # open connections per port


@dataclass
class Traffic:
    """Per-port command totals from ``target.connections``: a connection's ``commands``
    counter only grows, so each sample adds what every connection did since it was last seen
    (a connection that closed between two samples loses its last few commands)."""

    target: Target
    t0: float
    last: dict[QueueConnection, int] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    totals: dict[int, int] = field(default_factory=dict)

    def sample(self) -> Sample:
        ids = sorted(self.target.ports)
        io = dict.fromkeys(ids, 0)
        admin = dict.fromkeys(ids, 0)
        conns = dict.fromkeys(ids, 0)
        for conn in list(self.target.connections):
            count = conn.commands
            delta = count - self.last.get(conn, 0)
            self.last[conn] = count
            pid = conn.port.id
            conns[pid] += 1
            (io if conn.qid > 0 else admin)[pid] += delta
        for pid, n in io.items():
            self.totals[pid] = self.totals.get(pid, 0) + n
        sample = Sample(trio.current_time() - self.t0, io, admin, conns)
        self.samples.append(sample)
        return sample

    async def run(self) -> None:
        while True:
            self.sample()
            await trio.sleep(SAMPLE_EVERY)

    def between(self, start: float, end: float) -> dict[int, int]:
        """I/O commands per port in the samples taken in (start, end]."""
        sums = dict.fromkeys(sorted(self.target.ports), 0)
        for s in self.samples:
            if start < s.t <= end:
                for pid, n in s.io.items():
                    sums[pid] += n
        return sums


# ---------------------------------------------------------------------------------------------
# the VM


# ---------------------------------------------------------------------------------------------
# the schedule


@dataclass
class Event:
    t: float  # s since fio started
    what: str


def build_schedule(target: Target) -> list[tuple[float, str, Callable[[], Awaitable[Any]]]]:
    """(seconds to wait before, label, action): the chaos, twice, after a 3 s baseline."""

    async def ana(first: int, first_state: str, second: int, second_state: str) -> None:
        target.set_ana(first, GROUP, first_state)
        target.set_ana(second, GROUP, second_state)

    p1, p2 = OPTIMIZED_PORT, OTHER_PORT
    one_round: list[tuple[float, str, Callable[[], Awaitable[Any]]]] = [
        (0.0, "reset p1", lambda: target.port_down(p1, "reset")),
        (4.0, "up p1", lambda: target.port_up(p1)),
        (6.0, "blackhole p1", lambda: target.port_down(p1, "blackhole")),
        (BLACKHOLE_HOLD, "up p1", lambda: target.port_up(p1)),
        (6.0, "ANA p1 inacc, p2 opt",
         lambda: ana(p1, "inaccessible", p2, "optimized")),
        (5.0, "ANA p1 opt, p2 non-opt",
         lambda: ana(p2, "non-optimized", p1, "optimized")),
    ]  # fmt: skip
    schedule = []
    for n, (wait, label, action) in enumerate(one_round * 2):
        schedule.append((3.0 if n == 0 else 5.0 if n == len(one_round) else wait, label, action))
    return schedule


async def run_schedule(target: Target, t0: float, events: list[Event],
                       vm: StreamingVM) -> None:  # fmt: skip
    for wait, label, action in build_schedule(target):
        await trio.sleep(wait)
        if vm.exited.is_set() or "CHAOS-FIO-DONE" in vm.markers:
            events.append(Event(trio.current_time() - t0, f"(fio ended: {label} not done)"))
            return
        with trio.fail_after(STEP_TIMEOUT):
            await action()
        events.append(Event(trio.current_time() - t0, label))
        print(f"  chaos| +{events[-1].t:5.1f} s  {label}", flush=True)


# ---------------------------------------------------------------------------------------------
# reporting


def timeline(traffic: Traffic, events: list[Event]) -> list[str]:
    """One line per sample: I/O commands per port in the last 0.5 s, events since."""
    ids = sorted(traffic.target.ports)[:2]
    lines = ["     t(s)  " + "  ".join(f"p{pid} io/0.5s conns" for pid in ids) + "  events"]
    pending = list(events)
    previous = -1e9
    for s in traffic.samples:
        here = [e.what for e in pending if previous < e.t <= s.t]
        pending = [e for e in pending if e.t > s.t]
        previous = s.t
        cols = "  ".join(f"{s.io[pid]:>11} {s.connections[pid]:>5}" for pid in ids)
        lines.append(f"  {s.t:7.1f}  {cols}  {'; '.join(here)}")
    return lines


def phases(traffic: Traffic, events: list[Event], end: float) -> list[str]:
    """I/O commands per port between consecutive events, with the share of port 1."""
    bounds = [Event(0.0, "baseline"), *events]
    lines = ["  phase (from event)            from     to    p1 cmds   p2 cmds   p1 share"]
    for i, ev in enumerate(bounds):
        stop = bounds[i + 1].t if i + 1 < len(bounds) else end
        sums = traffic.between(ev.t, stop)
        total = sums[OPTIMIZED_PORT] + sums[OTHER_PORT]
        share = f"{sums[OPTIMIZED_PORT] / total:8.0%}" if total else "       -"
        lines.append(f"  {ev.what:<28} {ev.t:6.1f} {stop:6.1f} {sums[OPTIMIZED_PORT]:>10}"
                     f" {sums[OTHER_PORT]:>9}   {share}")  # fmt: skip
    return lines


def kernel_paths(lines: list[str], uptime0: float) -> list[str]:
    """The guest's PATHS lines, on the fio clock, only when something changed."""
    out, last = [], None
    for line in lines:
        if not line.startswith("PATHS "):
            continue
        fields = line.split()
        uptime = float(fields[1].partition("=")[2])
        state = " ".join(fields[2:])
        if state != last:
            out.append(f"  {uptime - uptime0:+7.1f}  {state}")
            last = state
    return out


def kernel_log(run: GuestRun, uptime0: float) -> list[str]:
    if "dmesg-nvme" not in run.steps:
        return ["  (no dmesg-nvme step)"]
    out = []
    for line in run.steps["dmesg-nvme"].output.splitlines():
        m = KERNEL_TS.match(line)
        out.append(f"  {float(m.group(1)) - uptime0:+7.1f}  {m.group(2)}" if m else f"  {line}")
    return out


def fio_figures(job: dict[str, Any]) -> str:
    rd, wr = job["read"], job["write"]
    return (f"{job['jobname']}: read {rd['iops']:.0f} IOPS {rd['bw'] / 1024:.1f} MiB/s"
            f" ({rd['total_ios']} I/Os), write {wr['iops']:.0f} IOPS {wr['bw'] / 1024:.1f} MiB/s"
            f" ({wr['total_ios']} I/Os), error {job['error']},"
            f" max clat {max(rd['clat_ns']['max'], wr['clat_ns']['max']) / 1e9:.2f} s")  # fmt: skip


def longest_stall(traffic: Traffic, end: float) -> float:
    """The longest run of samples (before ``end``) in which no port served an I/O command."""
    best = run = 0.0
    for s in traffic.samples:
        if s.t > end:
            break
        run = run + SAMPLE_EVERY if not any(s.io.values()) else 0.0
        best = max(best, run)
    return best


# ---------------------------------------------------------------------------------------------
# the test


async def test_kernel_fio_verify_survives_path_chaos(
    linuxvm: LinuxVM, interop_figures: Callable[[str], None], tmp_path: Path
) -> None:
    # The run is longer than pytest's faulthandler_timeout (120 s): every wait below is
    # bounded on its own, so the dump of all stacks would be noise only.
    faulthandler.cancel_dump_traceback_later()
    events: list[Event] = []
    with recording_target_log() as records:
        target = Target(chaos_config(), advertise=GUEST_HOST_IP)
        async with trio.open_nursery() as nursery:
            await nursery.start(target.serve)
            ports = (target.ports[OPTIMIZED_PORT].bound_port, target.ports[OTHER_PORT].bound_port)
            argv = [str(linuxvm.run_path), "-t", str(VM_TIMEOUT),
                    "--console-log", str(tmp_path / "console.log")]  # fmt: skip
            env = {
                "NQN": DEMO_NQN,
                "ADDR": GUEST_HOST_IP,
                "PORTS": " ".join(map(str, ports)),
                "CONNECT_ARGS": CONNECT_ARGS,
                "RUNTIME": str(FIO_RUNTIME),
            }
            for key, value in env.items():
                argv += ["-e", f"{key}={value}"]
            argv.append(str(GUEST_DIR / "chaos_fio.sh"))
            vm = StreamingVM(argv, tmp_path / "vm.log")
            print(f"\n  target ports {ports} (advertised {GUEST_HOST_IP}); VM log {vm.log_path}")
            nursery.start_soon(vm.run)

            t0, line = await vm.wait_marker("CHAOS-FIO-START", BOOT_TIMEOUT)
            wall0 = time.time() - (trio.current_time() - t0)  # t0 on the log records' clock
            uptime0 = float(line.split("uptime=")[1].split()[0])
            boot = t0 - vm.started
            traffic = Traffic(target, t0)
            sampling = trio.CancelScope()
            nursery.start_soon(_run_in, sampling, traffic.run)
            await run_schedule(target, t0, events, vm)
            fio_done, _ = await vm.wait_marker("CHAOS-FIO-DONE", FIO_RUNTIME + 60.0)
            sampling.cancel()
            traffic.sample()
            with trio.fail_after(END_TIMEOUT):
                await vm.exited.wait()
            final_status = target.status()
            target.stop()

    run = vm.result()
    fio_end = fio_done - t0
    report = [
        f"kernel chaos: VM {run.duration:.1f} s (fio started {boot:.1f} s after `run`,"
        f" ran {fio_end:.1f} s), exit status {run.rc}; ports p1={ports[0]} p2={ports[1]}",
    ]

    # -- what happened -------------------------------------------------------------------------
    print("\n=== per-port I/O commands, every 0.5 s (t: s since fio started)")
    print("\n".join(timeline(traffic, events)))
    print("\n=== per phase")
    phase_lines = phases(traffic, events, fio_end)
    print("\n".join(phase_lines))
    print("\n=== the kernel's paths (ctrl@port=state/ANA of nsid 1), on changes")
    print("\n".join(kernel_paths(run.stdout.splitlines(), uptime0)))
    print("\n=== guest dmesg, nvme lines (s since fio started)")
    dmesg = kernel_log(run, uptime0)
    print("\n".join(dmesg))
    warnings = [r for r in records.records if r.levelno == logging.WARNING]
    errors = records.at_least(logging.ERROR)
    print(f"\n=== target log: {len(errors)} error(s), {len(warnings)} warning(s)")
    for r in (errors + warnings)[:40]:
        print(f"  {r.created - wall0:+7.1f}  {r.levelname:<7} {r.getMessage()}")
    completions = io_completions(target)
    if completions is not None:
        print(f"  cross-check: successful I/O completions per port (state.command_stats,"
              f" closed connections included): {completions}")  # fmt: skip
    print(f"  keep-alive expirations: {getattr(target.state, 'keepalive_expirations', '?')},"
          f" ANA change count {final_status['ana_change_count']}")  # fmt: skip

    report.append(f"  per-port I/O commands: p1 {traffic.totals.get(OPTIMIZED_PORT, 0)},"
                  f" p2 {traffic.totals.get(OTHER_PORT, 0)}; longest gap with no I/O"
                  f" {longest_stall(traffic, fio_end):.1f} s")  # fmt: skip
    report += [f"  {line}" for line in phase_lines]

    # -- fio -------------------------------------------------------------------------------------
    fio_step = run.step("fio")
    fio_json = run.step("fio-json")
    try:
        jobs = fio_json.json()["jobs"]
    except (AssertionError, json.JSONDecodeError, KeyError) as err:
        pytest.fail(f"no fio JSON ({err}):\n{fio_step.output}\n{run.context()}")
    for job in jobs:
        report.append(f"  fio {fio_figures(job)}")
    for line in report:
        interop_figures(line)
    print("\n" + "\n".join(report))

    assert fio_step.rc == 0, f"fio failed (rc {fio_step.rc}):\n{fio_step.output}\n{run.context()}"
    assert jobs and all(job["error"] == 0 for job in jobs), fio_json.output
    bad = [line for line in fio_step.output.splitlines() if FIO_VERIFY_FAILURE.search(line)]
    assert not bad, "fio verify failures:\n" + "\n".join(bad)
    assert all(job["write"]["total_ios"] > 0 and job["read"]["total_ios"] > 0 for job in jobs)

    # -- traffic moved between the ports -------------------------------------------------------
    assert traffic.totals.get(OPTIMIZED_PORT, 0) > 0, traffic.totals
    assert traffic.totals.get(OTHER_PORT, 0) > 0, traffic.totals
    done = [e.what for e in events]
    assert len(done) == len(build_schedule(target)) and all(
        what in EXPECTED_PORT for what in done
    ), f"the schedule did not finish before fio did: {done}"
    # Once the kernel had time to react (ANA: AEN + ANA log; reset: error recovery; blackhole:
    # keep-alive timeout; up: reconnect), the port that should carry the I/O carried most of it.
    for i, ev in enumerate(events):
        want, settle = EXPECTED_PORT[ev.what]
        stop = events[i + 1].t if i + 1 < len(events) else fio_end
        sums = traffic.between(ev.t + settle, stop)
        total = sum(sums.values())
        assert total > 0 and sums[want] * 2 > total, (
            f"after {ev.what!r} (+{ev.t:.1f} s, from +{ev.t + ANA_SETTLE:.1f} to +{stop:.1f} s)"
            f" port {want} should carry most I/O commands: {sums}"
        )

    # -- the target ------------------------------------------------------------------------------
    assert not errors, "the target logged errors:\n" + "\n".join(
        f"{r.levelname} {r.getMessage()}" for r in errors
    )
    assert run.rc == 0, f"the guest script failed (rc {run.rc})\n{run.context()}"


def io_completions(target: Target) -> dict[int, int] | None:
    """Successful I/O completions per port from the target's metric counters, if it has them
    (they are still being built: None when their shape is not the expected one)."""
    try:
        stats = target.state.command_stats
        return {pid: sum(stats[pid].ok[0x100:]) for pid in (OPTIMIZED_PORT, OTHER_PORT)}
    except (AttributeError, KeyError, TypeError):
        return None


async def _run_in(scope: trio.CancelScope, fn: Callable[[], Awaitable[None]]) -> None:
    """Run ``fn`` under ``scope`` (cancelled by its owner) from a nursery task."""
    with scope:
        await fn()
