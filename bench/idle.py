"""Idle controllers: what keep-alive alone costs the target (bench/manyhosts.py runs it).

One target process (bench/probed.py) and one host process holding ``--controllers`` controllers
(admin queue only, no I/O queue, each its own host NQN, keep-alive every KATO/2 as the Linux
host sends it), the cheapest way to have that many: one Python process per controller would
measure the machine, not the target. The target's CPU time (``getrusage``, all threads) is
taken over a window with no controller at all (its own timers, the baseline) and then over
``--seconds`` after a warm-up once every controller is up; both in % of one core [goal for 256:
< 1%]. The main thread's context switches per second show how often its event loop woke. Then
the ceiling, as in the matrix: bench/pingpong.py's bare Trio server, no protocol at all, gets
the same messages (a 72-byte capsule per connection every KATO/2, answered with 24 bytes) over
as many connections, measured the same way: what one wakeup for one message costs here.

    python bench/idle.py                       # 256 controllers, 20 s; --help for the options
    python bench/idle.py hold PORT COUNT KATO  # the host process (started by the above)
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.matrix import free_port, wait_listening  # noqa: E402
from bench.pingpong import CAPSULE, HEADER  # noqa: E402
from bench.probe import Probed  # noqa: E402
from bench.targetproc import (  # noqa: E402
    NQN,
    Sample,
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
    keepalives_per_s: float = 0.0  # what the host sends: a Keep Alive per controller per KATO/2
    cpu_us_per_keepalive: float = 0.0  # the target's CPU time over the Keep Alives it answered
    per_controller_us_per_s: float = 0.0  # above the baseline
    host_cpu_pct: float = 0.0  # the host process holding them
    rss_mib: float = 0.0
    baseline_rss_mib: float = 0.0  # with no controller
    #: associations the target ended for want of a Keep Alive (its log): up to the end of the
    #: window, and in all (the host process shutting its controllers down included)
    keepalive_timeouts_in_window: int = 0
    keepalive_timeouts: int = 0
    #: the same message rate over as many connections to a bare Trio server (bench/pingpong.py)
    ceiling_cpu_pct: float | None = None
    ceiling_cpu_us_per_message: float | None = None
    problem: str = ""


# -- the host processes ----------------------------------------------------------------------------


async def wait_for_stdin_eof() -> None:
    """Until the parent closes our stdin (when its window is over)."""
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    while await stdin.receive_some():
        pass


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
        await wait_for_stdin_eof()
        with trio.move_on_after(30):
            async with trio.open_nursery() as closing:
                for ctrl in controllers:
                    closing.start_soon(ctrl.shutdown)
        nursery.cancel_scope.cancel()


async def ping(port: int, count: int, kato_ms: int) -> None:
    """The ceiling's host: ``count`` connections to bench/pingpong.py's server, each sending a
    Keep Alive-sized capsule every KATO/2 (phases spread over the period) and reading the
    response-sized answer, until stdin closes."""
    period = kato_ms / 2000

    async def beat(stream: trio.SocketStream, phase: float) -> None:
        await trio.sleep(phase)
        while True:
            await stream.send_all(bytes(CAPSULE))
            answered = 0
            while answered < HEADER:
                data = await stream.receive_some(HEADER - answered)
                if not data:
                    return
                answered += len(data)
            await trio.sleep(period)

    streams = []
    for _ in range(count):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        streams.append(stream)
    async with trio.open_nursery() as nursery:
        for index, stream in enumerate(streams):
            nursery.start_soon(beat, stream, period * index / count)
        print(f"connected {len(streams)}", flush=True)
        await wait_for_stdin_eof()
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


@dataclass
class Held:
    """A server measured while a host process holds idle connections to it."""

    connected: int = 0
    first: Sample | None = None
    last: Sample | None = None
    host_cpu_pct: float = 0.0
    keepalive_timeouts: int = 0  # in the server's log by the end of the window
    problem: str = ""


def keepalive_timeouts(log: Path | None) -> int:
    """How many keep-alive timeouts the target has logged so far."""
    if log is None:
        return 0
    return log.read_text(errors="replace").count("keep-alive timeout")


def hold_and_measure(server: Probed, port: int, role: str, count: int, kato_ms: int,
                     warmup: float, seconds: float, log: Path | None = None) -> Held:  # fmt: skip
    """Start the host process (``role`` hold or ping), wait until it is connected and warm,
    sample the server over ``seconds``, then stop the host process. ``log``: the server's."""
    held = Held()
    argv = [sys.executable, __file__, role, str(port), str(count), str(kato_ms)]
    holder = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = read_line(holder.stdout, 60.0 + count * 0.5)
        if not line.startswith("connected "):
            held.problem = f"the {role} process did not connect: {line or 'no answer'}"
            return held
        held.connected = int(line.split()[1])
        time.sleep(warmup)
        held.first, host_first = sample(server, port), process_cpu_s(holder.pid)
        time.sleep(seconds)
        held.last, host_last = sample(server, port), process_cpu_s(holder.pid)
        held.keepalive_timeouts = keepalive_timeouts(log)
        elapsed = held.last.at - held.first.at
        held.host_cpu_pct = 100.0 * (host_last - host_first) / elapsed
        if holder.poll() is not None:
            held.problem = f"the {role} process exited ({holder.returncode}) during the window"
    finally:
        stop_holder(holder, held)
    return held


