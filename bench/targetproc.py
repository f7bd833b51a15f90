"""The target as a process of its own, watched from outside (bench/manyhosts.py, bench/idle.py).

The target runs through bench/probed.py like in the matrix (its CPU time is ``getrusage`` read
in the process, on request, by a thread that sleeps in ``read()`` in between); the rest comes
from /proc: resident memory (VmRSS), the main thread's context switches (how often the event
loop went to sleep and woke) and the target's established TCP connections on its port.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from bench.matrix import wait_listening
from bench.probe import Probed

ROOT = Path(__file__).resolve().parent.parent
NQN = "nqn.2026-11.io.nvmeof-emu:manyhosts"
#: /proc/net/tcp's state column for ESTABLISHED
TCP_ESTABLISHED = "01"


def start_target(port: int, *, namespace_bytes: int, max_io_queues: int, queue_size: int = 128,
                 stderr: IO[bytes] | None = None) -> tuple[Probed, Path]:  # fmt: skip
    """One subsystem (:data:`NQN`) with one RAM namespace of 4 KiB blocks on ``port``; no
    control API and no metrics listener, so nothing but the hosts' queues runs in it. Its log
    (warnings and up) goes to ``stderr`` (None: ours)."""
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
    proc = Probed(argv, "", cwd=ROOT, stderr=stderr)
    wait_listening(port, proc)
    return proc, config


def stop_target(proc: Probed, config: Path) -> None:
    proc.close()
    config.unlink(missing_ok=True)
    config.parent.rmdir()


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets process ``pid`` has open (its /proc/PID/fd links)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            link = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def established_connections(pid: int, port: int) -> int:
    """TCP connections of process ``pid`` in ESTABLISHED state whose local port is ``port``
    (the target's side of each host queue).

    Counted by socket inode, over two reads of /proc/net/tcp: the kernel writes the table out a
    chunk at a time, and sockets opened or closed meanwhile (anywhere on the machine) shift the
    rest, so one read can list a socket twice or miss one. And only the process's own sockets:
    another process's client socket can have the port's number as its ephemeral port (a
    listener with SO_REUSEADDR binds over it).
    """
    owned = socket_inodes(pid)
    found: set[str] = set()
    for _ in range(2):
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                # sl local_address:port rem_address:port st tx:rx tr:when retrnsmt uid timeout inode
                fields = line.split()
                if len(fields) < 10 or fields[3] != TCP_ESTABLISHED or fields[9] not in owned:
                    continue
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found.add(fields[9])
    return len(found)


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
                  connections=established_connections(target.pid, port))  # fmt: skip


def core_percent(first: Sample, last: Sample) -> float:
    """The target's CPU time between two samples, in % of one core."""
    elapsed = last.at - first.at
    return 100.0 * (last.cpu_s - first.cpu_s) / elapsed if elapsed > 0 else 0.0


def wakeups_per_second(first: Sample, last: Sample) -> float:
    elapsed = last.at - first.at
    return (last.switches - first.switches) / elapsed if elapsed > 0 else 0.0
