"""The target as a process of its own, watched from outside (bench/manyhosts.py, bench/idle.py).

The target runs through bench/probed.py like in the matrix (its CPU time is ``getrusage`` read
in the process, on request, by a thread that sleeps in ``read()`` in between); the rest comes
from /proc: resident memory (VmRSS), the main thread's context switches (how often the event
loop went to sleep and woke) and the established TCP connections on the target's port.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.matrix import wait_listening
from bench.probe import Probed

ROOT = Path(__file__).resolve().parent.parent
NQN = "nqn.2026-11.io.nvmeof-emu:manyhosts"
#: /proc/net/tcp's state column for ESTABLISHED
TCP_ESTABLISHED = "01"


def start_target(port: int, *, namespace_bytes: int, max_io_queues: int,
                 queue_size: int = 128) -> tuple[Probed, Path]:  # fmt: skip
    """One subsystem (:data:`NQN`) with one RAM namespace of 4 KiB blocks on ``port``; no
    control API and no metrics listener, so nothing but the hosts' queues runs in it."""
    config = Path(tempfile.mkdtemp(prefix="bench-target-")) / "target.toml"
    config.write_text(
        f'[[subsystem]]\nnqn = "{NQN}"\nmax_io_queues = {max_io_queues}\n'
        f"queue_size = {queue_size}\n"
        f"  [[subsystem.namespace]]\n  nsid = 1\n  size = {namespace_bytes}\n"
        "  block_size = 4096\n"
        f'[[port]]\nid = 1\nport = {port}\nsubsystems = ["{NQN}"]\n'
    )
    argv = ["-m", "target", "serve", "--config", str(config), "--log-level", "warning",
            "--control", "off", "--metrics", "off"]  # fmt: skip
    # no allocation counter: nothing here is divided by allocator calls
    proc = Probed(argv, "", cwd=ROOT)
    wait_listening(port, proc)
    return proc, config


def stop_target(proc: Probed, config: Path) -> None:
    proc.close()
    config.unlink(missing_ok=True)
    config.parent.rmdir()


def established_connections(port: int) -> int:
    """TCP connections in ESTABLISHED state whose local port is ``port`` (the target's side of
    each host queue; the connection that probes whether it listens is long closed)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            # sl local_address:port rem_address:port st ...
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16) if len(fields) > 3 else -1
            if local_port == port and fields[3] == TCP_ESTABLISHED:
                count += 1
    return count


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS (KiB) and the main thread's context switches from /proc/PID/status."""
    wanted = {"VmRSS": "rss_kib", "voluntary_ctxt_switches": "voluntary",
              "nonvoluntary_ctxt_switches": "involuntary"}  # fmt: skip
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in wanted:
            out[wanted[key]] = int(value.split()[0])
    return out


@dataclass
class Sample:
    """The target at one moment."""

    at: float  # time.monotonic()
    cpu_s: float  # user + system seconds, all threads
    rss_kib: int
    switches: int  # voluntary + involuntary, main thread (the event loop)
    connections: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample(target: Probed, port: int) -> Sample:
    snap = target.snapshot()
    status = proc_status(target.pid)
    return Sample(at=time.monotonic(), cpu_s=snap["user"] + snap["sys"],
                  rss_kib=status["rss_kib"],
                  switches=status["voluntary"] + status["involuntary"],
                  connections=established_connections(port))  # fmt: skip


def core_percent(first: Sample, last: Sample) -> float:
    """The target's CPU time between two samples, in % of one core."""
    elapsed = last.at - first.at
    return 100.0 * (last.cpu_s - first.cpu_s) / elapsed if elapsed > 0 else 0.0


def wakeups_per_second(first: Sample, last: Sample) -> float:
    elapsed = last.at - first.at
    return (last.switches - first.switches) / elapsed if elapsed > 0 else 0.0