def run_idle(controllers: int, *, seconds: float = 20.0, warmup: float = 5.0,
             baseline: float = 5.0, kato_ms: int = 5000, ceiling: bool = True) -> IdleRun:  # fmt: skip
    """Measure the target with no controller, then with ``controllers`` idle ones; then (with
    ``ceiling``) a bare Trio server with the same messages over as many connections."""
    run = IdleRun(controllers=controllers, kato_ms=kato_ms, seconds=seconds)
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="bench-idle-")) / "target.err"
    with log.open("wb") as stderr:
        target, config = start_target(port, namespace_bytes=1 << 20, max_io_queues=1,
                                      stderr=stderr)  # fmt: skip
    try:
        time.sleep(1.0)  # past the start-up
        first = sample(target, port)
        time.sleep(baseline)
        last = sample(target, port)
        run.baseline_cpu_pct = core_percent(first, last)
        run.baseline_wakeups_per_s = wakeups_per_second(first, last)
        run.baseline_rss_mib = last.rss_kib / 1024
        held = hold_and_measure(target, port, "hold", controllers, kato_ms, warmup, seconds, log)
    finally:
        stop_target(target, config)
        run.keepalive_timeouts = keepalive_timeouts(log)
        log.unlink()
        log.parent.rmdir()
    run.problem, run.connected = held.problem, held.connected
    run.keepalive_timeouts_in_window = held.keepalive_timeouts
    if held.first is None or held.last is None:
        return run
    run.cpu_pct = core_percent(held.first, held.last)
    run.wakeups_per_s = wakeups_per_second(held.first, held.last)
    run.host_cpu_pct = held.host_cpu_pct
    run.connections = min(held.first.connections, held.last.connections)
    run.rss_mib = held.last.rss_kib / 1024
    run.keepalives_per_s = run.connected / (kato_ms / 2000)
    run.cpu_us_per_keepalive = run.cpu_pct / 100 * 1e6 / max(run.keepalives_per_s, 1e-9)
    extra = max(0.0, run.cpu_pct - run.baseline_cpu_pct)
    run.per_controller_us_per_s = extra / 100 * 1e6 / max(run.connected, 1)
    if ceiling and not run.problem:
        measure_ceiling(run, warmup, seconds)
    return run


