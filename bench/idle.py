"""Idle controllers: what keep-alive alone costs the target (bench/manyhosts.py runs it).

One target process (bench/probed.py) and one host process holding ``--controllers`` controllers
(admin queue only, no I/O queue, each its own host NQN, keep-alive every KATO/2 as the Linux
host sends it), the cheapest way to have that many: one Python process per controller would
measure the machine, not the target. The target's CPU time (``getrusage``, all threads) is
taken over a window with no controller at all (its own timers, the baseline) and then over
``--seconds`` after a warm-up once every controller is up; both in % of one core [goal for 256:
< 1%]. The main thread's context switches per second show how often its event loop woke.

    python bench/idle.py                       # 256 controllers, 20 s; --help for the options
    python bench/idle.py hold PORT COUNT KATO  # the host process (started by the above)
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.matrix import free_port  # noqa: E402
from bench.targetproc import (  # noqa: E402
    NQN,
    core_percent,
    sample,
    start_target,
    stop_target,
    wakeups_per_second,
)
from initiator import ControllerOptions, HostController, connect_controller  # noqa: E402

#: controllers brought up at the same time (each is about ten admin round trips)
CONNECTING = 8


@dataclass
class IdleRun:
    controllers: int
    kato_ms: int
    connected: int = 0  # what the host process reported
    connections: int = 0  # what the target's port has (/proc/net/tcp)
    seconds: float = 0.0
    baseline_cpu_pct: float = 0.0  # the target with no controller
    baseline_wakeups_per_s: float = 0.0
    cpu_pct: float = 0.0  # with every controller idle
    wakeups_per_s: float = 0.0
    per_controller_us_per_s: float = 0.0  # above the baseline
    host_cpu_pct: float = 0.0  # the host process holding them
    rss_mib: float = 0.0
    problem: str = ""


# -- the host process ------------------------------------------------------------------------------


async def hold(port: int, count: int, kato_ms: int) -> None:
    """Connect ``count`` controllers, say so on stdout, keep them until stdin closes."""
    controllers: list[HostController] = []
    limiter = trio.CapacityLimiter(CONNECTING)

    async def connect(index: int) -> None:
        options = ControllerOptions(hostnqn=f"nqn.2026-11.io.nvmeof-emu:idle-host{index}",
                                    io_queues=0, kato_ms=kato_ms)  # fmt: skip
        async with limiter:
            controllers.append(await connect_controller(nursery, "127.0.0.1", port, NQN, options))

    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as connecting:
            for index in range(count):
                connecting.start_soon(connect, index)
        print(f"connected {len(controllers)}", flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        while await stdin.receive_some():  # the parent closes it when done
            pass
        with trio.move_on_after(30):
            async with trio.open_nursery() as closing:
                for ctrl in controllers:
                    closing.start_soon(ctrl.shutdown)
        nursery.cancel_scope.cancel()


# -- the measurement -------------------------------------------------------------------------------


def read_line(stream: IO[str] | None, timeout: float) -> str:
    """One line from a child's stdout, or "" after ``timeout`` seconds or at its end."""
    assert stream is not None
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline().strip() if ready else ""


def process_cpu_s(pid: int) -> float:
    """User + system seconds of a process, from /proc/PID/stat (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_idle(controllers: int, *, seconds: float = 20.0, warmup: float = 5.0,
             baseline: float = 5.0, kato_ms: int = 5000) -> IdleRun:  # fmt: skip
    """Measure the target with no controller, then with ``controllers`` idle ones."""
    run = IdleRun(controllers=controllers, kato_ms=kato_ms, seconds=seconds)
    port = free_port()
    target, config = start_target(port, namespace_bytes=1 << 20, max_io_queues=1)
    holder: subprocess.Popen[str] | None = None
    try:
        time.sleep(1.0)  # past the start-up
        first = sample(target, port)
        time.sleep(baseline)
        last = sample(target, port)
        run.baseline_cpu_pct = core_percent(first, last)
        run.baseline_wakeups_per_s = wakeups_per_second(first, last)
        holder = subprocess.Popen([sys.executable, __file__, "hold", str(port), str(controllers),
                                   str(kato_ms)], cwd=ROOT, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)  # fmt: skip
        line = read_line(holder.stdout, 60.0 + controllers * 0.5)
        if not line.startswith("connected "):
            run.problem = f"the host process did not connect: {line or 'no answer'}"
            return run
        run.connected = int(line.split()[1])
        time.sleep(warmup)
        first, host_first = sample(target, port), process_cpu_s(holder.pid)
        time.sleep(seconds)
        last, host_last = sample(target, port), process_cpu_s(holder.pid)
        run.cpu_pct = core_percent(first, last)
        run.wakeups_per_s = wakeups_per_second(first, last)
        run.host_cpu_pct = 100.0 * (host_last - host_first) / (last.at - first.at)
        run.connections = min(first.connections, last.connections)
        run.rss_mib = last.rss_kib / 1024
        extra = max(0.0, run.cpu_pct - run.baseline_cpu_pct)
        run.per_controller_us_per_s = extra / 100 * 1e6 / max(run.connected, 1)
        if holder.poll() is not None:
            run.problem = f"the host process exited ({holder.returncode}) during the window"
    finally:
        if holder is not None:
            stop_holder(holder, run)
        stop_target(target, config)
    return run


def stop_holder(holder: subprocess.Popen[str], run: IdleRun) -> None:
    """Close its stdin (it shuts its controllers down and exits); kill it after 40 s."""
    try:
        _, err = holder.communicate(timeout=40)  # closes its stdin first
    except subprocess.TimeoutExpired:
        holder.kill()
        _, err = holder.communicate()
    if holder.returncode and not run.problem:
        run.problem = f"the host process exited {holder.returncode}: {err.strip()[-300:]}"


def idle_markdown(run: IdleRun) -> str:
    md = [f"Idle controllers: {run.controllers} (admin queue only, keep-alive every "
          f"{run.kato_ms / 2000:g} s), {run.seconds:g} s window", "",
          "| figure | value | goal |", "|---|---|---|",
          f"| connected (host) / TCP connections (target) | {run.connected} / "
          f"{run.connections} | {run.controllers} |",
          f"| target CPU, no controller | {run.baseline_cpu_pct:.2f}% of a core "
          f"({run.baseline_wakeups_per_s:.1f} wakeups/s) | |",
          f"| target CPU, {run.connected} idle controllers | {run.cpu_pct:.2f}% of a core "
          f"({run.wakeups_per_s:.1f} wakeups/s) | < 1% |",
          f"| per controller, above the baseline | {run.per_controller_us_per_s:.1f} us/s | |",
          f"| the host process holding them | {run.host_cpu_pct:.2f}% of a core | |",
          f"| target RSS | {run.rss_mib:.1f} MiB | |"]  # fmt: skip
    if run.problem:
        md.append(f"\nProblem: {run.problem}")
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["hold"]:
        port, count, kato_ms = (int(x) for x in args[1:4])
        trio.run(hold, port, count, kato_ms)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--controllers", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20.0, help="the measured window")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--baseline", type=float, default=5.0,
                        help="seconds measured with no controller")  # fmt: skip
    parser.add_argument("--kato-ms", type=int, default=5000)
    opts = parser.parse_args(args)
    run = run_idle(opts.controllers, seconds=opts.seconds, warmup=opts.warmup,
                   baseline=opts.baseline, kato_ms=opts.kato_ms)  # fmt: skip
    print(idle_markdown(run))
    print(asdict(run))
    return 1 if run.problem else 0


if __name__ == "__main__":
    sys.exit(main())