def measure_ceiling(run: IdleRun, warmup: float, seconds: float) -> None:
    """bench/pingpong.py's server (no protocol at all) under ``run.connected`` connections
    sending a 72-byte capsule each per KATO/2, answered with 24 bytes: what waking up for a
    message and answering it costs Python and Trio on this machine."""
    port = free_port()
    server = Probed([str(ROOT / "bench" / "pingpong.py"), "server", str(port), str(CAPSULE),
                     str(HEADER)], "", cwd=ROOT)  # fmt: skip
    try:
        wait_listening(port, server)
        held = hold_and_measure(server, port, "ping", run.connected, run.kato_ms, warmup,
                                seconds)  # fmt: skip
    finally:
        server.close()
    if held.first is None or held.last is None:
        run.problem = held.problem
        return
    run.ceiling_cpu_pct = core_percent(held.first, held.last)
    messages = held.connected / (run.kato_ms / 2000)
    run.ceiling_cpu_us_per_message = run.ceiling_cpu_pct / 100 * 1e6 / max(messages, 1e-9)


def stop_holder(holder: subprocess.Popen[str], held: Held) -> None:
    """Close its stdin (it shuts its connections down and exits); kill it after 40 s."""
    try:
        _, err = holder.communicate(timeout=40)  # closes its stdin first
    except subprocess.TimeoutExpired:
        holder.kill()
        _, err = holder.communicate()
    if holder.returncode and not held.problem:
        held.problem = f"the host process exited {holder.returncode}: {err.strip()[-300:]}"


def idle_markdown(run: IdleRun) -> str:
    ceiling = ("n/a" if run.ceiling_cpu_pct is None else
               f"{run.ceiling_cpu_pct:.2f}% of a core ({run.ceiling_cpu_us_per_message:.0f} us "
               "a message)")  # fmt: skip
    md = [f"Idle controllers: {run.controllers} (admin queue only, a Keep Alive every "
          f"{run.kato_ms / 2000:g} s each), {run.seconds:g} s window", "",
          "| figure | value | goal |", "|---|---|---|",
          f"| connected (host) / TCP connections (target) | {run.connected} / "
          f"{run.connections} | {run.controllers} |",
          f"| target CPU, no controller | {run.baseline_cpu_pct:.2f}% of a core "
          f"({run.baseline_wakeups_per_s:.1f} wakeups/s) | |",
          f"| target CPU, {run.connected} idle controllers | {run.cpu_pct:.2f}% of a core "
          f"({run.wakeups_per_s:.1f} wakeups/s) | < 1% |",
          f"| target CPU per Keep Alive ({run.keepalives_per_s:.0f}/s) | "
          f"{run.cpu_us_per_keepalive:.0f} us | |",
          f"| ceiling: bare Trio server, same messages and connections | {ceiling} | |",
          f"| per controller, above the baseline | {run.per_controller_us_per_s:.1f} us/s | |",
          f"| the host process holding them | {run.host_cpu_pct:.2f}% of a core | |",
          f"| target RSS, no controller -> {run.connected} | {run.baseline_rss_mib:.1f} -> "
          f"{run.rss_mib:.1f} MiB | |",
          f"| keep-alive timeouts (target), by the window's end / in all | "
          f"{run.keepalive_timeouts_in_window} / {run.keepalive_timeouts} | 0 |"]  # fmt: skip
    if run.problem:
        md.append(f"\nProblem: {run.problem}")
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["hold"], ["ping"]):
        port, count, kato_ms = (int(x) for x in args[1:4])
        trio.run(hold if args[0] == "hold" else ping, port, count, kato_ms)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--controllers", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20.0, help="the measured window")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--baseline", type=float, default=5.0,
                        help="seconds measured with no controller")  # fmt: skip
    parser.add_argument("--kato-ms", type=int, default=5000)
    parser.add_argument("--no-ceiling", action="store_true",
                        help="skip the bare Trio server with the same messages")  # fmt: skip
    opts = parser.parse_args(args)
    run = run_idle(opts.controllers, seconds=opts.seconds, warmup=opts.warmup,
                   baseline=opts.baseline, kato_ms=opts.kato_ms,
                   ceiling=not opts.no_ceiling)  # fmt: skip
    print(idle_markdown(run))
    print(asdict(run))
    return 1 if run.problem else 0


if __name__ == "__main__":
    sys.exit(main())
